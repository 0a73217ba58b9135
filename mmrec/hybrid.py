"""Cold and warm items on one scale: an offset added to the scores of items without training interactions,
chosen on validation hybrid Recall@K (every item ranked, warm and cold targets together).

A model's scores for items it learned from purchases and for items it knows only from content come from
different parts (an ID embedding against a content-made vector, a gate, an affinity term), so a ranking of
all items can bury one kind under the other even when each kind alone is ranked well. One number, chosen
where both kinds of target are present (a split with ``warm_fraction`` > 0, see `mmrec.splits.cold_items`),
moves the cold items up or down the whole ranking; it never changes the order within either kind, so the
cold-only and warm-only figures are untouched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mmrec.evaluate import Scorer, evaluate
from mmrec.splits import Split


@dataclass
class ColdOffset:
    """A scorer: ``model``'s scores plus ``offset`` on the items marked in ``cold`` ([n_items] bool)."""

    model: Scorer
    cold: torch.Tensor
    offset: float = 0.0

    @property
    def device(self):
        """The wrapped model's device, so the evaluator hands user ids over where the model lives."""
        return getattr(self.model, "device", None)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        """The model's scores, shifted by ``offset`` on the cold items."""
        scores = self.model.score(users)
        return scores + self.offset * self.cold.to(scores.device, scores.dtype)


class _CachedScores:
    """The model's score rows per user batch, computed once: the offset search evaluates the same users
    many times and only the (cheap) shift changes between evaluations."""

    def __init__(self, model: Scorer) -> None:
        self.model, self.rows = model, {}

    @property
    def device(self):
        return getattr(self.model, "device", None)

    def score(self, users: torch.Tensor) -> torch.Tensor:
        key = users.cpu().numpy().tobytes()
        if key not in self.rows:
            self.rows[key] = self.model.score(users).float().cpu()
        return self.rows[key]


def untrained_items(split: Split) -> torch.Tensor:
    """Items with no training interaction in ``split`` (the cold valid and test items, and any item nobody
    bought), as a bool mask ``[n_items]``."""
    return torch.from_numpy(split.train.item_counts() == 0)


def fit_cold_offset(model: Scorer, split: Split, *, k: int = 20, steps: Sequence[float] | None = None,
                    max_users: int = 4000, seed: int = 0) -> tuple[float, list[dict]]:
    """The offset (in units of the typical per-user score spread) with the best *valid* hybrid Recall@``k``
    over at most ``max_users`` valid users drawn with ``seed``; returns the offset in score units and every
    point tried. The split's valid side must hold warm and cold targets, or the choice means nothing."""
    cold = untrained_items(split)
    valid_items = split.valid.items
    if not cold[valid_items].any() or cold[valid_items].all():
        raise ValueError("fit_cold_offset needs valid targets among both cold and warm items "
                         "(a cold split made with warm_fraction > 0)")
    users = np.unique(split.valid.users)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    cached = _CachedScores(model)
    with torch.no_grad():
        sample = cached.score(torch.as_tensor(users[: min(len(users), 512)],
                                              device=cached.device if cached.device is not None else "cpu"))
    finite = torch.where(torch.isfinite(sample), sample, torch.nan)
    spread = float(np.nanmedian(np.nanstd(finite.numpy(), axis=1))) or 1.0
    steps = np.arange(-4.0, 4.01, 0.25) if steps is None else np.asarray(steps, dtype=float)
    tried = []
    for step in steps:
        shifted = ColdOffset(cached, cold, float(step) * spread)
        recall = evaluate(shifted, split, on="valid", ks=(k,), metrics=("recall",), users=users)[f"recall@{k}"]
        tried.append({"offset": float(step) * spread, "spread_units": float(step), f"valid_hybrid_recall@{k}": recall})
    best = max(tried, key=lambda t: t[f"valid_hybrid_recall@{k}"])
    return best["offset"], tried
