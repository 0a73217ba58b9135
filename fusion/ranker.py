"""The learned stage of the next-purchase pipeline: features of each (customer, candidate article) pair and
a LightGBM lambdarank model over them.

`features` reads only ``history`` (purchases before the predicted day, as the generators do), the static
article side (`ItemSide`) and customer side data, so a label day's features never see that day. Feature
groups (each can be switched off for ablations):

- ``generators``: every generator's score and rank (from `generate_all`);
- ``customer``: purchase count, active days, days since the last purchase, purchases in the last week, age;
- ``article``: recency-weighted sales, sales yesterday / last 3 / 7 days, distinct buyers last week, days
  since first and last sale (age in the catalogue), and categorical attributes (product type, colour, ...);
- ``affinity``: the customer's purchases of this article and of its product code, days since they bought
  it, and their share of purchases in the article's product group and index;
- ``content``: cosine similarity of the article's content vector to the customer's content profile.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mmrec.config import check_at_least
from mmrec.fusion.candidates import ItemSide, Purchases, distinct, recency_weight, trending_scores

FEATURE_GROUPS = ("generators", "customer", "article", "affinity", "content")
# Column prefixes of the groups other than "generators" (whose columns are <generator>_score / _rank).
FEATURE_PREFIXES = {"customer": ("c_",), "article": ("a_",), "affinity": ("ui_",), "content": ("content_sim",)}
CATEGORICAL = ("product_type_name", "product_group_name", "colour_group_name", "index_name", "garment_group_name",
               "graphical_appearance_name", "section_name")


def customer_features(history: Purchases, users: np.ndarray, day: int, ages: np.ndarray | None) -> pd.DataFrame:
    """Per customer of ``users``: rows, active days, days since last purchase, rows in the last 7 days, age."""
    mask = np.isin(history.users, users)
    frame = pd.DataFrame({"user": history.users[mask], "day": history.days[mask]})
    grouped = frame.groupby("user")["day"]
    out = pd.DataFrame({"user": users}).set_index("user")
    out["c_rows"] = grouped.size()
    out["c_days"] = grouped.nunique()
    out["c_since_last"] = day - grouped.max()
    out["c_rows_7"] = frame[frame["day"] >= day - 7].groupby("user").size()
    out = out.fillna({"c_rows": 0, "c_days": 0, "c_rows_7": 0})
    out["c_age"] = ages[users] if ages is not None else np.nan
    return out.reset_index()


def article_features(history: Purchases, day: int, side: ItemSide) -> pd.DataFrame:
    """Per article: sales by recency, distinct recent buyers, days since first / last sale, attributes."""
    n = history.n_items
    out = pd.DataFrame({"item": np.arange(n)})
    out["a_trend"] = trending_scores(history, day, 7)
    for window in (1, 3, 7):
        recent = history.days >= day - window
        out[f"a_sales_{window}"] = np.bincount(history.items[recent], minlength=n)
    out["a_sales_all"] = np.bincount(history.items, minlength=n)
    week = history.days >= day - 7
    pairs = distinct(history.users[week] * n + history.items[week])
    out["a_buyers_7"] = np.bincount(pairs % n, minlength=n)
    first = np.full(n, np.nan)
    last = np.full(n, np.nan)
    if len(history):
        order = np.argsort(history.days, kind="stable")
        last[history.items[order]] = history.days[order]  # later rows overwrite: the last day
        first[history.items[order[::-1]]] = history.days[order[::-1]]
    out["a_since_first"] = day - first
    out["a_since_last"] = day - last
    for name, codes in side.attributes.items():
        out[f"a_{name}"] = codes
    return out


def affinity_features(cands: pd.DataFrame, history: Purchases, day: int, side: ItemSide,
                      groups: tuple[str, ...] = ("product_group_name", "index_name")) -> pd.DataFrame:
    """Per candidate pair: the customer's purchases of the article and of its product code, days since they
    last bought it, and their share of purchases in the article's ``groups`` attributes."""
    users = cands["user"].unique()
    mask = np.isin(history.users, users)
    hist = pd.DataFrame({"user": history.users[mask], "item": history.items[mask], "day": history.days[mask]})
    out = cands[["user", "item"]].copy()
    per_item = hist.groupby(["user", "item"])["day"].agg(["size", "max"]).rename(
        columns={"size": "ui_count", "max": "ui_last"})
    out = out.merge(per_item.reset_index(), on=["user", "item"], how="left")
    out["ui_since"] = day - out.pop("ui_last")
    out["ui_count"] = out["ui_count"].fillna(0)
    hist["product"] = side.product_codes[hist["item"].to_numpy()]
    out["product"] = side.product_codes[out["item"].to_numpy()]
    per_product = hist.groupby(["user", "product"]).size().rename("ui_product_count").reset_index()
    out = out.merge(per_product, on=["user", "product"], how="left").drop(columns="product")
    out["ui_product_count"] = out["ui_product_count"].fillna(0)
    totals = hist.groupby("user").size().rename("total")
    for name in groups:
        if name not in side.attributes:
            continue
        hist["g"] = side.attributes[name][hist["item"].to_numpy()]
        out["g"] = side.attributes[name][out["item"].to_numpy()]
        share = (hist.groupby(["user", "g"]).size() / totals).rename(f"ui_share_{name}").reset_index()
        out = out.merge(share, on=["user", "g"], how="left").drop(columns="g")
        out[f"ui_share_{name}"] = out[f"ui_share_{name}"].fillna(0)
    return out


