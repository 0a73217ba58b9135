"""A retrieval index over item vectors: FAISS behind one small class.

Scoring every item for every user (``users × items``) is what `Recommender.recommend` does by default;
at a full shop's size (1.4M customers, 105k articles) that is the slow part. `Index` keeps item vectors in
a FAISS index — ``flat`` (exact inner product), ``ivf`` (inverted lists, ``nprobe`` of ``nlist`` probed)
or ``hnsw`` (a graph, ``ef_search`` wide) — and answers a batch of query vectors with the top-k items by
inner product. ``faiss-gpu`` is used where it is installed and a GPU is asked for.

Maximum inner product is not a metric, and IVF / HNSW search best under L2. With ``mips_to_l2`` (the default
for ``ivf`` and ``hnsw``) item vectors get one extra coordinate ``sqrt(M² − |x|²)`` (``M`` the largest item
norm) and queries a 0, so the L2 order of the augmented vectors is the inner-product order of the originals
(Bachrach et al., RecSys 2014); scores returned are the inner products.

An index saved with `save` is FAISS's own binary format plus a JSON config — data, never code.
`recommend_with_index` is how a recommender uses it: the index proposes candidates from the model's
factors (`Recommender.factors`), and the model's own ``score`` re-ranks them, so terms that are not a dot
product (e.g. `vae_fusion`'s history affinity) still count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmrec.config import from_dict, to_dict
from mmrec.io import atomic_path, atomic_write_json, read_json

if TYPE_CHECKING:
    from mmrec.recommender import Recommender

KINDS = ("flat", "ivf", "hnsw")
INDEX_FILE, INDEX_CONFIG = "index.faiss", "index.json"


@dataclass
class IndexConfig:
    """How to index: ``kind`` in flat | ivf | hnsw; ``nlist`` IVF lists (0: 4·sqrt(n)), ``nprobe`` lists searched;
    ``hnsw_m`` graph degree, ``ef_construction`` / ``ef_search`` beam widths; ``mips_to_l2`` (None: on for
    ivf and hnsw) the inner-product → L2 transform; ``gpu`` to move the index to a GPU (needs faiss-gpu)."""

    kind: str = "hnsw"
    nlist: int = 0
    nprobe: int = 64
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    mips_to_l2: bool | None = None
    gpu: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"IndexConfig.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise ValueError(f"IndexConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.nlist < 0:
            raise ValueError(f"IndexConfig.nlist must be ≥ 0, got {self.nlist}")

    @property
    def transform(self) -> bool:
        """Whether vectors are augmented for L2 search (see the module docstring)."""
        return self.kind != "flat" if self.mips_to_l2 is None else self.mips_to_l2


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("mmrec.index needs FAISS: pip install faiss-cpu (or faiss-gpu)") from err
    return faiss


class Index:
    """Top-k maximum-inner-product search over item vectors (row = item code); see the module docstring."""

    def __init__(self, index: Any, config: IndexConfig, dim: int, max_norm: float) -> None:
        self.index, self.config, self.dim, self.max_norm = index, config, dim, max_norm

    @classmethod
    def build(cls, vectors: np.ndarray | torch.Tensor, config: IndexConfig | dict | str | None = None) -> "Index":
        """Index ``vectors`` ``[n_items, dim]``; ``config`` an `IndexConfig`, its dict, or just a kind."""
        faiss = _faiss()
        if isinstance(config, str):
            config = IndexConfig(kind=config)
        config = config if isinstance(config, IndexConfig) else from_dict(IndexConfig, config or {})
        x = _float32(vectors, "item vectors")
        n, dim = x.shape
        if n == 0 and config.kind != "flat":
            raise ValueError(f"an {config.kind} index needs items to train on; there are none")
        if config.kind == "ivf" and config.nlist > n:
            raise ValueError(f"IndexConfig.nlist {config.nlist} exceeds the {n} items: each list needs an item")
        max_norm = float(np.linalg.norm(x, axis=1).max()) if n else 0.0
        if config.transform:
            x = _augment_items(x, max_norm)
        d = x.shape[1]
        metric = faiss.METRIC_L2 if config.transform else faiss.METRIC_INNER_PRODUCT
        if config.kind == "flat":
            index = faiss.IndexFlat(d, metric)
        elif config.kind == "ivf":
            nlist = config.nlist or max(1, min(n // 39, int(4 * math.sqrt(max(n, 1)))))
            index = faiss.IndexIVFFlat(faiss.IndexFlat(d, metric), d, nlist, metric)
            index.train(x)
            index.nprobe = min(config.nprobe, nlist)
        else:
            index = faiss.IndexHNSWFlat(d, config.hnsw_m, metric)
            index.hnsw.efConstruction = config.ef_construction
            index.hnsw.efSearch = config.ef_search
        index.add(x)
        if config.gpu:
            if not hasattr(faiss, "StandardGpuResources"):
                raise ValueError("IndexConfig.gpu: this FAISS build has no GPU support (install faiss-gpu)")
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        return cls(index, config, dim, max_norm)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(codes, scores)`` ``[len(queries), k]``: the items with the largest inner product per query, best
        first; code -1 and score -inf where the index holds fewer than ``k`` items."""
        q = _float32(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have {q.shape[1]} dimensions, the index {self.dim}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if self.config.transform:
            q = np.concatenate([q, np.zeros((len(q), 1), np.float32)], axis=1)
        distances, codes = self.index.search(q, int(k))
        codes = codes.astype(np.int64)
        if self.config.transform:  # ||q - x'||² = |q|² + M² - 2 q·x  →  q·x
            scores = ((q * q).sum(1, keepdims=True) + self.max_norm ** 2 - distances) / 2
        else:
            scores = distances
        return codes, np.where(codes < 0, -np.inf, scores).astype(np.float32)

    def add(self, vectors: np.ndarray | torch.Tensor) -> np.ndarray:
        """Append items (codes continue from ``len(self)``) and return their codes. With the L2 transform a
        new vector longer than the longest indexed one is refused: rebuild the index instead."""
        x = _float32(vectors, "item vectors")
        if x.shape[1] != self.dim:
            raise ValueError(f"new item vectors have {x.shape[1]} dimensions, the index {self.dim}")
        if self.config.transform:
            if len(x) and float(np.linalg.norm(x, axis=1).max()) > self.max_norm * (1 + 1e-6):
                raise ValueError("a new item vector is longer than every indexed one; rebuild the index")
            x = _augment_items(x, self.max_norm)
        start = len(self)
        self.index.add(x)
        return np.arange(start, len(self))

    def copy(self) -> "Index":
        """An independent copy (FAISS's ``clone_index``): add to it while others search the original."""
        faiss = _faiss()
        index = self.index if not self.config.gpu else faiss.index_gpu_to_cpu(self.index)
        clone = faiss.clone_index(index)
        if self.config.gpu:
            clone = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, clone)
        elif self.config.kind == "hnsw":
            clone.hnsw.efSearch = self.config.ef_search
        return Index(clone, self.config, self.dim, self.max_norm)

    def save(self, folder: str | Path) -> None:
        """Write ``index.faiss`` (FAISS's binary format) and ``index.json`` into ``folder``, atomically each."""
        faiss = _faiss()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index = faiss.index_gpu_to_cpu(self.index) if self.config.gpu else self.index
        with atomic_path(folder / INDEX_FILE) as tmp:
            faiss.write_index(index, str(tmp))
        atomic_write_json(folder / INDEX_CONFIG, {"config": to_dict(self.config), "dim": self.dim,
                                                  "max_norm": self.max_norm, "ntotal": len(self)})

    @classmethod
    def load(cls, folder: str | Path) -> "Index":
        """Read what `save` wrote; a file that does not match its JSON is refused."""
        faiss = _faiss()
        folder = Path(folder)
        meta = read_json(folder / INDEX_CONFIG)
        if not isinstance(meta, dict) or set(meta) != {"config", "dim", "max_norm", "ntotal"}:
            raise ValueError(f"{folder / INDEX_CONFIG}: expected keys config, dim, max_norm, ntotal")
        config = from_dict(IndexConfig, meta["config"])
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as err:
            raise ValueError(f"{folder / INDEX_FILE}: not a FAISS index ({str(err).splitlines()[0]})") from None
        expected_d = meta["dim"] + (1 if config.transform else 0)
        if index.d != expected_d or index.ntotal != meta["ntotal"]:
            raise ValueError(f"{folder / INDEX_FILE}: holds {index.ntotal} vectors of {index.d} dims, "
                             f"{INDEX_CONFIG} says {meta['ntotal']} of {expected_d}")
        if config.kind == "ivf":
            index.nprobe = min(config.nprobe, index.nlist)
        elif config.kind == "hnsw":
            index.hnsw.efSearch = config.ef_search
        return cls(index, config, int(meta["dim"]), float(meta["max_norm"]))


