"""``mmrec evaluate``: train a recommender on a split's train part and print valid and test metrics."""
from __future__ import annotations

import argparse

from mmrec.cli.common import emit, load_data, make_split
from mmrec.cli.train import add_model_arguments, run_config

NAME = "evaluate"
HELP = "train on the split's train part, choose on valid Recall@20, print valid and test metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options."""
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Print ``{"valid": {...}, "test": {...}, ...}``."""
    from mmrec.experiment import run as run_experiment

    config = run_config(args)
    split, _ = make_split(load_data(args.data), args)
    _, report = run_experiment(split, args.model, model_config=config.model, train_config=config.train)
    emit({"model": args.model, "seed": args.seed, **report}, args.json)
    return 0
