"""Screen stream → grounded behaviour events: what the user looked at, for how long, joined with the logs.

::

    frames (mmrec.datasets.frames) ─► change detection ─► settled frames, in batches ─► Grounder
        (bounded queue, worker)       (sampled pixels vs     (a motion takes the label of  (worker thread:
                                       the last changed one)  the frame it settles on;      screen tower,
                                                              unchanged frames reuse it)    photo check)
    ─► per-frame labels (`frame_labels`) ─► threshold ─► Segmenter (screen states; flickers shorter than
       ``min_frames`` merged away) ─► events: ``view`` (item, start, dwell) per product segment, +
       ``click``/``cart``/``purchase`` log rows joined with the screen by a time window ─► `write_events`
       (parquet, one ``user`` per file; `mmrec.events.read_events` reads it back for the sequence model)

Everything is a generator: events come out as segments close, so a stream that ends early (a truncated
file, a stopped capture) still gives every finished event, and memory holds at most two batches of
changed frames (one being grounded, one filling; three with ``max_wait``: two handed over), ``2 *
max_pending`` frame labels and the segments inside the log window, whatever the stream's length.

Live streams (a capture pushing frames as they come, `mmrec.datasets.frames.LiveFrames`): the same path,
with ``process(..., live=True)``, also yields each ``view`` as soon as its screen state is confirmed
(``final=False``: item and start known, dwell not yet), then the view again, final, when the state ends.
Live, labels do not wait for a full batch: once the frames waiting for theirs span
``StreamConfig.max_wait`` seconds of stream time (`LIVE_MAX_WAIT` unless set), the screens settled so far
go to the worker (`frame_labels`), and a screen counts as settled once it has held still
``StreamConfig.hold`` seconds (`LIVE_HOLD` unless set; the steps of a banner sliding in are not grounded one
by one), so a page's view follows its settling by that hold plus one grounding call. A recording is read
faster than it plays, and its screens are grounded in full batches (fewer encoder calls) unless ``max_wait``
is set. Broken frames are skipped and counted by the frame sources (`FrameStats`). The threshold is
calibrated on what this processor grounds (`calibrate_on_streams`; on simulator recordings,
`mmrec.calibration`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np
from PIL import Image

from mmrec.datasets.frames import Frame, FrameStats, FrameStream
from mmrec.events import event_schema
from mmrec.grounding import NO_ITEM, Grounder, calibrate_threshold, check_threshold

logger = logging.getLogger(__name__)

LOG_KINDS = ("click", "cart", "purchase")
LIVE_MAX_WAIT = 0.1  # seconds of stream time a label may wait for its batch in a live stream (StreamConfig.max_wait)
LIVE_HOLD = 0.15  # seconds a screen holds still before a live stream grounds it (StreamConfig.hold): a banner's or a
# touch mark's steps hold 2-4 frames at 30 fps, and each one grounded keeps the next page's view waiting
EVENT_COLUMNS = ("kind", "timestamp", "end", "dwell", "item", "item_id", "score", "frames", "on_screen",
                 "seen_ago")  # an Event's; the file adds ``user`` (`mmrec.events.EVENT_FIELDS`)


@dataclass
class StreamConfig:
    """Settings of the stream processor; `mmrec.config.from_dict` rejects unknown keys.

    Change detection: each frame becomes a ``thumb_size`` (width, height) grid of sampled pixels; a frame
    whose mean absolute difference (0–1) to the last *changed* frame's grid is at most ``change_threshold``
    is unchanged and reuses that frame's grounding. Encoding (``encode``): ``"settled"`` encodes a screen
    once it holds still — the last changed frame, when the frame after it is unchanged — and gives the
    frames of the motion before it (a scroll, a page sliding in) that frame's label, so a new screen
    starts at its first moving frame; ``"changed"`` encodes every changed frame. ``hold``: seconds of stream
    time a screen must stay unchanged to count as settled (None: the next frame; ``process(..., live=True)``
    then uses `LIVE_HOLD`): a screen that changes again sooner (a step of a notification banner sliding in,
    a touch mark) is part of the motion, and its frames take the label of the screen that motion settles
    on — unless it differs from the last screen encoded by more than ``hold_change`` (mean absolute
    difference of the grids, 0–1): a new page shown briefly (a grid tapped through) is encoded when it
    changes, an overlay on the page before is not. ``batch_size`` frames per
    encoder call (grounded in a worker thread, one batch at a time, while the next fills); a batch closes
    at ``max_pending`` frames waiting for its labels (bounds memory and the delay of events; a motion that
    outlasts it is encoded where it has got to). ``max_wait``: seconds of stream time a frame's label may
    wait for a batch to fill; once the waiting frames span it, the screens settled so far go to the worker
    as they are (a motion still under way stays back: it is encoded where it settles), so a live stream's
    labels, and its events, follow the screen within about ``max_wait`` plus one grounding call. None (the
    default): batches wait to fill, the fewest encoder calls for a recording; ``process(..., live=True)``
    then uses `LIVE_MAX_WAIT`. Batches are cut by the stream's timestamps alone, never by how fast it is
    read, so a recording gives the same labels (to the last bit) however fast it is read. Grounding:
    ``threshold`` (finite, in [-1, 1]) overrides the grounder's similarity threshold.
    Segmentation: a new label must hold ``min_frames`` frames in a row to start a screen state (shorter
    runs are flickers, merged into the state around them). Logs: a log row is ``on_screen`` when its item
    is grounded within ``log_window`` seconds of it.
    """

    thumb_size: tuple[int, int] = (36, 64)
    change_threshold: float = 0.01
    encode: str = "settled"
    batch_size: int = 32
    max_pending: int = 512
    max_wait: float | None = None
    hold: float | None = None
    hold_change: float = 0.15
    threshold: float | None = None
    min_frames: int = 3
    log_window: float = 2.0

    def __post_init__(self) -> None:
        if len(self.thumb_size) != 2 or min(self.thumb_size) < 2:
            raise ValueError(f"StreamConfig.thumb_size must be (width, height) >= 2, got {self.thumb_size!r}")
        if not 0 <= self.change_threshold <= 1:
            raise ValueError(f"StreamConfig.change_threshold must be in [0, 1], got {self.change_threshold!r}")
        if self.batch_size < 1 or self.max_pending < self.batch_size or self.min_frames < 1:
            raise ValueError(f"StreamConfig needs batch_size >= 1, max_pending >= batch_size and min_frames >= 1, "
                             f"got {self.batch_size}, {self.max_pending}, {self.min_frames}")
        if self.encode not in ("settled", "changed"):
            raise ValueError(f"StreamConfig.encode must be 'settled' or 'changed', got {self.encode!r}")
        if self.max_wait is not None and not 0 <= self.max_wait < math.inf:
            raise ValueError(f"StreamConfig.max_wait must be a finite number of seconds >= 0, got {self.max_wait!r}")
        if self.hold is not None and not 0 <= self.hold < math.inf:
            raise ValueError(f"StreamConfig.hold must be a finite number of seconds >= 0, got {self.hold!r}")
        if not 0 <= self.hold_change <= 1:
            raise ValueError(f"StreamConfig.hold_change must be in [0, 1], got {self.hold_change!r}")
        if not self.log_window >= 0:
            raise ValueError(f"StreamConfig.log_window must be >= 0 seconds, got {self.log_window!r}")
        if self.threshold is not None:
            self.threshold = check_threshold(self.threshold, "StreamConfig.threshold")


@dataclass
class StreamStats:
    """What a run did: frames seen, changed, encoded and skipped (by the source, by reason), segments, events,
    time."""

    frames: int = 0
    changed: int = 0
    encoded: int = 0
    batches: int = 0
    segments: int = 0
    events: int = 0
    seconds: float = 0.0
    source: FrameStats | None = None

    @property
    def skipped(self) -> int:
        """Frames the source skipped (wrong size, backwards timestamps, undecodable...)."""
        return 0 if self.source is None else self.source.skipped

    @property
    def frames_per_second(self) -> float:
        """Frames processed per wall-clock second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {"frames": self.frames, "changed": self.changed, "encoded": self.encoded,
                "unchanged": self.frames - self.changed,
                "batches": self.batches, "segments": self.segments, "events": self.events,
                "skipped": self.skipped, "skips": dict(self.source.skips) if self.source else {},
                "seconds": round(self.seconds, 3), "frames_per_second": round(self.frames_per_second, 1)}


