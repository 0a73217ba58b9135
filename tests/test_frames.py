"""Frame sources: exact frames and timestamps from video, bounded memory, folders, shards, iterators, bad input."""
from __future__ import annotations

import io
import json
import logging
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mmrec.datasets import frames as frames_module
from mmrec.datasets.frames import (Frame, FrameStats, LiveFrames, image_folder_frames, iterator_frames,
                                   raw_frames, shard_frames, video_frames, write_frame_shards)
from mmrec.report import process_memory_mib

av = pytest.importorskip("av")
pytest.importorskip("decord")

WIDTH, HEIGHT, BLOCK_W, BLOCK_H = 160, 96, 20, 32  # 2 rows x 8 blocks of 20x32 px: 16 bits of frame number


def numbered_image(number: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A frame whose number survives lossy compression: 16 big black/white blocks (bit b = block b), plus text."""
    image = np.zeros((height, width, 3), np.uint8)
    for bit in range(16):
        if (number >> bit) & 1:
            row, col = divmod(bit, 8)
            image[row * BLOCK_H:(row + 1) * BLOCK_H, col * BLOCK_W:(col + 1) * BLOCK_W] = 255
    picture = Image.fromarray(image)
    ImageDraw.Draw(picture).text((4, 2 * BLOCK_H + 8), f"frame {number}", fill=(255, 255, 0))
    return np.asarray(picture)


def read_number(image: np.ndarray) -> int:
    """The number `numbered_image` drew: each block's centre patch, thresholded."""
    number = 0
    for bit in range(16):
        row, col = divmod(bit, 8)
        patch = image[row * BLOCK_H + 8:(row + 1) * BLOCK_H - 8, col * BLOCK_W + 5:(col + 1) * BLOCK_W - 5]
        number |= int(patch.mean() > 127) << bit
    return number


def write_video(path: Path, n: int, *, fps: int = 25, codec: str = "mpeg4", size: tuple[int, int] = (WIDTH, HEIGHT),
                pts_ms: list[int] | None = None, container_format: str | None = None, gop: int | None = None) -> Path:
    """Frames 0..n-1 (numbered) encoded with PyAV; ``pts_ms`` gives each frame's time in ms (variable rate)."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(numbered_image(i, *size), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {"mpeg4": write_video(root / "mpeg4.mp4", 200, fps=25),
            "x264": write_video(root / "x264.mp4", 150, fps=30, codec="libx264"),
            "mkv": write_video(root / "clip.mkv", 200, fps=25, container_format="matroska")}


# ---------------------------------------------------------------------------------------------- video

@pytest.mark.parametrize("name, fps, n", [("mpeg4", 25, 200), ("x264", 30, 150)])
def test_video_gives_every_frame_in_order_with_its_number_and_time(videos, name, fps, n):
    stream = video_frames(videos[name], batch_size=32)
    got = list(stream)
    assert [f.index for f in got] == list(range(n))
    assert [read_number(f.image) for f in got] == list(range(n))
    times = np.array([f.timestamp for f in got])
    np.testing.assert_array_less(np.abs(times - np.arange(n) / fps), 0.5 / fps)
    assert all(f.image.shape == (HEIGHT, WIDTH, 3) and f.image.dtype == np.uint8 for f in got)
    assert {f.source for f in got} == {str(videos[name])}
    assert (stream.stats.read, stream.stats.skipped) == (n, 0)


def test_video_cut_into_keyframe_segments_still_gives_exact_frames_and_times(tmp_path, monkeypatch):
    path = write_video(tmp_path / "gop.mp4", 130, fps=30, codec="libx264", gop=10)  # B-frames, keyframe every 10
    segments = []
    real_mux = frames_module._mux_segment
    monkeypatch.setattr(frames_module, "_mux_segment", lambda stream, packets: segments.append(len(packets))
                        or real_mux(stream, packets))
    got = list(video_frames(path, batch_size=7, segment_frames=25))
    assert [read_number(f.image) for f in got] == [f.index for f in got] == list(range(130))
    np.testing.assert_array_less(np.abs(np.array([f.timestamp for f in got]) - np.arange(130) / 30), 0.5 / 30)
    assert sum(segments) == 130 and len(segments) >= 4 and all(n >= 25 for n in segments[:-1])


def test_variable_frame_rate_and_late_start_keep_real_frame_times(tmp_path):
    gaps = [40 if i % 3 else 100 for i in range(60)]
    pts = list(2000 + np.concatenate([[0], np.cumsum(gaps[:-1])]))  # the first frame at 2 s
    path = write_video(tmp_path / "vfr.mp4", 60, pts_ms=[int(p) for p in pts])
    stream = video_frames(path, batch_size=7, start_time=100.0)
    got = list(stream)
    assert [read_number(f.image) for f in got] == list(range(60)) and stream.stats.skipped == 0
    # decord counts from the stream's first frame; start_time shifts the whole stream
    np.testing.assert_allclose([f.timestamp for f in got], 100.0 + (np.array(pts) - 2000) / 1000, atol=1e-3)


def test_truncated_video_gives_every_frame_before_the_cut(videos, tmp_path):
    data = videos["mkv"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[:len(data) // 2])
    stream = video_frames(cut)
    got = list(stream)
    assert 50 < len(got) < 200
    assert [read_number(f.image) for f in got] == [f.index for f in got] == list(range(len(got)))
    # the header still says 8 s (200 frames at 25 fps): the frames lost are counted, not silently missing
    assert stream.stats.skips == {"cut_short": 200 - len(got)}
    whole = video_frames(videos["mkv"])
    assert len(list(whole)) == 200 and whole.stats.skipped == 0


def test_damaged_stretch_of_video_is_counted_and_decoding_goes_on_after_it(videos, monkeypatch):
    real_mux = frames_module._mux_segment
    made = []

    def damaged_third_segment(stream, packets):
        made.append(len(packets))
        data = real_mux(stream, packets)
        return data[:40] if len(made) == 3 else data  # the third segment is cut to its first bytes

    monkeypatch.setattr(frames_module, "_mux_segment", damaged_third_segment)
    stream = video_frames(videos["mpeg4"], batch_size=10, segment_frames=30)
    got = list(stream)
    lost = range(sum(made[:2]), sum(made[:3]))
    assert [read_number(f.image) for f in got] == [f.index for f in got] == [i for i in range(200) if i not in lost]
    assert stream.stats.skips == {"undecodable_video": len(lost)}


def test_missing_or_unreadable_video_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        video_frames(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video " * 50)
    with pytest.raises(ValueError, match=r"cannot read video .*junk\.mp4"):
        video_frames(junk)
    with pytest.raises(ValueError, match="batch_size"):
        video_frames(junk, batch_size=0)


def test_closing_a_video_stream_early_stops_its_decoding_thread(videos):
    stream = video_frames(videos["mpeg4"], batch_size=8, prefetch=1, segment_frames=16)
    assert read_number(next(stream).image) == 0
    names = [t.name for t in threading.enumerate()]
    assert any(n.startswith("decord") for n in names) and "segments ahead" in names  # the next segment ready
    stream.close()
    assert not any(t.name.startswith("decord") or t.name == "segments ahead" for t in threading.enumerate())


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read memory")
def test_long_stream_memory_stays_bounded_even_with_a_stalled_consumer(tmp_path):
    """600 frames of 640x360 (400 MB decoded); at most a segment and a few batches are held at once.

    The consumer stalls after the first frame. Checked locally that this test fails for a reader that
    decodes ahead without bound (one decord reader for the whole file, segment_frames=10**6).
    """
    size, n, gop, batch, prefetch, segment = (640, 360), 600, 12, 16, 2, 64
    path = write_video(tmp_path / "long.mp4", n, size=size, gop=gop)
    frame_mb = size[0] * size[1] * 3 / 2**20
    for _ in video_frames(path, batch_size=batch, segment_frames=segment):  # warm-up: libraries, allocator pools
        pass
    has_peak = _reset_peak()
    start = process_memory_mib()["VmRSS"]
    peak, count = start, 0
    for frame in video_frames(path, batch_size=batch, prefetch=prefetch, segment_frames=segment):
        if count == 0:
            time.sleep(1.5)  # long enough for an unbounded reader to decode ahead most of the video
        assert frame.index == count
        count += 1
        if count % 25 == 0:
            peak = max(peak, process_memory_mib()["VmRSS"])
    if has_peak:
        peak = max(peak, process_memory_mib()["VmHWM"])
    assert count == n
    bound = (segment + gop + (prefetch + 2) * batch) * frame_mb + 40  # a segment, queued batches, slack
    assert peak - start < bound, (f"RSS grew {peak - start:.0f} MB (bound {bound:.0f} MB, "
                                  f"all frames {n * frame_mb:.0f} MB)")


# --------------------------------------------------------------------------------------- image folders

def _save(path: Path, number: int, size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
    Image.fromarray(numbered_image(number, *size)).save(path)


def test_image_folder_orders_by_timestamp_in_the_file_name(tmp_path, caplog):
    times = [1700000000.5, 1700000000.1, 1700000000.3, 1700000001.0]
    for number, t in enumerate(times):
        _save(tmp_path / f"{number:06d}_{t:.3f}.png", number)
    _save(tmp_path / "42.25.png", 7)  # a bare number is the timestamp itself: earliest frame
    _save(tmp_path / "screenshot.png", 9)  # no timestamp in the name
    (tmp_path / "000009_1700000002.000.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        stream = image_folder_frames(tmp_path)
        got = list(stream)
    assert [read_number(f.image) for f in got] == [7, 1, 2, 0, 3]
    assert [f.timestamp for f in got] == [42.25, *sorted(times)]
    assert [f.index for f in got] == [0, 1, 2, 3, 4]
    assert Path(got[1].source).name == "000001_1700000000.100.png"
    assert stream.stats.skips == {"bad_timestamp": 1, "bad_image": 1} and stream.stats.read == 5
    assert "screenshot.png" in caplog.text and "000009_1700000002.000.png" in caplog.text
    from mmrec.stream import open_frames

    (tmp_path / "backup.tar").write_bytes(b"")  # read as a shard folder, every image ignored without a word
    with pytest.raises(ValueError, match=r"holds both frame shards .*backup\.tar.* and images"):
        open_frames(tmp_path)


def test_image_folder_reads_a_timestamp_sidecar(tmp_path):
    for number in range(4):
        _save(tmp_path / f"shot{number}.png", number)
    (tmp_path / "timestamps.json").write_text(json.dumps({"shot0": 0, "shot0.png": 3.0, "shot1.png": 1.5,
                                                          "shot2.png": "soon", "shot3.png": 0.25}))
    stream = image_folder_frames(tmp_path)
    got = list(stream)
    assert [(read_number(f.image), f.timestamp) for f in got] == [(3, 0.25), (1, 1.5), (0, 3.0)]
    assert stream.stats.skips == {"bad_timestamp": 1}


def test_image_folder_bad_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        image_folder_frames(tmp_path / "missing")
    with pytest.raises(ValueError, match="no image files"):
        image_folder_frames(tmp_path)
    _save(tmp_path / "1.png", 1)
    (tmp_path / "timestamps.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="timestamps.json"):
        image_folder_frames(tmp_path)


# ---------------------------------------------------------------------------------------------- shards

def _frames(n: int, start: float = 10.0) -> list[Frame]:
    return [Frame(i, start + i / 30, numbered_image(i), "capture") for i in range(n)]


def test_frame_shards_round_trip_exact_pixels_and_times(tmp_path):
    frames = _frames(25)
    paths = write_frame_shards(iter(frames), tmp_path / "out", frames_per_shard=10, image_format="png")
    assert [p.name for p in paths] == ["frames-000000.tar", "frames-000001.tar", "frames-000002.tar"]
    assert not list((tmp_path / "out").glob(".*"))  # no temp file left behind
    stream = shard_frames(paths)
    got = list(stream)
    assert [f.index for f in got] == list(range(25))
    assert [f.timestamp for f in got] == [f.timestamp for f in frames]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, frames))
    assert got[12].source == f"{paths[1]}#000000012"
    assert (stream.stats.read, stream.stats.skipped) == (25, 0)
    jpeg = list(shard_frames(write_frame_shards(frames[:5], tmp_path / "jpg")))
    assert [read_number(f.image) for f in jpeg] == list(range(5))


def test_truncated_shard_keeps_frames_before_the_cut_and_counts_the_skip(tmp_path, caplog):
    paths = write_frame_shards(_frames(30), tmp_path, frames_per_shard=15, image_format="png")
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[:len(data) // 2])
    with caplog.at_level(logging.WARNING):
        stream = shard_frames(paths)
        got = list(stream)
    first = [f.index for f in got if f.index < 15]
    assert first == list(range(len(first))) and 3 <= len(first) < 15  # every frame before the cut
    assert [f.index for f in got if f.index >= 15] == list(range(15, 30))  # the next shard is whole
    assert all(read_number(f.image) == f.index for f in got)
    assert stream.stats.skips.get("damaged_shard") == 1
    assert set(stream.stats.skips) <= {"damaged_shard", "incomplete_sample"}
    assert "damaged_shard" in caplog.text and paths[0].name in caplog.text


def test_shard_with_bad_samples_skips_them(tmp_path):
    import webdataset as wds

    path = tmp_path / "bad.tar"
    with wds.TarWriter(str(path), encoder=False) as tar:
        for key, meta, image in [("a", {"timestamp": 1.0, "index": 0}, numbered_image(0)),
                                 ("b", {"index": 1}, numbered_image(1)),  # no timestamp
                                 ("c", None, numbered_image(2)),  # no json
                                 ("d", {"timestamp": 0.5, "index": 3}, numbered_image(3)),  # backwards
                                 ("e", {"timestamp": 2.0, "index": 4}, b"not a jpeg"),
                                 ("f", {"timestamp": 3.0, "index": 5}, numbered_image(5))]:
            sample = {"__key__": key}
            if meta is not None:
                sample["json"] = json.dumps(meta).encode()
            if isinstance(image, bytes):
                sample["jpg"] = image
            else:
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                sample["png"] = buffer.getvalue()
            tar.write(sample)
    stream = shard_frames(str(path))
    assert [f.index for f in stream] == [0, 5]
    assert stream.stats.skips == {"bad_timestamp": 1, "incomplete_sample": 1, "backwards_timestamp": 1,
                                  "bad_image": 1}
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"no tar here " * 100)
    stream = shard_frames([junk, path])
    assert [f.index for f in stream] == [0, 5] and stream.stats.skips["damaged_shard"] == 1
    with pytest.raises(FileNotFoundError):
        shard_frames([tmp_path / "absent.tar"])
    with pytest.raises(ValueError, match="no frames"):
        write_frame_shards([], tmp_path / "empty")


# -------------------------------------------------------------------------------- iterator and checks

def test_iterator_frames_accepts_pil_and_arrays_and_skips_bad_frames(caplog):
    small = numbered_image(5, 80, 48)
    items = [(0.0, Image.fromarray(numbered_image(0))),  # PIL
             (0.1, numbered_image(1)),  # ndarray
             (0.2, small),  # wrong size
             (0.05, numbered_image(3)),  # backwards
             (0.3, np.dstack([numbered_image(4), np.full((HEIGHT, WIDTH), 255, np.uint8)])),  # RGBA
             (float("nan"), numbered_image(5)),  # bad timestamp
             "garbage",  # not a pair
             (0.4, numbered_image(7).astype(np.float32)),  # no agreed pixel scale
             (0.4, numbered_image(8)[:, :, 0])]  # grey, same time as nothing before: fine
    with caplog.at_level(logging.WARNING):
        stream = iterator_frames(iter(items), source="phone-7")
        got = list(stream)
    assert [f.index for f in got] == [0, 1, 4, 8]
    assert [read_number(f.image) for f in got[:3]] == [0, 1, 4]
    assert got[3].image.shape == (HEIGHT, WIDTH, 3) and {f.source for f in got} == {"phone-7"}
    assert stream.stats.skips == {"wrong_size": 1, "backwards_timestamp": 1, "bad_timestamp": 1, "bad_item": 1,
                                  "bad_image": 1}
    assert "backwards_timestamp" in caplog.text and "80x48" in caplog.text


def test_a_new_size_that_persists_becomes_the_streams_size(caplog):
    """One odd first frame (a splash screen) or a rotated phone must not cost the rest of the recording: after
    SIZE_CHANGE_FRAMES frames in a row of another size that size is the stream's; a lone odd frame is still skipped."""
    from mmrec.datasets.frames import SIZE_CHANGE_FRAMES

    big = lambda k: numbered_image(k).repeat(2, 0).repeat(2, 1)  # noqa: E731
    n = SIZE_CHANGE_FRAMES
    items = [(0.0, big(0))] + [(0.1 * k, numbered_image(k)) for k in range(1, n + 3)]
    items += [(1.0, big(n + 3)), (1.1, numbered_image(n + 4))]
    with caplog.at_level(logging.WARNING):
        stream = iterator_frames(items)
        got = list(stream)
    assert [f.index for f in got] == [0, n, n + 1, n + 2, n + 4]
    assert [f.image.shape for f in got] == [big(0).shape] + [(HEIGHT, WIDTH, 3)] * 4
    assert stream.stats.skips == {"wrong_size": n}  # n - 1 before the change, then the lone big frame
    assert f"frame size {WIDTH}x{HEIGHT} from frame {n} on" in caplog.text


def test_wrong_size_frames_can_be_resized_instead(caplog):
    items = [(0.0, numbered_image(0)), (1.0, numbered_image(1).repeat(2, 0).repeat(2, 1)), (1.0, numbered_image(2))]
    stream = iterator_frames(items, on_wrong_size="resize")
    got = list(stream)
    assert [read_number(f.image) for f in got] == [0, 1, 2]
    assert all(f.image.shape == (HEIGHT, WIDTH, 3) for f in got) and stream.stats.skipped == 0
    with pytest.raises(ValueError, match="on_wrong_size"):
        iterator_frames(items, on_wrong_size="crop")


def test_stats_log_only_the_first_few_skips_of_a_reason(caplog):
    stats = FrameStats("s", max_logged=2)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            stats.record_skip("bad_item", detail="x")
    assert stats.skips == {"bad_item": 5} and caplog.text.count("skipped 1") == 2
    with pytest.raises(ValueError, match="unknown skip reason"):
        stats.record_skip("whatever")


# ---------------------------------------------------------------------------------------- live capture

def test_live_frames_come_in_order_as_they_are_put_and_end_when_the_capture_ends():
    live = LiveFrames(capacity=16, source="phone")  # room for every frame: none dropped however slow the reader
    got = []
    consumer = threading.Thread(target=lambda: got.extend((f.index, f.timestamp, read_number(f.image)) for f in live))
    consumer.start()
    for k in range(6):
        assert live.put(k / 30, numbered_image(k))
    live.put(6 / 30, np.zeros((10, 10, 3), np.uint8))  # wrong size: a counted skip, as in every source
    live.end()
    consumer.join(10)
    assert not consumer.is_alive()
    assert [(i, n) for i, _, n in got] == [(k, k) for k in range(6)] and got[5][1] == pytest.approx(5 / 30)
    assert live.stats.read == 6 and live.stats.skips == {"wrong_size": 1}
    with pytest.raises(ValueError, match="after end"):
        live.put(1.0, numbered_image(7))


def test_a_full_live_buffer_drops_the_oldest_frame_and_counts_it():
    """A device does not wait for a slow consumer: the freshest frames are kept, the gap shows in ``index``."""
    live = LiveFrames(capacity=3)
    for k in range(5):
        live.put(k / 30, numbered_image(k))
    assert live.waiting == 3
    live.end()
    assert [f.index for f in live] == [2, 3, 4]
    assert live.stats.skips == {"dropped": 2}
    closed = LiveFrames(capacity=3)
    closed.close()  # the consumer stops: the producer learns it from put
    assert closed.put(0.0, numbered_image(0)) is False
    with pytest.raises(ValueError, match="capacity"):
        LiveFrames(capacity=0)


def test_replay_puts_each_frame_at_its_time_on_the_clock():
    """`LiveFrames.replay` (with a fake clock: no waiting here) puts frame ``t`` at ``start + t / speed``."""
    now = [100.0]
    live = LiveFrames(capacity=16)
    items = [(1.0 + k / 10, numbered_image(k)) for k in range(5)]
    replay = live.replay(iter(items), speed=2.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    frames = list(live)
    replay.join(10)
    assert [read_number(f.image) for f in frames] == list(range(5)) and replay.error is None
    assert replay.start_time == 100.0 and replay.put_times == pytest.approx([100.0 + k / 20 for k in range(5)])
    with pytest.raises(ValueError, match="speed"):
        LiveFrames().replay(iter(items), speed=0)


def test_raw_frames_from_a_pipe_take_their_time_from_fps_or_from_arrival():
    pictures = [numbered_image(k) for k in range(4)]
    data = b"".join(p.tobytes() for p in pictures)

    class Trickle(io.RawIOBase):  # a pipe hands out what has arrived: here 1000 bytes at a time
        def __init__(self, data):
            self.data = io.BytesIO(data)

        def read(self, n=-1):
            return self.data.read(min(n, 1000))

    got = list(raw_frames(Trickle(data), WIDTH, HEIGHT, fps=20))
    assert [read_number(f.image) for f in got] == [0, 1, 2, 3] and [f.timestamp for f in got] == [0, 0.05, 0.1, 0.15]
    ticks = iter([5.0, 5.5, 7.0])
    stream = raw_frames(io.BytesIO(data[:-5]), WIDTH, HEIGHT, clock=lambda: next(ticks))
    assert [f.timestamp for f in stream] == [0.0, 0.5, 2.0] and stream.stats.skips == {"bad_image": 1}
    with pytest.raises(ValueError, match="fps"):
        raw_frames(io.BytesIO(data), WIDTH, HEIGHT, fps=0)
    with pytest.raises(ValueError, match="100000x100000 .*bomb guard"):  # not a MemoryError on the first frame
        list(raw_frames(io.BytesIO(data), 100_000, 100_000))
