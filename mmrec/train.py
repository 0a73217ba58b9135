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
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from accelerate.utils import send_to_device
from tqdm.auto import tqdm

from mmrec.io import atomic_save_tensors

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step_"
LOOP_STATE = "loop_state.json"


@dataclass
class TrainConfig:
    """Settings of the training loop (the model's own settings live in the model's config)."""

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
        for name in ("epochs", "batch_size", "grad_accum_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0 or self.patience < 0:
            raise ValueError("TrainConfig.checkpoint_every and patience must be ≥ 0")


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


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder under ``checkpoint_dir`` (one with a loop state), if any."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / LOOP_STATE).is_file())
    return done[-1] if done else None


class _Loop:
    """State of one run; `fit` is its only user."""

    def __init__(self, model: nn.Module, data: Dataset, config: TrainConfig,
                 evaluate_fn: Callable[[nn.Module], dict[str, float]] | None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        if not hasattr(model, "training_step"):
            raise TypeError(f"{type(model).__name__} has no training_step(batch) -> dict of losses")
        self.config, self.data, self.evaluate_fn, self.model = config, data, evaluate_fn, model
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=config.cpu,
                                       gradient_accumulation_steps=config.grad_accum_steps)
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

    # -- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        root = Path(self.config.checkpoint_dir)
        final = root / f"{CHECKPOINT_PREFIX}{self.result.global_step:09d}"
        tmp = root / f".tmp_{final.name}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        if self.is_main:
            state = {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "bad_evals": self.bad_evals,
                     "best_value": self.best_value if math.isfinite(self.best_value) else None,
                     "result": asdict(self.result)}
            (tmp / LOOP_STATE).write_text(json.dumps(state))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            old = sorted(root.glob(f"{CHECKPOINT_PREFIX}*"))[:-self.config.keep_checkpoints]
            for path in old:
                shutil.rmtree(path, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def maybe_resume(self) -> None:
        if not (self.config.checkpoint_dir and self.config.resume):
            return
        path = latest_checkpoint(self.config.checkpoint_dir)
        if path is None:
            return
        self.accelerator.load_state(str(path))
        state = json.loads((path / LOOP_STATE).read_text())
        self.epoch, self.batch_in_epoch, self.bad_evals = state["epoch"], state["batch_in_epoch"], state["bad_evals"]
        self.best_value = -math.inf if state["best_value"] is None else state["best_value"]
        self.result = TrainResult(**state["result"])
        self.result.resumed_from = str(path)
        best = Path(self.config.checkpoint_dir) / "best.safetensors"
        self._best_state = _load_state(best) if best.is_file() else None
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
            raise KeyError(f"early_stop_metric {key!r} is not among the validation metrics {sorted(metrics)}")
        if metrics[key] > self.best_value:
            self.best_value, self.bad_evals = metrics[key], 0
            self.result.best_epoch, self.result.best_metrics = self.epoch, dict(metrics)
            self._best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            if self.is_main and self.config.checkpoint_dir:
                atomic_save_tensors(self._best_state, Path(self.config.checkpoint_dir) / "best.safetensors")
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
        self._best_state = None
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
            if self.evaluate_fn is not None and (self.epoch + 1) % config.eval_every == 0:
                stop = self.validate(record)
            self.result.history.append(record)
            log.info("epoch %d: loss %.4f, %s %s, %.0f samples/s, %.3g model GFLOP/s%s", self.epoch,
                     record.get("loss", math.nan), config.early_stop_metric,
                     record.get("valid", {}).get(config.early_stop_metric, "-"), record["samples_per_s"],
                     record["model_tflops_per_s"] * 1e3, f", MFU {record['mfu']:.1%}" if "mfu" in record else "")
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
        evaluate_fn: Callable[[nn.Module], dict[str, float]] | None = None) -> TrainResult:
    """Train ``model`` on ``data`` (a map-style or iterable dataset; ``data.collate`` is used if present).

    ``evaluate_fn(model) -> metrics`` runs every ``config.eval_every`` epochs on the main process; training
    stops after more than ``patience`` evaluations in a row without improvement of ``config.early_stop_metric`` and the best
    weights are loaded back into ``model``. With ``config.checkpoint_dir`` set, a run resumes from the
    newest checkpoint there.
    """
    return _Loop(model, data, config or TrainConfig(), evaluate_fn).run()
