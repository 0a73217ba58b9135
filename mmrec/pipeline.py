"""The next-purchase pipeline: candidate generators → LightGBM lambdarank ranker → top-k, time-aware.

Protocol (`run`): with a horizon of ``h`` days and the test window starting on day ``T``, valid starts on
``V = T - h``. The ranker is trained on label windows before the one it predicts — for a window starting
on ``L`` the features read purchases before ``L`` and the labels are the purchases in ``[L, L + h)`` — and
only customers who buy in a label window are training rows. Choosing: train on the ``label_windows``
windows before ``V``, stop early on valid (``V``); the test ranker is the same recipe moved one window
later (trained up to ``V``) with the chosen number of trees; deploy (``refit_all``) moves it on to the
data's last window (the test window by default) and keeps every purchase as history, so the saved model
answers for the day after the data ends.

Library use::

    from mmrec.datasets import hm
    from mmrec.pipeline import PipelineConfig, train
    catalog, interactions = hm.load("../shared/data/hm", images=False)
    model, report = train(interactions, catalog, PipelineConfig(), refit_all=True)
    codes, scores = model.recommend(user_codes, k=12)
    model.save_pretrained("out/pipeline")   # Recommender.from_pretrained("out/pipeline") loads it

`train` returns ``PipelineModel`` (registered as ``pipeline``): the pipeline as a `Recommender`, saved
and loaded like every other model (``mmrec train pipeline``, ``mmrec recommend``). `run` is the same
protocol on `Purchases` and an `ItemSide`, returning the `NextPurchase` object itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from mmrec.data import Catalog, Interactions
from mmrec.fusion.candidates import (GENERATORS, ItemSide, Purchases, distinct, generate_all, recall_by_generator,
                                     top_per_user, Trending, user_item_weights)
from mmrec.fusion.ranker import FEATURE_GROUPS, CATEGORICAL, Ranker, RankerConfig, features, with_positive
from mmrec.metrics import next_purchase_metrics
from mmrec.recommender import Recommender, register_model

K = 12


@dataclass
class PipelineConfig:
    """Settings of the pipeline.

    ``candidates``: generator name → candidates per customer (0 or absent = generator off; names in
    `mmrec.fusion.candidates.GENERATORS`). ``trending_window`` / ``copurchase_window``: days of purchases the
    trending and co-purchase generators count. ``copurchase_neighbours``: each article's most likely co-purchases
    the co-purchase generator keeps (0 = all; `mmrec.fusion.candidates.CoPurchase`). ``features``: the ranker's
    feature groups. ``content``: the encoder of the item content vectors (``"minilm"``; ``""`` = no content). The
    defaults are what was chosen on the H&M valid day (benchmarks/next_purchase.py): segment trending and content
    (MiniLM candidates and similarity feature) did not add there, so they are off; ``{"content": 24}`` in
    ``candidates``, ``"content"`` in ``features`` and ``content: minilm`` turn content on.
    ``horizon_days``: the length of a label window (a day here; a week on the full download).
    ``label_windows``: label windows the ranker trains on.
    ``fallback_decay`` / ``fallback_buyers``: how the list for customers without history (and the fill
    after a ranked customer's candidates) counts the last ``trending_window`` days — each purchase weighted
    by ``recency ** fallback_decay``, a customer's units of an article on one day counted once with
    ``fallback_buyers`` (`mmrec.fusion.candidates.trending_scores`). Chosen on the H&M valid day: buyers per
    day with decay 2 beat units with decay 1 (the trending generator and baseline's recipe) there. The
    trending generator, whose score is a ranker feature, keeps decay 1 on units (the ranker did not gain
    from the other recipe on valid).
    """

    candidates: dict[str, int] = field(default_factory=lambda: {
        "repurchase": 24, "trending": 48, "copurchase": 32, "colour_variants": 12})
    trending_window: int = 7
    copurchase_window: int = 28
    copurchase_neighbours: int = 0
    features: tuple[str, ...] = ("generators", "customer", "article", "affinity")
    content: str = ""
    horizon_days: int = 1
    label_windows: int = 3
    fallback_decay: float = 2.0
    fallback_buyers: bool = True
    ranker: RankerConfig = field(default_factory=RankerConfig)

    def __post_init__(self) -> None:
        unknown = set(self.candidates) - set(GENERATORS)
        if unknown:
            raise ValueError(f"PipelineConfig.candidates: unknown generator(s) {sorted(unknown)}; known: {list(GENERATORS)}")
        for name, n in self.candidates.items():
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise ValueError(f"PipelineConfig.candidates.{name}: expected a count ≥ 0 (an integer), got {n!r}")
        if self.candidates.get("trending", 0) < 1:
            raise ValueError("PipelineConfig.candidates needs trending ≥ 1: it is the only generator for a "
                             "customer without history")
        for name in ("horizon_days", "label_windows", "trending_window", "copurchase_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"PipelineConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.copurchase_neighbours < 0:
            raise ValueError(f"PipelineConfig.copurchase_neighbours must be ≥ 0 (0 = all), "
                             f"got {self.copurchase_neighbours}")
        if not 0 <= self.fallback_decay < float("inf"):
            raise ValueError(f"PipelineConfig.fallback_decay must be a finite number ≥ 0, got {self.fallback_decay}")
        if not self.features:
            raise ValueError(f"PipelineConfig.features: give at least one group of {list(FEATURE_GROUPS)}")
        bad = set(self.features) - set(FEATURE_GROUPS)
        if bad:
            raise ValueError(f"PipelineConfig.features: unknown group(s) {sorted(bad)}; known: {list(FEATURE_GROUPS)}")

    def generators(self) -> list:
        """The enabled generators, in a fixed order."""
        windows = {"trending": {"window": self.trending_window},
                   "copurchase": {"window": self.copurchase_window, "neighbours": self.copurchase_neighbours},
                   "segment_trending": {"window": self.trending_window}}
        return [GENERATORS[name](n=n, **windows.get(name, {})) for name, n in self.candidates.items() if n > 0]

    def fallback(self, n: int = K) -> Trending:
        """The list for customers without history, and the fill after a ranked customer's candidates."""
        return Trending(n=n, window=self.trending_window, decay=self.fallback_decay, buyers=self.fallback_buyers)


def item_side(catalog: Catalog, vectors: np.ndarray | None = None) -> ItemSide:
    """Product codes and categorical attribute codes of ``catalog`` (plus content ``vectors`` if given)."""
    attrs = catalog.attributes
    product = attrs.get("product_code", catalog.ids)
    codes = {name: pd.factorize(attrs[name])[0].astype(np.int32) for name in CATEGORICAL if name in attrs}
    return ItemSide(pd.factorize(product)[0].astype(np.int64), vectors, codes)


def customer_ages(customers: pd.DataFrame | None, user_ids: np.ndarray) -> np.ndarray | None:
    """Age per user code from ``customers.csv`` (NaN where unknown); None without the file."""
    if customers is None or "age" not in customers:
        return None
    return pd.to_numeric(customers["age"].reindex(user_ids), errors="coerce").to_numpy(np.float32)


class NextPurchase:
    """A fitted pipeline: generators, ranker and the purchase history it recommends from.

    Only customers with purchase history are ranked (and are the ranker's training rows): for a customer
    without any, the candidates are the trending list and the ranker could only reorder it by article
    features, which on valid did worse than the trending order itself; they get the fallback list
    (`PipelineConfig.fallback`).
    """

    def __init__(self, config: PipelineConfig, side: ItemSide, ages: np.ndarray | None = None,
                 ranker: Ranker | None = None) -> None:
        self.config, self.side, self.ages, self.ranker = config, side, ages, ranker
        self.generators = config.generators()  # kept: a trained generator's fit serves a day's repeated calls

    # -- tables -------------------------------------------------------------------------------------
    def candidates(self, purchases: Purchases, users: np.ndarray, day: int) -> pd.DataFrame:
        """Candidates of ``users`` for the window starting on ``day`` from purchases before ``day``."""
        return generate_all(self.generators, purchases.before(day), users, day, self.side)

    def table(self, purchases: Purchases, users: np.ndarray, day: int,
              candidates: pd.DataFrame | None = None) -> pd.DataFrame:
        """Candidates with features for ``users`` on ``day`` (reads only purchases before ``day``).
        ``candidates``: a `candidates` table of the same day for a superset of ``users``, whose rows are reused
        instead of generating them again (a customer's candidates do not depend on the other customers)."""
        history = purchases.before(day)
        if candidates is None:
            cands = generate_all(self.generators, history, users, day, self.side)
        else:
            cands = candidates[np.isin(candidates["user"].to_numpy(), users)].reset_index(drop=True)
        return features(cands, history, day, self.side, self.ages, self.config.features)

    def labelled(self, purchases: Purchases, day: int) -> pd.DataFrame:
        """The table of the label window starting on ``day``: candidates and features of its buyers who have
        history, ``label`` 1 where the customer bought the article in the window."""
        truth = window(purchases, day, self.config.horizon_days)
        users = with_history(purchases, np.unique(truth.users), day)
        frame = self.table(purchases, users, day)
        bought = pd.DataFrame({"user": truth.users, "item": truth.items, "label": 1}).drop_duplicates()
        frame = frame.merge(bought, on=["user", "item"], how="left")
        frame["label"] = frame["label"].fillna(0).astype(np.int32)
        return frame

    def label_days(self, last_day: int) -> list[int]:
        """Starts of the ``label_windows`` label windows ending with the one starting on ``last_day``."""
        h = self.config.horizon_days
        return [last_day - j * h for j in range(self.config.label_windows)][::-1]

    # -- fitting and ranking ------------------------------------------------------------------------
    def fit(self, purchases: Purchases, last_label_day: int, *, valid_day: int | None = None,
            rounds: int | None = None, tables: dict[int, pd.DataFrame] | None = None) -> "NextPurchase":
        """Train the ranker on the label windows up to ``last_label_day``; with ``valid_day`` stop early on
        that window, with ``rounds`` use that many trees. ``tables`` caches, by day, the rows of the `labelled`
        tables the ranker learns from (customers with a purchase among their candidates; `Ranker.fit` drops
        the others anyway), so a later fit reuses them."""
        tables = {} if tables is None else tables
        for day in self.label_days(last_label_day) + ([valid_day] if valid_day is not None else []):
            if day not in tables:
                tables[day] = with_positive(self.labelled(purchases, day))
        valid = tables[valid_day] if valid_day is not None else None
        if valid is not None and not len(valid):
            raise ValueError(f"the valid window starting {np.datetime64(valid_day, 'D')} has no customer with "
                             f"history who bought one of their candidates, so the ranker has nothing to stop "
                             f"early on: choose a later test_start or a longer horizon_days")
        # the windows go to the ranker as a list: no stacked copy of them (the same model as on `stack`)
        self.ranker = Ranker(self.config.ranker).fit([tables[d] for d in self.label_days(last_label_day)], valid,
                                                     rounds=rounds)
        return self

    def recommend(self, purchases: Purchases, users: np.ndarray, day: int, k: int = K,
                  scored: pd.DataFrame | None = None) -> np.ndarray:
        """``[len(users), k]`` item codes for the window starting on ``day`` (purchases before it are read):
        ranker order for customers with history, then the fallback list to fill (alone for the others).
        ``scored``: `scored` of the same day for a superset of ``users``, reused instead of scoring again."""
        users = np.asarray(users, dtype=np.int64)
        scored = self.scored(purchases, users, day) if scored is None else scored
        fill, _ = self.config.fallback(k).top_items(purchases.before(day), day)
        return top_k(scored, users, k, fill)

    def scored(self, purchases: Purchases, users: np.ndarray, day: int,
               table: pd.DataFrame | None = None) -> pd.DataFrame:
        """``user, item, score`` (ranker scores) of the candidates of ``users`` who have history."""
        if self.ranker is None:
            raise ValueError("the pipeline's ranker is not fitted")
        if table is None:
            table = self.table(purchases, with_history(purchases, users, day), day)
        return pd.DataFrame({"user": table["user"], "item": table["item"], "score": self.ranker.predict(table)})


def with_history(purchases: Purchases, users: np.ndarray, day: int) -> np.ndarray:
    """The customers of ``users`` with at least one purchase before ``day``."""
    users = np.asarray(users, dtype=np.int64)
    return users[np.isin(users, purchases.users[purchases.days < day])]


def stack(tables: list[pd.DataFrame], n_users: int) -> pd.DataFrame:
    """Label windows' tables stacked, user codes offset per window so each window's customers are their own
    query groups."""
    frame = pd.concat(tables, ignore_index=True)  # one copy of the windows, not two
    offsets = np.repeat(np.arange(len(tables), dtype=np.int64) * n_users, [len(t) for t in tables])
    frame["user"] = frame["user"].to_numpy() + offsets
    return frame


def restrict(table: pd.DataFrame, generators: list[str], groups: tuple[str, ...]) -> pd.DataFrame:
    """``table`` as a pipeline with only ``generators`` and feature ``groups`` would have built it: rows no
    kept generator proposed are dropped with the other generators' columns and the other groups' features
    (every non-generator feature depends on its own row only, so this equals a fresh build; tested)."""
    from mmrec.fusion.ranker import FEATURE_PREFIXES

    gens = sorted({c.rsplit("_", 1)[0] for c in table.columns if c.endswith("_rank")})
    kept = table[table[[f"{g}_rank" for g in generators]].notna().any(axis=1)] if generators else table.iloc[:0]
    drop = [c for g in gens if g not in generators for c in (f"{g}_score", f"{g}_rank")]
    if "generators" not in groups:
        drop += [c for g in generators for c in (f"{g}_score", f"{g}_rank")]
    drop += [c for group, prefixes in FEATURE_PREFIXES.items() if group not in groups
             for c in table.columns if c.startswith(prefixes)]
    return kept.drop(columns=drop).reset_index(drop=True)


def window(purchases: Purchases, start: int, days: int) -> Purchases:
    """Purchases in ``[start, start + days)``."""
    return purchases._select((purchases.days >= start) & (purchases.days < start + days))


def top_k(scored: pd.DataFrame, users: np.ndarray, k: int, fill: np.ndarray) -> np.ndarray:
    """Per user in ``users`` order: the ``k`` best-scored items, then ``fill`` items not already listed."""
    best = top_per_user(scored, k)
    out = np.full((len(users), k), -1, dtype=np.int64)
    lists = {int(u): g.to_numpy() for u, g in best.groupby("user")["item"]}
    for row, user in enumerate(users):
        items = list(lists.get(int(user), ()))
        if len(items) < k:
            items += [i for i in fill if i not in set(items)][: k - len(items)]
        out[row, : len(items)] = items[:k]
    return out


def baseline(purchases: Purchases, users: np.ndarray, day: int, *, repurchase: bool, k: int = K,
             trending_window: int = 7) -> np.ndarray:
    """The heuristics beside the pipeline: recency-weighted bestsellers of the last ``trending_window``
    days, after the customer's own past articles by recency-weighted count when ``repurchase``."""
    history = purchases.before(day)
    fill, _ = Trending(n=k, window=trending_window).top_items(history, day)
    own = user_item_weights(history, users, day) if repurchase else pd.DataFrame(columns=["user", "item", "score"])
    return top_k(own, np.asarray(users, dtype=np.int64), k, fill)


def evaluate_day(predict, purchases: Purchases, day: int, days: int, k: int = K,
                 users_mask=None) -> dict[str, float]:
    """MAP@k / Recall@k of ``predict(users) -> [U, k] codes`` on the buyers of ``[day, day + days)``;
    ``users_mask(users, truth) -> bool[U]`` keeps a subgroup."""
    truth = window(purchases, day, days)
    users = np.unique(truth.users)
    if users_mask is not None:
        users = users[users_mask(users, truth)]
    if not len(users):
        return {f"map@{k}": float("nan"), f"recall@{k}": float("nan"), "users": 0}
    bought = truth.bought()
    return next_purchase_metrics(predict(users), [bought[int(u)] for u in users], k)


def purchase_shares(purchases: Purchases, day: int, days: int) -> dict[str, float]:
    """Of the distinct (customer, article) purchases in the window: the share the customer bought before
    (repurchases) and the share of articles nobody bought before (new articles)."""
    history, truth = purchases.before(day), window(purchases, day, days)
    n = purchases.n_items
    keys = distinct(truth.users * n + truth.items)  # the window's distinct (customer, article) pairs
    seen = np.isin(keys, history.users * n + history.items)  # one sort, not a Python set of every purchase
    sold = np.bincount(history.items, minlength=n) > 0
    return {"repurchase": float(np.mean(seen)), "new_article": float((~sold[keys % n]).mean())}


def buys_new_article(purchases: Purchases, day: int):
    """A ``users_mask`` for `evaluate_day`: customers who buy an article nobody bought before ``day``."""
    sold = np.bincount(purchases.before(day).items, minlength=purchases.n_items) > 0

    def mask(users: np.ndarray, truth: Purchases) -> np.ndarray:
        buyers = np.unique(truth.users[~sold[truth.items]])
        return np.isin(users, buyers)
    return mask


def run(purchases: Purchases, side: ItemSide, config: PipelineConfig, *, test_start: int,
        ages: np.ndarray | None = None, refit_all: bool = False) -> tuple[NextPurchase, dict[str, Any]]:
    """Choose on valid, report valid and test (with both baselines and each generator's recall), and return
    the test-time pipeline, or with ``refit_all`` the one refitted for the day after the data ends.

    ``test_start``: first day of the test window (days since 1970-01-01); valid is the window before it.
    """
    h = config.horizon_days
    valid_start = test_start - h
    report: dict[str, Any] = {"config": {"valid_start": str(np.datetime64(valid_start, "D")),
                                         "test_start": str(np.datetime64(test_start, "D")), "horizon_days": h}}
    started = time.perf_counter()
    tables: dict[int, pd.DataFrame] = {}
    chosen = NextPurchase(config, side, ages).fit(purchases, valid_start - h, valid_day=valid_start, tables=tables)
    rounds = chosen.ranker.best_iteration
    report["ranker"] = {"best_iteration": rounds, "importances": chosen.ranker.importances()}
    tables.pop(valid_start - config.label_windows * h, None)  # the test-time fit starts one window later
    tested = NextPurchase(config, side, ages).fit(purchases, valid_start, rounds=rounds, tables=tables)
    tables.pop(valid_start - (config.label_windows - 1) * h, None)  # and the deployed one a window later still
    for name, start, model in (("valid", valid_start, chosen), ("test", test_start, tested)):
        report[name] = day_report(model, purchases, start)
    report["fit_seconds"] = time.perf_counter() - started
    if not refit_all:
        return tested, report
    # the last label window is the data's last: with an earlier test_start, the purchases after the test
    # window are labels and history of the deployed model too
    deploy_day = max(test_start, int(purchases.days.max()) - h + 1)
    deployed = NextPurchase(config, side, ages).fit(purchases, deploy_day, rounds=rounds, tables=tables)
    report["refit"] = {"last_label_day": str(np.datetime64(deploy_day, "D")), "rounds": rounds,
                       "history_rows": len(purchases)}
    return deployed, report


def day_report(model: NextPurchase, purchases: Purchases, start: int) -> dict[str, Any]:
    """Pipeline and baseline metrics on the window starting on ``start``, the new-article subgroup, the
    repurchase / new-article shares and each generator's recall."""
    h, window_days = model.config.horizon_days, model.config.trending_window
    new = buys_new_article(purchases, start)
    truth = window(purchases, start, h)
    buyers = np.unique(truth.users)
    # the window's candidates and ranker scores once, for every buyer; the subgroups read their rows
    cands = model.candidates(purchases, buyers, start)
    ranked = with_history(purchases, buyers, start)
    scored = model.scored(purchases, ranked, start, table=model.table(purchases, ranked, start, candidates=cands))
    out: dict[str, Any] = {}
    for name, predict in (
            ("trending", lambda u: baseline(purchases, u, start, repurchase=False, trending_window=window_days)),
            ("repurchase_trending", lambda u: baseline(purchases, u, start, repurchase=True,
                                                       trending_window=window_days)),
            ("pipeline", lambda u: model.recommend(purchases, u, start, scored=scored))):
        out[name] = evaluate_day(predict, purchases, start, h)
        out[f"{name}_new_article_buyers"] = evaluate_day(predict, purchases, start, h, users_mask=new)
    del scored
    out["candidates"] = recall_by_generator(cands, truth, [g.name for g in model.generators])
    out["shares"] = purchase_shares(purchases, start, h)
    return out


# -- the pipeline as a saved, registered recommender ---------------------------------------------------
HISTORY_FILES = ("history_users.npy", "history_items.npy", "history_days.npy")
RANKER_FILE, SIDE_FILE = "ranker.txt", "pipeline.json"


@register_model("pipeline")
class PipelineModel(Recommender):
    """The next-purchase pipeline behind the `Recommender` API: it recommends for the day after its history
    ends. Its folder holds, besides config / vocabulary / seen pairs, the LightGBM model as text, the purchase
    history (int32 ``.npy``), the article side (product codes, attribute codes, content vectors) and ages.

    Items a customer bought before are candidates by design (repurchase is the strongest signal), so
    ``recommend`` keeps them unless ``exclude_seen=True`` is asked for. Built by `train`, not by ``fit``.
    """

    config_class = PipelineConfig
    excludes_seen_by_default = False  # repurchase is the strongest signal

    def __init__(self, config: PipelineConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.pipeline: NextPurchase | None = None
        self.history: Purchases | None = None

    def fit(self, train: Interactions, **_: Any) -> None:
        """Not the way to build it: the pipeline needs the catalog and the protocol (`train`)."""
        raise ValueError("the pipeline is trained with mmrec.pipeline.train(interactions, catalog, ...) "
                         "or 'mmrec train pipeline', which need the catalog and a test day")

    def attach(self, pipeline: NextPurchase, interactions: Interactions) -> "PipelineModel":
        """Use the fitted ``pipeline`` with ``interactions`` (every purchase it may read) as history."""
        self.remember(interactions)
        self.pipeline, self.history = pipeline, Purchases.from_interactions(interactions)
        return self

    @property
    def next_day(self) -> int:
        """The day recommended for: the one after the last purchase in the history."""
        return int(self.history.days.max()) + 1 if len(self.history) else 0

    def _require(self) -> NextPurchase:
        if self.pipeline is None or self.history is None:
            raise ValueError("the pipeline model has no fitted pipeline (train it with mmrec.pipeline.train)")
        return self.pipeline

    def score(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Ranker scores for each customer's candidates; every other article ranks after them by trending
        (the order `NextPurchase.recommend` fills with). The fill sits just below the batch's lowest ranker
        score: a far-off offset would merge the trending ranks into ties once the scores are float32."""
        pipeline = self._require()
        users_np = users.cpu().numpy().astype(np.int64)
        unique, inverse = np.unique(users_np, return_inverse=True)  # a customer asked twice is scored once
        day = self.next_day
        trend = trending_order_scores(self.history.before(day), day, self.config.fallback(1)).astype(np.float64)
        scored = pipeline.scored(self.history, unique, day)
        ranked = scored["score"].to_numpy(np.float64)
        floor = min(float(ranked.min()), 0.0) - 2.0 if len(ranked) else -2.0  # trend < 1: the fill < floor + 1
        scores = np.tile(trend + floor, (len(unique), 1))
        if len(scored):
            scores[np.searchsorted(unique, scored["user"].to_numpy()), scored["item"].to_numpy()] = ranked
        out = torch.as_tensor(scores[inverse].astype(np.float32), device=users.device)
        return out if items is None else out[:, items]

    @torch.no_grad()
    def recommend(self, users, k: int = K, *, candidates=None, exclude_seen: bool = False):
        """Top-``k`` per customer (see `Recommender.recommend`); bought-before articles stay unless
        ``exclude_seen``."""
        return super().recommend(users, k, candidates=candidates, exclude_seen=exclude_seen)

    def recommend_for_unknown(self, k: int = K, candidates: Any = "all") -> dict[str, Any]:
        """For a customer the model does not know: the trending articles (among ``candidates``), flagged."""
        self._require()
        day = self.next_day
        scores = trending_order_scores(self.history.before(day), day, self.config.fallback(1))
        codes = self.candidate_codes(candidates)
        pool = np.arange(self.n_items) if codes is None else codes
        order = pool[np.lexsort((pool, -scores[pool]))][:k]
        return {"items": order, "scores": scores[order], "fallback": "trending"}

    def answered_by_fallback(self, users: Sequence[int] | np.ndarray) -> np.ndarray:
        """Customers without a purchase in the history: they get the trending list alone (flagged)."""
        self._require()
        users = np.asarray(users, dtype=np.int64)
        return ~np.isin(users, with_history(self.history, users, self.next_day))

    # -- persistence --------------------------------------------------------------------------------
    def save_extra(self, folder: Path) -> None:
        """LightGBM text model, history and article/customer tables (``.npy`` / JSON; no pickle)."""
        from mmrec.io import atomic_save_npy, atomic_write_json

        pipeline = self._require()
        pipeline.ranker.save(folder / RANKER_FILE)
        for name, values in zip(HISTORY_FILES, (self.history.users, self.history.items, self.history.days)):
            atomic_save_npy(folder / name, values.astype(np.int32))
        side = pipeline.side
        names = sorted(side.attributes)
        atomic_save_npy(folder / "product_codes.npy", side.product_codes.astype(np.int64))
        atomic_save_npy(folder / "attributes.npy", np.stack([side.attributes[n] for n in names]).astype(np.int32)
                        if names else np.zeros((0, self.n_items), np.int32))
        if side.vectors is not None:
            atomic_save_npy(folder / "content_vectors.npy", side.vectors.astype(np.float32))
        if pipeline.ages is not None:
            atomic_save_npy(folder / "ages.npy", pipeline.ages.astype(np.float32))
        atomic_write_json(folder / SIDE_FILE, {"attributes": names, "content": side.vectors is not None,
                                               "ages": pipeline.ages is not None,
                                               "best_iteration": pipeline.ranker.best_iteration})

    def load_extra(self, folder: Path) -> None:
        """Read what `save_extra` wrote, checking every table against the model's sizes."""
        from mmrec.io import read_json

        meta = read_json(folder / SIDE_FILE)
        users, items, days = (load_array(folder / name) for name in HISTORY_FILES)
        if not (len(users) == len(items) == len(days)):
            raise ValueError(f"{folder}: the history files have different lengths")
        check_codes(folder / HISTORY_FILES[0], users, self.n_users)
        check_codes(folder / HISTORY_FILES[1], items, self.n_items)
        product = load_array(folder / "product_codes.npy", (self.n_items,))
        attributes = load_array(folder / "attributes.npy")
        if attributes.shape != (len(meta["attributes"]), self.n_items):
            raise ValueError(f"{folder / 'attributes.npy'}: shape {attributes.shape} does not fit "
                             f"{len(meta['attributes'])} attributes x {self.n_items} items")
        vectors = load_array(folder / "content_vectors.npy") if meta["content"] else None
        if vectors is not None and (vectors.ndim != 2 or len(vectors) != self.n_items or not np.isfinite(vectors).all()):
            raise ValueError(f"{folder / 'content_vectors.npy'}: expected finite [{self.n_items}, C] vectors")
        ages = load_array(folder / "ages.npy", (self.n_users,)) if meta["ages"] else None
        side = ItemSide(product.astype(np.int64), vectors, dict(zip(meta["attributes"], attributes)))
        ranker = Ranker.load(folder / RANKER_FILE, self.config.ranker)
        self.pipeline = NextPurchase(self.config, side, ages, ranker)
        self.history = Purchases(users.astype(np.int64), items.astype(np.int64), days.astype(np.int64),
                                 self.n_users, self.n_items)


def load_array(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A ``.npy`` table (never pickled), refused when its shape is not ``shape``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    array = np.load(path, allow_pickle=False)
    if shape is not None and array.shape != shape:
        raise ValueError(f"{path}: shape {array.shape}, expected {shape}")
    return array


def check_codes(path: Path, codes: np.ndarray, size: int) -> None:
    """Refuse codes outside ``0..size-1``."""
    if len(codes) and (codes.min() < 0 or codes.max() >= size):
        raise ValueError(f"{path}: codes outside 0..{size - 1}")


def check_windows(first: int, last: int, test_start: int, config: PipelineConfig) -> None:
    """Refuse a ``test_start`` (days since 1970-01-01) the purchases ``first``..``last`` cannot serve: a test
    window that starts after the data ends, or training label windows with no day of history before them."""
    h, day = config.horizon_days, (lambda d: np.datetime64(d, "D"))
    span = f"the purchases span {day(first)}..{day(last)}"
    if test_start > last:
        raise ValueError(f"test_start {day(test_start)}: the test window starts after the data ends ({span})")
    if test_start + h - 1 > last:  # a window half after the data: its report would read as a whole horizon's
        raise ValueError(f"test_start {day(test_start)} with horizon_days {h}: the test window runs to "
                         f"{day(test_start + h - 1)}, after the data ends ({span}); the latest test_start is "
                         f"{day(last - h + 1)}")
    earliest = test_start - (config.label_windows + 1) * h  # the first training label window (valid is one later)
    if earliest <= first:
        soonest = first + 1 + (config.label_windows + 1) * h
        hint = (f"the earliest test_start is {day(soonest)}" if soonest + h - 1 <= last else
                f"the data is too short for horizon_days {h} with label_windows {config.label_windows}")
        raise ValueError(f"test_start {day(test_start)} with horizon_days {h} and label_windows "
                         f"{config.label_windows}: the first training window would start on {day(earliest)}, "
                         f"with no history before it ({span}; {hint})")


def trending_order_scores(history: Purchases, day: int, trending: Trending) -> np.ndarray:
    """``trending``'s scores (its window, decay and counting; not its ``n``) scaled into [0, 1) by rank (a
    total order: ties broken by article code)."""
    scores = trending.scores(history, day)
    order = np.lexsort((np.arange(len(scores)), -scores))
    out = np.empty(len(scores), np.float32)
    out[order] = 1.0 - np.arange(len(scores), dtype=np.float32) / max(len(scores), 1)
    return out * 0.999


def train(interactions: Interactions, catalog: Catalog, config: PipelineConfig | dict | None = None, *,
          customers: pd.DataFrame | None = None, test_start: int | None = None, refit_all: bool = False,
          vectors: np.ndarray | None = None, content_cache: str | None = None) -> tuple[PipelineModel, dict]:
    """Fit the pipeline on H&M-style purchases and report valid / test (`run`); returns the registered
    model — the test-time one, or with ``refit_all`` the one refitted on everything — and the report.

    ``test_start`` defaults to the last ``horizon_days`` days of the data. ``vectors`` are the articles'
    content vectors (default: ``config.content`` encoder on the catalog's texts, cached in ``content_cache``).
    """
    from mmrec.config import from_dict

    config = from_dict(PipelineConfig, config) if not isinstance(config, PipelineConfig) else config
    if len(catalog) != interactions.n_items or not np.array_equal(catalog.ids, interactions.item_ids):
        raise ValueError("the catalog's ids must be the interactions' item vocabulary, in the same order")
    purchases = Purchases.from_interactions(interactions)
    if not len(purchases):
        raise ValueError("no purchases to train the pipeline on")
    first, last = int(purchases.days.min()), int(purchases.days.max())
    test_start = last - config.horizon_days + 1 if test_start is None else int(test_start)
    check_windows(first, last, test_start, config)
    wants_content = "content" in config.features or config.candidates.get("content", 0) > 0
    if wants_content and vectors is None and not config.content:
        raise ValueError("the pipeline config asks for content (a content generator or feature) but names no "
                         "content encoder: set content: minilm (or pass vectors)")
    if vectors is None and config.content and wants_content:
        from mmrec.content import content_vectors

        vectors = content_vectors(catalog, config.content, cache=content_cache)
    side = item_side(catalog, vectors)
    ages = customer_ages(customers, interactions.user_ids)
    pipeline, report = run(purchases, side, config, test_start=test_start, ages=ages, refit_all=refit_all)
    keep = np.ones(len(interactions), bool) if refit_all else interactions.timestamps // 86_400 < test_start
    model = PipelineModel(config, interactions.n_users, interactions.n_items)
    model.attach(pipeline, interactions.select(keep))
    return model, report
