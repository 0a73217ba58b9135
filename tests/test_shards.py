"""Catalog shards: write → read round trip, damage counted and skipped, splitting, shuffling, resampling."""
from __future__ import annotations

import copy
import io
import itertools
import json
import logging
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from mmrec.data import Catalog
from mmrec.datasets.shards import (SampleStats, catalog_samples, check_shard_count, shard_key,
                                   write_catalog_shards)
from shard_damage import damage_image

ODD_IDS = ["0108775015", "a/b.c", "with space", "ünïcode", "x" * 80, "__meta__", "plain-id_7", "."]


def _image(path: Path, seed: int, fmt: str = "JPEG") -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(20, 14, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return str(path)


def _catalog(tmp_path: Path, n: int = 8, *, images: str = "mixed") -> Catalog:
    """Items with JPEG images, one PNG, some without image; ids chosen to be awkward as tar names."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    ids = ODD_IDS[:n] + [f"item{i}" for i in range(len(ODD_IDS), n)]
    paths: list[str | None] = []
    for i in range(n):
        if images == "none" or (images == "mixed" and i % 3 == 2):
            paths.append(None)
        elif images == "mixed" and i == 4:
            paths.append(_image(folder / f"{i}.png", i, "PNG"))
        else:
            paths.append(_image(folder / f"{i}.jpg", i))
    return Catalog(ids=ids, titles=[f"title {i}" for i in range(n)], texts=[f"text of item {i}" for i in range(n)],
                   image_paths=paths,
                   attributes={"colour": np.array([["red", "blue"][i % 2] for i in range(n)], dtype=object),
                               "size": np.arange(n) + 30,
                               "price": np.array([np.nan if i == 1 else 9.5 + i for i in range(n)])})


def _ids(pipeline) -> list[str]:
    return [item["id"] for item in pipeline]


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_round_trip_keeps_ids_texts_attributes_and_pixels(tmp_path):
    catalog = _catalog(tmp_path)
    paths = write_catalog_shards(catalog, tmp_path / "shards", items_per_shard=3)
    assert [p.name for p in paths] == ["catalog-000000.tar", "catalog-000001.tar", "catalog-000002.tar"]
    manifest = json.loads((tmp_path / "shards" / "catalog-shards.json").read_text())
    assert manifest["shards"] == [p.name for p in paths]
    assert (manifest["items"], manifest["with_image"], manifest["without_image"]) == (8, 6, 2)

    stats = SampleStats()
    items = list(catalog_samples(paths, stats=stats))
    assert [it["id"] for it in items] == list(catalog.ids)  # no shuffle: catalog order
    assert stats.delivered == 8 and stats.skipped == 0
    for code, item in enumerate(items):
        assert item["code"] == code
        assert (item["title"], item["text"]) == (catalog.titles[code], catalog.texts[code])
        assert item["attributes"] == {"colour": catalog.attributes["colour"][code], "size": 30 + code,
                                      "price": None if code == 1 else 9.5 + code}
        source = catalog.image_paths[code]
        if source is None:
            assert item["image"] is None
        else:
            assert item["image"].mode == "RGB"
            np.testing.assert_array_equal(np.asarray(item["image"]), _pixels(Image.open(source)))


def test_image_bytes_are_stored_as_is_under_safe_keys(tmp_path):
    catalog = _catalog(tmp_path)
    paths = write_catalog_shards(catalog, tmp_path / "a", items_per_shard=5)
    members = {}
    for path in paths:
        with tarfile.open(path) as tar:
            members.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+\.(json|jpg|png)", name) for name in members), sorted(members)
    assert len({shard_key(i) for i in catalog.ids}) == len(catalog)
    for code, item_id in enumerate(catalog.ids):
        key = shard_key(item_id)
        assert json.loads(members[f"{key}.json"])["id"] == item_id
        source = catalog.image_paths[code]
        if source is None:
            assert not any(f"{key}.{ext}" in members for ext in ("jpg", "png"))
        else:
            ext = "png" if source.endswith(".png") else "jpg"
            assert members[f"{key}.{ext}"] == Path(source).read_bytes()

    raw = {it["id"]: it["image"] for it in catalog_samples(paths, decode_images=False)}
    assert all(raw[i] == (None if p is None else Path(p).read_bytes()) for i, p in zip(catalog.ids, catalog.image_paths))
    again = write_catalog_shards(catalog, tmp_path / "b", items_per_shard=5)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]  # deterministic shards


def test_texts_override_and_item_without_readable_image(tmp_path):
    catalog = _catalog(tmp_path, 4, images="all")
    catalog.image_paths[1] = str(tmp_path / "images" / "gone.jpg")
    richer = [f"richer text {i}" for i in range(4)]
    paths = write_catalog_shards(catalog, tmp_path / "s", texts=richer, prefix="hm")
    assert [p.name for p in paths] == ["hm-000000.tar"]
    manifest = json.loads((tmp_path / "s" / "hm-shards.json").read_text())
    assert manifest["image_files_left_out"] == {"unreadable_image_file": 1} and manifest["with_image"] == 3
    items = list(catalog_samples(paths))
    assert [it["text"] for it in items] == richer
    assert [it["image"] is None for it in items] == [False, True, False, False]
    with pytest.raises(ValueError, match="texts has 3 entries"):
        write_catalog_shards(catalog, tmp_path / "t", texts=richer[:3])


def test_all_image_files_missing_is_an_error(tmp_path):
    catalog = Catalog(["a", "b"], ["", ""], ["", ""], [str(tmp_path / "no1.jpg"), str(tmp_path / "no2.jpg")])
    with pytest.raises(ValueError, match="none of the 2 image files"):
        write_catalog_shards(catalog, tmp_path / "s")


def test_a_failing_write_leaves_only_complete_shards(tmp_path):
    catalog = _catalog(tmp_path, 6, images="none")
    catalog.attributes["size"] = np.array([1, 2, 3, 4, {"not": "storable"}, 6], dtype=object)
    out = tmp_path / "s"
    with pytest.raises(TypeError, match="attribute 'size' holds a dict"):
        write_catalog_shards(catalog, out, items_per_shard=3)
    assert sorted(p.name for p in out.iterdir()) == ["catalog-000000.tar"]  # no temp file, no half shard
    assert len(list(catalog_samples([out / "catalog-000000.tar"]))) == 3


def test_an_image_file_that_does_not_decode_is_left_out_and_the_item_kept(tmp_path):
    """Cut short, damaged or over the bomb guard: a reader would drop the whole sample, text included."""
    catalog = _catalog(tmp_path, 4, images="all")
    Path(catalog.image_paths[1]).write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    whole = Path(catalog.image_paths[2]).read_bytes()
    Path(catalog.image_paths[2]).write_bytes(whole[:len(whole) // 2])
    paths = write_catalog_shards(catalog, tmp_path / "s")
    manifest = json.loads((tmp_path / "s" / "catalog-shards.json").read_text())
    assert manifest["image_files_left_out"] == {"undecodable_image": 2} and manifest["with_image"] == 2
    stats = SampleStats()
    items = list(catalog_samples(paths, stats=stats))
    assert [it["image"] is None for it in items] == [False, True, True, False] and stats.delivered == 4


def test_an_earlier_writes_own_shards_are_removed_and_nothing_else(tmp_path):
    catalog = _catalog(tmp_path, 10, images="none")
    out = tmp_path / "s"
    assert len(write_catalog_shards(catalog, out, items_per_shard=2)) == 5
    (out / "notes.txt").write_text("mine")
    (out / "catalog-000009.tar").write_bytes(b"")  # shard-named, but no write of ours listed it
    assert len(write_catalog_shards(catalog, out, items_per_shard=4)) == 3
    assert sorted(p.name for p in out.iterdir()) == ["catalog-000000.tar", "catalog-000001.tar", "catalog-000002.tar",
                                                      "catalog-000009.tar", "catalog-shards.json", "notes.txt"]


def test_corrupt_image_and_json_are_skipped_counted_and_logged(tmp_path, caplog):
    catalog = _catalog(tmp_path, 6, images="all")
    paths = write_catalog_shards(catalog, tmp_path / "s", items_per_shard=3)
    damage_image(paths[0], shard_key(catalog.ids[2]))
    good = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(good, format="JPEG")
    meta = {"id": "crafted-ok", "code": 99, "title": "t", "text": "", "attributes": {}}
    crafted = tmp_path / "s" / "crafted.tar"
    with wds.TarWriter(str(crafted), encoder=False) as tar:
        tar.write({"__key__": "j1", "json": b"{not json"})
        tar.write({"__key__": "j2", "json": json.dumps({**meta, "code": "seven"}).encode()})
        tar.write({"__key__": "j3", "jpg": good.getvalue()})  # an image without its json
        tar.write({"__key__": "j4", "json": json.dumps(meta).encode(), "jpg": good.getvalue()})
        tar.write({"__key__": "j5", "json": json.dumps(meta).encode(), "pyd": b"never unpickled"})

    stats = SampleStats()
    with caplog.at_level(logging.WARNING, logger="mmrec.datasets.shards"):
        ids = _ids(catalog_samples([*paths, crafted], stats=stats))
    assert ids == [i for k, i in enumerate(catalog.ids) if k != 2] + ["crafted-ok", "crafted-ok"]
    assert {r: n for r, n in stats.counts.items() if n} == {"bad_image": 1, "bad_json": 2, "incomplete_sample": 1}
    assert stats.delivered == 7
    assert [e.key for e in stats.examples] == [shard_key(catalog.ids[2]), "j1", "j2", "j3"]
    assert sum("skipped bad_json" in r.getMessage() for r in caplog.records) == 2
    assert any("skipped bad_image" in r.getMessage() and str(paths[0]) in r.getMessage() for r in caplog.records)


def _member_spans(path: Path) -> list[tuple[str, int, int]]:
    with tarfile.open(path) as tar:
        return [(m.name, m.offset, m.offset_data + m.size) for m in tar.getmembers()]


@pytest.mark.parametrize("where", ["inside jpg data", "inside json data", "inside a header", "on a block boundary"])
def test_truncated_shard_keeps_samples_before_the_damage(tmp_path, where):
    catalog = _catalog(tmp_path, 10, images="all")
    paths = write_catalog_shards(catalog, tmp_path / "s", items_per_shard=5)
    spans = _member_spans(paths[0])  # (name, header offset, data end), jpg before json per item
    name, header, end = spans[{"inside jpg data": 4, "inside json data": 5,
                               "inside a header": 6, "on a block boundary": 6}[where]]
    cut = {"inside jpg data": (header + 512 + end) // 2, "inside json data": end - 3,
           "inside a header": header + 100, "on a block boundary": header}[where]
    broken = tmp_path / "broken.tar"
    broken.write_bytes(paths[0].read_bytes()[:cut])
    complete = {n.split(".")[0] for n, _, e in spans if n.endswith(".json") and e <= cut}

    stats = SampleStats()
    ids = _ids(catalog_samples([broken, paths[1]], stats=stats))
    assert ids == [i for i in catalog.ids[:5] if shard_key(i) in complete] + list(catalog.ids[5:])
    assert len(complete) in (2, 3)
    assert stats.counts["damaged_shard"] == 1
    assert stats.counts["incomplete_sample"] == (1 if where == "inside json data" else 0)  # its jpg came through
    assert stats.examples[0].url == str(broken)


def test_unreadable_shard_is_counted_not_fatal(tmp_path):
    paths = write_catalog_shards(_catalog(tmp_path, 4, images="none"), tmp_path / "s", items_per_shard=2)
    stats = SampleStats()
    pipeline = catalog_samples(paths, stats=stats)
    paths[0].unlink()  # vanishes after the pipeline was made
    assert _ids(pipeline) == ["with space", "ünïcode"]
    assert stats.counts["unreadable_shard"] == 1
    with pytest.raises(FileNotFoundError, match="1 of 2 shard file"):
        catalog_samples(paths)


def test_shard_count_check_names_shards_workers_and_processes(tmp_path):
    with pytest.raises(ValueError) as info:
        check_shard_count(2, num_workers=2, world_size=2, resample=False)
    message = str(info.value)
    for part in ("2 shard(s)", "4 readers", "2 DataLoader worker(s)", "2 process(es)", "items_per_shard",
                 "resample=True"):
        assert part in message
    check_shard_count(2, num_workers=2, world_size=2, resample=True)
    check_shard_count(4, num_workers=0, world_size=4, resample=False)
    paths = write_catalog_shards(_catalog(tmp_path, 4, images="none"), tmp_path / "s", items_per_shard=2)
    with pytest.raises(ValueError, match="2 shard"):
        catalog_samples(paths, num_workers=3)
    catalog_samples(paths, num_workers=3, resample=True)


def test_shuffle_with_a_seed_is_a_deterministic_permutation(tmp_path):
    catalog = _catalog(tmp_path, 30, images="none")
    paths = write_catalog_shards(catalog, tmp_path / "s", items_per_shard=10)
    first = _ids(catalog_samples(paths, shuffle_buffer=8, seed=3))
    assert first == _ids(catalog_samples(paths, shuffle_buffer=8, seed=3))
    assert sorted(first) == sorted(catalog.ids) and first != list(catalog.ids)
    assert _ids(catalog_samples(paths, shuffle_buffer=8, seed=4)) != first


def test_resampled_stream_is_endless_and_repeatable(tmp_path):
    catalog = _catalog(tmp_path, 6, images="mixed")
    paths = write_catalog_shards(catalog, tmp_path / "s", items_per_shard=2)
    taken = [it["id"] for it in itertools.islice(catalog_samples(paths, resample=True, seed=1), 40)]
    assert len(taken) == 40 and set(taken) <= set(catalog.ids)
    assert taken == _ids(itertools.islice(catalog_samples(paths, resample=True, seed=1), 40))
    epoch = catalog_samples(paths, resample=True, shuffle_buffer=4).with_epoch(25)
    assert len(_ids(epoch)) == 25


def test_stats_copy_outside_a_process_start_has_its_own_counters():
    stats = SampleStats()
    stats.record_delivered()
    twin = copy.deepcopy(stats)
    twin.record_delivered()
    assert (stats.delivered, twin.delivered) == (1, 2)


def test_dataloader_workers_each_read_their_own_shards(tmp_path):
    catalog = _catalog(tmp_path, 12, images="all")
    paths = write_catalog_shards(catalog, tmp_path / "s", items_per_shard=3)
    damage_image(paths[2], shard_key(catalog.ids[7]))  # decodes to an error
    stats = SampleStats()
    pipeline = catalog_samples(paths, image_transform=pil_to_tensor, stats=stats, num_workers=2)
    loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2)
    items = list(loader)
    counts = Counter(it["id"] for it in items)
    assert set(counts) == set(catalog.ids) - {catalog.ids[7]} and set(counts.values()) == {1}
    assert all(it["image"].shape == (3, 20, 14) and it["image"].dtype == torch.uint8 for it in items)
    assert stats.counts["bad_image"] == 1 and stats.delivered == 11  # counted inside the workers

    too_many = torch.utils.data.DataLoader(catalog_samples(paths[:1]), batch_size=None, num_workers=2)
    with pytest.raises(ValueError, match="1 shard"):  # found inside the workers: nobody passed num_workers
        list(too_many)


def test_real_hm_items_round_trip(hm_root, tmp_path):
    from mmrec.datasets import hm

    catalog, _ = hm.load(hm_root, transactions=False)
    codes = [i for i, p in enumerate(catalog.image_paths) if p is not None][:50]
    sub = catalog.subset(codes)
    texts = hm.article_texts(sub)
    paths = write_catalog_shards(sub, tmp_path / "hm", items_per_shard=20, texts=texts)
    items = list(catalog_samples(paths))
    assert len(paths) == 3 and [it["id"] for it in items] == list(sub.ids)
    for code, item in enumerate(items):
        assert item["text"] == texts[code] and item["title"] == sub.titles[code]
        assert item["attributes"] == {k: v[code] for k, v in sub.attributes.items()}
        np.testing.assert_array_equal(np.asarray(item["image"]), _pixels(Image.open(sub.image_paths[code])))
