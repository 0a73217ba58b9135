"""The cold offset (`mmrec.hybrid`): chosen on valid hybrid Recall, it restores a ranking that buries cold
items, and it never changes the cold-only or warm-only figures."""
import numpy as np
import pytest
import torch

from conftest import random_interactions
from mmrec.evaluate import evaluate
from mmrec.hybrid import ColdOffset, fit_cold_offset, untrained_items
from mmrec.splits import cold_items


class BuriesColdItems:
    """Knows every held-out target (+3 over noise) but scores items without training data 3 lower."""

    def __init__(self, split, seed=0):
        n_users, n_items = split.train.n_users, split.train.n_items
        self.table = torch.from_numpy(np.random.default_rng(seed).normal(size=(n_users, n_items))).float()
        for side in (split.valid, split.test):
            self.table[side.users, side.items] += 3.0
        self.table -= 3.0 * untrained_items(split).float()

    def score(self, users):
        return self.table[users]


def test_offset_chosen_on_valid_lifts_hybrid_and_keeps_each_kind():
    split = cold_items(random_interactions(n_users=120, n_items=60, per_user=12, seed=2), fraction=0.3,
                       seed=1, warm_fraction=0.2)
    model = BuriesColdItems(split)
    offset, tried = fit_cold_offset(model, split, k=5)
    assert offset > 0 and len(tried) > 10
    calibrated = ColdOffset(model, untrained_items(split), offset)
    for on in ("valid", "test"):
        before = evaluate(model, split, on=on, ks=(5,))["recall@5"]
        after = evaluate(calibrated, split, on=on, ks=(5,))["recall@5"]
        assert after > before + 0.05, (on, before, after)
        for candidates in ("cold", "warm"):
            assert evaluate(calibrated, split, on=on, ks=(5,), candidates=candidates).metrics == \
                evaluate(model, split, on=on, ks=(5,), candidates=candidates).metrics


def test_offset_needs_warm_and_cold_valid_targets():
    split = cold_items(random_interactions(n_users=60, n_items=40, per_user=8, seed=2), fraction=0.3, seed=1)
    with pytest.raises(ValueError, match="warm_fraction"):
        fit_cold_offset(BuriesColdItems(split), split)
