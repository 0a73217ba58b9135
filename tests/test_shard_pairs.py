"""Alignment training that reads catalog shards end to end, damaged samples included."""
import logging

import pytest
import torch

from mmrec.datasets.shards import shard_key, write_catalog_shards
from mmrec.fusion.alignment import RetrievalValidator, align, decode_resized, retrieval_metrics
from mmrec.fusion.shard_pairs import ShardPairs
from mmrec.space import UnifiedSpace, space_preset, tiny_vit
from mmrec.train import TrainConfig
from shard_damage import damage_image
from text_memo import memoize_text

TINY_VIT = tiny_vit(32, width=64, depth=2, heads=2)


def test_alignment_trains_from_shards_and_skips_a_damaged_photo(tmp_path, caplog):
    from mmrec.datasets.synthetic import WorldConfig, make_world

    world = make_world(WorldConfig(seed=3, n_users=50, n_items=240, n_new_items=0, new_interactions_per_user=(0, 0),
                                   missing_image_fraction=0.0, missing_text_fraction=0.0), tmp_path / "world")
    catalog = world.catalog
    paths = list(catalog.image_paths)
    texts = [catalog.full_text(i) for i in range(len(catalog))]
    shards = write_catalog_shards(catalog, tmp_path / "shards", items_per_shard=60, texts=texts)
    assert len(shards) == 4
    damage_image(shards[0], shard_key(catalog.ids[7]))  # a photo damaged in the shard, after writing

    torch.manual_seed(0)
    space = UnifiedSpace(space_preset("lit-tiny-vit", towers={"image": TINY_VIT}, dim=32, adapter_options={"hidden": 64}))
    # The locked MiniLM runs once per distinct text (collate calls it on every batch of every epoch; on a
    # CPU that, not the training, was this test's cost).
    text = memoize_text(space.encoders["text"])
    data = ShardPairs(space, shards, shuffle_buffer=100, seed=0)
    batch = data.collate([next(iter(data)) for _ in range(1)])
    assert batch["image:pixels"].shape == (1, 3, 32, 32) and batch["text:features"].shape == (1, 384)

    photos = [p for i, p in enumerate(paths) if i != 7]
    kept_texts = [t for i, t in enumerate(texts) if i != 7]

    def t2i(s: UnifiedSpace) -> dict[str, float]:
        return {f"t2i_{k}": v for k, v in retrieval_metrics(s.embed_texts(kept_texts), s.embed_images(photos)).items()}

    # Per-epoch validation on the same items from tower inputs decoded once (the public path, above, judges).
    preprocess = space.encoders["image"].preprocess
    pixels, _ = decode_resized(photos, preprocess)
    validate = RetrievalValidator([{"text:features": text.encode(kept_texts),
                                    "image:pixels": preprocess.normalize(pixels.float() / 255)}], [("text", "image")])
    before = t2i(space)
    with caplog.at_level(logging.WARNING):
        align(space, data, TrainConfig(epochs=10, batch_size=32, lr=2e-3, seed=0, progress=False, patience=10,
                                       early_stop_metric="t2i_recall@10"), evaluate_fn=validate)
    after = t2i(space)
    assert validate(space) == pytest.approx(after, abs=0.05), "validation tracks the public embedding path"
    chance = 10 / len(photos)
    assert after["t2i_recall@10"] > 4 * chance and after["t2i_recall@10"] > before["t2i_recall@10"] + 0.1, (before, after)
    # The damaged photo is skipped (counted and logged) every epoch; the other 239 items arrive each time.
    assert data.stats.counts["bad_image"] >= 1 and "bad_image" in caplog.text
    assert data.stats.delivered >= 10 * 239


def test_samples_per_epoch_resamples_a_fixed_number(tmp_path):
    from mmrec.datasets.synthetic import WorldConfig, make_world

    world = make_world(WorldConfig(seed=4, n_users=20, n_items=40, n_new_items=0, new_interactions_per_user=(0, 0)),
                       tmp_path / "world")
    shards = write_catalog_shards(world.catalog, tmp_path / "shards", items_per_shard=10)
    torch.manual_seed(0)
    space = UnifiedSpace(space_preset("lit-tiny-vit", towers={"image": TINY_VIT}, dim=16))
    data = ShardPairs(space, shards, shuffle_buffer=0, seed=1, samples_per_epoch=25)
    first = [item["id"] for item in data]
    assert len(first) == 25 and first == [item["id"] for item in data]
    data.set_epoch(1)
    assert [item["id"] for item in data] != first
    images_missing = [item for item in data if item["image"] is None]
    batch = data.collate(list(data)[:8])
    assert batch["image:mask"].sum() == 8 - sum(item["image"] is None for item in list(data)[:8])
    assert len(images_missing) == sum(1 for item in data if item["image"] is None)
