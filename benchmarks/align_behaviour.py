"""Content↔behaviour alignment on hm5core: text lands where purchases say it should.

The collaborative item embeddings of a warm LightGCN (trained on hm5core's train split only) become the
tower-less ``behaviour`` modality of a `UnifiedSpace`; the locked all-MiniLM-L6-v2 text tower's adapter
is aligned to them with open_clip's `ClipLoss` (pair ``text-behaviour``). Items are split by
``product_code`` into align-train / valid (epoch selection) / test (reported) so that colour variants do
not leak. Reported per seed and as mean ± std:

- text→behaviour Recall@1/@10 among the held-out test items (how well text alone predicts where an item
  sits in the collaborative space — what a cold item needs), against random;
- content-only KNN (user = mean of history item vectors) on hm5core test from raw MiniLM vectors and from
  the behaviour-aligned text vectors, beside LightGCN itself and MostPopular.

    python benchmarks/align_behaviour.py --hm ../shared/data/hm --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmrec.datasets import hm, mmrec_format
from mmrec.encoders import create_encoder, embed
from mmrec.evaluate import evaluate
from mmrec.experiment import run
from mmrec.fusion.alignment import CatalogPairs, align, retrieval_metrics, split_by_group
from mmrec.io import atomic_write_json
from mmrec.space import TowerConfig, UnifiedSpace, space_preset
from mmrec.train import TrainConfig

log = logging.getLogger("align_behaviour")


def one_seed(seed: int, split, text: torch.Tensor, products: np.ndarray, epochs: int) -> dict:
    """LightGCN, then text↔behaviour alignment, then the reported metrics, all with ``seed``."""
    lightgcn, warm = run(split, "lightgcn", model_config={"n_layers": 2, "reg_weight": 1e-2},
                         train_config=TrainConfig(lr=5e-3, epochs=500, eval_every=5, patience=4, seed=seed,
                                                  progress=False))
    with torch.no_grad():
        behaviour = lightgcn.embeddings()[1].detach().clone()
    held = split_by_group(products, {"valid": 0.1, "test": 0.1}, seed=seed)  # shares of the products
    train_rows, valid_rows, test_rows = (np.sort(held[name]) for name in ("train", "valid", "test"))
    mask = np.zeros(len(text), dtype=bool)
    mask[train_rows] = True

    torch.manual_seed(seed)
    # MiniLM's vectors are computed once outside (cached), so the text modality takes them as inputs
    space = UnifiedSpace(space_preset("text-behaviour", towers={"text": TowerConfig(input_dim=text.shape[1]),
                                                                "behaviour": TowerConfig(input_dim=behaviour.shape[1])}))
    data = CatalogPairs({}, {}, {}, vectors={"text": (text, np.ones(len(text), bool)), "behaviour": (behaviour, mask)},
                        pairs=["text-behaviour"])

    def t2b(s: UnifiedSpace, rows: np.ndarray) -> dict[str, float]:
        with torch.no_grad():
            return retrieval_metrics(s.project("text", text[rows]), s.project("behaviour", behaviour[rows]))

    started = time.perf_counter()
    result = align(space, data, TrainConfig(epochs=epochs, batch_size=256, lr=1e-3, seed=seed, patience=5,
                                            early_stop_metric="recall@10", progress=False),
                   evaluate_fn=lambda s: t2b(s, valid_rows))
    with torch.no_grad():
        aligned_text = space.project("text", text)
    knn = {name: run(split, "content_knn", setup=lambda model, v=vectors: model.set_content(v), ks=(20,))[1]["test"]
           for name, vectors in (("raw_minilm", F.normalize(text, dim=-1)), ("behaviour_aligned_text", aligned_text))}
    pop = torch.as_tensor(split.train.item_counts(), dtype=torch.float32)
    knn["most_popular"] = evaluate(lambda u: pop.expand(len(u), -1), split, on="test", ks=(20,)).metrics
    knn["lightgcn"] = warm["test"]
    return {"seed": seed, "align_seconds": time.perf_counter() - started, "best_epoch": result.best_epoch,
            "items": {"align_train": len(train_rows), "valid": len(valid_rows), "test": len(test_rows)},
            "text_to_behaviour_test": t2b(space, test_rows),
            "text_to_behaviour_random": {"recall@1": 1 / len(test_rows), "recall@10": 10 / len(test_rows)},
            "content_knn_test_recall@20": {k: v["recall@20"] for k, v in knn.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hm", default="../shared/data/hm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--cache", default="out/embed-cache")
    parser.add_argument("--out", default="out/align_behaviour.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    catalog, _ = hm.load(args.hm, transactions=False)
    folder = Path(args.hm) / "mmrec" / "hm5core"
    split = mmrec_format.to_split(mmrec_format.load(folder))
    codes = catalog.index_of(mmrec_format.read_item_mapping(folder))
    items = catalog.subset(codes)
    texts = hm.article_texts(items)
    text = torch.as_tensor(embed(items, create_encoder("minilm"), texts=texts, cache=args.cache, progress=False).vectors)
    products = np.asarray(items.attributes["product_code"])

    runs = [one_seed(seed, split, text, products, args.epochs) for seed in args.seeds]
    summary = {}
    for name in runs[0]["content_knn_test_recall@20"]:
        values = np.array([r["content_knn_test_recall@20"][name] for r in runs])
        summary[f"knn_{name}"] = (float(values.mean()), float(values.std()))
    for k in ("recall@1", "recall@10"):
        values = np.array([r["text_to_behaviour_test"][k] for r in runs])
        summary[f"t2b_{k}"] = (float(values.mean()), float(values.std()))
        summary[f"t2b_{k}_random"] = runs[0]["text_to_behaviour_random"][k]
    report = {"runs": runs, "summary_mean_std": summary}
    atomic_write_json(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
