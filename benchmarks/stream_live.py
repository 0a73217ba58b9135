"""Live screen streams (issue 18, part 4): how soon after a page settles its ``view`` event comes out.

    nice -n 10 .venv/bin/python benchmarks/stream_live.py --out out/stream_live [--sessions 4] [--throughput]
    nice -n 10 .venv/bin/python benchmarks/stream_live.py --catalog hm --space out/stream_hm5/space ...

1. A catalog (the synthetic world's ``--items`` items, or with ``--catalog hm`` H&M articles of real purchase
   sequences, as benchmarks/stream_targets.py draws them) and a grounder: ``--space DIR`` (a saved space
   with its grounding.json), or a small one built here as the H&M spaces ground — windows fitted to the
   training pages and the photo check — with the towers left at their seeded random weights and the
   adapters trained one epoch: grounding quality is beside the point here, its cost per screen is not.
2. ``--sessions`` real purchase sequences rendered as labelled app recordings (`record_sequence`: ``--size``
   180x320 by default, 30 fps, touch marks, notification banners, JPEG noise, x264).
3. Each recording is replayed in real time into a `LiveFrames` source (`LiveFrames.replay`: frame ``i``
   put at wall time ``start + i / 30``, as a device pushes frames; a full buffer drops the oldest) and
   processed by ``mmrec.stream.process(..., live=True)`` as it comes. Labels come from ``--labels``:
   ``oracle`` (default) — the truth of each decoded frame, after the real grounder has grounded the same
   screens (its cost paid, its answer not used), so every product page makes a view and the delay is the
   processor's alone; or ``grounder`` — the grounder's own answers (views only where it finds the item).
4. Delay of a page's view: the wall time the view is yielded (not final: item and start known) minus the
   wall time the page's settled screen was put — the first frame after the page has slid in
   (``transition_seconds`` after the state starts in truth.json); ``view_delay_after_due_time`` counts from
   when the frame was due instead (a loaded machine puts some late). Reported: median, p95, max and count over
   all pages, the pages that got no view, frames dropped, how late the replay put frames; also the delay
   of the final view (with dwell) after the page ended.
5. Offline check: the same recording through ``process`` read as fast as it decodes (with the live
   ``max_wait`` and ``hold``) gives exactly the final events of the live run (none dropped).
   ``--reference-stream FILE`` (an earlier mmrec/stream.py, e.g. ``git show REV:mmrec/stream.py > old.py``)
   also compares per-frame labels and events of the default (recording) settings with that code's.
6. ``--throughput``: the benchmarks/stream_targets.py measurement (bare sequential decord against the
   processor on the same file, best of 5 interleaved, torch on 1 thread, 180x320 and 360x640 recordings with
   dwell doubled) with this grounder, and the reference code's processor in the same runs when given.

Prints one JSON report and writes it to ``OUT/report.json``. Wall-clock figures depend on the machine's load:
``uptime`` is recorded before and after.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_targets import OracleGrounder, bare_decode_seconds  # noqa: E402  (the same measurements)

from mmrec.datasets.app_sim import record_sequence  # noqa: E402
from mmrec.datasets.frames import LiveFrames, video_frames  # noqa: E402
from mmrec.grounding import Grounder, load_grounder  # noqa: E402
from mmrec.io import atomic_write_text  # noqa: E402
from mmrec.stream import LIVE_HOLD, LIVE_MAX_WAIT, StreamConfig, StreamStats, process  # noqa: E402

FPS = 30


class CostlyOracle:
    """The truth of each screen (`OracleGrounder`), answered after ``grounder`` has grounded the same screens:
    the real cost per screen, with labels that do not depend on how well the space grounds."""

    def __init__(self, oracle: OracleGrounder, grounder: Grounder) -> None:
        self.oracle, self.grounder, self.threshold = oracle, grounder, oracle.threshold
        self.screens, self.seconds = 0, 0.0

    def similarities(self, screens):
        start = time.perf_counter()
        self.grounder.similarities(screens)
        self.seconds += time.perf_counter() - start
        self.screens += len(screens)
        return self.oracle.similarities(screens)


def build_grounder(args: argparse.Namespace, catalog, out: Path) -> Grounder:
    """``--space``'s grounder, or a windowed space with a photo check built for the catalog (towers at their
    seeded random weights, adapters one epoch), with threshold -1 (its answers are the nearest item)."""
    if args.space:
        return load_grounder(args.space, catalog)
    from mmrec.fusion.screen_tower import ScreenSpaceConfig, fitted_windows, train_screen_space
    from mmrec.screen_windows import PhotoCheck

    shape = dict(seed=args.seed, renderings=2, epochs=1, screen_size=(24, 16), image_size=(24, 16), patch=4)
    windows = fitted_windows(catalog, ScreenSpaceConfig(**shape))
    space = train_screen_space(catalog, ScreenSpaceConfig(**shape, windows=windows, negative_crops=0,
                                                          negative_screens=0))
    return Grounder.for_catalog(space, catalog, threshold=-1.0, windows=windows, check=PhotoCheck())


def settled_frames(session) -> list[tuple[int, int, int]]:
    """(item, first frame, settled frame) of each product page: the settled frame is the first one drawn after
    the page has slid in (`render_frames`: a frame ``j`` frames into a state shows ``(j + 1) / fps`` of
    the slide, ``transition_seconds`` long)."""
    from mmrec.datasets.app_sim import SimConfig

    slide = SimConfig.transition_seconds
    pages = []
    for state in session.states:
        if state.kind == "product":
            frames = session.frame_range(state)
            settle = max(0, math.ceil(slide * session.fps - 1 - 1e-9))
            pages.append((int(state.item), frames.start, min(frames.start + settle, frames.stop - 1), frames.stop))
    return pages


def live_run(grounder, video: Path, config: StreamConfig, capacity: int) -> dict:
    """Replay ``video`` in real time into a `LiveFrames` and process it live; every event with the wall time it
    came out."""
    live = LiveFrames(capacity, source=f"replay {video.parent.name}")
    stats = StreamStats(source=live.stats)
    replay = live.replay(video_frames(video))
    out = []
    with live:
        for event in process(live, grounder, config, stats=stats, live=True):
            out.append((time.perf_counter(), event, live.waiting))
    replay.join()
    if replay.error is not None:
        raise replay.error
    return {"events": out, "put_times": replay.put_times, "start": replay.start_time, "stats": stats,
            "max_late": replay.max_late,
            "dropped": live.stats.skips.get("dropped", 0)}


def delays(run: dict, session) -> dict:
    """Per product page: delay of its first (not final) view after the settled frame was put, and of its final
    view after the page ended (the next state's first frame was put)."""
    put = run["put_times"]
    early = [(t, e) for t, e, _ in run["events"] if e.kind == "view" and not e.final]
    final = [(t, e) for t, e, _ in run["events"] if e.kind == "view" and e.final]
    fps = session.fps
    rows = []
    for item, first, settle, stop in settled_frames(session):
        def match(events):
            return next(((t, e) for t, e in events if e.item == item and first / fps - 0.5 <= e.timestamp < stop / fps),
                        None)

        opened, closed = match(early), match(final)
        row = {"item": item, "start": first / fps, "settled_frame": settle}
        if opened is not None and settle < len(put):
            row["delay"] = opened[0] - put[settle]
            row["delay_after_due"] = opened[0] - (run["start"] + settle / fps)  # the replay's lateness included
            row["view_start_error"] = opened[1].timestamp - first / fps
        if closed is not None and stop < len(put):
            row["close_delay"] = closed[0] - put[stop]
        rows.append(row)
    return {"pages": rows, "queue_max": max((w for _, _, w in run["events"]), default=0)}


def distribution(values: list[float]) -> dict:
    """Median, p95, max (ms) and count."""
    if not values:
        return {"count": 0}
    ms = np.array(values) * 1000
    return {"median_ms": round(float(np.median(ms)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "max_ms": round(float(ms.max()), 1), "min_ms": round(float(ms.min()), 1), "count": len(ms)}


def load_reference(path: str):
    """An earlier mmrec/stream.py, imported under its own name."""
    spec = importlib.util.spec_from_file_location("reference_stream", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference_stream"] = module
    spec.loader.exec_module(module)
    return module


def compare_reference(reference, grounder, video: Path, config_kwargs: dict, logs, item_ids) -> dict:
    """Per-frame labels and events of this code and the reference on one recording."""
    from mmrec import stream

    def run(module) -> tuple[list, list]:
        config = module.StreamConfig(**config_kwargs)
        labels = list(module.frame_labels(video_frames(video), grounder, config))
        found = module.process(video_frames(video), grounder, config, logs=logs, item_ids=item_ids)
        return labels, [e.to_row() for e in found]

    (mine, events_mine), (theirs, events_theirs) = run(stream), run(reference)
    sims = np.array([[a.similarity, b.similarity] for a, b in zip(mine, theirs)], np.float64)
    finite = np.isfinite(sims).all(1)

    def but_score(rows):
        return str([{k: v for k, v in row.items() if k != "score"} for row in rows])

    return {"frames": len(mine), "labels_identical": [tuple(a) for a in mine] == [tuple(b) for b in theirs],
            "items_and_times_equal": [(a.timestamp, a.index, a.item) for a in mine]
            == [(b.timestamp, b.index, b.item) for b in theirs],
            "max_similarity_difference": float(np.abs(sims[finite, 0] - sims[finite, 1]).max(initial=0.0)),
            "events": len(events_mine), "events_identical": str(events_mine) == str(events_theirs),
            "events_equal_but_score": but_score(events_mine) == but_score(events_theirs),
            "max_score_difference": max((abs(a["score"] - b["score"]) for a, b in zip(events_mine, events_theirs)
                                         if a["kind"] == "view"), default=0.0)}


def throughput(grounder, video: Path, reference, repeats: int = 5) -> dict:
    """stream_targets' measurement: bare decord vs the processor (`segments`) on one file, best of ``repeats``
    interleaved; the reference code's processor in the same runs when given."""
    from mmrec import stream

    def run(module) -> tuple[float, StreamStats]:
        stats = module.StreamStats()
        start = time.perf_counter()
        for _ in module.segments(video_frames(video), grounder, module.StreamConfig(), stats):
            pass
        return time.perf_counter() - start, stats

    times: dict[str, list[float]] = {"bare": [], "now": [], "reference": []}
    for _ in range(repeats):
        times["bare"].append(bare_decode_seconds(video))
        seconds, stats = run(stream)
        times["now"].append(seconds)
        if reference is not None:
            times["reference"].append(run(reference)[0])
    best = {k: min(v) for k, v in times.items() if v}
    report = {"frames": stats.frames, "unchanged_share": 1 - stats.changed / stats.frames, "encoded": stats.encoded,
              "batches": stats.batches, "bare_decord_fps": stats.frames / best["bare"],
              "processor_fps": stats.frames / best["now"], "ratio": best["bare"] / best["now"],
              "median_ratio": float(np.median(times["bare"]) / np.median(times["now"]))}
    if reference is not None:
        report["reference_ratio"] = best["bare"] / best["reference"]
        report["reference_median_ratio"] = float(np.median(times["bare"]) / np.median(times["reference"]))
    return report


def uptime() -> str:
    """The load averages (1, 5, 15 minutes)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/stream_live")
    parser.add_argument("--catalog", default="synthetic", choices=["synthetic", "hm"])
    parser.add_argument("--hm", default="../shared/data/hm", help="the H&M data folder (--catalog hm)")
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=4, help="recordings replayed live")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", help="a saved space with grounding.json (default: a small one built here)")
    parser.add_argument("--labels", default="oracle", choices=["oracle", "grounder"])
    parser.add_argument("--size", default="180x320", help="WIDTHxHEIGHT of the live recordings")
    parser.add_argument("--capacity", type=int, default=64, help="LiveFrames buffer (frames) before drops")
    parser.add_argument("--torch-threads", type=int, default=1, help="as `mmrec stream --torch-threads`")
    parser.add_argument("--reference-stream", help="an earlier mmrec/stream.py to compare offline results with")
    parser.add_argument("--throughput", action="store_true", help="also the stream_targets throughput measurement")
    args = parser.parse_args()
    import logging

    import torch

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.torch_threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    report: dict = {"load_before": uptime(), "catalog": args.catalog, "seed": args.seed, "labels": args.labels,
                    "size": args.size,
                    "torch_threads": args.torch_threads, "fps": FPS}
    from stream_targets import _catalog

    catalog, _, sequences = _catalog(argparse.Namespace(**{**vars(args), "sessions": args.sessions}), out)
    grounder = build_grounder(args, catalog, out)
    config = StreamConfig(max_wait=LIVE_MAX_WAIT, hold=LIVE_HOLD)  # what process(live=True) uses; offline, the same
    report["config"] = {"max_wait": config.max_wait, "hold": config.hold, "hold_change": config.hold_change,
                        "batch_size": config.batch_size, "min_frames": config.min_frames, "capacity": args.capacity}
    reference = load_reference(args.reference_stream) if args.reference_stream else None
    pages, offline_equal, per_recording, costs = [], [], [], []
    for k, sequence in enumerate(sequences):
        session, video = record_sequence(catalog, sequence, out / f"live{k}_{args.size}", seed=3000 + k, fps=FPS,
                                         size=size)
        labels = grounder
        if args.labels == "oracle":
            labels = CostlyOracle(OracleGrounder(session, video), grounder)
        run = live_run(labels, video, config, args.capacity)
        found = delays(run, session)
        pages += found["pages"]
        if isinstance(labels, CostlyOracle) and labels.screens:
            costs.append(labels.seconds / labels.screens)
        offline = [e.to_row() for e in process(video_frames(video), labels, config)]
        live_final = [e.to_row() for _, e, _ in run["events"] if e.final]
        offline_equal.append(str(offline) == str(live_final))
        row = {"recording": video.parent.name, "frames": run["stats"].frames, "seconds": round(session.duration, 1),
               "pages": len(found["pages"]), "encoded": run["stats"].encoded, "batches": run["stats"].batches,
               "dropped": run["dropped"], "replay_max_late_ms": round(run["max_late"] * 1000, 1),
               "buffer_max": found["queue_max"], "offline_events_equal": offline_equal[-1],
               "delay": distribution([p["delay"] for p in found["pages"] if "delay" in p]),
               "page_delays_ms": [round(1000 * p["delay"], 1) if "delay" in p else None for p in found["pages"]]}
        if reference is not None:
            logs = {"timestamp": [e.timestamp for e in session.events if e.item is not None],
                    "kind": [e.kind for e in session.events if e.item is not None],
                    "item": [e.item for e in session.events if e.item is not None]}
            row["reference"] = compare_reference(reference, grounder, video, {}, logs, catalog.ids)
        per_recording.append(row)
        print(json.dumps(row), flush=True)
    report["recordings"] = per_recording
    report["grounder_ms_per_screen"] = round(1000 * float(np.mean(costs)), 2) if costs else None
    report["view_delay"] = distribution([p["delay"] for p in pages if "delay" in p])
    report["view_delay_after_due_time"] = distribution([p["delay_after_due"] for p in pages if "delay" in p])
    report["final_view_delay_after_page_end"] = distribution([p["close_delay"] for p in pages if "close_delay" in p])
    report["pages"] = len(pages)
    report["pages_without_view"] = sum("delay" not in p for p in pages)
    report["dropped_frames"] = sum(r["dropped"] for r in per_recording)
    report["offline_events_equal_live_final"] = all(offline_equal)
    if args.throughput:
        report["throughput"] = {}
        for width, height in ((180, 320), (360, 640)):
            _, slow = record_sequence(catalog, sequences[0], out / f"throughput_{width}x{height}", seed=3000,
                                      size=(width, height), fps=FPS, dwell_scale=2.0)
            report["throughput"][f"{width}x{height}"] = throughput(grounder, slow, reference)
    report["load_after"] = uptime()
    p95 = report["view_delay"].get("p95_ms")
    report["met"] = {"p95_view_delay<=1s": p95 is not None and p95 <= 1000 and report["pages_without_view"] == 0}
    if args.throughput:
        report["met"]["throughput>=0.8x"] = all(v["ratio"] >= 0.8 for v in report["throughput"].values())
    text = json.dumps(report, indent=1, default=float)
    atomic_write_text(out / "report.json", text)
    print(text)


if __name__ == "__main__":
    main()
