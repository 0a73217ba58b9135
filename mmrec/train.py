"""The one training loop, on `accelerate.Accelerator`, for every trainable model in mmrec.

A model is an ``nn.Module`` with ``training_step(batch) -> dict`` whose ``"loss"`` entry is minimised
(the other entries are logged). The loop owns everything else: device placement and processes, mixed
precision, gradient accumulation, a deterministic epoch order, checkpoints every N optimiser steps with
exact resume, early stopping on a validation metric (the best weights are restored at the end), a
progress bar, samples/s and model FLOP/s (counted once by torch's FLOP counter; MFU given `peak_flops`).

Exact resume rests on two things: the batch order is a pure function of ``(seed, epoch)`` (see
`EpochSampler`, and ``dataset.set_epoch`` for per-epoch sampling such as negatives), and accelerate's
``save_state`` / ``load_state`` carry weights, optimiser and RNG states. A resumed run skips the batches
the checkpoint had already consumed and continues as if never interrupted.

Checkpoints cannot cross runs: each records the run's identity (`run_identity`: model, model config, the
training settings that define the run, seed, process count, parameter shapes, a data fingerprint) and a
run whose identity differs refuses to resume from it. Each checkpoint folder is written to a temporary
sibling and renamed into place, and carries the best weights so far, so it is complete on its own. A damaged
newest checkpoint is set aside (renamed ``damaged_step_…``) with a warning and the previous one is used;
a damaged random-number state is a warning that the resume is not exact. What accelerate reads back is
data, never code: weights are safetensors, optimiser and RNG states go through ``torch.load`` with
``weights_only=True`` (accelerate's default), the loop state is strict JSON.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import itertools
import json
import logging
import math
import numbers
import os
import random
import re
import shutil
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from accelerate.utils import send_to_device
from tqdm.auto import tqdm

from mmrec.config import to_dict
from mmrec.io import atomic_folder, atomic_save_tensors, atomic_write_json, finite_or_none, read_json
from mmrec.metrics import METRICS

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step_"
DAMAGED_PREFIX = "damaged_"
LOOP_STATE = "loop_state.json"
BEST_WEIGHTS = "best.safetensors"
_CHECKPOINT_NAME = re.compile(rf"{CHECKPOINT_PREFIX}[0-9]+")
# The TrainConfig fields that define a run: a checkpoint resumes only under the same values. The others
# (epochs, patience, eval_every, checkpoint_dir, checkpoint_every, keep_checkpoints, resume, progress, cpu,
# num_workers, peak_flops) say how long to train, when to look and where to write, and may change on resume:
# a finished run can be continued with more epochs.
RUN_FIELDS = ("seed", "batch_size", "lr", "weight_decay", "optimizer", "mixed_precision", "grad_accum_steps",
              "max_grad_norm", "early_stop_metric")
# "<metric>@<k>", optionally prefixed by a retrieval direction ("t2i_recall@10"): what mmrec.evaluate and
# the alignment validations report.
_METRIC_NAME = re.compile(r"(?:(?P<prefix>[A-Za-z0-9_]+)_)?(?P<metric>[A-Za-z]+)@(?P<k>[0-9]+)")


def check_metric_name(name: Any, where: str = "TrainConfig.early_stop_metric") -> None:
    """Refuse a name no evaluator reports (e.g. the typo ``"recal@20"``) before any training is done."""
    match = _METRIC_NAME.fullmatch(name) if isinstance(name, str) else None
    if match and match["metric"] in METRICS and int(match["k"]) >= 1:
        return
    hint = ""
    if isinstance(name, str):
        head, _, k = name.partition("@")
        prefix, _, metric = head.rpartition("_")
        close = difflib.get_close_matches(metric.lower(), METRICS, n=1)
        if close:
            k = k if k.isdigit() and int(k) >= 1 else "20"
            hint = f" (did you mean {prefix + '_' if prefix else ''}{close[0]}@{k}?)"
    raise ValueError(f"{where} {name!r} is not a metric the evaluators report: expected '<metric>@<k>' with "
                     f"<metric> one of {', '.join(METRICS)} and k ≥ 1, optionally prefixed like 't2i_'{hint}")


@dataclass
class TrainConfig:
    """Settings of the training loop (the model's own settings live in the model's config).

    ``patience``: training stops after more than ``patience`` evaluations in a row without improvement (0
    stops at the first one). ``keep_checkpoints``: how many checkpoint folders to keep; keep at least 2 so
    that a damaged newest one has a previous one to fall back to. ``resume``: continue from the newest
    checkpoint in ``checkpoint_dir``; with it off, a ``checkpoint_dir`` already holding checkpoints is refused
    rather than mixed with (and its checkpoints deleted by) the new run.
    """

    epochs: int = 100
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    grad_accum_steps: int = 1
    max_grad_norm: float | None = None
    seed: int = 0
    num_workers: int = 0
    eval_every: int = 1
    early_stop_metric: str = "recall@20"
    patience: int = 20
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    resume: bool = True
    progress: bool = True
    cpu: bool = False
    peak_flops: float | None = None  # per process; with it, model-FLOPs utilisation is logged

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise a one-line `ValueError` naming the first invalid field. Run at construction and again by
        `fit`, since fields may be set after construction (a command-line override)."""
        for name, low in (("epochs", 1), ("batch_size", 1), ("grad_accum_steps", 1), ("eval_every", 1),
                          ("keep_checkpoints", 1), ("checkpoint_every", 0), ("patience", 0), ("num_workers", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ValueError(f"TrainConfig.{name} must be an integer ≥ {low}, got {value!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ValueError(f"TrainConfig.seed must be an integer in [0, 2**32), got {self.seed!r}")
        for name, optional, zero_ok in (("lr", False, False), ("weight_decay", False, True),
                                        ("max_grad_norm", True, False), ("peak_flops", True, False)):
            value = getattr(self, name)
            if value is None and optional:
                continue
            if not _is_number(value) or not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
                raise ValueError(f"TrainConfig.{name} must be a finite number {'≥' if zero_ok else '>'} 0"
                                 f"{' or null' if optional else ''}, got {value!r}")
        hints = typing.get_type_hints(TrainConfig)
        for name in ("optimizer", "mixed_precision"):
            allowed = typing.get_args(hints[name])
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name in ("resume", "progress", "cpu"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, (str, os.PathLike)):
            raise ValueError(f"TrainConfig.checkpoint_dir must be a folder path, got {self.checkpoint_dir!r}")
        check_metric_name(self.early_stop_metric)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass
class TrainResult:
    """What a run did: per-epoch history, the best validation point and where the loop stopped."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    global_step: int = 0
    epochs_run: int = 0
    stopped_early: bool = False
    resumed_from: str | None = None


class EpochSampler(Sampler[int]):
    """A shuffle that is a pure function of ``(seed, epoch)``, sharded over processes, able to start mid-epoch.

    Each of ``num_replicas`` processes takes every ``num_replicas``-th index of the same permutation
    (padded to equal length, as ``DistributedSampler`` does); ``skip`` drops this process's first samples,
    which is how a resumed run continues an epoch where its checkpoint left it.
    """

    def __init__(self, n: int, seed: int, *, shuffle: bool = True, num_replicas: int = 1, rank: int = 0) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Choose the epoch whose order `__iter__` yields, and how many leading samples to drop."""
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        per_replica = -(-self.n // self.num_replicas)
        order += order[: per_replica * self.num_replicas - self.n]
        return order[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.skip:])

    def __len__(self) -> int:
        return max(0, -(-self.n // self.num_replicas) - self.skip)


class _StepModule(nn.Module):
    """Routes ``forward`` to ``training_step`` so DistributedDataParallel's hooks see every step."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.model.training_step(batch)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay, momentum=0.9)


# -- checkpoint folders and run identity -----------------------------------------------------------------
def checkpoint_folders(checkpoint_dir: str | Path) -> list[Path]:
    """Every ``step_<n>`` folder under ``checkpoint_dir``, newest first (complete or not)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]), reverse=True)


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest checkpoint folder under ``checkpoint_dir`` that has a loop state, if any."""
    return next((p for p in checkpoint_folders(checkpoint_dir) if (p / LOOP_STATE).is_file()), None)


def _plain_json(value: Any) -> Any:
    """``value`` as plain JSON data: numpy scalars unwrapped, tuples as lists, NaN and ±infinity as the
    strings "nan", "inf", "-inf" (strict JSON has no such numbers; `_from_plain_json` turns them back)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _from_plain_json(value: Any) -> Any:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _from_plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_plain_json(v) for v in value]
    return value


def _sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out |= _flatten(inner, f"{prefix}{key}.")
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def data_fingerprint(data: Dataset) -> str:
    """The default data fingerprint: ``data.fingerprint()`` where the dataset has one (it knows what defines
    its content), else its type and length (cheap; a caller that can hash its data passes
    ``fit(..., fingerprint=...)`` instead). With the parameter shapes in `run_identity` (a recommender's
    shapes include its user and item counts and its number of training pairs), this tells most other data apart."""
    own = getattr(data, "fingerprint", None)
    if callable(own):
        return str(own())
    try:
        return f"{type(data).__name__} of {len(data)} items"
    except TypeError:
        return f"{type(data).__name__} (unsized)"


def run_identity(model: nn.Module, data: Dataset, config: TrainConfig, *, fingerprint: str | None = None,
                 processes: int = 1) -> dict:
    """What a checkpoint records about its run, so that another run cannot resume from it: the model's name,
    its config (a dataclass; with a sha256 of its sorted JSON), the `RUN_FIELDS` of ``config``, the seed,
    the process count (the batch size is per process), the parameter and buffer shapes, and the data
    fingerprint (``fingerprint`` or `data_fingerprint`)."""
    model_config = getattr(model, "config", None)
    model_config = _plain_json(to_dict(model_config)) if dataclasses.is_dataclass(model_config) and \
        not isinstance(model_config, type) else None
    train = _plain_json({name: getattr(config, name) for name in RUN_FIELDS})
    shapes = {name: f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}" for name, t in model.state_dict().items()}
    return {"model": getattr(model, "name", "") or type(model).__name__,
            "model_config": model_config, "model_config_sha256": _sha256(model_config) if model_config else None,
            "train": train, "train_sha256": _sha256(train), "seed": config.seed, "processes": processes,
            "parameters": shapes, "parameters_sha256": _sha256(shapes),
            "data": fingerprint if fingerprint is not None else data_fingerprint(data)}


def _differences(old: Any, new: Any, limit: int = 3) -> str:
    old, new = _flatten(old or {}), _flatten(new or {})
    missing = object()
    changed = [f"{key}: {old.get(key, '(none)')!r} → {new.get(key, '(none)')!r}" for key in sorted(set(old) | set(new))
               if old.get(key, missing) != new.get(key, missing)]
    more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
    return ", ".join(changed[:limit]) + more


def identity_mismatch(saved: Any, current: dict) -> str | None:
    """How the identity recorded in a checkpoint differs from this run's (None when it is the same run)."""
    if not isinstance(saved, dict) or "model" not in saved:
        return "records no run identity (written by an older mmrec), so it cannot be checked against this run"
    if saved["model"] != current["model"]:
        return f"was written by model {saved['model']!r}, this run trains {current['model']!r}"
    if saved.get("processes") != current["processes"]:
        return f"was written by {saved.get('processes')} process(es), this run has {current['processes']}"
    if saved.get("seed") != current["seed"]:
        return f"was written with seed {saved.get('seed')}, this run has seed {current['seed']}"
    if saved.get("train_sha256") != current["train_sha256"]:
        return f"was written with other training settings ({_differences(saved.get('train'), current['train'])})"
    if saved.get("model_config_sha256") != current["model_config_sha256"]:
        return (f"was written with another {current['model']!r} config "
                f"({_differences(saved.get('model_config'), current['model_config'])})")
    if saved.get("parameters_sha256") != current["parameters_sha256"]:
        return f"holds other parameter shapes ({_differences(saved.get('parameters'), current['parameters'])})"
    if saved.get("data") != current["data"]:
        return f"was trained on other data ({saved.get('data')!r}, this run has {current['data']!r})"
    return None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _rng_problem(folder: Path, process_index: int) -> str | None:
    """Why this process's random-number state in ``folder`` cannot be restored, or None. accelerate's
    ``load_state`` skips an unreadable one with an INFO line only; this reads it the same way (weights-only
    ``torch.load``) and tries each state on a scratch generator, touching no global RNG."""
    from accelerate.utils import RNG_STATE_NAME, load

    file = folder / f"{RNG_STATE_NAME}_{process_index}.pkl"
    try:
        states = load(file)
        random.Random().setstate(states["random_state"])
        np.random.RandomState().set_state(states["numpy_random_seed"])
        torch.Generator().set_state(states["torch_manual_seed"])
    except Exception as err:  # anything: a missing file, a truncated pickle, a refused global, a bad state
        return f"{file.name}: {type(err).__name__}: {_one_line(err)}"
    return None


def _set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint folder out of the ``step_`` namespace (kept for inspection, never resumed)."""
    target, n = path.with_name(DAMAGED_PREFIX + path.name), 1
    while target.exists():
        target, n = path.with_name(f"{DAMAGED_PREFIX}{path.name}.{n}"), n + 1
    os.replace(path, target)
    return target


def _prepare_checkpoint_dir(checkpoint_dir: str | os.PathLike) -> Path:
    """Create ``checkpoint_dir`` before any work (a missing folder must not crash the first save)."""
    root = Path(checkpoint_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"TrainConfig.checkpoint_dir {root} is a file, not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"TrainConfig.checkpoint_dir {root} cannot be created: {err.strerror or err}") from None
    return root


@dataclass
class _Loaded:
    """A checkpoint read back by this process: its loop state, best weights and RNG problem (if any)."""

    epoch: int
    batch_in_epoch: int
    bad_evals: int
    best_value: float
    accelerator_step: int | None
    result: TrainResult
    best_state: dict[str, torch.Tensor] | None
    rng_problem: str | None


class _Loop:
    """State of one run; `fit` is its only user."""

    def __init__(self, model: nn.Module, data: Dataset, config: TrainConfig,
                 evaluate_fn: Callable[[nn.Module], dict[str, float]] | None, fingerprint: str | None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        if not isinstance(config, TrainConfig):
            raise TypeError(f"fit needs a TrainConfig, got {type(config).__name__}")
        config.check()
        if not hasattr(model, "training_step"):
            raise TypeError(f"{type(model).__name__} has no training_step(batch) -> dict of losses")
        self.root = _prepare_checkpoint_dir(config.checkpoint_dir) if config.checkpoint_dir else None
        self.config, self.data, self.evaluate_fn, self.model = config, data, evaluate_fn, model
        # find_unused_parameters: a model may leave parameters out of its loss (vae_fusion with its gate
        # or affinity switched off); DistributedDataParallel then waits for their gradients forever unless
        # told to look for them each step (it costs one walk over the step's autograd graph).
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=config.cpu,
                                       gradient_accumulation_steps=config.grad_accum_steps,
                                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        self.identity = run_identity(model, data, config, fingerprint=fingerprint,
                                     processes=self.accelerator.num_processes)
        set_seed(config.seed)
        # The loop shards and orders batches itself (see EpochSampler) rather than through
        # accelerator.prepare(loader), so that the order stays a function of (seed, epoch) across resumes.
        self.sampler = None if isinstance(data, IterableDataset) else EpochSampler(
            len(data), config.seed, num_replicas=self.accelerator.num_processes,
            rank=self.accelerator.process_index)
        # Its own generator: creating an iterator must not draw from the global RNG that dropout uses.
        self.loader = DataLoader(data, batch_size=config.batch_size, sampler=self.sampler,
                                 num_workers=config.num_workers, collate_fn=getattr(data, "collate", None),
                                 generator=torch.Generator().manual_seed(config.seed))
        self.step_module, self.optimizer = self.accelerator.prepare(_StepModule(model), _optimizer(model, config))
        self.result = TrainResult()
        self.epoch, self.batch_in_epoch, self.bad_evals = 0, 0, 0
        self.best_value = -math.inf
        self.is_main = self.accelerator.is_main_process
        self.flops_per_sample: float | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    # -- checkpoints -------------------------------------------------------------------------------
    def _loop_state(self) -> dict:
        return {"run": self.identity, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "bad_evals": self.bad_evals, "best_value": finite_or_none(self.best_value),
                "accelerator_step": self.accelerator.step, "result": _plain_json(asdict(self.result))}

    def save_checkpoint(self) -> None:
        """Write ``step_<global step>`` atomically (built in a uniquely named temporary sibling that every
        process writes its part into, then renamed): accelerate's state, the best weights so far and the
        loop state with the run identity; then drop the oldest beyond ``keep_checkpoints``."""
        from accelerate.utils import broadcast_object_list

        final = self.root / f"{CHECKPOINT_PREFIX}{self.result.global_step:09d}"
        with contextlib.ExitStack() as stack:
            name = [str(stack.enter_context(atomic_folder(final)))] if self.is_main else [None]
            tmp = Path(broadcast_object_list(name)[0])
            self.accelerator.save_state(str(tmp))
            self.accelerator.wait_for_everyone()
            if self.is_main:
                if self._best_state is not None:  # a copy of its own: a checkpoint is complete on its own
                    atomic_save_tensors(self._best_state, tmp / BEST_WEIGHTS)
                atomic_write_json(tmp / LOOP_STATE, self._loop_state())
        if self.is_main:
            for path in checkpoint_folders(self.root)[self.config.keep_checkpoints:]:
                shutil.rmtree(path, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def _read_checkpoint(self, path: Path) -> tuple[_Loaded | None, str | None]:
        """Load ``path`` into the model, optimiser and RNGs: ``(loaded, None)``, or ``(None, why)`` when it
        is damaged. A checkpoint of another run raises `ValueError` (that is not damage: nothing is tried)."""
        try:
            state = read_json(path / LOOP_STATE, f"{LOOP_STATE}")
            if not isinstance(state, dict):
                return None, f"{LOOP_STATE} is not a JSON object"
        except (OSError, ValueError) as err:
            return None, _one_line(err)
        mismatch = identity_mismatch(state.get("run"), self.identity)
        if mismatch:
            raise ValueError(f"checkpoint {path} {mismatch}: only the run that wrote it can resume it; use another "
                             f"checkpoint_dir (or delete {self.root}) to start afresh")
        try:
            best_value = state["best_value"]
            result = TrainResult(**_from_plain_json(state["result"]))
            loaded = _Loaded(int(state["epoch"]), int(state["batch_in_epoch"]), int(state["bad_evals"]),
                             -math.inf if best_value is None else float(best_value), state.get("accelerator_step"),
                             result, None, _rng_problem(path, self.accelerator.process_index))
        except (KeyError, TypeError, ValueError) as err:
            return None, f"{LOOP_STATE} is incomplete ({type(err).__name__}: {_one_line(err)})"
        try:
            if (path / BEST_WEIGHTS).exists():
                loaded.best_state = _load_state(path / BEST_WEIGHTS)
                expected = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
                if {k: tuple(v.shape) for k, v in loaded.best_state.items()} != expected:
                    return None, f"{BEST_WEIGHTS} does not fit the model"
            self.accelerator.load_state(str(path))
        except Exception as err:  # whatever a truncated or garbled file makes safetensors / torch.load raise
            return None, f"{type(err).__name__}: {_one_line(err)}"
        return loaded, None

    def maybe_resume(self) -> None:
        """Resume from the newest usable checkpoint in ``checkpoint_dir``; damaged newer ones are set aside with
        a warning, a checkpoint of another run or none usable at all is refused (`ValueError`)."""
        from accelerate.utils import gather_object

        if self.root is None:
            return
        if self.is_main:  # temporary folders of saves that were killed: never complete, never resumed
            for stale in itertools.chain(self.root.glob(f".{CHECKPOINT_PREFIX}*.tmp"),
                                         self.root.glob(f".{CHECKPOINT_PREFIX}*.old"),
                                         self.root.glob(f".tmp_{CHECKPOINT_PREFIX}*")):
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        folders = checkpoint_folders(self.root)
        if not self.config.resume:
            if folders:
                raise ValueError(f"TrainConfig.checkpoint_dir {self.root} holds checkpoints ({folders[0].name}) "
                                 f"and resume is off: delete them or choose another checkpoint_dir")
            return
        damaged: list[tuple[Path, str]] = []
        loaded = None
        for path in folders:
            loaded, problem = self._read_checkpoint(path)
            problems = [p for p in gather_object([problem]) if p]  # every process must take the same one
            if not problems:
                break
            loaded = None
            damaged.append((path, problems[0]))
            if self.is_main:
                log.warning("checkpoint %s is damaged (%s); trying the one before it", path, problems[0])
        if loaded is None:
            if damaged:
                reasons = "; ".join(f"{p.name}: {why}" for p, why in damaged)
                raise ValueError(f"no usable checkpoint in {self.root} ({reasons}): delete {self.root} (or its "
                                 f"damaged {CHECKPOINT_PREFIX}* folders) to start afresh")
            return
        path = folders[len(damaged)]
        self.epoch, self.batch_in_epoch, self.bad_evals = loaded.epoch, loaded.batch_in_epoch, loaded.bad_evals
        self.best_value, self.result, self._best_state = loaded.best_value, loaded.result, loaded.best_state
        if loaded.accelerator_step is not None:  # the gradient-accumulation phase (also in the RNG file)
            self.accelerator.step = loaded.accelerator_step
        self.result.resumed_from = str(path)
        if loaded.rng_problem:
            log.warning("checkpoint %s: the random-number state %s could not be restored; resuming without it, so "
                        "this resume is NOT exact (dropout and sampling draws differ from an uninterrupted run)",
                        path, loaded.rng_problem)
        if self.is_main:
            for bad, _ in damaged:
                log.warning("set the damaged checkpoint %s aside as %s", bad, _set_aside(bad).name)
        self.accelerator.wait_for_everyone()
        log.info("resumed from %s at epoch %d, batch %d", path, self.epoch, self.batch_in_epoch)

    # -- validation --------------------------------------------------------------------------------
    def validate(self, record: dict) -> bool:
        """Evaluate, track the best weights; True when patience has run out."""
        from accelerate.utils import broadcast_object_list

        payload = [None]
        if self.is_main:
            self.model.eval()
            metrics = self.evaluate_fn(self.model)
            self.model.train()
            payload = [metrics]
        payload = broadcast_object_list(payload)
        metrics = payload[0]
        record["valid"] = metrics
        key = self.config.early_stop_metric
        if key not in metrics:
            raise ValueError(f"TrainConfig.early_stop_metric {key!r} is not among the validation metrics "
                             f"{sorted(metrics)}")
        if metrics[key] > self.best_value:
            self.best_value, self.bad_evals = metrics[key], 0
            self.result.best_epoch, self.result.best_metrics = self.epoch, dict(metrics)
            self._best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad_evals += 1
        return self.bad_evals > self.config.patience

    def count_flops(self, batch: Any) -> dict[str, torch.Tensor]:
        """Run one step under torch's FLOP counter; training FLOPs ≈ 3 × forward (forward + backward)."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            losses = self.step_module(batch)
        self.flops_per_sample = 3.0 * counter.get_total_flops() / max(_batch_len(batch), 1)
        return losses

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        config, accelerator = self.config, self.accelerator
        self.maybe_resume()
        self.step_module.train()
        stop = False
        while self.epoch < config.epochs and not stop:
            if hasattr(self.data, "set_epoch"):
                self.data.set_epoch(self.epoch)
            if self.sampler is not None:
                self.sampler.set_epoch(self.epoch, skip=self.batch_in_epoch * config.batch_size)
                loader = self.loader
            else:
                loader = itertools.islice(self.loader, self.batch_in_epoch, None)
            sums: dict[str, float] = {}
            samples, n_batches, started = 0, 0, time.perf_counter()
            bar = tqdm(loader, desc=f"epoch {self.epoch}", leave=False,
                       disable=not (config.progress and self.is_main))
            for batch in bar:
                batch = send_to_device(batch, accelerator.device)
                with accelerator.accumulate(self.step_module):
                    if self.flops_per_sample is None:
                        losses = self.count_flops(batch)
                    else:
                        losses = self.step_module(batch)
                    accelerator.backward(losses["loss"])
                    if accelerator.sync_gradients and config.max_grad_norm:
                        accelerator.clip_grad_norm_(self.step_module.parameters(), config.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                self.batch_in_epoch += 1
                n_batches += 1
                samples += _batch_len(batch)
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
                if accelerator.sync_gradients:
                    self.result.global_step += 1
                    if config.checkpoint_dir and config.checkpoint_every and \
                            self.result.global_step % config.checkpoint_every == 0:
                        self.save_checkpoint()
            seconds = time.perf_counter() - started
            per_process = samples / max(seconds, 1e-9)
            record = {"epoch": self.epoch, "seconds": seconds,
                      "samples_per_s": per_process * accelerator.num_processes,
                      "model_tflops_per_s": per_process * (self.flops_per_sample or 0.0) / 1e12,
                      **{k: v / max(n_batches, 1) for k, v in sums.items()}}
            if config.peak_flops:
                record["mfu"] = per_process * (self.flops_per_sample or 0.0) / config.peak_flops
            if not math.isfinite(record.get("loss", 0.0)):  # weights now NaN or inf: nothing left to rank with
                raise TrainingDiverged(f"training diverged in epoch {self.epoch}: mean loss {record['loss']}; lower "
                                       f"train.lr ({config.lr:g}) or set train.max_grad_norm")
            if self.evaluate_fn is not None and (self.epoch + 1) % config.eval_every == 0:
                stop = self.validate(record)
            self.result.history.append(record)
            # torch's FLOP counter does not see every op (sparse products, e.g. LightGCN's propagation)
            flops = (f"{record['model_tflops_per_s'] * 1e3:.3g} model GFLOP/s" if self.flops_per_sample
                     else "model FLOPs not counted")
            log.info("epoch %d: loss %.4f, %s %s, %.0f samples/s, %s%s", self.epoch,
                     record.get("loss", math.nan), config.early_stop_metric,
                     record.get("valid", {}).get(config.early_stop_metric, "-"), record["samples_per_s"],
                     flops, f", MFU {record['mfu']:.1%}" if "mfu" in record else "")
            self.epoch += 1
            self.batch_in_epoch = 0
            self.result.epochs_run = self.epoch
            if config.checkpoint_dir:
                self.save_checkpoint()
        self.result.stopped_early = stop
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        self.model.eval()
        return self.result


class TrainingDiverged(ValueError):
    """The loss stopped being finite: the settings (a learning rate too large) made the weights NaN or inf, so
    the run stops rather than report metrics ranked from NaN scores and save a model the loader refuses."""


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return _batch_len(batch[0])
    return 1


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def fit(model: nn.Module, data: Dataset, config: TrainConfig | None = None, *,
        evaluate_fn: Callable[[nn.Module], dict[str, float]] | None = None,
        fingerprint: str | None = None) -> TrainResult:
    """Train ``model`` on ``data`` (a map-style or iterable dataset; ``data.collate`` is used if present).

    ``evaluate_fn(model) -> metrics`` runs every ``config.eval_every`` epochs on the main process; training
    stops after more than ``patience`` evaluations in a row without improvement of ``config.early_stop_metric`` and the best
    weights are loaded back into ``model``. With ``config.checkpoint_dir`` set, a run resumes from the
    newest usable checkpoint there, if it was written by the same run (see `run_identity`; ``fingerprint``
    names the training data when the caller can hash it, else the dataset's type and length stand for it).
    The config is checked and ``checkpoint_dir`` created before any work.
    """
    return _Loop(model, data, config or TrainConfig(), evaluate_fn, fingerprint).run()
