"""The embedding cache: interrupted runs resume without recomputing, one changed input recomputes one row."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrec.data import Catalog
from mmrec.encoders import EmbeddingCache, create_encoder, embed

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}


def write_image(path: Path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture
def setup(tmp_path):
    config = tmp_path / "mmrec-cache-tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    spec = f"openclip:{config}@random"
    paths = [write_image(tmp_path / f"img{i}.png", i) for i in range(12)]
    catalog = Catalog(ids=[f"item{i}" for i in range(12)], titles=[f"garment number {i}" for i in range(12)],
                      texts=[""] * 12, image_paths=paths)
    return spec, catalog, tmp_path / "cache"


def count_rows(encoder, monkeypatch, fail_on_call: int | None = None) -> list[int]:
    """Record the rows each encode call gets; raise on call number ``fail_on_call`` (a power cut)."""
    calls: list[int] = []
    original = encoder.encode

    def encode(batch):
        calls.append(len(batch))
        if fail_on_call is not None and len(calls) == fail_on_call:
            raise RuntimeError("power cut")
        return original(batch)

    monkeypatch.setattr(encoder, "encode", encode)
    return calls


def test_interrupted_run_resumes_without_recomputing_finished_rows(setup, monkeypatch):
    spec, catalog, root = setup
    reference = embed(catalog, create_encoder(spec), progress=False).vectors
    enc = create_encoder(spec)
    calls = count_rows(enc, monkeypatch, fail_on_call=3)
    with pytest.raises(RuntimeError, match="power cut"):
        embed(catalog, enc, batch_size=4, num_workers=0, cache=EmbeddingCache.for_encoder(root, enc), progress=False)
    assert calls == [4, 4, 4]  # two batches finished before the third failed

    enc = create_encoder(spec)
    calls = count_rows(enc, monkeypatch)
    resumed = embed(catalog, enc, batch_size=4, num_workers=0, cache=root, progress=False)
    assert calls == [4] and resumed.counts["encoded"] == 4 and resumed.counts["from_cache"] == 8
    np.testing.assert_allclose(resumed.vectors, reference, atol=1e-6)


KILL_SCRIPT = """
import os, sys, json
from mmrec.data import Catalog
from mmrec.encoders import EmbeddingCache, create_encoder, embed
spec, root, paths = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
enc = create_encoder(spec)
original, calls = enc.encode, []
def encode(batch):
    calls.append(len(batch))
    if len(calls) == 3:
        os._exit(9)  # killed: no finally, no flush on the way out
    return original(batch)
enc.encode = encode
catalog = Catalog(ids=[str(i) for i in range(len(paths))], titles=[""] * len(paths), texts=[""] * len(paths),
                  image_paths=paths)
embed(catalog, enc, batch_size=4, num_workers=0, cache=EmbeddingCache.for_encoder(root, enc, flush_every=4),
      progress=False)
"""


def test_killed_run_keeps_every_flushed_shard(setup, monkeypatch):
    spec, catalog, root = setup
    done = subprocess.run([sys.executable, "-c", KILL_SCRIPT, spec, str(root), json.dumps(catalog.image_paths)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    enc = create_encoder(spec)
    calls = count_rows(enc, monkeypatch)
    resumed = embed(catalog, enc, batch_size=4, num_workers=0, cache=root, progress=False)
    assert calls == [4] and resumed.counts["from_cache"] == 8


def test_one_changed_image_or_text_recomputes_one_row(setup, monkeypatch):
    spec, catalog, root = setup
    enc = create_encoder(spec)
    first = embed(catalog, enc, cache=root, progress=False)
    assert first.counts["encoded"] == 12

    write_image(Path(catalog.image_paths[5]), seed=99)  # new content, same path
    calls = count_rows(enc, monkeypatch)
    second = embed(catalog, enc, cache=root, progress=False)
    assert calls == [1] and second.counts["encoded"] == 1 and second.counts["from_cache"] == 11
    changed = np.flatnonzero(np.abs(second.vectors - first.vectors).max(1) > 1e-6)
    assert changed.tolist() == [5]

    moved = catalog.subset([3, 0])  # same bytes under other ids/order: still cached
    third = embed(moved, enc, cache=root, progress=False)
    assert third.counts["encoded"] == 0
    np.testing.assert_allclose(third.vectors, second.vectors[[3, 0]])

    text_enc = create_encoder(spec, "text")
    texts = [f"garment number {i}" for i in range(12)]
    embed(catalog, text_enc, texts=texts, cache=root, progress=False)
    texts[7] = "a completely different garment"
    calls = count_rows(text_enc, monkeypatch)
    again = embed(catalog, text_enc, texts=texts, cache=root, progress=False)
    assert calls == [1] and again.counts["from_cache"] == 11


def test_a_changed_encoder_gets_its_own_rows(setup):
    spec, catalog, root = setup
    embed(catalog, create_encoder(spec, seed=0), cache=root, progress=False)
    other = embed(catalog, create_encoder(spec, seed=1), cache=root, progress=False)
    assert other.counts["encoded"] == 12
    bigger = embed(catalog, create_encoder(spec, preprocess={"interpolation": "bilinear"}), cache=root, progress=False)
    assert bigger.counts["encoded"] == 12
    assert len(list(root.iterdir())) == 3


def test_partial_shards_are_ignored_and_shards_compact(tmp_path):
    cache = EmbeddingCache(tmp_path, {"spec": "test"}, dim=3, flush_every=2, max_shards=3)
    keys = [f"{i:032x}".encode() for i in range(10)]
    vectors = np.arange(30, dtype=np.float32).reshape(10, 3)
    for i in range(0, 10, 2):
        cache.add(keys[i:i + 2], vectors[i:i + 2])
    cache.close()
    shards = sorted(cache.dir.glob("shard-*.keys.npy"))
    assert 1 <= len(shards) <= 3  # compacted when a fourth shard appeared
    # a crash between the two writes of a shard leaves vectors without keys, or a temporary file
    np.save(cache.dir / "shard-99999999999999999999-1.vectors.npy", np.ones((2, 3), np.float32))
    (cache.dir / ".shard-x.keys.npy.tmp-1-1").write_bytes(b"garbage")
    np.save(cache.dir / "shard-00000000000000000001-1.keys.npy", np.asarray([b"f" * 32], dtype="S32"))  # no vectors
    reopened = EmbeddingCache(tmp_path, {"spec": "test"}, dim=3)
    found, got = reopened.get(keys + [b"f" * 32])
    assert found.tolist() == [True] * 10 + [False]
    np.testing.assert_array_equal(got[:10], vectors)
    assert isinstance(reopened._shards[0], np.memmap)
    with pytest.raises(ValueError, match="dim"):
        EmbeddingCache(tmp_path, {"spec": "test"}, dim=4)


def test_compaction_never_deletes_a_concurrent_writers_shard(tmp_path):
    """Two caches on one folder: the first compacts after the second flushed a shard the first never read;
    that shard survives and its rows are readable."""
    first = EmbeddingCache(tmp_path, {"spec": "test"}, dim=2, flush_every=1, max_shards=100)
    second = EmbeddingCache(tmp_path, {"spec": "test"}, dim=2, flush_every=1, max_shards=100)
    for i in range(3):
        first.add([f"{i:032x}".encode()], np.full((1, 2), i, np.float32))
    second.add([b"b" * 32], np.full((1, 2), 7, np.float32))
    first.compact()
    found, got = EmbeddingCache(tmp_path, {"spec": "test"}, dim=2).get([b"b" * 32, f"{2:032x}".encode()])
    assert found.tolist() == [True, True] and got[0].tolist() == [7.0, 7.0]
