"""Frame sources of a screen stream: a video, an image folder, webdataset shards, an iterator or a live capture.

Every source yields the same records, `Frame` (index, timestamp in seconds, HxWx3 uint8 image, source)::

    video file ── keyframe segments, decord get_batch in order, bounded queue ─┐
    image folder (timestamp in the file name or in timestamps.json) ──────────┤
    frame shards (<key>.jpg + <key>.json {"timestamp", "index"}) ─────────────┼─► checks ─► Frame
    any iterator of (timestamp, PIL image or ndarray) ────────────────────────┤
    live capture: a producer pushes (timestamp, image), bounded buffer ───────┤
    raw RGB24 video on a pipe (ffmpeg -f rawvideo -pix_fmt rgb24 -) ──────────┘

Each source function returns a `FrameStream`: an iterator of `Frame` that carries a `FrameStats` (frames
read, frames skipped by reason). The checks every source shares: the first frame fixes the size, and a
later frame of another size is skipped (``on_wrong_size="skip"``) or resized to it (``"resize"``); when
skipping, `SIZE_CHANGE_FRAMES` frames in a row of one other size make it the stream's size (a rotated phone, or
one odd first frame, must not cost the rest of the recording; logged); a
timestamp that is not a finite number, or earlier than the last delivered frame's, skips its frame. One
bad frame never stops a stream: it is counted, and logged with ``logging.warning`` (the first few of each
reason; a summary when the stream ends). Equal timestamps are allowed (coarse capture clocks).

`write_frame_shards` writes any frame stream as shards that `shard_frames` reads back. `LiveFrames` is the
source of a capture that pushes frames as the screen is recorded (a device does not wait for its consumer:
when the consumer falls behind and the buffer is full, the oldest waiting frame is dropped and counted);
`LiveFrames.replay` pushes a recording in real time, as a device would, to measure a live consumer.
`raw_frames` reads raw video from a pipe (``mmrec stream -``: a capture tool's output, as it comes).
"""
from __future__ import annotations

import io
import itertools
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import webdataset as wds
from PIL import Image

from mmrec.datasets.shards import _expand_urls, _tar_samples, _write_tar, decode_rgb, shard_name
from mmrec.io import atomic_write
from mmrec.skips import Skips

logger = logging.getLogger(__name__)

