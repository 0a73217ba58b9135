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


def test_a_known_user_without_history_gets_the_flagged_most_popular_fallback(tmp_path, capsys):
    """User 'c' is in the vocabulary with no seen pair (every purchase of theirs was held out): its scores
    would be an untrained row (ItemKNN: all zero, items in code order), so it gets the fallback, flagged."""
    from mmrec.cli import main

    train = Interactions(np.array([0, 0, 1, 1, 0]), np.array([3, 2, 3, 1, 1]), np.array(["a", "b", "c"], dtype=object),
                         np.array(["i0", "i1", "i2", "i3", "i4"], dtype=object))
    model = create_model("itemknn", 3, 5)
    model.fit(train)
    assert model.answered_by_fallback([0, 2, 1]).tolist() == [False, True, False]
    answer = model.recommend_for_unknown(3, candidates=np.array([0, 2, 3, 4]))
    assert answer["items"].tolist() == [3, 2, 0] and answer["fallback"] == "most_popular"  # 2 bought once, 0 never
    model.save_pretrained(tmp_path / "m")
    assert main(["recommend", "--model", str(tmp_path / "m"), "--user", "a", "--user", "c", "--k", "2", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["recommendations"]["c"] == ["i1", "i3"] and out["fallback"] == {"kind": "most_popular", "users": ["c"]}
    assert out["recommendations"]["a"] != ["i1", "i3"] and out["unknown_users"] == []


def test_repeated_candidates_count_once(model):
    codes, _ = model.recommend([1], k=3, candidates=np.array([4, 4, 2, 4]))
    assert sorted(codes[0].tolist()) == [2, 4]  # k capped at the 2 distinct candidates
    assert model.candidate_codes([4, 4, 2, 4]).tolist() == [4, 2]


def test_codes_that_are_not_whole_numbers_or_not_a_list_are_refused(model):
    with pytest.raises(ValueError, match="user codes must be whole numbers"):  # 0.7 and 1.9 were users 0 and 1
        model.recommend([0.7, 1.9], k=2)
    with pytest.raises(ValueError, match="candidate item codes must be whole numbers"):
        model.recommend([0], k=2, candidates=[1.5, 2.2])
    with pytest.raises(ValueError, match="user codes must be a list of codes, got a single value"):
        model.recommend(0, k=2)
    assert model.recommend(np.array([0.0, 1.0]), k=2)[0].shape == (2, 2)  # whole floats are codes
