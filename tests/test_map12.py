"""MAP@12 as the H&M competition defines it, against values worked out by hand and the competition's apk."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmrec.metrics import map_at_k, next_purchase_metrics


def kaggle_apk(actual, predicted, k=12):
    """The competition's reference ``apk`` (ml_metrics), copied as the judge."""
    predicted = list(predicted)[:k]
    score, hits = 0.0, 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            hits += 1.0
            score += hits / (i + 1.0)
    return score / min(len(actual), k) if actual else 0.0


def pad(rows, k=12):
    return np.array([list(r) + [-1] * (k - len(r)) for r in rows], dtype=np.int64)


def test_hand_computed_values():
    predictions = pad([[1, 9, 2], [7, 5], list(range(100, 112)), [4, 4, 8]])
    actual = [[1, 2, 3], [5], list(range(100, 114)), [4]]
    # user 0: hits at ranks 1 and 3 -> (1/1 + 2/3) / min(3, 12) = 5/9
    # user 1: hit at rank 2 -> (1/2) / 1
    # user 2: 14 bought, all 12 shown are hits -> 12 / min(14, 12) = 1
    # user 3: the repeated 4 scores once -> 1 / 1
    expected = np.mean([5 / 9, 0.5, 1.0, 1.0])
    assert map_at_k(predictions, actual, 12) == pytest.approx(expected, abs=1e-12)
    out = next_purchase_metrics(torch.as_tensor(predictions), actual, 12)
    assert out["map@12"] == pytest.approx(expected, abs=1e-12)
    assert out["recall@12"] == pytest.approx(np.mean([2 / 3, 1.0, 12 / 14, 1.0]), abs=1e-12)
    assert out["users"] == 4


def test_only_buyers_count_and_cutoff_is_12():
    predictions = pad([[5] + list(range(20, 31)) + [], [1, 2]])
    predictions = np.concatenate([predictions, np.full((2, 3), 7)], 1)  # ranks 13-15 must not count
    actual = [[7], [2], []]
    predictions = np.concatenate([predictions, pad([[1]], 15)])
    # user 0: 7 only at rank 13 -> 0; user 1: hit at rank 2 -> 0.5; user 2 bought nothing -> left out
    assert map_at_k(predictions, actual, 12) == pytest.approx(0.25, abs=1e-12)
    assert next_purchase_metrics(predictions, actual)["users"] == 2


def test_agrees_with_the_competition_apk_on_random_lists():
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 30, size=(200, 12))
    actual = [list(rng.choice(30, size=rng.integers(1, 20), replace=False)) for _ in range(200)]
    reference = np.mean([kaggle_apk(a, p) for a, p in zip(actual, predictions.tolist())])
    assert map_at_k(predictions, actual) == pytest.approx(reference, abs=1e-12)


def test_no_buyer_is_an_error():
    with pytest.raises(ValueError, match="at least one user"):
        map_at_k(pad([[1]]), [[]])