@dataclass
class Segment:
    """A screen state: ``item`` (catalog code, `NO_ITEM` for screens without one) on screen from ``start``
    to ``end`` seconds; ``frames`` counted and the mean grounding similarity ``score``."""

    item: int
    start: float
    end: float
    frames: int = 0
    score_sum: float = 0.0
    last: float = field(default=0.0, repr=False)

    @property
    def dwell(self) -> float:
        """Seconds on screen."""
        return self.end - self.start

    @property
    def score(self) -> float:
        """Mean similarity of the frames' nearest item."""
        return self.score_sum / self.frames if self.frames else math.nan


@dataclass
class Event:
    """A behaviour event: ``view`` (from the screen: ``item`` on screen from ``timestamp`` for ``dwell``
    seconds) or a log row (``click``/``cart``/``purchase`` at ``timestamp``) with ``on_screen`` (its item
    grounded within the log window) and ``seen_ago`` (seconds since the item was last on screen, NaN if
    never).

    ``final``: False for a view announced while its screen is still on (`process` with ``live=True``):
    ``end`` and ``dwell`` are NaN, ``frames`` and ``score`` those seen so far; the final view of the same
    state (same ``timestamp`` and ``item``) follows when it ends. `write_events` keeps final events only.
    """

    kind: str
    timestamp: float
    item: int
    item_id: str | None
    end: float = math.nan
    dwell: float = math.nan
    score: float = math.nan
    frames: int = 0
    on_screen: bool | None = None
    seen_ago: float = math.nan
    final: bool = True

    def to_row(self) -> dict[str, Any]:
        """The event as a table row (`EVENT_COLUMNS`)."""
        return {c: getattr(self, c) for c in EVENT_COLUMNS}


