"""The `Recommender` base class, the model registry and the one model factory.

A recommender owns its parameters and its loss and does no I/O beyond ``save_pretrained`` /
``from_pretrained``. It knows the items each user saw in training (to exclude them), and the id
vocabularies it was trained with (to answer in external ids).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from mmrec.config import from_dict, to_dict
from mmrec.data import Interactions, as_codes
from mmrec.io import atomic_save_tensors, atomic_write_json, read_json
from mmrec.pretrained import FolderError, Pretrained, check_state, load_tensors
from mmrec.registry import Registry
from mmrec.topk import csr_rows, mask_, topk

MODELS: Registry[type["Recommender"]] = Registry("model", ("mmrec.fusion", "mmrec.pipeline"))
CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE = "config.json", "model.safetensors", "vocab.json"


def register_model(name: str) -> Callable[[type["Recommender"]], type["Recommender"]]:
    """Class decorator adding a recommender to the registry under ``name`` (and setting ``cls.name``)."""
    def wrap(cls: type[Recommender]) -> type[Recommender]:
        cls.name = name
        return MODELS.register(name, cls)
    return wrap


def registered_models() -> list[str]:
    """The names `create_model` builds, sorted."""
    return MODELS.names()


def create_model(name: str, n_users: int, n_items: int, config: Any = None) -> "Recommender":
    """Build the registered model ``name``; ``config`` is its config dataclass or a dict checked against it."""
    cls = MODELS.get(name)
    return cls(from_dict(cls.config_class, config if config is not None else {}), n_users, n_items)


class Recommender(Pretrained, nn.Module):
    """Base class: ``fit``, ``score``, ``recommend``, ``save_pretrained`` / ``from_pretrained``.

    Subclasses set ``config_class`` (a dataclass), implement ``score(users, items=None)`` and either
    ``training_step`` + ``training_data`` (trained by `mmrec.train.fit`) or override ``fit``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    # Whether answers leave out what the user already bought unless told otherwise (a next-purchase model,
    # for which repurchase is a signal, sets False; `mmrec recommend` follows it).
    excludes_seen_by_default: ClassVar[bool] = True
    # (indices, values) buffers of item × item edges (a similarity or content graph), checked on load
    item_edges: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, config: Any, n_users: int, n_items: int) -> None:
        super().__init__()
        self.config, self.n_users, self.n_items = config, n_users, n_items
        self.register_buffer("seen_indptr", torch.zeros(n_users + 1, dtype=torch.long))
        self.register_buffer("seen_indices", torch.zeros(0, dtype=torch.long))
        self.user_ids: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None
        self.content_recipe: Any = None  # a `mmrec.content.ContentRecipe` where item content made the model

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

    def answered_by_fallback(self, users: Sequence[int] | np.ndarray) -> np.ndarray:
        """Which of the known ``users`` (codes) get only the unknown-user fallback (`recommend_for_unknown`),
        as a bool array: the model knows their id but has nothing of theirs to rank by — by default, no seen
        pair (a user whose every purchase fell in valid or test), whose scores would be an untrained row —
        so `mmrec recommend` and `mmrec serve` answer them with the fallback, flagged, as an unknown user."""
        users = torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.seen_indptr.device)
        return (self.seen_indptr[users + 1] == self.seen_indptr[users]).cpu().numpy()

    def recommend_for_unknown(self, k: int = 10, candidates: Any = "all") -> dict[str, Any]:
        """The answer for a user the model does not know (or knows without history): ``{"items", "scores",
        "fallback"}``, here the ``k`` candidates with the most known interactions ("most_popular"), ties in code
        order. Models with a better guess override it."""
        counts = torch.bincount(self.seen_indices.cpu(), minlength=self.n_items).double()
        cand = self.candidate_codes(candidates)
        pool = torch.arange(self.n_items) if cand is None else torch.as_tensor(np.asarray(cand, dtype=np.int64))
        order = pool[torch.argsort(-counts[pool], stable=True)][:k]
        return {"items": order.numpy(), "scores": counts[order].numpy(), "fallback": "most_popular"}

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
        codes = as_codes(candidates, "candidate item codes", self.n_items)
        _, first = np.unique(codes, return_index=True)
        return codes[np.sort(first)]  # each once, in the order given (a repeat would fill a list with one item)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(user_vectors [n_users, d], item_vectors [n_items, d])`` whose inner products are the model's
        scores, or its factorised part (a retrieval index searches them; `score_candidates` re-ranks).
        Models that are not factorised raise `NotImplementedError`."""
        raise NotImplementedError(f"{self.name or type(self).__name__} has no user and item factors to index")

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores ``[len(users), c]`` of each user's own candidate items ``items [len(users), c]`` (the same
        values `score` gives those pairs). This default scores the union of the candidates once and gathers."""
        union, inverse = torch.unique(items, return_inverse=True)
        return self.score(users, union).gather(1, inverse)

    @torch.no_grad()
    def recommend(self, users: Sequence[int] | torch.Tensor, k: int = 10, *,
                  candidates: str | Sequence[int] | np.ndarray | None = None,
                  exclude_seen: bool = True, index: Any = None,
                  index_candidates: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` item codes and scores per user, among ``candidates`` (see `candidate_codes`; default all).

        ``k`` is capped at the number of candidates; where fewer than ``k`` are left for a user once the
        items they saw are excluded, the row ends in code -1 with score -inf (never a seen item). With
        ``index`` (a `mmrec.index.Index` over `factors`), every item is not scored: the index proposes
        ``index_candidates`` per user and `score_candidates` re-ranks them (`mmrec.index.recommend_with_index`)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        users_np = as_codes(users, "user codes", self.n_users)
        if index is not None:
            from mmrec.index import recommend_with_index

            if self.candidate_codes(candidates) is not None:
                raise ValueError("an index ranks the whole catalogue: pass candidates only without an index")
            return recommend_with_index(self, users_np, int(k), index, candidates=index_candidates,
                                        exclude_seen=exclude_seen)
        scores = self.score(torch.as_tensor(users_np, device=self.device)).float().clone()
        if exclude_seen:
            rows, cols = csr_rows(self.seen_indptr.cpu().numpy(), self.seen_indices.cpu().numpy(), users_np)
            mask_(scores, rows, cols)
        candidates = self.candidate_codes(candidates)
        if candidates is not None:
            cand = torch.as_tensor(candidates, device=scores.device)
            idx, values = topk(scores.index_select(1, cand), min(int(k), len(cand)))
            codes = cand[idx]
        else:
            codes, values = topk(scores, min(int(k), scores.shape[1]))
        return codes.masked_fill(values == -math.inf, -1), values

    # -- persistence (data, never code: `mmrec.pretrained`) ------------------------------------------
    folder_kind = "recommender"

    def folder_config(self) -> dict[str, Any]:
        """What ``config.json`` holds: the registered name, the sizes and the model's config."""
        return {"model": self.name, "n_users": self.n_users, "n_items": self.n_items,
                "config": to_dict(self.config) if dataclasses.is_dataclass(self.config) else {}}

    def write_files(self, folder: Path) -> None:
        """``config.json``, ``vocab.json``, ``model.safetensors``, then what `save_extra` adds."""
        atomic_write_json(folder / CONFIG_FILE, self.folder_config())
        vocab = {"user_ids": None if self.user_ids is None else [str(u) for u in self.user_ids],
                 "item_ids": None if self.item_ids is None else [str(i) for i in self.item_ids]}
        atomic_write_json(folder / VOCAB_FILE, vocab, indent=None)
        atomic_save_tensors(self.state_dict(), folder / WEIGHTS_FILE)
        if self.content_recipe is not None:
            self.content_recipe.save(folder)
        self.save_extra(folder)

    def save_extra(self, folder: Path) -> None:
        """Write files besides config, vocabulary, weights and content recipe (a model with more state:
        tables as ``.npy``/JSON, never pickle). ``folder`` is being built; it is renamed into place whole."""

    def load_extra(self, folder: Path) -> None:
        """Read what `save_extra` wrote (the folder is verified against its manifest already)."""

    @classmethod
    def read_files(cls, folder: Path, manifest: dict[str, Any], device: str | torch.device = "cpu",
                   content_encoder: str | None = None) -> "Recommender":
        """Build the registered model the config names and load its verified weights and vocabularies.
        ``content_encoder``: the text encoder for new items' content, replacing the saved one (which is never a
        local path: `mmrec.content.ContentRecipe.load`)."""
        from mmrec.content import CONTENT_FILE, ContentRecipe

        meta = read_json(folder / CONFIG_FILE)
        if not isinstance(meta, dict) or set(meta) != {"model", "n_users", "n_items", "config"}:
            raise FolderError(f"{folder / CONFIG_FILE}: expected keys model, n_users, n_items, config")
        if not all(isinstance(meta[k], int) and not isinstance(meta[k], bool) and meta[k] >= 0
                   for k in ("n_users", "n_items")):
            raise FolderError(f"{folder / CONFIG_FILE}: n_users and n_items must be counts")
        try:
            model = create_model(meta["model"], meta["n_users"], meta["n_items"], meta["config"])
        except ValueError as err:
            raise FolderError(f"{folder / CONFIG_FILE}: {err}") from None
        if cls is not Recommender and not isinstance(model, cls):
            raise TypeError(f"{folder} holds a {meta['model']!r} model, not a {cls.__name__}")
        path = folder / WEIGHTS_FILE
        state = load_tensors(path)
        check_state(path, model.state_dict(), state, model.resizable_state)
        model.check_seen(path, state)
        model.check_item_edges(path, state)
        model.load_pretrained_state(state)
        model.user_ids, model.item_ids = _read_vocab(folder / VOCAB_FILE, model.n_users, model.n_items)
        if CONTENT_FILE in manifest["files"]:
            model.content_recipe = ContentRecipe.load(folder, content_encoder)
        model.load_extra(folder)
        return model.to(device).eval()

    def resizable_state(self, key: str) -> bool:
        """Whether a saved tensor's shape depends on the training data rather than the config: a buffer
        the constructor builds empty (seen pairs, similarity or content-graph edges, histories)."""
        buffer = dict(self.named_buffers()).get(key)
        return buffer is not None and buffer.numel() == 0

    def check_seen(self, path: Path, state: dict[str, torch.Tensor]) -> None:
        """Refuse seen pairs that do not fit the sizes: a CSR over ``n_users`` rows with item codes in range."""
        ptr, idx = state["seen_indptr"], state["seen_indices"]
        ok = (len(ptr) == self.n_users + 1 and int(ptr[0]) == 0 and int(ptr[-1]) == len(idx)
              and bool((ptr[1:] >= ptr[:-1]).all()) and (len(idx) == 0 or (int(idx.min()) >= 0
                                                                            and int(idx.max()) < self.n_items)))
        if not ok:
            raise FolderError(f"{path}: the seen pairs (seen_indptr, seen_indices) do not fit "
                              f"{self.n_users} users x {self.n_items} items")

    def check_item_edges(self, path: Path, state: dict[str, torch.Tensor]) -> None:
        """Refuse `item_edges` that do not fit: ``[2, E]`` item codes in range and ``E`` finite values (an edge
        out of range would crash the process in a sparse product, a negative one wrap to another item)."""
        for indices, values in self.item_edges:
            idx, val = state[indices], state[values]
            ok = (idx.dim() == 2 and len(idx) == 2 and val.shape == (idx.shape[1],)
                  and (idx.numel() == 0 or (int(idx.min()) >= 0 and int(idx.max()) < self.n_items)))
            if not ok:
                raise FolderError(f"{path}: the item edges ({indices}, {values}) do not fit {self.n_items} items")

    def load_pretrained_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load verified tensors; data-sized buffers (`resizable_state`) are resized first."""
        own = self.state_dict()
        for key, value in state.items():
            if own[key].shape != value.shape:
                setattr_path(self, key, torch.empty_like(value))
        self.load_state_dict(state)


def _read_vocab(path: Path, n_users: int, n_items: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The id vocabularies, refused unless each has one distinct string per code."""
    vocab = read_json(path)
    if not isinstance(vocab, dict) or set(vocab) != {"user_ids", "item_ids"}:
        raise FolderError(f"{path}: expected keys user_ids and item_ids")
    out = []
    for key, n in (("user_ids", n_users), ("item_ids", n_items)):
        ids = vocab[key]
        if ids is None:
            out.append(None)
            continue
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise FolderError(f"{path}: {key} must be a list of strings")
        if len(ids) != n or len(set(ids)) != n:
            raise FolderError(f"{path}: {key} has {len(ids)} entries ({len(set(ids))} distinct), the weights "
                              f"have {n}")
        out.append(np.asarray(ids, dtype=object))
    return out[0], out[1]


def setattr_path(module: nn.Module, dotted: str, value: torch.Tensor) -> None:
    """Replace the buffer or parameter at ``dotted`` (e.g. ``"seen_indices"``) with ``value``."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        module = getattr(module, part)
    if isinstance(getattr(module, leaf), nn.Parameter):
        setattr(module, leaf, nn.Parameter(value))
    else:
        module._buffers[leaf] = value
