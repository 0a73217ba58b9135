"""``mmrec train TASK``: fit a model, choose the epoch on valid, save it.

Tasks are nested sub-commands, each with only its own options: ``recommender`` (the default, any
registered model), ``coldstart`` (the VAE fusion model with its item content), ``sequence`` (SASRec on a
split in time), ``align`` (a `UnifiedSpace`) and ``pipeline`` (where `mmrec.cli.pipeline` is installed).
The task runners live in their own modules; one that needs options beyond the shared ones adds them with
``add_task_arguments(parser)``, called (by `add_task_extras`) only for the task being run, so that parsing
never imports the heavy runner modules of the other tasks.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

from mmrec.cli.common import (add_data_argument, add_split_arguments, check_out_folder, emit, load_data,
                              load_run_file, make_split, non_negative_int, positive_int, prepare_checkpoint_dir)
from mmrec.config import from_dict
from mmrec.train import TrainConfig

NAME = "train"
HELP = "train a model (TASK: recommender by default, coldstart, sequence, align, ...) and save it"
DEFAULT_TASK = "recommender"
TASK_HELP = {
    "recommender": "any registered recommender (--model); content models get MiniLM (or --space) item vectors",
    "coldstart": "the VAE fusion cold-start model with its item content (--space or MiniLM text)",
    "sequence": "SASRec on a leave-last-out split (content with 'model: {use_content: true}')",
    "align": "a UnifiedSpace aligned on a catalog (--preset NAME, or --config with 'preset:' / 'space:')",
}
# Registered models that have set_content but do not use the vectors (their scores ignore content).
CONTENT_UNUSED = ("random",)


@dataclass
class RunConfig:
    """A YAML run file: ``model:`` (the model's own settings) and ``train:`` (`TrainConfig`)."""

    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)


def registered_models() -> list[str]:
    """Names of every registered recommender (importing the model modules registers them)."""
    import mmrec.recommender as registry

    if hasattr(registry, "registered_models"):
        return list(registry.registered_models())
    for module in registry.MODEL_MODULES:
        importlib.import_module(module)
    return sorted(registry.MODELS)


def model_name(text: str) -> str:
    """A registered model's name (argparse type: the registry is searched only when ``--model`` is given,
    so that other commands never import every model module)."""
    names = registered_models()
    if text not in names:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; registered: {', '.join(names)}")
    return text


class _ModelsHelp(str):
    """Help text listing the registered models, filled in only when help is shown (argparse formats every
    help string with ``%``)."""

    def __mod__(self, params: Any) -> str:
        return str(self).replace("%s", ", ".join(registered_models()))


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The run file and the loop overrides every trained task shares, and ``--json``."""
    parser.add_argument("--config", help="YAML with 'model:' and 'train:' sections (unknown keys are errors)")
    parser.add_argument("--epochs", type=positive_int, help="override train.epochs (at least 1)")
    parser.add_argument("--checkpoint-dir", help="checkpoint here (created if missing) and resume from the "
                                                 "newest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def add_space_argument(parser: argparse.ArgumentParser) -> None:
    """``--space``: a saved UnifiedSpace making item content vectors."""
    parser.add_argument("--space", help="a saved UnifiedSpace making the item content vectors "
                                        "(default: all-MiniLM-L6-v2 on the item texts)")


def add_model_arguments(parser: argparse.ArgumentParser, model_required: bool = True,
                        data_required: bool = True) -> None:
    """Options shared by ``train recommender`` and ``evaluate``."""
    add_data_argument(parser, required=data_required)
    add_split_arguments(parser)
    parser.add_argument("--model", required=model_required, type=model_name, metavar="MODEL",
                        help=_ModelsHelp("which recommender: %s"))
    add_space_argument(parser)
    add_training_arguments(parser)


def run_config(args: argparse.Namespace) -> RunConfig:
    """The YAML config (if any) with command-line overrides applied, checked as a whole (a bad key or
    value in the file is an error here, before any data is read)."""
    config = load_run_file(RunConfig, args.config) if args.config else RunConfig()
    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.checkpoint_dir is not None:
        overrides["checkpoint_dir"] = args.checkpoint_dir
    if args.no_progress:
        overrides["progress"] = False
    where = str(args.config) if args.config else "train"
    train = from_dict(TrainConfig, {**dataclasses.asdict(config.train), **overrides}, where=where)
    # from the flag or from the file, checked the same way before any work
    train.checkpoint_dir = prepare_checkpoint_dir(train.checkpoint_dir, (getattr(args, "data", None),),
                                                  getattr(args, "out", None))
    args.seed = train.seed  # one seed for the hold-out and the training: --seed, else the run file's
    return RunConfig(config.model, train)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the tasks as nested sub-commands."""
    from mmrec.cli import add_verbose_argument

    sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for task, (add, run_task) in _tasks().items():
        module = _pipeline() if task == "pipeline" else None
        text = TASK_HELP.get(task) or (module.HELP if module is not None and hasattr(module, "HELP") else task)
        p = sub.add_parser(task, help=text, description=text)
        add_verbose_argument(p)
        add(p)
        p.set_defaults(_run=run_task, _command=f"{NAME} {task}")


