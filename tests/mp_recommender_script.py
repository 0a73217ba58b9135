"""Run by test_multiprocess_recommenders.py under ``accelerate launch`` (2 CPU processes, gloo): recommenders
through the one loop.

    python mp_recommender_script.py step OUT_DIR CASE [CASE ...]
        per case (a key of CASES): two epochs of one SGD step each on one global batch (every training pair); every rank
        writes its per-epoch losses to OUT_DIR/CASE/rank<r>.json, rank 0 the updated weights to
        OUT_DIR/CASE/weights.safetensors

The builders here are imported by the test, which trains the single-process reference with them.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from mmrec.data import Interactions
from mmrec.recommender import Recommender, create_model
from mmrec.train import TrainConfig

N_USERS, N_ITEMS, CONTENT_DIM = 16, 64, 8
STEP_LR, STEP_EPOCHS = 1.0, 2
# vae_fusion with its stochastic parts off (cold dropout draws from each process's own RNG, the VAE samples
# its posterior): what is left is a per-sample mean or, over the batch's unique positives, a mean that
# equals the global one because every item is the positive of exactly one pair (see `step_interactions`).
_VAE = {"dim": 8, "latent_dim": 4, "hidden_dim": 16, "knn_k": 3, "vae": False, "cold_dropout": 0.0,
        "content_dim": CONTENT_DIM}
# name -> (registered model, config). The ablation leaves the gate's and the affinity weight's parameters
# out of the loss: DistributedDataParallel must be told to look for unused parameters, or its second step fails.
CASES = {"bpr": ("bpr", {"dim": 8}), "lightgcn": ("lightgcn", {"dim": 8, "n_layers": 2}),
         "vae_fusion": ("vae_fusion", _VAE),
         "vae_fusion_no_gate_no_affinity": ("vae_fusion", {**_VAE, "gate": False, "affinity": False})}


def step_interactions() -> Interactions:
    """64 unique (user, item) pairs, 4 per user, every item bought exactly once (an even count, so no
    process pads its share with a repeated pair)."""
    rng = np.random.default_rng(0)
    items = rng.permutation(N_ITEMS)
    users = np.repeat(np.arange(N_USERS), N_ITEMS // N_USERS)
    return Interactions(users, items, np.asarray([f"u{u}" for u in range(N_USERS)], dtype=object),
                        np.asarray([f"i{i}" for i in range(N_ITEMS)], dtype=object))


def build_model(case: str) -> Recommender:
    """The model of ``case`` (a key of `CASES`) with the same initial weights (and content) in every process."""
    torch.manual_seed(0)
    model = create_model(*CASES[case][:1], N_USERS, N_ITEMS, CASES[case][1])
    if hasattr(model, "set_content"):
        model.set_content(torch.randn(N_ITEMS, CONTENT_DIM, generator=torch.Generator().manual_seed(1)))
    return model


def step_config(n_processes: int) -> TrainConfig:
    """Epochs that are exactly one optimiser step over every training pair, whatever the process count
    (the batch size is per process: the global batch is ``batch_size × processes``)."""
    return TrainConfig(epochs=STEP_EPOCHS, batch_size=N_ITEMS // n_processes, optimizer="sgd", lr=STEP_LR,
                       seed=0, progress=False, cpu=True)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def run_step(case: str, out_dir: Path) -> None:
    """Train this process's share of each global batch; each rank reports what it saw."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(case)
    result = model.fit(step_interactions(), train_config=step_config(int(os.environ["WORLD_SIZE"])))
    rank = torch.distributed.get_rank()
    _write_json(out_dir / f"rank{rank}.json", {"world_size": torch.distributed.get_world_size(),
                                               "losses": [h["loss"] for h in result.history],
                                               "global_step": result.global_step})
    if rank == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "weights.safetensors"))


if __name__ == "__main__":
    from mmrec.cli import close_process_group

    torch.set_num_threads(1)
    if sys.argv[1] == "step":
        for case in sys.argv[3:]:
            run_step(case, Path(sys.argv[2]) / case)
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}: expected 'step'")
    close_process_group()
