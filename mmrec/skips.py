"""One type for damaged inputs skipped among many: counted per reason, the first few kept as examples.

Every reader that skips instead of failing (transaction lines, photos, frames, shard members) keeps a
`Skips`; it compares and serialises as the plain ``{reason: count}`` dict, with ``examples`` beside it.
"""
from __future__ import annotations

import logging
from typing import Any


class Skips(dict):
    """``{reason: count}`` of skipped inputs, with ``examples[reason]``: the first ``max_examples`` of each
    (e.g. ``"line 12: '0999'"``). `add` logs each skip it is given at WARNING on ``logger`` when one is set."""

    def __init__(self, counts: Any = (), *, max_examples: int = 5, logger: logging.Logger | None = None) -> None:
        super().__init__(counts)
        self.max_examples = max_examples
        self.examples: dict[str, list[str]] = {}
        self.logger = logger

    def add(self, reason: str, example: str = "", count: int = 1) -> None:
        """Count ``count`` skips for ``reason`` (nothing when 0), keeping ``example`` while there is room."""
        if count <= 0:
            return
        self[reason] = self.get(reason, 0) + count
        kept = self.examples.setdefault(reason, [])
        if example and len(kept) < self.max_examples:
            kept.append(example)
        if self.logger is not None:
            self.logger.warning("skipped %d (%s)%s", count, reason, f": {example}" if example else "")

    def add_many(self, reason: str, count: int, examples: list[str]) -> None:
        """Count ``count`` skips for ``reason`` at once, keeping the first of ``examples`` while there is room."""
        if count <= 0:
            return
        self[reason] = self.get(reason, 0) + count
        kept = self.examples.setdefault(reason, [])
        kept.extend(examples[: max(self.max_examples - len(kept), 0)])

    @property
    def total(self) -> int:
        """All skips, every reason."""
        return sum(self.values())

    def summary(self) -> dict[str, Any]:
        """``{"counts": {...}, "examples": {...}}`` for reports and JSON."""
        return {"counts": dict(self), "examples": {k: list(v) for k, v in self.examples.items() if v}}
