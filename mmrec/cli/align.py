"""``mmrec train align``: align a `UnifiedSpace` on a catalog's photo–text pairs (runs under accelerate launch).

Items come from ``--data`` (read into memory, a random validation share held out) or are streamed from
catalog shards with ``--shards`` (the last shard held out for validation).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from mmrec.cli.common import emit, load_data
from mmrec.config import load_yaml
from mmrec.space import SpaceConfig, TowerConfig
from mmrec.train import TrainConfig


def _default_space() -> SpaceConfig:
    vit = {"model_kwargs": {"img_size": [96, 64], "patch_size": 8, "embed_dim": 192, "depth": 4, "num_heads": 3}}
    return SpaceConfig(towers={"image": TowerConfig("timm:vit_tiny_patch16_224@random", vit, True),
                               "text": TowerConfig("minilm")})


@dataclass
class AlignRunConfig:
    """A YAML run file for ``mmrec train align``: ``space:``, ``train:``, the validation share (``--data``)
    and the streaming settings (``--shards``)."""

    space: SpaceConfig = field(default_factory=_default_space)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, batch_size=256,
                                                                    early_stop_metric="t2i_recall@10", patience=3))
    valid_fraction: float = 0.05
    shuffle_buffer: int = 2000
    samples_per_epoch: int | None = None  # per process; needed with several processes (see ShardPairs)


def _in_memory(space, args, config):
    """Training pairs from ``--data`` and the validation pixels/features of a held-out random share."""
    from mmrec.fusion.alignment import CatalogPairs

    data = load_data(args.data)
    if data.catalog is None:
        raise ValueError(f"--data {args.data}: alignment needs a catalog (an H&M folder or 'synthetic')")
    texts = None
    if data.kind == "hm":
        from mmrec.datasets import hm

        texts = hm.article_texts(data.catalog)
    pairs = CatalogPairs.from_catalog(space, data.catalog, texts=texts)
    rows = np.random.default_rng(args.seed).permutation(pairs.rows)
    n_valid = max(1, int(len(rows) * config.valid_fraction))
    valid, pairs.rows = np.sort(rows[:n_valid]), np.sort(rows[n_valid:])
    pixels = pairs.normalize["image"](pairs.pixels["image"][0][valid].float() / 255)
    return pairs, pixels, pairs.features["text"][0][valid], len(pairs.rows)


def _streamed(space, args, config):
    """Training items streamed from all shards but the last; validation pixels/features from the last."""
    import webdataset as wds

    from mmrec.fusion.shard_pairs import ShardPairs

    urls = wds.shardlists.expand_urls(args.shards)
    if len(urls) < 2:
        raise ValueError(f"--shards {args.shards}: needs at least 2 shards (the last one is held out for validation)")
    data = ShardPairs(space, urls[:-1], shuffle_buffer=config.shuffle_buffer, seed=args.seed,
                      samples_per_epoch=config.samples_per_epoch, num_workers=config.train.num_workers)
    held_out = ShardPairs(space, urls[-1:], shuffle_buffer=0)
    batch = held_out.collate([item for item in held_out if item["image"] is not None and item["text"].strip()])
    return data, batch["image:pixels"], batch["text:features"], None


def run_align(args: argparse.Namespace) -> int:
    """Train on the training items, choose the epoch on validation text→image Recall@10, save the space."""
    import torch

    from mmrec.fusion.alignment import align, retrieval_metrics
    from mmrec.space import UnifiedSpace

    config = load_yaml(AlignRunConfig, args.config) if args.config else AlignRunConfig()
    config.train.seed = args.seed
    if args.epochs:
        config.train.epochs = args.epochs
    if args.checkpoint_dir:
        config.train.checkpoint_dir = args.checkpoint_dir
    if args.no_progress:
        config.train.progress = False
    if not (args.data or args.shards):
        raise ValueError("mmrec train align needs --data (a catalog) or --shards (catalog shards)")
    torch.manual_seed(args.seed)
    space = UnifiedSpace(config.space)
    data, valid_pixels, valid_text, n_train = (_streamed if args.shards else _in_memory)(space, args, config)

    def validate(s: UnifiedSpace) -> dict[str, float]:
        with torch.no_grad():
            images = s.project("image", s.encoders["image"].encode(valid_pixels))
            found = retrieval_metrics(s.project("text", valid_text), images)
        return {f"t2i_{k}": v for k, v in found.items()}

    result = align(space, data, config.train, evaluate_fn=validate)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # every process holds the same weights; one writes them
        return 0
    space.save_pretrained(args.out)
    report = {"out": args.out, "train_items": n_train, "valid_items": len(valid_text),
              "best_epoch": result.best_epoch, "valid": result.best_metrics,
              "samples_per_s": [h["samples_per_s"] for h in result.history]}
    if args.shards:
        report["skipped_samples"] = data.stats.counts
    emit(report, args.json)
    return 0
