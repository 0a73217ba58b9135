"""Two CPU processes (gloo) under ``accelerate launch``, through the one loop: the contrastive loss gathered
across processes equals one process's loss on the same global batch (and so does the optimiser step), and a
checkpoint written by two processes resumes exactly after one of them is killed.

accelerate's ``--cpu`` flag alone starts a single process unless MPI is set up; ``--multi_gpu`` starts the N
processes through torchrun and ``ACCELERATE_USE_CPU=true`` makes them a MULTI_CPU (gloo) group.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mp_align_script import build_space, step_config, step_data
from mmrec.train import fit, latest_checkpoint

SCRIPT = Path(__file__).with_name("mp_align_script.py")
TOLERANCE = 1e-5

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is unavailable in this torch build")


def launch(tmp_path: Path, *script_args: str, kill_at: int = 0, kill_rank: int = 0) -> subprocess.CompletedProcess:
    """``accelerate launch`` the script on 2 CPU processes; a free port, no GPU looked for, 1 thread each."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "HF_HOME": str(tmp_path / "hf_home"),  # no user `accelerate config` file changes the launch
           "PYTHONPATH": os.pathsep.join([str(SCRIPT.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("MMREC_TEST_KILL_AT_STEP", None)
    if kill_at:
        env.update(MMREC_TEST_KILL_AT_STEP=str(kill_at), MMREC_TEST_KILL_RANK=str(kill_rank))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "0", str(SCRIPT), *script_args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def _assert_step_equals_one_process(tmp_path: Path, masked: bool) -> None:
    from safetensors.torch import load_file

    run = launch(tmp_path, "step", str(tmp_path), *(["masked"] if masked else []))
    assert run.returncode == 0, run.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["world_size"], r["global_step"]) for r in ranks] == [(2, 1), (2, 1)]

    # The reference: this (non-distributed) process, the same initial weights, the whole global batch at once.
    space = build_space()
    before = {k: v.clone() for k, v in space.state_dict().items()}
    single = fit(space, step_data(masked), step_config(1))
    for rank, seen in enumerate(ranks):
        assert seen["loss"] == pytest.approx(single.history[0]["loss"], abs=TOLERANCE), rank

    # One SGD step from equal weights: equal updated weights mean equal (all-reduced) gradients. Every
    # parameter moved by far more than the tolerance, so a gradient off by any factor would show.
    after_two = load_file(str(tmp_path / "weights.safetensors"))
    for name, value in space.state_dict().items():
        assert (value - before[name]).abs().max() > 10 * TOLERANCE, name
        torch.testing.assert_close(after_two[name], value, rtol=0, atol=TOLERANCE, msg=name)


def test_gathered_loss_and_step_equal_one_process_on_the_global_batch(tmp_path):
    _assert_step_equals_one_process(tmp_path, masked=False)


def test_rows_masked_unevenly_across_processes(tmp_path):
    # 3 rows of process 1's half of the batch lack modality "a", none of process 0's.
    _assert_step_equals_one_process(tmp_path, masked=True)


def test_checkpoint_written_by_two_processes_resumes_exactly(tmp_path):
    straight = launch(tmp_path, "train", str(tmp_path / "straight"), str(tmp_path / "straight.json"))
    assert straight.returncode == 0, straight.stderr[-4000:]
    reference = json.loads((tmp_path / "straight.json").read_text())
    assert reference["world_size"] == 2 and reference["resumed_from"] is None and reference["global_step"] == 12

    # 64 pairs, 8 per process per batch: 4 steps an epoch; checkpoints after steps 3, 4 (epoch end) and 6.
    # Process 1 dies as step 7 starts, in the middle of epoch 1; the launcher ends process 0.
    killed = launch(tmp_path, "train", str(tmp_path / "killed"), str(tmp_path / "killed.json"),
                    kill_at=7, kill_rank=1)
    assert killed.returncode != 0 and not (tmp_path / "killed.json").exists(), killed.stderr[-4000:]
    assert latest_checkpoint(tmp_path / "killed").name == "step_000000006"

    resumed = launch(tmp_path, "train", str(tmp_path / "killed"), str(tmp_path / "resumed.json"))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    again = json.loads((tmp_path / "resumed.json").read_text())
    assert again["resumed_from"] is not None and again["resumed_from"].endswith("step_000000006")
    assert again["global_step"] == reference["global_step"]
    assert again["valid_history"] == reference["valid_history"]
    assert again["best_epoch"] == reference["best_epoch"]
    assert again["weights"] == reference["weights"]  # bit-identical final weights (with dropout on)
