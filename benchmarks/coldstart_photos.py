"""Issue 20 part 3: do photos pay for cold-start items? ``vae_fusion`` on text-only, photo-only and fused content.

Protocol (cold splits, content, schedule and evaluator of `benchmarks/coldstart_hm.py`):

* **A leak-free photo tower.** An article that is cold in *any* seed of the run (its purchases withheld)
  never lends its purchases to the tower. A LightGCN trained on the purchases of the other articles gives
  each of them a 64-d behaviour vector; a tiny from-scratch ViT photo tower (96×64, `mmrec.space.tiny_vit`)
  is aligned with open_clip's `ClipLoss` through the one loop to those vectors (pair ``image-behaviour``)
  and to the article's MiniLM text (pair ``image-text``: every photo, since photos and texts are what a new
  article arrives with). 10% of the non-cold products are held out of both pairs, and the epoch is chosen
  on their image→behaviour Recall@10.
* **Content.** *text*: all-MiniLM-L6-v2 (the tables' content); *photo*: the tower's vector of the article
  photo (zeros for the ~21% without one); *fused*: both halves L2-normalised and concatenated, so an article
  without a photo keeps its text half — the fusion takes an item with one modality missing; *fused_gen*: the
  fused content for ``vae_fusion``'s generator only (``similarity_dims`` the text's width: its affinity and
  content graph compare the text half), for ``vae_fusion`` alone.
* **Per seed**: ``vae_fusion`` (the benchmark's defaults: early stopping on cold valid Recall@20) on each
  content, cold and hybrid test Recall@20; and the training-free ``affinity`` (power chosen on cold valid,
  seed 0) and ``content_knn`` on each content.

Written for a GPU (the tower trains from scratch); the results JSON is rewritten after every run and a
rerun with the same ``--out`` skips what it holds (and reuses ``photo_vectors.safetensors``, the tower's
output, so ``--content`` files for `benchmarks/coldstart_hm.py` can be made from it). On a lent device the
data travels packed (`benchmarks/device_pack.py`; wheels and package layout as `benchmarks/gpu_checks.sh`):

    python benchmarks/device_pack.py pack --hm ../shared/data/hm --out .gpu                 # here
    python3 benchmarks/device_pack.py unpack --packed .gpu --out /tmp/hm                    # there
    python3 benchmarks/coldstart_photos.py --hm /tmp/hm --content .gpu/minilm.safetensors --split products \\
        --seeds 0 1 2 3 4 --out /tmp/photos_products
    # the tower alone, and towers on fewer photos (a learning curve in data), then evaluate here with --content:
    python3 benchmarks/coldstart_photos.py ... --tower-only --curve 2500 5000 10000 --out /tmp/photos_products
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
import coldstart_hm as bench  # noqa: E402

from mmrec.datasets import hm  # noqa: E402
from mmrec.fusion.alignment import CatalogPairs, RetrievalValidator, align, space_vectors, split_by_group  # noqa: E402
from mmrec.io import atomic_save_tensors, atomic_write_json  # noqa: E402
from mmrec.recommender import create_model  # noqa: E402
from mmrec.space import SpaceConfig, TowerConfig, UnifiedSpace, tiny_vit  # noqa: E402
from mmrec.train import TrainConfig  # noqa: E402


def never_cold(splits: dict) -> np.ndarray:
    """Items cold (valid or test) in none of ``splits``."""
    n = next(iter(splits.values())).train.n_items
    cold = np.zeros(n, dtype=bool)
    for split in splits.values():
        cold[split.cold_valid_items] = True
        cold[split.cold_test_items] = True
    return ~cold


def behaviour_vectors(pairs, keep: np.ndarray, epochs: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """LightGCN item vectors from the purchases of the ``keep`` items only, and which items had purchases."""
    train = pairs.select(keep[pairs.items])
    set_seed(seed)
    model = create_model("lightgcn", train.n_users, train.n_items, {"reg_weight": 1e-2})
    model.fit(train, train_config=TrainConfig(epochs=epochs, batch_size=4096, lr=5e-3, eval_every=epochs + 1,
                                              seed=seed, progress=False))
    model.eval()
    with torch.no_grad():
        items = model.embeddings()[1].detach().float().cpu()
    return items, np.bincount(train.items, minlength=train.n_items) > 0


def train_tower(catalog, text: np.ndarray, behaviour: torch.Tensor, has_behaviour: np.ndarray, args) -> tuple:
    """The photo tower (see the module docstring); returns the space, photo vectors ``[n, D]``, photo mask,
    and the training report."""
    products = catalog.attributes["product_code"]
    held = split_by_group(products, {"valid": 0.1}, seed=args.tower_seed, eligible=has_behaviour)
    valid = np.sort(held["valid"])
    torch.manual_seed(args.tower_seed)
    config = SpaceConfig(towers={"image": tiny_vit((96, 64)), "text": TowerConfig(input_dim=text.shape[1]),
                                 "behaviour": TowerConfig(input_dim=behaviour.shape[1])},
                         pairs=("image-behaviour", "image-text"))
    space = UnifiedSpace(config)
    started = time.perf_counter()
    data = CatalogPairs.from_catalog(space, catalog, vectors={"text": (torch.from_numpy(text), np.ones(len(text), bool)),
                                                              "behaviour": (behaviour, has_behaviour)})
    decode_seconds = time.perf_counter() - started
    data.rows = np.setdiff1d(data.rows, valid)
    if args.tower_items:
        data.rows = np.random.default_rng(0).permutation(data.rows)[:args.tower_items]
    started = time.perf_counter()
    result = align(space, data, TrainConfig(epochs=args.tower_epochs, batch_size=args.tower_batch, lr=args.tower_lr,
                                            seed=args.tower_seed, patience=args.tower_patience,
                                            early_stop_metric="i2b_recall@10", progress=False),
                   evaluate_fn=RetrievalValidator(data.batches(valid), [("image", "behaviour"), ("text", "behaviour")]))
    space.eval()
    photo, has_photo = space_vectors(space, data.batches(np.arange(len(catalog))), "image")
    photo = photo.float().cpu() * has_photo[:, None]
    report = {"train_rows": int(len(data.rows)), "valid_items": int(len(valid)), "decode_seconds": decode_seconds,
              "train_seconds": time.perf_counter() - started, "best_epoch": result.best_epoch,
              "epochs_run": result.epochs_run, "valid_history": [h.get("valid") for h in result.history],
              "items_with_photo": int(has_photo.sum())}
    return space, photo.numpy(), has_photo.numpy(), report


def contents(text: np.ndarray, photo: np.ndarray) -> dict[str, np.ndarray]:
    """The three content variants of the module docstring."""
    t = F.normalize(torch.from_numpy(text).float(), dim=1)
    p = F.normalize(torch.from_numpy(photo).float(), dim=1)  # zero rows stay zero
    fused = torch.cat([t, p], 1).numpy()
    return {"text": t.numpy(), "photo": p.numpy(), "fused": fused, "fused_gen": fused}


MODEL_ONLY = {"fused_gen"}  # variants that are a vae_fusion setting, not content for the training-free rankers


def main() -> None:
    """Run the experiment (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hm", default="../shared/data/hm")
    parser.add_argument("--content", default=None, help="text vectors (.safetensors + .json ids), as coldstart_hm")
    parser.add_argument("--cache", default="out/cache/minilm")
    parser.add_argument("--split", choices=bench.SPLITS, default="products")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=["text", "fused", "photo"],
                        choices=["text", "fused", "photo", "fused_gen"])
    parser.add_argument("--model-variants", nargs="+", default=["text", "fused"],
                        help="contents vae_fusion trains on for every seed (all --variants on the first seed)")
    parser.add_argument("--epochs", type=int, default=bench.COLDSTART_TRAIN["epochs"])
    parser.add_argument("--eval-every", type=int, default=bench.COLDSTART_TRAIN["eval_every"])
    parser.add_argument("--patience", type=int, default=bench.COLDSTART_TRAIN["patience"])
    parser.add_argument("--lr", type=float, default=bench.COLDSTART_TRAIN["lr"])
    parser.add_argument("--batch-size", type=int, default=bench.COLDSTART_TRAIN["batch_size"])
    parser.add_argument("--lightgcn-epochs", type=int, default=30, help="epochs of the behaviour LightGCN")
    parser.add_argument("--tower-epochs", type=int, default=30)
    parser.add_argument("--tower-patience", type=int, default=4)
    parser.add_argument("--tower-batch", type=int, default=256)
    parser.add_argument("--tower-lr", type=float, default=5e-4)
    parser.add_argument("--tower-seed", type=int, default=0)
    parser.add_argument("--tower-items", type=int, default=0, help="train the tower on this many rows (0: all; dry runs)")
    parser.add_argument("--curve", nargs="*", type=int, default=[],
                        help="also train towers on these many rows (same behaviour vectors and held-out products) and "
                             "save each one's vectors as photo_vectors_<rows>.safetensors: the learning curve in data")
    parser.add_argument("--tower-only", action="store_true", help="stop after the towers (evaluate elsewhere)")
    parser.add_argument("--out", default="out/coldstart_photos")
    args = parser.parse_args()
    args.no_curve = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {"runs": {}}
    results["args"] = vars(args)

    def save() -> None:
        atomic_write_json(results_file, results)

    catalog, interactions = hm.load(args.hm, images=True)
    pairs = interactions.unique_pairs()
    text = bench.load_content(args.content, catalog, args.cache)
    splits = {seed: bench.make_split(pairs, catalog, args.split, seed) for seed in args.seeds}
    keep = never_cold(splits)
    print(f"{pairs.n_items} items, {int(keep.sum())} never cold in seeds {args.seeds}", flush=True)

    vectors_file = out / "photo_vectors.safetensors"
    if vectors_file.is_file():
        from safetensors.torch import load_file
        photo = load_file(str(vectors_file))["vectors"].float().numpy()
    else:
        started = time.perf_counter()
        behaviour, has_behaviour = behaviour_vectors(pairs, keep, args.lightgcn_epochs, args.tower_seed)
        results["behaviour"] = {"items": int(has_behaviour.sum()), "seconds": time.perf_counter() - started}
        print(f"behaviour vectors for {int(has_behaviour.sum())} items in {results['behaviour']['seconds']:.0f} s", flush=True)
        space, photo, has_photo, results["tower"] = train_tower(catalog, text, behaviour, has_behaviour & keep, args)
        print(f"tower: {json.dumps({k: v for k, v in results['tower'].items() if k != 'valid_history'})}", flush=True)
        print(f"tower valid history: {results['tower']['valid_history']}", flush=True)
        space.save_pretrained(out / "space")
        atomic_save_tensors({"vectors": torch.from_numpy(photo).half()}, vectors_file)
        save()
        curve = results.setdefault("curve", {})
        for rows in args.curve:  # a copy of the arguments: results["args"] keeps the run's own --tower-items
            _, vectors, _, curve[str(rows)] = train_tower(catalog, text, behaviour, has_behaviour & keep,
                                                          argparse.Namespace(**{**vars(args), "tower_items": rows}))
            print(f"tower on {rows} rows: best epoch {curve[str(rows)]['best_epoch']}, "
                  f"{curve[str(rows)]['train_seconds']:.0f} s", flush=True)
            atomic_save_tensors({"vectors": torch.from_numpy(vectors).half()}, out / f"photo_vectors_{rows}.safetensors")
            save()
    if args.tower_only:
        return
    variants = contents(text, photo)

    chosen = results.setdefault("chosen", {})
    for name in ("affinity", "content_knn"):
        for variant in [v for v in args.variants if v not in MODEL_ONLY]:
            key = f"{name}/{variant}"
            if key not in chosen:
                chosen[key], _ = bench.search_grid(name, splits[args.seeds[0]], variants[variant], args.seeds[0], args)
                save()
    failed: dict[str, str] = {}
    for i, seed in enumerate(args.seeds):
        for variant in args.variants:
            jobs = [] if variant in MODEL_ONLY else [("affinity", chosen[f"affinity/{variant}"]),
                                                     ("content_knn", chosen[f"content_knn/{variant}"])]
            if i == 0 or variant in args.model_variants:
                jobs.append(("vae_fusion", {"similarity_dims": text.shape[1]} if variant == "fused_gen" else {}))
            for name, config in jobs:
                key = f"{name}/{variant}/{seed}"
                if key in results["runs"]:
                    continue
                if name in failed:
                    continue
                started = time.perf_counter()
                try:
                    run = bench.run_seed(name, config, splits[seed], variants[variant], seed, args)
                except Exception:  # one model's failure must not cost the other models' runs
                    failed[name] = traceback.format_exc()
                    print(f"{key} failed, {name} skipped from now on:\n{failed[name]}", flush=True)
                    continue
                run["seconds"] = time.perf_counter() - started
                results["runs"][key] = run
                save()
                print(f"{key}: cold test R@20 {run['test_cold']['recall@20']:.4f}, hybrid "
                      f"{run['test_hybrid']['recall@20']:.4f}, valid {run['valid_cold']['recall@20']:.4f}, "
                      f"best epoch {run.get('best_epoch')}, {run['seconds']:.0f} s", flush=True)
    summarise(results, args.seeds)


def summarise(results: dict, seeds: list[int]) -> None:
    """Mean ± std of cold test Recall@20 per model and content, and per seed fused against text."""
    runs = results["runs"]
    for name in ("vae_fusion", "affinity", "content_knn"):
        for variant in ("text", "photo", "fused", "fused_gen"):
            values = [runs[f"{name}/{variant}/{s}"]["test_cold"]["recall@20"] for s in seeds
                      if f"{name}/{variant}/{s}" in runs]
            if values:
                print(f"{name:12s} {variant:6s} cold R@20 {np.mean(values):.4f} ± {np.std(values):.4f} "
                      f"({len(values)} seeds: {' / '.join(f'{v:.4f}' for v in values)})")
        for variant in ("fused", "fused_gen"):
            both = [s for s in seeds if f"{name}/{variant}/{s}" in runs and f"{name}/text/{s}" in runs]
            wins = sum(runs[f"{name}/{variant}/{s}"]["test_cold"]["recall@20"]
                       > runs[f"{name}/text/{s}"]["test_cold"]["recall@20"] for s in both)
            if both:
                print(f"{name}: {variant} above text on {wins} of {len(both)} seeds")


if __name__ == "__main__":
    main()
