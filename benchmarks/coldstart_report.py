"""Merge runs of `coldstart_hm.py` (e.g. one file per model and seed, run in parallel) into one table.

Cold and hybrid numbers, warm hm5core numbers and warm-up curves are pooled per model over every file
given; a (model, seed) pair found twice is an error. Prints the README table, the main model's per-seed
comparison with the best baseline (by mean cold test Recall@20) and draws the warm-up curves (PNG).

    python benchmarks/coldstart_report.py out/coldstart/*.json --png out/coldstart_warmup.png
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from coldstart_hm import MAIN, WARMUP_STEPS, fmt, summarise


def merge(files: list[Path]) -> tuple[dict, dict, list]:
    """Cold results ``{model: {"chosen", "seeds": [...]}}``, warm ``{model: [...]}`` and the LightGCN timing
    references, pooled over ``files``."""
    cold: dict[str, dict] = {}
    warm: dict[str, list] = {}
    references = []
    for file in files:
        report = json.loads(file.read_text())
        for name, r in report["results"].items():
            entry = cold.setdefault(name, {"chosen": r["chosen"], "seeds": []})
            if r["seeds"] and r["chosen"] != entry["chosen"]:
                raise ValueError(f"{file}: {name} was run with {r['chosen']}, other files with {entry['chosen']}")
            for run in r["seeds"]:
                if any(s["seed"] == run["seed"] for s in entry["seeds"]):
                    raise ValueError(f"{file}: {name} seed {run['seed']} appears in two files")
                entry["seeds"].append(run)
        if report.get("lightgcn_reference"):
            references.append(report["lightgcn_reference"])
        for name, runs in report.get("warm_hm5core", {}).items():
            for run in runs:
                if any(w["seed"] == run["seed"] for w in warm.get(name, [])):
                    raise ValueError(f"{file}: warm {name} seed {run['seed']} appears in two files")
                warm.setdefault(name, []).append(run)
    return cold, warm, references


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--png", type=Path, default=Path("out/coldstart_warmup.png"))
    args = parser.parse_args()
    cold, warm, references = merge(args.files)
    order = sorted(set(cold) | set(warm), key=lambda n: (n.startswith(MAIN), n))
    print("| model | seeds | cold R@20 | cold N@20 | hybrid R@20 | warm hm5core R@20 (seeds) | s/epoch | eval users/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in order:
        runs = sorted(cold.get(name, {}).get("seeds", []), key=lambda s: s["seed"])
        cells = [",".join(str(s["seed"]) for s in runs) or "–"]
        cells += [fmt([s[key][m] for s in runs]) for key, m in
                  (("test_cold", "recall@20"), ("test_cold", "ndcg@20"), ("test_hybrid", "recall@20"))]
        w = warm.get(name, [])
        cells.append(f"{fmt([x['test']['recall@20'] for x in w])} ({len(w)})" if w else "–")
        spe = [s["seconds_per_epoch"] for s in runs if s.get("seconds_per_epoch")]
        cells.append(f"{np.mean(spe):.1f}" if spe else "–")
        ups = [s["test_hybrid"]["users_per_s"] for s in runs]
        cells.append(f"{np.mean(ups):.0f}" if ups else "–")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if references:
        spe = np.mean([r["seconds_per_epoch"] for r in references])
        ups = np.mean([r["hybrid_users_per_s"] for r in references])
        print(f"| lightgcn (timing reference, {len(references)} runs) | | | | | | {spe:.1f} | {ups:.0f} |")
    summary = summarise({n: r for n, r in cold.items() if r["seeds"]}, [])
    if summary.get("wins") is not None:
        print(f"\n{MAIN} vs best baseline {summary['best_baseline']}: cold R@20 ratio of means "
              f"{summary['ratio_of_means']:.3f}, better on {summary['wins']}/{summary['of']} seeds "
              f"(per seed {[round(v, 4) for v in summary['main_per_seed']]} vs "
              f"{[round(v, 4) for v in summary['best_baseline_per_seed']]})")
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
        write_curve_png(curves, args.png)
        print(f"curve: {args.png}")


if __name__ == "__main__":
    main()
