"""Train/valid/test splits by the standard protocols, all returning one `Split`."""
from __future__ import annotations

import math
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


def k_core(interactions: Interactions, k: int = 5) -> Interactions:
    """Rows kept after iteratively dropping users and items with fewer than ``k`` interactions."""
    keep = np.ones(len(interactions), dtype=bool)
    while True:
        users, items = interactions.users[keep], interactions.items[keep]
        user_ok = np.bincount(users, minlength=interactions.n_users) >= k
        item_ok = np.bincount(items, minlength=interactions.n_items) >= k
        row_ok = user_ok[interactions.users] & item_ok[interactions.items] & keep
        if row_ok.sum() == keep.sum():
            return interactions.select(keep)
        keep = row_ok


def _per_user_rank(users: np.ndarray, order_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows grouped by user and ordered by ``order_key`` (ties keep row order): each row's 0-based rank
    within its user, and the user's row count, both aligned with the original rows."""
    order = np.lexsort((np.arange(len(users)), order_key, users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, len(order)])
    rank_sorted = np.arange(len(order)) - np.repeat(starts, counts)
    rank, size = np.empty(len(order), np.int64), np.empty(len(order), np.int64)
    rank[order] = rank_sorted
    size[order] = np.repeat(counts, counts)
    return rank, size


def mmrec_protocol(interactions: Interactions, *, seed: int = 0, core: int = 5,
                   ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> tuple[Split, np.ndarray]:
    """MMRec's warm protocol: unique pairs, iterative ``core``-core, per-user random 8:1:1.

    A user with fewer than 10 interactions keeps n-2 for training and gives one each to valid and test;
    otherwise valid and test get ``round(ratio * n)`` (at least one each). Returns the split and the
    ``x_label`` column (0/1/2) of the kept rows, so it can be written in MMRec's format.
    """
    if len(ratios) != 3 or not all(math.isfinite(r) and r > 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be three positive numbers summing to 1, got {ratios}")
    rng = np.random.default_rng(_seed(seed))
    pairs = k_core(interactions.unique_pairs(), core)
    if not len(pairs):
        raise ValueError(f"no interactions survive the {core}-core filter")
    rank, size = _per_user_rank(pairs.users, rng.random(len(pairs)))
    n_valid = np.where(size < 10, 1, np.maximum(1, np.rint(size * ratios[1]).astype(np.int64)))
    n_test = np.where(size < 10, 1, np.maximum(1, np.rint(size * ratios[2]).astype(np.int64)))
    labels = np.zeros(len(pairs), dtype=np.int8)
    labels[rank >= size - n_valid - n_test] = 1
    labels[rank >= size - n_test] = 2
    return from_labels(pairs, labels), labels


def _seed(seed: object) -> int:
    """A split's seed: a non-negative integer (numpy's own message for 1.5 names no argument)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"a split's seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def temporal(interactions: Interactions, *, test_start: int, test_days: int = 7, valid_days: int = 7) -> Split:
    """Train before ``test_start - valid_days``, valid in the ``valid_days`` after it, test in the
    ``test_days`` from ``test_start`` (Unix seconds; H&M style: next week's purchases)."""
    day = 86_400
    if any(isinstance(d, bool) or int(d) != d or d < 1 for d in (test_days, valid_days)):
        raise ValueError(f"temporal test_days and valid_days must be whole days ≥ 1, got {test_days} and "
                         f"{valid_days} (fewer would put test rows in training or leave a part empty)")
    ts = interactions.timestamps
    if not (ts > 0).any():
        raise ValueError("a temporal split needs timestamps; these interactions have none")
    valid_start = test_start - valid_days * day
    train = interactions.select(ts < valid_start)
    if not len(train):
        raise ValueError("no interactions before the valid period; choose a later test_start")
    return Split(train, interactions.select((ts >= valid_start) & (ts < test_start)),
                 interactions.select((ts >= test_start) & (ts < test_start + test_days * day)))


def leave_last_out(interactions: Interactions, *, min_length: int = 3) -> Split:
    """Per user in time order: the last event is test, the one before is valid, the rest is training.

    Users with fewer than ``min_length`` events stay entirely in training. Ties in time keep file order.
    """
    rank, size = _per_user_rank(interactions.users, interactions.timestamps)
    eligible = size >= min_length
    test = eligible & (rank == size - 1)
    valid = eligible & (rank == size - 2)
    return Split(interactions.select(~(test | valid)), interactions.select(valid), interactions.select(test))


def cold_items(interactions: Interactions, *, fraction: float = 0.2, seed: int = 0,
               warm_fraction: float = 0.0) -> Split:
    """Withhold ``fraction`` of the items that have interactions, with all their interactions.

    Cold items are halved into valid and test item sets; valid/test hold the withheld interactions of
    users who keep training history, so a model sees only the cold items' content. Evaluate with
    ``candidates="cold"`` (rank cold items only) or ``"all"`` (hybrid: cold among all items).

    ``warm_fraction`` > 0 also holds out that share of the warm (user, item) pairs into valid and the same
    share into test (ColdRec's hybrid protocol): without warm targets a hybrid figure only counts cold
    purchases, so a model that pushed every cold item above every warm one would score as well as its cold
    ranking. With them, ``candidates="all"`` weighs both, ``"warm"`` ranks the warm items alone.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(_seed(seed))
    active = np.flatnonzero(interactions.item_counts() > 0)
    n_cold = max(2, int(round(fraction * len(active))))
    if n_cold >= len(active):
        raise ValueError(f"only {len(active)} items have interactions; cannot withhold {n_cold}")
    cold = rng.permutation(active)[:n_cold]
    return _withhold(interactions, np.sort(cold[: n_cold // 2]), np.sort(cold[n_cold // 2:]), warm_fraction, seed)


def cold_groups(interactions: Interactions, groups: np.ndarray, *, fraction: float = 0.2, seed: int = 0,
                warm_fraction: float = 0.0) -> Split:
    """The new-product protocol: withhold ``fraction`` of the item *groups* that have interactions (e.g.
    H&M's ``product_code``: every colour variant of a product together), with all their interactions.

    ``groups[i]`` is item code ``i``'s group (any hashable labels, ``[n_items]``). Withheld groups are halved
    into valid and test groups; the cold item sets are the items with interactions in each half, so no
    group has items on two sides (train, cold valid, cold test) and a cold item has no sibling in training
    whose content it could lean on. Otherwise as `cold_items` (``warm_fraction`` included).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    groups = np.asarray(groups)
    if groups.shape != (interactions.n_items,):
        raise ValueError(f"groups must have one label per item ({interactions.n_items}), got shape {groups.shape}")
    _, group_codes = np.unique(groups, return_inverse=True)
    active = interactions.item_counts() > 0
    active_groups = np.unique(group_codes[active])
    n_cold = max(2, int(round(fraction * len(active_groups))))
    if n_cold >= len(active_groups):
        raise ValueError(f"only {len(active_groups)} groups have interactions; cannot withhold {n_cold}")
    cold = np.random.default_rng(_seed(seed)).permutation(active_groups)[:n_cold]
    valid = active & np.isin(group_codes, cold[: n_cold // 2])
    test = active & np.isin(group_codes, cold[n_cold // 2:])
    return _withhold(interactions, np.flatnonzero(valid), np.flatnonzero(test), warm_fraction, seed)


def _withhold(interactions: Interactions, cold_valid: np.ndarray, cold_test: np.ndarray,
              warm_fraction: float = 0.0, seed: int = 0) -> Split:
    """Train without the cold items; valid/test = their interactions by users who keep training history,
    plus (``warm_fraction`` > 0) held-out warm pairs, every row of a pair on one side."""
    if not 0 <= warm_fraction < 0.5:
        raise ValueError(f"warm_fraction must be in [0, 0.5), got {warm_fraction}")
    is_cold = np.zeros(interactions.n_items, dtype=bool)
    is_cold[cold_valid] = is_cold[cold_test] = True
    side = np.where(is_cold[interactions.items], -1, 0)   # -1 cold, 0 train, 1 warm valid, 2 warm test
    if warm_fraction > 0:
        side = _hold_out_warm_pairs(interactions, side, warm_fraction, seed)
    train = interactions.select(side == 0)
    has_history = train.user_counts() > 0
    kept = has_history[interactions.users]
    withheld = interactions.select((side == -1) & kept)
    valid = withheld.select(np.isin(withheld.items, cold_valid))
    test = withheld.select(np.isin(withheld.items, cold_test))
    if warm_fraction > 0:
        valid = valid.concat(interactions.select((side == 1) & kept))
        test = test.concat(interactions.select((side == 2) & kept))
    return Split(train, valid, test, cold_valid, cold_test)


def _hold_out_warm_pairs(interactions: Interactions, side: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``side`` with a random ``fraction`` of the warm (user, item) pairs marked 1 (valid) and as many 2
    (test), drawn only among users with at least 3 warm pairs, so nearly all keep training history (one whose
    every pair is drawn loses those targets: `_withhold` evaluates only users with history)."""
    warm = np.flatnonzero(side == 0)
    pair_keys = interactions.users[warm].astype(np.int64) * interactions.n_items + interactions.items[warm]
    pairs, pair_of_row = np.unique(pair_keys, return_inverse=True)
    pair_users = pairs // interactions.n_items
    eligible = np.bincount(pair_users, minlength=interactions.n_users)[pair_users] >= 3
    draw = np.random.default_rng([seed, 1]).random(len(pairs))
    pair_side = np.where(eligible & (draw < fraction), 1, np.where(eligible & (draw < 2 * fraction), 2, 0))
    side = side.copy()
    side[warm] = pair_side[pair_of_row]
    return side


def horizon(interactions: Interactions, *, days: int = 1, end: int | None = None) -> Split:
    """Time-based protocol with a horizon: test = the last ``days`` days up to ``end`` (a Unix-day number,
    days since 1970-01-01; default the last day with data), valid = the ``days`` before, train = everything
    before valid. Days are UTC calendar days of the timestamps; rows after ``end`` are left out."""
    if days < 1:
        raise ValueError(f"horizon days must be ≥ 1, got {days}")
    ts = interactions.timestamps
    if not (ts > 0).any():
        raise ValueError("a horizon split needs timestamps; these interactions have none")
    day = ts // 86_400
    end = int(day.max()) if end is None else int(end)
    test_start, valid_start = end - days + 1, end - 2 * days + 1
    train = interactions.select(day < valid_start)
    if not len(train):
        raise ValueError(f"no interactions before the valid period (day {valid_start}); choose a later end")
    return Split(train, interactions.select((day >= valid_start) & (day < test_start)),
                 interactions.select((day >= test_start) & (day <= end)))


def first_purchase_sequences(interactions: Interactions, min_items: int) -> tuple[np.ndarray, Interactions]:
    """Each user's first event per item, for users with at least ``min_items`` distinct items: every later
    target is then an item the user had not bought, so masking seen items never hides one. Rows keep the
    table's order (dates ascending in H&M's file, so one day's purchases keep the file's order, as
    `leave_last_out`'s tie rule expects); vocabularies are cut to those users and items. Returns the kept
    item codes of the input (to cut a catalog with) and the re-coded interactions (weights not kept)."""
    inter = interactions
    _, first = np.unique(inter.users * inter.n_items + inter.items, return_index=True)
    pairs = inter.select(np.sort(first))
    pairs = pairs.select(pairs.user_counts()[pairs.users] >= min_items)
    users, user_codes = np.unique(pairs.users, return_inverse=True)
    items, item_codes = np.unique(pairs.items, return_inverse=True)
    return items, Interactions(user_codes, item_codes, pairs.user_ids[users], pairs.item_ids[items],
                               timestamps=pairs.timestamps, kinds=pairs.kinds)
