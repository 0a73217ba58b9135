"""Next purchase from simulated app sessions with dwell (issue 6): SASRec on what the screen showed.

Data: customers of the synthetic world (``--world synthetic``, default: ground truth of taste and sequence
known, ``--users`` × ``--items``) or of H&M (``--world hm``: those of `mmrec.splits.first_purchase_sequences`, ≥ 5
distinct articles), first purchase of each item kept, with ≥ 3 purchase days; each one's last
``--max-items`` purchases drive one simulated app
session (`mmrec.datasets.app_sim.simulate_session`, timeline only, nothing rendered): per basket (a purchase
day, split at 6 items) the home feed, grids, 0–2 distractor product pages of other (often similar) items,
dwelt on 1–4 s,
and the bought article's page, 3–8 s, then cart and checkout. A customer's sequence is her product-page
views in time order, each with its dwell (the `view` events `mmrec.stream` extracts from a recording,
here taken from the simulator's ground truth), and nothing else: no clicks, carts or purchases, so which
views led to a purchase is only in the dwell.

Split (per customer, baskets in time order, B of them): the test target is the first article bought in
basket B, the valid target the first of basket B−1; training holds the views of baskets 1..B−2; the valid
target is ranked after those, the test target after those and every view of basket B−1. Full ranking of
all articles, training items masked. Variants: SASRec with item IDs only; IDs + MiniLM content adapter;
IDs + content + dwell (``use_dwell``). Each is trained by the one loop, early-stopped on valid NDCG@10.

    nice -n 10 python benchmarks/sequence_sim.py --out out/sequence_sim --seeds 0 1
"""
from __future__ import annotations

import argparse
import bisect
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from mmrec.data import KINDS, Interactions
from mmrec.datasets import hm
from mmrec.datasets.app_sim import SimConfig, simulate_session
from mmrec.datasets.synthetic import WorldConfig, make_world
from mmrec.encoders import create_encoder, embed
from mmrec.evaluate import evaluate
from mmrec.events import dwell_weights
from mmrec.fusion.sequence import REPORTED, fit_and_test, target_warmth_report
from mmrec.recommender import create_model
from mmrec.report import mean_std
from mmrec.splits import Split, first_purchase_sequences


log = logging.getLogger("sequence_sim")
VIEW, PURCHASE = KINDS.index("view"), KINDS.index("purchase")


def session_views(catalog, items: np.ndarray, days: np.ndarray, seed: int):
    """Simulate one customer's session: (views as (seconds, item, dwell, basket), first bought item per basket)."""
    session = simulate_session(catalog, items, SimConfig(seed=seed), timestamps=days)
    homes = [s.start for s in session.states if s.kind == "home"]  # every basket starts on the home feed

    def basket(t: float) -> int:
        return bisect.bisect_right(homes, t + 1e-9) - 1

    views = [(s.start, s.item, s.end - s.start, basket(s.start)) for s in session.states if s.kind == "product"]
    first_bought: dict[int, tuple[float, int]] = {}
    for event in session.events:
        if event.kind == "cart":
            first_bought.setdefault(basket(event.timestamp), (event.timestamp, event.item))
    return views, [first_bought[b] for b in sorted(first_bought)]


