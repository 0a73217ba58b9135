"""``mmrec recommend``: top-k items for users of a saved model, in external ids.

With ``--add-items ARTICLES.csv [--images DIR]`` (a cold-start model folder from ``mmrec train
coldstart``), the articles are embedded with the model's own content recipe and added to the model
first — no retraining — and ``--candidates new`` ranks only them.

The JSON answer is ``{"recommendations": {user: [item ids]}, "fallback": {"kind", "users"} | null,
"unknown_users": [...]}``: metadata never shares a namespace with user ids. ``fallback.users`` lists the
unknown users and the known ones the model has nothing of theirs to rank by (no pair seen in training; a
pipeline's customers without a purchase in its history), who got the same fallback list (the model's
``recommend_for_unknown``: most popular, unless the model has a better guess). A user's list holds at most
``--k`` items and never an item masked for them, so it can be shorter than ``--k`` when few candidates are
left. Items seen in training are masked unless ``--include-seen`` is given or the model keeps them by
default (a next-purchase pipeline, for which repurchase is a signal; ``--exclude-seen`` masks them there).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from mmrec.cli.common import emit, positive_int
from mmrec.io import read_text

NAME = "recommend"
HELP = "print the top-k items for users of a saved model (optionally after adding new articles)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options."""
    parser.add_argument("--model", required=True, help="folder written by 'mmrec train --out'")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="file with one user id per line")
    who.add_argument("--user", action="append", help="a user id (repeatable)")
    parser.add_argument("--k", type=positive_int, default=10,
                        help="how many items per user (at most: fewer when fewer candidates are left)")
    seen = parser.add_mutually_exclusive_group()
    seen.add_argument("--include-seen", dest="include_seen", action="store_true", default=None,
                      help="allow items the user bought in training (the default for next-purchase pipelines)")
    seen.add_argument("--exclude-seen", dest="include_seen", action="store_false",
                      help="leave out items the user bought in training (the default for other models)")
    parser.add_argument("--add-items", help="catalog of items to add before recommending (cold-start models only): "
                                            "a CSV with id,title,text[,image] columns, a file in the layout of "
                                            "H&M's articles.csv, or an H&M folder")
    parser.add_argument("--images", help="with --add-items: folder of their photos (<id[:3]>/<id>.jpg)")
    parser.add_argument("--candidates", default="all", choices=("all", "new", "cold", "warm"),
                        help="rank all items, only the added ones (new), items without purchases (cold), or "
                             "items with purchases (warm)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object {"recommendations": {user: [item ids]}, "fallback": ..., '
                             '"unknown_users": [...]}')


def read_user_ids(args: argparse.Namespace) -> list[str]:
    """User ids from ``--user`` or the ``--users`` file (blank lines ignored)."""
    if args.user:
        return list(args.user)
    path = Path(args.users)
    text = read_text(path, f"--users {path}")
    users = [line.strip() for line in text.splitlines() if line.strip()]
    if not users:
        raise ValueError(f"--users {path}: no user ids (one per line)")
    return users


def load_model(model_dir: str):
    """The saved model, a failure to load it named after ``--model``."""
    from safetensors import SafetensorError

    from mmrec.recommender import Recommender

    try:
        model = Recommender.from_pretrained(model_dir)
    except (ValueError, KeyError, EOFError, SafetensorError) as err:
        from mmrec.cli import error_message

        raise ValueError(f"--model {model_dir}: cannot load the saved model: {error_message(err)}") from err
    if model.user_ids is None or model.item_ids is None:
        raise ValueError(f"--model {model_dir} was saved without id vocabularies; cannot answer in external ids")
    return model


def ranked_ids(model, codes: np.ndarray, scores: np.ndarray) -> list[str]:
    """External ids of a row of ``recommend``'s codes, without the masked items (score -inf)."""
    return [str(model.item_ids[c]) for c, s in zip(codes, scores) if s != -np.inf]


def add_articles(model, model_dir: str, catalog_path: str, images: str | None) -> np.ndarray:
    """Read the catalog at ``catalog_path`` (any layout `mmrec.datasets.catalog_csv.read_catalog` takes) and
    add its items to the model, embedded by the model's saved content recipe; their codes."""
    from mmrec.datasets.catalog_csv import read_catalog

    if not hasattr(model, "add_items"):
        raise ValueError(f"--add-items: the {model.name!r} model in {model_dir} cannot take new items; "
                         f"train one with 'mmrec train coldstart'")
    if model.content_recipe is None:
        raise ValueError(f"--add-items: {model_dir} has no content recipe (content.json), so new items cannot be "
                         f"embedded the way its items were")
    codes = model.add_items(read_catalog(catalog_path, images))
    content = getattr(model, "content", None)
    if content is not None:  # zero rows: nothing the recipe could read (no text, no photo)
        empty = int((content[len(content) - len(codes):].norm(dim=1) == 0).sum())
        if empty:
            logging.getLogger(__name__).warning(
                "--add-items %s: %d of %d new articles have no text or photo the model can read (zero content "
                "vectors), so nothing tells them apart", catalog_path, empty, len(codes))
    return codes


def run(args: argparse.Namespace) -> int:
    """Recommend for known users; unknown users get the model's flagged fallback, or are listed by name."""
    wanted = read_user_ids(args)
    model = load_model(args.model)
    candidates: str | np.ndarray = args.candidates
    if args.add_items:
        added = add_articles(model, args.model, args.add_items, args.images)
        if args.candidates == "new":
            candidates = added
    elif args.candidates == "new":
        raise ValueError("--candidates new ranks the articles given with --add-items; none were given")
    index = {str(u): i for i, u in enumerate(model.user_ids)}
    known = [u for u in dict.fromkeys(wanted) if u in index]
    unknown = [u for u in dict.fromkeys(wanted) if u not in index]
    recommendations: dict[str, list[str]] = {}
    if known:
        exclude = model.excludes_seen_by_default if args.include_seen is None else not args.include_seen
        codes, scores = model.recommend(np.array([index[u] for u in known]), args.k, candidates=candidates,
                                        exclude_seen=exclude)
        for user, row, row_scores in zip(known, codes.cpu().numpy(), scores.float().cpu().numpy()):
            recommendations[user] = ranked_ids(model, row, row_scores)
    fallback = None
    # known users the model has nothing of theirs to rank by get the fallback list too, flagged
    historyless = [u for u, flag in zip(known, model.answered_by_fallback([index[u] for u in known])) if flag]
    if unknown or historyless:
        answer = model.recommend_for_unknown(args.k, candidates)
        items = ranked_ids(model, np.asarray(answer["items"]),
                           np.asarray(answer.get("scores", np.zeros(len(answer["items"]))), dtype=np.float64))
        recommendations.update({u: list(items) for u in [*unknown, *historyless]})
        fallback = {"kind": answer["fallback"], "users": [*unknown, *historyless]}
    emit({"recommendations": recommendations, "fallback": fallback, "unknown_users": unknown}, args.json)
    return 0
