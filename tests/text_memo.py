"""Test helper: a locked text tower that runs each distinct text through its model once.

Alignment tests call a frozen tower (MiniLM) on the same catalog texts every epoch — in `ShardPairs.collate`
and in per-epoch validation — and on a CPU that, not the training, is where their time goes. The tower is
frozen, so its output for a text never changes: `MemoText` wraps it, encodes only texts it has not seen and
answers the rest from memory. Everything else (``dim``, ``preprocess``, ``describe`` ...) is the wrapped
encoder's.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch


class MemoText:
    """``encoder`` with `encode` memoised per text (the wrapped tower must be frozen)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.known: dict[str, torch.Tensor] = {}
        self.encoded = 0  # texts the wrapped tower actually ran on

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoder, name)

    def encode(self, batch: Sequence[str]) -> torch.Tensor:
        """Strings → the wrapped tower's ``[N, dim]``; new texts go through the tower in one batch."""
        texts = list(batch)
        new = [t for t in dict.fromkeys(texts) if t not in self.known]
        if new:
            self.known.update(zip(new, self.encoder.encode(new).clone()))
            self.encoded += len(new)
        if not texts:
            return self.encoder.encode([])
        return torch.stack([self.known[t] for t in texts])
