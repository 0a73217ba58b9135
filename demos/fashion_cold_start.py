"""Cold-start demo: new clothing nobody has bought yet, recommended from its photo and text.

Trains the VAE fusion recommender (`vae_fusion`) on purchases of items that already exist, then adds the
new items without retraining and writes an HTML page: for sample users, their purchase history and their
top-12 among the new items, with photos, the explanation for each (the history items closest to it and
the attributes they share) and a green frame on the new items the user really bought later.

- default: the embedded synthetic fashion world (its new items and their future purchases);
- ``--hm PATH``: an H&M Kaggle-layout folder; new items are the articles first sold in the last
  ``--new-days`` days, the model is trained on the purchases before that.

    python demos/fashion_cold_start.py [--hm ../shared/data/hm] [--out out/fashion_cold_start.html]
"""
from __future__ import annotations

import argparse
import html
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from mmrec.cli import run_script
from mmrec.data import Catalog, Interactions
from mmrec.content import ContentRecipe
from mmrec.recommender import create_model
from mmrec.report import check_page_path, item_cards, write_page
from mmrec.train import TrainConfig

log = logging.getLogger("fashion_cold_start")
DAY = 86_400


def only_items(interactions: Interactions, item_ids: np.ndarray) -> Interactions:
    """Rows of ``interactions`` on ``item_ids``, re-coded into that vocabulary (users keep theirs)."""
    keep = np.isin(interactions.item_ids[interactions.items], item_ids)
    rows = interactions.select(keep)
    return Interactions.from_ids(rows.user_ids[rows.users], rows.item_ids[rows.items], user_ids=rows.user_ids,
                                 item_ids=item_ids, timestamps=rows.timestamps, kinds=rows.kinds, weights=rows.weights)


def synthetic_world(seed: int) -> tuple[Catalog, Interactions, np.ndarray, Interactions, str]:
    """Catalog, past purchases, the new items' ids and their later purchases, and a description."""
    from mmrec.datasets.synthetic import WorldConfig, make_world

    world = make_world(WorldConfig(seed=seed), Path(tempfile.gettempdir()) / "mmrec-synthetic")
    new_ids = world.catalog.ids[world.new_item_codes]
    return (world.catalog, world.interactions, new_ids, world.new_item_interactions,
            f"the synthetic fashion world (seed {seed}): {len(new_ids)} new items")


def hm_world(root: str, new_days: int) -> tuple[Catalog, Interactions, np.ndarray, Interactions, str]:
    """H&M: articles first sold in the last ``new_days`` days are the new items."""
    from mmrec.datasets import hm

    catalog, interactions = hm.load(root)
    cutoff = int(interactions.timestamps.max()) - new_days * DAY
    first_sale = np.full(interactions.n_items, np.iinfo(np.int64).max)
    np.minimum.at(first_sale, interactions.items, interactions.timestamps)
    is_new = (first_sale > cutoff) & (first_sale < np.iinfo(np.int64).max)
    new_ids = interactions.item_ids[is_new]
    later = interactions.select(interactions.timestamps > cutoff)
    return (catalog, interactions.select(interactions.timestamps <= cutoff), new_ids,
            later.select(np.isin(later.items, np.flatnonzero(is_new))),
            f"H&M from {root}: {len(new_ids)} articles first sold in the last {new_days} days are new")