def _tasks() -> dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]]:
    tasks = {"recommender": (_add_recommender, run_recommender), "coldstart": (_add_content_task, run_coldstart),
             "sequence": (_add_content_task, run_sequence), "align": (_add_align, run_align)}
    pipeline = _pipeline()
    if pipeline is not None:
        tasks["pipeline"] = (pipeline.add_arguments, pipeline.run)
    return tasks


def _pipeline() -> Any:
    """`mmrec.cli.pipeline` where it exists (``mmrec train pipeline``), else None."""
    if importlib.util.find_spec("mmrec.cli.pipeline") is None:
        return None
    return importlib.import_module("mmrec.cli.pipeline")


RUNNER_MODULES = {"coldstart": "mmrec.cli.coldstart", "sequence": "mmrec.cli.sequence", "align": "mmrec.cli.align"}


def add_task_extras(parser: argparse.ArgumentParser, task: str) -> None:
    """Add the options of ``task``'s runner module beyond the shared ones (its ``add_task_arguments``) to
    that task's sub-parser of ``parser`` (the ``train`` parser); `mmrec.cli.main` calls it for the task in
    the command line."""
    if task not in RUNNER_MODULES:
        return
    add = getattr(importlib.import_module(RUNNER_MODULES[task]), "add_task_arguments", None)
    if add is not None:
        from mmrec.cli import subcommands

        add(subcommands(parser)[task])


def add_refit_argument(parser: argparse.ArgumentParser) -> None:
    """``--refit-all``: deploy mode of `mmrec.experiment.run` (choose and report on valid/test, then refit
    on every interaction up to the cutoff for the chosen epoch count, and save that model)."""
    parser.add_argument("--refit-all", action="store_true",
                        help="after choosing on valid and reporting test, refit on all data (train + valid + test) "
                             "for the chosen number of epochs and save that model, to answer for tomorrow")