def simulated_split(inter: Interactions, catalog, n_users: int, max_items: int, seed: int) -> tuple[Split, Interactions, dict]:
    """The split above, and the test-time history (training views + the valid basket's views)."""
    order = np.lexsort((np.arange(len(inter)), inter.timestamps, inter.users))
    users, items, days = inter.users[order], inter.items[order], inter.timestamps[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(users)) + 1, len(users)]
    eligible = [(s, e) for s, e in zip(bounds[:-1], bounds[1:])
                if len(np.unique(days[max(s, e - max_items):e])) >= 3]
    rng = np.random.default_rng([seed, 3])
    picked = sorted(rng.choice(len(eligible), size=min(n_users, len(eligible)), replace=False).tolist())
    rows = {"train": [], "history": [], "valid": [], "test": []}
    for k, p in enumerate(picked):
        s, e = eligible[p]
        s = max(s, e - max_items)
        views, bought = session_views(catalog, items[s:e], days[s:e], seed=seed * 1_000_003 + k)
        last = len(bought) - 1
        for t, item, dwell, b in views:
            if b <= last - 2:
                rows["train"].append((k, item, t, VIEW, dwell))
            elif b == last - 1:
                rows["history"].append((k, item, t, VIEW, dwell))
        rows["valid"].append((k, bought[last - 1][1], bought[last - 1][0], PURCHASE, np.nan))
        rows["test"].append((k, bought[last][1], bought[last][0], PURCHASE, np.nan))

    def table(part: list) -> Interactions:
        u, i, t, kind, w = (np.array(c) for c in zip(*part))
        return Interactions(u, i, user_ids=np.arange(len(picked)).astype(str), item_ids=inter.item_ids,
                            timestamps=np.round(t * 1000), kinds=kind, weights=dwell_weights(w))  # session ms

    split = Split(table(rows["train"]), table(rows["valid"]), table(rows["test"]))
    history = split.train.concat(table(rows["history"]))
    stats = {"customers": len(picked), "train_views": len(rows["train"]), "history_views": len(rows["history"]),
             "median_dwell_s": float(np.median([r[4] for r in rows["train"]]))}
    return split, history, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="synthetic", choices=["synthetic", "hm"],
                        help="whose purchases drive the sessions: the synthetic world's or H&M's")
    parser.add_argument("--items", type=int, default=2000, help="the synthetic world's catalog size")
    parser.add_argument("--hm", default="../shared/data/hm")
    parser.add_argument("--out", default="out/sequence_sim")
    parser.add_argument("--cache", default="out/sequence_hm/embed-cache", help="MiniLM embedding cache (H&M)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--users", type=int, default=5000, help="customers simulated (and the synthetic world's)")
    parser.add_argument("--max-items", type=int, default=12, help="a customer's last purchases simulated")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["ids", "content", "content_dwell"],
                        choices=["ids", "content", "content_dwell"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.world == "hm":
        catalog, inter = hm.load(args.hm, images=False)
        codes, inter = first_purchase_sequences(inter, 5)
        catalog = catalog.subset(codes)
        texts = hm.article_texts(catalog)
    else:
        world = make_world(WorldConfig(seed=0, n_users=args.users, n_items=args.items, n_new_items=0,
                                       interactions_per_user=(8, 16), new_interactions_per_user=(0, 0)),
                           out / "world")
        catalog, texts = world.catalog, None
        _, first = np.unique(world.interactions.users * len(catalog) + world.interactions.items, return_index=True)
        inter = world.interactions.select(np.sort(first))  # first purchase of each (customer, item)
    cache = args.cache if args.world == "hm" else str(out / "embed-cache")
    vectors = embed(catalog, create_encoder("minilm"), texts=texts, cache=cache, progress=False)
    content = (vectors.vectors.astype(np.float32), vectors.valid)
    base = {"dim": 64, "n_layers": 2, "n_heads": 2, "max_len": 30, "dropout": 0.2, "loss": "sampled_softmax",
            "n_negatives": 1024}
    with_content = {"use_content": True, "content_dim": content[0].shape[1], "adapter": "mlp",
                    "adapter_hidden": 256, "id_min_count": 3}
    variants = {"ids": base, "content": {**base, **with_content},
                "content_dwell": {**base, **with_content, "use_dwell": True}}
    train = {"epochs": args.epochs, "batch_size": 128, "lr": 2e-3, "patience": args.patience, "progress": False}
    results: dict = {}
    for seed in args.seeds:  # sessions simulated anew per seed (customers too, where not all qualify)
        started = time.perf_counter()
        split, history, stats = simulated_split(inter, catalog, args.users, args.max_items, seed)
        log.info("seed %d: simulated %s in %.0f s", seed, stats, time.perf_counter() - started)
        popular = create_model("most_popular", split.train.n_users, split.train.n_items)
        popular.fit(split.train)
        test = evaluate(popular, split, on="test", ks=(10,), metrics=("hr", "ndcg"), mask_valid_at_test=True)
        results.setdefault("most_popular", []).append({"test": target_warmth_report(test, split)})
        for name in args.variants:
            config = variants[name]
            r = fit_and_test(split, config, content if config.get("use_content") else None, seed, train, None,
                           history=history)
            results.setdefault(name, []).append({**r, "data": stats})
            log.info("%s seed %d: %s", name, seed, r)
            (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print("| model | test HR@10 | test NDCG@10 | seeds |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        cells = ["{:.4f} ± {:.4f}".format(*mean_std([r["test"]["all"][m] for r in runs])) for m in REPORTED]
        print(f"| {name} | {cells[0]} | {cells[1]} | {len(runs)} |")


if __name__ == "__main__":
    main()
