"""``mmrec train coldstart``: the VAE fusion model with its item content.

The model folder holds the recommender and its `mmrec.content.ContentRecipe` (``content.json``, and the
`UnifiedSpace` in ``space/`` when ``--space`` made the content), written by ``save_pretrained``, so
``mmrec recommend --add-items`` and `Recommender.add_items` embed new items the same way.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.cli.common import emit, load_data, make_split
from mmrec.content import ContentRecipe


def split_content(args: argparse.Namespace, data: Any, split: Any) -> tuple[ContentRecipe, np.ndarray]:
    """The content recipe (``--space`` or MiniLM on the default text fields) and the vectors of the split's
    items, in code order."""
    if data.catalog is None:
        raise ValueError(f"--data {args.data}: item content needs a catalog (an H&M folder or 'synthetic')")
    if getattr(args, "space", None):
        from mmrec.space import UnifiedSpace

        recipe = ContentRecipe(space=UnifiedSpace.from_pretrained(args.space))
    else:
        recipe = ContentRecipe()
    return recipe, recipe.embed(data.catalog.subset(data.catalog.index_of(split.train.item_ids)))


def run_coldstart(args: argparse.Namespace, model_config: dict, train_config: Any) -> int:
    """Content vectors for every catalog item, then `vae_fusion` fitted on the split's train part with the
    epoch chosen on valid; saves the model with its content recipe."""
    from mmrec.experiment import run

    data = load_data(args.data)
    split, _ = make_split(data, args)
    recipe, vectors = split_content(args, data, split)
    model_config = {"content_dim": vectors.shape[1], **model_config}
    model, report = run(split, "vae_fusion", model_config=model_config, train_config=train_config,
                        setup=lambda m: m.set_content(vectors, recipe=recipe), refit_all=args.refit_all)
    out = Path(args.out)
    model.save_pretrained(out)
    emit({"model": "vae_fusion", "out": str(out), **report}, args.json)
    return 0
