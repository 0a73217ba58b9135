"""Train/valid/test splits by the standard protocols, all returning one `Split`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmrec.data import Interactions


@dataclass
class Split:
    """Three interaction tables over one shared vocabulary, plus the cold item sets where there are any.

    ``cold_valid_items`` / ``cold_test_items`` are item codes withheld from training with all their
    interactions (empty for warm protocols).
    """

    train: Interactions
    valid: Interactions
    test: Interactions
    cold_valid_items: np.ndarray | None = None
    cold_test_items: np.ndarray | None = None


def from_labels(interactions: Interactions, labels: np.ndarray) -> Split:
    """A split from MMRec's ``x_label`` column: 0 train, 1 valid, 2 test."""
    labels = np.asarray(labels)
    if labels.shape != (len(interactions),):
        raise ValueError(f"x_label has {labels.shape} rows, interactions have {len(interactions)}")
    bad = ~np.isin(labels, (0, 1, 2))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"x_label must be 0, 1 or 2; row {row} has {labels[row]!r}")
    return Split(*(interactions.select(labels == k) for k in (0, 1, 2)))
