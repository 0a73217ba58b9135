"""``mmrec stream``: a screen recording (video, image folder or frame shards) → behaviour events (parquet).

Tasks (nested sub-commands; ``run`` is taken when none is named, so ``mmrec stream VIDEO --space ...`` runs):

- ``run``: frames are grounded in the catalog with a saved `UnifiedSpace` (``--space``, with ``screen`` and
  ``image`` towers); the similarity threshold comes from ``--threshold`` or from ``SPACE/grounding.json``, and
  so do the windows searched for the item's photo and the photo check, if any. ``--logs`` (CSV: timestamp,
  kind, item_id) adds the app's click/cart/purchase rows, joined with the screen by time. The events file
  carries ``--user`` (`mmrec.events.read_events` reads it back). A live capture: ``-`` reads raw RGB24
  frames of ``--raw-size`` from stdin as they come (``ffmpeg ... -f rawvideo -pix_fmt rgb24 - | mmrec
  stream - ...``), and ``--print-events`` prints each event as a JSON line as soon as it is known (a view
  once its screen is confirmed, ``"final": false``, then again with its dwell; live, a screen is grounded
  once it has held still `mmrec.stream.LIVE_HOLD` seconds, so a banner sliding in is not grounded step by step).
- ``calibrate``: fits the threshold on labelled recordings (folders with the video and ``truth.json``, as the
  app simulator writes them) as ``run`` grounds them, and writes ``SPACE/grounding.json`` (or ``--out``),
  keeping the space's windows and photo check (`mmrec.calibration.calibrate_space`); with ``--layout-free``,
  windows and check that assume no app layout instead (`mmrec.grounding.layout_free_settings`).

A file named like a task (``run``, ``calibrate``) is given as ``mmrec stream run ./run``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator

from mmrec.cli.common import emit, load_data, positive_int

NAME = "stream"
DEFAULT_TASK = "run"
GROUNDING_FILE = "grounding.json"  # mmrec.grounding.GROUNDING_FILE, without importing torch for --help
HELP = "Turn a screen recording into grounded behaviour events (view with dwell, click, purchase) as parquet."
TASK_HELP = {
    "run": "process a recording into events (the default task)",
    "calibrate": f"fit the grounding threshold on labelled recordings and write SPACE/{GROUNDING_FILE}",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The tasks of ``mmrec stream`` as nested sub-commands."""
    from mmrec.cli import add_verbose_argument

    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for task, (add, run_task) in {"run": (_add_run, run_stream), "calibrate": (_add_calibrate, run_calibrate)}.items():
        p = sub.add_parser(task, help=TASK_HELP[task], description=TASK_HELP[task])
        add_verbose_argument(p)
        add(p)
        p.set_defaults(_run=run_task, _command=f"{NAME} {task}")


def _add_grounding_arguments(parser: argparse.ArgumentParser) -> None:
    """What both tasks need to ground screens: the space, the catalog, the encoder's batches and threads."""
    parser.add_argument("--space", required=True, help="saved UnifiedSpace folder with screen and image towers")
    parser.add_argument("--catalog", required=True, metavar="CATALOG",
                        help="the catalog the items come from: a catalog file (CSV with id,title,text,image, or "
                             "H&M articles.csv layout), an H&M folder, or 'synthetic'")
    parser.add_argument("--change-threshold", type=float, default=0.01,
                        help="mean thumbnail difference (0-1) under which a frame counts as unchanged")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="changed frames per encoder batch")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="CPU threads for the screen encoder (default 1: the video decoder runs in a thread of "
                             "its own, and a pool of torch threads waiting between the few encoder calls takes its "
                             "core; measured in benchmarks/stream_targets.py)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the counts on stdout")


