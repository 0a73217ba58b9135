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
           "HF_HOME": str(tmp_path / "hf_home"), "TMPDIR": str(tmp_path),
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
