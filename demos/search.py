"""Search a fashion catalog by text and by example image in a `UnifiedSpace`; writes an HTML gallery.

By default it trains a small LiT-style space (a tiny timm ViT against the locked MiniLM text tower) on the
synthetic fashion world in about a minute. With ``--space DIR --hm PATH`` it searches the H&M catalog with a
space trained by ``benchmarks/align_hm.py``.

    python demos/search.py [--query "red floral summer dress" ...] [--space out/align_hm/space --hm ../shared/data/hm]
"""
from __future__ import annotations

import argparse
import html
import tempfile
from pathlib import Path

import numpy as np
import torch

from mmrec.cli import run_script
from mmrec.fusion.alignment import CatalogPairs, align
from mmrec.report import check_page_path, item_cards, write_page
from mmrec.space import UnifiedSpace, space_preset, tiny_vit
from mmrec.train import TrainConfig

DEFAULT_QUERIES = ("red floral summer dress", "black striped t-shirt", "blue checked jacket", "warm beige coat")


def synthetic_space(seed: int):
    """The synthetic world's catalog and a space aligned on it."""
    from mmrec.datasets.synthetic import WorldConfig, make_world

    world = make_world(WorldConfig(seed=seed), Path(tempfile.gettempdir()) / "mmrec-synthetic")
    torch.manual_seed(seed)
    space = UnifiedSpace(space_preset("lit-tiny-vit", towers={"image": tiny_vit(32, width=64, depth=2, heads=2)},
                                      dim=64, adapter_options={"hidden": 128}))
    data = CatalogPairs.from_catalog(space, world.catalog)
    align(space, data, TrainConfig(epochs=20, batch_size=32, lr=2e-3, seed=seed, progress=True))
    return world.catalog, space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", action="append", help="a text query (repeatable)")
    parser.add_argument("--space", help="a saved UnifiedSpace (default: train one on the synthetic world)")
    parser.add_argument("--hm", help="H&M folder whose catalog to search (with --space)")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/search.html")
    args = parser.parse_args()
    check_page_path(args.out)  # before any work: a mistyped --out must not cost a run, or a file

    if args.space:
        if not args.hm:
            parser.error("--space needs --hm (the catalog to search)")
        from mmrec.datasets import hm

        catalog, _ = hm.load(args.hm, transactions=False)
        space, texts = UnifiedSpace.from_pretrained(args.space), hm.article_texts(catalog)
    else:
        (catalog, space), texts = synthetic_space(args.seed), None
    items, has_vector = space.embed_items(catalog, texts=texts)
    items[~torch.as_tensor(has_vector)] = 0.0

    sections = ["<p>Items are ranked by cosine similarity to the query in the space; an item's vector fuses its "
                "photo and its text.</p><h2>By text</h2>"]
    for query in args.query or DEFAULT_QUERIES:
        top = (items @ space.embed_texts([query])[0]).topk(args.k).indices.tolist()
        sections += [f"<h3>“{html.escape(query)}”</h3>", item_cards(catalog, top)]
    sections.append("<h2>By example image (photo vector against every item)</h2>")
    with_photo = [i for i, p in enumerate(catalog.image_paths) if p is not None]
    rng = np.random.default_rng(args.seed)
    for example in rng.choice(with_photo, size=3, replace=False):
        query = space.embed_images([catalog.image_paths[example]])[0]
        top = [i for i in (items @ query).topk(args.k + 1).indices.tolist() if i != example][: args.k]
        sections += ["<p>Query</p>", item_cards(catalog, [int(example)]), "<p>Nearest</p>", item_cards(catalog, top)]
    print(f"wrote {write_page(args.out, 'mmrec: search the catalog by text and by image', sections)}")


if __name__ == "__main__":
    run_script("search.py", main)
