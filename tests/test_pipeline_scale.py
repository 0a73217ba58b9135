"""The next-purchase pipeline's memory- and time-saving paths give the results of the plain ones: the per-row
top-n of a sparse score matrix, co-purchase in blocks of customers (and with each article's neighbours capped,
against a dense reference), the ranker fitted on a list of label windows instead of their stacked table, and
the purchase shares without a Python set."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mmrec.fusion.candidates import (COLUMNS, CoPurchase, ItemSide, Purchases, row_nth_largest, top_from_sparse,
                                     top_per_row, top_per_user, user_item_weights)
from mmrec.fusion.ranker import Ranker, RankerConfig
from mmrec.pipeline import purchase_shares, stack


def reference_top(scores: sp.spmatrix, user_codes: np.ndarray, n: int) -> pd.DataFrame:
    """Every positive entry sorted by pandas: what `top_from_sparse` must equal."""
    coo = scores.tocoo()
    keep = coo.data > 0
    frame = pd.DataFrame({"user": user_codes[coo.row[keep]], "item": coo.col[keep].astype(np.int64),
                          "score": coo.data[keep].astype(np.float64)})
    return top_per_user(frame, n)


def test_top_from_sparse_equals_sorting_every_entry_ties_and_all():
    rng = np.random.default_rng(0)
    n_rows, n_cols = 60, 300
    lengths = rng.choice([0, 1, 3, 5, 6, 7, 40, 150, 300], size=n_rows)  # around and far above n
    rows = np.repeat(np.arange(n_rows), lengths)
    cols = np.concatenate([rng.choice(n_cols, k, replace=False) for k in lengths])
    data = rng.integers(-1, 4, len(rows)).astype(np.float32)  # few values: many ties, zeros and negatives
    scores = sp.csr_matrix((data, (rows, cols)), shape=(n_rows, n_cols))
    codes = rng.permutation(1000)[:n_rows]  # not sorted: the output is still by user code
    for n in (1, 5, 32):
        got = top_from_sparse(scores, codes, n)
        pd.testing.assert_frame_equal(got, reference_top(scores, codes, n))
        assert got.groupby("user").size().max() <= n
    assert list(top_from_sparse(sp.csr_matrix((4, 9)), np.arange(4), 3).columns) == COLUMNS


def test_row_nth_largest_by_hand():
    rows = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    values = np.array([5.0, 1.0, 3.0, 3.0, 2.0, 9.0, 7.0, 7.0, 7.0])
    np.testing.assert_array_equal(row_nth_largest(rows, values, 4, 2), [3.0, -np.inf, 7.0, -np.inf])


def test_copurchase_in_blocks_of_customers_equals_one_block():
    rng = np.random.default_rng(1)
    n_users, n_items, rows = 50, 30, 600
    history = Purchases(rng.integers(0, n_users, rows), rng.integers(0, n_items, rows), rng.integers(0, 20, rows),
                        n_users, n_items)
    side = ItemSide(np.arange(n_items))
    users = np.arange(0, n_users, 2)
    whole = CoPurchase(n=6, window=10, batch=10_000).generate(history, users, 20, side)
    blocks = CoPurchase(n=6, window=10, batch=3).generate(history, users, 20, side)
    assert len(whole) > 0
    pd.testing.assert_frame_equal(blocks, whole)


def test_top_per_row_by_hand_ties_kept():
    matrix = sp.csr_matrix(np.array([[5.0, 1.0, 3.0, 3.0], [0.0, 2.0, 9.0, 0.0], [7.0, 7.0, 0.0, 7.0]]))
    kept = top_per_row(matrix, 2).toarray()
    np.testing.assert_array_equal(kept, [[5.0, 0.0, 3.0, 3.0], [0.0, 2.0, 9.0, 0.0], [7.0, 7.0, 0.0, 7.0]])


def test_copurchase_neighbours_keep_each_articles_most_likely_co_purchases():
    rng = np.random.default_rng(4)
    n_users, n_items, rows, day = 80, 40, 900, 20
    history = Purchases(rng.integers(0, n_users, rows), rng.integers(0, n_items, rows), rng.integers(0, day, rows),
                        n_users, n_items)
    side, users = ItemSide(np.arange(n_items)), np.arange(0, n_users, 3)
    uncapped = CoPurchase(n=8, window=10).generate(history, users, day, side)
    pd.testing.assert_frame_equal(CoPurchase(n=8, window=10, neighbours=n_items).generate(history, users, day, side),
                                  uncapped)
    # the reference, dense: P(j | i) over the window's distinct buyers, each row cut at its 3rd largest value
    recent = history.days >= day - 10
    bought = np.zeros((n_users, n_items))
    bought[history.users[recent], history.items[recent]] = 1
    cond = bought.T @ bought
    np.fill_diagonal(cond, 0)
    cond /= np.maximum(bought.sum(0), 1)[:, None]
    third = -np.sort(-cond, axis=1)[:, 2:3]
    cond = np.where((cond >= third) & (cond > 0), cond, 0)
    weights = user_item_weights(history, users, day)
    profile = np.zeros((n_users, n_items))
    profile[weights["user"], weights["item"]] = weights["score"]
    expected = reference_top(sp.csr_matrix(profile[users] @ cond), users, 8)
    capped = CoPurchase(n=8, window=10, neighbours=3).generate(history, users, day, side)
    pd.testing.assert_frame_equal(capped, expected, check_exact=False, rtol=1e-6)
    assert not capped.equals(uncapped)


def window_table(rng, users: np.ndarray) -> pd.DataFrame:
    """A label window's table: 8 candidates per user, two features, about one positive per user."""
    user = np.repeat(users, 8)
    return pd.DataFrame({"user": user, "item": rng.integers(0, 50, len(user)),
                         "f_a": rng.normal(size=len(user)), "f_b": rng.integers(0, 5, len(user)),
                         "label": (rng.random(len(user)) < 0.15).astype(np.int32)})


