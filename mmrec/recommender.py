"""The `Recommender` base class, the model registry and the one model factory.

A recommender owns its parameters and its loss and does no I/O beyond ``save_pretrained`` /
``from_pretrained``. It knows the items each user saw in training (to exclude them), and the id
vocabularies it was trained with (to answer in external ids).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from mmrec.config import from_dict, to_dict
from mmrec.data import Interactions
from mmrec.io import atomic_save_tensors, atomic_write_text
from mmrec.topk import csr_rows, mask_, topk

MODELS: dict[str, type["Recommender"]] = {}
# Modules whose import registers models (the factory imports them on first use).
MODEL_MODULES = ("mmrec.fusion.baselines", "mmrec.fusion.cold_baselines", "mmrec.fusion.sequence",
                 "mmrec.fusion.coldstart")
CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE = "config.json", "model.safetensors", "vocab.json"


def register_model(name: str) -> Callable[[type["Recommender"]], type["Recommender"]]:
    """Class decorator adding a recommender to the registry under ``name``."""
    def wrap(cls: type[Recommender]) -> type[Recommender]:
        if name in MODELS:
            raise ValueError(f"model name {name!r} is registered twice ({MODELS[name].__name__}, {cls.__name__})")
        cls.name = name
        MODELS[name] = cls
        return cls
    return wrap


def create_model(name: str, n_users: int, n_items: int, config: Any = None) -> "Recommender":
    """Build the registered model ``name``; ``config`` is its config dataclass or a dict checked against it."""
    for module in MODEL_MODULES:  # importing a model module registers its models
        importlib.import_module(module)

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    cls = MODELS[name]
    return cls(from_dict(cls.config_class, config if config is not None else {}), n_users, n_items)


class Recommender(nn.Module):
    """Base class: ``fit``, ``score``, ``recommend``, ``save_pretrained`` / ``from_pretrained``.

    Subclasses set ``config_class`` (a dataclass), implement ``score(users, items=None)`` and either
    ``training_step`` + ``training_data`` (trained by `mmrec.train.fit`) or override ``fit``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object

    def __init__(self, config: Any, n_users: int, n_items: int) -> None:
        super().__init__()
        self.config, self.n_users, self.n_items = config, n_users, n_items
        self.register_buffer("seen_indptr", torch.zeros(n_users + 1, dtype=torch.long))
        self.register_buffer("seen_indices", torch.zeros(0, dtype=torch.long))
        self.user_ids: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None

    # -- training ------------------------------------------------------------------------------------
    def remember(self, train: Interactions) -> None:
        """Keep the training vocabularies and each user's training items (for ``exclude_seen``)."""
        if (train.n_users, train.n_items) != (self.n_users, self.n_items):
            raise ValueError(f"{self.name} was built for {self.n_users} users × {self.n_items} items, "
                             f"the interactions have {train.n_users} × {train.n_items}")
        pairs = train.unique_pairs()
        indptr, indices = pairs.csr()
        self.seen_indptr = torch.as_tensor(indptr)
        self.seen_indices = torch.as_tensor(indices)
        self.user_ids, self.item_ids = train.user_ids, train.item_ids

    def fit(self, train: Interactions, *, train_config: Any = None,
            evaluate_fn: Callable[[nn.Module], dict[str, float]] | None = None):
        """Learn from ``train``; trainable models go through the one loop, `mmrec.train.fit`."""
        from mmrec.train import TrainConfig, fit

        self.remember(train)
        self.prepare(train)
        config = from_dict(TrainConfig, train_config) if not isinstance(train_config, TrainConfig) else train_config
        return fit(self, self.training_data(train, config.seed), config, evaluate_fn=evaluate_fn)

    def prepare(self, train: Interactions) -> None:
        """Build what the model derives from the training data before the loop (graphs, counts)."""

    def training_data(self, train: Interactions, seed: int) -> torch.utils.data.Dataset:
        """The dataset the training loop iterates for this model."""
        raise NotImplementedError(f"{type(self).__name__} is not trained by the loop")

    # -- inference -----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model's tensors live."""
        return self.seen_indptr.device

    def score(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[len(users), n_items]`` (or ``[len(users), len(items)]``); higher is better."""
        raise NotImplementedError

    def candidate_codes(self, candidates: str | Sequence[int] | np.ndarray | None) -> np.ndarray | None:
        """Item codes ``recommend`` ranks: ``None`` / ``"all"`` → None (every item); ``"cold"`` → items with
        no interaction known to the model (none among the seen pairs); ``"warm"`` → the others; else codes."""
        if candidates is None or (isinstance(candidates, str) and candidates == "all"):
            return None
        if isinstance(candidates, str):
            if candidates not in ("cold", "warm"):
                raise ValueError(f"candidates must be 'all', 'cold', 'warm' or item codes, got {candidates!r}")
            counts = np.bincount(self.seen_indices.cpu().numpy(), minlength=self.n_items)
            return np.flatnonzero(counts == 0 if candidates == "cold" else counts > 0)
        codes = np.asarray(candidates, dtype=np.int64)
        if len(codes) and (codes.min() < 0 or codes.max() >= self.n_items):
            raise ValueError(f"candidate item codes must be in 0..{self.n_items - 1}")
        return codes

    @torch.no_grad()
    def recommend(self, users: Sequence[int] | torch.Tensor, k: int = 10, *,
                  candidates: str | Sequence[int] | np.ndarray | None = None,
                  exclude_seen: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` item codes and scores per user, among ``candidates`` (see `candidate_codes`; default all)."""
        users_np = np.asarray(users.cpu() if isinstance(users, torch.Tensor) else users, dtype=np.int64)
        if len(users_np) and (users_np.min() < 0 or users_np.max() >= self.n_users):
            raise ValueError(f"user codes must be in 0..{self.n_users - 1}")
        scores = self.score(torch.as_tensor(users_np, device=self.device)).float().clone()
        if exclude_seen:
            rows, cols = csr_rows(self.seen_indptr.cpu().numpy(), self.seen_indices.cpu().numpy(), users_np)
            mask_(scores, rows, cols)
        candidates = self.candidate_codes(candidates)
        if candidates is not None:
            cand = torch.as_tensor(candidates, device=scores.device)
            idx, values = topk(scores.index_select(1, cand), k)
            return cand[idx], values
        return topk(scores, k)

    # -- persistence ---------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write config JSON, vocabularies and safetensors weights to ``directory`` (atomically per file)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"model": self.name, "n_users": self.n_users, "n_items": self.n_items,
                "config": to_dict(self.config) if dataclasses.is_dataclass(self.config) else {}}
        atomic_write_text(out / CONFIG_FILE, json.dumps(meta, indent=2))
        vocab = {"user_ids": None if self.user_ids is None else list(self.user_ids),
                 "item_ids": None if self.item_ids is None else list(self.item_ids)}
        atomic_write_text(out / VOCAB_FILE, json.dumps(vocab))
        atomic_save_tensors(self.state_dict(), out / WEIGHTS_FILE)
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "Recommender":
        """Load a model written by `save_pretrained` (any registered class when called on the base)."""
        from safetensors.torch import load_file

        root = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (root / name).is_file():
                raise FileNotFoundError(f"{root / name} is missing: {root} is not a saved mmrec model")
        meta = json.loads((root / CONFIG_FILE).read_text())
        model = create_model(meta["model"], meta["n_users"], meta["n_items"], meta["config"])
        if cls is not Recommender and not isinstance(model, cls):
            raise TypeError(f"{root} holds a {meta['model']!r} model, not a {cls.__name__}")
        state = load_file(str(root / WEIGHTS_FILE))
        model.load_pretrained_state(state)
        if (root / VOCAB_FILE).is_file():
            vocab = json.loads((root / VOCAB_FILE).read_text())
            model.user_ids = None if vocab["user_ids"] is None else np.asarray(vocab["user_ids"], dtype=object)
            model.item_ids = None if vocab["item_ids"] is None else np.asarray(vocab["item_ids"], dtype=object)
        return model.to(device).eval()

    def load_pretrained_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load saved tensors; buffers whose size depends on the data are resized first."""
        own = self.state_dict()
        for key, value in state.items():
            if key in own and own[key].shape != value.shape:
                setattr_path(self, key, torch.empty_like(value))
        self.load_state_dict(state)


def setattr_path(module: nn.Module, dotted: str, value: torch.Tensor) -> None:
    """Replace the buffer or parameter at ``dotted`` (e.g. ``"seen_indices"``) with ``value``."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        module = getattr(module, part)
    if isinstance(getattr(module, leaf), nn.Parameter):
        setattr(module, leaf, nn.Parameter(value))
    else:
        module._buffers[leaf] = value
