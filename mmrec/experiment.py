"""Train one model on a split and report valid and test metrics at the point chosen on valid."""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Sequence

from accelerate.utils import set_seed

from mmrec.config import from_dict
from mmrec.evaluate import evaluate
from mmrec.recommender import Recommender, create_model
from mmrec.splits import Split
from mmrec.train import TrainConfig


def run(split: Split, model_name: str, *, model_config: Any = None,
        train_config: TrainConfig | dict | None = None, ks: Sequence[int] = (10, 20, 50),
        setup: Callable[[Recommender], None] | None = None, refit_all: bool = False,
        candidates: Any = "all") -> tuple[Recommender, dict]:
    """Fit ``model_name`` on ``split.train``; early stopping and the reported point use the valid
    ``train_config.early_stop_metric`` (Recall@20 by default; its cut-off joins the valid ``ks``) ranking
    ``candidates`` (`mmrec.evaluate.evaluate`'s: ``"all"``, or ``"cold"`` for a cold split, where
    Recall@20 over all items says little about cold items). The reported valid and test metrics rank the
    same candidates; with candidates other than ``"all"`` the report adds ``"test_all"`` (every item
    ranked, the hybrid view). ``"selected_on"`` says which metric and candidates chose the point.

    ``setup(model)`` runs between building and fitting (e.g. ``model.set_content(vectors)``). A model with
    ``set_history`` (a sequence model) is given the train + valid events before the test evaluation, and
    keeps them (the history it recommends from).

    Returns the fitted model and ``{"valid": {...}, "test": {...}, "best_epoch", "epochs",
    "seconds_per_epoch", "fit_seconds"}``. Test metrics are computed once, at the chosen point. Under
    ``accelerate launch`` (several processes) only the main process evaluates (`is_main_process`); the
    others' report has no ``valid`` and ``test``.

    ``refit_all`` (deploy mode): after choosing and reporting as above, a fresh model with the same settings
    is fitted on *all* rows of the split (train + valid + test) for the chosen number of epochs without
    early stopping, and that model is returned, so it answers for the day after the data ends; the report
    gains ``"refit": {"rows", "epochs", "fit_seconds"}`` (the metrics stay those of the chosen point).
    """
    train_config = from_dict(TrainConfig, train_config, "train_config")  # a dict as model_config may be
    valid_ks = tuple(sorted(set(ks) | {int(train_config.early_stop_metric.partition("@")[2])}))
    if len(split.valid) == 0:  # every evaluation would be NaN: early stopping would stop at patience, choosing nothing
        raise ValueError("the split's valid part is empty: nothing to choose the epoch on")
    set_seed(train_config.seed)  # initial weights depend on the seed too, not only the batch order
    model = create_model(model_name, split.train.n_users, split.train.n_items, model_config)
    if setup is not None:
        setup(model)

    def validate(m: Recommender) -> dict[str, float]:
        return evaluate(m, split, on="valid", ks=valid_ks, candidates=candidates).metrics

    started = time.perf_counter()
    result = model.fit(split.train, train_config=train_config, evaluate_fn=validate)
    fit_seconds = time.perf_counter() - started
    model.eval()
    main = is_main_process()  # under `accelerate launch` every process holds the same model: one evaluates it
    where = candidates if isinstance(candidates, str) else f"{len(candidates)} given items"
    report: dict[str, Any] = {"selected_on": f"valid {train_config.early_stop_metric}, ranking {where} items"}
    if main:
        report["valid"] = validate(model)
    if hasattr(model, "set_history"):  # a sequence model predicts test from train + valid events
        model.set_history(split.train.concat(split.valid))
    if main:
        report["test"] = evaluate(model, split, on="test", ks=ks, candidates=candidates).metrics
        if not (isinstance(candidates, str) and candidates == "all"):
            report["test_all"] = evaluate(model, split, on="test", ks=ks).metrics
    report["fit_seconds"] = fit_seconds
    if result is not None:
        epochs = [h["seconds"] for h in result.history]
        report |= {"best_epoch": result.best_epoch, "epochs": result.epochs_run,
                   "seconds_per_epoch": sum(epochs) / len(epochs) if epochs else None}
    if refit_all:
        chosen = None if result is None else (result.best_epoch + 1 if result.best_epoch is not None
                                              else result.epochs_run or None)
        model, report["refit"] = refit(split, model_name, model_config=model_config, train_config=train_config,
                                       epochs=chosen, setup=setup)
    return model, report


def is_main_process() -> bool:
    """Whether this is the process that evaluates, writes and reports: the only one, or rank 0 of several
    (``accelerate launch``; the training loop shards the batches over all of them). Before the loop has
    joined the processes into a torch.distributed group, the launcher's ``RANK`` says."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def refit(split: Split, model_name: str, *, model_config: Any = None, train_config: TrainConfig | None = None,
          epochs: int | None = None, setup: Callable[[Recommender], None] | None = None
          ) -> tuple[Recommender, dict]:
    """A fresh ``model_name`` fitted on train + valid + test of ``split`` for ``epochs`` epochs (a model
    trained by the loop; ignored by models fitted in one pass), with no validation and no checkpoints
    (a checkpoint folder of the chosen run must not be resumed from). Returns the model and
    ``{"rows", "epochs", "fit_seconds"}``."""
    train_config = train_config or TrainConfig()
    config = dataclasses.replace(train_config, checkpoint_dir=None,
                                 epochs=epochs if epochs is not None else train_config.epochs)
    everything = split.train.concat(split.valid).concat(split.test)
    set_seed(config.seed)
    model = create_model(model_name, everything.n_users, everything.n_items, model_config)
    if setup is not None:
        setup(model)
    started = time.perf_counter()
    result = model.fit(everything, train_config=config, evaluate_fn=None)
    seconds = time.perf_counter() - started
    model.eval()
    if hasattr(model, "set_history"):
        model.set_history(everything)
    return model, {"rows": len(everything), "epochs": None if result is None else result.epochs_run,
                   "fit_seconds": seconds}
