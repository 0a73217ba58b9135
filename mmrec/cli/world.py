"""``mmrec world``: write a synthetic H&M-shaped world of any size in the competition's layout."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from mmrec.cli.common import emit, finite_float, non_negative_int, positive_int

NAME = "world"
HELP = "write a synthetic H&M-shaped world (articles, customers, transactions, photos) of any size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options."""
    parser.add_argument("--out", required=True, help="new folder to write (H&M layout; must not exist)")
    parser.add_argument("--fraction", type=finite_float, default=None,
                        help="size as a fraction of the full H&M download (1 = 1,371,980 customers, 105,542 "
                             "articles, 31,788,324 purchases); --users/--items/--purchases override it")
    parser.add_argument("--users", type=positive_int, default=None, help="customers (each buys at least once)")
    parser.add_argument("--items", type=positive_int, default=None, help="articles")
    parser.add_argument("--purchases", type=positive_int, default=None, help="transaction lines")
    parser.add_argument("--days", type=positive_int, default=None, help="days of history (default 734)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--no-photos", action="store_true", help="write no images/ folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Check the options, write the world, print its summary and the time it took."""
    from mmrec.datasets.hm_world import HMWorldConfig

    out = Path(args.out)
    if out.exists():
        raise ValueError(f"--out {out}: already exists (a world is written into a new folder)")
    sizes = {k: v for k, v in (("users", args.users), ("items", args.items), ("purchases", args.purchases),
                               ("days", args.days)) if v is not None}
    extra = {**sizes, "seed": args.seed, "photos": not args.no_photos}
    if args.fraction is not None:
        config = HMWorldConfig.at_fraction(args.fraction, **extra)
    else:
        config = HMWorldConfig(**extra)
    start = time.perf_counter()
    from mmrec.datasets.hm_world import write_world

    summary = write_world(config, out)
    emit({**summary, "out": str(out), "seconds": round(time.perf_counter() - start, 1)}, args.json)
    return 0
