"""Checkpoints of the one training loop cannot cross runs, survive damage, and the loop checks its config first.

Tiny BPR / LightGCN runs (16 users × 12 items, one batch an epoch) on CPU; every checkpoint is written at an
epoch end (``checkpoint_every=0``), so a run of E epochs leaves ``step_…E`` and ``step_…E-1``.
"""
from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import random_interactions
from mmrec.io import read_json
from mmrec.recommender import create_model
from mmrec.train import LOOP_STATE, TrainConfig, checkpoint_folders, fit, latest_checkpoint


def _interactions():
    return random_interactions(n_users=16, n_items=12, per_user=3, seed=0)


def _fit(checkpoint_dir: Path, model: str = "bpr", *, model_config: dict | None = None, evaluate_fn=None,
         **train):
    """Fit a tiny ``model`` with checkpoints in ``checkpoint_dir``; returns (model, TrainResult)."""
    inter = _interactions()
    torch.manual_seed(0)
    recommender = create_model(model, inter.n_users, inter.n_items, model_config or {"dim": 4})
    config = TrainConfig(**{"epochs": 1, "batch_size": 64, "lr": 0.01, "seed": 0, "progress": False,
                            "checkpoint_dir": str(checkpoint_dir), **train})
    return recommender, recommender.fit(inter, train_config=config, evaluate_fn=evaluate_fn)


# -- checkpoints of another run are refused -------------------------------------------------------------------
def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    _fit(tmp_path / "ckpt", "lightgcn")
    with pytest.raises(ValueError, match=r"was written by model 'lightgcn', this run trains 'bpr'") as err:
        _fit(tmp_path / "ckpt", "bpr")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "ckpt") in message


@pytest.mark.parametrize("change, fragment", [
    ({"train": {"seed": 1}}, "was written with seed 0, this run has seed 1"),
    ({"train": {"lr": 0.02}}, "other training settings (lr: 0.01 → 0.02)"),
    ({"train": {"batch_size": 32}}, "other training settings (batch_size: 64 → 32)"),
    ({"model_config": {"dim": 8}}, "another 'bpr' config (dim: 4 → 8)"),
])
def test_a_checkpoint_of_another_seed_or_config_is_refused(tmp_path, change, fragment):
    _fit(tmp_path / "ckpt")
    with pytest.raises(ValueError) as err:
        _fit(tmp_path / "ckpt", model_config=change.get("model_config"), **change.get("train", {}))
    assert fragment in str(err.value)


def test_another_data_fingerprint_is_refused_and_more_epochs_resume(tmp_path):
    first_model, first = _fit(tmp_path / "ckpt", epochs=1)
    assert first.resumed_from is None and first.global_step == 1
    # More epochs, another patience and checkpoint_every are the same run: it continues.
    _, more = _fit(tmp_path / "ckpt", epochs=2, patience=3, keep_checkpoints=3)
    assert more.resumed_from.endswith("step_000000001") and more.global_step == 2 and more.epochs_run == 2

    model = nn.Linear(2, 1)
    model.training_step = lambda batch: {"loss": model(batch).pow(2).mean()}
    data = torch.randn(8, 2)
    fit(model, data, TrainConfig(epochs=1, batch_size=8, progress=False, checkpoint_dir=str(tmp_path / "lin")),
        fingerprint="rows 0-7 of table A")
    with pytest.raises(ValueError, match=r"was trained on other data \('rows 0-7 of table A', this run has "
                                         r"'rows 0-7 of table B'\)"):
        fit(model, data, TrainConfig(epochs=2, batch_size=8, progress=False, checkpoint_dir=str(tmp_path / "lin")),
            fingerprint="rows 0-7 of table B")

    class Rows(torch.utils.data.Dataset):
        """Eight rows of a named table; the name is what the dataset's own fingerprint reports."""

        def __init__(self, table: str) -> None:
            self.table = table

        def __len__(self) -> int:
            return 8

        def __getitem__(self, index: int) -> torch.Tensor:
            return data[index]

        def fingerprint(self) -> str:
            return f"table {self.table}"

    config = TrainConfig(epochs=1, batch_size=8, progress=False, checkpoint_dir=str(tmp_path / "rows"))
    fit(model, Rows("A"), config)
    with pytest.raises(ValueError, match=r"other data \('table A', this run has 'table B'\)"):
        fit(model, Rows("B"), config)