def content_features(cands: pd.DataFrame, history: Purchases, day: int, side: ItemSide) -> np.ndarray:
    """Cosine similarity of each candidate article to its customer's recency-weighted content profile
    (NaN without history or content)."""
    sims = np.full(len(cands), np.nan)
    if side.vectors is None or not len(cands):
        return sims
    users = cands["user"].to_numpy()
    codes = distinct(users)
    mask = np.isin(history.users, codes)
    profile = np.zeros((len(codes), side.vectors.shape[1]), np.float64)
    rows = np.searchsorted(codes, history.users[mask])
    np.add.at(profile, rows, side.vectors[history.items[mask]] * recency_weight(history.days[mask], day)[:, None])
    norms = np.linalg.norm(profile, axis=1)
    profile /= np.maximum(norms, 1e-12)[:, None]
    row = np.searchsorted(codes, users)
    item_vectors = side.vectors[cands["item"].to_numpy()]
    sims = np.einsum("ij,ij->i", profile[row], item_vectors)
    sims[norms[row] == 0] = np.nan
    return sims


def features(cands: pd.DataFrame, history: Purchases, day: int, side: ItemSide, ages: np.ndarray | None = None,
             groups: tuple[str, ...] = FEATURE_GROUPS) -> pd.DataFrame:
    """The ranker's input: ``cands`` (from `generate_all`, sorted by user) with the feature ``groups`` joined;
    ``user`` and ``item`` stay as the first two columns (they are not features)."""
    unknown = set(groups) - set(FEATURE_GROUPS)
    if unknown:
        raise ValueError(f"unknown feature group(s) {sorted(unknown)}; known: {list(FEATURE_GROUPS)}")
    if len(history) and history.days.max() >= day:
        raise ValueError(f"history reaches day {int(history.days.max())}, on or after the predicted day {day}")
    out = (cands if "generators" in groups else cands[["user", "item"]]).reset_index(drop=True)
    users, items = out["user"].to_numpy(), out["item"].to_numpy()
    parts = [out]
    if "customer" in groups:
        per_user = customer_features(history, distinct(users), day, ages).set_index("user")
        parts.append(per_user.reindex(users).reset_index(drop=True))
    if "article" in groups:
        parts.append(article_features(history, day, side).drop(columns="item").iloc[items].reset_index(drop=True))
    if "affinity" in groups:
        parts.append(affinity_features(out, history, day, side).drop(columns=["user", "item"]))
    if "content" in groups:
        parts.append(pd.DataFrame({"content_sim": content_features(out, history, day, side)}))
    return pd.concat([as_float32(part) for part in parts], axis=1)


