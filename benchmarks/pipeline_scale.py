"""Seconds and peak memory of the next-purchase pipeline (`mmrec train pipeline`) per stage, as the shop grows
to full H&M size (issue 17 part 7).

Each ``--data`` folder is an H&M-layout shop (the real download, or one written by ``mmrec world`` at 1/16,
1/4 and full size). For every (folder, horizon) a child process does what ``mmrec train pipeline --no-content
[--refit-all]`` does — `mmrec.datasets.hm.load`, then `mmrec.pipeline.train` (choose on valid, report valid
and test, refit) — with the library's own functions wrapped by a meter, so the stages are the real code path,
not a copy of it:

- ``load``: reading the folder (articles, transactions, customers);
- ``candidates``: `generate_all` (every generator, every call: the label windows' tables, the valid / test
  reports' recommendations and recall);
- ``features``: the ranker's features of those candidates (`mmrec.fusion.ranker.features`);
- ``stack``: `mmrec.pipeline.stack` (where a code path stacks the label windows; `run` hands them to the
  ranker as a list, so this stage is absent there);
- ``ranker_fit`` / ``ranker_predict``: LightGBM (the float32 matrix included);
- ``evaluate``: the rest of the valid / test reports (baselines, metrics, shares, recall);
- ``other``: everything else (labels, history cuts, the final model's history).

Per stage: wall seconds (exclusive of the stages called inside it), microseconds per purchase row, the peak
RSS while it ran (the process's, so it includes what earlier stages still hold) and the peak above the RSS
at its start (its own working set). Peaks come from ``VmHWM``, reset at every stage boundary through
``/proc/self/clear_refs`` (Linux); where that is refused only the process's overall peak is reported. A child
per measurement keeps each peak its own. The parent samples the load average and ``MemAvailable`` while a
child runs and stops the child if available memory falls under ``--min-available-gib`` (the machine is
shared).

    nice -n 10 python benchmarks/pipeline_scale.py --data /tmp/world/s16 /tmp/world/s4 --horizon-days 1 7 \\
        [--copurchase-neighbours 0 100] --out runs/pipeline_scale

``--copurchase-neighbours`` measures each value in the same run (0 = every co-purchase kept), so a cap's saving
is a ratio against the uncapped pipeline on the same machine and load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("load", "candidates", "features", "stack", "ranker_fit", "ranker_predict", "evaluate", "other")


def status_mib() -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of this process in MiB."""
    from mmrec.report import process_memory_mib

    return process_memory_mib()


class Meter:
    """Wraps functions as stages: exclusive wall seconds, calls, rows returned, and peak RSS per stage.

    At every stage boundary the process's ``VmHWM`` is read, folded into the peak of every open stage, and
    reset (``/proc/self/clear_refs``), so a stage's peak is the highest RSS seen while it was open."""

    def __init__(self) -> None:
        self.open: list[dict] = []
        self.stages: dict[str, dict] = {}
        self.calls: list[dict] = []
        self.peak = 0.0
        self.resets = self._reset()

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def _fold(self) -> float:
        """The peak since the last boundary, folded into every open stage; returns the RSS now."""
        mem = status_mib()
        hwm, rss = mem.get("VmHWM", 0.0), mem.get("VmRSS", 0.0)
        self.peak = max(self.peak, hwm)
        for frame in self.open:
            frame["peak"] = max(frame["peak"], hwm)
        if self.resets:
            self._reset()
        return rss

    def measure(self, stage: str, fn, *args, **kwargs):
        """Call ``fn`` as ``stage``."""
        rss = self._fold()
        frame = {"stage": stage, "start": time.perf_counter(), "rss0": rss, "peak": rss, "inner": 0.0}
        self.open.append(frame)
        try:
            result = fn(*args, **kwargs)
        finally:
            self._fold()
            self.open.pop()
            elapsed = time.perf_counter() - frame["start"]
            if self.open:
                self.open[-1]["inner"] += elapsed
            rows = len(result) if hasattr(result, "__len__") and hasattr(result, "columns") else None
            self.record(stage, elapsed - frame["inner"], frame["peak"], frame["peak"] - frame["rss0"], rows)
        return result

    def record(self, stage: str, seconds: float, peak: float, above: float, rows: int | None = None) -> None:
        """Add one call of ``stage``."""
        s = self.stages.setdefault(stage, {"seconds": 0.0, "calls": 0, "peak_rss_mib": 0.0,
                                           "peak_above_entry_mib": 0.0, "rows_out": 0})
        s["seconds"] += seconds
        s["calls"] += 1
        s["peak_rss_mib"] = max(s["peak_rss_mib"], peak)
        s["peak_above_entry_mib"] = max(s["peak_above_entry_mib"], above)
        s["rows_out"] += rows or 0
        self.calls.append({"stage": stage, "seconds": round(seconds, 3), "peak_rss_mib": round(peak),
                           "rows": rows})

    def wrap(self, owner, name: str, stage: str) -> None:
        """Replace ``owner.name`` by a measured call of it."""
        inner = getattr(owner, name)

        def measured(*args, **kwargs):
            return self.measure(stage, inner, *args, **kwargs)

        setattr(owner, name, measured)