def index_for(model: "Recommender", config: IndexConfig | dict | str | None = None) -> Index:
    """An index over ``model``'s item factors (`Recommender.factors`)."""
    _, items = model.factors()
    return Index.build(items, config)


@torch.no_grad()
def recommend_with_index(model: "Recommender", users: np.ndarray, k: int, index: Index, *,
                         candidates: int = 200, exclude_seen: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`Recommender.recommend` through ``index``: per user the index's top ``candidates`` by the model's
    factors, seen items removed, re-scored by the model's ``score_candidates``, top ``k`` kept. A user whose
    seen items leave fewer than ``k`` proposals is searched again as wide as their history. Rows end in
    -1 / -inf when fewer than ``k`` unseen items exist."""
    if len(index) != model.n_items:
        raise ValueError(f"the index holds {len(index)} items, the model {model.n_items}: rebuild it")
    k = min(k, len(index))  # as without an index: capped at the items there are
    user_vecs, _ = model.factors()
    user_vecs = user_vecs.float().cpu().numpy()
    ptr, idx = model.seen_indptr.cpu().numpy(), model.seen_indices.cpu().numpy()
    out_codes = np.full((len(users), k), -1, np.int64)
    out_scores = np.full((len(users), k), -np.inf, np.float32)
    want = min(len(index), max(candidates, k))
    short = _search_and_rerank(model, index, users, np.arange(len(users)), want, k, user_vecs, ptr, idx,
                               exclude_seen, out_codes, out_scores)
    if len(short):  # users whose seen items filled the proposals: search again, as wide as their history
        n_seen = np.diff(ptr)[users[short]]
        for group in np.array_split(short[np.argsort(n_seen)], max(1, len(short) // 64)):
            wider = min(len(index), want + int(np.diff(ptr)[users[group]].max()))
            _search_and_rerank(model, index, users, group, wider, k, user_vecs, ptr, idx, exclude_seen,
                               out_codes, out_scores)
    return torch.as_tensor(out_codes), torch.as_tensor(out_scores)


def _search_and_rerank(model: "Recommender", index: Index, users: np.ndarray, rows: np.ndarray, want: int, k: int,
                       user_vecs: np.ndarray, ptr: np.ndarray, idx: np.ndarray, exclude_seen: bool,
                       out_codes: np.ndarray, out_scores: np.ndarray) -> np.ndarray:
    """Fill ``out_*[rows]`` from ``want`` proposals per user; the rows left with fewer than ``k`` answers
    although unseen items remain (their seen items took the proposals)."""
    from mmrec.topk import csr_rows

    short = []
    for start in range(0, len(rows), 1024):
        batch = rows[start:start + 1024]
        found, _ = index.search(user_vecs[users[batch]], want)
        scores = model.score_candidates(torch.as_tensor(users[batch], device=model.device),
                                        torch.as_tensor(np.maximum(found, 0), device=model.device)).float().cpu()
        invalid = found < 0
        if exclude_seen:
            position, cols = csr_rows(ptr, idx, users[batch])
            n = model.n_items
            seen = np.sort(position * n + cols)
            keys = np.arange(len(batch))[:, None] * n + found
            at = np.minimum(np.searchsorted(seen, keys), max(len(seen) - 1, 0))
            invalid |= (seen[at] == keys) if len(seen) else np.zeros_like(invalid)
        scores[torch.as_tensor(invalid)] = -math.inf
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        chosen = np.take_along_axis(found, top.indices.numpy(), axis=1)
        values = top.values.numpy()
        out_codes[batch, :chosen.shape[1]] = np.where(np.isinf(values), -1, chosen)
        out_scores[batch, :chosen.shape[1]] = values
        answered = (~np.isinf(values)).sum(1)
        available = model.n_items - (np.diff(ptr)[users[batch]] if exclude_seen else 0)
        short.append(batch[(answered < np.minimum(k, available)) & (want < len(index))])
    return np.concatenate(short) if short else np.zeros(0, np.int64)


def _float32(vectors: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    """A C-contiguous float32 ``[n, d]`` copy-if-needed of ``vectors``; NaN / inf refused."""
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().float().cpu().numpy()
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array [n, dim], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} hold NaN or infinite values")
    return x


def _augment_items(x: np.ndarray, max_norm: float) -> np.ndarray:
    """Items for L2 search: one extra coordinate sqrt(M² − |x|²) puts every item at norm M."""
    extra = np.sqrt(np.maximum(max_norm ** 2 - (x * x).sum(1), 0.0)).astype(np.float32)
    return np.concatenate([x, extra[:, None]], axis=1)
