"""``mmrec evaluate``: train a recommender on a split's train part and print valid and test metrics."""
from __future__ import annotations

import argparse

from mmrec.cli.common import emit
from mmrec.cli.train import add_model_arguments, fit_recommender, run_config

NAME = "evaluate"
HELP = "train on the split's train part, choose on valid Recall@20, print valid and test metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options."""
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Print ``{"valid": {...}, "test": {...}, ...}``."""
    config = run_config(args)  # --checkpoint-dir (or the run file's) is checked here, never inside --data
    _, report = fit_recommender(args, config)
    emit({"model": args.model, "seed": args.seed, **report}, args.json)
    return 0
