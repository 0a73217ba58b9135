"""Test helper: a locked text tower that runs each distinct text through its model once per test session.

Alignment tests call a frozen tower (MiniLM) on the same catalog texts again and again — in
`ShardPairs.collate` on every batch of every epoch, in `CatalogPairs.from_catalog`, in validation — and
several tests share a catalog; on a CPU that, not the training, was where their time went. A frozen
tower's output for a text never changes, so `memoize_text` makes an encoder answer texts it has seen
from memory. Each new text is encoded on its own (a batch of one, no padding), so a text's vector does not
depend on which texts shared its batch nor on which test asked first: results are the same whether a test
runs alone or in the suite. The store is keyed by the encoder's `describe()` (spec, weights, preprocessing).
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import torch

_KNOWN: dict[tuple[str, str], torch.Tensor] = {}


def memoize_text(encoder: Any) -> Any:
    """``encoder`` (a frozen text tower) with its ``encode`` memoised per text; returns the same object, so
    ``isinstance`` checks and every other attribute are unchanged."""
    fingerprint = json.dumps(encoder.describe(), sort_keys=True, default=str)
    plain = encoder.encode

    def encode(batch: Sequence[str]) -> torch.Tensor:
        """Strings → ``[N, dim]``, each new text through the tower once."""
        texts = list(batch)
        if not texts:
            return plain([])
        for text in dict.fromkeys(texts):
            if (fingerprint, text) not in _KNOWN:
                _KNOWN[fingerprint, text] = plain([text])[0].clone()
        return torch.stack([_KNOWN[fingerprint, text] for text in texts])

    encoder.encode = encode
    return encoder
