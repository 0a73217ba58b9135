"""Top-k ranking metrics with MMRec's definitions, vectorised over users.

Every function takes ``hits`` — a bool tensor ``[U, K]``, ``hits[u, j]`` true when the item ranked
``j+1`` for user ``u`` is relevant — and ``n_relevant`` — an int tensor ``[U]`` (all of the user's
relevant items, not only those in the top ``K``) — and returns the per-user value at cut-off ``k``.
The definitions follow MMRec's ``utils/metrics.py``:

- recall@k    = hits in top k / n_relevant
- precision@k = hits in top k / k
- ndcg@k      = sum over hits of 1/log2(rank+1), divided by the same sum over the first
  min(n_relevant, k) ranks
- map@k       = sum over hit ranks r of precision@r, divided by min(n_relevant, k)
- hr@k        = 1 if any hit in top k (hit ratio)
- mrr@k       = 1 / rank of the first hit in top k, 0 if none
"""
from __future__ import annotations

import numpy as np
import torch

METRICS = ("recall", "ndcg", "precision", "map", "hr", "mrr")


def _ranks(k: int, device: torch.device) -> torch.Tensor:
    return torch.arange(1, k + 1, device=device, dtype=torch.float64)


def recall(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of the user's relevant items found in the top k."""
    return hits[:, :k].sum(1).double() / n_relevant.double()


def precision(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of the top k that is relevant."""
    return hits[:, :k].sum(1).double() / k


def ndcg(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Binary-relevance NDCG with the ideal list of min(n_relevant, k) hits."""
    discounts = 1.0 / torch.log2(_ranks(k, hits.device) + 1.0)
    dcg = (hits[:, :k].double() * discounts).sum(1)
    ideal_cum = torch.cumsum(discounts, 0)
    ideal_len = torch.clamp(n_relevant, max=k).long()
    return dcg / ideal_cum[ideal_len - 1]


def average_precision(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Average precision at k normalised by min(n_relevant, k), as MMRec's ``map_``."""
    h = hits[:, :k].double()
    precision_at_rank = torch.cumsum(h, 1) / _ranks(k, hits.device)
    return (precision_at_rank * h).sum(1) / torch.clamp(n_relevant, max=k).double()


def hit_ratio(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """1 where at least one relevant item is in the top k."""
    return hits[:, :k].any(1).double()


def reciprocal_rank(hits: torch.Tensor, n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """1 / rank of the first relevant item within the top k, else 0."""
    h = hits[:, :k]
    first = torch.argmax(h.int(), dim=1)
    return torch.where(h.any(1), 1.0 / (first.double() + 1.0), torch.zeros((), dtype=torch.float64, device=h.device))


METRIC_FUNCTIONS = {
    "recall": recall,
    "ndcg": ndcg,
    "precision": precision,
    "map": average_precision,
    "hr": hit_ratio,
    "mrr": reciprocal_rank,
}


def per_user_metrics(hits: torch.Tensor, n_relevant: torch.Tensor, ks: tuple[int, ...],
                     metrics: tuple[str, ...] = METRICS) -> dict[str, torch.Tensor]:
    """``{"recall@20": Tensor[U], ...}`` for every metric and cut-off; ``hits`` must have ≥ max(ks) columns."""
    unknown = [m for m in metrics if m not in METRIC_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(METRIC_FUNCTIONS)}")
    if hits.shape[1] < max(ks):
        raise ValueError(f"hits has {hits.shape[1]} columns, fewer than the largest k {max(ks)}")
    if (n_relevant < 1).any():
        raise ValueError("every evaluated user needs at least one relevant item")
    return {f"{m}@{k}": METRIC_FUNCTIONS[m](hits, n_relevant, k) for m in metrics for k in ks}


def purchase_hits(predictions, actual, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``hits [U, k]`` and ``n_relevant [U]`` of ranked item codes against each user's set of bought items.

    ``predictions`` is ``[U, ≥k]`` item codes, -1 for an empty slot; an item repeated in a user's list counts
    only where it first appears (as the competition's ``apk`` does); ``actual[u]`` holds the codes user ``u``
    bought (repeats count once).
    """
    top = np.asarray(predictions.cpu() if isinstance(predictions, torch.Tensor) else predictions, dtype=np.int64)
    if top.ndim != 2 or top.shape[0] != len(actual):
        raise ValueError(f"predictions must be [users, k] with one row per actual set; got {top.shape} "
                         f"for {len(actual)} users")
    top = top[:, :k]
    if top.shape[1] < k:
        top = np.concatenate([top, np.full((len(top), k - top.shape[1]), -1, dtype=np.int64)], 1)
    bought = [np.unique(np.asarray(a, dtype=np.int64)) for a in actual]
    n_relevant = np.fromiter((len(b) for b in bought), dtype=np.int64, count=len(bought))
    width = int(max(top.max(initial=0), max((b.max(initial=0) for b in bought), default=0))) + 1
    rows = np.repeat(np.arange(len(bought)), n_relevant)
    keys = rows * width + (np.concatenate(bought) if bought else np.zeros(0, np.int64))
    relevant = np.isin(np.arange(len(top))[:, None] * width + top, keys)
    earlier = np.tril(np.ones((k, k), dtype=bool), -1)  # [j, i]: i ranks before j
    repeated = ((top[:, :, None] == top[:, None, :]) & earlier).any(2)  # a repeat scores once, where first seen
    hits = torch.as_tensor(relevant & ~repeated & (top >= 0))
    n_relevant = torch.as_tensor(n_relevant)
    return hits, n_relevant


def map_at_k(predictions, actual, k: int = 12) -> float:
    """MAP@k as the H&M competition defines it: per user with at least one purchase in the horizon,
    AP@k = sum over ranks r ≤ k of precision@r · rel(r), divided by min(number of items bought, k); the mean
    over those users. ``predictions`` ``[U, ≥k]`` item codes (-1 empty), ``actual[u]`` the codes user ``u``
    bought; users whose ``actual`` is empty are left out (the competition scores only buyers)."""
    return next_purchase_metrics(predictions, actual, k)[f"map@{k}"]


def next_purchase_metrics(predictions, actual, k: int = 12) -> dict[str, float]:
    """``{"map@k", "recall@k", "users"}`` over users with a purchase in the horizon (see `map_at_k`);
    recall@k = distinct bought items in the top k / distinct bought items."""
    keep = np.flatnonzero([len(bought) > 0 for bought in actual])
    if not len(keep):
        raise ValueError("next-purchase metrics need at least one user with a purchase in the horizon")
    top = np.asarray(predictions.cpu() if isinstance(predictions, torch.Tensor) else predictions)
    hits, n_relevant = purchase_hits(top[keep], [actual[u] for u in keep], k)
    return {f"map@{k}": float(average_precision(hits, n_relevant, k).mean()),
            f"recall@{k}": float(recall(hits, n_relevant, k).mean()), "users": int(len(keep))}
