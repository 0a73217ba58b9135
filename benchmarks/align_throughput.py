"""Alignment-training throughput (samples/s) through `mmrec.train.fit` on 1 and 2 processes, measured in one run.

The model is LiT-style alignment: a small timm ViT image tower trained on pixels (``@random`` weights cost
the same FLOPs as pretrained ones) against precomputed 384-d text features (MiniLM's size) through
`UnifiedSpace.training_step` (open_clip `ClipLoss`, features gathered across processes). Data are random
uint8 images and random features in a `CatalogPairs`, so decoding is not measured; the loop's own per-epoch
``samples_per_s`` (all processes together) is read from `TrainResult.history`, the first epoch (warm-up, FLOP
count) left out. The global batch is the same in every run: each of N processes takes ``global_batch / N``.

Runs are written ``PROCESSESxTHREADS`` (threads per process): on CPU the default ``1x1 1xT 2x1`` (T = the
usable cores, at most 2) gives the one-process baseline, the same cores in one process, and 2 processes;
medians over ``--repeats`` alternating runs and their ratios to the first run are printed. Several processes
go through ``accelerate launch --multi_gpu`` (torchrun) with ``ACCELERATE_USE_CPU=true`` on CPU (a gloo
group); accelerate's ``--cpu`` alone would start only one process without MPI. On CUDA, runs are 1 GPU and
2 GPUs when there are 2.

    python benchmarks/align_throughput.py
    python benchmarks/align_throughput.py --devices cuda --image-size 224 --patch-size 16 --depth 12 \\
        --global-batch 512 --items 8192 --mixed-precision bf16
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from mmrec.fusion.alignment import CatalogPairs
from mmrec.io import atomic_write_json
from mmrec.space import TowerConfig, UnifiedSpace, space_preset, tiny_vit
from mmrec.train import TrainConfig, fit

TEXT_DIM = 384


def build_space(args: argparse.Namespace) -> UnifiedSpace:
    """The ``lit-tiny-vit`` space sized by ``args``, its text a tower-less 384-d input, adapters into ``args.dim``."""
    image = tiny_vit(args.image_size, patch=args.patch_size, width=args.embed_dim, depth=args.depth, heads=args.heads)
    torch.manual_seed(0)
    return UnifiedSpace(space_preset("lit-tiny-vit", towers={"image": image, "text": TowerConfig(input_dim=TEXT_DIM)},
                                     dim=args.dim, adapter_options={"hidden": 2 * args.dim}))


def random_pairs(space: UnifiedSpace, n: int) -> CatalogPairs:
    """``n`` random images (uint8, at the tower's input size) and random text features."""
    generator = torch.Generator().manual_seed(0)
    h, w = space.encoders["image"].preprocess.size
    pixels = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=generator)
    text = torch.randn(n, TEXT_DIM, generator=generator)
    every = np.ones(n, dtype=bool)
    return CatalogPairs({"image": (pixels, every)}, {"text": (text, every)},
                        {"image": space.encoders["image"].preprocess.normalize})


def worker(args: argparse.Namespace) -> None:
    """One process of one run: train, and (main process) write the loop's throughput to ``args.result``."""
    torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.global_batch % world:
        raise SystemExit(f"--global-batch {args.global_batch} is not divisible by {world} processes")
    space = build_space(args)
    data = random_pairs(space, args.items)
    config = TrainConfig(epochs=args.epochs, batch_size=args.global_batch // world, lr=1e-3, optimizer="adamw",
                         seed=0, progress=False, cpu=args.device == "cpu", mixed_precision=args.mixed_precision)
    result = fit(space, data, config)
    if int(os.environ.get("RANK", "0")) == 0:
        measured = result.history[1:]
        Path(args.result).write_text(json.dumps({
            "processes": world, "threads": args.threads,
            "samples_per_s": float(np.mean([h["samples_per_s"] for h in measured])),
            "per_epoch_samples_per_s": [h["samples_per_s"] for h in result.history],
            "model_tflops_per_s": world * float(np.mean([h["model_tflops_per_s"] for h in measured])),
            "final_loss": result.history[-1]["loss"]}))


