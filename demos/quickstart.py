"""Quickstart demo: train the warm baselines on fashion data and write an HTML report with pictures.

Runs on the embedded synthetic fashion world by default; ``--hm PATH`` uses an H&M Kaggle-layout folder
(e.g. ../shared/data/hm). The split is MMRec's 8:1:1 protocol; each model is chosen on valid Recall@20.

    python demos/quickstart.py [--hm PATH] [--out out/quickstart.html] [--epochs N]
"""
from __future__ import annotations

import argparse
import html
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from mmrec.cli import run_script
from mmrec.data import Catalog, Interactions
from mmrec.experiment import run
from mmrec.report import check_page_path, item_cards, table, write_page
from mmrec.splits import mmrec_protocol
from mmrec.train import TrainConfig

MODELS = ("most_popular", "itemknn", "bpr", "lightgcn")


def load(args: argparse.Namespace) -> tuple[Catalog, Interactions, str]:
    """The catalog and interactions the demo runs on, and a line saying what they are."""
    if args.hm:
        from mmrec.datasets import hm

        catalog, interactions = hm.load(args.hm)
        return catalog, interactions, f"H&M data from {args.hm}"
    from mmrec.datasets.synthetic import WorldConfig, make_world

    world = make_world(WorldConfig(seed=args.seed), Path(tempfile.gettempdir()) / "mmrec-synthetic")
    return world.catalog, world.interactions, "the synthetic fashion world (seed %d)" % args.seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hm", help="H&M Kaggle-layout folder (default: the synthetic world)")
    parser.add_argument("--out", default="out/quickstart.html", help="where to write the HTML report")
    parser.add_argument("--epochs", type=int, default=200, help="epoch cap for BPR and LightGCN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=4, help="sample users shown in the report")
    args = parser.parse_args()
    check_page_path(args.out)  # before any work: a mistyped --out must not cost a run, or a file
    config = TrainConfig(epochs=args.epochs, seed=args.seed, patience=20, progress=False, batch_size=1024)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    catalog, interactions, source = load(args)
    split, _ = mmrec_protocol(interactions, seed=args.seed)
    logging.info("data: %s; split %d/%d/%d", source, len(split.train), len(split.valid), len(split.test))

    rows, models = [], {}
    for name in MODELS:
        model, report = run(split, name, train_config=config)
        models[name] = model
        rows.append({"model": name, **{f"test {k}": report["test"][k] for k in ("recall@20", "ndcg@20", "recall@10")},
                     "valid recall@20": report["valid"]["recall@20"], "best epoch": report.get("best_epoch", "-")})
        logging.info("%s: test recall@20 %.4f", name, report["test"]["recall@20"])

    best = max(rows, key=lambda r: r["valid recall@20"])["model"]
    sections = [f"<p>Data: {html.escape(source)}. MMRec protocol (5-core, per-user random 8:1:1, seed "
                f"{args.seed}); models chosen on valid Recall@20; full ranking over all items.</p>",
                "<h2>Results</h2>",
                table(rows, ["model", "test recall@20", "test ndcg@20", "test recall@10", "valid recall@20",
                             "best epoch"]),
                f"<h2>Sample users: history and {html.escape(best)}'s top 10</h2>"
                "<p class='muted'>Outlined: bought in the test period.</p>"]
    rng = np.random.default_rng(args.seed)
    test_users = np.unique(split.test.users)
    for user in rng.choice(test_users, size=min(args.users, len(test_users)), replace=False):
        history = split.train.items[split.train.users == user][-8:]
        codes, _ = models[best].recommend([int(user)], k=10)
        bought = set(split.test.items[split.test.users == user].tolist())
        uid = html.escape(str(split.train.user_ids[user]))
        sections += [f"<h3>User {uid}</h3><p>History (last {len(history)})</p>", item_cards(catalog, history),
                     "<p>Recommended</p>", item_cards(catalog, [c for c in codes[0].tolist() if c >= 0], highlight=bought)]
    path = write_page(args.out, "mmrec quickstart: warm recommenders on fashion data", sections)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_script("quickstart.py", main)
