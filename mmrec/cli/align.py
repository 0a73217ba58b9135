"""``mmrec train align``: align a `UnifiedSpace` on a catalog's photo–text pairs (runs under accelerate launch)."""
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
    """A YAML run file for ``mmrec train align``: ``space:``, ``train:`` and the validation share."""

    space: SpaceConfig = field(default_factory=_default_space)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, batch_size=256,
                                                                    early_stop_metric="t2i_recall@10", patience=3))
    valid_fraction: float = 0.05


def run_align(args: argparse.Namespace) -> int:
    """Train on all but a random validation share of the items with both modalities; save the space."""
    import torch

    from mmrec.fusion.alignment import CatalogPairs, align, retrieval_metrics
    from mmrec.space import UnifiedSpace

    config = load_yaml(AlignRunConfig, args.config) if args.config else AlignRunConfig()
    config.train.seed = args.seed
    if args.epochs:
        config.train.epochs = args.epochs
    if args.checkpoint_dir:
        config.train.checkpoint_dir = args.checkpoint_dir
    if args.no_progress:
        config.train.progress = False
    data = load_data(args.data)
    if data.catalog is None:
        raise ValueError(f"--data {args.data}: alignment needs a catalog (an H&M folder or 'synthetic')")
    texts = None
    if data.kind == "hm":
        from mmrec.datasets import hm

        texts = hm.article_texts(data.catalog)
    torch.manual_seed(args.seed)
    space = UnifiedSpace(config.space)
    pairs = CatalogPairs.from_catalog(space, data.catalog, texts=texts)
    rows = np.random.default_rng(args.seed).permutation(pairs.rows)
    n_valid = max(1, int(len(rows) * config.valid_fraction))
    valid, pairs.rows = np.sort(rows[:n_valid]), np.sort(rows[n_valid:])
    image_modality = next(iter(pairs.pixels))
    pixels, _ = pairs.pixels[image_modality]
    text_features, _ = pairs.features["text"]

    def validate(s: UnifiedSpace) -> dict[str, float]:
        with torch.no_grad():
            batch = pairs.normalize[image_modality](pixels[valid].float() / 255)
            images = s.project(image_modality, s.encoders[image_modality].encode(batch))
            found = retrieval_metrics(s.project("text", text_features[valid]), images)
        return {f"t2i_{k}": v for k, v in found.items()}

    result = align(space, pairs, config.train, evaluate_fn=validate)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # every process holds the same weights; one writes them
        return 0
    space.save_pretrained(args.out)
    emit({"out": args.out, "train_items": len(pairs.rows), "valid_items": len(valid),
          "best_epoch": result.best_epoch, "valid": result.best_metrics,
          "samples_per_s": [h["samples_per_s"] for h in result.history]}, args.json)
    return 0
