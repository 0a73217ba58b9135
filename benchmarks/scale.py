"""Seconds per epoch and peak memory of LightGCN and `vae_fusion` as the shop grows to full H&M size.

Each ``--data`` folder is an H&M-layout shop (the real download, or one written by ``mmrec world`` at
1/16, 1/4 and full size). For every (folder, model) a child process loads the folder with
`mmrec.datasets.hm.load`, trains one epoch on every purchase through the library's own path
(``create_model`` → ``Recommender.fit``, the one training loop) and reports the epoch's seconds, the
seconds spent before it (pair table, graph, content kNN graph) and its peak RSS (``VmHWM``). A child per
measurement keeps each peak its own. Baseline in the same run: a child that only loads the folder (the
floor every model pays). `vae_fusion`'s content is MiniLM on the catalogue's text fields, computed once
per folder in the parent and cached (``--cache``), as ``mmrec train coldstart`` does; or, with
``--content random``, random unit vectors of MiniLM's width (384): training's time and memory do not depend
on the values, and encoding 105k texts is the encoder's cost (``benchmarks/embed.py``), not the model's.

    python benchmarks/scale.py --data /tmp/world/s16 /tmp/world/s4 /tmp/world/full --out runs/scale
    python benchmarks/scale.py ... --plot runs/scale/scale.svg        # log-log plot (needs matplotlib)

Large batches keep an epoch's count of full-graph propagations small (each step propagates the whole
graph, so an epoch costs steps × graph size); ``--batch-size`` (default 2^20 pairs) is the same at every
size so the rows compare.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODELS = ("lightgcn", "vae_fusion")


def child(data: str, model_name: str, batch_size: int, cache: str, threads: int, content: str, save: str,
          model_config: dict) -> dict:
    """Load ``data``, train ``model_name`` for one epoch (or only load, for ``"load"``); the measurements."""
    import numpy as np
    import torch

    from mmrec.datasets import hm
    from mmrec.report import process_memory_mib

    torch.set_num_threads(threads)
    started = time.perf_counter()
    catalog, interactions = hm.load(data, images=False)
    out = {"data": data, "model": model_name, "purchases": len(interactions), "users": interactions.n_users,
           "items": interactions.n_items, "load_s": time.perf_counter() - started}
    if model_name != "load":
        from mmrec.content import ContentRecipe
        from mmrec.recommender import create_model
        from mmrec.train import TrainConfig

        model = create_model(model_name, interactions.n_users, interactions.n_items, model_config.get(model_name))
        out["model_config"] = model_config.get(model_name, {})
        if model_name == "vae_fusion":
            if content == "random":
                from mmrec.fusion.cold_vae import normalize_rows

                vectors = normalize_rows(np.random.default_rng(0).standard_normal((len(catalog), 384), np.float32))
                model.set_content(vectors)
            else:
                recipe = ContentRecipe()
                model.set_content(recipe.embed(catalog, cache=cache), recipe=recipe)
        del catalog
        config = TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3, progress=False, seed=0)
        fitted = time.perf_counter()
        result = model.fit(interactions, train_config=config)
        epoch = result.history[0]
        out.update(pairs=int(len(model.seen_indices)), epoch_s=epoch["seconds"],
                   before_epoch_s=time.perf_counter() - fitted - epoch["seconds"], loss=epoch["loss"],
                   steps=int(np.ceil(len(model.seen_indices) / batch_size)), batch_size=batch_size)
        if save:
            model.save_pretrained(Path(save) / f"{Path(data).name}-{model_name}")
    out["peak_rss_mib"] = process_memory_mib().get("VmHWM", float("nan"))
    return out


def run_child(args: list[str]) -> dict:
    """Run this script as a child with ``args``; its one JSON line."""
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}",
                "args": args}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def embed_once(data: str, cache: str) -> None:
    """Fill the MiniLM cache for ``data``'s catalogue so the vae_fusion child times training, not encoding."""
    from mmrec.content import ContentRecipe
    from mmrec.datasets import hm

    catalog, _ = hm.load(data, transactions=False, images=False)
    started = time.perf_counter()
    ContentRecipe().embed(catalog, cache=cache)
    print(json.dumps({"data": data, "embed_s": time.perf_counter() - started, "items": len(catalog)}), flush=True)


def plot(rows: list[dict], path: Path) -> None:
    """Log-log: seconds per epoch and peak RSS against purchases, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for model in ("load", *MODELS):
        # One point per size: the last measurement of it (a run may repeat the load-only floor).
        latest = {r["purchases"]: r for r in rows if r.get("model") == model and "error" not in r}
        mine = [latest[n] for n in sorted(latest)]
        if not mine:
            continue
        x = [r["purchases"] for r in mine]
        if model != "load":
            axes[0].plot(x, [r["epoch_s"] for r in mine], "o-", label=model)
        axes[1].plot(x, [r["peak_rss_mib"] / 1024 for r in mine], "o-", label="load only" if model == "load" else model)
    for ax, label in zip(axes, ("seconds per epoch", "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("purchases")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", required=False, help="H&M-layout folders, smallest first")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batch-size", type=int, default=1 << 20)
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16))
    parser.add_argument("--cache", default="runs/embed-cache", help="MiniLM vector cache for vae_fusion")
    parser.add_argument("--content", choices=("minilm", "random"), default="minilm",
                        help="vae_fusion's item content (see the module docstring)")
    parser.add_argument("--save-dir", default="", help="save each trained model here as <data name>-<model> "
                        "(for benchmarks/index.py and benchmarks/serve_load.py at full size)")
    parser.add_argument("--model-config", default="{}", help='JSON: per model its config, e.g. '
                        '\'{"vae_fusion": {"affinity_sample": 8}}\' (defaults otherwise)')
    parser.add_argument("--out", help="folder for results.jsonl")
    parser.add_argument("--plot", help="write the log-log plot here (from --out's results.jsonl if no --data)")
    parser.add_argument("--child", nargs=8, metavar=("DATA", "MODEL", "BATCH", "CACHE", "THREADS", "CONTENT", "SAVE", "CONFIG"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data, model, batch, cache, threads, content, save, config = args.child
        print(json.dumps(child(data, model, int(batch), cache, int(threads), content, save, json.loads(config))))
        return 0
    results = Path(args.out) / "results.jsonl" if args.out else None
    rows: list[dict] = []
    for data in args.data or []:
        if "vae_fusion" in args.models and args.content == "minilm":
            embed_once(data, args.cache)
        for model in ("load", *args.models):
            row = run_child([data, model, str(args.batch_size), args.cache, str(args.threads), args.content,
                             args.save_dir, args.model_config])
            print(json.dumps(row), flush=True)
            rows.append(row)
            if results:
                results.parent.mkdir(parents=True, exist_ok=True)
                with open(results, "a") as f:
                    f.write(json.dumps(row) + "\n")
    if args.plot:
        if not rows and results and results.exists():
            rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        plot(rows, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
