"""The browser renderer (issue 18 part 1) against app_sim on one session: render speed, file sizes and, with a
grounding space, how grounding trained on app_sim's screens does on the browser's (cross-renderer).

    nice -n 10 .venv/bin/python benchmarks/browser_pages.py --out out/browser_pages [--space DIR] \\
        [--items 30] [--seed 0] [--sessions 1] [--size 180x320 --size 360x640]

With ``--hm PATH``, real H&M purchase sequences and a catalog of ``--items`` of its articles with photos
(`app_sim.catalog_for_sequences`; the ids are in the report for benchmarks/cross_renderer.py). Otherwise
the world and the session are the screen-stream demo's (`demos/screen_stream.py`: the synthetic world with
``--items`` items, 400 users, the second of two purchase sequences drawn with ``--seed``, rendered with
seed 2000 (``--render-seed``; ``--sessions`` adds others drawn with ``--seed`` + 1, seeds 2001, ...) and
app_sim's default noise: touch marks, notifications, JPEG, x264), so ``--space`` can be the
demo's ``OUT/space``. For each ``--size`` the session is recorded by `app_sim.record_sequence` and by
`browser_pages.record_sequence` (same timeline), each timed: frames per second of wall time, MiB written.
With ``--space``, each recording at the first size is processed by `mmrec.stream.segments` and scored as
benchmarks/stream_targets.py scores it (`measure`, `summarize`: per-frame precision and recall of the item
on screen, product pages found; `page_ranks`: thresholds aside, the share of product pages whose frame three
quarters in has the true item nearest, or among the 5 nearest). Prints one JSON report and writes ``OUT/report.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_targets import measure, page_ranks, summarize  # noqa: E402  (the same scoring)

from mmrec.config import from_dict  # noqa: E402
from mmrec.datasets import app_sim, browser_pages  # noqa: E402
from mmrec.datasets.synthetic import WorldConfig, make_world  # noqa: E402
from mmrec.io import atomic_write_text  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--size: expected WIDTHxHEIGHT, got {text!r}") from err
    return w, h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/browser_pages")
    parser.add_argument("--space", help="a saved grounding space for the catalog (e.g. the demo's OUT/space)")
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sessions", type=int, default=1, help="sessions recorded (the demo's first, then more)")
    parser.add_argument("--render-seed", type=int, default=2000, help="session k is drawn (its app's look, "
                        "timings, noise) with this seed + k: give another base for recordings whose looks "
                        "no earlier set shares")
    parser.add_argument("--size", type=_size, action="append", help="WIDTHxHEIGHT (repeatable; default 180x320)")
    parser.add_argument("--hm", help="an H&M folder (Kaggle layout): --sessions real purchase sequences and a "
                                     "catalog of --items articles with photos (theirs first) instead of the "
                                     "synthetic world")
    args = parser.parse_args()
    sizes = args.size or [(180, 320)]
    out = Path(args.out)
    if args.hm:
        from mmrec.datasets import hm

        catalog, sequences, _ = app_sim.catalog_for_sequences(*hm.load(args.hm), args.sessions, args.items,
                                                              seed=args.seed, min_len=3)
    else:
        world = make_world(from_dict(WorldConfig, {"seed": args.seed, "n_users": 400, "n_items": args.items,
                                                  "n_new_items": 0, "new_interactions_per_user": [0, 0],
                                                  "missing_image_fraction": 0.0, "missing_text_fraction": 0.0}),
                           out / "world")
        catalog = world.catalog
        # the demo's session (the second of two drawn with --seed; the first is its calibration), then others
        sequences = app_sim.sessions_from_purchases(world.interactions, 2, min_len=3, seed=args.seed, max_len=4)[1:]
        if args.sessions > 1:
            sequences += app_sim.sessions_from_purchases(world.interactions, args.sessions - 1, min_len=3,
                                                         seed=args.seed + 1, max_len=4)
    report: dict = {"items": args.items, "seed": args.seed, "render_seed": args.render_seed, "hm": args.hm,
                    "renders": [],
                    "catalog_ids": [str(i) for i in catalog.ids],
                    "sequences": [[str(catalog.ids[i]) for i in s.items] for s in sequences]}
    sessions: dict = {}
    runs = [(k, sequence, size, name, module) for k, sequence in enumerate(sequences) for size in sizes
            for name, module in (("app_sim", app_sim), ("browser", browser_pages))]
    for k, sequence, size, name, module in runs:
        folder = out / f"{name}_{size[0]}x{size[1]}_{k}"
        start = time.perf_counter()
        session, video = module.record_sequence(catalog, sequence, folder, seed=args.render_seed + k, size=size,
                                                 fps=30)
        seconds = time.perf_counter() - start
        sessions.setdefault((name, size), []).append((session, video))
        report["renders"].append({
            "renderer": name, "size": f"{size[0]}x{size[1]}", "session": k, "frames": session.n_frames,
            "duration_s": round(session.duration, 2), "wall_s": round(seconds, 2),
            "frames_per_s": round(session.n_frames / seconds, 1),
            "video_mib": round(video.stat().st_size / 2**20, 3),
            "truth_kib": round((folder / "truth.json").stat().st_size / 2**10, 1)})
        print(json.dumps(report["renders"][-1]), flush=True)
    if args.space:
        from mmrec.grounding import load_grounder
        from mmrec.stream import StreamConfig

        grounder = load_grounder(args.space, catalog)
        report["grounding"] = {}
        for name in ("app_sim", "browser"):
            rows = []
            for session, video in sessions[(name, sizes[0])]:
                rows.append(measure(grounder, session, video, StreamConfig()))
                rows[-1]["page_ranks"], rows[-1]["page_named"] = page_ranks(grounder, session, video)
            row = summarize(rows)
            report["grounding"][name] = {k: row[k] for k in (
                "frame_precision", "frame_recall", "segment_precision", "segment_recall", "page_nearest_right",
                "page_in_top5", "page_named_right", "pages", "said", "shown", "right")}
            print(name, json.dumps(report["grounding"][name]), flush=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
