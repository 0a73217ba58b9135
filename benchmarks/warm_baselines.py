"""Warm baselines on an MMRec-format split: a small grid chosen on valid Recall@20, then several seeds.

For each model the grid is searched with the first seed (valid Recall@20 only); the chosen point is then
trained with the other seeds too and test metrics are reported as mean ± std, with time per epoch.

    python benchmarks/warm_baselines.py --data ../shared/data/hm/mmrec/hm5core --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np

from mmrec.datasets import mmrec_format
from mmrec.experiment import run
from mmrec.train import TrainConfig

GRIDS = {
    "most_popular": {},
    "itemknn": {"k": [50, 200], "shrink": [0.0, 10.0]},
    "bpr": {"reg_weight": [1e-3, 1e-2]},
    "lightgcn": {"n_layers": [2, 3], "reg_weight": [1e-2]},
}
REPORTED = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")


def grid_points(grid: dict) -> list[dict]:
    """Every combination of a grid's values."""
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="MMRec-format folder with x_label")
    parser.add_argument("--models", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=5, help="epochs between validations")
    parser.add_argument("--patience", type=int, default=4, help="validations without improvement before stopping")
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--out", default="out/warm_baselines.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    split = mmrec_format.to_split(mmrec_format.load(args.data))
    results = {}
    for name in args.models:
        def train(config: dict, seed: int) -> dict:
            tc = TrainConfig(epochs=args.epochs, patience=args.patience, eval_every=args.eval_every, lr=args.lr,
                             seed=seed, progress=False)
            return run(split, name, model_config=config, train_config=tc)[1]

        grid = []
        for point in grid_points(GRIDS[name]):
            started = time.perf_counter()
            report = train(point, args.seeds[0])
            grid.append({"config": point, "valid_recall@20": report["valid"]["recall@20"],
                         "seconds": time.perf_counter() - started, "report": report})
            print(f"{name} {point}: valid recall@20 {report['valid']['recall@20']:.4f}", flush=True)
        best = max(grid, key=lambda g: g["valid_recall@20"])
        chosen = best["config"]
        # The first seed's run of the chosen point is reused; test metrics were never looked at to choose.
        per_seed = [best.pop("report")] + [train(chosen, seed) for seed in args.seeds[1:]]
        for g in grid:
            g.pop("report", None)
        summary = {m: (float(np.mean([r["test"][m] for r in per_seed])), float(np.std([r["test"][m] for r in per_seed])))
                   for m in REPORTED}
        epoch_s = [r.get("seconds_per_epoch") for r in per_seed if r.get("seconds_per_epoch")]
        results[name] = {"chosen": chosen, "grid": grid, "test_mean_std": summary,
                         "valid_recall@20": [r["valid"]["recall@20"] for r in per_seed],
                         "test_recall@20": [r["test"]["recall@20"] for r in per_seed],
                         "best_epochs": [r.get("best_epoch") for r in per_seed],
                         "seconds_per_epoch": float(np.mean(epoch_s)) if epoch_s else None}
        print(f"{name} chosen {chosen}: " + ", ".join(f"{m} {mu:.4f} ± {sd:.4f}" for m, (mu, sd) in summary.items()),
              flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"data": args.data, "seeds": args.seeds, "lr": args.lr, "results": results}, indent=2))
    print("\n| model | test Recall@20 | test NDCG@20 | test Recall@10 | test NDCG@10 | s/epoch | chosen on valid |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        cells = " | ".join(f"{r['test_mean_std'][m][0]:.4f} ± {r['test_mean_std'][m][1]:.4f}" for m in REPORTED)
        spe = f"{r['seconds_per_epoch']:.2f}" if r["seconds_per_epoch"] else "–"
        print(f"| {name} | {cells} | {spe} | {r['chosen'] or '–'} |")


if __name__ == "__main__":
    main()
