"""Model-only vs end-to-end image embedding throughput, measured in one run.

* model-only: the tower alone on pixels preprocessed beforehand and already in memory (the ceiling);
* end-to-end: real H&M JPEG files -> vectors through `mmrec.encoders.embed_images` (reading, decoding,
  resizing, normalising, encoding, copying back) — the same function ``mmrec embed`` uses.

Both run with the same tower, batch size and threads, alternating, ``--repeats`` times each; the
medians and their ratio are printed. Targets: CPU end-to-end >= 0.85 x model-only, CUDA >= 0.75 x.
Random weights (``@random``) cost the same FLOPs as pretrained ones, so the default tower is
``openclip:ViT-B-32@random``.

    python benchmarks/embed.py                       # CPU, and CUDA when present
    python benchmarks/embed.py --devices cuda --images 16384 --batch-size 1024
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from mmrec.encoders import create_encoder, embed_images
from mmrec.encoders.embed import default_num_workers
from mmrec.encoders.images import load_image

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hm" / "images"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(encoder, pixels: torch.Tensor, batch_size: int) -> float:
    """Seconds to encode preloaded pixels (already on the device, in the tower's dtype) and copy vectors back."""
    sync(encoder.device)
    start = time.perf_counter()
    for s in range(0, len(pixels), batch_size):
        encoder.encode(pixels[s:s + batch_size]).cpu()
    sync(encoder.device)
    return time.perf_counter() - start


def end_to_end(encoder, paths: list[str], batch_size: int, num_workers: int | None, decoder: str) -> float:
    """Seconds for files -> vectors through embed_images (no cache)."""
    sync(encoder.device)
    start = time.perf_counter()
    result = embed_images(paths, encoder, batch_size=batch_size, num_workers=num_workers, decoder=decoder,
                          progress=False)
    sync(encoder.device)
    if result.counts["encoded"] != len(paths):
        raise RuntimeError(f"end-to-end encoded {result.counts['encoded']} of {len(paths)}: {result.failures[:3]}")
    return time.perf_counter() - start


def preload(encoder, paths: list[str], chunk: int = 512) -> torch.Tensor:
    """All images decoded and preprocessed once, stored on the device in the tower's dtype."""
    parts = []
    for s in range(0, len(paths), chunk):
        pixels = encoder.preprocess.batch([load_image(p) for p in paths[s:s + chunk]])
        parts.append(pixels.to(encoder.device, encoder.dtype))
    return torch.cat(parts)


def bench_device(device: str, args: argparse.Namespace, paths: list[str]) -> dict:
    encoder = create_encoder(args.spec, device=device, precision=args.precision)
    n = args.images if args.images else (256 if encoder.device.type == "cpu" else 16384)
    batch_size = args.batch_size or (64 if encoder.device.type == "cpu" else 1024)
    chosen = (paths * (n // len(paths) + 1))[:n]
    pixels = preload(encoder, chosen)
    workers = default_num_workers(encoder.device) if args.num_workers is None else args.num_workers
    model_only(encoder, pixels[:batch_size], batch_size)  # warm-up: kernels, allocator
    end_to_end(encoder, chosen[:batch_size], batch_size, workers, args.decoder)
    model_s, e2e_s = [], []
    for _ in range(args.repeats):
        model_s.append(model_only(encoder, pixels, batch_size))
        e2e_s.append(end_to_end(encoder, chosen, batch_size, workers, args.decoder))
    model_rate, e2e_rate = n / statistics.median(model_s), n / statistics.median(e2e_s)
    name = torch.cuda.get_device_name(encoder.device) if encoder.device.type == "cuda" else \
        f"CPU ({len(os.sched_getaffinity(0))} cores, {torch.get_num_threads()} torch threads)"
    return {"device": name, "spec": args.spec, "dtype": str(encoder.dtype).replace("torch.", ""), "images": n,
            "batch_size": batch_size, "num_workers": workers, "repeats": args.repeats,
            "decoder": args.decoder, "model_only_images_per_s": round(model_rate, 1),
            "end_to_end_images_per_s": round(e2e_rate, 1), "ratio": round(e2e_rate / model_rate, 3),
            "model_only_s": [round(s, 3) for s in model_s], "end_to_end_s": [round(s, 3) for s in e2e_s]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="openclip:ViT-B-32@random")
    parser.add_argument("--images-dir", default=str(DEFAULT_IMAGES), help="folder of JPEGs (searched recursively)")
    parser.add_argument("--images", type=int, help="images per run (default: 256 on CPU, 16384 on CUDA)")
    parser.add_argument("--batch-size", type=int, help="default: 64 on CPU, 1024 on CUDA")
    parser.add_argument("--devices", default="auto", help="comma list: cpu,cuda (auto: cpu, plus cuda when present)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--num-workers", type=int, help="decode workers (default: embed's own choice per device)")
    parser.add_argument("--decoder", default="auto", choices=("auto", "pil", "tensor"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of the table")
    args = parser.parse_args(argv)

    images_dir = Path(args.images_dir)
    paths = sorted(str(p) for p in images_dir.rglob("*.jpg"))
    if not paths:
        print(f"no .jpg files under {images_dir}; pass --images-dir", file=sys.stderr)
        return 2
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.devices == "auto" \
        else args.devices.split(",")
    results = [bench_device(device, args, paths) for device in devices]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(f"{r['device']}  {r['spec']}  {r['dtype']}  {r['images']} images  batch {r['batch_size']}  "
              f"workers {r['num_workers']}  decoder {r['decoder']}  repeats {r['repeats']} (medians)")
        print(f"  model-only  {r['model_only_images_per_s']:>10.1f} images/s   runs {r['model_only_s']} s")
        print(f"  end-to-end  {r['end_to_end_images_per_s']:>10.1f} images/s   runs {r['end_to_end_s']} s")
        print(f"  ratio end-to-end / model-only = {r['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
