"""``mmrec stream``: a screen recording (video, image folder or frame shards) → behaviour events (parquet).

Frames are grounded in the catalog with a saved `UnifiedSpace` (``--space``, with ``screen`` and ``image``
towers); the similarity threshold comes from ``--threshold`` or from ``SPACE/grounding.json`` (written by
the calibration in ``benchmarks/stream_targets.py``), and so do the windows searched for the item's photo, if
any. ``--logs`` (CSV: timestamp, kind, item_id) adds the app's click/cart/purchase rows, joined with the
screen by time.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator

from mmrec.cli.common import emit, load_data

NAME = "stream"
GROUNDING_FILE = "grounding.json"  # mmrec.grounding.GROUNDING_FILE, without importing torch for --help
HELP = "Turn a screen recording into grounded behaviour events (view with dwell, click, purchase) as parquet."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mmrec stream``."""
    parser.add_argument("source", metavar="VIDEO|DIR|SHARDS",
                        help="video file, folder of timestamped images, folder of frame shards, or shard pattern")
    parser.add_argument("--space", required=True, help="saved UnifiedSpace folder with screen and image towers")
    parser.add_argument("--catalog", required=True, metavar="DATA",
                        help="the catalog the items come from: H&M folder or 'synthetic' (as --data elsewhere)")
    parser.add_argument("--out", required=True, help="events parquet file to write")
    parser.add_argument("--logs", help="CSV of app logs: timestamp (stream seconds), kind, item_id")
    parser.add_argument("--threshold", type=float, help=f"grounding similarity threshold (default: SPACE/{GROUNDING_FILE})")
    parser.add_argument("--change-threshold", type=float, default=0.01,
                        help="mean thumbnail difference (0-1) under which a frame counts as unchanged")
    parser.add_argument("--min-frames", type=int, default=3, help="frames a new screen must hold (flicker filter)")
    parser.add_argument("--batch-size", type=int, default=32, help="changed frames per encoder batch")
    parser.add_argument("--log-window", type=float, default=2.0, help="seconds around a log row to look for its item")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="CPU threads for the screen encoder (default 1: the video decoder runs in a thread of "
                             "its own, and a pool of torch threads waiting between the few encoder calls takes its "
                             "core; measured in benchmarks/stream_targets.py)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar with frames/s on stderr (default: when stderr is a terminal)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the counts on stdout")


def _grounding(args: argparse.Namespace) -> Any:
    """`GroundingSettings` of ``SPACE/grounding.json``, its threshold replaced by ``--threshold`` when given."""
    from mmrec.grounding import GroundingSettings, load_grounding

    path = Path(args.space) / GROUNDING_FILE
    if args.threshold is not None and not path.is_file():
        return GroundingSettings(args.threshold)
    if not path.is_file():
        raise ValueError(f"no --threshold given and {path} does not exist; calibrate the space "
                         f"(benchmarks/stream_targets.py writes it) or pass --threshold")
    settings = load_grounding(args.space)
    if args.threshold is not None:
        settings.threshold = args.threshold
    return settings


def _with_progress(frames: Any, show: bool) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(desc="frames", unit="frame", disable=not show, file=sys.stderr, smoothing=0.1) as bar:
        for frame in frames:
            bar.update(1)
            yield frame


def run(args: argparse.Namespace) -> int:
    """Process the stream, write the events, report counts and frames/s."""
    import torch

    if args.torch_threads < 1:
        raise ValueError(f"--torch-threads must be at least 1, got {args.torch_threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(args.torch_threads)
    try:
        return _stream(args)
    finally:
        torch.set_num_threads(previous)  # in-process callers (tests, notebooks) keep their setting


def _stream(args: argparse.Namespace) -> int:
    import pandas as pd

    from mmrec.grounding import Grounder
    from mmrec.space import UnifiedSpace
    from mmrec.stream import StreamConfig, StreamStats, open_frames, process, write_events

    config = StreamConfig(change_threshold=args.change_threshold, min_frames=args.min_frames,
                          batch_size=args.batch_size, max_pending=max(512, args.batch_size),
                          log_window=args.log_window)
    settings = _grounding(args)
    data = load_data(args.catalog)
    if data.catalog is None:
        raise ValueError(f"--catalog {args.catalog}: this data set has no catalog (item photos and texts)")
    logs = None
    if args.logs:
        if not Path(args.logs).is_file():
            raise FileNotFoundError(f"--logs {args.logs} does not exist")
        logs = pd.read_csv(args.logs, dtype={"item_id": str})
    space = UnifiedSpace.from_pretrained(args.space)
    grounder = Grounder.for_catalog(space, data.catalog, threshold=settings.threshold, batch_size=args.batch_size,
                                    windows=settings.windows, check=settings.check)
    frames = open_frames(args.source)
    stats = StreamStats(source=frames.stats)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    with frames:
        events = process(_with_progress(frames, progress), grounder, config, logs=logs,
                         item_ids=data.catalog.ids, stats=stats)
        rows = write_events(events, args.out)
    emit({**stats.to_dict(), "rows": rows, "threshold": settings.threshold, "out": str(Path(args.out).resolve())}, args.json)
    return 0
