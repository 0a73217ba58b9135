"""`Recommender.recommend`: k is validated and capped, and a large k never returns a user's seen items."""
from __future__ import annotations

import numpy as np
import pytest

from mmrec.data import Interactions
from mmrec.recommender import create_model


@pytest.fixture
def model():
    train = Interactions(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 3]), np.array(["a", "b"], dtype=object),
                         np.array(["i0", "i1", "i2", "i3", "i4"], dtype=object))
    model = create_model("most_popular", 2, 5)
    model.fit(train)
    return model


def test_large_k_never_returns_seen_items(model):
    codes, scores = model.recommend([0, 1], k=50)
    assert codes.shape == (2, 5)  # capped at the 5 items
    assert sorted(c for c in codes[0].tolist() if c >= 0) == [3, 4] and codes[0, 2:].tolist() == [-1, -1, -1]
    assert 3 not in codes[1].tolist() and (codes[1] == -1).sum() == 1
    assert scores[codes == -1].eq(float("-inf")).all()


def test_seen_items_come_back_only_when_asked(model):
    codes, _ = model.recommend([0], k=50, exclude_seen=False)
    assert sorted(codes[0].tolist()) == [0, 1, 2, 3, 4]
    codes, _ = model.recommend([0], k=50, candidates=[0, 4])
    assert codes[0].tolist() == [4, -1]


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_bad_k_is_an_error(model, k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        model.recommend([0], k=k)
