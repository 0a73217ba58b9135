"""Cold-start benchmark on H&M: the fusion recommender against content baselines, cold, hybrid, warm, warm-up.

Protocol (issue 5, part 5):

* **Cold items** (``--split items``, `mmrec.splits.cold_items`): 20% of the items with at least one purchase
  are withheld with all their purchases and halved into valid and test items; only users with training
  history are evaluated. Split seed = model seed.
* **New products** (``--split products``, `mmrec.splits.cold_groups` on the articles' ``product_code``): 20%
  of the products with at least one purchase are withheld — every colour variant together, with all their
  purchases — and halved into valid and test products, so no cold article has a sibling in training whose
  text it could lean on. Otherwise as the item split. Metrics from the one evaluator (`mmrec.evaluate.evaluate`): *cold*
  ranks the cold items only (``candidates="cold"``), *hybrid* ranks all items (``"all"``); Recall/NDCG@20.
* **Warm** on ``hm5core`` (MMRec protocol, its fixed ``x_label`` split; the seed changes the model only):
  full ranking of all items, test Recall/NDCG@20 at the epoch chosen on valid Recall@20.
* **Warm-up curve**: the cold *test* items with at least 11 buyers (unique pairs, users with history).
  Per item, buyers are ordered by time (ties by user code); the first 10 are the *reveal pool*, the rest the
  *targets* (fixed for every step). For n in 0, 1, 2, 5, 10, the first n buyers of every curve item are
  revealed — given to ``model.update(interactions)`` on a copy of the fitted model (no retraining) and
  masked as seen — and Recall@20 of the targets is measured ranking the curve items only (``vae_fusion``'s
  update includes its co-buyer and profile evidence, ``cobuyer_weight`` and ``profile_weight``; the variants
  ``vae_fusion-no_cobuyer`` and ``vae_fusion-no_profile`` leave one out).
* **Hybrid with warm targets** (``--warm-targets F``, ColdRec's protocol): F of the warm (user, item) pairs
  (users with at least 3) are also held out into valid and F into test, so *hybrid* (all items ranked) counts
  warm and cold purchases together and *warm* ranks the warm items alone. Without them the hybrid targets are
  cold purchases only and pushing every cold item up scores as well as the cold ranking. Each model's cold
  items are then also shifted by one offset chosen on valid hybrid Recall@20 (`mmrec.hybrid`), reported
  beside the raw hybrid figure. The training data is smaller than without F, so the cold figures differ.
* Content: all-MiniLM-L6-v2 vectors of `mmrec.datasets.hm.article_texts` (cached under ``out/cache/minilm``),
  or ``--content FILE.safetensors`` holding ``{"vectors": [n, D]}`` with a sibling ``FILE.json`` list of
  article ids (or ``{"ids": [...]}``).
* Training-free heuristics beside the learned baselines: ``content_knn``, ``affinity`` (the history content
  affinity alone, the term ``vae_fusion`` adds) and ``affinity_pop`` (plus the content-neighbour popularity),
  see `mmrec.fusion.cold_baselines`; their power / weight are chosen on cold valid like any grid.
* Hyperparameters: each model's small grid is searched with seed 0 on **cold valid** Recall@20 only;
  training stops early on the same metric. Test numbers are computed once, at the chosen point.

Models are run when registered: the baselines of `mmrec.fusion.cold_baselines`, and ``vae_fusion`` with
its ablations when `mmrec.fusion.coldstart` provides it. Timing (part 7): seconds per training epoch and
evaluation users/s, beside LightGCN trained on the same cold split.

    python benchmarks/coldstart_hm.py --hm ../shared/data/hm --seeds 0 1 2 3 4 --out out/coldstart_hm.json
    python benchmarks/coldstart_hm.py --split products --models affinity affinity_pop --no-warm --out out/p.json
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed

from mmrec.cli.coldstart import COLDSTART_TRAIN, WARM_TRAIN
from mmrec.datasets import hm, mmrec_format
from mmrec.evaluate import evaluate
from mmrec.hybrid import ColdOffset, fit_cold_offset, untrained_items
from mmrec.io import atomic_write_text
from mmrec.recommender import MODELS, create_model
from mmrec.report import mean_std
from mmrec.splits import Split, cold_groups, cold_items
from mmrec.train import TrainConfig

# name -> (registered model, fixed settings, grid searched on cold valid with seed 0)
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "random": ("random", {}, {}),
    "content_knn": ("content_knn", {}, {}),
    "affinity": ("affinity", {}, {"power": [1, 2, 4, 6, 8, 12]}),
    "affinity_pop": ("affinity_pop", {}, {"power": [4, 6, 8], "weight": [0.001, 0.003, 0.01, 0.03, 0.1]}),
    "dropoutnet": ("dropoutnet", {}, {"dropout": [0.5, 0.8]}),
    "vbpr": ("vbpr", {}, {"reg_weight": [1e-4, 1e-2]}),
    "clcrec": ("clcrec", {}, {"temperature": [0.1, 0.3]}),
    "vae_fusion": ("vae_fusion", {}, {}),
    "vae_fusion-no_rank": ("vae_fusion", {"ranking_loss": False}, {}),
    "vae_fusion-no_gate": ("vae_fusion", {"gate": False}, {}),
    "vae_fusion-no_vae": ("vae_fusion", {"vae": False}, {}),
    "vae_fusion-no_affinity": ("vae_fusion", {"affinity": False}, {}),
    "vae_fusion-no_cobuyer": ("vae_fusion", {"cobuyer_weight": 0.0}, {}),  # the same model; its warm-up curve differs
    "vae_fusion-no_profile": ("vae_fusion", {"profile_weight": 0.0}, {}),  # likewise, without the profile evidence
    "vae_fusion-prior_sample": ("vae_fusion", {"prior_sample": True}, {}),
    "vae_fusion-posterior_rank": ("vae_fusion", {"posterior_rank": True}, {}),
}
MAIN = "vae_fusion"
HEURISTICS = ("random", "content_knn", "affinity", "affinity_pop")  # training-free
SPLITS = ("items", "products")
WARMUP_STEPS = (0, 1, 2, 5, 10)
KS = (20,)
log = logging.getLogger("coldstart_hm")


# ---------------------------------------------------------------------------------------------- inputs

def load_content(path: str | None, catalog, cache: str) -> np.ndarray:
    """Item content vectors ``[len(catalog), D]`` in catalog order (see the module docstring)."""
    if path is None:
        from mmrec.encoders import create_encoder, embed

        result = embed(catalog, create_encoder("minilm"), texts=hm.article_texts(catalog), cache=cache,
                       progress=False)
        if not result.valid.all():
            log.warning("%d articles have no text vector (zeros)", int((~result.valid).sum()))
        return result.vectors.astype(np.float32)
    from safetensors.numpy import load_file

    file = Path(path)
    vectors = load_file(str(file)).get("vectors")
    if vectors is None or vectors.ndim != 2:
        raise ValueError(f"{file}: expected a tensor 'vectors' of shape [n, D]")
    ids_file = file.with_suffix(".json")
    if not ids_file.is_file():
        raise FileNotFoundError(f"{ids_file} (the item ids of {file}) is missing")
    ids = json.loads(ids_file.read_text())
    ids = ids.get("ids", ids.get("item_ids")) if isinstance(ids, dict) else ids
    if not isinstance(ids, list) or len(ids) != len(vectors):
        raise ValueError(f"{ids_file}: expected a list of {len(vectors)} item ids")
    row = {}
    for i, item in enumerate(map(str, ids)):
        if item in row:
            raise ValueError(f"{ids_file}: item id {item!r} appears twice")
        row[item] = i
    missing = [i for i in catalog.ids if i not in row]
    if missing:
        raise ValueError(f"{file}: {len(missing)} catalog articles have no vector, e.g. {missing[:3]}")
    return np.asarray(vectors, dtype=np.float32)[[row[i] for i in catalog.ids]]


def make_split(pairs, catalog, kind: str, seed: int, warm_fraction: float = 0.0) -> Split:
    """The cold split ``kind`` (``items`` or ``products``, see the module docstring) of seed ``seed``, with
    ``warm_fraction`` of the warm pairs held out into valid and into test (``--warm-targets``)."""
    if kind == "items":
        return cold_items(pairs, fraction=0.2, seed=seed, warm_fraction=warm_fraction)
    if kind == "products":
        if "product_code" not in catalog.attributes:
            raise ValueError("--split products needs the articles' product_code column in the catalog")
        if list(pairs.item_ids) != list(catalog.ids):
            raise ValueError("--split products: the interactions' item vocabulary is not the catalog's order")
        return cold_groups(pairs, catalog.attributes["product_code"], fraction=0.2, seed=seed,
                           warm_fraction=warm_fraction)
    raise ValueError(f"--split must be one of {SPLITS}, got {kind!r}")


def grid_points(grid: dict) -> list[dict]:
    """Every combination of a grid's values."""
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


