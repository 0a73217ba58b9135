"""``mmrec train align``: align a `UnifiedSpace` on a catalog (runs under accelerate launch).

The space comes from a named preset (`mmrec.space.space_preset`, ``lit-tiny-vit`` by default) with the run
file's ``space:`` settings over it, and its pairs say what is aligned: ``image`` and ``text`` come from the
catalog's photos and texts, ``screen`` from product pages rendered from the catalog. Items come from
``--data`` (read into memory; whole groups of items, e.g. a product's colour variants, held out for
validation by `mmrec.fusion.alignment.split_by_group`) or are streamed from catalog shards with
``--shards`` (photo–text pairs; the last shard held out). The epoch is chosen on the held-out items by
`mmrec.fusion.alignment.RetrievalValidator` (both directions of every pair, e.g. ``t2i_recall@10``).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.cli.common import emit, load_data, load_run_file, prepare_checkpoint_dir
from mmrec.content import DEFAULT_FIELDS
from mmrec.space import SPACE_PRESETS, SpaceConfig, space_preset
from mmrec.train import TrainConfig

CATALOG_MODALITIES = ("image", "text", "screen")  # what `CatalogPairs.from_catalog` makes from a catalog


@dataclass
class AlignRunConfig:
    """A YAML run file for ``mmrec train align``.

    ``preset``: a named space (`mmrec.space.SPACE_PRESETS`; null: ``space:`` is the whole `SpaceConfig`);
    ``space``: `SpaceConfig` fields over the preset (``towers`` entries replace those modalities' towers).
    ``train``: the loop's settings. ``text_fields``: catalog fields joined into an item's text
    (`mmrec.content.item_texts`). ``--data``: ``valid_fraction`` of the groups of items sharing the catalog
    attribute ``hold_out_by`` are held out (each item is its own group in a catalog without it).
    ``--shards``: ``shuffle_buffer``, and ``samples_per_epoch`` per process (needed with several processes,
    see `mmrec.fusion.shard_pairs.ShardPairs`).
    """

    preset: str | None = "lit-tiny-vit"
    space: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-3, batch_size=256,
                                                                    early_stop_metric="t2i_recall@10", patience=3))
    text_fields: tuple[str, ...] = DEFAULT_FIELDS
    valid_fraction: float = 0.05
    hold_out_by: str = "product_code"
    shuffle_buffer: int = 2000
    samples_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction is a share of the item groups in (0, 1), got {self.valid_fraction}")
        self.space_config()  # a bad preset or space setting is an error before any data is read

    def space_config(self) -> SpaceConfig:
        """The preset with ``space:`` over it (or ``space:`` alone without a preset)."""
        if self.preset is None:
            from mmrec.config import from_dict

            return from_dict(SpaceConfig, self.space, where="space")
        return space_preset(self.preset, **self.space)


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mmrec train align`` beyond the shared ``--data``, ``--shards``, ``--seed``, ``--out`` and
    the loop overrides (``--config``, ``--epochs``, ``--checkpoint-dir``, ``--no-progress``, ``--json``)."""
    parser.add_argument("--preset", choices=sorted(SPACE_PRESETS),
                        help="the named space to align (overrides the run file's 'preset:'; default lit-tiny-vit)")


def _pairs_of(config: SpaceConfig) -> list[tuple[str, str]]:
    return [tuple(pair.split("-", 1)) for pair in config.pairs]


def _check_pairs(config: SpaceConfig, streamed: bool) -> None:
    """Refuse pairs this command cannot make data for, before any tower is built or data read."""
    if streamed and tuple(config.pairs) != ("image-text",):
        raise ValueError(f"--shards streams photo-text pairs: the space's pairs must be ['image-text'], got "
                         f"{list(config.pairs)}")
    unusable = sorted({m for pair in _pairs_of(config) for m in pair} - set(CATALOG_MODALITIES))
    if unusable:
        raise ValueError(f"the space's pairs {list(config.pairs)} need {unusable}, which a catalog does not give "
                         f"(mmrec train align makes {', '.join(CATALOG_MODALITIES)}); align tower-less modalities "
                         f"from the library (CatalogPairs.from_catalog(..., vectors=...))")


def _directions(config: SpaceConfig) -> list[tuple[str, str]]:
    """Both directions of every pair, ``b→a`` first (``t2i`` for ``image-text``)."""
    return [direction for a, b in _pairs_of(config) for direction in ((b, a), (a, b))]


def _in_memory(space, args, config):
    """Training pairs from ``--data``, a validator on held-out groups, and the counts for the report."""
    from mmrec.content import item_texts
    from mmrec.fusion.alignment import CatalogPairs, RetrievalValidator, product_pages, split_by_group

    data = load_data(args.data, photos=True)
    if data.catalog is None:
        raise ValueError(f"--data {args.data}: alignment needs a catalog (an H&M folder or 'synthetic')")
    catalog = data.catalog
    renderers = {"screen": product_pages(catalog)} if "screen" in space.encoders else None
    pairs = CatalogPairs.from_catalog(space, catalog, texts=item_texts(catalog, config.text_fields),
                                      renderers=renderers)
    by = config.hold_out_by if config.hold_out_by in catalog.attributes else "item"
    groups = catalog.attributes[by] if by != "item" else np.arange(len(catalog))
    eligible = np.zeros(len(catalog), dtype=bool)
    eligible[pairs.rows] = True
    held = split_by_group(groups, {"valid": config.valid_fraction}, seed=args.seed, eligible=eligible)
    if not len(held["valid"]) or not len(held["train"]):
        raise ValueError(f"--data {args.data}: {int(eligible.sum())} usable items in too few groups of "
                         f"{by!r} to hold out valid_fraction {config.valid_fraction} and train on the rest")
    pairs.rows = held["train"]
    validator = RetrievalValidator(pairs.batches(held["valid"]), _directions(space.config))
    return pairs, validator, {"train_items": len(pairs.rows), "hold_out_by": by}


def _streamed(space, args, config):
    """Training items streamed from all shards but the last, a validator on the last."""
    import webdataset as wds

    from mmrec.fusion.alignment import RetrievalValidator
    from mmrec.fusion.shard_pairs import ShardPairs

    urls = wds.shardlists.expand_urls(args.shards)
    missing = [u for u in urls if "://" not in u and not u.startswith("pipe:") and not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"--shards {args.shards}: {len(missing)} of {len(urls)} shard file(s) do not exist, "
                                f"e.g. {missing[:3]}")
    if len(urls) < 2:
        raise ValueError(f"--shards {args.shards}: needs at least 2 shards (the last one is held out for validation)")
    data = ShardPairs(space, urls[:-1], shuffle_buffer=config.shuffle_buffer, seed=args.seed,
                      samples_per_epoch=config.samples_per_epoch, num_workers=config.train.num_workers)
    held_out = ShardPairs(space, urls[-1:], shuffle_buffer=0)
    validator = RetrievalValidator([held_out.collate(list(held_out))], _directions(space.config))
    return data, validator, {"train_items": None}


def run_align(args: argparse.Namespace) -> int:
    """Train on the training items, choose the epoch on the held-out items, save the space."""
    import torch

    from mmrec.fusion.alignment import align
    from mmrec.space import UnifiedSpace

    config = load_run_file(AlignRunConfig, args.config) if args.config else AlignRunConfig()
    if getattr(args, "preset", None):
        config.preset = args.preset
    if args.seed is None:  # --seed, else the run file's train.seed
        args.seed = config.train.seed
    config.train.seed = args.seed
    if args.epochs:
        config.train.epochs = args.epochs
    if args.checkpoint_dir:
        config.train.checkpoint_dir = args.checkpoint_dir
    config.train.checkpoint_dir = prepare_checkpoint_dir(config.train.checkpoint_dir, (args.data,), args.out)
    if args.no_progress:
        config.train.progress = False
    if not (args.data or args.shards):
        raise ValueError("mmrec train align needs --data (a catalog) or --shards (catalog shards)")
    space_config = config.space_config()
    _check_pairs(space_config, streamed=bool(args.shards))
    torch.manual_seed(args.seed)
    space = UnifiedSpace(space_config)
    data, validator, counts = (_streamed if args.shards else _in_memory)(space, args, config)
    result = align(space, data, config.train, evaluate_fn=validator)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # every process holds the same weights; one writes them
        return 0
    space.save_pretrained(args.out)
    report = {"out": args.out, "preset": config.preset, "pairs": list(space_config.pairs), **counts,
              "valid_items": validator.n_rows, "best_epoch": result.best_epoch, "valid": result.best_metrics,
              "samples_per_s": [h["samples_per_s"] for h in result.history]}
    if args.shards:
        report["skipped_samples"] = data.stats.counts
    emit(report, args.json)
    return 0
