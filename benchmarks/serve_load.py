"""Load test of ``mmrec serve``: throughput and latency of ``GET /recommend`` on localhost.

Starts ``mmrec serve`` on a saved model folder in a subprocess (so the client's threads and the server do
not share one interpreter lock), waits for ``/health``, sends a bounded number of requests from
``--concurrency`` client threads (each with its own keep-alive connection) until ``--requests`` are sent or
``--duration`` seconds have passed, then stops the server and prints one JSON object: requests sent, failed
(any answer but 200, or a transport error), throughput, and p50/p95/p99 latency in milliseconds. A share
``--unknown-fraction`` of the requests names a user the model does not know (its fallback path).

    python benchmarks/serve_load.py --model runs/coldstart/model --requests 2000 --concurrency 8

Localhost only: the server listens on 127.0.0.1 on a free port.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="saved model folder (mmrec train --out)")
    p.add_argument("--requests", type=int, default=2000, help="requests to send at most (default 2000)")
    p.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    p.add_argument("--duration", type=float, default=60.0, help="stop sending after this many seconds (default 60)")
    p.add_argument("--k", type=int, default=12, help="k of each request (default 12)")
    p.add_argument("--candidates", default="all", choices=("all", "cold", "warm"))
    p.add_argument("--unknown-fraction", type=float, default=0.1, help="share of requests for unknown users")
    p.add_argument("--index", default="none", choices=("none", "flat", "ivf", "hnsw"), help="mmrec serve --index")
    p.add_argument("--warmup", type=int, default=20, help="requests sent (and not counted) before timing")
    p.add_argument("--seed", type=int, default=0, help="seed of the user sequence")
    p.add_argument("--out", help="also write the JSON report to this file")
    args = p.parse_args(argv)
    for name in ("requests", "concurrency", "k"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be ≥ 1")
    if args.duration <= 0 or not 0.0 <= args.unknown_fraction <= 1.0 or args.warmup < 0:
        p.error("--duration must be > 0, --unknown-fraction in [0, 1], --warmup ≥ 0")
    return args


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, port: int, index: str, timeout: float = 300.0) -> subprocess.Popen:
    """``mmrec serve`` in a subprocess, returned once ``/health`` answers."""
    import httpx

    process = subprocess.Popen([sys.executable, "-m", "mmrec", "serve", "--model", model, "--host", "127.0.0.1",
                                "--port", str(port), "--index", index], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).raise_for_status()
            return process
        except httpx.HTTPError:
            if process.poll() is not None:
                raise SystemExit(f"mmrec serve exited with code {process.returncode}: {process.stderr.read().strip()}")
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"mmrec serve did not answer /health within {timeout:.0f} s")
            time.sleep(0.2)


def user_sequence(model: str, n: int, unknown_fraction: float, seed: int) -> list[str]:
    """``n`` user ids drawn from the model's vocabulary, a share replaced by ids it does not know."""
    from mmrec.io import read_json

    users = read_json(Path(model) / "vocab.json")["user_ids"]
    rng = np.random.default_rng(seed)
    picked = [users[i] for i in rng.integers(0, len(users), n)]
    for i in np.flatnonzero(rng.random(n) < unknown_fraction):
        picked[i] = f"unknown-user-{i}"
    return picked


def fire(url: str, users: list[str], args: argparse.Namespace) -> dict:
    """Send the requests from ``args.concurrency`` threads; latencies of the answered ones and failures."""
    import httpx

    latencies: list[float] = []
    failures: dict[str, int] = {}
    lock = threading.Lock()
    next_request = iter(range(len(users)))
    deadline = time.monotonic() + args.duration

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.monotonic() < deadline:
                with lock:
                    i = next(next_request, None)
                if i is None:
                    return
                params = {"user": users[i], "k": args.k, "candidates": args.candidates}
                start = time.perf_counter()
                try:
                    status = http.get("/recommend", params=params).status_code
                except httpx.HTTPError as err:
                    status = type(err).__name__
                took = time.perf_counter() - start
                with lock:
                    if status == 200:
                        latencies.append(took)
                    else:
                        failures[str(status)] = failures.get(str(status), 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return {"latencies": np.asarray(latencies), "failures": failures, "elapsed": elapsed}


def main(argv: list[str] | None = None) -> int:
    """Run the load test and print the JSON report."""
    import httpx

    from mmrec.io import atomic_write_json, dumps_json

    args = parse_args(argv)
    port = free_port()
    process = start_server(args.model, port, args.index)
    url = f"http://127.0.0.1:{port}"
    try:
        health = httpx.get(f"{url}/health").json()
        users = user_sequence(args.model, args.warmup + args.requests, args.unknown_fraction, args.seed)
        with httpx.Client(base_url=url, timeout=30) as http:
            for user in users[:args.warmup]:
                http.get("/recommend", params={"user": user, "k": args.k, "candidates": args.candidates})
        result = fire(url, users[args.warmup:], args)
        counters = httpx.get(f"{url}/health").json()["counters"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    lat = result["latencies"] * 1000.0
    sent = len(lat) + sum(result["failures"].values())
    report = {
        "model": health["model"], "n_users": health["n_users"], "n_items": health["n_items"], "index": health["index"],
        "k": args.k, "candidates": args.candidates, "unknown_fraction": args.unknown_fraction,
        "concurrency": args.concurrency, "requests": sent, "ok": int(len(lat)),
        "failed": sum(result["failures"].values()), "failures_by_status": result["failures"],
        "elapsed_s": round(result["elapsed"], 3), "throughput_rps": round(sent / result["elapsed"], 1),
        "latency_ms": {name: round(float(np.percentile(lat, q)), 2) if len(lat) else None
                       for name, q in (("p50", 50), ("p95", 95), ("p99", 99))}
                      | {"mean": round(float(lat.mean()), 2) if len(lat) else None,
                         "max": round(float(lat.max()), 2) if len(lat) else None},
        "server_fallbacks": counters["fallback"], "cpu_count": os.cpu_count(),
    }
    if args.out:
        atomic_write_json(args.out, report)
    print(dumps_json(report, indent=2))
    return 0 if report["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