# ------------------------------------------------------------------------------------------- one model

def build(name: str, config: dict, split: Split, content: np.ndarray, seed: int):
    """A fresh model of variant ``name`` with ``config``, its content set, initial weights from ``seed``."""
    model_name, fixed, _ = VARIANTS[name]
    settings = {**fixed, **config}
    if "content_dim" in getattr(MODELS[model_name].config_class, "__dataclass_fields__", {}):
        settings["content_dim"] = content.shape[1]
    set_seed(seed)
    model = create_model(model_name, split.train.n_users, split.train.n_items, settings)
    model.set_content(torch.from_numpy(content))
    return model


def train(name: str, config: dict, split: Split, content: np.ndarray, seed: int, args,
          valid_candidates: str, schedule: tuple[int, int, int, int] | None = None) -> tuple[object, dict]:
    """Fit with early stopping on valid Recall@20 over ``valid_candidates``; timing of epochs and fit.
    ``schedule`` is (epochs, eval_every, patience, batch_size), by default the cold split's from ``args``."""
    model = build(name, config, split, content, seed)

    def validate(m) -> dict:
        return evaluate(m, split, on="valid", ks=KS, candidates=valid_candidates).metrics

    epochs, eval_every, patience, batch_size = schedule or (args.epochs, args.eval_every, args.patience,
                                                            args.batch_size)
    tc = TrainConfig(epochs=epochs, batch_size=batch_size, lr=args.lr, eval_every=eval_every,
                     patience=patience, seed=seed, progress=False)
    started = time.perf_counter()
    result = model.fit(split.train, train_config=tc, evaluate_fn=validate)
    info = {"fit_seconds": time.perf_counter() - started}
    if result is not None and getattr(result, "history", None):
        info |= {"best_epoch": result.best_epoch, "epochs": result.epochs_run,
                 "seconds_per_epoch": float(np.mean([h["seconds"] for h in result.history]))}
    model.eval()
    return model, info


