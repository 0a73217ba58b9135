"""``mmrec train coldstart`` and the content side of ``mmrec recommend --add-items``.

A cold-start model folder holds the recommender (``config.json``, ``model.safetensors``, ``vocab.json``)
and ``content.json``, the recipe that made its item content vectors, so that items added later get
vectors made the same way: ``{"encoder": "minilm"}`` (a locked text tower on the item texts) or
``{"space": "space"}`` (a `UnifiedSpace` saved in that subfolder, fusing photo and text).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.cli.common import emit, load_data, make_split
from mmrec.data import Catalog
from mmrec.io import atomic_write_text

CONTENT_FILE = "content.json"


def content_encoder(model_dir: str | Path) -> Any:
    """The encoder named by a model folder's ``content.json``: a spec string or a loaded `UnifiedSpace`."""
    path = Path(model_dir) / CONTENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {model_dir} is not a cold-start model folder "
                                f"(written by 'mmrec train coldstart'), so it cannot embed new items")
    recipe = json.loads(path.read_text())
    if "space" in recipe:
        from mmrec.space import UnifiedSpace

        return UnifiedSpace.from_pretrained(Path(model_dir) / recipe["space"])
    return recipe["encoder"]


def item_content(catalog: Catalog, encoder: Any) -> np.ndarray:
    """Content vectors of ``catalog``'s items by ``encoder`` (see `mmrec.fusion.cold_vae.content_vectors`)."""
    from mmrec.fusion.cold_vae import content_vectors

    return content_vectors(catalog, encoder)


def split_content(args: argparse.Namespace, data: Any, split: Any) -> tuple[Any, np.ndarray]:
    """The content encoder (``--space`` or MiniLM) and the vectors of the split's items, in code order."""
    if data.catalog is None:
        raise ValueError(f"--data {args.data}: item content needs a catalog (an H&M folder or 'synthetic')")
    if args.space:
        from mmrec.space import UnifiedSpace

        encoder: Any = UnifiedSpace.from_pretrained(args.space)
    else:
        encoder = "minilm"
    return encoder, item_content(data.catalog.subset(data.catalog.index_of(split.train.item_ids)), encoder)


def save_content_recipe(out: Path, encoder: Any) -> None:
    """Write ``content.json`` (and the space, when the content came from one) beside a saved model."""
    if isinstance(encoder, str):
        recipe = {"encoder": encoder}
    else:
        encoder.save_pretrained(out / "space")
        recipe = {"space": "space"}
    atomic_write_text(out / CONTENT_FILE, json.dumps(recipe))


def run_coldstart(args: argparse.Namespace, model_config: dict, train_config: Any) -> int:
    """Content vectors for every catalog item, then `vae_fusion` fitted on the split's train part with the
    epoch chosen on valid; saves the model and its content recipe."""
    from mmrec.experiment import run

    data = load_data(args.data)
    split, _ = make_split(data, args)
    encoder, vectors = split_content(args, data, split)
    model_config = {"content_dim": vectors.shape[1], **model_config}
    model, report = run(split, "vae_fusion", model_config=model_config, train_config=train_config,
                        setup=lambda m: m.set_content(vectors))
    out = Path(args.out)
    model.save_pretrained(out)
    save_content_recipe(out, encoder)
    emit({"model": "vae_fusion", "out": str(out), **report}, args.json)
    return 0
