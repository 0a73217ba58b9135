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
