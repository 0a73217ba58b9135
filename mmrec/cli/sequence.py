"""``mmrec train sequence``: the SASRec-style sequence model (`mmrec.fusion.sequence`) on a split in time.

The split is leave-last-out per user unless ``--protocol temporal`` is given (an MMRec folder's ``x_label``
is ignored: it is not ordered in time). With ``model: {use_content: true}`` in the run file, every item's
content vector comes from all-MiniLM-L6-v2 on its text (or from ``--space``), and the recipe is saved as
``content.json`` beside the model, as for ``mmrec train coldstart``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmrec.cli.coldstart import CONTENT_FILE, item_content
from mmrec.cli.common import emit, load_data, make_split
from mmrec.io import atomic_write_text


def run_sequence(args: argparse.Namespace, model_config: dict, train_config: Any) -> int:
    """Fit `sasrec` with the epoch chosen on valid, report valid/test (test from train + valid history), save."""
    from mmrec.experiment import run

    data = load_data(args.data)
    split, _ = make_split(data, args, default_protocol="leave-last-out", use_labels=False)
    model_config = dict(model_config)
    vectors, encoder = None, None
    if model_config.get("use_content"):
        if data.catalog is None:
            raise ValueError(f"--data {args.data}: use_content needs a catalog (an H&M folder or 'synthetic')")
        if args.space:
            from mmrec.space import UnifiedSpace

            encoder = UnifiedSpace.from_pretrained(args.space)
        else:
            encoder = "minilm"
        vectors = item_content(data.catalog.subset(data.catalog.index_of(split.train.item_ids)), encoder)
        model_config = {"content_dim": vectors.shape[1], **model_config}
    model, report = run(split, "sasrec", model_config=model_config, train_config=train_config,
                        setup=None if vectors is None else (lambda m: m.set_content(vectors)))
    out = Path(args.out)
    model.save_pretrained(out)
    if encoder is not None:
        if args.space:
            encoder.save_pretrained(out / "space")
        atomic_write_text(out / CONTENT_FILE, json.dumps({"space": "space"} if args.space else {"encoder": encoder}))
    emit({"model": "sasrec", "out": str(out), **report}, args.json)
    return 0
