"""``mmrec train coldstart``: the VAE fusion model with its item content.

The model folder holds the recommender and its `mmrec.content.ContentRecipe` (``content.json``, and the
`UnifiedSpace` in ``space/`` when ``--space`` made the content), written by ``save_pretrained``, so
``mmrec recommend --add-items`` and `Recommender.add_items` embed new items the same way.

With a cold protocol (``--protocol cold`` or ``new-products``) the command trains what
``benchmarks/coldstart_hm.py`` reports: the same split for the same ``--seed`` (unique user–item pairs),
the epoch chosen on valid Recall@20 ranking the cold items only (the benchmark's validation; Recall@20
over all items falls as the model learns cold items), and the benchmark's schedule as defaults
(`COLDSTART_TRAIN`; a run file's ``train:`` keys or ``--epochs`` override them). It reports cold valid and
test metrics, hybrid test metrics (``test_all``), which metric chose the epoch, and the seconds it took.
With ``--warm-targets F`` the split also holds warm purchases in valid and test; the model's ``cold_offset``
(what puts never-trained items on the trained items' scale) is then chosen on valid hybrid Recall@20 and
saved with it, and ``test_all_calibrated`` reports the hybrid figure it gives.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.cli.common import emit, load_data, make_split, positive_int
from mmrec.content import ContentRecipe

# The schedules of the README's cold-start tables (benchmarks/coldstart_hm.py). Cold split: Adam lr 5e-3,
# batch 4096, validation every 2 epochs, stop after 1 validation without improvement, at most 8 epochs.
# Warm protocols (hm5core): batch 2048, validation every 5 epochs, patience 4, at most 100 epochs.
COLDSTART_TRAIN = {"epochs": 8, "eval_every": 2, "patience": 1, "batch_size": 4096, "lr": 5e-3}
WARM_TRAIN = {"epochs": 100, "eval_every": 5, "patience": 4, "batch_size": 2048, "lr": 5e-3}


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cache`` (content vectors), ``--photo-half`` and ``--threads`` (torch CPU threads)."""
    parser.add_argument("--cache", help="embedding cache folder for the item content vectors (reused across runs)")
    parser.add_argument("--photo-half", action="store_true",
                        help="with --space: content is [MiniLM text, the space's photo vector]; the affinity and "
                             "content graph compare the text half, the content generator reads both")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")


def split_content(args: argparse.Namespace, data: Any, split: Any) -> tuple[ContentRecipe, np.ndarray]:
    """The content recipe (``--space`` or MiniLM on the default text fields) and the vectors of the split's
    items, in code order (``--cache``, where the command has it, is the embedding cache)."""
    if data.catalog is None:
        raise ValueError(f"--data {args.data}: item content needs a catalog (an H&M folder or 'synthetic')")
    if getattr(args, "photo_half", False) and not getattr(args, "space", None):
        raise ValueError("--photo-half needs --space (the UnifiedSpace whose image tower makes the photo half)")
    if getattr(args, "space", None):
        from mmrec.space import UnifiedSpace

        try:
            recipe = ContentRecipe(space=UnifiedSpace.from_pretrained(args.space),
                                   photo_half=bool(getattr(args, "photo_half", False)))
        except ValueError as err:
            raise ValueError(f"--space {args.space}: {err}") from None
    else:
        recipe = ContentRecipe()
    catalog = data.catalog.subset(data.catalog.index_of(split.train.item_ids))
    return recipe, recipe.embed(catalog, cache=getattr(args, "cache", None))


def coldstart_train_config(args: argparse.Namespace, train_config: Any, cold: bool = True) -> Any:
    """``train_config`` with `COLDSTART_TRAIN` (``cold``) or `WARM_TRAIN` in place of every field that neither
    ``--epochs`` nor the run file's ``train:`` section set."""
    explicit = {"epochs"} if getattr(args, "epochs", None) is not None else set()
    if getattr(args, "config", None):
        import yaml

        raw = yaml.safe_load(Path(args.config).read_text()) or {}
        explicit |= set((raw.get("train") or {}) if isinstance(raw, dict) else {})
    defaults = COLDSTART_TRAIN if cold else WARM_TRAIN
    return dataclasses.replace(train_config, **{k: v for k, v in defaults.items() if k not in explicit})


def run_coldstart(args: argparse.Namespace, model_config: dict, train_config: Any) -> int:
    """Content vectors for every catalog item, then `vae_fusion` fitted on the split's train part with the
    epoch chosen on valid (cold items ranked, for a cold split); saves the model with its content recipe."""
    from mmrec.experiment import run

    started = time.perf_counter()
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    data = load_data(args.data)
    data = dataclasses.replace(data, interactions=data.interactions.unique_pairs())  # as the benchmark
    split, _ = make_split(data, args)
    recipe, vectors = split_content(args, data, split)
    cold = split.cold_valid_items is not None
    train_config = coldstart_train_config(args, train_config, cold)
    model_config = {"content_dim": vectors.shape[1], **model_config}
    if recipe.photo_half:
        model_config.setdefault("similarity_dims", recipe.text_dims(vectors))
    setup = lambda m: m.set_content(vectors, recipe=recipe)  # noqa: E731
    warm_targets = cold and getattr(args, "warm_targets", 0.0) > 0
    model, report = run(split, "vae_fusion", model_config=model_config, train_config=train_config,
                        setup=setup, refit_all=args.refit_all and not warm_targets,
                        candidates="cold" if cold else "all")
    if warm_targets:
        model, report = calibrate_cold_offset(model, report, split, model_config, train_config, setup,
                                              refit_all=args.refit_all)
    out = Path(args.out)
    model.save_pretrained(out)
    schedule = {k: getattr(train_config, k) for k in COLDSTART_TRAIN}
    emit({"model": "vae_fusion", "out": str(out), "protocol": args.protocol or ("x_label" if data.labels is not None else "mmrec"), "seed": args.seed,
          "train": schedule, **report, "seconds": time.perf_counter() - started}, args.json)
    return 0


def calibrate_cold_offset(model: Any, report: dict, split: Any, model_config: dict, train_config: Any,
                          setup: Any, *, refit_all: bool) -> tuple[Any, dict]:
    """Choose ``cold_offset`` on valid hybrid Recall@20 (`mmrec.hybrid.fit_cold_offset`; the split holds
    warm targets), report test hybrid with it, and return the model carrying it — refitted on all rows with
    the chosen epochs and the offset when ``refit_all`` (items added later get the offset)."""
    from mmrec.evaluate import evaluate
    from mmrec.experiment import refit
    from mmrec.hybrid import fit_cold_offset

    offset, tried = fit_cold_offset(model, split, k=20, seed=train_config.seed)
    model.config = dataclasses.replace(model.config, cold_offset=offset)  # read at every score(), never cached
    report |= {"cold_offset": offset, "cold_offset_grid": tried,
               "test_all_calibrated": evaluate(model, split, on="test", ks=(10, 20, 50)).metrics}
    if refit_all:
        epochs = report["best_epoch"] + 1 if report.get("best_epoch") is not None else report.get("epochs")
        model, report["refit"] = refit(split, "vae_fusion", model_config={**model_config, "cold_offset": offset},
                                       train_config=train_config, epochs=epochs, setup=setup)
    return model, report
