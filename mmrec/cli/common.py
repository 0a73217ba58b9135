"""What several commands share: reading ``--data``, building a split, printing results."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.data import Catalog, Interactions
from mmrec.splits import Split, cold_items, from_labels, leave_last_out, mmrec_protocol, temporal

PROTOCOLS = ("mmrec", "temporal", "leave-last-out", "cold")


@dataclass
class Data:
    """A data set as read from ``--data``: interactions, the catalog if there is one, MMRec labels if given."""

    interactions: Interactions
    catalog: Catalog | None
    labels: np.ndarray | None
    kind: str


def add_data_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--data``: an MMRec folder (``*.inter``), an H&M folder (``articles.csv``) or ``synthetic``."""
    parser.add_argument("--data", required=required,
                        help="MMRec-format folder (<name>.inter), H&M Kaggle-layout folder, or 'synthetic'")


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """Options choosing the split protocol (ignored when the data carries MMRec ``x_label``s)."""
    parser.add_argument("--protocol", choices=PROTOCOLS, default=None,
                        help="split protocol when the data has no x_label column (default: mmrec 8:1:1; "
                             "leave-last-out for 'train sequence', which ignores x_label)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    parser.add_argument("--test-start", help="temporal protocol: first day of the test period (YYYY-MM-DD)")
    parser.add_argument("--cold-fraction", type=float, default=0.2, help="cold protocol: fraction of items withheld")


def load_data(spec: str) -> Data:
    """Read ``--data`` into `Data`, naming the path and what was expected when it fits no known layout."""
    if spec == "synthetic":
        import tempfile

        from mmrec.datasets.synthetic import WorldConfig, make_world

        world = make_world(WorldConfig(), Path(tempfile.gettempdir()) / "mmrec-synthetic")
        return Data(world.interactions, world.catalog, None, "synthetic")
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--data {path} does not exist")
    if path.is_dir() and any(path.glob("*.inter")):
        from mmrec.datasets import mmrec_format

        data = mmrec_format.load(path)
        return Data(data.interactions, None, data.labels, "mmrec")
    if path.is_dir() and (path / "articles.csv").is_file():
        from mmrec.datasets import hm

        catalog, interactions = hm.load(path)
        return Data(interactions, catalog, None, "hm")
    raise ValueError(f"--data {path}: expected an MMRec folder with a <name>.inter file, an H&M folder with "
                     f"articles.csv, or 'synthetic'")


def make_split(data: Data, args: argparse.Namespace, *, default_protocol: str = "mmrec",
               use_labels: bool = True) -> tuple[Split, np.ndarray | None]:
    """The split the command works on, and MMRec ``x_label``s for warm protocols (None otherwise).
    ``--protocol`` wins over ``default_protocol``; the data's own ``x_label`` split wins over both unless
    ``use_labels`` is false (sequence models need a split in time, which ``x_label`` is not)."""
    protocol = getattr(args, "protocol", None) or default_protocol
    if use_labels and data.labels is not None:
        return from_labels(data.interactions, data.labels), data.labels
    if protocol == "mmrec":
        return mmrec_protocol(data.interactions, seed=args.seed)
    if protocol == "temporal":
        if not args.test_start:
            raise ValueError("--protocol temporal needs --test-start YYYY-MM-DD")
        start = int(np.datetime64(args.test_start, "s").astype(np.int64))
        return temporal(data.interactions, test_start=start), None
    if protocol == "leave-last-out":
        return leave_last_out(data.interactions), None
    return cold_items(data.interactions, fraction=args.cold_fraction, seed=args.seed), None


def emit(payload: dict[str, Any], as_json: bool) -> None:
    """Print one JSON object (``--json``) or an indented human-readable form."""
    if as_json:
        json.dump(payload, sys.stdout, default=_plain)
        sys.stdout.write("\n")
        return
    for key, value in payload.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<16} {_fmt(v)}")
        else:
            print(f"{key:<18} {_fmt(value)}")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")