def search_grid(name: str, split: Split, content: np.ndarray, seed: int, args,
                grid: list[dict] | None = None) -> tuple[dict, list[dict]]:
    """The point of ``name``'s grid (or ``grid``) with the best cold *valid* Recall@20 (seed ``seed``), and
    every point's value; a grid of one point is taken without training. Test is never looked at."""
    grid = grid_points(VARIANTS[name][2]) if grid is None else grid
    if len(grid) <= 1:
        return (grid or [{}])[0], []
    searched = []
    for point in grid:
        model, _ = train(name, point, split, content, seed, args, "cold")
        value = evaluate(model, split, on="valid", ks=KS, candidates="cold")["recall@20"]
        searched.append({"config": point, "valid_cold_recall@20": value})
        print(f"{name} {point}: cold valid recall@20 {value:.4f}", flush=True)
    return max(searched, key=lambda g: g["valid_cold_recall@20"])["config"], searched


def timed_eval(model, split: Split, on: str, candidates) -> dict:
    """Evaluator metrics plus evaluated users per second."""
    started = time.perf_counter()
    metrics = evaluate(model, split, on=on, ks=KS, candidates=candidates).metrics
    metrics["users_per_s"] = metrics["users"] / max(time.perf_counter() - started, 1e-9)
    return metrics


def warmup_curve(model, split: Split) -> dict:
    """Recall@20 of the curve items' target buyers after n revealed buyers (see the module docstring)."""
    test = split.test.unique_pairs()
    test = test.select(np.isin(test.items, split.cold_test_items))
    order = np.lexsort((test.users, test.timestamps, test.items))
    test = test.select(order)
    starts = np.searchsorted(test.items, test.items, side="left")
    rank = np.arange(len(test)) - starts
    buyers = np.bincount(test.items, minlength=test.n_items)
    pool = max(WARMUP_STEPS)
    curve_items = np.flatnonzero(buyers > pool)
    if not len(curve_items):
        return {"items": 0}
    in_curve = np.isin(test.items, curve_items)
    targets = test.select(in_curve & (rank >= pool))
    out = {"items": int(len(curve_items)), "target_pairs": int(len(targets)), "recall@20": {}}
    for n in WARMUP_STEPS:
        revealed = test.select(in_curve & (rank < n))
        m = copy.deepcopy(model)
        if n:
            if not hasattr(m, "update"):
                out["note"] = "no update(): revealed buyers are only masked"
            else:
                m.update(revealed)
        view = Split(split.train.concat(revealed), targets.select(np.zeros(len(targets), bool)), targets,
                     None, curve_items)
        out["recall@20"][n] = evaluate(m, view, on="test", ks=KS, candidates=curve_items)["recall@20"]
    return out


