"""Issue 20 part 7: vae_fusion's history content affinity, exact against the sparse top-k graph.

On one seed of the cold split of benchmarks/coldstart_hm.py (its protocol, data and content): train
vae_fusion once per ``--train-k`` (0: exact affinity), then score each trained model with each
``--score-k`` (0: exact) — cold valid / test Recall@20, hybrid test Recall@20 and evaluated users/s — and
time LightGCN on the same split in the same run (seconds per epoch, hybrid users/s), for the ratios: at its
reference width (``--lightgcn-dim``, the README's timing reference) and at vae_fusion's width, the cost of
the shared backbone alone; the reference is timed again at the end (``lightgcn_after``: the load of a shared
machine drifts over a long run). The affinity graph is built before the training loop (in ``fit_seconds``, not
in the epochs); ``graph_seconds`` is a scoring k's build (about 0 where the training's graph is reused).

    nice python benchmarks/affinity_graph.py --hm ../shared/data/hm --cache /work/scratch/cache/minilm \\
        --seed 0 --train-k 0 100 --score-k 0 50 100 200 --out out/affinity_graph.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
import coldstart_hm as bench  # noqa: E402

from mmrec.datasets import hm  # noqa: E402
from mmrec.io import atomic_write_text  # noqa: E402
from mmrec.recommender import create_model  # noqa: E402
from mmrec.train import TrainConfig  # noqa: E402


def time_lightgcn(split, dim: int, args) -> dict:
    """LightGCN of width ``dim`` on the split: seconds per epoch, hybrid test users/s."""
    set_seed(args.seed)
    lightgcn = create_model("lightgcn", split.train.n_users, split.train.n_items, {"reg_weight": 1e-2, "dim": dim})
    history = lightgcn.fit(split.train, train_config=TrainConfig(
        epochs=args.lightgcn_epochs, batch_size=args.batch_size, lr=args.lr, progress=False)).history
    lightgcn.eval()
    return {"dim": dim, "seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
            "hybrid_users_per_s": bench.timed_eval(lightgcn, split, "test", "all")["users_per_s"]}


def train_and_score(split, content, train_k: int, args, report: dict) -> dict:
    """vae_fusion trained with ``affinity_k = train_k``, then scored at each ``--score-k``; ratios to the
    LightGCN timings in ``report``."""
    model, info = bench.train("vae_fusion", {"affinity_k": train_k}, split, content, args.seed, args, "cold")
    for name in ("lightgcn", "lightgcn_vae_width"):
        info[f"seconds_per_epoch_ratio_{name}"] = info["seconds_per_epoch"] / report[name]["seconds_per_epoch"]
    row: dict = {"train": info, "score": {}}
    for k in args.score_k:
        model.config = replace(model.config, affinity_k=k)
        started = time.perf_counter()
        graph = model.affinity_graph()
        score = {"graph_seconds": time.perf_counter() - started, "graph_nnz": graph.nnz() if graph else None}
        for name, on, candidates in (("valid_cold", "valid", "cold"), ("test_cold", "test", "cold"),
                                     ("test_hybrid", "test", "all")):
            metrics = bench.timed_eval(model, split, on, candidates)
            score[name] = {"recall@20": metrics["recall@20"], "users_per_s": metrics["users_per_s"]}
        for name in ("lightgcn", "lightgcn_vae_width"):
            score[f"users_per_s_ratio_{name}"] = score["test_hybrid"]["users_per_s"] / report[name]["hybrid_users_per_s"]
        row["score"][str(k)] = score
        print(f"train k={train_k} score k={k}", json.dumps(score), flush=True)
    return row


def main() -> None:
    """Run the comparison and write its JSON (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hm", default="../shared/data/hm")
    parser.add_argument("--cache", default="out/cache/minilm")
    parser.add_argument("--split", choices=bench.SPLITS, default="items")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-k", type=int, nargs="+", default=[0, 100],
                        help="affinity_k of each model trained (0: exact)")
    parser.add_argument("--score-k", type=int, nargs="+", default=[0, 50, 100, 200])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--patience", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lightgcn-epochs", type=int, default=3)
    parser.add_argument("--lightgcn-dim", type=int, default=64, help="the reference LightGCN's width")
    parser.add_argument("--out", default="out/affinity_graph.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    catalog, interactions = hm.load(args.hm, images=False)
    pairs = interactions.unique_pairs()
    content = bench.load_content(None, catalog, args.cache)
    split = bench.make_split(pairs, catalog, args.split, args.seed)
    report: dict = {"args": vars(args)}

    width = create_model("vae_fusion", 1, 1).config.dim
    for name, dim in (("lightgcn", args.lightgcn_dim), ("lightgcn_vae_width", width)):
        report[name] = time_lightgcn(split, dim, args)
        print(name, report[name], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report["models"] = {}
    for train_k in args.train_k:
        report["models"][str(train_k)] = row = train_and_score(split, content, train_k, args, report)
        print(f"train k={train_k}", json.dumps(row["train"]), flush=True)
        atomic_write_text(out, json.dumps(report, indent=2))  # each model's numbers as soon as they exist
    # The reference again after the models: the machine's load drifts over a long run.
    report["lightgcn_after"] = time_lightgcn(split, args.lightgcn_dim, args)
    print("lightgcn_after", report["lightgcn_after"], flush=True)
    atomic_write_text(out, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
