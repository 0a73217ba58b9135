"""Train one model on a split and report valid and test metrics at the point chosen on valid."""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from accelerate.utils import set_seed

from mmrec.evaluate import evaluate
from mmrec.recommender import Recommender, create_model
from mmrec.splits import Split
from mmrec.train import TrainConfig


def run(split: Split, model_name: str, *, model_config: Any = None, train_config: TrainConfig | None = None,
        ks: Sequence[int] = (10, 20, 50), select_on: str = "recall@20",
        setup: Callable[[Recommender], None] | None = None) -> tuple[Recommender, dict]:
    """Fit ``model_name`` on ``split.train``; early stopping and the reported point use valid ``select_on``.

    ``setup(model)`` runs between building and fitting (e.g. ``model.set_content(vectors)``). A model with
    ``set_history`` (a sequence model) is given the train + valid events before the test evaluation, and
    keeps them (the history it recommends from).

    Returns the fitted model and ``{"valid": {...}, "test": {...}, "best_epoch", "epochs",
    "seconds_per_epoch", "fit_seconds"}``. Test metrics are computed once, at the chosen point.
    """
    train_config = train_config or TrainConfig()
    set_seed(train_config.seed)  # initial weights depend on the seed too, not only the batch order
    model = create_model(model_name, split.train.n_users, split.train.n_items, model_config)
    if setup is not None:
        setup(model)

    def validate(m: Recommender) -> dict[str, float]:
        return evaluate(m, split, on="valid", ks=ks).metrics

    started = time.perf_counter()
    result = model.fit(split.train, train_config=train_config, evaluate_fn=validate)
    fit_seconds = time.perf_counter() - started
    model.eval()
    report: dict[str, Any] = {"valid": validate(model)}
    if hasattr(model, "set_history"):  # a sequence model predicts test from train + valid events
        model.set_history(split.train.concat(split.valid))
    report |= {"test": evaluate(model, split, on="test", ks=ks).metrics, "fit_seconds": fit_seconds}
    if result is not None:
        epochs = [h["seconds"] for h in result.history]
        report |= {"best_epoch": result.best_epoch, "epochs": result.epochs_run,
                   "seconds_per_epoch": sum(epochs) / len(epochs) if epochs else None}
    return model, report
