"""``mmrec recommend``: top-k items for users of a saved model, in external ids."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mmrec.cli.common import emit

NAME = "recommend"
HELP = "print the top-k items for users of a saved model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options."""
    parser.add_argument("--model", required=True, help="folder written by 'mmrec train --out'")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="file with one user id per line")
    who.add_argument("--user", action="append", help="a user id (repeatable)")
    parser.add_argument("--k", type=int, default=10, help="how many items per user")
    parser.add_argument("--include-seen", action="store_true", help="allow items the user bought in training")
    parser.add_argument("--json", action="store_true", help="print one JSON object {user: [item ids]}")


def read_user_ids(args: argparse.Namespace) -> list[str]:
    """User ids from ``--user`` or the ``--users`` file (blank lines ignored)."""
    if args.user:
        return list(args.user)
    path = Path(args.users)
    if not path.is_file():
        raise FileNotFoundError(f"--users {path} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def run(args: argparse.Namespace) -> int:
    """Recommend for known users; unknown users are reported by name, not crashed on."""
    from mmrec.recommender import Recommender

    model = Recommender.from_pretrained(args.model)
    if model.user_ids is None or model.item_ids is None:
        raise ValueError(f"{args.model} was saved without id vocabularies; cannot answer in external ids")
    index = {u: i for i, u in enumerate(model.user_ids)}
    wanted = read_user_ids(args)
    known = [u for u in wanted if u in index]
    unknown = [u for u in wanted if u not in index]
    payload: dict = {}
    if known:
        codes, _ = model.recommend(np.array([index[u] for u in known]), args.k, exclude_seen=not args.include_seen)
        payload = {u: list(model.item_ids[row]) for u, row in zip(known, codes.cpu().numpy())}
    if unknown:
        payload["_unknown_users"] = unknown
    emit(payload, args.json)
    return 0
