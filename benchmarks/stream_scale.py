"""Grounding screen recordings over the whole H&M catalogue: a scale curve (issue 18, part 3).

    nice -n 10 .venv/bin/python benchmarks/stream_scale.py --out out/stream_scale --runs 1000 --train-only
    nice -n 10 .venv/bin/python benchmarks/stream_scale.py --out out/stream_scale --reuse-space \
        --runs 1000 5000:1000 22246:1000 [--check-candidates 300] [--report NAME.json]

Each run is ``GROUND[:TRAIN]``: screens are grounded over ``GROUND`` H&M articles with photos (0 or more than
there are: every one) by a space trained on ``TRAIN`` of them (default the same). The sub-catalogues are
`catalog_for_sequences` draws with one seed and one number of purchase sequences, so the sequences' articles
come first in every one and the others are a prefix of one seeded permutation: smaller catalogues are
nested in larger ones, and the recordings are the same for every run.

1. A space per training size, the CPU recipe the demo trains (`windowed_recipe`): windows fitted to the training
   pages at the photos' aspect (`ScreenWindows.fit`), a fixed random tower with adapters trained on those
   windows (`train_screen_space`, ``train_towers=False``: 4 windows around the photo and 2 off it per page,
   ``--renderings`` pages per article, ``--negative-screens`` item-less screens, overlays 0.3, JPEG on half the
   pages, ``--epochs``), and a `PhotoCheck` over the tower's 10 nearest. Trained once per size in a child
   process (seconds, peak RSS) and saved to ``OUT/space_TRAIN`` with its windows and check
   (``grounding.json``); ``--reuse-space`` loads it instead.
2. Recordings (`stream_targets.record`), drawn once with the smallest catalogue of all runs: ``--sessions``
   calibration recordings (noise ``calib``) and the other sessions' test recordings (``arrow`` and ``clean``).
   Their product pages name articles by id, so every larger catalogue grounds the very same videos.
3. Per run, in a child process: the `Grounder` over the grounding catalogue, the threshold calibrated on the
   calibration recordings (`calibrate_grounder`), the stream targets measured on the test recordings
   (`stream_targets.measure`, `page_ranks`, `summarize`; per-frame precision / recall, pages found, dwell
   error), and the cost per screen of the screens the processor grounded there, by stage
   (`Grounder.stage_seconds`: area tables, the tower over the windows, the search over every item's vector,
   the photo check) and whole (`Grounder.similarities`), best of ``--timing-repeats`` passes on 1 torch thread
   (as `mmrec stream` grounds), interleaved with the same grounder searching only 1,000 articles; the misses
   (each test product page, on its frame three quarters in, not named right above the threshold: the article,
   the tower's rank of it, what was named instead, both titles, how alike the two photos are); peak RSS.
   ``--check-candidates`` / ``--check-refine`` change the saved `PhotoCheck`'s ``candidates`` / ``refine``.

Prints the report and writes it to ``OUT/report.json`` (``--report``; atomically). Timings depend on the machine's load: the
1-minute load average is recorded at the start and end of every child.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

log = logging.getLogger("stream_scale")


def load_average() -> float:
    """The 1-minute load average (other jobs share this machine's cores)."""
    return os.getloadavg()[0]


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sub_catalog(args: argparse.Namespace, size: int):
    """``size`` H&M articles with photos (0: all), those of ``2 * --sessions`` purchase sequences first, and the
    sequences (calibration, test) in its codes; nested for one seed (see the module doc)."""
    from mmrec.datasets import hm
    from mmrec.datasets.app_sim import catalog_for_sequences

    catalog, interactions = hm.load(args.hm)
    with_photo = sum(p is not None for p in catalog.image_paths)
    size = with_photo if size <= 0 or size > with_photo else size
    sub, sequences, _ = catalog_for_sequences(catalog, interactions, 2 * args.sessions, size, seed=args.seed)
    return sub, sequences[:args.sessions], sequences[args.sessions:]


def recipe(catalog, args: argparse.Namespace):
    """The demo's CPU recipe for ``catalog`` (`mmrec.fusion.screen_tower.windowed_recipe`): (`ScreenSpaceConfig`,
    `PhotoCheck`)."""
    from mmrec.fusion.screen_tower import windowed_recipe

    return windowed_recipe(catalog, seed=args.seed, renderings=args.renderings, epochs=args.epochs,
                           negative_screens=args.negative_screens)


def train_child(args: argparse.Namespace) -> dict:
    """Train the space for ``--child-train`` articles; save it with its windows and check; seconds, peak RSS."""
    from mmrec.fusion.screen_tower import train_screen_space
    from mmrec.grounding import GroundingSettings, save_grounding

    load_start, start = load_average(), time.perf_counter()
    catalog, _, _ = sub_catalog(args, args.child_train)
    config, check = recipe(catalog, args)
    prepared = time.perf_counter() - start
    space = train_screen_space(catalog, config)
    seconds = time.perf_counter() - start
    folder = space_dir(args, args.child_train)
    space.save_pretrained(folder)
    # the threshold is calibrated per grounding catalogue; 0.5 until then
    save_grounding(folder, GroundingSettings(0.5, config.windows, check), recipe=dataclasses.asdict(config))
    return {"articles": len(catalog), "train_seconds": round(seconds, 1), "recipe_seconds": round(prepared, 1),
            "peak_rss_mib": round(peak_rss_mib()), "load_start": load_start, "load_end": load_average(),
            "windows_per_screen": config.windows.count(*config.page_size)}


def space_dir(args: argparse.Namespace, train: int) -> Path:
    return Path(args.out) / f"space_{train}"


def recordings(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """The calibration and test recording folders (`record_child` writes them)."""
    folder = Path(args.out) / "recordings"
    calib = [folder / f"calib{k}" for k in range(args.sessions)]
    test = [folder / f"test_{noise}{k}" for noise in ("arrow", "clean") for k in range(args.sessions)]
    return calib, test


def record_child(args: argparse.Namespace) -> dict:
    """Record the calibration and test sessions with the ``--child-record`` catalogue, as stream_targets does
    (seeds 1000 + k for calibration, 2000 + k for tests); recordings already there are kept (deterministic)."""
    from stream_targets import record

    catalog, calib_seqs, test_seqs = sub_catalog(args, args.child_record)
    calib, test = recordings(args)
    start = time.perf_counter()
    jobs = [(s, 1000 + k, "calib", calib[k]) for k, s in enumerate(calib_seqs)]
    jobs += [(s, 2000 + k, noise, folder) for (noise, k), folder in
             zip([(n, k) for n in ("arrow", "clean") for k in range(len(test_seqs))], test)
             for s in [test_seqs[k]]]
    for sequence, seed, noise, folder in jobs:
        if not (folder / "truth.json").is_file():
            record(catalog, sequence, seed, noise, folder)
    return {"catalog_articles": len(catalog), "calibration": [str(p) for p in calib], "test": [str(p) for p in test],
            "seconds": round(time.perf_counter() - start, 1)}


def in_catalog(truth_path: Path, item_ids) -> tuple:
    """A recording's `Session` with its product pages' items as codes of the catalogue ``item_ids`` (looked up
    by the article ids its truth.json names), and its video."""
    from mmrec.datasets.app_sim import load_truth

    session, data = load_truth(truth_path)
    index = {str(i): k for k, i in enumerate(item_ids)}
    states = [dataclasses.replace(state, item=index[str(written["item_id"])]) if state.kind == "product" else state
              for state, written in zip(session.states, data["states"])]
    return dataclasses.replace(session, states=states), truth_path.parent / str(data.get("video") or "recording.mp4")


def page_diagnostics(grounder, catalog, session, video: Path) -> list[dict]:
    """Per product page, on its frame three quarters in (as `stream_targets.page_ranks` picks it): the article,
    the tower's rank of it among all articles, what the grounder names there and with what score, and how
    alike the two photos are (correlation of the check's thumbnails; 1: the same picture)."""
    import torch
    from PIL import Image

    from mmrec.datasets.frames import video_frames

    wanted = {}
    for state in session.states:
        if state.kind == "product":
            frames = session.frame_range(state)
            wanted[frames[len(frames) * 3 // 4]] = int(state.item)
    shown = [(Image.fromarray(f.image.copy()), wanted[f.index]) for f in video_frames(video) if f.index in wanted]
    if not shown:
        return []
    images, items = [s for s, _ in shown], np.array([i for _, i in shown])
    sims = grounder.item_similarities(images)
    ranks = (sims > sims[torch.arange(len(items)), torch.as_tensor(items)][:, None]).sum(1).cpu().numpy()
    named, score = grounder.similarities(images)
    rows = []
    for item, rank, code, value in zip(items, ranks, named, score):
        alike = None
        if grounder.thumbnails is not None:
            a, b = (grounder.thumbnails[int(c)].flatten() for c in (item, code))
            a, b = a - a.mean(), b - b.mean()
            alike = float(a @ b / max(1e-9, float(a.norm() * b.norm())))
        rows.append({"article": str(catalog.ids[item]), "title": catalog.titles[item], "tower_rank": int(rank),
                     "named": str(catalog.ids[code]), "named_title": catalog.titles[code], "score": float(value),
                     "grounded": bool(value >= grounder.threshold), "right": bool(code == item),
                     "photos_alike": alike})
    return rows


def time_screens(grounder, batches: list[list], repeats: int, baseline: int) -> dict:
    """Milliseconds per screen, by stage (`Grounder.stage_seconds`) and whole, of grounding ``batches`` (the
    screens the processor grounded, as it batched them): the best of ``repeats`` passes, interleaved with the
    same grounder searching only its first ``baseline`` articles (same screens, same process, same load)."""
    import copy

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `mmrec stream` grounds (--torch-threads 1): 2 threads on 2 shared cores contend
    small = copy.copy(grounder)
    small.item_vectors = grounder.item_vectors[:baseline]
    if grounder.thumbnails is not None:
        small.thumbnails = grounder.thumbnails[:baseline]
    screens = sum(len(b) for b in batches)
    best: dict[str, dict[str, float]] = {"all": {}, "baseline": {}}
    for _ in range(repeats):
        for key, g in (("all", grounder), ("baseline", small)):
            g.stage_seconds = {}
            start = time.perf_counter()
            for batch in batches:
                g.similarities(batch)
            times = {**g.stage_seconds, "total": time.perf_counter() - start}
            g.stage_seconds = None
            for stage, seconds in times.items():
                best[key][stage] = min(best[key].get(stage, np.inf), seconds)
    torch.set_num_threads(threads)
    return {"screens": screens, "baseline_articles": baseline, "torch_threads": 1,
            **{key: {stage: round(1000 * s / max(1, screens), 3) for stage, s in stages.items()}
               for key, stages in best.items()}}


def ground_child(args: argparse.Namespace) -> dict:
    """Ground the recordings over ``--child-ground`` articles with the space trained on ``--child-space``."""
    import torch

    from stream_targets import measure, page_ranks, summarize

    from mmrec.calibration import calibrate_grounder
    from mmrec.grounding import Grounder, load_grounding
    from mmrec.space import UnifiedSpace
    from mmrec.stream import StreamConfig

    load_start = load_average()
    catalog, _, _ = sub_catalog(args, args.child_ground)
    folder = space_dir(args, args.child_space)
    settings = load_grounding(folder)
    if args.check_candidates:
        settings.check = dataclasses.replace(settings.check, candidates=args.check_candidates)
    if args.check_refine is not None:
        settings.check = dataclasses.replace(settings.check, refine=args.check_refine)
    start = time.perf_counter()
    space = UnifiedSpace.from_pretrained(folder, device="cpu")
    grounder = Grounder.for_catalog(space, catalog, windows=settings.windows, check=settings.check)
    setup = time.perf_counter() - start
    calib, test = recordings(args)
    config = StreamConfig()
    start = time.perf_counter()
    grounder.threshold, fit = calibrate_grounder(grounder, calib, catalog.ids, config)
    calibrate = time.perf_counter() - start
    rows, batches, pages = [], [], []
    similarities = grounder.similarities

    def capture(screens):  # the screens the processor grounds, as it batches them
        batches.append([np.array(s, copy=True) for s in screens])
        return similarities(screens)

    start = time.perf_counter()
    for recording in test:
        session, video = in_catalog(recording / "truth.json", catalog.ids)
        grounder.similarities = capture
        row = measure(grounder, session, video, config)
        grounder.similarities = similarities
        row["page_ranks"], row["page_named"] = page_ranks(grounder, session, video)
        rows.append(row)
        pages += [{"recording": recording.name, **p} for p in page_diagnostics(grounder, catalog, session, video)]
    measured = time.perf_counter() - start
    del grounder.similarities
    summary = {noise: summarize([r for r, f in zip(rows, test) if noise in f.name or noise == "all"])
               for noise in ("arrow", "clean", "all")}
    timing = time_screens(grounder, batches, args.timing_repeats, min(1000, len(catalog)))
    overall = summary["all"]
    return {"articles": len(catalog), "trained_on": args.child_space, "check_candidates": settings.check.candidates,
            "check_refine": settings.check.refine,
            "threshold": grounder.threshold,
            "calibration": fit, "frame_precision": overall["frame_precision"],
            "frame_recall": overall["frame_recall"], "pages_found": f"{overall['pages_found']}/{overall['pages']}",
            "median_dwell_error_ms": overall["median_dwell_error_ms"],
            "ms_per_screen": {k: timing["all"].get(k) for k in ("screens", "tower", "search", "check", "total")},
            "timing": timing, "targets": summary, "photos_skipped": len(grounder.skipped_photos),
            "setup_seconds": round(setup, 1), "calibrate_seconds": round(calibrate, 1),
            "measure_seconds": round(measured, 1), "peak_rss_mib": round(peak_rss_mib()),
            "torch_threads": torch.get_num_threads(), "load_start": load_start, "load_end": load_average(),
            "misses": [p for p in pages if not (p["right"] and p["grounded"])]}


def run_child(argv: list[str]) -> dict:
    """Run this script with ``argv`` in a child process (its own peak RSS); its last stdout line is JSON."""
    child = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if child.returncode:
        sys.stderr.write(child.stderr[-4000:])
        raise SystemExit(f"child {argv} failed with exit status {child.returncode}")
    sys.stderr.write(child.stderr[-2000:])
    return json.loads(child.stdout.strip().splitlines()[-1])


def common_args(args: argparse.Namespace) -> list[str]:
    return ["--out", args.out, "--hm", args.hm, "--seed", str(args.seed), "--sessions", str(args.sessions),
            "--renderings", str(args.renderings), "--epochs", str(args.epochs),
            "--negative-screens", str(args.negative_screens), "--timing-repeats", str(args.timing_repeats),
            *(["--check-candidates", str(args.check_candidates)] if args.check_candidates else []),
            *(["--check-refine", str(args.check_refine)] if args.check_refine is not None else [])]


def parse_runs(values: list[str]) -> list[tuple[int, int]]:
    runs = []
    for value in values:
        ground, _, train = value.partition(":")
        try:
            runs.append((int(ground), int(train or ground)))
        except ValueError:
            raise SystemExit(f"--runs entries are GROUND or GROUND:TRAIN article counts, got {value!r}") from None
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/stream_scale")
    parser.add_argument("--hm", default="../shared/data/hm", help="the H&M data folder")
    parser.add_argument("--runs", nargs="+", default=["1000", "5000:1000", "22246:1000"],
                        help="GROUND[:TRAIN] article counts (0: every article with a photo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sessions", type=int, default=3, help="test sessions (and calibration sessions)")
    parser.add_argument("--renderings", type=int, default=6, help="product pages per article trained on")
    parser.add_argument("--epochs", type=int, default=24, help="adapter training epochs")
    parser.add_argument("--negative-screens", type=int, default=200, help="item-less screens trained on")
    parser.add_argument("--timing-repeats", type=int, default=3, help="passes over the grounded screens timed")
    parser.add_argument("--check-candidates", type=int,
                        help="the photo check compares this many of the tower's nearest (default: the space's, 10)")
    parser.add_argument("--check-refine", type=int,
                        help="the check refines only this many of its candidates, best by the coarse grid "
                             "(PhotoCheck.refine; default: the space's, every candidate)")
    parser.add_argument("--reuse-space", action="store_true", help="load OUT/space_TRAIN where it exists")
    parser.add_argument("--report", default="report.json", help="the report's file name in OUT")
    parser.add_argument("--train-only", action="store_true", help="train the spaces the runs need, then stop")
    parser.add_argument("--child-train", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-ground", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-space", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-record", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.check_candidates is not None and args.check_candidates < 1:
        parser.error(f"--check-candidates must be at least 1, got {args.check_candidates}")
    if args.check_refine is not None and args.check_refine < 0:
        parser.error(f"--check-refine must be at least 0, got {args.check_refine}")
    for name in ("sessions", "renderings", "epochs", "timing_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.child_train is not None:
        print(json.dumps(train_child(args)))
        return
    if args.child_ground is not None:
        print(json.dumps(ground_child(args), default=float))
        return
    if args.child_record is not None:
        print(json.dumps(record_child(args)))
        return
    from mmrec.io import atomic_write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = parse_runs(args.runs)
    report: dict = {"seed": args.seed, "sessions": args.sessions, "recipe": {
        "renderings": args.renderings, "epochs": args.epochs, "negative_screens": args.negative_screens},
        "torch_threads": _torch_threads(), "cpus": os.cpu_count(), "training": {}, "runs": []}
    path = out / args.report
    for train in dict.fromkeys(t for _, t in runs):
        if args.reuse_space and (space_dir(args, train) / "space.json").is_file():
            report["training"][str(train)] = "reused"
            continue
        report["training"][str(train)] = run_child([*common_args(args), "--child-train", str(train)])
        log.info("trained %s: %s", train, report["training"][str(train)])
        atomic_write_json(path, report, indent=1)
    if args.train_only:
        print(json.dumps(report, indent=1))
        return
    smallest = min(g if g > 0 else 10 ** 9 for g, _ in runs)
    marker = out / "recordings" / "catalog.json"
    if marker.is_file():  # recorded by an earlier run: every catalogue grounded must hold its articles
        report["recordings"] = json.loads(marker.read_text())
        if report["recordings"]["requested"] > smallest or report["recordings"]["seed"] != args.seed:
            raise SystemExit(f"{marker}: the recordings there were drawn with {report['recordings']['requested']} "
                             f"articles (seed {report['recordings']['seed']}), more than the {smallest} of a run "
                             f"here (or another seed); use another --out")
    else:
        report["recordings"] = {**run_child([*common_args(args), "--child-record", str(smallest)]),
                                "requested": smallest, "seed": args.seed}
        atomic_write_json(marker, report["recordings"], indent=1)
    for ground, train in runs:
        row = run_child([*common_args(args), "--child-ground", str(ground), "--child-space", str(train)])
        report["runs"].append(row)
        log.info("run %s over %s: %s", train, ground, {k: row[k] for k in ("frame_precision", "frame_recall",
                                                                          "pages_found", "ms_per_screen")})
        atomic_write_json(path, report, indent=1)
    print(json.dumps(report, indent=1))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