def _add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="VIDEO|DIR|SHARDS|-",
                        help="video file, folder of timestamped images, folder of frame shards, shard pattern, or "
                             "'-': raw RGB24 frames on stdin (--raw-size)")
    _add_grounding_arguments(parser)
    parser.add_argument("--out", required=True, help="events parquet file to write")
    parser.add_argument("--user", help="the user whose recording it is, written in every event "
                                       "(default: the recording's file or folder name)")
    parser.add_argument("--logs", help="CSV of app logs: timestamp (stream seconds), kind, item_id")
    parser.add_argument("--threshold", type=float,
                        help=f"grounding similarity threshold in [-1, 1] (default: SPACE/{GROUNDING_FILE})")
    parser.add_argument("--min-frames", type=positive_int, default=3,
                        help="frames a new screen must hold (flicker filter)")
    parser.add_argument("--log-window", type=float, default=2.0, help="seconds around a log row to look for its item")
    parser.add_argument("--raw-size", metavar="WxH", help="frame size of raw RGB24 frames on stdin (source '-')")
    parser.add_argument("--fps", type=float, help="raw frames on stdin: timestamps index / FPS (default: the time "
                                                   "each frame arrives)")
    parser.add_argument("--print-events", action="store_true",
                        help="print each event as a JSON line on stdout as soon as it is known (views once their "
                             "screen is confirmed, with final=false, then final with their dwell)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar with frames/s on stderr (default: when stderr is a terminal)")


def _add_calibrate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recordings", required=True, nargs="+", metavar="DIR",
                        help="labelled recordings: folders with the video and truth.json (the app simulator's "
                             "write_recording), whose items are in --catalog")
    _add_grounding_arguments(parser)
    parser.add_argument("--out", help=f"grounding file to write (default: SPACE/{GROUNDING_FILE}, what "
                                      f"'mmrec stream run' reads)")
    parser.add_argument("--layout-free", action="store_true",
                        help="ground without the space's fitted windows: search the whole screen for every "
                             "catalog photo (mmrec.grounding.layout_free_settings; for apps whose layout the "
                             "space was not trained on; slower per screen)")


def default_user(source: str) -> str:
    """The user an events file is written for when ``--user`` is not given: the recording's file name without
    its extension, or its folder's name ("user" for a shard pattern)."""
    path = Path(source)
    if "{" in source or not path.name or source == "-":
        return "user"
    return path.stem if path.is_file() else path.name


