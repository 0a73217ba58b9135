"""The ``mmrec`` command line: one subcommand per module in this package.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Commands that report metrics take ``--json`` and then print exactly one JSON object on stdout.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ("data_info", "split", "train", "evaluate", "recommend", "embed", "shards", "stream")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="mmrec", description="Multimodal recommendation toolkit.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(f"mmrec.cli.{module_name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmrec`` console script and of ``python -m mmrec``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"mmrec {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        close_process_group()


def close_process_group() -> None:
    """Leave a torch.distributed group (``accelerate launch`` runs) before exit: a gloo group left to the
    interpreter's teardown can abort the process ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
