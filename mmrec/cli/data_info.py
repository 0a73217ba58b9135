"""``mmrec data-info``: what a data set holds (counts, missing modalities, time span)."""
from __future__ import annotations

import argparse

from mmrec.cli.common import add_data_argument, emit, load_data

NAME = "data-info"
HELP = "summarise a data set: items, users, interactions, missing images and texts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options."""
    add_data_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Print the summary."""
    data = load_data(args.data)
    payload = {"kind": data.kind, "interactions": data.interactions.summary()}
    if data.catalog is not None:
        payload["catalog"] = data.catalog.summary()
    if data.labels is not None:
        payload["x_label"] = {name: int((data.labels == k).sum()) for k, name in enumerate(("train", "valid", "test"))}
    emit(payload, args.json)
    return 0
