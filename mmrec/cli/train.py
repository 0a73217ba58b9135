"""``mmrec train``: fit a recommender on a split, choose the epoch on valid, save it."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from mmrec.cli.common import add_data_argument, add_split_arguments, emit, load_data, make_split
from mmrec.config import from_dict, load_yaml
from mmrec.train import TrainConfig

NAME = "train"
HELP = ("train a recommender (most_popular, itemknn, bpr, lightgcn), the cold-start model (coldstart), "
        "the sequence model (sequence) or a unified space (align) and save it")
WARM_MODELS = ("most_popular", "itemknn", "bpr", "lightgcn")


@dataclass
class RunConfig:
    """A YAML run file: ``model:`` (the model's own settings) and ``train:`` (`TrainConfig`)."""

    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)


def add_model_arguments(parser: argparse.ArgumentParser, model_required: bool = True,
                        data_required: bool = True) -> None:
    """Options shared by ``train`` and ``evaluate``."""
    add_data_argument(parser, required=data_required)
    add_split_arguments(parser)
    parser.add_argument("--model", required=model_required, choices=WARM_MODELS, help="which recommender")
    parser.add_argument("--config", help="YAML with 'model:' and 'train:' sections (unknown keys are errors)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--checkpoint-dir", help="checkpoint here and resume from the newest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_config(args: argparse.Namespace) -> RunConfig:
    """The YAML config (if any) with command-line overrides applied."""
    config = load_yaml(RunConfig, args.config) if args.config else RunConfig()
    train = from_dict(TrainConfig, {**config.train.__dict__, "seed": args.seed})
    if args.epochs:
        train.epochs = args.epochs
    if args.checkpoint_dir:
        train.checkpoint_dir = args.checkpoint_dir
    if args.no_progress:
        train.progress = False
    return RunConfig(config.model, train)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options."""
    parser.add_argument("task", nargs="?", default="recommender",
                        choices=("recommender", "coldstart", "sequence", "align"),
                        help="'recommender' (default); 'coldstart': the VAE fusion model with its item content "
                             "(--space or MiniLM text); 'sequence': SASRec on a leave-last-out split "
                             "(content with 'model: {use_content: true}'); 'align': train a UnifiedSpace "
                             "(--config with 'space:')")
    parser.add_argument("--space", help="coldstart, sequence: a saved UnifiedSpace making the item content "
                                        "vectors (default: all-MiniLM-L6-v2 on the item texts)")
    add_model_arguments(parser, model_required=False, data_required=False)
    parser.add_argument("--shards", help="align: stream items from catalog shards (webdataset brace notation, "
                                         "e.g. 'out/shards/catalog-{000000..000021}.tar'); the last shard is "
                                         "held out for validation. Without it, --data is read into memory")
    parser.add_argument("--out", required=True, help="folder for the trained model (safetensors + JSON)")


def run(args: argparse.Namespace) -> int:
    """Train, report valid/test metrics at the chosen point, save the model."""
    from mmrec.experiment import run as run_experiment

    if args.task == "align":
        from mmrec.cli.align import run_align

        return run_align(args)
    config = run_config(args)
    if args.task == "coldstart":
        from mmrec.cli.coldstart import run_coldstart

        if not args.data:
            raise ValueError("mmrec train coldstart needs --data")
        return run_coldstart(args, config.model, config.train)
    if args.task == "sequence":
        from mmrec.cli.sequence import run_sequence

        if not args.data:
            raise ValueError("mmrec train sequence needs --data")
        return run_sequence(args, config.model, config.train)
    if not args.model or not args.data:
        raise ValueError("mmrec train recommender needs --data and --model")
    split, _ = make_split(load_data(args.data), args)
    model, report = run_experiment(split, args.model, model_config=config.model, train_config=config.train)
    model.save_pretrained(args.out)
    emit({"model": args.model, "out": args.out, **report}, args.json)
    return 0