def explanation(model, user: int, item: int, catalog: Catalog) -> str:
    """One line: the closest history item and the attributes it shares with the recommended one."""
    reasons = model.explain(user, item, n=1, catalog=catalog)
    if not reasons:
        return "popular by content"
    top = reasons[0]
    shared = [v for k, v in top.get("shared", {}).items() if k in ("colour_group_name", "product_type_name",
                                                                   "graphical_appearance_name", "category",
                                                                   "colour", "pattern")]
    title = catalog.titles[catalog.index_of([top["id"]])[0]]
    return f"like “{title}” ({top['similarity']:.2f})" + (f": {', '.join(shared)}" if shared else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hm", help="H&M Kaggle-layout folder (default: the synthetic world)")
    parser.add_argument("--new-days", type=int, default=7, help="H&M: articles first sold this recently are new")
    parser.add_argument("--out", default="out/fashion_cold_start.html")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=5, help="sample users shown")
    parser.add_argument("--cache", default="out/embed-cache", help="cache of the text tower's vectors")
    args = parser.parse_args()
    check_page_path(args.out)  # before any work: a mistyped --out must not cost a run, or a file
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)

    catalog, interactions, new_ids, later, source = hm_world(args.hm, args.new_days) if args.hm \
        else synthetic_world(args.seed)
    old_ids = np.setdiff1d(np.unique(interactions.item_ids[interactions.items]), new_ids)
    train = only_items(interactions, old_ids)
    log.info("%s; training on %d purchases of %d items by %d users", source, len(train), len(old_ids), train.n_users)

    old_catalog, new_catalog = catalog.subset(catalog.index_of(old_ids)), catalog.subset(catalog.index_of(new_ids))
    model = create_model("vae_fusion", train.n_users, train.n_items, {"content_dim": 384})
    recipe = ContentRecipe()  # MiniLM on the catalog's text fields; saved with the model
    model.set_content(recipe.embed(old_catalog, cache=args.cache), recipe=recipe)
    model.fit(train, train_config=TrainConfig(epochs=args.epochs, batch_size=2048, lr=5e-3, seed=args.seed,
                                              progress=False))
    new_codes = model.add_items(list(new_ids), recipe.embed(new_catalog, cache=args.cache))
    log.info("added %d new items without retraining", len(new_codes))

    buyers = later.user_ids[later.users]
    bought: dict[str, set[str]] = {}
    for user, item in zip(buyers, later.item_ids[later.items]):
        bought.setdefault(user, set()).add(item)
    user_index = {u: i for i, u in enumerate(model.user_ids)}
    candidates = [u for u in dict.fromkeys(buyers) if u in user_index]
    rng = np.random.default_rng(args.seed)
    shown = rng.choice(len(candidates), size=min(args.users, len(candidates)), replace=False) if candidates else []
    codes, _ = model.recommend([user_index[candidates[i]] for i in shown], 12, candidates=new_codes)
    hits, sections = 0, [f"<p>{html.escape(source)}. Model: vae_fusion (LightGCN + content graph + content VAE + "
                         f"count gate), new items added with <code>add_items</code>, no retraining. Green frame: "
                         f"the user bought that new item later.</p>"]
    for j, i in enumerate(shown):
        user = candidates[i]
        code = user_index[user]
        history = model.seen_indices[model.seen_indptr[code]:model.seen_indptr[code + 1]].tolist()[-12:]
        recs = [int(c) for c in codes[j] if c >= 0]
        rec_ids = model.item_ids[recs]
        catalog_codes = catalog.index_of(rec_ids)
        truth = {k for k, rid in zip(catalog_codes, rec_ids) if rid in bought.get(user, set())}
        hits += len(truth)
        sections.append(f"<h2>user {html.escape(str(user))}</h2><p class='muted'>purchase history (latest 12)</p>"
                        + item_cards(catalog, catalog.index_of(model.item_ids[history]))
                        + "<p class='muted'>top-12 among the new items, with why</p>"
                        + item_cards(catalog, catalog_codes, highlight=truth,
                                     captions=[f"{catalog.titles[c]} — {explanation(model, code, r, catalog)}"
                                               for c, r in zip(catalog_codes, recs)]))
    out = write_page(args.out, "mmrec: new clothing for the right people", sections)
    log.info("%d shown users; %d of their later purchases of new items are in their top-12; wrote %s",
             len(shown), hits, out)


if __name__ == "__main__":
    run_script("fashion_cold_start.py", main)
