"""The alignment objective of a `mmrec.space.UnifiedSpace`: open_clip's `ClipLoss` per modality pair.

`MaskedClipLoss` subclasses open_clip's `ClipLoss` (as open_clip does for CoCa and SigLIP) for batches in
which some rows lack a side of the pair: the loss uses the rows that have both, and optionally (unpaired
negatives) rows with one side only join the other side's softmax as negatives. `PairObjective` sums it
over a space's configured pairs with one learnable temperature.

Dependencies run one way: this module knows tensors only. `UnifiedSpace.training_step` (what
`mmrec.train.fit` calls) encodes a batch into the space and hands the vectors to its `PairObjective`;
`mmrec.fusion.alignment` (training data, hold-out, validation, `align`) builds on the space.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, gather_features
from torch import nn


class MaskedClipLoss(ClipLoss):
    """Symmetric InfoNCE between ``a`` and ``b`` over the rows ``keep`` marks (all rows without it).

    ``only_a`` / ``only_b`` mark rows with that side alone: they join the other side's softmax as
    negatives (the ``b`` rows are then scored against the kept ``a`` rows and the ``only_a`` ones), so the
    logits are rectangular and the labels stay the kept rows' own indices.
    When training is distributed, features (with gradients) and row masks of every process are gathered
    before any row is dropped and the loss is taken over the global batch, so processes may keep
    different numbers of rows; every process then computes the same loss.
    """

    def __init__(self) -> None:
        super().__init__(gather_with_grad=True)

    def forward(self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
                keep: torch.Tensor | None = None, only_a: torch.Tensor | None = None,
                only_b: torch.Tensor | None = None) -> torch.Tensor:
        """The loss (a scalar); exactly zero, with the graph kept connected, when no row has both sides."""
        # The space is built before accelerate starts the process group: look at the group at each call.
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = torch.distributed.get_rank() if distributed else 0
        self.world_size = torch.distributed.get_world_size() if distributed else 1
        if self.world_size > 1:
            a, b = gather_features(a, b, gather_with_grad=True, rank=self.rank, world_size=self.world_size)
            keep, only_a, only_b = (None if m is None else self._gather_mask(m) for m in (keep, only_a, only_b))
        extra_a = a[only_a] if only_a is not None and bool(only_a.any()) else None
        extra_b = b[only_b] if only_b is not None and bool(only_b.any()) else None
        if keep is not None:
            if not bool(keep.any()):  # no row has both sides: no signal, but keep the graph connected
                return (a.sum() + b.sum()) * 0.0
            a, b = a[keep], b[keep]
        logits_a, logits_b = self.get_logits(a, b, logit_scale, extra_a=extra_a, extra_b=extra_b)
        labels = self.get_ground_truth(a.device, len(a))
        return (F.cross_entropy(logits_a, labels) + F.cross_entropy(logits_b, labels)) / 2

    def get_logits(self, a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
                   logit_bias: torch.Tensor | None = None, extra_a: torch.Tensor | None = None,
                   extra_b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``a`` rows against ``b`` and ``extra_b`` rows, ``b`` rows against ``a`` and ``extra_a`` rows, on
        features already gathered from every process (`forward` gathers them with their masks)."""
        all_a = a if extra_a is None else torch.cat([a, extra_a])
        all_b = b if extra_b is None else torch.cat([b, extra_b])
        logits_a = logit_scale * a @ all_b.T
        logits_b = logit_scale * b @ all_a.T
        if logit_bias is not None:
            logits_a, logits_b = logits_a + logit_bias, logits_b + logit_bias
        return logits_a, logits_b

    def _gather_mask(self, mask: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(mask, dtype=torch.uint8) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, mask.to(torch.uint8))
        return torch.cat(parts).bool()


class PairObjective(nn.Module):
    """Weighted sum of `MaskedClipLoss` over modality pairs ``"a-b"`` (no parameters: the temperature is
    the space's ``logit_scale``, passed in).

    ``unpaired_negatives``: a row with one side of a pair only (e.g. a screen showing no item) is a
    negative for every row of the other side in that pair's loss, instead of left out.
    """

    def __init__(self, pairs: Sequence[str], weights: Sequence[float] = (), unpaired_negatives: bool = False) -> None:
        super().__init__()
        if weights and len(weights) != len(pairs):
            raise ValueError(f"PairObjective: {len(weights)} weights for {len(pairs)} pairs")
        self.pairs = tuple(pairs)
        self.weights = tuple(weights) or (1.0,) * len(self.pairs)
        self.unpaired_negatives = unpaired_negatives
        self.loss = MaskedClipLoss()

    def forward(self, vectors: dict[str, tuple[torch.Tensor, torch.Tensor | None]],
                logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
        """``vectors[modality] = (space vectors, row mask or None)``; pairs missing a side are skipped.
        Returns ``loss`` (to minimise), ``temperature`` and each pair's loss (detached)."""
        losses: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=logit_scale.device)
        for pair, weight in zip(self.pairs, self.weights):
            a, _, b = pair.partition("-")
            if a not in vectors or b not in vectors:
                continue
            (va, ma), (vb, mb) = vectors[a], vectors[b]
            ma = None if ma is None else ma.to(va.device).bool()
            mb = None if mb is None else mb.to(va.device).bool()
            keep = ma if mb is None else mb if ma is None else ma & mb
            only_a = only_b = None
            if self.unpaired_negatives:
                only_a = None if mb is None else ~mb if ma is None else ma & ~mb
                only_b = None if ma is None else ~ma if mb is None else mb & ~ma
            loss = self.loss(va, vb, logit_scale, keep, only_a, only_b)
            losses[pair] = loss.detach()
            total = total + weight * loss
        return {"loss": total, "temperature": (1.0 / logit_scale).detach(), **losses}
