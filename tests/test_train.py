"""The one training loop: kill-and-resume gives the same result; early stopping keeps the best weights."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_interactions
from mmrec.evaluate import evaluate
from mmrec.fusion.baselines import BPRConfig, BPRMF
from mmrec.splits import leave_last_out
from mmrec.train import EpochSampler, TrainConfig, latest_checkpoint

SCRIPT = Path(__file__).with_name("resume_script.py")


def _run(checkpoint_dir: Path, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parent)}
    env.pop("MMREC_TEST_KILL_AT_STEP", None)
    if kill_at:
        env["MMREC_TEST_KILL_AT_STEP"] = str(kill_at)
    return subprocess.run([sys.executable, str(SCRIPT), str(checkpoint_dir)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_kill_mid_epoch_and_resume_gives_identical_final_metrics(tmp_path):
    straight = _run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    reference = json.loads(straight.stdout.strip().splitlines()[-1])
    assert reference["resumed_from"] is None

    # 2 batches per epoch would make step 3 an epoch end; with 80 users × ~7 pairs / 64 there are 8-9 batches
    # per epoch, so step 13 is in the middle of epoch 1, after the checkpoint at step 12.
    killed = _run(tmp_path / "killed", kill_at=13)
    assert killed.returncode == -9, killed.stderr
    assert latest_checkpoint(tmp_path / "killed") is not None
    resumed = _run(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    again = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert again["resumed_from"] is not None and "step_000000012" in again["resumed_from"]
    assert again["test"] == reference["test"]
    assert again["valid_history"] == reference["valid_history"]
    assert again["global_step"] == reference["global_step"]
    assert again["weights"] == reference["weights"]


def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    a, b = EpochSampler(50, seed=1), EpochSampler(50, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    assert sorted(a) == list(range(50))


def test_early_stopping_restores_best_weights_and_stops():
    torch.manual_seed(0)
    split = leave_last_out(random_interactions(seed=1))
    model = BPRMF(BPRConfig(dim=8), split.train.n_users, split.train.n_items)
    calls = []

    def fake_metric(m):
        # A validation curve that peaks at the third evaluation, then falls.
        calls.append(m.user_emb.detach().clone())
        value = [0.1, 0.2, 0.3, 0.25, 0.2, 0.1, 0.05][len(calls) - 1]
        return {"recall@20": value}

    result = model.fit(split.train, train_config=TrainConfig(epochs=7, batch_size=32, patience=2, progress=False),
                       evaluate_fn=fake_metric)
    # patience=2: the third evaluation without improvement stops the run (as MMRec's stopping_step).
    assert result.best_epoch == 2 and result.stopped_early and result.epochs_run == 6
    assert torch.equal(model.user_emb.detach(), calls[2])
    assert all("samples_per_s" in h and h["samples_per_s"] > 0 for h in result.history)


def test_training_improves_over_initialisation():
    torch.manual_seed(0)
    split = leave_last_out(random_interactions(n_users=120, n_items=40, per_user=9, seed=2))
    model = BPRMF(BPRConfig(dim=16), split.train.n_users, split.train.n_items)
    model.remember(split.train)
    before = evaluate(model, split, on="test", ks=(5,))["recall@5"]
    model.fit(split.train, train_config=TrainConfig(epochs=30, batch_size=64, lr=0.02, progress=False))
    after = evaluate(model, split, on="test", ks=(5,))["recall@5"]
    # Four preference blocks of 10 items: a trained model ranks the user's block first.
    assert after > before + 0.2


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    model = BPRMF(BPRConfig(dim=4), 3, 3)
    with pytest.raises(ValueError, match="built for 3 users"):
        model.fit(random_interactions(n_users=5, n_items=8, per_user=2))


def test_a_run_that_diverges_stops_with_an_error_instead_of_reporting_nan_rankings(tmp_path):
    """lr 1e30 made every weight NaN; the run used to exit 0 with ordinary-looking metrics and save a model the
    loader refuses."""
    from mmrec.train import TrainingDiverged

    split = leave_last_out(random_interactions(n_users=60, n_items=30, per_user=6, seed=1))
    model = BPRMF(BPRConfig(dim=8), split.train.n_users, split.train.n_items)
    config = TrainConfig(epochs=3, batch_size=32, lr=1e30, progress=False, checkpoint_dir=str(tmp_path / "ck"))
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch 0: mean loss nan; lower train.lr \(1e\+30\)"):
        model.fit(split.train, train_config=config)
    assert not latest_checkpoint(tmp_path / "ck")  # no checkpoint of NaN weights to resume from


def test_run_takes_a_dict_train_config_chooses_on_its_metric_and_refuses_an_empty_valid_part():
    from mmrec.experiment import run
    from mmrec.splits import Split

    split = leave_last_out(random_interactions(n_users=60, n_items=30, per_user=6, seed=1))
    model, report = run(split, "bpr", model_config={"dim": 8}, ks=(5,),
                        train_config={"epochs": 2, "batch_size": 64, "progress": False, "early_stop_metric": "ndcg@10"})
    assert report["selected_on"].startswith("valid ndcg@10") and "ndcg@10" in report["valid"]
    assert "recall@5" in report["test"]
    empty = Split(split.train, split.valid.select(np.zeros(len(split.valid), dtype=bool)), split.test)
    with pytest.raises(ValueError, match="valid part is empty"):  # was: stopped at patience, choosing nothing
        run(empty, "bpr", train_config={"epochs": 50, "progress": False})