def child(data: str, horizon: int, refit_all: bool, label_windows: int, threads: int, neighbours: int) -> dict:
    """``mmrec train pipeline --no-content`` on ``data`` with every stage measured (the model is not saved);
    ``neighbours``: `PipelineConfig.copurchase_neighbours`."""
    import numpy as np

    import mmrec.pipeline as pipeline
    from mmrec.datasets import hm
    from mmrec.fusion.ranker import Ranker, RankerConfig

    meter = Meter()
    started = time.perf_counter()
    root = Path(data)
    catalog, interactions = meter.measure("load", hm.load, root, images=False)
    customers = (meter.measure("load", hm.load_customers, root)
                 if (root / hm.CUSTOMERS_FILE).is_file() else None)
    meter.wrap(pipeline, "generate_all", "candidates")
    meter.wrap(pipeline, "features", "features")
    meter.wrap(pipeline, "stack", "stack")
    meter.wrap(pipeline, "day_report", "evaluate")
    meter.wrap(Ranker, "fit", "ranker_fit")
    meter.wrap(Ranker, "predict", "ranker_predict")
    config = pipeline.PipelineConfig(horizon_days=horizon, label_windows=label_windows, content="",
                                     copurchase_neighbours=neighbours, ranker=RankerConfig(n_jobs=threads))
    days = interactions.timestamps // 86_400
    model, report = meter.measure("other", pipeline.train, interactions, catalog, config, customers=customers,
                                  refit_all=refit_all)
    total = time.perf_counter() - started
    n = len(interactions)
    stages = {name: meter.stages[name] for name in STAGES if name in meter.stages}
    for s in stages.values():
        s["us_per_row"] = s["seconds"] / max(n, 1) * 1e6
    test = report["test"]
    return {"data": data, "horizon_days": horizon, "label_windows": label_windows, "refit_all": refit_all,
            "copurchase_neighbours": neighbours,
            "purchases": n, "users": interactions.n_users, "items": interactions.n_items,
            "first_day": str(np.datetime64(int(days.min()), "D")), "last_day": str(np.datetime64(int(days.max()), "D")),
            "valid_start": report["config"]["valid_start"], "test_start": report["config"]["test_start"],
            "test_buyers": test["pipeline"].get("users"), "test_map12": test["pipeline"].get("map@12"),
            "valid_map12": report["valid"]["pipeline"].get("map@12"),
            "test_baseline_map12": test["repurchase_trending"].get("map@12"),
            "test_union_per_user": test["candidates"]["union"]["per_user"],
            "best_iteration": report["ranker"]["best_iteration"],
            "total_s": total, "us_per_row": total / max(n, 1) * 1e6, "peak_rss_mib": meter.peak,
            "stage_peaks": meter.resets, "stages": stages, "calls": meter.calls}


def run_child(args: list[str], min_available_gib: float) -> dict:
    """Run this script as a child with ``args`` while sampling load and available memory; its JSON line."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    loads, lowest, stopped = [], float("inf"), None
    import threading

    out: dict[str, str] = {}
    readers = [threading.Thread(target=lambda k=k, s=s: out.__setitem__(k, s.read()), daemon=True)
               for k, s in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for reader in readers:
        reader.start()
    while proc.poll() is None:
        loads.append(os.getloadavg()[0])
        available = mem_available_gib()
        lowest = min(lowest, available)
        if available < min_available_gib and stopped is None:
            stopped = f"stopped: MemAvailable {available:.1f} GiB < --min-available-gib {min_available_gib}"
            proc.kill()
        time.sleep(2)
    for reader in readers:
        reader.join()
    sampled = {"load_avg_1min_mean": sum(loads) / len(loads) if loads else None,
               "load_avg_1min_max": max(loads) if loads else None,
               "min_mem_available_gib": lowest if loads else None}
    if stopped or proc.returncode != 0:
        err = out.get("stderr", "").strip().splitlines()
        return {"error": stopped or (err[-1] if err else f"exit {proc.returncode}"), "args": args, **sampled}
    return {**json.loads(out["stdout"].strip().splitlines()[-1]), **sampled}


def mem_available_gib() -> float:
    """``MemAvailable`` of the machine in GiB (inf where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def main() -> int:
    from mmrec.pipeline import PipelineConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", help="H&M-layout folders, smallest first")
    parser.add_argument("--horizon-days", type=int, nargs="+", default=[1],
                        help="window lengths to measure (1 = the developers' extract; 7 = the full download)")
    parser.add_argument("--label-windows", type=int, default=3, help="PipelineConfig.label_windows")
    parser.add_argument("--no-refit", action="store_true", help="skip the deploy refit (--refit-all)")
    parser.add_argument("--threads", type=int, default=1, help="LightGBM threads (RankerConfig.n_jobs)")
    parser.add_argument("--copurchase-neighbours", type=int, nargs="+",
                        default=[PipelineConfig.copurchase_neighbours],
                        help="PipelineConfig.copurchase_neighbours values, each measured in this run (0 = uncapped)")
    parser.add_argument("--min-available-gib", type=float, default=3.0,
                        help="stop a child when the machine's available memory falls under this")
    parser.add_argument("--out", help="folder for results.json (every row of this run, rewritten atomically)")
    parser.add_argument("--child", nargs=6, metavar=("DATA", "HORIZON", "REFIT", "WINDOWS", "THREADS", "NEIGHBOURS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        data, horizon, refit, windows, threads, neighbours = args.child
        print(json.dumps(child(data, int(horizon), refit == "1", int(windows), int(threads), int(neighbours))))
        return 0
    if not args.data:
        parser.error("--data is required")
    from mmrec.io import atomic_write_json

    rows: list[dict] = []
    for data in args.data:
        for horizon in args.horizon_days:
            for neighbours in args.copurchase_neighbours:
                row = run_child([data, str(horizon), "0" if args.no_refit else "1", str(args.label_windows),
                                 str(args.threads), str(neighbours)], args.min_available_gib)
                summary = {k: v for k, v in row.items() if k != "calls"}
                print(json.dumps(summary), flush=True)
                rows.append(row)
                if args.out:
                    atomic_write_json(Path(args.out) / "results.json", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
