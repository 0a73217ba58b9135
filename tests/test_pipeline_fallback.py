"""The pipeline's list for customers without history (`PipelineConfig.fallback`): trending counted by buyers
per day with a steeper recency decay, by hand; used for historyless and unknown customers alike; reads
nothing on or after the day it predicts; the baseline keeps its own trending."""
from __future__ import annotations

import numpy as np
import pytest

from mmrec.data import Catalog, Interactions
from mmrec.fusion.candidates import Purchases, Trending, trending_scores
from mmrec.fusion.ranker import RankerConfig
from mmrec.pipeline import NextPurchase, PipelineConfig, baseline, item_side, train

DAY = 18_500


def purchases(rows: list[tuple[int, int, int]], n_users: int = 4, n_items: int = 3) -> Purchases:
    """``rows`` of (user, item, day offset), in day order."""
    users, items, days = (np.array(col, dtype=np.int64) for col in zip(*rows))
    return Purchases(users, items, DAY + days, n_users, n_items)


def test_trending_scores_by_hand():
    # day 3 is predicted: weights 1 (day 2), 1/2 (day 1), 1/3 (day 0)
    p = purchases([(0, 0, 0), (0, 0, 2), (0, 0, 2), (0, 0, 2), (1, 1, 2), (2, 1, 2), (3, 2, 1), (3, 2, 1)])
    day = DAY + 3
    np.testing.assert_allclose(trending_scores(p, day, 7), [1 / 3 + 3, 2, 2 * 0.5])
    # buyers: customer 0's three units of article 0 on day 2 count once, its day-0 unit still counts
    np.testing.assert_allclose(trending_scores(p, day, 7, buyers=True), [1 / 3 + 1, 2, 0.5])
    np.testing.assert_allclose(trending_scores(p, day, 7, decay=2.0, buyers=True), [1 / 9 + 1, 2, 0.25])
    np.testing.assert_allclose(trending_scores(p, day, 7, decay=2.0), [1 / 9 + 3, 2, 2 * 0.25])
    # the window still applies: day 0 is 3 days back
    np.testing.assert_allclose(trending_scores(p, day, 2, buyers=True), [1, 2, 0.5])
    order, _ = Trending(n=3, buyers=True, decay=2.0).top_items(p, day)
    assert order.tolist() == [1, 0, 2]
    assert Trending(n=3).top_items(p, day)[0].tolist() == [0, 1, 2]


def shop() -> tuple[Interactions, Catalog]:
    """Four days; customer 0 buys ten units of article 0 every day (units trending: 0 first), while
    articles 1..5 are bought by several customers each (buyers trending: those first); 'ghost' never buys."""
    rng = np.random.default_rng(0)
    n_items, n_users = 12, 41
    users, items, days = [], [], []
    for d in range(4):
        users += [0] * 10
        items += [0] * 10
        days += [d] * 10
        for u in range(1, n_users - 1):
            if rng.random() < 0.6:
                users.append(u)
                items.append(int(rng.integers(1, 6)) if rng.random() < 0.7 else int(rng.integers(6, n_items)))
                days.append(d)
    ids = [f"{i:010d}" for i in range(n_items)]
    catalog = Catalog(ids=ids, titles=ids, texts=[""] * n_items, image_paths=[None] * n_items,
                      attributes={"product_code": np.array([str(i // 2) for i in range(n_items)], dtype=object)})
    user_ids = np.array([f"c{u:03d}" for u in range(n_users - 1)] + ["ghost"], dtype=object)
    inter = Interactions(np.array(users), np.array(items), user_ids, catalog.ids,
                         timestamps=(DAY + np.array(days, np.int64)) * 86_400)
    return inter, catalog


def config(**kw) -> PipelineConfig:
    return PipelineConfig(candidates={"repurchase": 5, "trending": 6}, features=("generators", "customer"),
                          ranker=RankerConfig(n_estimators=5, min_child_samples=2, early_stopping_rounds=2),
                          label_windows=1, **kw)


def test_historyless_customers_get_the_fallback_not_the_baselines_trending():
    inter, catalog = shop()
    p = Purchases.from_interactions(inter)
    ghost = int(np.flatnonzero(inter.user_ids == "ghost")[0])
    day = DAY + 3
    model = NextPurchase(config(), item_side(catalog)).fit(p, DAY + 2)
    got = model.recommend(p, np.array([ghost]), day, k=6)[0]
    expected, _ = Trending(n=6, decay=2.0, buyers=True).top_items(p.before(day), day)
    assert got.tolist() == expected.tolist() and 0 not in got[:5]
    assert baseline(p, np.array([ghost]), day, repurchase=False, k=6)[0][0] == 0  # units: customer 0's article
    old = NextPurchase(config(fallback_decay=1.0, fallback_buyers=False), item_side(catalog)).fit(p, DAY + 2)
    assert old.recommend(p, np.array([ghost]), day, k=6)[0][0] == 0
    # nothing on or after the predicted day is read: rewrite those rows, the list stays
    later = p.days >= day
    changed = Purchases(p.users.copy(), p.items.copy(), p.days.copy(), p.n_users, p.n_items)
    changed.items[later] = 0
    assert model.recommend(changed, np.array([ghost]), day, k=6)[0].tolist() == got.tolist()


def test_saved_model_answers_unknown_customers_with_the_fallback_order():
    inter, catalog = shop()
    model, _ = train(inter, catalog, config(), refit_all=True)
    p = Purchases.from_interactions(inter)
    day = int(p.days.max()) + 1
    expected, _ = Trending(n=6, decay=2.0, buyers=True).top_items(p, day)
    assert model.recommend_for_unknown(k=6)["items"].tolist() == expected.tolist()
    ghost = int(np.flatnonzero(inter.user_ids == "ghost")[0])
    assert model.recommend([ghost], k=6)[0][0].tolist() == expected.tolist()


def test_fallback_decay_must_not_be_negative():
    with pytest.raises(ValueError, match="fallback_decay"):
        PipelineConfig(fallback_decay=-1.0)