# ------------------------------------------------------------------------------- change detection

def thumbnail(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``size`` (width, height) grid of pixels sampled evenly from an HxWx3 uint8 frame, as a contiguous
    uint8 ``[3, height, width]`` array.

    Sampling (not averaging) costs microseconds whatever the frame size, so change detection stays far
    cheaper than decoding; a change smaller than the grid's spacing can go unseen. Channels first: copying
    the grid with the 3 channels innermost is several times slower.
    """
    h, w = image.shape[:2]
    sy, sx = max(1, h // size[1]), max(1, w // size[0])
    return np.ascontiguousarray(image[sy // 2::sy, sx // 2::sx].transpose(2, 0, 1))


def changed(thumb: np.ndarray, reference: np.ndarray | None, threshold: float) -> bool:
    """Whether two `thumbnail` grids differ by more than ``threshold`` (mean absolute difference, 0–1)."""
    if reference is None or reference.shape != thumb.shape:
        return True
    difference = np.maximum(thumb, reference) - np.minimum(thumb, reference)  # |a - b| without leaving uint8
    return int(difference.sum(dtype=np.uint32)) > threshold * 255.0 * difference.size


class Segmenter:
    """Per-frame labels → screen states, closing a state when another label has held ``min_frames`` frames.

    A run of another label shorter than that is a flicker and counts to the state it interrupts. The new
    state starts at its first frame, so smoothing delays events but not their times. ``current`` is the
    open state: it is never taken back, only closed (a new one replaces it the frame it is confirmed).
    """

    def __init__(self, min_frames: int) -> None:
        self.min_frames = min_frames
        self.current: Segment | None = None
        self.candidate: Segment | None = None
        self.last_time: float | None = None
        self.step = math.nan  # the last positive frame interval: how long the last frame stays on screen

    def push(self, t: float, item: int, score: float) -> Segment | None:
        """Add a frame; returns the state it closes, if any."""
        if self.last_time is not None and t > self.last_time:
            self.step = t - self.last_time
        self.last_time = t
        if self.current is None:
            self.current = Segment(item, t, t, 1, score, t)
            return None
        if item == self.current.item:
            self._absorb_candidate()
            self._extend(self.current, t, score)
            return None
        if self.candidate is not None and item == self.candidate.item:
            self._extend(self.candidate, t, score)
        else:
            self._absorb_candidate()
            self.candidate = Segment(item, t, t, 1, score, t)
        if self.candidate.frames < self.min_frames:
            return None
        closed, self.current, self.candidate = self.current, self.candidate, None
        closed.end = self.current.start
        return closed

    def finish(self) -> Segment | None:
        """Close the open state at the end of the stream (its last frame lasts one frame interval)."""
        self._absorb_candidate()
        closed, self.current = self.current, None
        if closed is not None:
            closed.end = closed.last + (self.step if math.isfinite(self.step) else 0.0)
        return closed

    def _absorb_candidate(self) -> None:
        if self.candidate is not None:
            self.current.frames += self.candidate.frames
            self.current.score_sum += self.candidate.score_sum
            self.current.last = self.candidate.last
            self.candidate = None

    @staticmethod
    def _extend(segment: Segment, t: float, score: float) -> None:
        segment.frames += 1
        segment.score_sum += score
        segment.last = t


# ------------------------------------------------------------------------------------------ processor

class FrameLabel(NamedTuple):
    """One frame's grounding as the processor sees it: its ``timestamp`` and source ``index``, the nearest
    ``item`` and its ``similarity`` before any threshold (a frame that was not encoded carries the label of
    the screen it shows: the frame its motion settles on, or the last one encoded)."""

    timestamp: float
    index: int
    item: int
    similarity: float


def frame_labels(frames: Iterable[Frame], grounder: Grounder, config: StreamConfig | None = None,
                 stats: StreamStats | None = None) -> Iterator[FrameLabel]:
    """Every frame's `FrameLabel`, in order, yielded once its batch is grounded.

    Only changed frames are encoded (with ``config.encode="settled"``, only those a motion ends in),
    ``config.batch_size`` at a time, in a worker thread: while one batch is grounded, the next one's frames
    go on being read and compared (a frame source decodes in a thread of its own, and waits when its bounded
    queue is full). One batch is grounded at a time; a full batch waits for those before it. A batch is
    also handed over when the frames waiting for labels span ``config.max_wait`` seconds of stream time
    (the screens settled so far; frames of a motion under way wait for the frame it settles on): labels
    never wait for a batch to fill, which a live stream would otherwise do for a long time. Such a batch
    queues behind the one being grounded (reading waits only when two are queued, or their frames reach
    ``config.max_pending``). Labels of a batch come out at the first frame read after its grounding ends.
    ``stats`` (if given) is updated as frames go by. Frames must come in time order (the sources guarantee
    it).
    """
    config = config or StreamConfig()
    stats = stats if stats is not None else StreamStats()
    if isinstance(frames, FrameStream):
        stats.source = frames.stats
    batch: list[Image.Image] = []  # frames waiting for the encoder
    pending: list[tuple[float, int, int]] = []  # (time, index, slot in batch, or -1: reuse `resolved`)
    in_flight: deque[tuple[Future, list[tuple[float, int, int]]]] = deque()  # batches being grounded
    reference: np.ndarray | None = None  # thumbnail of the last changed frame
    moving: Image.Image | None = None  # the last changed frame, not yet settled ("settled" mode)
    moving_thumb: np.ndarray | None = None  # its thumbnail, and whether a still frame has followed it
    still = False
    encoded_thumb: np.ndarray | None = None  # thumbnail of the last screen encoded
    motion = 0  # position in `pending` of the first frame of the motion under way (while `moving`)
    max_wait, hold = config.max_wait, config.hold or 0.0
    changed_at = -math.inf  # stream time of the last changed frame
    resolved = (NO_ITEM, math.nan)  # nearest item and similarity of the last encoded frame
    started = time.perf_counter()
    worker = ThreadPoolExecutor(1, thread_name_prefix="mmrec-grounding")

    def settle() -> None:
        nonlocal moving, encoded_thumb
        if moving is not None:
            batch.append(moving)
            moving, encoded_thumb = None, moving_thumb

    def submit() -> Iterator[FrameLabel]:
        """Hand the batch to the worker, once the one before it is grounded (its labels are yielded)."""
        yield from collect()
        hand_over(len(pending))

    def hand_over(cut: int) -> None:
        """The batch and the first ``cut`` pending frames to the worker; the frames after them (a motion
        under way, whose label is the slot its settled frame will take) wait for the next batch."""
        if cut:
            work = worker.submit(grounder.similarities, list(batch)) if batch else None
            in_flight.append((work, pending[:cut]))
            stats.encoded += len(batch)
            stats.batches += bool(batch)
        shift = len(batch)
        batch.clear()
        pending[:] = [(t, index, slot - shift) for t, index, slot in pending[cut:]]

    def collect(block: bool = True, limit: int | None = None) -> Iterator[FrameLabel]:
        """The labels of the batches handed over, in order: all of them (waiting for their grounding), the
        first ``limit``, or with ``block=False`` those whose grounding is done."""
        nonlocal resolved
        while in_flight and (block or in_flight[0][0] is None or in_flight[0][0].done()) and limit != 0:
            limit = None if limit is None else limit - 1
            work, waiting = in_flight.popleft()
            codes, sims = work.result() if work is not None else ((), ())
            for t, index, slot in waiting:
                if slot >= 0:
                    resolved = (int(codes[slot]), float(sims[slot]))
                yield FrameLabel(t, index, *resolved)

    try:
        for frame in frames:
            stats.frames += 1
            thumb = thumbnail(frame.image, config.thumb_size)
            if changed(thumb, reference, config.change_threshold):
                stats.changed += 1
                if moving is not None and still and (encoded_thumb is None
                                                     or changed(moving_thumb, encoded_thumb, config.hold_change)):
                    settle()  # held still under ``hold``, but a new screen, not an overlay: encoded after all
                reference = thumb
                changed_at = frame.timestamp
                if moving is None:
                    motion = len(pending)
                # the slot this frame's label will come from: its own, or (settled) the one its motion ends in
                pending.append((frame.timestamp, frame.index, len(batch)))
                moving = Image.fromarray(np.array(frame.image))  # a copy: the frame is a view of its batch
                moving_thumb, still = thumb, False
                if config.encode == "changed":
                    settle()
            elif moving is not None and frame.timestamp - changed_at >= hold:
                settle()
                pending.append((frame.timestamp, frame.index, len(batch) - 1))
            elif moving is not None:  # still, but not for ``hold`` yet: the slot the motion will end in
                pending.append((frame.timestamp, frame.index, len(batch)))
                still = True
            else:
                pending.append((frame.timestamp, frame.index, -1))
            if len(batch) >= config.batch_size or len(pending) >= config.max_pending:
                settle()
                yield from submit()
            else:
                if max_wait is not None and pending and frame.timestamp - pending[0][0] >= max_wait:  # a deadline
                    cut = motion if moving is not None else len(pending)  # a motion under way stays
                    if cut:
                        while (sum(work is not None for work, _ in in_flight) >= 2
                               or sum(len(waiting) for _, waiting in in_flight) >= config.max_pending):
                            yield from collect(limit=1)  # two batches queued already: wait for the first
                        hand_over(cut)
                        motion -= cut
                if in_flight and (in_flight[0][0] is None or in_flight[0][0].done()):
                    yield from collect(block=False)  # labels out as soon as they are known
            stats.seconds = time.perf_counter() - started
        settle()
        yield from submit()
        yield from collect()
    finally:
        worker.shutdown(wait=True, cancel_futures=True)
        stats.seconds = time.perf_counter() - started


class Confirmed(NamedTuple):
    """A screen state confirmed while it is on screen (it has held ``min_frames`` frames; the stream's first
    state at its first frame): its ``item`` and ``start``, the ``frames`` and mean ``score`` so far, and
    ``at``, the stream time of the frame that confirmed it. It closes later as a `Segment` of the same start."""

    item: int
    start: float
    frames: int
    score: float
    at: float


def screen_states(frames: Iterable[Frame], grounder: Grounder, config: StreamConfig | None = None,
                  stats: StreamStats | None = None) -> Iterator[Confirmed | Segment]:
    """Screen states of a frame stream as they happen: a `Confirmed` when a state is confirmed, its `Segment`
    when it closes (the last one when the stream ends); a state's close comes right before the next one's
    confirmation. The `frame_labels`, "no item" below the threshold (``config.threshold``, else the
    grounder's), through a `Segmenter`. `segments` keeps the closes; `process` turns both into events."""
    config = config or StreamConfig()
    stats = stats if stats is not None else StreamStats()
    threshold = grounder.threshold if config.threshold is None else config.threshold
    segmenter = Segmenter(config.min_frames)
    with closing(frame_labels(frames, grounder, config, stats)) as labels:
        for label in labels:
            item = label.item if label.similarity >= threshold else NO_ITEM
            before = segmenter.current
            closed = segmenter.push(label.timestamp, item, label.similarity)
            if closed is not None:
                stats.segments += 1
                yield closed
            now = segmenter.current
            if now is not before:
                yield Confirmed(now.item, now.start, now.frames, now.score, label.timestamp)
    last = segmenter.finish()
    if last is not None:
        stats.segments += 1
        yield last


def segments(frames: Iterable[Frame], grounder: Grounder, config: StreamConfig | None = None,
             stats: StreamStats | None = None) -> Iterator[Segment]:
    """Screen states of a frame stream, yielded as they close (the last one when the stream ends): the
    `Segment` records of `screen_states`."""
    with closing(screen_states(frames, grounder, config, stats)) as states:
        for state in states:
            if isinstance(state, Segment):
                yield state


def calibrate_on_streams(grounder: Grounder, labelled: Iterable[tuple[Iterable[Frame], np.ndarray]],
                         config: StreamConfig | None = None) -> tuple[float, dict[str, Any]]:
    """The grounding threshold fitted (`calibrate_threshold`: best F1 per frame) on what the processor
    grounds: labelled streams ``(frames, true item per frame index)``, each run through change detection
    and encoding as `segments` runs them with ``config``, every frame counted with the label it gets. The
    threshold judges only the screens the processor encodes (settled ones, not the frames of a scroll or a
    page sliding in), so it is fitted on those. A grounder that finds every catalog photo by its pixels
    (``check.locate_all``) is judged on presence alone (``identity`` False there: its wrong names are photos
    alike, scored as high as right ones). Returns the threshold and the fit; the grounder is not changed."""
    codes, sims, truth = [], [], []
    for k, (frames, labels) in enumerate(labelled):
        labels = np.asarray(labels)
        for label in frame_labels(frames, grounder, config):
            if not 0 <= label.index < len(labels):
                raise ValueError(f"calibration stream {k}: frame {label.index} has no true label "
                                 f"({len(labels)} given)")
            if math.isfinite(label.similarity):
                codes.append(label.item), sims.append(label.similarity), truth.append(labels[label.index])
    if not codes:
        raise ValueError("calibration needs at least one labelled stream with frames")
    check = getattr(grounder, "check", None)
    return calibrate_threshold(np.array(codes, np.int64), np.array(sims), np.array(truth, np.int64),
                               identity=not (check is not None and check.locate_all))


def events(screen_segments: Iterable[Segment | Confirmed], *, logs: Any = None, item_ids: Any = None,
           config: StreamConfig | None = None, stats: StreamStats | None = None,
           live: bool = False) -> Iterator[Event]:
    """Behaviour events from screen states (closed `Segment` records, or `screen_states`' stream of `Confirmed`
    and `Segment`), joined with log rows, in the order they become final.

    ``logs``: a table (pandas DataFrame or mapping of columns) with ``timestamp`` (seconds, the stream's
    clock), ``kind`` and ``item`` (catalog code) or ``item_id``; rows of kinds other than `LOG_KINDS` are
    ignored. A log row is emitted once the screen is known up to ``log_window`` seconds after it (or when
    the stream ends). ``item_ids``: catalog ids by code, to name items (``catalog.ids``). ``live``: also
    yield a view for each `Confirmed` state with an item, as it comes (``final=False``); the final events,
    and their order among themselves, are the same either way.
    """
    config = config or StreamConfig()
    stats = stats if stats is not None else StreamStats()
    window = config.log_window
    queue = deque(_log_rows(logs, item_ids))
    log_times = np.array([row[0] for row in queue], dtype=np.float64)
    span = [math.inf, -math.inf]  # the recording's time span, from its screen states
    recent: deque[Segment] = deque()  # item segments that may still meet a log row's window
    last_seen: dict[int, float] = {}  # item → end of its last segment

    def ident(code: int) -> str | None:
        return None if item_ids is None or code == NO_ITEM else str(item_ids[code])

    def log_event(t: float, kind: str, code: int) -> Event:
        near = any(s.item == code and s.start <= t + window and s.end >= t - window for s in recent)
        seen = [s.end for s in recent if s.item == code and s.start <= t]
        ago = t - max(seen) if seen else (t - last_seen[code] if code in last_seen and last_seen[code] <= t
                                          else math.nan)
        stats.events += 1
        return Event(kind, t, code, ident(code), on_screen=near, seen_ago=max(0.0, ago) if math.isfinite(ago) else ago)

    for segment in screen_segments:
        while queue and queue[0][0] + window <= segment.start:
            yield log_event(*queue.popleft())
        span[0] = min(span[0], segment.start)
        if isinstance(segment, Confirmed):  # the state before it has closed: nothing else changes here
            if live and segment.item != NO_ITEM:
                yield Event("view", segment.start, segment.item, ident(segment.item), score=segment.score,
                            frames=segment.frames, final=False)
            continue
        span[1] = max(span[1], segment.end)
        if segment.item != NO_ITEM:
            recent.append(segment)
            stats.events += 1
            yield Event("view", segment.start, segment.item, ident(segment.item), end=segment.end,
                        dwell=segment.dwell, score=segment.score, frames=segment.frames)
        horizon = min(segment.start, queue[0][0]) if queue else segment.start  # no pending row looks earlier
        while recent and recent[0].end < horizon - window - 1e-9:
            old = recent.popleft()
            last_seen[old.item] = max(last_seen.get(old.item, -math.inf), old.end)
    while queue:
        yield log_event(*queue.popleft())
    outside = int(((log_times < span[0] - window) | (log_times > span[1] + window)).sum()) if span[0] <= span[1] else 0
    if outside:  # e.g. logs in epoch seconds against a recording's own clock: every row off screen, silently
        logger.warning("logs: %d of %d row(s) lie outside the recording's %.1f-%.1f s; are they on the stream's "
                       "clock?", outside, len(log_times), span[0], span[1])


def check_logs(logs: Any, item_ids: Any = None) -> int:
    """Check a logs table the way `events` reads it (columns, item ids, numeric timestamps), so a command can
    refuse bad logs before decoding any frame; returns the number of rows of `LOG_KINDS`."""
    return len(_log_rows(logs, item_ids))


def _log_rows(logs: Any, item_ids: Any) -> list[tuple[float, str, int]]:
    """(time, kind, item code) of the log rows of `LOG_KINDS`, in time order; rows of other kinds are
    skipped with a warning."""
    if logs is None:
        return []
    import pandas as pd

    table = logs if isinstance(logs, pd.DataFrame) else pd.DataFrame(dict(logs))
    missing = {"timestamp", "kind"} - set(table.columns)
    if missing or not ({"item", "item_id"} & set(table.columns)):
        raise ValueError(f"logs need columns timestamp, kind and item or item_id; missing "
                         f"{sorted(missing) or ['item or item_id']} (have {list(table.columns)})")
    if {"item", "item_id"} <= set(table.columns):
        raise ValueError("logs have both an item column (codes) and item_id (ids); keep one")
    if "item" in table.columns:
        codes = pd.to_numeric(table["item"], errors="coerce").to_numpy(float)
        n = len(item_ids) if item_ids is not None else None
        bad = ~np.isfinite(codes) | (codes != np.round(codes)) | (codes < 0) | ((codes >= n) if n else False)
        if bad.any():  # a negative code wrapped to another item, one past the catalog failed after the whole stream
            raise ValueError(f"logs: item {table['item'].iloc[int(np.flatnonzero(bad)[0])]!r} is no item code "
                             f"(0..{n - 1 if n else '?'}); {int(bad.sum())} such row(s)")
        codes = codes.astype(np.int64)
    else:
        if item_ids is None:
            raise ValueError("logs name items by item_id; pass the catalog's ids to map them to codes")
        index = {str(i): k for k, i in enumerate(item_ids)}
        unknown = sorted({str(i) for i in table["item_id"] if str(i) not in index})
        if unknown:
            raise ValueError(f"logs name {len(unknown)} item id(s) not in the catalog, e.g. {unknown[:3]}")
        codes = np.array([index[str(i)] for i in table["item_id"]])
    times = pd.to_numeric(table["timestamp"], errors="coerce").to_numpy(float)
    if not np.isfinite(times).all():
        raise ValueError(f"logs: {int((~np.isfinite(times)).sum())} row(s) have no numeric timestamp")
    rows = [(float(t), str(k), int(c)) for t, k, c in zip(times, table["kind"], codes) if str(k) in LOG_KINDS]
    if len(rows) < len(table):
        other = sorted({str(k) for k in table["kind"] if str(k) not in LOG_KINDS})
        logger.warning("logs: skipped %d row(s) of kinds other than %s, e.g. %s", len(table) - len(rows),
                    sorted(LOG_KINDS), other[:3])
    return sorted(rows, key=lambda r: r[0])


def process(frames: Iterable[Frame], grounder: Grounder, config: StreamConfig | None = None, *,
            logs: Any = None, item_ids: Any = None, stats: StreamStats | None = None,
            live: bool = False) -> Iterator[Event]:
    """`screen_states` then `events`: a frame stream → behaviour events, yielded as they become final; with
    ``live``, each view is also yielded (``final=False``) as soon as its screen state is confirmed, and
    labels wait for their batch at most ``config.max_wait`` (`LIVE_MAX_WAIT` unless set) and a screen is
    grounded once it has held still ``config.hold`` (`LIVE_HOLD` unless set). One path for recordings and
    live captures: with the same ``max_wait`` and ``hold`` the final events are the same with or without
    ``live``."""
    config = config or StreamConfig()
    if live:
        config = dataclasses.replace(config, max_wait=LIVE_MAX_WAIT if config.max_wait is None else config.max_wait,
                                     hold=LIVE_HOLD if config.hold is None else config.hold)
    stats = stats if stats is not None else StreamStats()
    return events(screen_states(frames, grounder, config, stats), logs=logs, item_ids=item_ids, config=config,
                  stats=stats, live=live)


# -------------------------------------------------------------------------------------------- output

def write_events(stream_events: Iterable[Event], path: str | os.PathLike, *, user: str = "user",
                 row_group: int = 4096) -> int:
    """Write events as a parquet table (`mmrec.events.EVENT_FIELDS`: the event's columns and ``user``, whose
    recording it is) at ``path``; returns the number of rows. `mmrec.events.read_events` reads it back.

    Rows go out in row groups of ``row_group`` (memory holds one group), into a temporary file renamed into
    place at the end (`mmrec.io.atomic_path`). Events that are not final (a live stream's early views,
    `Event.final`) are passed over: their final version is written. If the events stop with an error, the
    events finished before it are still written, then the error propagates.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmrec.io import atomic_path

    if not isinstance(user, str) or not user:
        raise ValueError(f"write_events: user must be a non-empty string, got {user!r}")
    schema = event_schema()
    path = Path(path)
    rows: list[dict[str, Any]] = []
    count = 0
    failure: BaseException | None = None
    with atomic_path(path) as tmp:
        writer = pq.ParquetWriter(str(tmp), schema)

        def drain() -> None:
            nonlocal count
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                count += len(rows)
                rows.clear()

        try:
            for event in stream_events:
                if not event.final:
                    continue
                rows.append({"user": user, **event.to_row()})
                if len(rows) >= row_group:
                    drain()
        except BaseException as err:  # keep what was finished, then let the error go on
            logger.warning("the event stream stopped with an error; writing the %d events finished before it to %s",
                           count + len(rows), path)
            failure = err
        finally:
            drain()
            writer.close()
    if failure is not None:
        raise failure
    return count


def open_frames(source: str | os.PathLike, **options: Any) -> FrameStream:
    """The frame source for a path: a folder of ``*.tar`` shards or one shard/brace pattern → `shard_frames`,
    another folder → `image_folder_frames`, a file → `video_frames` (``options`` go to the source)."""
    from mmrec.datasets import frames as sources

    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        shards = sorted(path.glob("*.tar"))
        images = [p for p in path.iterdir() if p.suffix.lower() in sources.IMAGE_SUFFIXES]
        if shards and images:  # one would be read and the other ignored without a word
            raise ValueError(f"{path} holds both frame shards (*.tar, e.g. {shards[0].name}) and images (e.g. "
                             f"{images[0].name}); keep one recording per folder")
        return sources.shard_frames([str(p) for p in shards], **options) if shards else \
            sources.image_folder_frames(path, **options)
    if text.endswith(".tar") or ("{" in text and ".." in text):
        return sources.shard_frames(text, **options)
    return sources.video_frames(path, **options)
