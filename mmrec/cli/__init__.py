"""The ``mmrec`` command line: one subcommand per module in this package.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; a
command with tasks of its own (``mmrec train recommender|coldstart|...``) registers them as nested
sub-parsers and may name a ``DEFAULT_TASK`` taken when none is given. Commands that report metrics take
``--json`` and then print exactly one JSON object on stdout.

`main` is the one error boundary: an expected failure (bad input: a missing or malformed file, a bad
value, an unusable device) is one line ``mmrec <command>: error: <message>`` on stderr and exit code 2;
anything else is a bug, reported in one line with exit code 1 and a hint to rerun with ``-v``, which
adds the traceback. Ctrl-C (exit 130) and SIGTERM (exit 143, what ``kill`` and job schedulers send) both unwind
through ``finally``, so a half-written file or folder is removed, never left beside the output.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import pickle
import signal
import sys
import threading
import traceback
from typing import Any, Callable, Iterator

COMMANDS = ("data_info", "split", "train", "evaluate", "recommend", "embed", "shards", "stream", "world", "serve")


class Terminated(KeyboardInterrupt):
    """SIGTERM raised as an exception in the main thread: Python's default is to die at once, skipping the
    ``finally`` blocks that remove a half-built output (`mmrec.io.atomic_folder`'s temporary sibling)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises `Terminated` (in the main thread; elsewhere signals cannot be set)."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run_script(name: str, body: Callable[[], Any]) -> None:
    """The error boundary of a demo script, as `main` is the command line's: bad input is one line ``<name>:
    error: ...`` and exit code 2; Ctrl-C and SIGTERM end it with 130 and 143 (``finally`` blocks run); anything
    else is a bug and keeps Python's traceback."""
    try:
        with sigterm_raises():
            body()
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"{name}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        sys.exit(143 if terminated else 130)
    except expected_errors() as err:
        print(f"{name}: error: {error_message(err)}", file=sys.stderr)
        sys.exit(2)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``mmrec <command>: error: <message>`` and where help is, no usage dump
    (sub-parsers are made of the same class)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_verbose_argument(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``-v``: INFO logging and tracebacks; accepted before or after the command name."""
    parser.add_argument("-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="log at INFO level to stderr and print the traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = Parser(prog="mmrec", description="Multimodal recommendation toolkit.")
    add_verbose_argument(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(f"mmrec.cli.{module_name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        add_verbose_argument(p)
        module.add_arguments(p)
        p.set_defaults(_command=module.NAME)
        if hasattr(module, "run"):  # a command with tasks sets _run in each task's sub-parser
            p.set_defaults(_run=module.run)
    return parser


def select_task(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Prepare ``parser`` for ``argv`` and return the arguments to parse. For a command with tasks: its
    ``DEFAULT_TASK`` is inserted when none is given (``mmrec train --model itemknn ...`` is ``mmrec train
    recommender --model itemknn ...``), and its ``add_task_extras(command_parser, task)`` adds the chosen
    task's own options."""
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if at is None:
        return argv
    module = next((importlib.import_module(f"mmrec.cli.{m}") for m in COMMANDS
                   if m.replace("_", "-") == argv[at]), None)
    command_parser = subcommands(parser).get(argv[at])
    tasks = subcommands(command_parser) if command_parser is not None else {}
    if not tasks:
        return argv
    following = argv[at + 1] if at + 1 < len(argv) else None
    default = getattr(module, "DEFAULT_TASK", None)
    if following not in tasks and following not in ("-h", "--help") and default is not None:
        argv, following = [*argv[:at + 1], default, *argv[at + 1:]], default
    if following in tasks and hasattr(module, "add_task_extras"):
        module.add_task_extras(command_parser, following)
    return argv


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-parsers of ``parser`` by name (empty when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input or an unusable environment, not a bug: exit code 2."""
    import yaml
    from safetensors import SafetensorError

    return (ValueError, OSError, KeyError, EOFError, yaml.YAMLError, SafetensorError, pickle.UnpicklingError)


def error_message(err: BaseException) -> str:
    """One line saying what went wrong with which input."""
    import yaml

    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        problem = err.problem or ""
        if isinstance(err, yaml.constructor.ConstructorError) and "python/" in problem:
            problem = (f"{problem.replace('could not determine a constructor for the tag', 'the tag')} "
                       f"is not allowed: YAML here is data (safe_load), never Python objects")
        text = f"{mark.name}: not valid YAML at line {mark.line + 1} column {mark.column + 1}: {problem}"
        if err.context:
            text += f" ({err.context})"
    elif isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]
    elif isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    elif isinstance(err, json.JSONDecodeError):
        text = f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
    elif isinstance(err, UnicodeDecodeError):
        text = f"not UTF-8 text ({err.reason} at byte {err.start})"
    else:
        text = str(err) or type(err).__name__
        if isinstance(err, (EOFError, pickle.UnpicklingError)) or type(err).__name__ == "SafetensorError":
            text = f"{type(err).__name__}: {text}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmrec`` console script and of ``python -m mmrec``: the exit code."""
    parser = build_parser()
    argv = select_task(parser, list(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or argparse's own one-line error on a bad argument
        return exit_.code if isinstance(exit_.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    command = f"mmrec {getattr(args, '_command', args.command)}"
    try:
        with sigterm_raises():
            return int(args._run(args) or 0)
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated)
        print(f"{command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except expected_errors() as err:
        if args.verbose:
            traceback.print_exc()
        print(f"{command}: error: {error_message(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug: say so in one line; the traceback only with -v
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else f" (rerun with 'mmrec -v {args.command} ...' for the traceback)"
        print(f"{command}: internal error: {type(err).__name__}: {error_message(err)}{hint}", file=sys.stderr)
        return 1
    finally:
        close_process_group()


def close_process_group() -> None:
    """Leave a torch.distributed group (``accelerate launch`` runs) before exit: a gloo group left to the
    interpreter's teardown can abort the process ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
