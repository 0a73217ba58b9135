"""The one evaluator: full ranking over a candidate set, users in memory-sized batches, all on device.

For each evaluated user the model scores every candidate item; items the user saw in training are masked
with -inf (and, optionally, the valid items when scoring test — MMRec does not, so the default is off);
``topk`` runs on the device and hits are looked up in a dense relevance block of the same batch. There
is no Python loop over users, only over batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Protocol, Sequence, Union

import numpy as np
import torch

from mmrec.data import Interactions, as_codes
from mmrec.metrics import METRICS, per_user_metrics
from mmrec.splits import Split
from mmrec.topk import mask_

Candidates = Union[Literal["all", "cold", "warm"], Sequence[int], np.ndarray]


class Scorer(Protocol):
    """Anything with ``score(users) -> Tensor[len(users), n_items]`` over the whole item vocabulary."""

    def score(self, users: torch.Tensor) -> torch.Tensor: ...


@dataclass
class EvalResult:
    """Mean metrics over evaluated users, and the per-user values behind them (for paired tests)."""

    metrics: dict[str, float]
    users: np.ndarray
    per_user: dict[str, np.ndarray]

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]


def _grouped_columns(inter: Interactions, users: np.ndarray, column: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows of ``inter`` whose user is in ``users`` and whose item is a candidate (``column >= 0``):
    ``(ptr, rows, cols)`` sorted by user position, with ``ptr`` the CSR offsets over ``users``."""
    position = np.full(inter.n_users, -1, dtype=np.int64)
    position[users] = np.arange(len(users))
    rows, cols = position[inter.users], column[inter.items]
    keep = (rows >= 0) & (cols >= 0)
    rows, cols = rows[keep], cols[keep]
    order = np.argsort(rows, kind="stable")
    rows, cols = rows[order], cols[order]
    return np.searchsorted(rows, np.arange(len(users) + 1)), rows, cols


def candidate_items(split: Split, candidates: Candidates, n_items: int) -> np.ndarray:
    """Item codes that may be ranked: all items, the cold items (the valid and test halves together, on
    either side: none of them is seen in training, and the same pool on both sides keeps valid and test
    figures comparable), the warm rest, or a list."""
    cold = np.concatenate([c for c in (split.cold_valid_items, split.cold_test_items) if c is not None] or
                          [np.empty(0, np.int64)]).astype(np.int64)
    if isinstance(candidates, str):
        if candidates == "all":
            return np.arange(n_items, dtype=np.int64)
        if candidates == "cold":
            if not len(cold):
                raise ValueError("candidates='cold' needs a split with cold items (see mmrec.splits.cold_items)")
            return np.sort(cold)
        if candidates == "warm":
            return np.setdiff1d(np.arange(n_items, dtype=np.int64), cold)
        raise ValueError(f"candidates must be 'all', 'cold', 'warm' or a list of item codes, got {candidates!r}")
    codes = np.unique(as_codes(candidates, "candidate item codes", n_items))
    if len(codes) == 0:
        raise ValueError(f"candidate item codes must be a non-empty subset of 0..{n_items - 1}")
    return codes


