"""Split protocols: MMRec 8:1:1 with the n-2/1/1 rule, k-core, temporal, leave-last-out, cold items, new
products (cold item groups)."""
import numpy as np
import torch
import pytest

from conftest import random_interactions
from mmrec import Interactions
from mmrec.splits import cold_groups, cold_items, from_labels, k_core, leave_last_out, mmrec_protocol, temporal


def test_k_core_is_iterative():
    # item 'x' has 2 users; removing it drops user 'c' below 2, which drops item 'y' below 2.
    inter = Interactions.from_ids(["a", "a", "b", "b", "c", "c", "d", "d"],
                                  ["p", "q", "p", "q", "x", "y", "x", "p"])
    kept = k_core(inter, 2)
    # y (1) goes, so c (x only) goes, so x (d only) goes, so d (p only) goes: a and b remain with p, q.
    assert set(kept.user_ids[kept.users]) == {"a", "b"}
    assert set(kept.item_ids[kept.items]) == {"p", "q"}


def test_mmrec_protocol_ratios_small_user_rule_and_seed():
    inter = random_interactions(n_users=50, n_items=80, per_user=20, seed=0)
    inter = inter.concat(inter)  # duplicates collapse to unique pairs
    split, labels = mmrec_protocol(inter, seed=1, core=1)
    assert len(split.train) + len(split.valid) + len(split.test) == 50 * 20
    per_user = np.bincount(split.test.users, minlength=50)
    assert (per_user == 2).all()  # 20 interactions -> 16/2/2
    small = random_interactions(n_users=10, n_items=80, per_user=7, seed=0)
    s2, _ = mmrec_protocol(small, seed=0, core=1)
    assert (np.bincount(s2.valid.users) == 1).all() and (np.bincount(s2.test.users) == 1).all()
    assert (np.bincount(s2.train.users) == 5).all()  # n-2
    again, labels2 = mmrec_protocol(inter, seed=1, core=1)
    assert np.array_equal(labels, labels2)
    other, labels3 = mmrec_protocol(inter, seed=2, core=1)
    assert not np.array_equal(labels, labels3)
    assert from_labels(split.train.concat(split.valid).concat(split.test), np.r_[
        np.zeros(len(split.train)), np.ones(len(split.valid)), np.full(len(split.test), 2)]).valid.users.size


def test_from_labels_rejects_bad_labels():
    inter = random_interactions(n_users=2, n_items=8, per_user=2)
    with pytest.raises(ValueError, match="row 1"):
        from_labels(inter, np.array([0, 3, 1, 2]))
    with pytest.raises(ValueError, match="rows"):
        from_labels(inter, np.array([0, 1]))


