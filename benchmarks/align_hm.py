"""LiT-style alignment on real H&M data, and the quality of the resulting space.

A small timm ViT image tower is trained from scratch on catalog photo–text pairs against the locked,
pretrained all-MiniLM-L6-v2 text tower (its features computed once). Items are split by
``product_code`` (colour variants never straddle splits): a test set of at least 2,000 items with a photo,
a validation set for early stopping, the rest for training. Reported, each beside its random baseline:

- text→image and image→text Recall@1/@10 among the test items;
- zero-shot top-1 accuracy for ``colour_group_name`` and ``product_type_name`` from text prompts, with a
  supervised linear probe on the same image vectors as the bound;
- on hm5core (MMRec protocol), a content-only KNN recommender (user = mean of history item vectors)
  from image-only, text-only and fused vectors, against random and MostPopular.

    python benchmarks/align_hm.py --hm ../shared/data/hm --out out/align_hm
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
from mmrec.evaluate import evaluate
from mmrec.experiment import run
from mmrec.fusion.alignment import CatalogPairs, RetrievalValidator, align, retrieval_metrics, space_vectors, split_by_group
from mmrec.space import UnifiedSpace, space_preset
from mmrec.train import TrainConfig

log = logging.getLogger("align_hm")


def zero_shot(space: UnifiedSpace, image_vectors: torch.Tensor, labels: np.ndarray, template: str) -> dict:
    """Top-1 accuracy of the nearest class prompt, with the majority-class and uniform baselines."""
    classes = sorted(set(labels))
    prompts = space.embed_texts([template.format(c.lower()) for c in classes])
    predicted = np.array(classes, dtype=object)[(image_vectors @ prompts.t()).argmax(1).numpy()]
    counts = {c: int((labels == c).sum()) for c in classes}
    return {"top1": float((predicted == labels).mean()), "classes": len(classes),
            "uniform_baseline": 1 / len(classes), "majority_baseline": max(counts.values()) / len(labels)}


def linear_probe(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor, test_y: np.ndarray) -> float:
    """Accuracy of a multinomial logistic regression trained on the train items' vectors (the bound)."""
    classes = sorted(set(train_y))
    index = {c: i for i, c in enumerate(classes)}
    y = torch.as_tensor([index[c] for c in train_y])
    probe = torch.nn.Linear(train_x.shape[1], len(classes))
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(probe(train_x), y).backward()
        opt.step()
    predicted = np.array(classes, dtype=object)[probe(test_x).argmax(1).detach().numpy()]
    return float((predicted == test_y).mean())


def content_knn_test(split, item_vectors: torch.Tensor, ks=(10, 20)) -> dict[str, float]:
    """Test metrics of the registered ``content_knn`` recommender (user = mean of her training items'
    vectors, score = cosine) on ``item_vectors``."""
    return run(split, "content_knn", setup=lambda model: model.set_content(item_vectors), ks=ks)[1]["test"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hm", default="../shared/data/hm")
    parser.add_argument("--out", default="out/align_hm")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="out/embed-cache", help="embedding cache for the locked text tower")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    catalog, _ = hm.load(args.hm, transactions=False)
    texts = hm.article_texts(catalog)
    has_image = np.array([p is not None for p in catalog.image_paths])
    held = split_by_group(catalog.attributes["product_code"], {"test": 2000, "valid": 1000}, seed=args.seed,
                          eligible=has_image)
    train, valid, test = held["train"], held["valid"], held["test"]
    log.info("items with photo: train %d, valid %d, test %d", len(train), len(valid), len(test))

    space = UnifiedSpace(space_preset("lit-tiny-vit"))
    started = time.perf_counter()
    data = CatalogPairs.from_catalog(space, catalog, texts=texts, cache=args.cache)
    log.info("decoded photos and embedded texts in %.0f s", time.perf_counter() - started)
    data.rows = train

    def vectors(s: UnifiedSpace, modality: str, codes: np.ndarray) -> torch.Tensor:
        return space_vectors(s, data.batches(codes), modality)[0]

    started = time.perf_counter()
    result = align(space, data, TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                            seed=args.seed, patience=3,
                                            early_stop_metric="t2i_recall@10", progress=False),
                   evaluate_fn=RetrievalValidator(data.batches(valid), [("text", "image")]))
    train_seconds = time.perf_counter() - started
    space.save_pretrained(out / "space")

    img_test, txt_test = vectors(space, "image", test), vectors(space, "text", test)
    img_train = vectors(space, "image", train)
    report = {"items": {"train": len(train), "valid": len(valid), "test": len(test)},
              "train_seconds": train_seconds, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
              "samples_per_s": [h["samples_per_s"] for h in result.history],
              "valid_history": [h["valid"]["t2i_recall@10"] for h in result.history],
              "text_to_image": retrieval_metrics(txt_test, img_test),
              "image_to_text": retrieval_metrics(img_test, txt_test),
              "retrieval_random_baseline": {"recall@1": 1 / len(test), "recall@10": 10 / len(test)}}
    for attribute, template in (("colour_group_name", "a {} garment"), ("product_type_name", "a photo of a {}")):
        labels_test = catalog.attributes[attribute][test]
        entry = zero_shot(space, img_test, labels_test, template)
        entry["linear_probe_bound"] = linear_probe(img_train, catalog.attributes[attribute][train], img_test, labels_test)
        report[f"zero_shot_{attribute}"] = entry

    # Content-only KNN on hm5core from image-only, text-only and fused item vectors.
    folder = Path(args.hm) / "mmrec" / "hm5core"
    split = mmrec_format.to_split(mmrec_format.load(folder))
    codes = catalog.index_of(mmrec_format.read_item_mapping(folder))
    text_vec = vectors(space, "text", codes)
    has_photo = torch.as_tensor(has_image[codes])
    image_vec = torch.zeros_like(text_vec)
    image_vec[has_photo] = vectors(space, "image", codes[has_photo.numpy()])
    fused = F.normalize(text_vec + image_vec, dim=-1)
    knn = {}
    for name, vectors in (("image_only", image_vec), ("text_only", text_vec), ("fused", fused)):
        knn[name] = content_knn_test(split, vectors)
    pop = torch.as_tensor(split.train.item_counts(), dtype=torch.float32)
    knn["most_popular"] = evaluate(lambda u: pop.expand(len(u), -1), split, on="test", ks=(10, 20)).metrics
    generator = torch.Generator().manual_seed(args.seed)
    knn["random"] = evaluate(lambda u: torch.rand(len(u), split.train.n_items, generator=generator), split,
                             on="test", ks=(10, 20)).metrics
    report["hm5core_content_knn_test"] = {k: {m: v[m] for m in ("recall@20", "ndcg@20", "recall@10")}
                                          for k, v in knn.items()}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