def _threads(args: argparse.Namespace, work: Any) -> int:
    """Run ``work(args)`` with torch on ``--torch-threads`` threads, restoring the caller's setting."""
    import torch

    if args.torch_threads < 1:
        raise ValueError(f"--torch-threads must be at least 1, got {args.torch_threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(args.torch_threads)
    try:
        return work(args)
    finally:
        torch.set_num_threads(previous)  # in-process callers (tests, notebooks) keep their setting


def _stream_config(args: argparse.Namespace) -> Any:
    from mmrec.stream import StreamConfig

    return StreamConfig(change_threshold=args.change_threshold, min_frames=getattr(args, "min_frames", 3),
                        batch_size=args.batch_size, max_pending=max(512, args.batch_size),
                        log_window=getattr(args, "log_window", 2.0))


def _catalog(args: argparse.Namespace) -> Any:
    """``--catalog``: a catalog file any catalog reader takes, or a data set with a catalog (``--data``'s)."""
    if Path(args.catalog).is_file():
        from mmrec.datasets.catalog_csv import read_catalog

        return read_catalog(args.catalog)
    if args.catalog != "synthetic" and not Path(args.catalog).exists():
        raise FileNotFoundError(f"--catalog {args.catalog} does not exist")
    data = load_data(args.catalog, photos=True)
    if data.catalog is None:
        raise ValueError(f"--catalog {args.catalog}: this data set has no catalog (item photos and texts)")
    return data.catalog


def run(args: argparse.Namespace) -> int:
    """The task named in ``args.task`` (``run`` by default)."""
    return run_calibrate(args) if getattr(args, "task", DEFAULT_TASK) == "calibrate" else run_stream(args)


def run_stream(args: argparse.Namespace) -> int:
    """Process the stream, write the events, report counts and frames/s."""
    return _threads(args, _stream)


def run_calibrate(args: argparse.Namespace) -> int:
    """Calibrate the space's threshold on the labelled recordings and write the grounding file."""
    return _threads(args, _calibrate)


def _with_progress(frames: Any, show: bool) -> Iterator[Any]:
    from tqdm import tqdm

    with tqdm(desc="frames", unit="frame", disable=not show, file=sys.stderr, smoothing=0.1) as bar:
        for frame in frames:
            bar.update(1)
            yield frame


def _stream(args: argparse.Namespace) -> int:
    import pandas as pd

    from mmrec.grounding import check_threshold, load_grounder
    from mmrec.stream import StreamStats, process, write_events

    threshold = None if args.threshold is None else check_threshold(args.threshold, "--threshold")
    user = default_user(args.source) if args.user is None else args.user
    if not user.strip():
        raise ValueError("--user must not be empty")
    if threshold is None and not (Path(args.space) / GROUNDING_FILE).is_file():
        raise ValueError(f"no --threshold given and {Path(args.space) / GROUNDING_FILE} does not exist; calibrate "
                         f"the space (mmrec stream calibrate) or pass --threshold")
    config = _stream_config(args)
    _check_events_out(args)
    logs = None
    if args.logs:
        if not Path(args.logs).is_file():
            raise FileNotFoundError(f"--logs {args.logs} does not exist")
        try:
            logs = pd.read_csv(args.logs, dtype={"item_id": str}, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ValueError(f"--logs {args.logs}: not a readable CSV ({str(err).strip()})") from None
    catalog = _catalog(args)
    if logs is not None:  # checked before any frame is decoded: a bad row would stop the stream at its end
        from mmrec.stream import check_logs

        try:
            check_logs(logs, catalog.ids)
        except ValueError as err:
            raise ValueError(f"--logs {args.logs}: {err}") from None
    grounder = load_grounder(args.space, catalog, threshold=threshold, batch_size=args.batch_size)
    frames = _open_source(args)
    stats = StreamStats(source=frames.stats)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    from mmrec.io import atomic_path

    failure: BaseException | None = None
    with frames, atomic_path(args.out) as staged:  # --out is replaced only when the block ends normally
        try:
            events = process(_with_progress(frames, progress), grounder, config, logs=logs, item_ids=catalog.ids,
                             stats=stats, live=args.print_events)
            rows = write_events(_printed(events, user) if args.print_events else events, staged, user=user)
        except BaseException as err:  # noqa: BLE001 - raised again below, once the events before it are kept
            failure = err
        if not stats.frames:  # nothing read: --out is left as it was
            raise failure or ValueError(f"{args.source}: no frame could be read ({stats.skipped} skipped: "
                                        f"{dict(stats.source.skips) if stats.source else {}}); {args.out} was left "
                                        f"as it was")
    if failure is not None:
        raise failure
    emit({**stats.to_dict(), "rows": rows, "user": user, "threshold": grounder.threshold,
          "photos_skipped": len(grounder.skipped_photos), "out": str(Path(args.out).resolve())}, args.json)
    return 0


def _check_events_out(args: argparse.Namespace) -> None:
    """``--out`` may not be an input (the source, the catalog, the logs), lie inside the space folder, or
    be an existing file other than a Parquet table (an earlier run's events): it is replaced whole."""
    out = Path(args.out).resolve()
    inputs = {"the source": args.source, "--catalog": args.catalog, "--logs": args.logs}
    for flag, given in inputs.items():
        if given and given != "-" and Path(given).resolve() == out:
            raise ValueError(f"--out {args.out} is {flag}: write the events elsewhere")
    if Path(args.space).resolve() in out.parents:
        raise ValueError(f"--out {args.out} is inside the space folder {args.space}: write the events elsewhere")
    if out.is_dir():
        raise IsADirectoryError(f"--out {args.out} is a folder; it must be a file path (a Parquet table)")
    if out.is_file():
        import pyarrow.parquet as pq

        from mmrec.events import event_schema

        try:
            columns = set(pq.read_schema(out).names)
        except Exception:  # noqa: BLE001 - whatever pyarrow says, it is no events table
            columns = None
        if columns != set(event_schema().names):
            raise FileExistsError(f"--out {args.out} exists and is not an earlier run's events (a Parquet table "
                                  f"with the events' columns); it would be replaced: choose another path")


def _open_source(args: argparse.Namespace) -> Any:
    """The frame source: raw frames on stdin for ``-`` (``--raw-size``, ``--fps``), else `open_frames`."""
    from mmrec.stream import open_frames

    if args.source != "-":
        if args.raw_size or args.fps is not None:
            raise ValueError("--raw-size and --fps describe raw frames on stdin; give '-' as the source")
        return open_frames(args.source)
    from mmrec.datasets.frames import raw_frames

    try:
        width, height = (int(v) for v in (args.raw_size or "").lower().split("x"))
    except ValueError:
        raise ValueError(f"source '-' reads raw RGB24 frames from stdin and needs --raw-size WxH (e.g. 360x640), "
                         f"got {args.raw_size!r}") from None
    return raw_frames(sys.stdin.buffer, width, height, fps=args.fps)


def _printed(events: Any, user: str) -> Iterator[Any]:
    """The events, each printed on stdout as a JSON line (with ``user`` and ``final``) as it comes."""
    from mmrec.io import dumps_json

    for event in events:
        row = {"user": user, **event.to_row(), "final": event.final}
        row = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}  # NaN: not JSON
        sys.stdout.write(dumps_json(row) + "\n")
        sys.stdout.flush()
        yield event


def _check_grounding_out(args: argparse.Namespace, out: Path) -> None:
    """Where calibrate writes: a ``.json`` path that is no input (a recording's truth.json, the catalog), no
    other file of the space than its grounding.json, and, if it exists, an earlier grounding file; refused
    before any work, since it is replaced whole."""
    if out.suffix != ".json":
        raise ValueError(f"--out {out}: give a .json file path for the grounding settings")
    resolved, space = out.resolve(), Path(args.space).resolve()
    if args.catalog and Path(args.catalog).resolve() == resolved:
        raise ValueError(f"--out {out} is --catalog: write the grounding elsewhere")
    for folder in args.recordings:
        if Path(folder).resolve() in resolved.parents:
            raise ValueError(f"--out {out} is inside the recording {folder}: write the grounding elsewhere")
    if space in resolved.parents and resolved != space / GROUNDING_FILE:
        raise ValueError(f"--out {out} is inside the space {args.space} but not its {GROUNDING_FILE}: it would "
                         f"break the space; leave --out out to write {GROUNDING_FILE} there")
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; give a .json file path")
    if out.is_file():
        from mmrec.io import read_json

        try:
            earlier = read_json(out)
        except ValueError:
            earlier = None
        if not (isinstance(earlier, dict) and "threshold" in earlier):
            raise FileExistsError(f"--out {out} exists and is not an earlier grounding file; it would be replaced: "
                                  f"choose another path")


def _calibrate(args: argparse.Namespace) -> int:
    from mmrec.calibration import calibrate_space

    for folder in args.recordings:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--recordings {folder} is not a folder (a labelled recording: the video and "
                                    f"truth.json)")
    out = Path(args.out) if args.out else Path(args.space) / GROUNDING_FILE
    _check_grounding_out(args, out)
    catalog, settings = _catalog(args), None
    if args.layout_free:
        from mmrec.grounding import layout_free_settings, photo_aspect

        settings = layout_free_settings(photo_aspect(catalog), len(catalog))
    settings, fit = calibrate_space(args.space, catalog, args.recordings, settings=settings,
                                    config=_stream_config(args), out=out, batch_size=args.batch_size)
    emit({"threshold": settings.threshold, **{k: fit[k] for k in ("precision", "recall", "f1", "objective")},
          "windows": settings.windows is not None, "photo_check": settings.check is not None,
          "recordings": len(args.recordings), "photos_skipped": fit["photos_skipped"], "out": str(out.resolve())},
         args.json)
    return 0