def run_seed(name: str, config: dict, split: Split, content: np.ndarray, seed: int, args) -> dict:
    """Train on the cold split, evaluate cold/hybrid valid and test, and the warm-up curve."""
    model, info = train(name, config, split, content, seed, args, "cold")
    report = {"seed": seed, "config": config, **info,
              "valid_cold": evaluate(model, split, on="valid", ks=KS, candidates="cold").metrics,
              "test_cold": timed_eval(model, split, "test", "cold"),
              "test_hybrid": timed_eval(model, split, "test", "all")}
    if args.warm_targets > 0:
        offset, tried = fit_cold_offset(model, split, k=20, seed=seed)
        calibrated = ColdOffset(model, untrained_items(split), offset)
        report |= {"valid_hybrid": evaluate(model, split, on="valid", ks=KS).metrics,
                   "test_warm": evaluate(model, split, on="test", ks=KS, candidates="warm").metrics,
                   "cold_offset": offset, "cold_offset_grid": tried,
                   "test_hybrid_calibrated": evaluate(calibrated, split, on="test", ks=KS).metrics}
    if not args.no_curve:
        report["warmup"] = warmup_curve(model, split)
    return report


def run_warm(name: str, config: dict, split: Split, content: np.ndarray, seed: int, args) -> dict:
    """hm5core: early stopping on valid Recall@20 over all items; test at that point."""
    model, info = train(name, config, split, content, seed, args, "all",
                        (args.warm_epochs, args.warm_eval_every, args.warm_patience, args.warm_batch_size))
    return {"seed": seed, **info, "test": evaluate(model, split, on="test", ks=KS).metrics}


# ------------------------------------------------------------------------------------------- reporting

def _json_default(value):
    """JSON for what ``json`` does not know: paths as text, numpy numbers as floats."""
    return str(value) if isinstance(value, Path) else float(value)


def fmt(values: list[float]) -> str:
    mu, sd = mean_std(values)
    return "–" if math.isnan(mu) else f"{mu:.4f} ± {sd:.4f}"


def write_curve_png(curves: dict[str, list[float]], path: Path) -> None:
    """The warm-up curves as a PNG line chart drawn with Pillow (matplotlib is not a dependency)."""
    from PIL import Image, ImageDraw

    w, h, left, right, top, bottom = 760, 420, 70, 200, 40, 60
    image = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(image)
    values = [v for vals in curves.values() for v in vals if not math.isnan(v)]
    high = max(values + [1e-6]) * 1.1
    x = {n: left + i * (w - left - right) / (len(WARMUP_STEPS) - 1) for i, n in enumerate(WARMUP_STEPS)}

    def y(v: float) -> float:
        return top + (1 - v / high) * (h - top - bottom)

    draw.text((left, 12), "Recall@20 of cold test items after n revealed purchases (mean over seeds)", fill="black")
    for i in range(6):
        v = high * i / 5
        draw.line([(left, y(v)), (w - right, y(v))], fill=(225, 225, 225))
        draw.text((12, y(v) - 6), f"{v:.3f}", fill="black")
    draw.line([(left, h - bottom), (w - right, h - bottom)], fill="black")
    draw.line([(left, top), (left, h - bottom)], fill="black")
    for n, px in x.items():
        draw.text((px - 4, h - bottom + 8), str(n), fill="black")
    draw.text(((left + w - right) / 2 - 60, h - 24), "revealed purchases n", fill="black")
    colours = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127), (23, 190, 207), (188, 189, 34)]
    for k, (name, vals) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        points = [(x[n], y(v)) for n, v in zip(WARMUP_STEPS, vals) if not math.isnan(v)]
        draw.line(points, fill=colour, width=3 if name == MAIN else 2)
        for px, py in points:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        draw.text((w - right + 12, top + 18 * k), name, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)

