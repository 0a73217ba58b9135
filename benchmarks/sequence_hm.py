"""Next-purchase prediction on H&M: SASRec with item IDs only against SASRec + MiniLM text content.

Data: each customer's purchases in time order, a repeat of an article dropped (its first purchase kept,
so every target is an article the customer had not bought — the evaluator's mask of seen items can then
never hide a target), customers with at least ``--min-purchases`` distinct articles; the vocabularies
are cut to those customers and articles. Split: leave-last-out (last purchase test, the one before valid).
Content: all-MiniLM-L6-v2 vectors of `mmrec.datasets.hm.article_texts`, cached in ``--cache``.

Per seed and variant: trained by the one loop, early-stopped on valid NDCG@10 (test is never looked at to
choose); test is ranked over all articles after the train + valid history, seen articles masked. Test
HR@10 / NDCG@10 are also split by whether the target article occurs in training ("warm") or not
("cold"). MostPopular is the reference measured in the same run; ratios are content / ID-only.

    nice -n 10 python benchmarks/sequence_hm.py --hm ../shared/data/hm --out out/sequence_hm --seeds 0

With the MiniLM cache warm, one seed of both variants takes about 15-25 min on 2 busy CPU cores
(15-40 s per epoch with a full validation); the first MiniLM pass over 23k articles about 12 min.
Patience below 4 or a validation subsample stops the ID-only model too early (valid NDCG@10 is noisy
in the first epochs).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from mmrec.datasets import hm
from mmrec.encoders import create_encoder, embed
from mmrec.evaluate import evaluate
from mmrec.fusion.sequence import REPORTED, fit_and_test, target_warmth_report
from mmrec.recommender import create_model
from mmrec.report import mean_std
from mmrec.splits import first_purchase_sequences, leave_last_out

log = logging.getLogger("sequence_hm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hm", default="../shared/data/hm")
    parser.add_argument("--out", default="out/sequence_hm")
    parser.add_argument("--cache", default="out/sequence_hm/embed-cache", help="MiniLM embedding cache")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--min-purchases", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--max-len", type=int, default=20, help="events a user's window keeps (median sequence: 6)")
    parser.add_argument("--valid-users", type=int, default=0,
                        help="validate (early stopping) on this many random customers; 0: all")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--loss", default="sampled_softmax", choices=["softmax", "sampled_softmax"])
    parser.add_argument("--negatives", type=int, default=1024)
    parser.add_argument("--content-id-min-count", type=int, default=3,
                        help="SASRec+content: articles with fewer training purchases get no ID embedding "
                             "(3 beat 1 on valid NDCG@10, seed 0: 0.0320 vs 0.0272)")
    parser.add_argument("--variants", nargs="+", default=["sasrec_ids", "sasrec_content"],
                        choices=["sasrec_ids", "sasrec_content"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    catalog, inter = hm.load(args.hm, images=False)
    codes, inter = first_purchase_sequences(inter, args.min_purchases)
    catalog = catalog.subset(codes)
    split = leave_last_out(inter)
    log.info("%d customers, %d articles, %d purchases; train %d, valid %d, test %d", inter.n_users,
             inter.n_items, len(inter), len(split.train), len(split.valid), len(split.test))
    started = time.perf_counter()
    vectors = embed(catalog, create_encoder("minilm"), texts=hm.article_texts(catalog), cache=args.cache,
                    progress=False)
    log.info("MiniLM content: %s in %.0f s", vectors.counts, time.perf_counter() - started)
    content = (vectors.vectors.astype(np.float32), vectors.valid)

    valid_users = None
    if args.valid_users:
        valid_users = np.sort(np.random.default_rng(0).permutation(np.unique(split.valid.users))[:args.valid_users])
    base = {"dim": 64, "n_layers": 2, "n_heads": 2, "max_len": args.max_len, "dropout": 0.2, "loss": args.loss,
            "n_negatives": args.negatives}
    variants = {"sasrec_ids": {**base, "use_content": False},
                "sasrec_content": {**base, "use_content": True, "content_dim": content[0].shape[1],
                                   "adapter": "mlp", "adapter_hidden": 256, "id_min_count": args.content_id_min_count}}
    variants = {name: variants[name] for name in args.variants}
    train = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "patience": args.patience,
             "progress": False}

    popular = create_model("most_popular", split.train.n_users, split.train.n_items)
    popular.fit(split.train)
    results = {"most_popular": [{"test": target_warmth_report(evaluate(popular, split, on="test", ks=(10,),
                                                              metrics=("hr", "ndcg"), mask_valid_at_test=True), split)}]}
    for seed in args.seeds:  # seed-major: a cut-short run still holds paired comparisons
        for name, config in variants.items():
            run = fit_and_test(split, config, content if config["use_content"] else None, seed, train, valid_users)
            results.setdefault(name, []).append(run)
            log.info("%s seed %d: valid %s, test %s, best epoch %s, %.0f s", name, seed, run["valid"],
                     run["test"]["all"], run["best_epoch"], run["fit_seconds"])

    (out / "results.json").write_text(json.dumps({"args": vars(args), "variants": variants, "results": results,
                                                  "data": {"customers": inter.n_users, "articles": inter.n_items,
                                                           "purchases": len(inter)}}, indent=2))
    print(f"\nH&M next purchase, leave-last-out, {inter.n_users} customers, {inter.n_items} articles, "
          f"seeds {args.seeds}; cold-target share of test users {results['most_popular'][0]['test']['cold_target_share']:.2f}")
    print("| model | test HR@10 | test NDCG@10 | HR@10 warm targets | HR@10 cold targets | best epochs |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        cells = [mean_std([r["test"][part][m] for r in runs])
                 for part, m in (("all", "hr@10"), ("all", "ndcg@10"), ("warm", "hr@10"), ("cold", "hr@10"))]
        epochs = [r.get("best_epoch") for r in runs]
        print(f"| {name} | " + " | ".join(f"{mu:.4f} ± {sd:.4f}" for mu, sd in cells) + f" | {epochs} |")
    if {"sasrec_ids", "sasrec_content"} <= set(results):
        for part in ("all", "warm", "cold"):
            means = {name: {m: mean_std([r["test"][part][m] for r in results[name]])[0] for m in REPORTED}
                     for name in ("sasrec_ids", "sasrec_content")}
            ids, content = means["sasrec_ids"], means["sasrec_content"]
            cells = [f"{m} ×{content[m] / ids[m]:.2f}" if ids[m] > 0 else f"{m} n/a (ID-only 0)" for m in REPORTED]
            print(f"content / ID-only ({part} targets): " + ", ".join(cells))


if __name__ == "__main__":
    main()
