"""Retrieval through `mmrec.index` against today's dense scoring, on a saved model (full H&M size).

For a sample of users, in one run: the exact top-12 by `Recommender.recommend` (every item scored, seen
items masked) — the baseline — and the top-12 through each index kind (`recommend(..., index=...)`: FAISS
proposes candidates from the model's factors, the model's ``score_candidates`` re-ranks them). Reports per
kind: build seconds, recall@12 against the exact top-12, users/s, and the ratio to the dense users/s.

    python benchmarks/index.py --model runs/models/full-lightgcn --users 4000
    python benchmarks/index.py --model runs/models/full-vae_fusion --kinds hnsw ivf --json

The model folder comes from ``mmrec train`` or ``benchmarks/scale.py --save-dir``.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def timed_recommend(model, users: np.ndarray, batch: int, **kwargs) -> tuple[np.ndarray, float]:
    """Top-12 codes for ``users`` in batches of ``batch`` and the users per second it took."""
    start = time.perf_counter()
    codes = [model.recommend(users[i:i + batch], 12, **kwargs)[0].numpy() for i in range(0, len(users), batch)]
    return np.concatenate(codes), len(users) / (time.perf_counter() - start)


def recall_at_12(exact: np.ndarray, got: np.ndarray) -> float:
    """Mean share of each user's exact top-12 (valid codes) that the index's top-12 holds."""
    shares = [len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (a >= 0).sum()) for a, b in zip(exact, got)]
    return float(np.mean(shares))


def main() -> int:
    from mmrec.index import IndexConfig, index_for
    from mmrec.recommender import Recommender

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a saved recommender folder with factors")
    parser.add_argument("--users", type=int, default=4000, help="users sampled (seed 0)")
    parser.add_argument("--batch", type=int, default=256, help="users per recommend call")
    parser.add_argument("--kinds", nargs="+", default=["hnsw", "ivf"], choices=["flat", "ivf", "hnsw"])
    parser.add_argument("--candidates", type=int, default=200, help="index candidates re-ranked per user")
    parser.add_argument("--threads", type=int, default=0, help="torch and FAISS threads (0: library default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        import faiss

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    model = Recommender.from_pretrained(args.model)
    model.factors()  # propagate once, outside every timing
    load_s = time.perf_counter() - start
    users = np.sort(np.random.default_rng(0).choice(model.n_users, min(args.users, model.n_users), replace=False))
    exact, dense_ups = timed_recommend(model, users, args.batch)
    out = {"model": args.model, "name": model.name, "n_users": model.n_users, "n_items": model.n_items,
           "sampled_users": len(users), "load_s": round(load_s, 1), "dense_users_per_s": round(dense_ups, 1),
           "threads": torch.get_num_threads(), "indexes": {}}
    for kind in args.kinds:
        t0 = time.perf_counter()
        index = index_for(model, IndexConfig(kind=kind))
        build_s = time.perf_counter() - t0
        got, ups = timed_recommend(model, users, args.batch, index=index, index_candidates=args.candidates)
        out["indexes"][kind] = {"build_s": round(build_s, 1), "recall@12": round(recall_at_12(exact, got), 4),
                                "users_per_s": round(ups, 1), "speedup_vs_dense": round(ups / dense_ups, 2)}
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
