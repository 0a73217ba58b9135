"""Cross-renderer grounding (issue 18 part 2): a grounder set up on one renderer's recordings, tested on the
other's, beside same-renderer results, with windows fitted to the training renderer's photos
(`ScreenWindows.fit`) and with the layout-free settings `mmrec stream calibrate --layout-free` writes
(`mmrec.grounding.layout_free_settings`: every catalog photo searched for over the whole screen, as it is
and cut to common frames, feeds told apart by a second photo).

    nice -n 10 .venv/bin/python benchmarks/cross_renderer.py --recordings out/browser_pages --space DIR \
        --out out/cross_renderer [--items 120] [--seed 0] [--calibrate 0] [--modes fitted,layout-free] \
        [--no-titles] [--cache FILE]

``--recordings`` is the output of benchmarks/browser_pages.py (folders ``app_sim_WxH_k`` and
``browser_WxH_k`` of one world, the same sessions drawn by both renderers, with the same ``--items`` and
``--seed``, or ``--hm`` with the H&M folder its catalog came from, and ``--catalog-items`` to ground against
more articles than the recordings' catalog: the scale curve); ``--space`` a saved space for that world
(e.g. the screen-stream demo's ``OUT/space``, its tower trained on app_sim's pages for both directions; the
layout-free mode does not use its screen tower). For
each training renderer, the sessions ``--calibrate`` (default 0) are its training recordings: ``fitted``
windows are the space's own for app_sim (fitted to its training pages' photos) and, for the browser,
fitted to the product-page photo boxes of its training recordings (the layouts measured in the browser),
and every mode's threshold is calibrated on those recordings only. The other sessions of both renderers are
the test recordings, scored as benchmarks/stream_targets.py scores them (per-frame precision and recall of
the item on screen, product pages found, dwell error of the views found), with the processing time per
encoded screen (layout-free: from the first training renderer's runs; the second's reuse its grounding of
each screen, which does not depend on the threshold). Layout-free grounding reads a page's title where
photos compete (``titles``; ``--no-titles``: by photo alone); ``--cache`` keeps each screen's layout-free
grounding, so a rerun that changes only the calibration grounds nothing again. Prints and writes
``OUT/report.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_targets import measure, summarize  # noqa: E402  (the same scoring)

from mmrec.calibration import calibrate_grounder  # noqa: E402
from mmrec.config import from_dict  # noqa: E402
from mmrec.datasets import app_sim  # noqa: E402
from mmrec.datasets.synthetic import WorldConfig, make_world  # noqa: E402
from mmrec.grounding import (GroundingSettings, layout_free_settings, load_grounder, load_grounding,  # noqa: E402
                             photo_aspect)
from mmrec.io import atomic_write, atomic_write_text  # noqa: E402
from mmrec.screen_windows import ScreenWindows  # noqa: E402
from mmrec.stream import StreamConfig  # noqa: E402

RENDERERS = ("app_sim", "browser")


def browser_photo_boxes(folder: Path) -> np.ndarray:
    """``[N, 4]`` screen-pixel boxes of the product pages' photos of one browser recording, from the layouts
    measured in the browser (its truth's ``renderer.layouts``)."""
    truth = json.loads((folder / "truth.json").read_text())
    boxes = [box for state, layout in zip(truth["states"], truth["renderer"]["layouts"])
             if state["kind"] == "product" for box in layout["photos"].values()]
    if not boxes:
        raise ValueError(f"{folder}: no product page in its truth")
    return np.asarray(boxes, np.float64)


def remember(grounder, cache: dict) -> None:
    """Make ``grounder.similarities`` answer a screen it has seen (by its bytes) from ``cache``: settings that do
    not depend on the training renderer (layout-free) ground a test recording the same whatever the
    threshold, so the second training renderer's runs reuse the first's instead of grounding it again."""
    compute = grounder.similarities

    def similarities(screens):
        keys = [hashlib.blake2b(np.ascontiguousarray(np.asarray(s)).tobytes(), digest_size=16).digest()
                for s in screens]
        missing = [k for k, key in enumerate(keys) if key not in cache]
        if missing:
            codes, sims = compute([screens[k] for k in missing])
            cache.update({keys[k]: (c, v) for k, c, v in zip(missing, codes, sims)})
        return (np.array([cache[key][0] for key in keys], np.int64),
                np.array([cache[key][1] for key in keys], np.float32))
    grounder.similarities = similarities


def load_cache(path: Path, fingerprint: str) -> dict:
    """The screens' layout-free grounding `save_cache` wrote, for the catalog of ``fingerprint`` only."""
    with np.load(path) as saved:
        if str(saved["fingerprint"]) != fingerprint:
            sys.exit(f"--cache {path}: written for another catalog (remove it or give another file)")
        return {k.tobytes(): (int(c), float(v)) for k, c, v in zip(saved["keys"], saved["codes"], saved["sims"])}


def save_cache(path: Path, cache: dict, fingerprint: str) -> None:
    """Write the screens' grounding (by screen hash) with the catalog's ``fingerprint``, atomically."""
    keys = list(cache)
    atomic_write(path, lambda f: np.savez(
        f, fingerprint=np.array(fingerprint), keys=np.frombuffer(b"".join(keys), np.uint8).reshape(-1, 16),
        codes=np.array([cache[k][0] for k in keys], np.int64), sims=np.array([cache[k][1] for k in keys], np.float32)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", required=True)
    parser.add_argument("--space", required=True)
    parser.add_argument("--out", default="out/cross_renderer")
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="180x320")
    parser.add_argument("--calibrate", type=int, action="append", help="training sessions (default 0)")
    parser.add_argument("--modes", default="fitted,layout-free", help="settings compared (fitted, layout-free)")
    parser.add_argument("--hm", help="the H&M folder the recordings' catalog came from (browser_pages.py --hm)")
    parser.add_argument("--no-titles", action="store_true", help="layout-free: ground by photo alone, the "
                        "screens' titles (OCR) not read")
    parser.add_argument("--cache", help="a file keeping the layout-free grounding of every screen (read if it "
                        "exists, written at the end): a rerun that changes only the threshold's calibration "
                        "grounds nothing again (its ms_per_screen is then null)")
    parser.add_argument("--catalog-items", type=int, help="with --hm: ground against this many articles with "
                        "photos, the recordings' own and others drawn with --seed (all of them: 22246 or more)")
    args = parser.parse_args()
    if args.catalog_items is not None and not args.hm:
        parser.error("--catalog-items needs --hm (the synthetic world's catalog is --items)")
    root, out = Path(args.recordings), Path(args.out)
    if args.hm:  # the catalog the recordings were drawn from, by the ids benchmarks/browser_pages.py kept
        from mmrec.datasets import hm

        full = hm.load(args.hm)[0]
        code = {str(i): k for k, i in enumerate(full.ids)}
        ids = json.loads((root / "report.json").read_text())["catalog_ids"]
        codes = np.array([code[i] for i in ids])
        if args.catalog_items is not None and args.catalog_items < len(codes):
            parser.error(f"--catalog-items {args.catalog_items}: the recordings' catalog has {len(codes)} articles")
        if args.catalog_items is not None:  # the recordings' articles among others with photos, drawn at random
            photos = np.flatnonzero([p is not None for p in full.image_paths])
            others = np.random.default_rng(args.seed).permutation(np.setdiff1d(photos, codes))
            codes = np.r_[codes, np.sort(others[:args.catalog_items - len(codes)])]
        catalog = full.subset(codes)
    else:
        catalog = make_world(from_dict(WorldConfig, {"seed": args.seed, "n_users": 400, "n_items": args.items,
                                                    "n_new_items": 0, "new_interactions_per_user": [0, 0],
                                                    "missing_image_fraction": 0.0, "missing_text_fraction": 0.0}),
                             out / "world").catalog
    train = set(args.calibrate or [0])
    folders = {name: sorted(root.glob(f"{name}_{args.size}_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
               for name in RENDERERS}
    settings = load_grounding(args.space)
    aspect = settings.windows.aspect if settings.windows is not None else 1.5
    report: dict = {"recordings": str(root), "space": args.space, "training_sessions": sorted(train),
                    "catalog_items": len(catalog), "titles": not args.no_titles, "runs": []}
    caches: dict = {}  # layout-free grounding of each screen, shared by both training renderers' runs
    ids = [str(i) for i in catalog.ids]  # the cache's catalog, and whether titles were read
    fingerprint = hashlib.blake2b(json.dumps(ids if args.no_titles else [ids, "titles"]).encode(),
                                  digest_size=16).hexdigest()
    if args.cache and Path(args.cache).exists():
        caches["layout-free"] = load_cache(Path(args.cache), fingerprint)
    for trained in RENDERERS:
        calibration = [f for f in folders[trained] if int(f.name.rsplit("_", 1)[1]) in train]
        width, height = (int(x) for x in args.size.split("x"))
        modes = {"layout-free": layout_free_settings(photo_aspect(catalog), len(catalog))}
        if args.no_titles:
            modes["layout-free"].titles = False
        if trained == "browser":
            modes["fitted"] = GroundingSettings(settings.threshold, ScreenWindows.fit(
                np.concatenate([browser_photo_boxes(f) for f in calibration]), (width, height), aspect=aspect),
                settings.check)
        elif settings.windows is not None:
            modes["fitted"] = settings  # the space's own: fitted to app_sim's training pages
        for mode, chosen in modes.items():
            if mode not in args.modes.split(","):
                continue
            grounder = load_grounder(args.space, catalog, settings=chosen)
            reused = mode == "layout-free" and mode in caches
            if mode == "layout-free":
                remember(grounder, caches.setdefault(mode, {}))
            grounder.threshold, fit = calibrate_grounder(grounder, calibration, catalog.ids)
            for tested in RENDERERS:
                rows, seconds = [], 0.0
                for folder in folders[tested]:
                    if int(folder.name.rsplit("_", 1)[1]) in train:
                        continue
                    session, _ = app_sim.load_truth(folder / "truth.json")
                    start = time.perf_counter()
                    rows.append(measure(grounder, session, folder / "recording.mp4", StreamConfig()))
                    seconds += time.perf_counter() - start
                row = summarize(rows)
                encoded = sum(r["encoded"] for r in rows)
                errors = [e for r in rows for e in r["dwell_errors_ms"]]
                result = {"trained": trained, "tested": tested, "mode": mode,
                          "windows_per_screen": chosen.windows.count(width, height),
                          "threshold": round(grounder.threshold, 4),
                          "calibration": fit, "sessions": len(rows),
                          "frame_precision": round(row["frame_precision"], 4),
                          "frame_recall": round(row["frame_recall"], 4),
                          "pages_found": int(sum(r["pages_found"] for r in rows)),
                          "pages": int(sum(r["pages"] for r in rows)),
                          "median_dwell_error_ms": round(float(np.median(errors)), 1) if errors else None,
                          "ms_per_screen": None if reused else round(1000 * seconds / max(1, encoded), 1),
                          "per_session": [{"recall": round(r["right"] / max(1, r["shown"]), 3),
                                           "precision": round(r["right"] / max(1, r["said"]), 3),
                                           "pages_found": r["pages_found"], "pages": r["pages"]} for r in rows]}
                report["runs"].append(result)
                print(json.dumps(result), flush=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    if args.cache and "layout-free" in caches:
        save_cache(Path(args.cache), caches["layout-free"], fingerprint)


if __name__ == "__main__":
    main()
