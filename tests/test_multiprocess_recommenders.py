"""Recommenders under ``accelerate launch`` with two CPU processes (gloo), through the one loop: the mean of
the two processes' losses equals one process's loss on the same global batch, and so do the weights after
the optimiser steps (the gradients DDP averages equal the single-process gradient).

The launch recipe is `test_multiprocess.launch` (``--multi_gpu`` with ``ACCELERATE_USE_CPU=true``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mp_recommender_script import CASES, STEP_EPOCHS, build_model, step_config, step_interactions

SCRIPT = Path(__file__).with_name("mp_recommender_script.py")
TOLERANCE = 1e-5

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is unavailable in this torch build")


def launch(tmp_path: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """``accelerate launch`` ``args`` (a script path or ``-m module`` and its arguments) on 2 CPU processes:
    a free port, no GPU looked for, 1 thread each, no user ``accelerate config`` (the recipe of
    test_multiprocess.py)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "HF_HOME": str(tmp_path / "hf_home"),
           "PYTHONPATH": os.pathsep.join([str(SCRIPT.parent), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "0", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


MODELS = tuple(CASES)


@pytest.fixture(scope="module")
def two_process_steps(tmp_path_factory) -> Path:
    """One launch training every model of `MODELS` in turn (a launch costs seconds of start-up)."""
    root = tmp_path_factory.mktemp("mp_recommenders")
    run = launch(root, str(SCRIPT), "step", str(root), *MODELS)
    assert run.returncode == 0, run.stderr[-4000:]
    return root


@pytest.mark.parametrize("name", MODELS)
def test_two_processes_equal_one_process_on_the_global_batch(two_process_steps, name):
    from safetensors.torch import load_file

    out = two_process_steps / name
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["world_size"], r["global_step"]) for r in ranks] == [(2, STEP_EPOCHS)] * 2

    # The reference: this (non-distributed) process, the same initial weights, the whole global batch at once.
    model = build_model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    single = model.fit(step_interactions(), train_config=step_config(1))
    for epoch in range(STEP_EPOCHS):  # each process's loss is the mean over its half of the batch
        mean = sum(r["losses"][epoch] for r in ranks) / 2
        assert mean == pytest.approx(single.history[epoch]["loss"], abs=TOLERANCE), epoch
        assert ranks[0]["losses"][epoch] != pytest.approx(ranks[1]["losses"][epoch], abs=TOLERANCE)

    after_two = load_file(str(out / "weights.safetensors"))
    assert set(after_two) == set(model.state_dict())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(after_two[key], value, rtol=0, atol=TOLERANCE, msg=key)
    # Every parameter in the loss moved by far more than the tolerance, so a gradient off by any factor would
    # show; the ablation's gate and affinity weight are out of the loss: they have no gradient and stay put.
    still = {key for key, value in model.named_parameters() if (value - before[key]).abs().max() <= 10 * TOLERANCE}
    config = CASES[name][1]
    expected = {key for key, _ in model.named_parameters()
                if (key.startswith("gate.") and config.get("gate") is False)
                or (key.startswith("affinity.") and config.get("affinity") is False)}
    assert still == expected


# -- `mmrec train` under `accelerate launch` --------------------------------------------------------------
def _write_mmrec_folder(root: Path, n_users: int = 60, n_items: int = 40) -> Path:
    """An MMRec folder: every user buys 8 distinct items, 6 train, 1 valid, 1 test (360 training pairs, an
    even count, so neither of 2 processes pads its share with a repeated pair)."""
    rng = np.random.default_rng(0)
    lines = ["userID\titemID\ttimestamp\tx_label"]
    for user in range(n_users):
        for k, item in enumerate(rng.choice(n_items, size=8, replace=False)):
            lines.append(f"{user}\t{item}\t{k}\t{0 if k < 6 else k - 5}")
    root.mkdir(parents=True)
    (root / "tiny.inter").write_text("\n".join(lines) + "\n")
    return root


def _run_file(path: Path, batch_size: int) -> Path:
    path.write_text(f"model: {{dim: 16, n_layers: 2}}\n"
                    f"train: {{batch_size: {batch_size}, epochs: 3, lr: 0.01, progress: false}}\n")
    return path


def test_mmrec_train_under_two_processes_equals_one_process(tmp_path, capsys):
    from mmrec.cli import main
    from mmrec.recommender import Recommender
    from safetensors.torch import load_file

    data = _write_mmrec_folder(tmp_path / "data")
    two, one = tmp_path / "two", tmp_path / "one"
    # The batch size is per process: 2 processes × 64 is one process's 128 (3 steps an epoch, the last of 104).
    run = launch(tmp_path, "-m", "mmrec", "train", "--model", "lightgcn", "--data", str(data), "--config",
                 str(_run_file(tmp_path / "two.yaml", 64)), "--out", str(two), "--json")
    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout  # one report, printed by the main process only
    report_two = json.loads(lines[0])
    assert {p.name for p in tmp_path.iterdir()} - {"hf_home"} == {"data", "two", "two.yaml"}  # nothing else written

    assert main(["train", "--model", "lightgcn", "--data", str(data), "--config",
                 str(_run_file(tmp_path / "one.yaml", 128)), "--out", str(one), "--json"]) == 0
    report_one = json.loads(capsys.readouterr().out)
    assert report_two["best_epoch"] == report_one["best_epoch"] and report_two["epochs"] == 3
    for part in ("valid", "test"):
        assert report_two[part] == pytest.approx(report_one[part], abs=1e-9), part
    weights_two, weights_one = load_file(str(two / "model.safetensors")), load_file(str(one / "model.safetensors"))
    assert set(weights_two) == set(weights_one)
    for key, value in weights_one.items():
        torch.testing.assert_close(weights_two[key], value, rtol=0, atol=TOLERANCE, msg=key)

    model = Recommender.from_pretrained(two)
    codes, scores = model.recommend([0, 1, 2], k=5)
    assert codes.shape == (3, 5) and bool((codes >= 0).all()) and bool(torch.isfinite(scores).all())
