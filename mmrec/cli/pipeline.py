"""``mmrec train pipeline``: the next-purchase pipeline (candidate generators → LightGBM ranker) on an H&M
folder, chosen on the valid window, reported on the test window, and with ``--refit-all`` refitted on every
purchase so the saved model answers for the day after the data ends (``mmrec recommend --model OUT``)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HELP = "the next-purchase pipeline (generators -> LightGBM lambdarank) on an H&M folder, chosen on valid"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this task's options."""
    from mmrec.cli.common import date_arg, non_negative_int, positive_int

    parser.add_argument("--data", required=True, help="H&M Kaggle-layout folder (articles.csv, transactions_train.csv)")
    parser.add_argument("--out", required=True, help="folder for the trained pipeline (created)")
    parser.add_argument("--config", help="YAML of PipelineConfig settings (candidates, features, ranker, ...)")
    parser.add_argument("--test-start", type=date_arg,
                        help="first day of the test window (default: the last --horizon-days days of the data)")
    parser.add_argument("--horizon-days", type=positive_int, help="length of a window in days (default 1)")
    parser.add_argument("--seed", type=non_negative_int,
                        help="LightGBM's seed (bagging, features; default: the run file's ranker seed, else 0)")
    parser.add_argument("--no-content", action="store_true",
                        help="no content vectors: drop the content generator and feature")
    parser.add_argument("--content-cache", help="embedding cache folder for the item content vectors")
    parser.add_argument("--refit-all", action="store_true",
                        help="after choosing on valid, refit on every purchase and save that model")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def pipeline_config(args: argparse.Namespace):
    """The `PipelineConfig` from ``--config`` with the command-line overrides applied."""
    import dataclasses

    from mmrec.config import from_dict, load_yaml
    from mmrec.pipeline import PipelineConfig

    config = load_yaml(PipelineConfig, args.config) if args.config else PipelineConfig()
    values = dataclasses.asdict(config)
    if args.seed is not None:
        values["ranker"]["seed"] = args.seed
    if args.horizon_days is not None:
        values["horizon_days"] = args.horizon_days
    if args.no_content:
        values["content"] = ""
        values["candidates"] = {k: v for k, v in values["candidates"].items() if k != "content"}
        values["features"] = [f for f in values["features"] if f != "content"]
    return from_dict(PipelineConfig, values, where=str(args.config or "pipeline"))


def run(args: argparse.Namespace) -> int:
    """Train, report, save. The pipeline trains in one process (LightGBM's own threads): under ``accelerate
    launch`` only the main process runs it, so one report is printed and one process writes ``--out``."""
    import logging

    from mmrec.cli.common import check_out_folder, emit
    from mmrec.datasets import hm
    from mmrec.experiment import is_main_process
    from mmrec.pipeline import train

    out = check_out_folder(args.out, kind="recommender", inputs=(args.data,))
    if not is_main_process():
        logging.getLogger(__name__).warning("train pipeline runs in one process; this one (not the main) stops")
        return 0
    config = pipeline_config(args)
    root = Path(args.data)
    if not (root / hm.ARTICLES_FILE).is_file():
        raise FileNotFoundError(f"--data {root}: expected an H&M folder with {hm.ARTICLES_FILE} and "
                                f"{hm.TRANSACTIONS_FILE}")
    catalog, interactions = hm.load(root, images=False)
    customers = hm.load_customers(root) if (root / hm.CUSTOMERS_FILE).is_file() else None
    test_start = None if args.test_start is None else int(np.datetime64(args.test_start, "D").astype(np.int64))
    model, report = train(interactions, catalog, config, customers=customers, test_start=test_start,
                          refit_all=args.refit_all, content_cache=args.content_cache)
    model.save_pretrained(out)
    importances = report["ranker"]["importances"]
    report["ranker"]["importances"] = dict(list(importances.items())[:20])
    emit({"model": "pipeline", "out": str(out), **report}, args.json)
    return 0