def launch(args: argparse.Namespace, device: str, processes: int, threads: int, result: Path) -> dict:
    """Run `worker` in fresh processes: plain python for one, ``accelerate launch`` for several."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if device == "cpu":
        env.update(CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true")
    worker_args = [__file__, "--worker", "--device", device, "--threads", str(threads), "--result", str(result),
                   *(f"--{k.replace('_', '-')}={getattr(args, k)}" for k in MODEL_FLAGS)]
    if processes == 1:
        command = [sys.executable, *worker_args]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", args.mixed_precision,
                   "--dynamo_backend", "no", "--main_process_port", "0", *worker_args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{device} run {processes}x{threads} failed:\n{done.stderr[-4000:]}")
    return json.loads(result.read_text())


MODEL_FLAGS = ("items", "epochs", "global_batch", "image_size", "patch_size", "embed_dim", "depth", "heads", "dim",
               "mixed_precision")


def parse_runs(texts: list[str]) -> list[tuple[int, int]]:
    """``["1x1", "2x1"]`` → ``[(1, 1), (2, 1)]`` (processes, threads per process)."""
    runs = []
    for text in texts:
        processes, _, threads = text.partition("x")
        if not (processes.isdigit() and threads.isdigit()) or int(processes) < 1 or int(threads) < 1:
            raise SystemExit(f"--runs: {text!r} is not PROCESSESxTHREADS, e.g. 2x1")
        runs.append((int(processes), int(threads)))
    return runs


def main() -> None:
    """Run every setting on every device, print samples/s and ratios; ``--worker`` is one process of one run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=None, choices=["cpu", "cuda"],
                        help="default: cpu, and cuda when present")
    parser.add_argument("--runs", nargs="+", default=None, help="CPU runs as PROCESSESxTHREADS (default 1x1 1xT 2x1)")
    parser.add_argument("--items", type=int, default=768)
    parser.add_argument("--epochs", type=int, default=3, help="the first is warm-up and not counted")
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--embed-dim", type=int, default=192)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--dim", type=int, default=256, help="size of the space")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting, alternating; medians shown")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.epochs < 2 or args.repeats < 1:
        parser.error("--epochs must be at least 2 (the first is warm-up) and --repeats at least 1")

    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cores = len(os.sched_getaffinity(0))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            if device == "cuda":
                gpus = torch.cuda.device_count()
                if not gpus:
                    parser.error("--devices cuda: no CUDA device is visible")
                threads = max(1, cores // 2)  # the batch is collated on the CPU
                runs = [(1, threads)] + ([(2, threads)] if gpus > 1 else [])
            else:
                runs = parse_runs(args.runs) if args.runs else [(1, 1), (1, min(2, cores)), (2, 1)]
            rows = []
            for processes, threads in dict.fromkeys(runs):
                rows.append({"processes": processes, "threads": threads, "repeats": []})
            for repeat in range(args.repeats):  # alternating, so drifting load on a shared machine hits every run
                for row in rows:
                    name = f"{device}_{row['processes']}x{row['threads']}_{repeat}.json"
                    row["repeats"].append(launch(args, device, row["processes"], row["threads"], Path(tmp) / name))
            for row in rows:
                row["samples_per_s"] = statistics.median(r["samples_per_s"] for r in row["repeats"])
                row["model_tflops_per_s"] = statistics.median(r["model_tflops_per_s"] for r in row["repeats"])
                print(f"{device} {row['processes']} process(es) x {row['threads']} thread(s): "
                      f"{row['samples_per_s']:.1f} samples/s, {row['model_tflops_per_s'] * 1e3:.1f} model GFLOP/s "
                      f"(median of {args.repeats}: {[round(r['samples_per_s'], 1) for r in row['repeats']]})")
            base = rows[0]
            for row in rows[1:]:
                print(f"{device} {row['processes']}x{row['threads']} / {base['processes']}x{base['threads']}: "
                      f"{row['samples_per_s'] / base['samples_per_s']:.2f}x")
            results[device] = rows
    if args.out:
        atomic_write_json(args.out, {"config": {k: getattr(args, k) for k in MODEL_FLAGS}, "results": results})


if __name__ == "__main__":
    main()
