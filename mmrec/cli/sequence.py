"""``mmrec train sequence``: the SASRec-style sequence model (`mmrec.fusion.sequence`) on a split in time.

The split is leave-last-out per user unless ``--protocol temporal`` is given (an MMRec folder's ``x_label``
is ignored: it is not ordered in time). With ``model: {use_content: true}`` in the run file, every item's
content vector comes from all-MiniLM-L6-v2 on its text (or from ``--space``), and the recipe is saved as
``content.json`` beside the model, as for ``mmrec train coldstart``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmrec.cli.coldstart import save_content_recipe, split_content
from mmrec.cli.common import emit, load_data, make_split


def run_sequence(args: argparse.Namespace, model_config: dict, train_config: Any) -> int:
    """Fit `sasrec` with the epoch chosen on valid, report valid/test (test from train + valid history), save."""
    from mmrec.experiment import run

    data = load_data(args.data)
    split, _ = make_split(data, args, default_protocol="leave-last-out", use_labels=False)
    encoder, vectors = split_content(args, data, split) if model_config.get("use_content") else (None, None)
    if vectors is not None:
        model_config = {"content_dim": vectors.shape[1], **model_config}
    model, report = run(split, "sasrec", model_config=model_config, train_config=train_config,
                        setup=None if vectors is None else (lambda m: m.set_content(vectors)))
    out = Path(args.out)
    model.save_pretrained(out)
    if encoder is not None:
        save_content_recipe(out, encoder)
    emit({"model": "sasrec", "out": str(out), **report}, args.json)
    return 0
