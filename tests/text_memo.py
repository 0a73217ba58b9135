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
from typing import Any, Callable, Sequence

import torch

_KNOWN: dict[tuple[str, str], torch.Tensor] = {}


def _memoised(encoder: Any, plain: Callable[[list[str]], torch.Tensor], batch: Sequence[str]) -> torch.Tensor:
    """``plain``'s ``[N, dim]`` for ``batch``, each text new to ``encoder``'s description encoded on its own."""
    fingerprint = json.dumps(encoder.describe(), sort_keys=True, default=str)
    texts = list(batch)
    if not texts:
        return plain([])
    for text in dict.fromkeys(texts):
        if (fingerprint, text) not in _KNOWN:
            _KNOWN[fingerprint, text] = plain([text])[0].clone()
    return torch.stack([_KNOWN[fingerprint, text] for text in texts])


def memoize_text(encoder: Any) -> Any:
    """``encoder`` (a frozen text tower) with its ``encode`` memoised per text; returns the same object, so
    ``isinstance`` checks and every other attribute are unchanged."""
    plain = encoder.encode
    encoder.encode = lambda batch: _memoised(encoder, plain, batch)
    return encoder


def memoize_hf_text(monkeypatch: Any) -> None:
    """Every transformers text tower (`HFTextEncoder`, e.g. MiniLM) memoises ``encode`` until the test ends
    (``monkeypatch`` undoes it): for code that builds its own towers, such as an in-process CLI run."""
    from mmrec.encoders.hf_text import HFTextEncoder

    plain = HFTextEncoder.encode
    monkeypatch.setattr(HFTextEncoder, "encode",
                        lambda self, batch: _memoised(self, lambda texts: plain(self, texts), batch))