def test_a_checkpoint_folder_is_refused_when_resume_is_off(tmp_path):
    _fit(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"holds checkpoints \(step_000000001\) and resume is off"):
        _fit(tmp_path / "ckpt", resume=False)
    assert [p.name for p in checkpoint_folders(tmp_path / "ckpt")] == ["step_000000001"]


# -- the folder ------------------------------------------------------------------------------------------
class _Counting(nn.Module):
    """A one-parameter model that counts its training steps."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.steps = 0

    def training_step(self, batch):
        self.steps += 1
        return {"loss": (self.w - batch.float().mean()).pow(2).sum()}


def test_checkpoint_dir_is_created_before_the_first_epoch(tmp_path):
    class Failing(_Counting):
        def training_step(self, batch):
            raise RuntimeError("first step")

    folder = tmp_path / "a" / "b" / "ckpt"
    with pytest.raises(RuntimeError, match="first step"):
        fit(Failing(), torch.arange(4), TrainConfig(epochs=1, batch_size=4, progress=False, checkpoint_dir=str(folder)))
    assert folder.is_dir()


def test_checkpoint_dir_that_is_a_file_is_refused_before_any_step(tmp_path):
    file = tmp_path / "ckpt"
    file.write_text("not a folder")
    model = _Counting()
    with pytest.raises(ValueError, match=r"checkpoint_dir .*ckpt is a file, not a folder"):
        fit(model, torch.arange(4), TrainConfig(epochs=1, batch_size=4, progress=False, checkpoint_dir=str(file)))
    assert model.steps == 0 and file.read_text() == "not a folder"


# -- damaged checkpoints ---------------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated weights": lambda folder: _truncate(folder / "model.safetensors"),
    "garbled optimiser": lambda folder: (folder / "optimizer.bin").write_bytes(b"garbage" * 10),
    "missing loop state": lambda folder: (folder / LOOP_STATE).unlink(),
    "garbled loop state": lambda folder: (folder / LOOP_STATE).write_text('{"epoch": 2, '),
    "truncated best weights": lambda folder: _truncate(folder / "best.safetensors"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog, damage):
    def validate(model):
        return {"recall@20": 0.5}

    _, straight = _fit(tmp_path / "ckpt", epochs=2, evaluate_fn=validate)
    newest, previous = checkpoint_folders(tmp_path / "ckpt")
    assert (newest.name, previous.name) == ("step_000000002", "step_000000001")
    DAMAGE[damage](newest)

    with caplog.at_level(logging.WARNING, logger="mmrec.train"):
        _, resumed = _fit(tmp_path / "ckpt", epochs=3, evaluate_fn=validate)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"checkpoint {newest} is damaged" in w for w in warnings), warnings
    assert resumed.resumed_from == str(previous)
    # It redid epoch 1 from step 1 and went on: the same run, three epochs in all.
    assert resumed.global_step == 3 and resumed.epochs_run == 3 and resumed.best_epoch == 0
    # The damaged folder was set aside, not deleted, and is never resumed again.
    assert (tmp_path / "ckpt" / "damaged_step_000000002").is_dir()
    assert [p.name for p in checkpoint_folders(tmp_path / "ckpt")] == ["step_000000003", "step_000000002"]


class _Planted:
    """A pickle that creates a file when unpickled: what a tampered checkpoint could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("file", ["optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"])
def test_pickles_planted_in_a_checkpoint_never_run(tmp_path, caplog, file):
    _fit(tmp_path / "ckpt", epochs=2)
    newest = latest_checkpoint(tmp_path / "ckpt")
    marker = tmp_path / "ran"
    (newest / file).write_bytes(pickle.dumps(_Planted(marker), protocol=2))
    with caplog.at_level(logging.WARNING, logger="mmrec.train"):
        _, resumed = _fit(tmp_path / "ckpt", epochs=3)
    assert not marker.exists()
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    if file.startswith("random_states"):  # refused by the weights-only loader: resumed, but not exactly
        assert resumed.resumed_from == str(newest) and "NOT exact" in warnings
    else:  # the optimiser state is refused, an unregistered custom state is never loaded: damaged
        assert resumed.resumed_from.endswith("step_000000001") and f"checkpoint {newest} is damaged" in warnings


