"""``mmrec train sequence``: the SASRec-style sequence model (`mmrec.fusion.sequence`) on a split in time.

The split is leave-last-out per user unless ``--protocol temporal`` is given (an MMRec folder's ``x_label``
is ignored: it is not ordered in time). With ``model: {use_content: true}`` in the run file, every item's
content vector comes from all-MiniLM-L6-v2 on its text (or from ``--space``), and the recipe is saved as
``content.json`` beside the model, as for ``mmrec train coldstart``.

``--events FILE...`` adds behaviour events from screen recordings (``mmrec stream`` writes them) to the
data before the split: each file's events (`mmrec.events.events_to_interactions`: its users, items by id,
dwell as weights, which ``model: {use_dwell: true}`` reads) follow the data's last event, file after file.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmrec.cli.coldstart import split_content
from mmrec.cli.common import emit, load_data, make_split


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """``mmrec train sequence``'s own options (called by `mmrec.cli.train`)."""
    parser.add_argument("--events", nargs="+", metavar="FILE",
                        help="events parquet files from 'mmrec stream' to train on with --data's interactions "
                             "(their users join the data's; items are matched by id)")


def with_events(data: Any, files: list[str]) -> Any:
    """``data`` with the events of ``files`` appended to its interactions (new users added to the user
    vocabulary), each file's events starting one second after the latest event so far."""
    import dataclasses

    from mmrec.data import Interactions
    from mmrec.events import events_to_interactions, read_events

    joined = data.interactions
    for path in files:
        start = int(joined.timestamps.max()) + 1 if len(joined) else 0
        try:
            events = events_to_interactions(read_events(path), joined.item_ids, user_ids=joined.user_ids,
                                            start=start)
        except ValueError as err:
            raise ValueError(err if str(path) in str(err) else f"--events {path}: {err}") from None
        if not len(events):
            raise ValueError(f"--events {path}: no events")
        earlier = Interactions(joined.users, joined.items, events.user_ids, joined.item_ids, joined.timestamps,
                               joined.kinds, joined.weights)  # the same codes in the longer user vocabulary
        joined = earlier.concat(events)
    return dataclasses.replace(data, interactions=joined)


def run_sequence(args: argparse.Namespace, model_config: dict, train_config: Any) -> int:
    """Fit `sasrec` with the epoch chosen on valid, report valid/test (test from train + valid history), save."""
    from mmrec.experiment import run

    if args.protocol not in (None, "leave-last-out", "temporal"):  # a random split puts later events in history
        raise ValueError(f"train sequence splits in time: --protocol leave-last-out (the default) or temporal, "
                         f"got {args.protocol}")
    data = load_data(args.data)
    if getattr(args, "events", None):
        data = with_events(data, args.events)
    split, _ = make_split(data, args, default_protocol="leave-last-out", use_labels=False)
    recipe, vectors = split_content(args, data, split) if model_config.get("use_content") else (None, None)
    if vectors is not None:
        model_config = {"content_dim": vectors.shape[1], **model_config}
    model, report = run(split, "sasrec", model_config=model_config, train_config=train_config,
                        setup=None if vectors is None else (lambda m: m.set_content(vectors)), refit_all=args.refit_all)
    out = Path(args.out)
    model.content_recipe = recipe  # saved as content.json with the model
    model.save_pretrained(out)
    emit({"model": "sasrec", "out": str(out), **report}, args.json)
    return 0
