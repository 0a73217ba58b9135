"""Next-purchase benchmark on an H&M folder (issue 17): MAP@12 / Recall@12 on the valid day and the test day
(the last two days of the data) for trending, repurchase + trending (the baseline, same run), the ranker over
growing sets of generators, with and without content (MiniLM text) candidates and features, and the default
with the baseline's trending list instead of the pipeline's fallback list for customers without history;
over all buyers (the competition's population), buyers with history, and buyers of an article nobody bought
before.

Every ranker variant is chosen on valid only (early stopping), then refitted one day later with the chosen
number of trees for test, as `mmrec.pipeline.run` does. The label tables are built once with every
generator and feature group; a variant is `mmrec.pipeline.restrict` of them (equal to a fresh build).

    nice python benchmarks/next_purchase.py --data ../shared/data/hm --seeds 0 1 2 [--content-cache DIR]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mmrec.datasets import hm
from mmrec.fusion.candidates import Purchases, Trending, recall_by_generator
from mmrec.fusion.ranker import FEATURE_GROUPS, Ranker, RankerConfig
from mmrec.pipeline import (PipelineConfig, NextPurchase, baseline, buys_new_article, customer_ages,
                            evaluate_day, item_side, purchase_shares, restrict, stack, top_k, window,
                            with_history)

ALL_GENERATORS = {"repurchase": 24, "trending": 48, "copurchase": 32, "colour_variants": 12,
                  "segment_trending": 24, "content": 24, "lightgcn": 24}
NO_CONTENT = tuple(g for g in FEATURE_GROUPS if g != "content")
BASE = ["repurchase", "trending"]
VARIANTS = [  # name, generators, feature groups[, the fallback list: the pipeline's by default]
    ("ranker: repurchase+trending", BASE, NO_CONTENT),
    ("+ copurchase", BASE + ["copurchase"], NO_CONTENT),
    ("+ colour_variants, baseline's trending as fallback", BASE + ["copurchase", "colour_variants"], NO_CONTENT,
     Trending(n=12)),
    ("+ colour_variants", BASE + ["copurchase", "colour_variants"], NO_CONTENT),
    ("+ segment_trending", BASE + ["copurchase", "colour_variants", "segment_trending"], NO_CONTENT),
    ("+ lightgcn", BASE + ["copurchase", "colour_variants", "lightgcn"], NO_CONTENT),
    ("+ content candidates", BASE + ["copurchase", "colour_variants", "content"], NO_CONTENT),
    ("+ content candidates + feature", BASE + ["copurchase", "colour_variants", "content"], FEATURE_GROUPS),
    ("+ content feature only", BASE + ["copurchase", "colour_variants"], FEATURE_GROUPS),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/hm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--content-cache", help="embedding cache folder for the MiniLM article vectors")
    parser.add_argument("--no-content", action="store_true", help="skip the content rows (no MiniLM)")
    parser.add_argument("--json", help="also write every number to this JSON file")
    args = parser.parse_args()
    started = time.perf_counter()

    catalog, interactions = hm.load(args.data, images=False)
    purchases = Purchases.from_interactions(interactions)
    ages = customer_ages(hm.load_customers(args.data), interactions.user_ids)
    vectors = None
    if not args.no_content:
        from mmrec.content import content_vectors

        vectors = content_vectors(catalog, "minilm", cache=args.content_cache)
    generators = {k: v for k, v in ALL_GENERATORS.items() if vectors is not None or k != "content"}
    variants = [v for v in VARIANTS if vectors is not None or ("content" not in v[1] and v[2] == NO_CONTENT)]
    config = PipelineConfig(candidates=generators, content="", features=FEATURE_GROUPS if vectors is not None else NO_CONTENT)
    full = NextPurchase(config, item_side(catalog, vectors), ages)
    test_day = int(purchases.days.max())
    valid_day = test_day - 1
    tables = {d: full.labelled(purchases, d) for d in range(valid_day - config.label_windows, test_day + 1)}
    print(f"label tables built ({time.perf_counter() - started:.0f} s): "
          + ", ".join(f"{np.datetime64(d, 'D')} {len(t):,} rows" for d, t in tables.items()), flush=True)

    results: dict = {"valid_day": str(np.datetime64(valid_day, "D")), "test_day": str(np.datetime64(test_day, "D"))}
    groups = {"all": None, "with_history": lambda day: has_history(purchases, day),
              "new_article": lambda day: buys_new_article(purchases, day)}

    def measure(predict_for_day) -> dict:
        return {part: {g: evaluate_day(predict_for_day(day), purchases, day, 1,
                                       users_mask=None if mask is None else mask(day))
                       for g, mask in groups.items()}
                for part, day in (("valid", valid_day), ("test", test_day))}

    rows = {"trending": [measure(lambda day: lambda u: baseline(purchases, u, day, repurchase=False))],
            "repurchase+trending (baseline)": [measure(lambda day: lambda u: baseline(purchases, u, day, repurchase=True))]}
    importances = {}
    for name, gens, feats, *fallback in variants:
        rows[name] = []
        fill = fallback[0] if fallback else config.fallback()
        for seed in args.seeds:
            models = fit_variant(tables, gens, feats, valid_day, purchases.n_users, config.label_windows, seed)
            rows[name].append(measure(lambda day: ranked(models[day], tables[day], gens, feats, purchases, day, fill)))
            importances[name] = models[valid_day].importances()
        print(f"{name}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    results["rows"] = rows
    # the label tables hold the buyers with history: each generator's recall of their purchases
    results["candidates"] = {part: {"with_history": recall_by_generator(tables[day], window(purchases, day, 1),
                                                                        list(generators))}
                             for part, day in (("valid", valid_day), ("test", test_day))}
    results["shares"] = {part: purchase_shares(purchases, day, 1) for part, day in (("valid", valid_day), ("test", test_day))}
    results["importances"] = {k: dict(list(v.items())[:12]) for k, v in importances.items()}
    results["seconds"] = time.perf_counter() - started
    print_table(results, args.seeds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def has_history(purchases: Purchases, day: int):
    """A ``users_mask``: buyers with a purchase before ``day``."""
    return lambda users, truth: np.isin(users, with_history(purchases, users, day))


def fit_variant(tables, gens, feats, valid_day, n_users, windows, seed) -> dict:
    """Rankers for the valid day (early stopping on it) and the test day (chosen trees, one day later)."""
    cfg = RankerConfig(seed=seed)
    cut = {d: restrict(t, gens, feats) for d, t in tables.items()}
    days = lambda last: [last - j for j in range(windows)][::-1]  # noqa: E731
    chosen = Ranker(cfg).fit(stack([cut[d] for d in days(valid_day - 1)], n_users), cut[valid_day])
    tested = Ranker(cfg).fit(stack([cut[d] for d in days(valid_day)], n_users), rounds=chosen.best_iteration)
    return {valid_day: chosen, valid_day + 1: tested}


def ranked(ranker, table, gens, feats, purchases, day, fallback: Trending):
    """``predict(users)`` of a variant: its ranker on the buyers with history, the ``fallback`` list (the
    pipeline's, `PipelineConfig.fallback`) for the others."""
    cut = restrict(table, gens, feats)
    scored = cut[["user", "item"]].assign(score=ranker.predict(cut))
    fill, _ = fallback.top_items(purchases.before(day), day)
    return lambda users: top_k(scored, np.asarray(users), 12, fill)


def mean_std(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f}" + (f"±{values.std():.4f}" if len(values) > 1 else "")


def print_table(results: dict, seeds: list[int]) -> None:
    base = results["rows"]["repurchase+trending (baseline)"][0]
    print(f"\nvalid {results['valid_day']}, test {results['test_day']}; ranker rows: mean±std over seeds {seeds}")
    header = ["row", "valid MAP@12", "valid R@12", "test MAP@12", "test R@12", "test x base",
              "hist valid MAP", "hist test MAP", "new-art valid MAP", "new-art test MAP"]
    print(" | ".join(header))
    for name, runs in results["rows"].items():
        pick = lambda part, g, m: [r[part][g][m] for r in runs]  # noqa: E731
        ratio = np.mean(pick("test", "all", "map@12")) / base["test"]["all"]["map@12"]
        print(" | ".join([name, mean_std(pick("valid", "all", "map@12")), mean_std(pick("valid", "all", "recall@12")),
                          mean_std(pick("test", "all", "map@12")), mean_std(pick("test", "all", "recall@12")),
                          f"{ratio:.3f}", mean_std(pick("valid", "with_history", "map@12")),
                          mean_std(pick("test", "with_history", "map@12")),
                          mean_std(pick("valid", "new_article", "map@12")),
                          mean_std(pick("test", "new_article", "map@12"))]))
    users = {part: {g: base[part][g]["users"] for g in base[part]} for part in ("valid", "test")}
    print(f"buyers: {users}")
    print(f"purchase shares: {results['shares']}")
    for part, by in results["candidates"].items():
        for who, recalls in by.items():
            print(f"candidate recall, {part}, buyers {who}: "
                  + ", ".join(f"{g} {r['recall']:.3f} at {r['per_user']:.1f}/customer" for g, r in recalls.items()))
    print(f"total {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