def test_no_usable_checkpoint_is_refused_naming_the_folder(tmp_path):
    _fit(tmp_path / "ckpt", epochs=2)
    for folder in checkpoint_folders(tmp_path / "ckpt"):
        _truncate(folder / "model.safetensors")
    with pytest.raises(ValueError) as err:
        _fit(tmp_path / "ckpt", epochs=3)
    message = str(err.value)
    assert message.startswith(f"no usable checkpoint in {tmp_path / 'ckpt'} (step_000000002: ")
    assert "step_000000001: " in message and f"delete {tmp_path / 'ckpt'}" in message and "\n" not in message
    assert len(checkpoint_folders(tmp_path / "ckpt")) == 2  # nothing was moved or deleted


def test_a_damaged_rng_state_is_a_warning_that_the_resume_is_not_exact(tmp_path, caplog):
    _fit(tmp_path / "ckpt", epochs=1)
    newest = latest_checkpoint(tmp_path / "ckpt")
    (newest / "random_states_0.pkl").write_bytes(b"not a pickle")
    with caplog.at_level(logging.WARNING, logger="mmrec.train"):
        _, resumed = _fit(tmp_path / "ckpt", epochs=2)
    assert resumed.resumed_from == str(newest) and resumed.global_step == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("random_states_0.pkl" in w and "NOT exact" in w for w in warnings), warnings


def test_the_loop_state_is_strict_json_and_non_finite_values_come_back(tmp_path):
    def validate(model):
        return {"recall@20": 0.5, "ndcg@20": math.nan}

    _fit(tmp_path / "ckpt", epochs=1, evaluate_fn=validate)
    state = read_json(latest_checkpoint(tmp_path / "ckpt") / LOOP_STATE)  # refuses NaN
    assert state["run"]["model"] == "bpr" and state["run"]["seed"] == 0
    _, resumed = _fit(tmp_path / "ckpt", epochs=1, evaluate_fn=validate)
    assert resumed.resumed_from is not None and math.isnan(resumed.history[0]["valid"]["ndcg@20"])
    assert resumed.best_metrics["recall@20"] == 0.5


# -- the config is checked before any work ---------------------------------------------------------------
def test_a_typo_in_early_stop_metric_is_refused_before_any_step(tmp_path):
    with pytest.raises(ValueError, match=r"TrainConfig.early_stop_metric 'recal@20' .*did you mean recall@20"):
        TrainConfig(early_stop_metric="recal@20")
    for good in ("recall@20", "ndcg@10", "map@12", "t2i_recall@10", "s2i_recall@1", "next_purchase_map@12"):
        TrainConfig(early_stop_metric=good)
    # A field set after construction (as a command-line override does) is checked by fit, before any step.
    config = TrainConfig(epochs=2, batch_size=4, progress=False, checkpoint_dir=str(tmp_path / "ckpt"))
    config.early_stop_metric = "recall@0"
    model = _Counting()
    with pytest.raises(ValueError, match="early_stop_metric 'recall@0'"):
        fit(model, torch.arange(8), config, evaluate_fn=lambda m: {"recall@20": 1.0})
    assert model.steps == 0 and not checkpoint_folders(tmp_path / "ckpt")


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("epochs", -1), ("batch_size", 0), ("grad_accum_steps", 0), ("eval_every", 0),
    ("keep_checkpoints", 0), ("patience", -1), ("checkpoint_every", -1), ("num_workers", -1), ("epochs", 1.5),
    ("lr", 0.0), ("lr", -1e-3), ("lr", math.nan), ("lr", math.inf), ("weight_decay", -0.1),
    ("max_grad_norm", 0.0), ("max_grad_norm", math.nan), ("peak_flops", -1.0), ("seed", -1), ("seed", 2**32),
    ("optimizer", "adagrad"), ("mixed_precision", "fp8"), ("resume", "yes"),
])
def test_invalid_settings_are_one_line_errors_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^TrainConfig\.{field} ") as err:
        TrainConfig(**{field: value})
    assert "\n" not in str(err.value)
    config = TrainConfig(epochs=1, batch_size=4, progress=False)
    setattr(config, field, value)  # set after construction: fit refuses it before any step
    model = _Counting()
    with pytest.raises(ValueError, match=rf"^TrainConfig\.{field} "):
        fit(model, torch.arange(8), config)
    assert model.steps == 0


def test_patience_zero_stops_at_the_first_evaluation_without_improvement():
    model = _Counting()
    values = iter([0.2, 0.1, 0.3])
    result = fit(model, torch.arange(4), TrainConfig(epochs=3, batch_size=4, patience=0, progress=False),
                 evaluate_fn=lambda m: {"recall@20": next(values)})
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 0
