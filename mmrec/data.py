"""The data model every room shares: a `Catalog` of items and a table of `Interactions`.

Both are plain columnar containers (numpy arrays and lists) with stable id vocabularies: external ids
stay strings exactly as the source spells them (H&M's ``0108775015`` keeps its leading zero), and every
model works on dense integer codes ``0..n-1`` into those vocabularies.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

KINDS = ("purchase", "view", "click", "cart")


def _as_str_array(values: Iterable, name: str) -> np.ndarray:
    arr = np.asarray([str(v) for v in values], dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _index_of(vocab_index: dict[str, int], ids: Iterable, what: str) -> np.ndarray:
    ids = [str(i) for i in ids]
    missing = [i for i in ids if i not in vocab_index]
    if missing:
        raise KeyError(f"{len(missing)} unknown {what} id(s), e.g. {missing[:3]}")
    return np.fromiter((vocab_index[i] for i in ids), dtype=np.int64, count=len(ids))


@dataclass
class Catalog:
    """Items with their content: id, title, free text, optional image path and categorical attributes.

    Row ``i`` of every column describes item code ``i``. Missing images (``None``) and empty texts are
    normal and kept; `summary` counts them.
    """

    ids: np.ndarray
    titles: list[str]
    texts: list[str]
    image_paths: list[str | None]
    attributes: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = _as_str_array(self.ids, "Catalog.ids")
        n = len(self.ids)
        self.titles = ["" if t is None else str(t) for t in self.titles]
        self.texts = ["" if t is None else str(t) for t in self.texts]
        self.image_paths = [None if (p is None or p == "") else str(p) for p in self.image_paths]
        for name, col in (("titles", self.titles), ("texts", self.texts), ("image_paths", self.image_paths)):
            if len(col) != n:
                raise ValueError(f"Catalog.{name} has {len(col)} rows but ids has {n}")
        attrs = {}
        for name, col in self.attributes.items():
            col = np.asarray(col, dtype=object)
            if len(col) != n:
                raise ValueError(f"Catalog attribute {name!r} has {len(col)} rows but ids has {n}")
            attrs[name] = col
        self.attributes = attrs
        self._index = {item_id: i for i, item_id in enumerate(self.ids)}
        if len(self._index) != n:
            seen, dupes = set(), []
            for item_id in self.ids:
                if item_id in seen:
                    dupes.append(item_id)
                seen.add(item_id)
            raise ValueError(f"Catalog has duplicate item ids, e.g. {dupes[:3]}")

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, ids: Iterable) -> np.ndarray:
        """Item codes of external ids; unknown ids raise `KeyError` naming them."""
        return _index_of(self._index, ids, "item")

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._index

    def full_text(self, i: int) -> str:
        """Title and description of item code ``i`` as one string (what text towers read)."""
        title, text = self.titles[i], self.texts[i]
        if title and text:
            return f"{title}. {text}"
        return title or text

    def subset(self, codes: Sequence[int] | np.ndarray) -> "Catalog":
        """A new catalog with the given item codes, in that order (codes are renumbered)."""
        codes = np.asarray(codes, dtype=np.int64)
        return Catalog(
            ids=self.ids[codes],
            titles=[self.titles[i] for i in codes],
            texts=[self.texts[i] for i in codes],
            image_paths=[self.image_paths[i] for i in codes],
            attributes={k: v[codes] for k, v in self.attributes.items()},
        )

    def summary(self) -> dict:
        """Counts of items, missing images, empty descriptions (and items with no text at all), attribute names."""
        return {
            "items": len(self),
            "with_image": sum(p is not None for p in self.image_paths),
            "without_image": sum(p is None for p in self.image_paths),
            "empty_description": sum(not t.strip() for t in self.texts),
            "no_text_at_all": sum(not self.full_text(i).strip() for i in range(len(self))),
            "attributes": sorted(self.attributes),
        }


@dataclass
class Interactions:
    """User–item events as columns of dense codes into ``user_ids`` / ``item_ids`` vocabularies.

    ``timestamps`` are Unix seconds (0 where the source has none); ``kinds`` index into `KINDS`;
    ``weights`` are event strengths (1.0 for an implicit event). Several splits of one data set share the
    same vocabularies, so codes mean the same user and item everywhere.
    """

    users: np.ndarray
    items: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray | None = None
    kinds: np.ndarray | None = None
    weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int64)
        self.items = np.asarray(self.items, dtype=np.int64)
        n = len(self.users)
        if self.items.shape != (n,):
            raise ValueError(f"Interactions.items has shape {self.items.shape}, users has ({n},)")
        self.user_ids = self.user_ids if isinstance(self.user_ids, np.ndarray) and self.user_ids.dtype == object \
            else _as_str_array(self.user_ids, "Interactions.user_ids")
        self.item_ids = self.item_ids if isinstance(self.item_ids, np.ndarray) and self.item_ids.dtype == object \
            else _as_str_array(self.item_ids, "Interactions.item_ids")
        self.timestamps = np.zeros(n, np.int64) if self.timestamps is None else np.asarray(self.timestamps, np.int64)
        self.kinds = np.zeros(n, np.int8) if self.kinds is None else np.asarray(self.kinds, np.int8)
        self.weights = np.ones(n, np.float32) if self.weights is None else np.asarray(self.weights, np.float32)
        for name in ("timestamps", "kinds", "weights"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"Interactions.{name} has shape {getattr(self, name).shape}, expected ({n},)")
        if n:
            for name, codes, vocab in (("users", self.users, self.user_ids), ("items", self.items, self.item_ids)):
                lo, hi = int(codes.min()), int(codes.max())
                if lo < 0 or hi >= len(vocab):
                    raise ValueError(f"Interactions.{name} codes span [{lo}, {hi}] outside a vocabulary of {len(vocab)}")

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        """Size of the user vocabulary (not only users present in these rows)."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Size of the item vocabulary (not only items present in these rows)."""
        return len(self.item_ids)

    @classmethod
    def from_ids(cls, users: Sequence, items: Sequence, *, user_ids: Sequence | None = None,
                 item_ids: Sequence | None = None, **columns) -> "Interactions":
        """Build from external ids; vocabularies default to the sorted unique ids seen."""
        users = _as_str_array(users, "users")
        items = _as_str_array(items, "items")
        uvocab = np.asarray(sorted(set(users)), dtype=object) if user_ids is None else _as_str_array(user_ids, "user_ids")
        ivocab = np.asarray(sorted(set(items)), dtype=object) if item_ids is None else _as_str_array(item_ids, "item_ids")
        uidx = {u: i for i, u in enumerate(uvocab)}
        iidx = {u: i for i, u in enumerate(ivocab)}
        return cls(_index_of(uidx, users, "user"), _index_of(iidx, items, "item"), uvocab, ivocab, **columns)

    def select(self, mask_or_index: np.ndarray) -> "Interactions":
        """Rows picked by a boolean mask or an index array; vocabularies are kept."""
        m = mask_or_index
        return Interactions(self.users[m], self.items[m], self.user_ids, self.item_ids,
                            self.timestamps[m], self.kinds[m], self.weights[m])

    def concat(self, other: "Interactions") -> "Interactions":
        """Rows of both tables; the vocabularies must be the same objects or equal."""
        if not (np.array_equal(self.user_ids, other.user_ids) and np.array_equal(self.item_ids, other.item_ids)):
            raise ValueError("cannot concat Interactions with different vocabularies")
        return Interactions(np.concatenate([self.users, other.users]), np.concatenate([self.items, other.items]),
                            self.user_ids, self.item_ids, np.concatenate([self.timestamps, other.timestamps]),
                            np.concatenate([self.kinds, other.kinds]), np.concatenate([self.weights, other.weights]))

    def unique_pairs(self) -> "Interactions":
        """One row per (user, item): the earliest event, with weights summed over repeats."""
        if not len(self):
            return self
        key = self.users * self.n_items + self.items
        order = np.lexsort((self.timestamps, key))
        key_sorted = key[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = key_sorted[1:] != key_sorted[:-1]
        starts = np.flatnonzero(first)
        weights = np.add.reduceat(self.weights[order], starts)
        keep = order[starts]
        out = self.select(keep)
        out.weights = weights.astype(np.float32)
        return out

    def user_counts(self) -> np.ndarray:
        """Interactions per user code, over the whole user vocabulary."""
        return np.bincount(self.users, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        """Interactions per item code, over the whole item vocabulary."""
        return np.bincount(self.items, minlength=self.n_items)

    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """The user×item incidence as CSR parts ``(indptr, item_codes)``, rows sorted by user then item."""
        order = np.lexsort((self.items, self.users))
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.users, minlength=self.n_users), out=indptr[1:])
        return indptr, self.items[order]

    def summary(self) -> dict:
        """Row, user and item counts, the time span, and the kinds present."""
        out = {
            "rows": len(self),
            "users_with_rows": int((self.user_counts() > 0).sum()),
            "items_with_rows": int((self.item_counts() > 0).sum()),
            "user_vocabulary": self.n_users,
            "item_vocabulary": self.n_items,
        }
        if len(self) and self.timestamps.any():
            out["first_timestamp"] = int(self.timestamps.min())
            out["last_timestamp"] = int(self.timestamps.max())
        present = np.unique(self.kinds)
        out["kinds"] = {KINDS[k]: int((self.kinds == k).sum()) for k in present}
        return out


def as_codes(values: object, what: str, n: int) -> np.ndarray:
    """``values`` (a list, array or tensor) as a 1-D int64 array of codes in ``0..n-1``. A scalar, floats that are
    not whole numbers and booleans are errors naming ``what``: silently truncated, 0.7 and 1.9 were users 0 and 1."""
    raw = np.asarray(values.cpu() if hasattr(values, "cpu") else values)  # a torch tensor too
    if raw.ndim != 1:
        raise ValueError(f"{what} must be a list of codes, got {'a single value' if raw.ndim == 0 else raw.shape}")
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
        whole = np.issubdtype(raw.dtype, np.floating) and bool(np.all(np.isfinite(raw) & (np.mod(raw, 1) == 0)))
        if not whole:
            raise ValueError(f"{what} must be whole numbers, got {raw.dtype} values such as {raw[:3].tolist()}")
    codes = raw.astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= n):
        raise ValueError(f"{what} must be in 0..{n - 1}")
    return codes
