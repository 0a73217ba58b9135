"""Peak memory and frames/s of `mmrec.datasets.frames.video_frames` on a stream 1x and 10x as long.

Writes a screen-recording-like video with PyAV (libx264, 30 fps, a page that scrolls, pauses and scrolls
on; keyframes as x264 places them, at most 250 frames apart) and the same content repeated ``--times``
times, then reads each in a child process (its own peak RSS, ``VmHWM``) through:

- ``video_frames`` (keyframe segments, one decord reader each, bounded queue), and
- the baseline measured in the same run: one bare ``decord.VideoReader`` over the whole file, read
  sequentially with ``get_batch`` on consecutive indices (the same batch size and decoder threads).

Each is run with a consumer that takes frames as fast as they come, and with one that stalls
``--stall`` seconds after the first batch (as a slow model downstream would), which is where decord's
unbounded read-ahead shows. Printed: peak RSS and its growth over the child's RSS after imports, the
ratio long/short (target for ``video_frames``: peak RSS of the 10x stream <= 1.10x that of the 1x
stream), and frames/s of ``video_frames`` over the bare baseline. A JSON line at the end holds it all.

    nice -n 10 python benchmarks/stream_memory.py                          # 900 frames of 640x360, x10
    python benchmarks/stream_memory.py --frames 300 --times 5 --stall 1    # quicker
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mmrec.report import process_memory_mib


def _page(width: int, height: int, seed: int) -> np.ndarray:
    """A tall shop page: a header, then rows of product cards (a photo block, a title bar, a price bar)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    page = Image.new("RGB", (width, height), (246, 246, 246))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, width, 60), fill=(220, 40, 60))
    draw.text((16, 20), "SHOP", fill=(255, 255, 255))
    card_w, card_h, gap = (width - 3 * 16) // 2, 300, 16
    for row, top in enumerate(range(80, height - card_h, card_h + gap)):
        for col in range(2):
            left = gap + col * (card_w + gap)
            colour = tuple(int(c) for c in rng.integers(40, 230, 3))
            draw.rectangle((left, top, left + card_w, top + 220), fill=colour)
            draw.rectangle((left + 20, top + 30, left + card_w - 20, top + 190),
                           fill=tuple(min(255, c + 25) for c in colour))
            draw.text((left, top + 232), f"Item {row * 2 + col:03d} cotton blend", fill=(30, 30, 30))
            draw.text((left, top + 256), f"{rng.integers(5, 90)}.99 EUR", fill=(220, 40, 60))
    return np.asarray(page)


def _offsets(n: int, page_height: int, view_height: int) -> list[int]:
    """Scroll, dwell, scroll: 40 frames at 6 px per frame, then 50 still frames, repeated; wraps at the end."""
    offsets, offset = [], 0
    for i in range(n):
        if i % 90 < 40:
            offset = (offset + 6) % (page_height - view_height)
        offsets.append(offset)
    return offsets


def write_video(path: Path, n: int, times: int, width: int, height: int) -> None:
    """``n`` frames of scrolling page, the whole repeated ``times`` times, as libx264 mp4 at 30 fps."""
    import av

    page = _page(width, 8 * height, seed=0)
    offsets = _offsets(n, page.shape[0], height)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "veryfast", "keyint": "250"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(times):
            for offset in offsets:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(page[offset:offset + height]), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def child(mode: str, path: str, batch_size: int, stall: float) -> dict[str, float]:
    """Read ``path`` one way in this process; return frames, seconds and memory (MB)."""
    from mmrec.datasets.frames import video_frames
    import decord

    base = process_memory_mib()["VmRSS"]
    frames, checksum = 0, 0
    start = time.perf_counter()
    if mode == "video_frames":
        for frame in video_frames(path, batch_size=batch_size):
            if frames == 0 and stall:
                time.sleep(stall)
            checksum += int(frame.image[0, 0, 0])
            frames += 1
    else:
        reader = decord.VideoReader(path, num_threads=1)
        n = len(reader)
        for first in range(0, n, batch_size):
            batch = reader.get_batch(list(range(first, min(n, first + batch_size)))).asnumpy()
            if first == 0 and stall:
                time.sleep(stall)
            checksum += int(batch[:, 0, 0, 0].astype(np.int64).sum())
            frames += len(batch)
    seconds = time.perf_counter() - start - stall
    memory = process_memory_mib()
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds, "base_mb": base,
            "peak_mb": memory["VmHWM"], "growth_mb": memory["VmHWM"] - base, "checksum": checksum}


def run_child(mode: str, path: Path, batch_size: int, stall: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path), "--batch-size", str(batch_size),
                          "--stall", str(stall)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=900, help="frames of the short stream (30 fps)")
    parser.add_argument("--times", type=int, default=10, help="the long stream is the short one this many times")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--stall", type=float, default=2.0, help="seconds the slow consumer waits after batch 1")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.batch_size, args.stall)))
        return

    with tempfile.TemporaryDirectory(prefix="stream_memory_") as tmp:
        short, long = Path(tmp) / "short.mp4", Path(tmp) / "long.mp4"
        start = time.perf_counter()
        write_video(short, args.frames, 1, args.width, args.height)
        write_video(long, args.frames, args.times, args.width, args.height)
        print(f"wrote {args.frames} and {args.frames * args.times} frames of {args.width}x{args.height} "
              f"({short.stat().st_size / 1e6:.2f} MB, {long.stat().st_size / 1e6:.2f} MB) in "
              f"{time.perf_counter() - start:.1f} s")
        results: dict[str, dict[str, float]] = {}
        for stall in (0.0, args.stall):
            for mode in ("video_frames", "bare_decord"):
                for name, path in (("1x", short), (f"{args.times}x", long)):
                    key = f"{mode} {name}" + (f" stall {stall:g}s" if stall else "")
                    results[key] = r = run_child(mode, path, args.batch_size, stall)
                    print(f"{key:34s} {r['frames']:6d} frames {r['fps']:7.0f} frames/s  peak RSS {r['peak_mb']:7.0f} MB"
                          f"  (+{r['growth_mb']:5.0f} MB over {r['base_mb']:.0f} MB after imports)")
    long_name = f"{args.times}x"
    summary = {}
    for stall_tag in ("", f" stall {args.stall:g}s"):
        for mode in ("video_frames", "bare_decord"):
            short_r, long_r = results[f"{mode} 1x{stall_tag}"], results[f"{mode} {long_name}{stall_tag}"]
            tag = f"{mode}{stall_tag}"
            summary[f"{tag}: peak RSS {long_name}/1x"] = round(long_r["peak_mb"] / short_r["peak_mb"], 3)
            summary[f"{tag}: RSS growth {long_name}/1x"] = round(long_r["growth_mb"] / max(short_r["growth_mb"], 1), 3)
    for name in ("1x", long_name):
        summary[f"frames/s video_frames/bare_decord {name}"] = round(
            results[f"video_frames {name}"]["fps"] / results[f"bare_decord {name}"]["fps"], 3)
    print()
    for key, value in summary.items():
        print(f"{key:55s} {value}")
    target = summary[f"video_frames: peak RSS {long_name}/1x"]
    verdict = "met" if target <= 1.10 else "NOT met"
    print(f"target peak RSS {long_name}/1x <= 1.10 for video_frames: {verdict} ({target})")
    print(json.dumps({"args": vars(args), "results": results, "summary": summary}))


if __name__ == "__main__":
    main()