def evaluate(model: Scorer | Callable[[torch.Tensor], torch.Tensor], split: Split, *,
             on: Literal["valid", "test"] = "test", ks: Sequence[int] = (10, 20, 50),
             metrics: Sequence[str] = METRICS, candidates: Candidates = "all",
             mask_train: bool = True, mask_valid_at_test: bool = False, users: np.ndarray | None = None,
             memory_budget_mb: float = 256.0, device: str | torch.device | None = None) -> EvalResult:
    """Rank candidates for every user with a relevant item in ``split.<on>`` and average the metrics.

    ``model`` is a `Scorer` or a function ``users -> scores``. Only users with at least one relevant item
    among the candidates are evaluated (MMRec's rule); ``users`` restricts them further (e.g. to users with
    training history). ``mask_train=False`` lets items seen in training be ranked (repeat purchases). Metric names are ``"<metric>@<k>"``.
    ``device`` is where masking and metrics run (the CPU by default); a model with a ``device`` (e.g. one
    trained on a GPU) gets the user ids on its own device, so its scoring never mixes devices.
    """
    if on not in ("valid", "test"):
        raise ValueError(f"on must be 'valid' or 'test', got {on!r}")
    score_fn = model.score if hasattr(model, "score") else model
    target = split.valid if on == "valid" else split.test
    n_items = target.n_items
    cand = candidate_items(split, candidates, n_items)
    is_candidate = np.zeros(n_items, dtype=bool)
    is_candidate[cand] = True
    target = target.select(is_candidate[target.items]).unique_pairs()

    eval_users = np.unique(target.users)
    if users is not None:
        eval_users = np.intersect1d(eval_users, np.asarray(users, dtype=np.int64))
    if not len(ks) or any(isinstance(k, bool) or int(k) != k or k < 1 for k in ks):
        raise ValueError(f"ks must be cut-offs of at least 1, got {tuple(ks)!r}")
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not len(eval_users):
        return EvalResult({f"{m}@{k}": float("nan") for m in metrics for k in ks} | {"users": 0},
                          eval_users, {})

    # Column j of a score block is item cand[j].
    column = np.full(n_items, -1, dtype=np.int64)
    column[cand] = np.arange(len(cand))
    seen = split.train.concat(split.valid) if (on == "test" and mask_valid_at_test) else split.train
    if not mask_train:
        seen = seen.select(np.zeros(len(seen), dtype=bool))
    seen_ptr, seen_rows, seen_cols = _grouped_columns(seen, eval_users, column)
    rel_ptr, rel_rows, rel_cols = _grouped_columns(target, eval_users, column)
    n_relevant = np.diff(rel_ptr)

    dev = torch.device(device) if device is not None else torch.device("cpu")
    model_device = getattr(model, "device", None)
    user_dev = torch.device(model_device) if isinstance(model_device, (str, torch.device)) else dev
    max_k = max(ks)
    top = min(max_k, len(cand))
    # scores (float32) + mask + relevance block per user row, with room for the model's own temporaries.
    bytes_per_user = len(cand) * (4 * 3 + 2)
    batch = max(1, int(memory_budget_mb * 2**20 // bytes_per_user))
    cand_t = torch.as_tensor(cand, device=dev)

    per_user: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, len(eval_users), batch):
            stop = min(start + batch, len(eval_users))
            user_t = torch.as_tensor(eval_users[start:stop], device=user_dev)
            scores = score_fn(user_t)
            if scores.shape != (stop - start, n_items):
                raise ValueError(f"score() returned shape {tuple(scores.shape)}, expected ({stop - start}, {n_items})")
            # A fresh dense copy: masking must not write into the model's tensors (or an expanded view).
            scores = scores.to(dev, torch.float32).index_select(1, cand_t)
            if torch.isnan(scores).any():  # topk would rank NaN first: a metric of nothing
                raise ValueError(f"the model's scores hold NaN for {int(torch.isnan(scores).any(1).sum())} of "
                                 f"{stop - start} users; NaN is no score to rank by")
            s0, s1 = seen_ptr[start], seen_ptr[stop]
            mask_(scores, seen_rows[s0:s1] - start, seen_cols[s0:s1])
            top_values, top_idx = torch.topk(scores, top, dim=1)
            relevant = torch.zeros_like(scores, dtype=torch.bool)
            r0, r1 = rel_ptr[start], rel_ptr[stop]
            relevant[torch.as_tensor(rel_rows[r0:r1] - start, device=dev),
                     torch.as_tensor(rel_cols[r0:r1], device=dev)] = True
            hits = torch.gather(relevant, 1, top_idx) & (top_values > float("-inf"))  # a masked item is no hit
            if top < max_k:
                hits = torch.cat([hits, hits.new_zeros(hits.shape[0], max_k - top)], 1)
            n_rel = torch.as_tensor(n_relevant[start:stop], device=dev)
            for name, values in per_user_metrics(hits, n_rel, ks, tuple(metrics)).items():
                per_user.setdefault(name, []).append(values.cpu())
    arrays = {name: torch.cat(parts).numpy() for name, parts in per_user.items()}
    means = {name: float(v.mean()) for name, v in arrays.items()}
    means["users"] = len(eval_users)
    return EvalResult(means, eval_users, arrays)
