"""Metric values equal MMRec's definitions, checked against hand-computed numbers."""
import math

import numpy as np
import pytest
import torch

from mmrec import Interactions
from mmrec.evaluate import evaluate
from mmrec.metrics import per_user_metrics
from mmrec.splits import Split


def test_hand_computed_values():
    # user 0: relevant {A, C} (2), ranked A B C -> hits 1 0 1
    # user 1: relevant {D} (1), ranked A B C -> no hit
    # user 2: relevant {B, X, Y, Z} (4), ranked C B A -> hits 0 1 0
    hits = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=torch.bool)
    n_rel = torch.tensor([2, 1, 4])
    m = per_user_metrics(hits, n_rel, (1, 3))
    expect3 = {
        "recall@3": [1.0, 0.0, 0.25],
        "precision@3": [2 / 3, 0.0, 1 / 3],
        "ndcg@3": [(1 + 0.5) / (1 + 1 / math.log2(3)), 0.0, (1 / math.log2(3)) / (1 + 1 / math.log2(3) + 0.5)],
        "map@3": [(1 + 2 / 3) / 2, 0.0, (1 / 2) / 3],
        "hr@3": [1.0, 0.0, 1.0],
        "mrr@3": [1.0, 0.0, 0.5],
    }
    for key, values in expect3.items():
        np.testing.assert_allclose(m[key].numpy(), values, rtol=1e-12, err_msg=key)
    np.testing.assert_allclose(m["recall@1"].numpy(), [0.5, 0.0, 0.0])
    np.testing.assert_allclose(m["ndcg@1"].numpy(), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(m["map@1"].numpy(), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(m["precision@1"].numpy(), [1.0, 0.0, 0.0])
    # Spot values as printed in a note: ndcg@3 of user 0 = 0.919720, of user 2 = 0.296082
    assert m["ndcg@3"][0].item() == pytest.approx(0.919720, abs=1e-6)
    assert m["ndcg@3"][2].item() == pytest.approx(0.296082, abs=1e-6)


def test_unknown_metric_and_short_hits_are_errors():
    hits = torch.zeros(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="unknown metric"):
        per_user_metrics(hits, torch.tensor([1]), (1,), ("auc",))
    with pytest.raises(ValueError, match="largest k"):
        per_user_metrics(hits, torch.tensor([1]), (5,))


def _tiny_split():
    # 2 users, 6 items. user 0 trained on item 0, valid item 1, test items 2 and 4.
    # user 1 trained on item 5, valid item 3, test item 0.
    ids = dict(user_ids=["a", "b"], item_ids=[f"i{i}" for i in range(6)])
    train = Interactions([0, 1], [0, 5], **ids)
    valid = Interactions([0, 1], [1, 3], **ids)
    test = Interactions([0, 0, 1], [2, 4, 0], **ids)
    return Split(train, valid, test)


def test_evaluator_masks_train_items_and_matches_hand_values():
    split = _tiny_split()
    # Fixed scores: item order by score 0 > 1 > 2 > 3 > 4 > 5 for both users.
    scores = torch.tensor([[6.0, 5, 4, 3, 2, 1]]).repeat(2, 1)
    result = evaluate(lambda users: scores[users], split, on="test", ks=(1, 2, 3))
    # user 0: train item 0 masked -> ranking 1,2,3,4,5 ; relevant {2,4}: hits 0 1 0 ; recall@3 = 1/2
    # user 1: train item 5 masked -> ranking 0,1,2 ; relevant {0}: hits 1 0 0 ; recall@3 = 1
    assert result["recall@3"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["recall@1"] == pytest.approx((0 + 1.0) / 2)
    assert result["mrr@3"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["users"] == 2
    # MMRec does not mask valid items at test time; the option does (user 0's valid item 1 leaves the list).
    masked = evaluate(lambda users: scores[users], split, on="test", ks=(1,), mask_valid_at_test=True)
    # user 0 ranking becomes 2,3,4,5 -> first item relevant; user 1 ranking 0 first -> relevant
    assert masked["recall@1"] == pytest.approx((0.5 + 1.0) / 2)


def test_a_masked_training_item_is_never_a_hit_however_short_the_candidate_list():
    """A repeat purchase: user 1 bought item 5 in training and again in test. With k at least the candidates
    left, topk reached the masked item (score -inf) and counted it a hit: recall 1 for a hidden item."""
    ids = dict(user_ids=["a", "b"], item_ids=[f"i{i}" for i in range(6)])
    split = Split(Interactions([0, 1], [0, 5], **ids), Interactions([0, 1], [1, 3], **ids),
                  Interactions([0, 1], [2, 5], **ids))
    scores = torch.tensor([[6.0, 5, 4, 3, 2, 1]]).repeat(2, 1)
    result = evaluate(lambda users: scores[users], split, on="test", ks=(2,), candidates=[2, 5])
    assert result.per_user["recall@2"].tolist() == [1.0, 0.0]
    assert evaluate(lambda users: scores[users], split, on="test", ks=(6,))["recall@6"] == pytest.approx(0.5)


def test_nan_scores_and_bad_cutoffs_are_errors():
    split = _tiny_split()
    scores = torch.tensor([[6.0, float("nan"), 4, 3, 2, 1]]).repeat(2, 1)
    with pytest.raises(ValueError, match="NaN for 2 of 2 users"):  # topk ranked NaN first, for every user
        evaluate(lambda users: scores[users], split, on="test", ks=(1,))
    for ks in ((0,), (-1,), ()):
        with pytest.raises(ValueError, match="cut-offs of at least 1"):
            evaluate(lambda users: scores[users].nan_to_num(), split, on="test", ks=ks)


def test_evaluator_hands_user_ids_to_a_model_on_its_own_device():
    # A model trained on a GPU scores user ids on its device (vae_fusion's history affinity failed on CUDA when
    # they came on the CPU); "meta" stands in for a device this CPU machine does not have.
    split = _tiny_split()
    scores = torch.tensor([[6.0, 5, 4, 3, 2, 1]]).repeat(2, 1)

    class OnMeta:
        device = torch.device("meta")

        def score(self, users):
            assert users.device.type == "meta"
            return scores[: len(users)]

    assert evaluate(OnMeta(), split, on="test", ks=(1,))["users"] == 2


def test_evaluator_candidate_sets_and_batching_invariance():
    split = _tiny_split()
    split.cold_valid_items, split.cold_test_items = np.array([3]), np.array([4])
    scores = torch.tensor([[6.0, 5, 4, 3, 2, 1], [1.0, 2, 3, 4, 5, 6]])
    cold = evaluate(lambda u: scores[u], split, on="test", ks=(1,), candidates="cold")
    # candidates {3, 4}; only user 0 has a relevant cold item (4); it ranks 3 above 4 -> recall@1 = 0
    assert cold["users"] == 1 and cold["recall@1"] == 0.0
    listed = evaluate(lambda u: scores[u], split, on="test", ks=(1,), candidates=[2, 4])
    assert listed["users"] == 1 and listed["recall@1"] == pytest.approx(0.5)
    full = evaluate(lambda u: scores[u], split, on="test", ks=(1, 2, 5))
    tiny_batches = evaluate(lambda u: scores[u], split, on="test", ks=(1, 2, 5), memory_budget_mb=1e-6)
    assert full.metrics == tiny_batches.metrics
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda u: scores[u][:, :3], split, on="test")