def summarise(results: dict, seeds: list[int]) -> dict:
    """The best baseline on mean cold test Recall@20 (and the best training-free heuristic and best learned
    baseline), and the main model's ratio of means and per-seed wins against each (seeds matched)."""
    def per_seed(name: str) -> dict[int, float]:
        return {r["seed"]: r["test_cold"]["recall@20"] for r in results[name]["seeds"]}

    baselines = [n for n in results if not n.startswith(MAIN) and results[n]["seeds"]]
    summary: dict = {}
    for key, pool in (("best_baseline", baselines), ("best_heuristic", [n for n in baselines if n in HEURISTICS]),
                      ("best_learned", [n for n in baselines if n not in HEURISTICS])):
        best = max(pool, key=lambda n: np.mean(list(per_seed(n).values()))) if pool else None
        summary[key] = best
        if best and MAIN in results and results[MAIN]["seeds"]:
            main, base = per_seed(MAIN), per_seed(best)
            common = sorted(set(main) & set(base))
            a, b = [main[s] for s in common], [base[s] for s in common]
            prefix = "" if key == "best_baseline" else key.removeprefix("best_") + "_"
            summary |= {f"{prefix}main_per_seed": a, f"{prefix}best_baseline_per_seed": b,
                        f"{prefix}wins": int(sum(x > y for x, y in zip(a, b))), f"{prefix}of": len(common),
                        f"{prefix}ratio_of_means": float(np.mean(a) / max(np.mean(b), 1e-12)) if common else math.nan}
    return summary


# ------------------------------------------------------------------------- merging runs into one table

def merge(files: list[Path]) -> tuple[dict, dict, list]:
    """Cold results per split ``{split: {model: {"chosen", "seeds": [...]}}}`` (a file without ``split`` is
    the item split), warm ``{model: [...]}`` and the LightGCN timing references, pooled over ``files``."""
    cold: dict[str, dict[str, dict]] = {}
    warm: dict[str, list] = {}
    references = []
    for file in files:
        report = json.loads(file.read_text())
        split = report.get("split", "items")
        for name, r in report["results"].items():
            if not r["seeds"]:
                continue
            entry = cold.setdefault(split, {}).setdefault(name, {"chosen": r["chosen"], "seeds": []})
            if r["seeds"] and r["chosen"] != entry["chosen"]:
                raise ValueError(f"{file}: {name} was run with {r['chosen']}, other files with {entry['chosen']}")
            for run in r["seeds"]:
                if any(s["seed"] == run["seed"] for s in entry["seeds"]):
                    raise ValueError(f"{file}: {name} seed {run['seed']} ({split} split) appears in two files")
                entry["seeds"].append(run)
        if report.get("lightgcn_reference"):
            references.append(report["lightgcn_reference"])
        for name, runs in report.get("warm_hm5core", {}).items():
            for run in runs:
                if any(w["seed"] == run["seed"] for w in warm.get(name, [])):
                    raise ValueError(f"{file}: warm {name} seed {run['seed']} appears in two files")
                warm.setdefault(name, []).append(run)
    return cold, warm, references


def merge_report(files: list[Path], png: Path) -> None:
    """Merge runs (e.g. one file per model and seed, run in parallel) into the README tables: cold, hybrid
    and warm hm5core numbers pooled per model (a (model, seed) pair found twice is an error), the main
    model against the best baseline per seed, and the warm-up curves (PNG)."""
    cold_by_split, warm, references = merge(files)
    for split in sorted(cold_by_split, key=lambda k: (k not in SPLITS, SPLITS.index(k) if k in SPLITS else 0, k)):
        print(f"\n### {split} split\n")
        report_split(cold_by_split[split], warm, references, png.with_name(f"{png.stem}_{split}{png.suffix}")
                     if split != "items" else png)