def as_float32(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its feature columns as float32: the ranker reads them as float32 anyway (`Ranker.matrix`),
    so the model and its scores are the same, and a label table takes about half the memory."""
    cast = {c: np.float32 for c in feature_columns(frame) if frame[c].dtype != np.float32}
    return frame.astype(cast) if cast else frame


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The feature columns of a `features` table (everything but user, item and label)."""
    return [c for c in frame.columns if c not in ("user", "item", "label")]


def group_sizes(users: np.ndarray) -> np.ndarray:
    """Rows per consecutive user (rows must be sorted by user)."""
    if not len(users):
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return np.diff(np.r_[starts, len(users)])


@dataclass
class RankerConfig:
    """LightGBM settings; ``objective`` is ``lambdarank`` (pairwise, per customer) or ``binary`` (pointwise
    purchase probability); ``seed`` drives bagging and feature sampling."""

    objective: str = "lambdarank"
    n_estimators: int = 500
    learning_rate: float = 0.03
    num_leaves: int = 15
    min_child_samples: int = 20
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    early_stopping_rounds: int = 50
    seed: int = 0
    n_jobs: int = 1

    def __post_init__(self) -> None:
        """LightGBM checks these only once the data is loaded and the candidates built, and ends in an internal
        error: refused here, naming the setting (0 for ``n_jobs`` or ``early_stopping_rounds`` would quietly
        mean every core, or no early stopping)."""
        if self.objective not in ("lambdarank", "binary"):
            raise ValueError(f"RankerConfig.objective must be 'lambdarank' or 'binary', got {self.objective!r}")
        check_at_least(self, n_estimators=1, learning_rate=1e-12, num_leaves=2, min_child_samples=1,
                       early_stopping_rounds=1, seed=0, n_jobs=1)
        for name in ("subsample", "colsample_bytree"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"RankerConfig.{name} must be in (0, 1], got {getattr(self, name)!r}")


class Ranker:
    """A LightGBM lambdarank model over `features` tables; saved as LightGBM's own text model (data)."""

    def __init__(self, config: RankerConfig | None = None) -> None:
        self.config = config or RankerConfig()
        self.booster = None
        self.columns: list[str] = []
        self.best_iteration: int | None = None

    def fit(self, train: pd.DataFrame | Sequence[pd.DataFrame], valid: pd.DataFrame | None = None, *,
            rounds: int | None = None) -> "Ranker":
        """Fit on ``train``: a `features` table with a 0/1 ``label``, sorted by user, or a list of them, one per
        label window, each window's customers their own query groups (the same model as on their
        `mmrec.pipeline.stack`, without a stacked copy of the windows in memory). Customers without a
        positive are dropped: they carry no ranking signal. With ``valid``, stop early on its MAP@12 and
        keep the best iteration; ``rounds`` fixes the number of trees instead (a refit)."""
        import lightgbm as lgb

        cfg = self.config
        parts = [with_positive(t) for t in ([train] if isinstance(train, pd.DataFrame) else train)]
        if not sum(map(len, parts)):
            raise ValueError("no training customer has a purchase among their candidates; cannot train the ranker")
        self.columns = list(dict.fromkeys(c for part in parts for c in feature_columns(part)))
        if cfg.objective not in ("lambdarank", "binary"):
            raise ValueError(f"RankerConfig.objective must be 'lambdarank' or 'binary', got {cfg.objective!r}")
        params = {"objective": cfg.objective, "learning_rate": cfg.learning_rate, "num_leaves": cfg.num_leaves,
                  "min_data_in_leaf": cfg.min_child_samples, "bagging_fraction": cfg.subsample, "bagging_freq": 1,
                  "feature_fraction": cfg.colsample_bytree, "seed": cfg.seed, "num_threads": cfg.n_jobs,
                  "deterministic": True, "force_row_wise": True, "verbose": -1,
                  "metric": "map", "eval_at": [12]}
        labels = np.concatenate([part["label"].to_numpy() for part in parts])
        groups = np.concatenate([group_sizes(part["user"].to_numpy()) for part in parts])
        data = lgb.Dataset(self.matrix(parts), labels, group=groups, feature_name=self.columns, free_raw_data=True)
        kwargs: dict = {}
        if valid is not None and rounds is None:
            valid = with_positive(valid)
            kwargs = {"valid_sets": [lgb.Dataset(self.matrix(valid), valid["label"].to_numpy(), reference=data,
                                                 group=group_sizes(valid["user"].to_numpy()))],
                      "callbacks": [lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)]}
        self.booster = lgb.train(params, data, num_boost_round=rounds or cfg.n_estimators, **kwargs)
        self.best_iteration = (self.booster.best_iteration or None) if kwargs else None
        self.best_iteration = self.best_iteration or self.booster.current_iteration()
        return self

    def matrix(self, frame: pd.DataFrame | Sequence[pd.DataFrame]) -> np.ndarray:
        """The model's feature columns of ``frame`` (or of several frames, one after the other) as one
        C-ordered float32 matrix (a missing column is all NaN), filled a column at a time: no copy of the
        frames on the way, and LightGBM takes it without another."""
        frames = [frame] if isinstance(frame, pd.DataFrame) else list(frame)
        out = np.empty((sum(map(len, frames)), len(self.columns)), np.float32)
        start = 0
        for part in frames:
            rows = slice(start, start + len(part))
            for j, column in enumerate(self.columns):
                out[rows, j] = part[column].to_numpy() if column in part else np.nan
            start += len(part)
        return out

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Scores of the rows of a `features` table (the model's columns; missing ones are NaN)."""
        if self.booster is None:
            raise ValueError("the ranker is not fitted")
        return self.booster.predict(self.matrix(frame), num_iteration=self.best_iteration)

    def importances(self) -> dict[str, float]:
        """Total gain per feature, largest first."""
        gains = self.booster.feature_importance(importance_type="gain")
        return dict(sorted(zip(self.columns, map(float, gains)), key=lambda kv: -kv[1]))

    def save(self, path: str | Path) -> None:
        """LightGBM's text model (the best iteration only)."""
        from mmrec.io import atomic_write_text

        atomic_write_text(Path(path), self.booster.model_to_string(num_iteration=self.best_iteration))

    @classmethod
    def load(cls, path: str | Path, config: RankerConfig | None = None) -> "Ranker":
        """A ranker from `save`'s text file."""
        import lightgbm as lgb

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: no saved ranker there")
        ranker = cls(config)
        ranker.booster = lgb.Booster(model_str=path.read_text())
        ranker.columns = list(ranker.booster.feature_name())
        ranker.best_iteration = ranker.booster.current_iteration()
        return ranker


def with_positive(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the customers with at least one positive label (``frame`` itself when that is every row)."""
    has = (frame.groupby("user")["label"].transform("max") > 0).to_numpy()
    if has.all() and frame.index.equals(pd.RangeIndex(len(frame))):
        return frame
    return frame[has].reset_index(drop=True)
