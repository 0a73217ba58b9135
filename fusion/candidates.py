"""Candidate generators of the next-purchase pipeline: each proposes, per customer, a few articles with its
own score, from purchases strictly before the day being predicted.

Every generator has one method, ``generate(history, users, day, side) -> DataFrame[user, item, score]``
(at most ``n`` rows per user, higher score = more likely), and reads only ``history`` — the caller cuts it
before ``day`` (`Purchases.before`) so no generator can see the day it predicts. `generate_all` joins the
generators' lists into one candidate table with ``<name>_score`` and ``<name>_rank`` columns (NaN where a
generator did not propose the pair): the ranker's generator features.

Generators (the shape that won the H&M competition, plus content):

- `Repurchase`: what the customer bought before, by recency-weighted count.
- `Trending`: recency-weighted bestsellers of the last days; the same list for everyone (and the only one
  for a customer without history).
- `CoPurchase`: articles bought by the buyers of the customer's articles (item-to-item co-purchase).
- `ColourVariants`: other articles of the same ``product_code`` as the customer's purchases.
- `SegmentTrending`: bestsellers of the sections the customer buys in, weighted by their share there.
- `Trained`: the articles a recommender trained on the last weeks' purchases (LightGCN: graph embeddings,
  one of the winners' generators) scores highest for the customer.
- `ContentSimilar`: nearest articles to the customer's recency-weighted content profile (item vectors,
  e.g. MiniLM text or a UnifiedSpace) among articles sold lately or never sold — the only generator that
  reaches an article nobody bought yet.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mmrec.data import Interactions

DAY = 86_400
COLUMNS = ["user", "item", "score"]


@dataclass
class Purchases:
    """Purchase rows as int columns: customer code, article code, day (days since 1970-01-01, UTC)."""

    users: np.ndarray
    items: np.ndarray
    days: np.ndarray
    n_users: int
    n_items: int

    @classmethod
    def from_interactions(cls, interactions: Interactions) -> "Purchases":
        """One row per transaction line of ``interactions`` (timestamps are turned into days)."""
        return cls(interactions.users.astype(np.int64), interactions.items.astype(np.int64),
                   interactions.timestamps // DAY, interactions.n_users, interactions.n_items)

    def _select(self, mask: np.ndarray) -> "Purchases":
        return Purchases(self.users[mask], self.items[mask], self.days[mask], self.n_users, self.n_items)

    def before(self, day: int) -> "Purchases":
        """Rows strictly before ``day``: everything a prediction for ``day`` may read. Where the rows are in
        day order (as a transactions file is) these are views of the first rows, not a copy of them."""
        if len(self.days) and np.all(self.days[1:] >= self.days[:-1]):
            end = int(np.searchsorted(self.days, day, side="left"))
            return Purchases(self.users[:end], self.items[:end], self.days[:end], self.n_users, self.n_items)
        return self._select(self.days < day)

    def on(self, day: int) -> "Purchases":
        """Rows on ``day`` (the labels of that day)."""
        return self._select(self.days == day)

    def __len__(self) -> int:
        return len(self.users)

    def bought(self) -> dict[int, np.ndarray]:
        """``{user: distinct item codes}`` of these rows."""
        frame = pd.DataFrame({"user": self.users, "item": self.items}).drop_duplicates()
        return {int(u): g.to_numpy() for u, g in frame.groupby("user")["item"]}


@dataclass
class ItemSide:
    """What is known about articles besides purchases: ``product_code`` per article (an int code; colour
    variants share it), content vectors (``[n_items, C]``, L2-normalised; None = no content) and
    categorical attributes as int codes."""

    product_codes: np.ndarray
    vectors: np.ndarray | None = None
    attributes: dict[str, np.ndarray] = field(default_factory=dict)


def distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values by one sort (``np.unique``'s hash path is slow on large int arrays)."""
    values = np.sort(np.asarray(values), kind="stable")
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def recency_weight(days: np.ndarray, day: int) -> np.ndarray:
    """Weight of a purchase ``day - days`` days before ``day``: 1 for yesterday, 1/2 the day before, ..."""
    return 1.0 / np.maximum(day - days, 1).astype(np.float64)