SKIP_REASONS = {
    "wrong_size": "frame size differs from the stream's first frame",
    "backwards_timestamp": "timestamp earlier than the previous frame's",
    "bad_timestamp": "timestamp missing, not a number or not finite",
    "bad_image": "image does not decode, or is not an RGB, RGBA or grey uint8 picture",
    "bad_item": "iterator item is not a (timestamp, image) pair",
    "dropped": "live frame dropped: the consumer fell behind and the buffer was full",
    "undecodable_video": "video frames that did not decode (decoding goes on at the next keyframe segment)",
    "unreadable_shard": "shard file could not be opened",
    "damaged_shard": "shard is truncated or corrupt; its frames after the damage are lost",
    "bad_json": "frame json does not parse or is not an object",
    "incomplete_sample": "shard sample without json or without image",
    "cut_short": "video file cut short: its header's duration outlasts its frames (counted at its frame rate)",
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_NAME_TIMESTAMP = re.compile(r"(?:\d+_)?(\d+(?:\.\d+)?)")  # "1700000000.123" or "000123_1700000000.123"


@dataclass(eq=False)
class Frame:
    """One frame: its position in the source, its time in seconds, its pixels (HxWx3 uint8), where it came from.

    ``index`` counts every frame of the source, skipped ones included, so a gap shows a skip.
    """

    index: int
    timestamp: float
    image: np.ndarray
    source: str


class FrameStats:
    """Frames read and skipped (by reason, a key of `SKIP_REASONS`) by one stream; safe across threads.

    The first ``max_logged`` skips of each reason are logged with their detail; later ones only counted.
    """

    def __init__(self, name: str = "frames", max_logged: int = 5) -> None:
        self.name, self.max_logged = name, max_logged
        self.read = 0
        self.skips = Skips(max_examples=max_logged)  # {reason: count}, first details per reason
        self._lock = threading.Lock()

    def record_read(self) -> None:
        """Count one delivered frame."""
        with self._lock:
            self.read += 1

    def record_skip(self, reason: str, *, key: str | None = None, url: str | None = None, detail: str = "",
                    count: int = 1) -> None:
        """Count ``count`` frames (or one shard) skipped for ``reason`` and log the first few of each reason."""
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; known: {sorted(SKIP_REASONS)}")
        with self._lock:
            seen = self.skips.get(reason, 0)
            self.skips.add(reason, detail, count)
        where = " ".join(f"{k}={v}" for k, v in (("key", key), ("url", url)) if v is not None)
        if seen < self.max_logged:
            logger.warning("%s: skipped %d (%s: %s) %s %s", self.name, count, reason, SKIP_REASONS[reason], where,
                           detail)
            if seen + 1 == self.max_logged:
                logger.warning("%s: further %r skips are counted, not logged", self.name, reason)

    @property
    def skipped(self) -> int:
        """All skipped frames (a damaged or unreadable shard counts one)."""
        return self.skips.total

    def log_summary(self) -> None:
        """Log frames read and skips by reason (at warning level when anything was skipped)."""
        level = logging.WARNING if self.skips else logging.INFO
        logger.log(level, "%s: %d frames read, %d skipped %s", self.name, self.read, self.skipped, self.skips or "")

    def __repr__(self) -> str:
        return f"FrameStats({self.name!r}, read={self.read}, skips={self.skips})"


class FrameStream:
    """An iterator of `Frame` with its `FrameStats`; ``close()`` (or leaving a ``with`` block) stops it early.

    Closing a video stream stops its decoding thread and frees its queue.
    """

    def __init__(self, frames: Iterator[Frame], stats: FrameStats) -> None:
        self._frames = frames
        self.stats = stats

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> Frame:
        return next(self._frames)

    def close(self) -> None:
        """Stop the stream and release its resources (a video's decoding thread)."""
        self._frames.close()

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- shared checks

def as_rgb_array(image: Any) -> np.ndarray:
    """A PIL image, or a uint8 array HxW / HxWx1 / HxWx3 / HxWx4, as an HxWx3 uint8 array (alpha dropped).

    Raises `ValueError` for anything else (another dtype has no agreed pixel scale).
    """
    if isinstance(image, Image.Image):
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image is a {type(image).__name__}, not a PIL image or numpy array")
    if image.dtype != np.uint8:
        raise ValueError(f"image array has dtype {image.dtype}, expected uint8")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
        raise ValueError(f"image array has shape {image.shape}, expected HxW, HxWx1, HxWx3 or HxWx4")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[:, :, :3] if image.shape[2] == 4 else image


SIZE_CHANGE_FRAMES = 5  # frames in a row of one new size that make it the stream's size (when skipping)


class _Checks:
    """The checks every source shares: one frame size (until `SIZE_CHANGE_FRAMES` in a row of another),
    finite timestamps that never go backwards."""

    def __init__(self, stats: FrameStats, on_wrong_size: str) -> None:
        if on_wrong_size not in ("skip", "resize"):
            raise ValueError(f"on_wrong_size must be 'skip' or 'resize', got {on_wrong_size!r}")
        self.stats, self.resize = stats, on_wrong_size == "resize"
        self.shape: tuple[int, ...] | None = None
        self.other: tuple[tuple[int, ...], int] | None = None  # a size other than the stream's, frames in a row
        self.last_time = -math.inf

    def __call__(self, index: int, timestamp: Any, image: Any, source: str) -> Frame | None:
        is_number = isinstance(timestamp, (int, float, np.integer, np.floating)) and not isinstance(timestamp, bool)
        time = float(timestamp) if is_number else math.nan
        if not math.isfinite(time):
            self.stats.record_skip("bad_timestamp", key=source, detail=f"frame {index}: timestamp {timestamp!r:.40}")
            return None
        if time < self.last_time:
            self.stats.record_skip("backwards_timestamp", key=source,
                                   detail=f"frame {index}: {time:.6f} s after a frame at {self.last_time:.6f} s")
            return None
        try:
            pixels = as_rgb_array(image)
        except ValueError as exn:
            self.stats.record_skip("bad_image", key=source, detail=f"frame {index}: {exn}")
            return None
        if self.shape is None:
            self.shape = pixels.shape
        elif pixels.shape != self.shape and self.resize:
            size = (self.shape[1], self.shape[0])
            pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
        elif pixels.shape != self.shape:
            run = self.other[1] + 1 if self.other is not None and self.other[0] == pixels.shape else 1
            self.other = (pixels.shape, run)
            if run < SIZE_CHANGE_FRAMES:
                self.stats.record_skip("wrong_size", key=source, detail=f"frame {index}: {pixels.shape[1]}x"
                                       f"{pixels.shape[0]}, stream is {self.shape[1]}x{self.shape[0]}")
                return None
            logger.warning("%s: frame size %dx%d from frame %d on (%d frames in a row), was %dx%d", source,
                           pixels.shape[1], pixels.shape[0], index, run, self.shape[1], self.shape[0])
            self.shape = pixels.shape
        self.other = None
        self.last_time = time
        self.stats.record_read()
        return Frame(index, time, pixels, source)


def _checked(raw: Iterator[tuple[int, Any, Any, str]], checks: _Checks) -> Iterator[Frame]:
    try:
        for index, timestamp, image, source in raw:
            frame = checks(index, timestamp, image, source)
            if frame is not None:
                yield frame
    finally:
        checks.stats.log_summary()


# ---------------------------------------------------------------------------------------------- video

SEGMENT_BYTES = 256 << 20  # decoded frames one segment may hold; larger segments cost less per frame


def video_frames(path: str | os.PathLike, *, batch_size: int = 32, prefetch: int = 2,
                 segment_frames: int | None = None, segment_bytes: int = SEGMENT_BYTES,
                 num_threads: int = 1, start_time: float = 0.0, on_wrong_size: str = "skip",
                 stats: FrameStats | None = None) -> FrameStream:
    """Frames of a video file, decoded by decord in order, in memory bounded whatever the video's length.

    decord's reader decodes ahead without limit: its first ``get_batch`` hands the decoder thread every
    packet it can read before the first frame comes out (for a screen recording's tiny packets, often
    the whole file), and the thread then decodes them all into memory, however slowly frames are taken
    (measured: 1000 frames of 640x360 held after one ``get_batch`` of 16). So a worker thread cuts the
    file, with PyAV and without re-encoding, into segments of ``segment_frames`` frames or more (each
    starts at a keyframe, so it decodes on its own; no seeks anywhere) and opens one decord reader per
    segment, reading it with ``get_batch`` on consecutive indices in batches of ``batch_size`` (the next
    segment is remuxed and its reader opened in a thread of its own meanwhile). Batches go through a queue
    of at most ``prefetch``. Memory: about one segment (``segment_frames`` up to the next keyframe; a long
    keyframe interval makes segments longer) plus ``prefetch + 1`` batches and the next segment's packets.
    ``segment_frames=None`` sizes segments to hold ``segment_bytes`` of decoded frames (at least 16):
    each segment costs a remux and a reader, so small frames want long segments (measured at 320x180,
    against bare decord: 64 frames 0.73×, 256 frames 0.82×, 1024 frames 0.91×; the default 256 MiB is
    1553 frames at 320x180, 388 at 640x360).

    A frame's ``timestamp`` is ``start_time`` plus its start time as decord reports it for the whole
    file (``get_frame_timestamp``): seconds from the stream's first frame (a file whose first frame sits
    at 2 s reports 0 for it); variable frame rates keep their real times. ``image`` is a view into its
    batch: copy it to keep one frame for long without keeping the batch. ``num_threads``: decoder
    threads per reader (decord's 0: one per core). The file is indexed once at the start (decord reads
    every packet header, decoding nothing; the index is a few bytes per frame).

    A missing file, or one decord cannot open, raises at once (`FileNotFoundError`, `ValueError`, naming
    the path). A segment that fails to decode loses its frames from the failing batch on (counted as
    ``undecodable_video``, logged); decoding goes on with the next segment. If demuxing fails, the stream
    ends after the last frame that decoded and the rest are counted. A container cut short (e.g. a
    truncated mkv) holds fewer frames: decord's index holds only what is there; where the header still gives
    the whole duration, the missing stretch is counted (``cut_short``, at the frame rate) and logged.
    """
    if batch_size < 1 or prefetch < 1 or (segment_frames is not None and segment_frames < 1) or segment_bytes < 1:
        raise ValueError(f"batch_size, prefetch, segment_frames and segment_bytes must be at least 1, got "
                         f"{batch_size}, {prefetch}, {segment_frames} and {segment_bytes}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file {path} does not exist" if not os.path.exists(path)
                                else f"video path {path} is not a file")
    index = _open_video(path, num_threads)  # the whole file's frame index; it decodes nothing
    count = len(index)
    if count == 0:
        raise ValueError(f"cannot read video {path}: decord finds no video frames in it")
    times = index.get_frame_timestamp(list(range(count)))[:, 0].astype(np.float64) + float(start_time)
    del index
    stats = FrameStats(f"video {path}") if stats is None else stats
    height, width, duration = _video_header(path)
    _count_cut_short(times - float(start_time), duration, stats, path)
    if segment_frames is None:
        segment_frames = max(16, segment_bytes // max(1, 3 * width * height))
    decoder = _VideoDecoder(path, times, batch_size, prefetch, segment_frames, num_threads, stats)
    return FrameStream(_checked(decoder.frames(), _Checks(stats, on_wrong_size)), stats)


def _open_video(path: str | io.BytesIO, num_threads: int, name: str | None = None) -> Any:
    import decord

    try:
        return decord.VideoReader(path, num_threads=num_threads)
    except Exception as exn:  # decord raises RuntimeError or its DECORDError with C++ log text
        detail = str(exn).strip().splitlines()[-1][:300] if str(exn).strip() else type(exn).__name__
        raise ValueError(f"cannot read video {name or path}: decord could not open it ({detail}); it is not a "
                         f"video decord/FFmpeg can read, or it is damaged (e.g. an mp4 cut short)") from exn


def _video_header(path: str) -> tuple[int, int, float | None]:
    """(height, width) of the video stream decord reads and the container's duration in seconds (None where the
    header has none), from its header (PyAV; nothing decoded)."""
    import av

    with av.open(path) as source:
        context = source.streams.best("video").codec_context
        duration = source.duration / av.time_base if source.duration else None
        return int(context.height), int(context.width), duration


CUT_SHORT_SECONDS = 1.0  # a header's duration may outlast the frames this much (rounding, a longer audio track)


def _count_cut_short(times: np.ndarray, duration: float | None, stats: FrameStats, path: str) -> None:
    """Count the frames a file cut short lost: the stretch its header's ``duration`` outlasts the last of the
    frame ``times`` (from 0), at their median interval, when longer than `CUT_SHORT_SECONDS`."""
    if duration is None or len(times) < 2:
        return
    step = float(np.median(np.diff(times)))
    covered = float(times[-1]) + step
    if step > 0 and duration - covered > max(CUT_SHORT_SECONDS, 2 * step):
        stats.record_skip("cut_short", key=path, count=int(round((duration - covered) / step)),
                          detail=f"the header says {duration:.2f} s, the frames end at {covered:.2f} s")


def _keyframe_segments(path: str, segment_frames: int) -> Iterator[tuple[int, bytes]]:
    """The video stream of ``path`` as small matroska files of whole GOPs: (frame count, file bytes).

    Packets are copied, not re-encoded. Each segment holds ``segment_frames`` frames or more: it is
    closed at the first keyframe after that. The stream is FFmpeg's best video stream, the one decord
    reads. A keyframe is taken to start a closed GOP (as x264, NVENC and screen recorders write by
    default); a segment whose frames do not decode on their own is counted as lost by the caller.
    """
    import av

    with av.open(path) as source:
        stream = source.streams.best("video")
        packets: list[Any] = []
        for packet in source.demux(stream):
            if packet.size == 0 and packet.pts is None:  # the demuxer's end-of-stream marker
                continue
            if packet.is_keyframe and len(packets) >= segment_frames:
                yield len(packets), _mux_segment(stream, packets)
                packets = []
            packets.append(packet)
        if packets:
            yield len(packets), _mux_segment(stream, packets)


def _mux_segment(template: Any, packets: list[Any]) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream_from_template(template)
        for packet in packets:
            packet.stream = stream
            out.mux(packet)
    return buffer.getvalue()


class _VideoDecoder:
    """Segments decoded by decord in a worker thread, handed over in batches through a bounded queue."""

    def __init__(self, path: str, times: np.ndarray, batch_size: int, prefetch: int, segment_frames: int,
                 num_threads: int, stats: FrameStats) -> None:
        self.path, self.times, self.batch_size, self.prefetch = path, times, batch_size, prefetch
        self.segment_frames, self.num_threads, self.stats = segment_frames, num_threads, stats

    def frames(self) -> Iterator[tuple[int, float, np.ndarray, str]]:
        batches = _read_ahead(self._batches(), self.prefetch, f"decord {self.path}")
        try:
            for start, batch in batches:
                for k in range(len(batch)):
                    yield start + k, self.times[start + k], batch[k], self.path
        finally:
            batches.close()  # stops the decoding thread

    def _batches(self) -> Iterator[tuple[int, np.ndarray]]:
        """(index of the first frame, uint8 ``[n, H, W, 3]``) of every segment in order; frames that do not come
        out (a damaged file) are counted as skips."""
        done = yield from self._decode_segments()
        if done < len(self.times):
            self.stats.record_skip("undecodable_video", key=self.path, count=len(self.times) - done,
                                   detail=f"frames {done}..{len(self.times) - 1} lost: {self.failure}")

    def _decode_segments(self) -> Iterator[tuple[int, np.ndarray]]:
        """Decode segment after segment; return the index after the last frame handled (sent or counted lost)."""
        import av

        done, self.failure = 0, "the file ends before them"
        segments = _read_ahead(self._opened(_keyframe_segments(self.path, self.segment_frames)), 1, "segments ahead")
        try:
            while True:
                try:
                    segment = next(segments, None)
                except (av.error.FFmpegError, OSError) as exn:
                    self.failure = f"demuxing failed: {type(exn).__name__}: {exn}"
                    return done
                if segment is None:
                    return done
                size, reader = segment
                if done + size > len(self.times):
                    self.failure = f"the demuxer finds more frames than decord's index of the file ({len(self.times)})"
                    return done
                sent = yield from self._decode_segment(reader, done, size)
                if sent < size:  # a damaged stretch: the next segment starts at a keyframe, decodes on its own
                    self.stats.record_skip("undecodable_video", key=self.path, count=size - sent,
                                           detail=f"frames {done + sent}..{done + size - 1} lost: {self.failure}")
                done += size
        finally:
            segments.close()  # stops the read-ahead thread, which closes the demuxer's file

    def _opened(self, segments: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, Any]]:
        """(frame count, decord reader of the segment, or the error opening it raised); opening decodes nothing."""
        first = 0
        try:
            for size, data in segments:
                try:
                    reader = _open_video(io.BytesIO(data), self.num_threads, name=f"{self.path} (frames {first}..)")
                except Exception as exn:
                    reader = exn
                yield size, reader
                first += size
        finally:
            segments.close()  # closes the demuxer's file

    def _decode_segment(self, reader: Any, first: int, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """The segment's batches; returns how many frames came out (fewer when it fails: ``self.failure``)."""
        sent = 0
        try:
            if isinstance(reader, Exception):
                raise reader
            if len(reader) != size:
                raise ValueError(f"decord finds {len(reader)} frames in the segment, the demuxer {size}")
            for start in range(0, size, self.batch_size):
                batch = reader.get_batch(list(range(start, min(size, start + self.batch_size)))).asnumpy()
                yield first + start, batch
                sent += len(batch)
        except Exception as exn:
            self.failure = f"{type(exn).__name__}: {str(exn).strip()[-300:]}"
        return sent


def _read_ahead(items: Iterator[Any], depth: int, name: str) -> Iterator[Any]:
    """``items`` made in a thread of their own (``name``), at most ``depth`` ahead of the consumer (decoded
    batches ahead of the stream's reader; the next segment remuxed and its reader opened while this one
    decodes); what making them raises is raised here, in order. Closing the generator ends the thread (and
    closes ``items`` there)."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    closed = threading.Event()

    def make() -> None:
        try:
            for item in items:
                while not closed.is_set():
                    try:
                        ready.put((item, None), timeout=0.05)
                        break
                    except queue.Full:
                        continue
                else:
                    return
            ready.put((done, None))
        except BaseException as exn:  # a bug here must reach the consumer, not die with the thread
            ready.put((None, exn))
        finally:
            items.close()

    maker = threading.Thread(target=make, name=name, daemon=True)
    maker.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        closed.set()
        while maker.is_alive():  # free a maker blocked on a full queue
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        maker.join()


# ---------------------------------------------------------------------------------------- image folder

def image_folder_frames(folder: str | os.PathLike, *, sidecar: str = "timestamps.json",
                        on_wrong_size: str = "skip", stats: FrameStats | None = None) -> FrameStream:
    """Frames of the image files in ``folder`` (not its subfolders), in timestamp order (name breaks ties).

    Timestamps come from ``folder/<sidecar>`` when it exists (a JSON object: file name → seconds), else
    from the file name: ``<seconds>.<ext>`` (``1700000000.123.jpg``) or ``<number>_<seconds>.<ext>``
    (``000123_1700000000.123.jpg``). A file without a usable timestamp, or one that does not decode, is a
    counted skip. ``index`` is the file's position in timestamp order. Raises `ValueError` when the
    folder holds no image file, or when the sidecar is not a JSON object.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    names = sorted(p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not names:
        raise ValueError(f"image folder {root} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    stats = FrameStats(f"image folder {root}") if stats is None else stats
    known = _sidecar_times(root / sidecar) if (root / sidecar).is_file() else None
    timed: list[tuple[float, str]] = []
    for name in names:
        if known is not None:
            time, why = (known[name], "") if name in known else (None, f"no entry in {sidecar}")
        else:
            match = _NAME_TIMESTAMP.fullmatch(Path(name).stem)
            time, why = (float(match.group(1)), "") if match else (None, "name holds no timestamp")
        if time is None or isinstance(time, bool) or not isinstance(time, (int, float)) or not math.isfinite(time):
            stats.record_skip("bad_timestamp", key=str(root / name), detail=why or f"timestamp {time!r:.40}")
        else:
            timed.append((float(time), name))
    timed.sort()
    raw = ((i, time, root / name) for i, (time, name) in enumerate(timed))
    return FrameStream(_checked(_load_images(raw, stats), _Checks(stats, on_wrong_size)), stats)


def _sidecar_times(path: Path) -> dict[str, Any]:
    try:
        times = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exn:
        raise ValueError(f"timestamp sidecar {path} is not readable JSON: {exn}") from exn
    if not isinstance(times, dict):
        raise ValueError(f"timestamp sidecar {path} holds a {type(times).__name__}; expected an object "
                         f"mapping file name to seconds")
    return times


def _load_images(raw: Iterator[tuple[int, float, Path]], stats: FrameStats) -> Iterator[tuple[int, float, Any, str]]:
    for index, time, path in raw:
        try:
            with Image.open(path) as image:
                image.load()
                pixels = image if image.mode == "RGB" else image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exn:
            stats.record_skip("bad_image", key=str(path), detail=f"{type(exn).__name__}: {exn}")
            continue
        yield index, time, pixels, str(path)


# ---------------------------------------------------------------------------------------------- shards

def write_frame_shards(frames: Iterable[Frame], out_dir: str | os.PathLike, *, frames_per_shard: int = 1000,
                       prefix: str = "frames", image_format: str = "jpg", jpeg_quality: int = 95) -> list[Path]:
    """Write frames as tar shards ``<prefix>-000000.tar, ...`` in ``out_dir``; return their paths in order.

    Each frame is a sample ``<n>.jpg`` (or ``.png``, lossless) + ``<n>.json`` ``{"index", "timestamp",
    "source"}``, ``n`` counting the frames written. Frames are consumed as they come (memory holds one
    frame). Each shard is written to a hidden temp file and renamed into place, so a shard file is either
    complete or absent. Raises `ValueError` when ``frames`` is empty.
    """
    if frames_per_shard < 1:
        raise ValueError(f"frames_per_shard must be at least 1, got {frames_per_shard}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    paths: list[Path] = []
    written = 0
    while (first := next(frames, None)) is not None:
        chunk = itertools.chain([first], itertools.islice(frames, frames_per_shard - 1))
        samples = (_frame_sample(frame, written + k, image_format, jpeg_quality) for k, frame in enumerate(chunk))
        path = out / shard_name(prefix, len(paths))
        counter = _Counting(samples)
        atomic_write(path, lambda f: _write_tar(f, counter))
        written += counter.n
        paths.append(path)
    if not paths:
        raise ValueError("no frames to write")
    logger.info("wrote %d frames into %d shards in %s", written, len(paths), out)
    return paths


class _Counting:
    def __init__(self, items: Iterator[Any]) -> None:
        self.items, self.n = items, 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.items:
            self.n += 1
            yield item


def _frame_sample(frame: Frame, n: int, image_format: str, jpeg_quality: int) -> dict[str, Any]:
    buffer = io.BytesIO()
    image = Image.fromarray(as_rgb_array(frame.image))
    if image_format == "jpg":
        image.save(buffer, format="JPEG", quality=jpeg_quality)
    else:
        image.save(buffer, format="PNG")
    meta = {"index": int(frame.index), "timestamp": float(frame.timestamp), "source": str(frame.source)}
    return {"__key__": f"{n:09d}", image_format: buffer.getvalue(),
            "json": json.dumps(meta, allow_nan=False).encode("utf-8")}


def shard_frames(urls: str | os.PathLike | Sequence[str | os.PathLike], *, on_wrong_size: str = "skip",
                 stats: FrameStats | None = None) -> FrameStream:
    """Frames stored in webdataset shards (``<key>.jpg|png|webp`` + ``<key>.json`` with ``"timestamp"``).

    ``urls``: shard paths in stream order, or one string in brace notation (``"out/frames-{000000..000003}.tar"``).
    Read by webdataset's pipeline (shard list → url opener → tar expander → grouping by key), in order,
    in one reader: a stream is a time series, so it is not split across DataLoader workers. ``index`` is
    the json's ``"index"`` when it has one, else the sample's position; ``source`` is ``<url>#<key>``.
    An unreadable shard, a truncated or corrupt shard (frames before the damage still arrive), a sample
    without json or image, bad json or an image that does not decode: each a counted, logged skip.
    """
    shard_urls = _expand_urls(urls)
    more = f" (+{len(shard_urls) - 1} more)" if len(shard_urls) > 1 else ""
    stats = FrameStats(f"frame shards {shard_urls[0]}{more}") if stats is None else stats
    samples = wds.DataPipeline(wds.SimpleShardList(shard_urls), _tar_samples(stats))
    return FrameStream(_checked(_shard_records(iter(samples), stats), _Checks(stats, on_wrong_size)), stats)


def _shard_records(samples: Iterator[dict], stats: FrameStats) -> Iterator[tuple[int, Any, Any, str]]:
    for position, sample in enumerate(samples):
        key, url = sample.get("__key__"), sample.get("__url__")
        source = f"{url}#{key}"
        image_bytes = next((sample[ext] for ext in ("jpg", "png", "webp") if ext in sample), None)
        if "json" not in sample or image_bytes is None:
            parts = sorted(k for k in sample if not k.startswith("__"))
            stats.record_skip("incomplete_sample", key=key, url=url, detail=f"members: {parts}")
            continue
        try:
            meta = json.loads(sample["json"])
        except (UnicodeDecodeError, json.JSONDecodeError) as exn:
            stats.record_skip("bad_json", key=key, url=url, detail=str(exn))
            continue
        if not isinstance(meta, dict):
            stats.record_skip("bad_json", key=key, url=url, detail=f"json is a {type(meta).__name__}")
            continue
        try:
            image = decode_rgb(image_bytes)
        except (OSError, ValueError, Image.DecompressionBombError) as exn:
            stats.record_skip("bad_image", key=key, url=url, detail=f"{type(exn).__name__}: {exn}")
            continue
        index = meta.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else position
        yield index, meta.get("timestamp"), image, source


# -------------------------------------------------------------------------------------------- iterator

def iterator_frames(items: Iterable[Any], *, source: str = "iterator", on_wrong_size: str = "skip",
                    stats: FrameStats | None = None) -> FrameStream:
    """Frames from any iterable of ``(timestamp, image)`` pairs (live capture); image a PIL image or ndarray.

    ``index`` is the item's position in ``items``; ``source`` names the stream in every frame. The
    iterable is consumed lazily, one item per frame. An item that is not a pair is a counted skip
    (``bad_item``); timestamps are seconds (int or float).
    """
    stats = FrameStats(source) if stats is None else stats

    def raw() -> Iterator[tuple[int, Any, Any, str]]:
        for index, item in enumerate(items):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                stats.record_skip("bad_item", key=source, detail=f"item {index} is a {type(item).__name__}")
                continue
            timestamp, image = item
            yield index, timestamp, image, source

    return FrameStream(_checked(raw(), _Checks(stats, on_wrong_size)), stats)


# ---------------------------------------------------------------------------------------- live capture

class LiveFrames(FrameStream):
    """A live capture as a frame stream: a producer (a capture callback or thread) `put` calls ``(timestamp,
    image)`` as the screen is recorded, the consumer iterates `Frame` records in order, waiting for the next one.

    A device does not wait for its consumer: up to ``capacity`` frames wait in a buffer, and a `put` into a
    full buffer drops the oldest waiting frame (counted as ``dropped``; the freshest screen matters most to a
    live consumer). `end` (producer) ends the stream once the buffered frames are read; `close` (consumer)
    stops it, after which `put` returns False. ``index`` counts every frame put, dropped ones included, so a
    gap shows a drop; frames then pass the checks every source shares (one size, timestamps never going
    backwards). Safe across threads (one producer, one consumer).
    """

    def __init__(self, capacity: int = 64, *, source: str = "live", on_wrong_size: str = "skip",
                 stats: FrameStats | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"LiveFrames capacity must be at least 1 frame, got {capacity}")
        stats = FrameStats(source) if stats is None else stats
        self.capacity, self.source = capacity, source
        self._buffer: deque[tuple[int, Any, Any]] = deque()
        self._ready = threading.Condition()
        self._count = 0  # frames put
        self._ended = self._closed = False
        super().__init__(_checked(self._raw(), _Checks(stats, on_wrong_size)), stats)

    def put(self, timestamp: float, image: Any) -> bool:
        """Push one frame (timestamp in seconds, PIL image or uint8 array; not copied: do not change it after);
        returns False once the consumer has closed the stream. Never blocks on a slow consumer."""
        with self._ready:
            if self._closed:
                return False
            if self._ended:
                raise ValueError(f"{self.source}: put after end()")
            if len(self._buffer) >= self.capacity:
                index, _, _ = self._buffer.popleft()
                self.stats.record_skip("dropped", key=self.source, detail=f"frame {index}")
            self._buffer.append((self._count, timestamp, image))
            self._count += 1
            self._ready.notify()
        return True

    def end(self) -> None:
        """The capture is over: the stream ends after the frames still buffered."""
        with self._ready:
            self._ended = True
            self._ready.notify()

    def close(self) -> None:
        """Stop the stream (consumer side): buffered frames are discarded and later `put` calls return False."""
        with self._ready:
            self._closed = True
            self._buffer.clear()
            self._ready.notify()
        super().close()

    @property
    def waiting(self) -> int:
        """Frames put and not yet read."""
        with self._ready:
            return len(self._buffer)

    def _raw(self) -> Iterator[tuple[int, Any, Any, str]]:
        while True:
            with self._ready:
                while not self._buffer and not self._ended and not self._closed:
                    self._ready.wait()
                if not self._buffer:
                    return
                index, timestamp, image = self._buffer.popleft()
            yield index, timestamp, image, self.source

    def replay(self, items: Iterable[Any], *, speed: float = 1.0, clock: Any = time.perf_counter,
               sleep: Any = time.sleep) -> "Replay":
        """Push ``items`` (`Frame` records or ``(timestamp, image)`` pairs, e.g. `video_frames` of a recording)
        in real time from a thread of their own, as a device would: the frame at timestamp ``t`` is put at
        wall time ``start + (t - t0) / speed`` (``t0``: the first frame's timestamp), then `end` is called.
        Returns the running `Replay` (the wall time each frame was put, for measuring delays). An item that is
        not ready in time (a slow decoder) is put late, at once; the lateness is recorded."""
        if not speed > 0:
            raise ValueError(f"replay speed must be > 0, got {speed!r}")
        replay = Replay(self, items, speed, clock, sleep)
        replay.start()
        return replay


class Replay(threading.Thread):
    """The thread `LiveFrames.replay` pushes a recording from. ``put_times``: the ``clock`` time each frame
    was put, by put order; ``start_time``: the clock time the first frame was due; ``error``: what stopped
    it, if anything (the stream still ends)."""

    def __init__(self, live: LiveFrames, items: Iterable[Any], speed: float, clock: Any, sleep: Any) -> None:
        super().__init__(name=f"replay {live.source}", daemon=True)
        self.live, self.items, self.speed, self.clock, self.sleep = live, items, speed, clock, sleep
        self.put_times: list[float] = []
        self.start_time: float | None = None
        self.max_late = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        """Put each item at its due time (copying a `Frame`'s pixels: a source's frame may be a view of its
        batch), then end the stream."""
        first = None
        try:
            for item in self.items:
                if isinstance(item, Frame):
                    timestamp, image = item.timestamp, np.array(item.image)
                else:
                    timestamp, image = item
                if first is None:
                    first, self.start_time = float(timestamp), self.clock()
                due = self.start_time + (float(timestamp) - first) / self.speed
                wait = due - self.clock()
                if wait > 0:
                    self.sleep(wait)
                else:
                    self.max_late = max(self.max_late, -wait)
                self.put_times.append(self.clock())
                if not self.live.put(timestamp, image):
                    return
        except BaseException as exn:  # kept for the caller; the consumer still sees the stream end
            self.error = exn
        finally:
            close = getattr(self.items, "close", None)
            if close is not None:
                close()
            if not self.live._closed:
                self.live.end()


def raw_frames(stream: Any, width: int, height: int, *, fps: float | None = None, source: str = "stdin",
               clock: Any = time.perf_counter, stats: FrameStats | None = None) -> FrameStream:
    """Frames of raw RGB24 video read from a binary stream as they come (a pipe from a capture tool, e.g.
    ``ffmpeg ... -f rawvideo -pix_fmt rgb24 -``): ``width * height * 3`` bytes per frame, rows top down.

    Timestamps: ``index / fps``, or without ``fps`` the ``clock`` time each frame finished arriving, counted
    from the first one (a live capture's own pace). A short last frame (the stream ended inside it) is a
    counted skip (``bad_image``).
    """
    if width < 1 or height < 1:
        raise ValueError(f"raw frames need a positive width and height, got {width}x{height}")
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        raise ValueError(f"raw frames of {width}x{height} are {width * height:,} pixels, more than Pillow's "
                         f"decompression-bomb guard allows ({Image.MAX_IMAGE_PIXELS:,}); a screen is far smaller")
    if fps is not None and not 0 < fps < math.inf:
        raise ValueError(f"raw frames: fps must be a positive number, got {fps!r}")
    stats = FrameStats(source) if stats is None else stats
    size = width * height * 3

    def raw() -> Iterator[tuple[int, Any, Any, str]]:
        first = None
        for index in itertools.count():
            data = bytearray()
            while len(data) < size:
                chunk = stream.read(size - len(data))
                if not chunk:
                    break
                data += chunk
            if len(data) < size:
                if data:
                    stats.record_skip("bad_image", key=source, detail=f"frame {index}: the stream ended after "
                                      f"{len(data)} of its {size} bytes")
                return
            now = clock()
            first = now if first is None else first
            image = np.frombuffer(bytes(data), np.uint8).reshape(height, width, 3)
            yield index, index / fps if fps is not None else now - first, image, source

    return FrameStream(_checked(raw(), _Checks(stats, "skip")), stats)