def test_temporal_and_leave_last_out():
    day = 86_400
    inter = Interactions.from_ids(["a"] * 5 + ["b"] * 2, ["1", "2", "3", "4", "5", "1", "2"],
                                  timestamps=np.array([1, 2, 3, 4, 5, 1, 9]) * day)
    split = temporal(inter, test_start=4 * day, test_days=7, valid_days=1)
    assert list(split.train.timestamps // day) == [1, 2, 1]
    assert list(split.valid.timestamps // day) == [3]
    assert sorted(split.test.timestamps // day) == [4, 5, 9]
    llo = leave_last_out(inter)
    assert list(llo.test.item_ids[llo.test.items]) == ["5"]  # user b has 2 events: stays in train
    assert list(llo.valid.item_ids[llo.valid.items]) == ["4"]
    with pytest.raises(ValueError, match="timestamps"):
        temporal(Interactions.from_ids(["a"], ["1"]), test_start=10)
    for days in ({"valid_days": -7}, {"test_days": 0}, {"valid_days": 1.5}):  # -7 put every test row in training
        with pytest.raises(ValueError, match="whole days ≥ 1"):
            temporal(inter, test_start=4 * day, **days)
    with pytest.raises(ValueError, match="three positive numbers"):  # NaN passed every comparison
        mmrec_protocol(inter, ratios=(float("nan"), 0.5, 0.5))
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got 1.5"):
        mmrec_protocol(inter, seed=1.5)


def test_cold_items_withholds_all_interactions_of_cold_items():
    inter = random_interactions(n_users=60, n_items=40, per_user=8, seed=4)
    split = cold_items(inter, fraction=0.2, seed=0)
    cold = np.r_[split.cold_valid_items, split.cold_test_items]
    assert len(cold) == 8 and len(np.intersect1d(split.cold_valid_items, split.cold_test_items)) == 0
    assert not np.isin(split.train.items, cold).any()
    assert np.isin(split.valid.items, split.cold_valid_items).all()
    assert np.isin(split.test.items, split.cold_test_items).all()
    assert len(split.valid) + len(split.test) == np.isin(inter.items, cold).sum()
    assert (split.train.user_counts()[split.test.users] > 0).all()


def test_cold_groups_withholds_whole_products():
    inter = random_interactions(n_users=60, n_items=40, per_user=8, seed=4)
    groups = np.array([f"p{i // 3}" for i in range(40)])  # 14 products of up to 3 colour variants
    split = cold_groups(inter, groups, fraction=0.3, seed=1)
    valid_groups, test_groups = set(groups[split.cold_valid_items]), set(groups[split.cold_test_items])
    train_groups = set(groups[split.train.items])
    assert len(valid_groups | test_groups) == 4 and len(valid_groups) == len(test_groups) == 2
    # No product code on two sides: train, cold valid and cold test share none.
    assert not (valid_groups & test_groups) and not (train_groups & (valid_groups | test_groups))
    # Every variant (with interactions) of a withheld product is withheld, and all its interactions.
    cold = np.r_[split.cold_valid_items, split.cold_test_items]
    withheld = np.isin(groups, list(valid_groups | test_groups)) & (inter.item_counts() > 0)
    assert sorted(cold.tolist()) == np.flatnonzero(withheld).tolist()
    assert not np.isin(split.train.items, cold).any()
    assert np.isin(split.valid.items, split.cold_valid_items).all()
    assert np.isin(split.test.items, split.cold_test_items).all()
    assert len(split.valid) + len(split.test) == np.isin(inter.items, cold).sum()
    again = cold_groups(inter, groups, fraction=0.3, seed=1)
    assert np.array_equal(again.cold_test_items, split.cold_test_items)
    with pytest.raises(ValueError, match="one label per item"):
        cold_groups(inter, groups[:5])


def test_cold_split_with_warm_targets_holds_out_whole_warm_pairs():
    from mmrec.evaluate import evaluate

    inter = random_interactions(n_users=80, n_items=40, per_user=10, seed=5)
    plain = cold_items(inter, fraction=0.2, seed=3)
    split = cold_items(inter, fraction=0.2, seed=3, warm_fraction=0.15)
    cold = np.r_[split.cold_valid_items, split.cold_test_items]
    assert np.array_equal(cold, np.r_[plain.cold_valid_items, plain.cold_test_items])  # same cold items
    for side, cold_side in ((split.valid, split.cold_valid_items), (split.test, split.cold_test_items)):
        warm_rows = ~np.isin(side.items, cold)
        assert 0 < warm_rows.sum() < len(side)                      # both kinds of target
        assert np.isin(side.items[~warm_rows], cold_side).all()     # cold targets as before
    keys = lambda x: set(zip(x.users.tolist(), x.items.tolist()))
    assert not keys(split.train) & (keys(split.valid) | keys(split.test)) and not keys(split.valid) & keys(split.test)
    assert len(split.train) + len(split.valid) + len(split.test) == len(inter)  # every user keeps history here
    assert (split.train.user_counts()[np.r_[split.valid.users, split.test.users]] > 0).all()
    # The cold ranking sees the same targets as without warm targets; the warm ranking only warm ones.
    cold_targets = lambda s: sorted(keys(s.test.select(np.isin(s.test.items, cold))))
    assert cold_targets(split) == cold_targets(plain)
    scores = lambda users: torch.zeros(len(users), inter.n_items)
    assert evaluate(scores, split, candidates="warm")["users"] > 0
    assert evaluate(scores, plain, candidates="warm")["users"] == 0
    with pytest.raises(ValueError, match="warm_fraction"):
        cold_items(inter, warm_fraction=0.6)


def test_first_purchase_sequences_keep_first_events_of_users_with_enough_items():
    from mmrec.splits import first_purchase_sequences

    inter = Interactions(np.array([0, 0, 0, 0, 1, 1, 2, 2, 2]), np.array([3, 1, 3, 2, 0, 0, 1, 2, 3]),
                         np.array(["a", "b", "c"], dtype=object), np.array(["i0", "i1", "i2", "i3"], dtype=object),
                         timestamps=np.arange(9))
    codes, sub = first_purchase_sequences(inter, 3)
    assert codes.tolist() == [1, 2, 3] and list(sub.user_ids) == ["a", "c"]  # b bought one item twice
    assert [(sub.user_ids[u], sub.item_ids[i]) for u, i in zip(sub.users, sub.items)] == [
        ("a", "i3"), ("a", "i1"), ("a", "i2"), ("c", "i1"), ("c", "i2"), ("c", "i3")]
    assert sub.timestamps.tolist() == [0, 1, 3, 6, 7, 8]  # the repeat of i3 (time 2) is dropped
