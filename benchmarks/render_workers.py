"""Drawing a grounding tower's training windows in worker processes (`TrainingPages.workers`) against one
process, in the same run, on the same catalogue; checks that the windows are identical.

    .venv/bin/python benchmarks/render_workers.py --hm ../shared/data/hm --items 1000 --renderings 4 --workers 2

Without ``--hm`` the synthetic world's catalogue is used. Prints seconds per setting and the ratio.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mmrec.datasets.training_pages import TrainingPages
from mmrec.screen_windows import ScreenWindows


def catalog(args: argparse.Namespace):
    """``--items`` items of H&M (those with photos) or of a synthetic world."""
    if args.hm:
        from mmrec.datasets import hm

        full, _ = hm.load(args.hm, transactions=False)
        with_photo = [code for code, path in enumerate(full.image_paths) if path is not None]
        return full.subset(with_photo[:args.items])
    from mmrec.datasets.synthetic import WorldConfig, make_world

    world = make_world(WorldConfig(n_items=args.items, n_new_items=0, missing_image_fraction=0.0),
                       Path(tempfile.mkdtemp()) / "world")
    return world.catalog


def main() -> None:
    """Time `TrainingPages.windows` with 1 and with ``--workers`` processes (the README's recipe settings)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hm", help="an H&M folder (default: the synthetic world)")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--renderings", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    items = catalog(args)
    seconds, windows = {}, {}
    for workers in (1, args.workers):
        pages = TrainingPages(overlays=0.3, jpeg_share=0.5, workers=workers)
        start = time.perf_counter()
        windows[workers] = pages.windows(items, 0, args.renderings, ScreenWindows(), 3, 2, (48, 32))
        seconds[workers] = time.perf_counter() - start
    same = all(torch.equal(a, b) for a, b in zip(windows[1], windows[args.workers]))
    print(json.dumps({"items": len(items), "renderings": args.renderings, "seconds": seconds,
                      "speedup": seconds[1] / seconds[args.workers], "identical": same}))


if __name__ == "__main__":
    main()
