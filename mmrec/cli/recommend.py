"""``mmrec recommend``: top-k items for users of a saved model, in external ids.

With ``--add-items ARTICLES.csv [--images DIR]`` (a cold-start model folder from ``mmrec train
coldstart``), the articles are embedded with the model's own content recipe and added to the model
first — no retraining — and ``--candidates new`` ranks only them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mmrec.cli.common import emit

NAME = "recommend"
HELP = "print the top-k items for users of a saved model (optionally after adding new articles)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options."""
    parser.add_argument("--model", required=True, help="folder written by 'mmrec train --out'")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="file with one user id per line")
    who.add_argument("--user", action="append", help="a user id (repeatable)")
    parser.add_argument("--k", type=int, default=10, help="how many items per user")
    parser.add_argument("--include-seen", action="store_true", help="allow items the user bought in training")
    parser.add_argument("--add-items", help="CSV in the layout of H&M's articles.csv: articles to add before "
                                            "recommending (cold-start models only)")
    parser.add_argument("--images", help="with --add-items: folder of their photos (<id[:3]>/<id>.jpg)")
    parser.add_argument("--candidates", default="all", choices=("all", "new", "cold", "warm"),
                        help="rank all items, only the added ones (new), items without purchases (cold), or "
                             "items with purchases (warm)")
    parser.add_argument("--json", action="store_true", help="print one JSON object {user: [item ids]}")


def read_user_ids(args: argparse.Namespace) -> list[str]:
    """User ids from ``--user`` or the ``--users`` file (blank lines ignored)."""
    if args.user:
        return list(args.user)
    path = Path(args.users)
    if not path.is_file():
        raise FileNotFoundError(f"--users {path} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def add_articles(model, model_dir: str, csv_path: str, images: str | None) -> np.ndarray:
    """Embed the articles of ``csv_path`` with the model's content recipe and add them; their codes."""
    from mmrec.cli.coldstart import content_encoder, item_content
    from mmrec.datasets import hm

    if not hasattr(model, "add_items"):
        raise ValueError(f"--add-items: the {model.name!r} model in {model_dir} cannot take new items; "
                         f"train one with 'mmrec train coldstart'")
    catalog = hm.read_articles(csv_path, images)
    return model.add_items(list(catalog.ids), item_content(catalog, content_encoder(model_dir)))


def run(args: argparse.Namespace) -> int:
    """Recommend for known users; unknown users get the model's flagged fallback, or are listed by name."""
    from mmrec.recommender import Recommender

    model = Recommender.from_pretrained(args.model)
    if model.user_ids is None or model.item_ids is None:
        raise ValueError(f"{args.model} was saved without id vocabularies; cannot answer in external ids")
    candidates: str | np.ndarray = args.candidates
    if args.add_items:
        added = add_articles(model, args.model, args.add_items, args.images)
        if args.candidates == "new":
            candidates = added
    elif args.candidates == "new":
        raise ValueError("--candidates new ranks the articles given with --add-items; none were given")
    index = {u: i for i, u in enumerate(model.user_ids)}
    wanted = read_user_ids(args)
    known = [u for u in wanted if u in index]
    unknown = [u for u in wanted if u not in index]
    payload: dict = {}
    if known:
        codes, _ = model.recommend(np.array([index[u] for u in known]), args.k, candidates=candidates,
                                   exclude_seen=not args.include_seen)
        payload = {u: list(model.item_ids[row]) for u, row in zip(known, codes.cpu().numpy())}
    if unknown and hasattr(model, "recommend_for_unknown"):
        fallback = model.recommend_for_unknown(args.k, candidates)
        payload.update({u: list(model.item_ids[fallback["items"]]) for u in unknown})
        payload["_fallback"] = {"kind": fallback["fallback"], "users": unknown}
    elif unknown:
        payload["_unknown_users"] = unknown
    emit(payload, args.json)
    return 0
