"""``mmrec serve``: answer recommendations over HTTP from a saved model folder (see `mmrec.serve`).

    mmrec serve --model runs/coldstart/model [--host 127.0.0.1] [--port 8000] [--state-dir runs/served]
                [--index none|flat|ivf|hnsw]

The folder is loaded and checked, and the port bound, before the server starts: a bad folder, a bad
``--state-dir`` or a taken port is one line and exit code 2. The model folder is never written; with
``--state-dir`` each change (``POST /items``, ``POST /events``) is saved there as a complete model folder,
without it changes live in memory only.
"""
from __future__ import annotations

import argparse
import sys

from mmrec.cli.common import non_negative_int, positive_int

INDEX_KINDS = ("none", "flat", "ivf", "hnsw")  # mmrec.serve.INDEX_KINDS (not imported here: parsing stays light)
NAME = "serve"
HELP = "serve a saved model over HTTP: /recommend, /items, /events, /health"


def port_number(text: str) -> int:
    """``--port``: 0..65535 (0: any free port)."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options."""
    parser.add_argument("--model", required=True, help="folder written by 'mmrec train --out' (never modified)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port_number, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--state-dir", help="a new folder where the model is saved after each change (POST /items, "
                                            "/events); without it changes live in memory only")
    parser.add_argument("--index", choices=INDEX_KINDS, default="none",
                        help="retrieval index for /recommend over all items (default none: score every item)")
    parser.add_argument("--max-k", type=positive_int, default=100, help="largest k answered (default 100)")
    parser.add_argument("--torch-threads", type=positive_int, default=1,
                        help="torch's and FAISS's intra-op threads (default 1: requests run in parallel in the server's thread "
                             "pool; on a 2-core machine one request took 1.5 ms with 1 thread, 17 ms with 2)")
    parser.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                        help="uvicorn's log level (default warning)")


def run(args: argparse.Namespace) -> int:
    """Load and check the model, bind the port, then serve until interrupted."""
    import torch

    from mmrec.cli.recommend import load_model
    from mmrec.serve import ServeConfig, bind, create_app, make_server

    torch.set_num_threads(args.torch_threads)
    if args.index != "none":  # FAISS's OpenMP threads too: one query's search spun 2 threads for 36 ms vs 2 ms
        import faiss

        faiss.omp_set_num_threads(args.torch_threads)
    config = ServeConfig(max_k=args.max_k, default_k=min(12, args.max_k), index=args.index, state_dir=args.state_dir)
    try:
        model = load_model(args.model)
    except OSError as err:  # a missing folder or an unreadable file: name the option, as load_model does
        from mmrec.cli import error_message

        raise ValueError(f"--model {args.model}: cannot load the saved model: {error_message(err)}") from None
    app = create_app(model, config, source=args.model)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    health = app.state.service.health()
    where = f"saved to {args.state_dir}" if args.state_dir else "kept in memory only"
    print(f"mmrec serve: {health['model']} model ({health['n_users']} users, {health['n_items']} items) on "
          f"http://{host}:{port}; changes {where}", file=sys.stderr, flush=True)
    make_server(app, sock, args.log_level).run(sockets=[sock])
    return 0
