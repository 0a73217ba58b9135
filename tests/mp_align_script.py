"""Run by test_multiprocess.py under ``accelerate launch`` (2 CPU processes, gloo): alignment through the one loop.

    python mp_align_script.py step OUT_DIR [masked]
        one SGD step on one global batch; every rank writes its loss to OUT_DIR/rank<r>.json, rank 0 the
        updated weights to OUT_DIR/weights.safetensors; "masked": some rows of rank 1 lack modality a
    python mp_align_script.py train CKPT_DIR OUT
        a few epochs with dropout, checkpoints and validation; rank 0 writes a JSON summary (final weights
        hash, validation history) to OUT

With MMREC_TEST_KILL_AT_STEP=N (and MMREC_TEST_KILL_RANK=r, default 0) that rank SIGKILLs itself when it starts
optimiser step N, as a crashed worker dies: no cleanup, no chance to save; the launcher then ends the others.

The builders here are imported by the test, which trains the single-process reference with them.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from mmrec.fusion.alignment import retrieval_metrics
from mmrec.space import SpaceConfig, TowerConfig, UnifiedSpace
from mmrec.train import EpochSampler, TrainConfig, fit

IN_DIM = 16
STEP_ITEMS, STEP_LR = 32, 0.1          # "step": one global batch of 32 pairs, SGD so gradient scale shows
TRAIN_ITEMS, TRAIN_BATCH = 64, 8       # "train": 8 per process → 4 optimiser steps per epoch with 2 processes


class PairVectors(Dataset):
    """``n`` pairs of vectors of two tower-less modalities ``a`` and ``b`` (``b`` a noisy linear map of ``a``)."""

    def __init__(self, n: int, seed: int = 0, has_a: torch.Tensor | None = None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.a = torch.randn(n, IN_DIM, generator=generator)
        mixing = torch.randn(IN_DIM, IN_DIM, generator=generator) / IN_DIM ** 0.5
        self.b = self.a @ mixing + 0.3 * torch.randn(n, IN_DIM, generator=generator)
        self.has_a = has_a  # optional bool [n]: rows without it get "a:mask" False

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """A batch in the form `UnifiedSpace.training_step` reads."""
        idx = torch.as_tensor(rows)
        batch = {"a:vectors": self.a[idx], "b:vectors": self.b[idx]}
        if self.has_a is not None:
            batch["a:mask"] = self.has_a[idx]
        return batch


class CrashingSpace(UnifiedSpace):
    """A space whose process can be made to die at a chosen optimiser step (see the module docstring)."""

    steps = 0

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`UnifiedSpace.training_step`, unless this is the step this process is to die at."""
        CrashingSpace.steps += 1
        kill_at = int(os.environ.get("MMREC_TEST_KILL_AT_STEP", "0"))
        this_rank = os.environ.get("RANK", "0") == os.environ.get("MMREC_TEST_KILL_RANK", "0")
        if CrashingSpace.steps == kill_at and this_rank:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().training_step(batch)


def build_space(dropout: float = 0.0, cls: type[UnifiedSpace] = UnifiedSpace) -> UnifiedSpace:
    """A small space of two tower-less modalities aligned by `ClipLoss`; the same weights in every process."""
    torch.manual_seed(0)
    config = SpaceConfig(towers={"a": TowerConfig(input_dim=IN_DIM), "b": TowerConfig(input_dim=IN_DIM)},
                         dim=8, adapter="mlp", adapter_options={"hidden": 32, "dropout": dropout}, pairs=("a-b",))
    return cls(config)


def step_data(masked: bool) -> PairVectors:
    """The global batch of the "step" mode; ``masked``: the first 3 rows process 1 of 2 gets lack modality a."""
    has_a = None
    if masked:
        sampler = EpochSampler(STEP_ITEMS, seed=step_config(2).seed, num_replicas=2, rank=1)  # the loop's epoch 0
        has_a = torch.ones(STEP_ITEMS, dtype=torch.bool)
        has_a[list(sampler)[:3]] = False
    return PairVectors(STEP_ITEMS, has_a=has_a)


def step_config(n_processes: int) -> TrainConfig:
    """One epoch that is exactly one optimiser step over all `STEP_ITEMS` pairs, whatever the process count."""
    return TrainConfig(epochs=1, batch_size=STEP_ITEMS // n_processes, optimizer="sgd", lr=STEP_LR, seed=0,
                       progress=False, cpu=True)


def weights_digest(space: UnifiedSpace) -> str:
    """sha256 over the space's state (names and float32 bytes), equal only for bit-identical weights."""
    digest = hashlib.sha256()
    for name, value in sorted(space.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def run_step(out_dir: Path, masked: bool) -> None:
    """One optimiser step in this process's share of the global batch; each rank reports what it saw."""
    from safetensors.torch import save_file

    space = build_space()
    result = fit(space, step_data(masked), step_config(int(os.environ["WORLD_SIZE"])))
    rank = torch.distributed.get_rank()
    _write_json(out_dir / f"rank{rank}.json", {"world_size": torch.distributed.get_world_size(),
                                               "loss": result.history[0]["loss"],
                                               "global_step": result.global_step})
    if rank == 0:
        save_file({k: v.contiguous() for k, v in space.state_dict().items()}, str(out_dir / "weights.safetensors"))


def run_train(checkpoint_dir: str, out: Path) -> None:
    """Train with dropout, checkpoints every 3 steps and a validation per epoch; rank 0 writes a summary."""
    data = PairVectors(TRAIN_ITEMS, seed=1)
    space = build_space(dropout=0.1, cls=CrashingSpace)

    def validate(s: UnifiedSpace) -> dict[str, float]:
        with torch.no_grad():
            return retrieval_metrics(s.project("a", data.a), s.project("b", data.b), ks=(1, 5))

    config = TrainConfig(epochs=3, batch_size=TRAIN_BATCH, optimizer="adam", lr=0.01, seed=3, progress=False,
                         cpu=True, checkpoint_dir=checkpoint_dir, checkpoint_every=3, patience=10,
                         early_stop_metric="recall@5")
    result = fit(space, data, config, evaluate_fn=validate)
    if torch.distributed.get_rank() == 0:
        _write_json(out, {"world_size": torch.distributed.get_world_size(), "resumed_from": result.resumed_from,
                          "global_step": result.global_step, "best_epoch": result.best_epoch,
                          "valid_history": [h["valid"] for h in result.history],
                          "loss_history": [h["loss"] for h in result.history],
                          "weights": weights_digest(space)})


if __name__ == "__main__":
    from mmrec.cli import close_process_group

    torch.set_num_threads(1)
    if sys.argv[1] == "step":
        run_step(Path(sys.argv[2]), masked=sys.argv[3:] == ["masked"])
    elif sys.argv[1] == "train":
        run_train(sys.argv[2], Path(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}: expected 'step' or 'train'")
    close_process_group()