def _add_out(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--out", required=True, help=f"folder for the trained {what} (created; safetensors + JSON)")


def _add_recommender(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_refit_argument(parser)
    _add_out(parser, "model")


def _add_content_task(parser: argparse.ArgumentParser) -> None:
    """Options of the tasks that train one fixed model on item content (coldstart, sequence)."""
    add_data_argument(parser)
    add_split_arguments(parser)
    add_space_argument(parser)
    add_training_arguments(parser)
    add_refit_argument(parser)
    _add_out(parser, "model")


def _add_align(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser, required=False)
    parser.add_argument("--shards", help="stream items from catalog shards (webdataset brace notation, e.g. "
                                         "'out/shards/catalog-{000000..000021}.tar'); the last shard is held out "
                                         "for validation. Without it, --data is read into memory")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="seed of the hold-out and of training (default: the run file's train.seed, else 0)")
    add_training_arguments(parser)
    _add_out(parser, "space")


def _check_paths(args: argparse.Namespace, kind: str = "recommender") -> None:
    """``--out``, checked before any work: saving a ``kind`` replaces it whole, so it may hold nothing else.
    The checkpoint folder, from ``--checkpoint-dir`` or the run file, is checked where the two are joined
    (`run_config`; `mmrec.cli.align.run_align` for align)."""
    check_out_folder(args.out, kind=kind, inputs=(getattr(args, "data", None),))


def run_recommender(args: argparse.Namespace) -> int:
    """Train, report valid/test metrics at the chosen point, save the model. Under ``accelerate launch``
    every process trains its share of each batch and holds the same model; the main one evaluates, saves
    and reports (see `mmrec.experiment.is_main_process`)."""
    from mmrec.experiment import is_main_process

    _check_paths(args)
    config = run_config(args)
    model, report = fit_recommender(args, config)
    if not is_main_process():
        return 0
    model.save_pretrained(args.out)
    emit({"model": args.model, "out": args.out, **report}, args.json)
    return 0


def fit_recommender(args: argparse.Namespace, config: RunConfig) -> tuple[Any, dict]:
    """Fit ``--model`` on the split of ``--data`` (`mmrec.experiment.run`). A model that ranks by item
    content first gets every item's content vector, from MiniLM on the item texts or from ``--space``;
    the recipe is kept on the model so that it is saved with it."""
    from mmrec.experiment import run as run_experiment

    model_config, setup, recipe = config.model, None, None
    data = load_data(args.data)
    if needs_content(args.model, model_config) and data.catalog is None:
        raise ValueError(f"--model {args.model} ranks by item content, and --data {args.data} has no catalog "
                         f"(item texts and photos): use an H&M folder or 'synthetic'")
    split, _ = make_split(data, args)
    if needs_content(args.model, model_config):
        from mmrec.cli.coldstart import split_content

        recipe, vectors = split_content(args, data, split)
        model_config = {"content_dim": vectors.shape[1], **model_config}
        setup = lambda model: model.set_content(vectors)  # noqa: E731 (between building and fitting)
    model, report = run_experiment(split, args.model, model_config=model_config, train_config=config.train,
                                   setup=setup, refit_all=getattr(args, "refit_all", False))
    if recipe is not None:
        model.content_recipe = recipe  # saved as content.json beside the weights
    return model, report


def needs_content(name: str, model_config: dict) -> bool:
    """Whether registered model ``name`` must be given item content vectors before it is fitted: it has
    ``set_content``, its config does not turn content off (``use_content``), and it uses the vectors."""
    from mmrec.recommender import MODELS

    registered_models()
    cls = MODELS[name]
    declared = getattr(cls, "needs_content", None)
    if isinstance(declared, bool):
        return declared
    if not hasattr(cls, "set_content") or name in CONTENT_UNUSED:
        return False
    fields = {f.name: f for f in dataclasses.fields(cls.config_class)} if dataclasses.is_dataclass(
        cls.config_class) else {}
    if "use_content" in fields:
        return bool(model_config.get("use_content", fields["use_content"].default))
    return True


def run_coldstart(args: argparse.Namespace) -> int:
    """``mmrec train coldstart`` (`mmrec.cli.coldstart.run_coldstart`)."""
    from mmrec.cli.coldstart import run_coldstart as run_task

    _check_paths(args)
    config = run_config(args)
    return _main_process_writes(run_task, args, config)


def run_sequence(args: argparse.Namespace) -> int:
    """``mmrec train sequence`` (`mmrec.cli.sequence.run_sequence`)."""
    from mmrec.cli.sequence import run_sequence as run_task

    _check_paths(args)
    config = run_config(args)
    return _main_process_writes(run_task, args, config)


def _main_process_writes(run_task: Callable[..., int], args: argparse.Namespace, config: RunConfig) -> int:
    """Run a task runner that trains, saves to ``--out`` and reports. Under ``accelerate launch`` only the
    main process writes ``--out`` and prints: every other one (which trains its share of each batch and
    holds the same model) saves into a temporary folder that is deleted, and its report is dropped."""
    import contextlib
    import io
    import tempfile
    from pathlib import Path

    from mmrec.experiment import is_main_process

    if is_main_process():
        return run_task(args, config.model, config.train)
    with tempfile.TemporaryDirectory(prefix="mmrec-train-rank-") as scratch, contextlib.redirect_stdout(io.StringIO()):
        return run_task(argparse.Namespace(**{**vars(args), "out": str(Path(scratch) / "out")}), config.model,
                        config.train)


def run_align(args: argparse.Namespace) -> int:
    """``mmrec train align`` (`mmrec.cli.align.run_align`)."""
    from mmrec.cli.align import run_align as run_task

    _check_paths(args, kind="space")
    if args.config:
        from mmrec.cli.align import AlignRunConfig

        load_run_file(AlignRunConfig, args.config)  # a bad run file is an error before any data is read
    return run_task(args)