def report_split(cold: dict, warm: dict, references: list, png: Path) -> None:
    """One split's table (cold, hybrid, warm hm5core per model), per-seed cold test Recall@20, the main
    model against the best baseline / heuristic / learned baseline, and the warm-up curves."""
    order = sorted(set(cold) | set(warm), key=lambda n: (n.startswith(MAIN), n not in HEURISTICS, n))
    targets = any("test_warm" in s for r in cold.values() for s in r["seeds"])
    extra = " warm targets R@20 | hybrid R@20, cold offset from valid |" if targets else ""
    print("| model | seeds | cold R@20 | cold N@20 | hybrid R@20 |" + extra + " warm hm5core R@20 (seeds) | s/epoch "
          "| eval users/s | cold R@20 per seed | chosen on valid |")
    print("|---|---|---|---|---|---|---|---|---|---|" + "---|" * (2 if targets else 0))
    for name in order:
        runs = sorted(cold.get(name, {}).get("seeds", []), key=lambda s: s["seed"])
        cells = [",".join(str(s["seed"]) for s in runs) or "–"]
        cells += [fmt([s[key][m] for s in runs]) for key, m in
                  (("test_cold", "recall@20"), ("test_cold", "ndcg@20"), ("test_hybrid", "recall@20"))]
        if any("test_warm" in s for s in runs):
            cells += [fmt([s[key]["recall@20"] for s in runs if key in s])
                      for key in ("test_warm", "test_hybrid_calibrated")]
        w = warm.get(name, [])
        cells.append(f"{fmt([x['test']['recall@20'] for x in w])} ({len(w)})" if w else "–")
        spe = [s["seconds_per_epoch"] for s in runs if s.get("seconds_per_epoch")]
        cells.append(f"{np.mean(spe):.1f}" if spe else "–")
        ups = [s["test_hybrid"]["users_per_s"] for s in runs]
        cells.append(f"{np.mean(ups):.0f}" if ups else "–")
        cells.append(" / ".join(f"{s['test_cold']['recall@20']:.4f}" for s in runs) or "–")
        cells.append(str(cold.get(name, {}).get("chosen") or "–"))
        print(f"| {name} | " + " | ".join(cells) + " |")
    if references:
        spe = np.mean([r["seconds_per_epoch"] for r in references])
        ups = np.mean([r["hybrid_users_per_s"] for r in references])
        print(f"| lightgcn (timing reference, {len(references)} runs) | | | | | | {spe:.1f} | {ups:.0f} | | |")
    summary = summarise({n: r for n, r in cold.items() if r["seeds"]}, [])
    for label, prefix in (("baseline", ""), ("heuristic", "heuristic_"), ("learned baseline", "learned_")):
        if summary.get(f"{prefix}wins") is not None:
            print(f"\n{MAIN} vs best {label} {summary['best_' + (prefix.rstrip('_') or 'baseline')]}: cold R@20 "
                  f"ratio of means {summary[prefix + 'ratio_of_means']:.3f}, better on {summary[prefix + 'wins']}/"
                  f"{summary[prefix + 'of']} seeds (per seed {[round(v, 4) for v in summary[prefix + 'main_per_seed']]}"
                  f" vs {[round(v, 4) for v in summary[prefix + 'best_baseline_per_seed']]})")
    curves = {}
    for name in order:
        ups = [s["warmup"]["recall@20"] for s in cold.get(name, {}).get("seeds", []) if s.get("warmup", {}).get("recall@20")]
        if ups:
            curves[name] = [float(np.mean([u[str(n)] if str(n) in u else u[n] for u in ups])) for n in WARMUP_STEPS]
    if curves:
        print("\nwarm-up: Recall@20 of cold test items after n revealed purchases (mean over seeds)")
        print("| model | " + " | ".join(f"n={n}" for n in WARMUP_STEPS) + " |")
        print("|---|" + "---|" * len(WARMUP_STEPS))
        for name, values in curves.items():
            print(f"| {name} | " + " | ".join("–" if math.isnan(v) else f"{v:.4f}" for v in values) + " |")
        write_curve_png(curves, png)
        print(f"curve: {png}")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hm", default="../shared/data/hm", help="H&M folder (Kaggle layout)")
    parser.add_argument("--hm5core", default=None, help="MMRec-format warm split (default: HM/mmrec/hm5core)")
    parser.add_argument("--content", default=None, help=".safetensors of {'vectors': [n, D]} + sibling .json ids")
    parser.add_argument("--cache", default="out/cache/minilm", help="embedding cache for the MiniLM vectors")
    parser.add_argument("--models", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--split", choices=SPLITS, default="items",
                        help="cold protocol: withheld items, or withheld products (every colour variant)")
    parser.add_argument("--warm-targets", type=float, default=0.0, metavar="FRACTION",
                        help="also hold out this share of the warm pairs into valid and into test (hybrid with "
                             "warm targets; the cold offset is then chosen on valid hybrid Recall@20)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    # The cold-split schedule defaults to `mmrec train coldstart`'s, so the command trains what the tables report.
    parser.add_argument("--epochs", type=int, default=COLDSTART_TRAIN["epochs"])
    parser.add_argument("--eval-every", type=int, default=COLDSTART_TRAIN["eval_every"])
    parser.add_argument("--patience", type=int, default=COLDSTART_TRAIN["patience"],
                        help="validations without improvement before stopping")
    parser.add_argument("--lr", type=float, default=COLDSTART_TRAIN["lr"])
    parser.add_argument("--batch-size", type=int, default=COLDSTART_TRAIN["batch_size"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared box)")
    parser.add_argument("--no-warm", action="store_true", help="skip hm5core")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold split (hm5core only)")
    parser.add_argument("--warm-epochs", type=int, default=WARM_TRAIN["epochs"], help="hm5core: at most this many epochs")
    parser.add_argument("--warm-eval-every", type=int, default=WARM_TRAIN["eval_every"])
    parser.add_argument("--warm-patience", type=int, default=WARM_TRAIN["patience"])
    parser.add_argument("--warm-batch-size", type=int, default=WARM_TRAIN["batch_size"])
    parser.add_argument("--no-curve", action="store_true", help="skip the warm-up curve")
    parser.add_argument("--lightgcn-epochs", type=int, default=3,
                        help="epochs timed for the LightGCN reference (0: no reference)")
    parser.add_argument("--chosen", default=None, help="a previous run's JSON: reuse its chosen configs, no grid")
    parser.add_argument("--out", default="out/coldstart_hm.json")
    parser.add_argument("--report", nargs="+", type=Path, metavar="JSON",
                        help="merge these runs' JSON files into the README tables instead of running")
    parser.add_argument("--png", type=Path, default=Path("out/coldstart_warmup.png"), help="with --report: curves")
    args = parser.parse_args()
    if args.report:
        merge_report(args.report, args.png)
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    names = [n for n in args.models if VARIANTS[n][0] in MODELS]
    skipped = [n for n in args.models if n not in names]
    if skipped:
        print(f"not registered, skipped: {skipped}", flush=True)

    catalog, interactions = hm.load(args.hm, images=False)
    pairs = interactions.unique_pairs()
    content = load_content(args.content, catalog, args.cache)
    print(f"H&M: {pairs.n_users} users, {pairs.n_items} items, {len(pairs)} pairs; content {content.shape}", flush=True)
    splits = {seed: make_split(pairs, catalog, args.split, seed, args.warm_targets) for seed in args.seeds}
    print(f"{args.split} split (seed {args.seeds[0]}): {len(splits[args.seeds[0]].cold_valid_items)} cold valid and "
          f"{len(splits[args.seeds[0]].cold_test_items)} cold test items", flush=True)

    previous = json.loads(Path(args.chosen).read_text())["results"] if args.chosen else {}
    results: dict[str, dict] = {}
    for name in names:
        grid = [previous[name]["chosen"]] if name in previous else grid_points(VARIANTS[name][2])
        if args.no_cold:
            chosen, searched = (grid or [{}])[0], []
        else:
            chosen, searched = search_grid(name, splits[args.seeds[0]], content, args.seeds[0], args, grid)
        runs = []
        for seed in [] if args.no_cold else args.seeds:
            runs.append(run_seed(name, chosen, splits[seed], content, seed, args))
            r = runs[-1]
            print(f"{name} seed {seed}: cold test R@20 {r['test_cold']['recall@20']:.4f} N@20 "
                  f"{r['test_cold']['ndcg@20']:.4f}, hybrid R@20 {r['test_hybrid']['recall@20']:.4f}, "
                  f"warm-up {r.get('warmup', {}).get('recall@20')}", flush=True)
            if "test_warm" in r:
                print(f"{name} seed {seed}: warm test R@20 {r['test_warm']['recall@20']:.4f}, hybrid R@20 "
                      f"{r['test_hybrid']['recall@20']:.4f} -> {r['test_hybrid_calibrated']['recall@20']:.4f} with "
                      f"cold offset {r['cold_offset']:.4g} (valid hybrid chosen)", flush=True)
        results[name] = {"chosen": chosen, "grid": searched, "seeds": runs}

    warm = {}
    if not args.no_warm:
        data = mmrec_format.load(args.hm5core or Path(args.hm) / "mmrec" / "hm5core")
        split5 = mmrec_format.to_split(data)
        content5 = content[catalog.index_of(split5.train.item_ids)]
        for name in names:
            warm[name] = [run_warm(name, results[name]["chosen"], split5, content5, seed, args) for seed in args.seeds]
            print(f"{name} hm5core test R@20 {fmt([w['test']['recall@20'] for w in warm[name]])}", flush=True)

    # LightGCN on the same cold split, for time per epoch and evaluation users/s (part 7).
    reference = None
    if args.lightgcn_epochs > 0:
        split0 = splits[args.seeds[0]]
        set_seed(args.seeds[0])
        lightgcn = create_model("lightgcn", split0.train.n_users, split0.train.n_items, {"reg_weight": 1e-2})
        history = lightgcn.fit(split0.train, train_config=TrainConfig(
            epochs=args.lightgcn_epochs, batch_size=args.batch_size, lr=args.lr, progress=False)).history
        lightgcn.eval()
        reference = {"seconds_per_epoch": float(np.mean([h["seconds"] for h in history])),
                     "hybrid_users_per_s": timed_eval(lightgcn, split0, "test", "all")["users_per_s"]}

    summary = summarise(results, args.seeds)
    report = {"protocol": __doc__, "split": args.split + (f"+warm{args.warm_targets:g}" if args.warm_targets else ""), "args": vars(args), "content_shape": list(content.shape),
              "results": results,
              "warm_hm5core": warm, "lightgcn_reference": reference, "summary": summary}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2, default=_json_default))

    print(f"\n{args.split} split, seeds {args.seeds}; cold = rank cold items only; hybrid = all items; "
          f"warm = hm5core test\n")
    print("| model | cold R@20 | cold N@20 | hybrid R@20 | hybrid N@20 | warm R@20 | warm N@20 | s/epoch (× LightGCN) "
          "| eval users/s (× LightGCN) | chosen on valid |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        cells = [fmt([s[key][m] for s in r["seeds"]]) for key in ("test_cold", "test_hybrid") for m in ("recall@20", "ndcg@20")]
        cells += [fmt([w["test"][m] for w in warm.get(name, [])]) for m in ("recall@20", "ndcg@20")]
        spe = [s["seconds_per_epoch"] for s in r["seeds"] if s.get("seconds_per_epoch")]
        ups = np.mean([s["test_hybrid"]["users_per_s"] for s in r["seeds"]]) if r["seeds"] else math.nan
        ref_spe = f" ({np.mean(spe) / reference['seconds_per_epoch']:.2f}×)" if reference and spe else ""
        cells.append(f"{np.mean(spe):.2f}{ref_spe}" if spe else "–")
        cells.append(f"{ups:.0f}" + (f" ({ups / reference['hybrid_users_per_s']:.2f}×)" if reference else ""))
        print(f"| {name} | " + " | ".join(cells) + f" | {r['chosen'] or '–'} |")
    if reference:
        print(f"| lightgcn (reference) | | | | | | | {reference['seconds_per_epoch']:.2f} | "
              f"{reference['hybrid_users_per_s']:.0f} | reg 1e-2, {args.lightgcn_epochs} epochs |")

    curves = {}
    for name, r in results.items():
        ups = [s["warmup"]["recall@20"] for s in r["seeds"] if s.get("warmup", {}).get("recall@20")]
        if ups:
            curves[name] = [float(np.mean([u[n] for u in ups])) for n in WARMUP_STEPS]
    if curves:
        print("\nwarm-up: Recall@20 of cold test items after n revealed purchases "
              f"({results[next(iter(curves))]['seeds'][0]['warmup']['items']} items with > 10 buyers, seed {args.seeds[0]})")
        print("| model | " + " | ".join(f"n={n}" for n in WARMUP_STEPS) + " |")
        print("|---|" + "---|" * len(WARMUP_STEPS))
        for name, values in curves.items():
            print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
        png = out.with_suffix(".warmup.png")
        write_curve_png(curves, png)
        print(f"curve: {png}")
    if summary.get("wins") is not None:
        print(f"\n{MAIN} vs best baseline {summary['best_baseline']}: cold R@20 ratio of means "
              f"{summary['ratio_of_means']:.3f}, better on {summary['wins']}/{summary['of']} seeds")
    elif summary.get("best_baseline"):
        print(f"\nbest baseline on cold test R@20: {summary['best_baseline']} ({MAIN} not run)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