def top_per_user(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` highest-scoring rows per user (ties broken by item code, so results are deterministic)."""
    if not len(frame):
        return frame[COLUMNS].reset_index(drop=True)
    frame = frame.sort_values(["user", "score", "item"], ascending=[True, False, True], kind="stable")
    return frame[frame.groupby("user").cumcount() < n][COLUMNS].reset_index(drop=True)


def empty() -> pd.DataFrame:
    """A candidate table with no rows."""
    return pd.DataFrame({"user": np.zeros(0, np.int64), "item": np.zeros(0, np.int64), "score": np.zeros(0)})


def user_item_weights(history: Purchases, users: np.ndarray, day: int) -> pd.DataFrame:
    """Recency-weighted purchase weight per (user, item) of ``users``' history rows."""
    mask = np.isin(history.users, users)
    frame = pd.DataFrame({"user": history.users[mask], "item": history.items[mask],
                          "score": recency_weight(history.days[mask], day)})
    return frame.groupby(["user", "item"], as_index=False)["score"].sum()


@dataclass
class Repurchase:
    """The customer's own past articles, by recency-weighted purchase count."""

    n: int = 24
    name: str = "repurchase"

    def generate(self, history: Purchases, users: np.ndarray, day: int, side: ItemSide) -> pd.DataFrame:
        return top_per_user(user_item_weights(history, users, day), self.n)


def trending_scores(history: Purchases, day: int, window: int, *, decay: float = 1.0,
                    buyers: bool = False) -> np.ndarray:
    """Per article, purchases of the last ``window`` days before ``day``, each weighted by
    ``recency_weight ** decay`` (a larger ``decay`` leans on the last days). ``buyers``: count a customer's
    units of an article on one day once (buyers per day rather than units sold), so one customer buying
    several units of an article does not lift it for everyone."""
    mask = history.days >= day - window
    items, days = history.items[mask], history.days[mask]
    if buyers and len(items):
        span = max(window + 1, 1)
        keys = distinct(((history.users[mask] * history.n_items + items) * span) + (day - 1 - days))
        days = day - 1 - keys % span
        items = (keys // span) % history.n_items
    weights = recency_weight(days, day) ** decay
    return np.bincount(items, weights=weights, minlength=history.n_items)


@dataclass
class Trending:
    """Recency-weighted bestsellers of the last ``window`` days, the same ``n`` for every customer;
    ``decay`` and ``buyers`` as in `trending_scores` (the defaults are the plain recency-weighted units)."""

    n: int = 48
    window: int = 7
    name: str = "trending"
    decay: float = 1.0
    buyers: bool = False

    def scores(self, history: Purchases, day: int) -> np.ndarray:
        """Every article's trending score (`trending_scores` with this list's window, decay and counting)."""
        return trending_scores(history, day, self.window, decay=self.decay, buyers=self.buyers)

    def top_items(self, history: Purchases, day: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best articles and their scores (none when nothing sold in the window)."""
        scores = self.scores(history, day)
        order = np.lexsort((np.arange(len(scores)), -scores))[: self.n]
        order = order[scores[order] > 0]
        return order, scores[order]

    def generate(self, history: Purchases, users: np.ndarray, day: int, side: ItemSide) -> pd.DataFrame:
        items, scores = self.top_items(history, day)
        return pd.DataFrame({"user": np.repeat(users, len(items)), "item": np.tile(items, len(users)),
                             "score": np.tile(scores, len(users))})


@dataclass
class CoPurchase:
    """Articles bought by customers who bought the customer's articles: score(u, j) = sum over the
    customer's recency-weighted articles i of P(j | i) (co-buyers of i and j over buyers of i), counted over
    the last ``window`` days of purchases. ``neighbours`` > 0 keeps only each article's that many most
    likely co-purchases (ties at the cut kept), item-kNN style: a customer's scores then reach at most
    ``neighbours`` articles per article bought, not every co-buyer's every purchase (a share of the
    catalogue that grows with the shop). ``batch``: customers scored at a time (bounds the memory of the
    customer × article score matrix; the result does not depend on it)."""

    n: int = 24
    window: int = 28
    name: str = "copurchase"
    batch: int = 1024
    neighbours: int = 0

    def generate(self, history: Purchases, users: np.ndarray, day: int, side: ItemSide) -> pd.DataFrame:
        recent = history._select(history.days >= day - self.window)
        if not len(recent):
            return empty()
        pairs = distinct(recent.users * history.n_items + recent.items)
        buyers = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs // history.n_items, pairs % history.n_items)),
                               shape=(history.n_users, history.n_items))
        cooc = (buyers.T @ buyers).tocsr()
        cooc.setdiag(0)
        counts = np.asarray(buyers.sum(0)).ravel()
        cond = (sp.diags(1.0 / np.maximum(counts, 1)) @ cooc).tocsr()  # row i: P(j | i)
        if self.neighbours > 0:
            cond = top_per_row(cond, self.neighbours)
        weights = user_item_weights(history, users, day)
        if not len(weights):
            return empty()
        codes, rows = np.unique(weights["user"].to_numpy(), return_inverse=True)
        profile = sp.csr_matrix((weights["score"].to_numpy(), (rows, weights["item"].to_numpy())),
                                shape=(len(codes), history.n_items))
        # A customer's scores reach every co-buyer of every article they ever bought (a share of the
        # catalogue that grows with the shop), so the product is built and cut to the top n a block of
        # customers at a time.
        frames = [top_from_sparse(profile[start:start + self.batch] @ cond, codes[start:start + self.batch], self.n)
                  for start in range(0, len(codes), self.batch)]
        return pd.concat(frames, ignore_index=True) if frames else empty()


def top_from_sparse(scores: sp.spmatrix, user_codes: np.ndarray, n: int) -> pd.DataFrame:
    """The ``n`` best positive columns per row of a sparse score matrix whose rows are ``user_codes``: the
    same rows, in the same order, as `top_per_user` of all its positive entries.

    Sorting every entry would sort the whole matrix (for co-purchase, many times n entries per customer);
    instead each row's n-th largest score is found first (`row_nth_largest`), and only the entries at or
    above it (ties included) are sorted."""
    csr = sp.csr_matrix(scores)
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    data = csr.data.astype(np.float64)
    keep = data > 0
    rows, items, data = rows[keep], csr.indices[keep].astype(np.int64), data[keep]
    if n < 1 or not len(data):
        return empty()
    keep = data >= row_nth_largest(rows, data, csr.shape[0], n)[rows]
    frame = pd.DataFrame({"user": np.asarray(user_codes)[rows[keep]], "item": items[keep], "score": data[keep]})
    return top_per_user(frame, n)


def top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """``matrix`` with only each row's ``k`` largest entries (every entry tied with the k-th kept)."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    keep = matrix.data >= row_nth_largest(rows, matrix.data, matrix.shape[0], k)[rows]
    return sp.csr_matrix((matrix.data[keep], (rows[keep], matrix.indices[keep])), shape=matrix.shape)


def row_nth_largest(rows: np.ndarray, values: np.ndarray, n_rows: int, n: int) -> np.ndarray:
    """Per row, the ``n``-th largest of ``values`` (grouped by ascending ``rows``); -inf for a row with at
    most ``n`` values. Rows of similar length are padded into one matrix and partitioned together, so the
    work is linear in the values (at most twice them, padding included)."""
    out = np.full(n_rows, -np.inf)
    lengths = np.bincount(rows, minlength=n_rows)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    long = lengths > n
    if not long.any():
        return out
    level = np.zeros(n_rows, np.int64)
    level[long] = np.floor(np.log2(lengths[long])).astype(np.int64)  # rows of length in [2^l, 2^(l+1))
    for lev in np.unique(level[long]):
        group = np.flatnonzero(long & (level == lev))
        width = int(lengths[group].max())
        pos = np.repeat(np.arange(len(group)), lengths[group])
        col = np.arange(len(pos)) - np.repeat(np.r_[0, np.cumsum(lengths[group])[:-1]], lengths[group])
        padded = np.full((len(group), width), -np.inf)
        padded[pos, col] = values[np.repeat(starts[group], lengths[group]) + col]
        out[group] = -np.partition(-padded, n - 1, axis=1)[:, n - 1]
    return out


@dataclass
class ColourVariants:
    """Other articles of the product codes the customer bought (colour and pattern variants), scored by the
    customer's recency weight of the product times the variant's share of the last ``window`` days' sales."""

    n: int = 12
    window: int = 7
    name: str = "colour_variants"

    def generate(self, history: Purchases, users: np.ndarray, day: int, side: ItemSide) -> pd.DataFrame:
        weights = user_item_weights(history, users, day)
        if not len(weights):
            return empty()
        weights["product"] = side.product_codes[weights["item"].to_numpy()]
        per_product = weights.groupby(["user", "product"], as_index=False)["score"].sum()
        popularity = trending_scores(history, day, self.window) + 1e-3  # unsold variants still rank
        variants = pd.DataFrame({"item": np.arange(history.n_items), "product": side.product_codes,
                                 "pop": popularity})
        frame = per_product.merge(variants, on="product")
        frame["score"] = frame["score"] * frame["pop"]
        own = weights.set_index(["user", "item"]).index
        frame = frame[~frame.set_index(["user", "item"]).index.isin(own)]  # repurchase covers those
        return top_per_user(frame, self.n)


@dataclass
class SegmentTrending:
    """Bestsellers of the customer's own segments: score(u, i) = the customer's share of purchases in
    article i's ``attribute`` value (e.g. its section: ladies' basics, kids, men) × i's trending score."""

    n: int = 24
    window: int = 7
    attribute: str = "section_name"
    name: str = "segment_trending"

    def generate(self, history: Purchases, users: np.ndarray, day: int, side: ItemSide) -> pd.DataFrame:
        if self.attribute not in side.attributes:
            return empty()
        values = side.attributes[self.attribute]
        mask = np.isin(history.users, users)
        own = pd.DataFrame({"user": history.users[mask], "value": values[history.items[mask]]})
        if not len(own):
            return empty()
        share = own.groupby(["user", "value"]).size() / own.groupby("user").size()
        share = share.rename("share").reset_index()
        trend = trending_scores(history, day, self.window)
        sold = np.flatnonzero(trend > 0)
        best = pd.DataFrame({"item": sold, "value": values[sold], "trend": trend[sold]})
        best = best.sort_values(["value", "trend", "item"], ascending=[True, False, True], kind="stable")
        best = best[best.groupby("value").cumcount() < self.n]
        frame = share.merge(best, on="value")
        frame["score"] = frame["share"] * frame["trend"]
        return top_per_user(frame, self.n)


@dataclass
class ContentSimilar:
    """Articles nearest (cosine) to the customer's recency-weighted mean content vector, among articles
    sold in the last ``window`` days or never sold before ``day`` (new articles). Needs ``side.vectors``;
    proposes nothing without them."""

    n: int = 24
    window: int = 7
    name: str = "content"
    batch: int = 2048

    def generate(self, history: Purchases, users: np.ndarray, day: int, side: ItemSide) -> pd.DataFrame:
        if side.vectors is None:
            return empty()
        weights = user_item_weights(history, users, day)
        if not len(weights):
            return empty()
        pool = content_pool(history, day, self.window)
        codes, rows = np.unique(weights["user"].to_numpy(), return_inverse=True)
        profile = sp.csr_matrix((weights["score"].to_numpy(), (rows, weights["item"].to_numpy())),
                                shape=(len(codes), history.n_items)) @ side.vectors
        profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-12)
        pool_vectors = side.vectors[pool]
        n = min(self.n, len(pool))
        frames = []
        for start in range(0, len(codes), self.batch):
            sims = profile[start:start + self.batch] @ pool_vectors.T
            top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
            frames.append(pd.DataFrame({"user": np.repeat(codes[start:start + self.batch], n),
                                        "item": pool[top].ravel(),
                                        "score": np.take_along_axis(sims, top, 1).ravel().astype(np.float64)}))
        return top_per_user(pd.concat(frames, ignore_index=True), self.n)


def fingerprint(history: Purchases, start: int, end: int) -> str:
    """A digest of the purchase rows in days ``[start, end)``: what a fit on them depends on."""
    import hashlib

    mask = (history.days >= start) & (history.days < end)
    digest = hashlib.blake2b(digest_size=16)
    for column in (history.users, history.items, history.days):
        digest.update(np.ascontiguousarray(column[mask], dtype=np.int64).tobytes())
    return digest.hexdigest()


@dataclass
class Trained:
    """Articles an mmrec recommender scores highest for the customer. The model (``model``, a registered name
    of one that learns from (customer, article) pairs alone: ``lightgcn`` by default, ``bpr``, ``itemknn``; its
    settings ``config``) is trained from scratch on the distinct pairs of the last ``window`` days before
    ``day``, so, like every generator, it never sees the day it predicts. Articles the customer bought stay in
    (a repurchase is a next purchase too); a customer without a pair in the window gets nothing (their vector
    was never trained). ``epochs``, ``lr``, ``batch_size``, ``seed``: the fit, through the one training loop
    (`mmrec.train.fit`); ``batch``: customers scored at a time. One fit per predicted day, kept for the next
    call on the same history (the pipeline asks for a day's candidates more than once): an instance serves one
    history at a time."""

    n: int = 24
    window: int = 28
    model: str = "lightgcn"
    config: dict = field(default_factory=dict)
    epochs: int = 20
    lr: float = 5e-3
    batch_size: int = 4096
    seed: int = 0
    name: str = "lightgcn"
    batch: int = 2048
    _fitted: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def fitted(self, history: Purchases, day: int):
        """The model trained on ``history``'s last ``window`` days before ``day`` (None when the window is
        empty); the pairs it trained on are its seen items."""
        key = (day, history.n_users, history.n_items, fingerprint(history, day - self.window, day))
        if self._fitted is not None and self._fitted[0] == key:
            return self._fitted[1]
        import torch
        from accelerate.utils import set_seed

        from mmrec.recommender import create_model
        from mmrec.train import TrainConfig

        recent = history._select((history.days >= day - self.window) & (history.days < day))
        result = None
        if len(recent):
            pairs = distinct(recent.users * history.n_items + recent.items)
            train = Interactions(pairs // history.n_items, pairs % history.n_items,
                                 np.arange(history.n_users).astype(str), np.arange(history.n_items).astype(str))
            set_seed(self.seed)  # the initial weights too, not only the batch order
            result = create_model(self.model, history.n_users, history.n_items, dict(self.config))
            with torch.enable_grad():  # even where the caller scores without them (a saved pipeline's recommend)
                result.fit(train, train_config=TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                                           seed=self.seed, progress=False))
            result.eval()
        self._fitted = (key, result)
        return result

    def generate(self, history: Purchases, users: np.ndarray, day: int, side: ItemSide) -> pd.DataFrame:
        import torch

        model = self.fitted(history, day)
        if model is None or self.n < 1:
            return empty()
        codes = distinct(np.asarray(users, np.int64))
        codes = codes[np.diff(model.seen_indptr.cpu().numpy())[codes] > 0]  # the others' vectors never trained
        frames = []
        with torch.no_grad():
            for start in range(0, len(codes), self.batch):
                block = codes[start:start + self.batch]
                items, scores = model.recommend(block, self.n, exclude_seen=False)
                frames.append(pd.DataFrame({"user": np.repeat(block, items.shape[1]),
                                            "item": items.cpu().numpy().ravel(),
                                            "score": scores.cpu().numpy().ravel().astype(np.float64)}))
        return top_per_user(pd.concat(frames, ignore_index=True), self.n) if frames else empty()


def content_pool(history: Purchases, day: int, window: int) -> np.ndarray:
    """Articles content may propose: sold in the last ``window`` days before ``day``, or never sold before it."""
    sold = np.bincount(history.items, minlength=history.n_items) > 0
    recent = np.bincount(history.items[history.days >= day - window], minlength=history.n_items) > 0
    return np.flatnonzero(recent | ~sold)


GENERATORS = {"repurchase": Repurchase, "trending": Trending, "copurchase": CoPurchase,
              "colour_variants": ColourVariants, "segment_trending": SegmentTrending, "content": ContentSimilar,
              "lightgcn": Trained}


def generate_all(generators: list, history: Purchases, users: np.ndarray, day: int,
                 side: ItemSide) -> pd.DataFrame:
    """The union of every generator's candidates for ``users`` on ``day``: one row per (user, item) with
    ``<name>_score`` and ``<name>_rank`` (1 = the generator's best for that user; NaN = not proposed).

    ``history`` must hold only purchases before ``day``; a generator proposing nothing is fine.
    """
    if len(history) and history.days.max() >= day:
        raise ValueError(f"history reaches day {int(history.days.max())}, on or after the predicted day {day}; "
                         f"pass history.before(day)")
    users = distinct(np.asarray(users, dtype=np.int64))
    n = max(history.n_items, 1)
    found = []
    for gen in generators:
        frame = gen.generate(history, users, day, side)
        rank = frame.groupby("user").cumcount().to_numpy(np.float32) + 1
        found.append((gen.name, frame["user"].to_numpy(np.int64) * n + frame["item"].to_numpy(np.int64),
                      frame["score"].to_numpy(np.float64), rank))
    keys = distinct(np.concatenate([f[1] for f in found])) if found else np.zeros(0, np.int64)
    table = pd.DataFrame({"user": keys // n, "item": keys % n})
    for name, key, score, rank in found:
        at = np.searchsorted(keys, key)
        for column, values in ((f"{name}_score", score), (f"{name}_rank", rank)):
            filled = np.full(len(keys), np.nan, dtype=values.dtype)
            filled[at] = values
            table[column] = filled
    return table


def recall_by_generator(candidates: pd.DataFrame, truth: Purchases, names: list[str]) -> dict[str, dict]:
    """Per generator (and for the union): share of ``truth``'s distinct (user, item) purchases proposed,
    and candidates per user, over the users of ``candidates``."""
    users = candidates["user"].unique()
    pairs = pd.DataFrame({"user": truth.users, "item": truth.items}).drop_duplicates()
    pairs = pairs[pairs["user"].isin(users)]
    joined = pairs.merge(candidates, on=["user", "item"], how="left", indicator=True)
    out = {}
    for name in names:
        proposed = int(candidates[f"{name}_rank"].notna().sum())
        out[name] = {"recall": float(joined[f"{name}_rank"].notna().mean()) if len(joined) else 0.0,
                     "per_user": proposed / max(len(users), 1)}
    out["union"] = {"recall": float((joined["_merge"] == "both").mean()) if len(joined) else 0.0,
                    "per_user": len(candidates) / max(len(users), 1)}
    return out