def test_ranker_on_a_list_of_windows_equals_the_ranker_on_their_stack():
    rng = np.random.default_rng(2)
    windows = [window_table(rng, np.arange(0, 40)), window_table(rng, np.arange(20, 70))]  # shared customers
    valid = window_table(rng, np.arange(10, 40))
    config = RankerConfig(n_estimators=30, min_child_samples=5, early_stopping_rounds=10)
    on_stack = Ranker(config).fit(stack(windows, 100), valid)
    on_list = Ranker(config).fit(windows, valid)
    assert on_list.best_iteration == on_stack.best_iteration
    assert on_list.booster.model_to_string() == on_stack.booster.model_to_string()
    np.testing.assert_array_equal(on_list.predict(valid), on_stack.predict(valid))


def test_purchase_shares_by_hand():
    # before day 10: user 0 bought items 1, 2; user 1 bought item 3. On day 10: user 0 buys 1 (again, twice)
    # and 4 (nobody bought it before), user 1 buys 1 (sold before, new to them).
    p = Purchases(np.array([0, 0, 1, 0, 0, 0, 1]), np.array([1, 2, 3, 1, 1, 4, 1]), np.array([5, 6, 7, 10, 10, 10, 10]),
                  2, 6)
    shares = purchase_shares(p, 10, 1)
    assert shares == {"repurchase": 1 / 3, "new_article": 1 / 3}


def test_history_before_a_day_is_the_same_rows_whether_in_day_order_or_not():
    rng = np.random.default_rng(3)
    days = np.sort(rng.integers(0, 10, 200))
    ordered = Purchases(rng.integers(0, 9, 200), rng.integers(0, 7, 200), days, 9, 7)
    shuffle = rng.permutation(200)
    mixed = Purchases(ordered.users[shuffle], ordered.items[shuffle], ordered.days[shuffle], 9, 7)
    for day in (0, 4, 10, 11):
        cut, masked = ordered.before(day), mixed.before(day)
        expected = ordered.days < day
        for got, want in ((cut.users, ordered.users[expected]), (cut.days, ordered.days[expected])):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(masked.days, mixed.days[mixed.days < day])
        assert len(cut) == int(expected.sum()) and cut.n_items == 7
