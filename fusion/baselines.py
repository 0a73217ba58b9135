"""Warm collaborative baselines: MostPopular, ItemKNN, BPR-MF and LightGCN.

BPR-MF and LightGCN follow MMRec's implementations (Xavier-initialised embeddings, BPR loss on sampled
triplets, L2 penalty on the batch's ego embeddings divided by the batch size; LightGCN averages the
layers of a symmetric-normalised user–item graph propagation).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmrec.config import check_at_least
from mmrec.data import Interactions
from mmrec.recommender import Recommender, register_model
from mmrec.sampling import TripletDataset


@dataclass
class MostPopularConfig:
    """MostPopular has no settings."""


@register_model("most_popular")
class MostPopular(Recommender):
    """Ranks items by their number of training interactions, the same for every user."""

    config_class = MostPopularConfig

    def __init__(self, config: MostPopularConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.register_buffer("counts", torch.zeros(n_items))

    def fit(self, train: Interactions, **_) -> None:
        """Count each item's training users."""
        self.remember(train)
        self.counts = torch.as_tensor(train.unique_pairs().item_counts(), dtype=torch.float32)

    def score(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        counts = self.counts if items is None else self.counts[items]
        return counts.expand(len(users), -1)


@dataclass
class ItemKNNConfig:
    """``k`` neighbours kept per item; ``shrink`` damps similarities of rarely co-bought pairs."""

    k: int = 100
    shrink: float = 10.0

    def __post_init__(self) -> None:
        check_at_least(self, k=1, shrink=0)


@register_model("itemknn")
class ItemKNN(Recommender):
    """Item-item cosine similarity on co-occurrence; a user's score is the sum over their training items."""

    config_class = ItemKNNConfig
    item_edges = (("sim_indices", "sim_values"),)

    def __init__(self, config: ItemKNNConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.register_buffer("sim_indices", torch.zeros(2, 0, dtype=torch.long))
        self.register_buffer("sim_values", torch.zeros(0))

    def fit(self, train: Interactions, **_) -> None:
        """Build the top-k item-item similarity graph from the training matrix, in item blocks."""
        self.remember(train)
        pairs = train.unique_pairs()
        x = torch.sparse_coo_tensor(np.stack([pairs.users, pairs.items]), torch.ones(len(pairs)),
                                    (self.n_users, self.n_items), check_invariants=False).coalesce()
        norms = torch.as_tensor(pairs.item_counts(), dtype=torch.float32).sqrt()
        xt = x.t().coalesce()
        k = min(self.config.k, self.n_items - 1)
        rows, cols, vals = [], [], []
        block = max(1, int(2**26 // max(self.n_items, 1)))
        for start in range(0, self.n_items, block):
            stop = min(start + block, self.n_items)
            cooc = torch.sparse.mm(xt, x.index_select(1, torch.arange(start, stop)).to_dense())  # [I, B]
            sim = cooc / (norms[:, None] * norms[None, start:stop] + self.config.shrink + 1e-8)
            sim[torch.arange(start, stop), torch.arange(stop - start)] = 0.0
            top = torch.topk(sim, k, dim=0)
            keep = top.values > 0
            cols.append(torch.arange(start, stop).expand(k, -1)[keep])
            rows.append(top.indices[keep])
            vals.append(top.values[keep])
        self.sim_indices = torch.stack([torch.cat(rows), torch.cat(cols)])
        self.sim_values = torch.cat(vals)

    def score(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        sim = torch.sparse_coo_tensor(self.sim_indices, self.sim_values, (self.n_items, self.n_items),
                                      check_invariants=False)
        history = torch.zeros(len(users), self.n_items, device=users.device)
        ptr, idx = self.seen_indptr, self.seen_indices
        lengths = ptr[users + 1] - ptr[users]
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
        starts = torch.repeat_interleave(ptr[users], lengths)
        offsets = torch.arange(int(lengths.sum()), device=users.device) - \
            torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        history[rows, idx[starts + offsets]] = 1.0
        scores = torch.sparse.mm(sim.t(), history.t()).t()
        return scores if items is None else scores[:, items]


@dataclass
class BPRConfig:
    """Embedding size and L2 weight of BPR matrix factorisation."""

    dim: int = 64
    reg_weight: float = 1e-4

    def __post_init__(self) -> None:
        check_at_least(self, dim=1, reg_weight=0)


@register_model("bpr")
class BPRMF(Recommender):
    """Matrix factorisation trained with the BPR pairwise loss."""

    config_class = BPRConfig

    def __init__(self, config: BPRConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, config.dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, config.dim)))

    def training_data(self, train: Interactions, seed: int) -> TripletDataset:
        return TripletDataset(train, seed)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user and item vectors used for scoring."""
        return self.user_emb, self.item_emb

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        users_all, items_all = self.embeddings()
        u, p, n = users_all[batch["users"]], items_all[batch["pos"]], items_all[batch["neg"]]
        bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
        ego = (self.user_emb[batch["users"]], self.item_emb[batch["pos"]], self.item_emb[batch["neg"]])
        reg = sum(e.norm(2).pow(2) for e in ego) / len(batch["users"])
        return {"loss": bpr + self.config.reg_weight * reg, "bpr": bpr.detach(), "reg": reg.detach()}

    def score(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        users_all, items_all = self.embeddings()
        item_vecs = items_all if items is None else items_all[items]
        return users_all[users] @ item_vecs.t()

    @torch.no_grad()
    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The final user and item vectors (for vae_fusion the fused items; its affinity is re-ranked)."""
        users_all, items_all = self.embeddings()
        return users_all.detach(), items_all.detach()

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if type(self).score is not BPRMF.score:  # a subclass adds terms: score the pairs through them
            return super().score_candidates(users, items)
        users_all, items_all = self.embeddings()
        return torch.einsum("ud,ucd->uc", users_all[users], items_all[items])


@dataclass
class LightGCNConfig:
    """Embedding size, propagation depth and L2 weight of LightGCN."""

    dim: int = 64
    n_layers: int = 2
    reg_weight: float = 1e-4

    def __post_init__(self) -> None:
        check_at_least(self, dim=1, n_layers=0, reg_weight=0)


@register_model("lightgcn")
class LightGCN(BPRMF):
    """LightGCN: embeddings smoothed over the normalised user–item graph, mean over layers 0..L."""

    config_class = LightGCNConfig

    def __init__(self, config: LightGCNConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self._graph: tuple[torch.Tensor, ...] | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def adjacency(self) -> torch.Tensor | None:
        """The normalised graph as a sparse CSR tensor (kept as its dense parts, which copy and move like
        any tensor; a CSR tensor itself cannot be deep-copied)."""
        return None if self._graph is None else csr_tensor(*self._graph)

    @adjacency.setter
    def adjacency(self, value: torch.Tensor | None) -> None:
        self._graph = None if value is None else (value.crow_indices(), value.col_indices(), value.values())

    def prepare(self, train: Interactions) -> None:
        """Build D^-1/2 A D^-1/2 of the bipartite graph from the training pairs."""
        self.adjacency = normalized_adjacency(train, self.n_users, self.n_items).to(self.user_emb.device)

    def load_pretrained_state(self, state: dict[str, torch.Tensor]) -> None:
        super().load_pretrained_state(state)
        ptr, idx = self.seen_indptr.numpy(), self.seen_indices.numpy()
        users = np.repeat(np.arange(self.n_users), np.diff(ptr))
        self.adjacency = normalized_adjacency(
            Interactions(users, idx, np.arange(self.n_users).astype(str), np.arange(self.n_items).astype(str)),
            self.n_users, self.n_items)

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        if self._graph is not None:
            self._graph = tuple(fn(part) for part in self._graph)
        return module

    def train(self, mode: bool = True) -> "LightGCN":
        self._cache = None
        return super().train(mode)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training and self._cache is not None:
            return self._cache
        if self._graph is None:
            raise RuntimeError("LightGCN has no graph: call fit() or from_pretrained() first")
        ego = torch.cat([self.user_emb, self.item_emb])
        final, layer, adjacency = ego, ego, self.adjacency
        for _ in range(self.config.n_layers):
            layer = propagate(adjacency, layer)
            final = final + layer
        final = final / (self.config.n_layers + 1)
        out = (final[: self.n_users], final[self.n_users:])
        if not self.training:
            self._cache = out
        return out


def normalized_adjacency(train: Interactions, n_users: int, n_items: int) -> torch.Tensor:
    """Sparse CSR ``[U+I, U+I]`` symmetric-normalised adjacency of the user–item bipartite graph.

    Built row by row with a counting sort (no COO coalesce, whose sort of every edge doubles the peak
    memory at full catalogue size); column indices are int32 where the node count fits."""
    pairs = train.unique_pairs()
    n = n_users + n_items
    users = pairs.users.astype(np.int64)
    items = pairs.items.astype(np.int64) + n_users
    rows = np.concatenate([users, items])
    cols = np.concatenate([items, users])
    del users, items
    degree = np.bincount(rows, minlength=n)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1)), 0.0).astype(np.float32)
    order = np.argsort(rows, kind="stable")
    index_type = np.int32 if n < 2 ** 31 and len(rows) < 2 ** 31 else np.int64
    cols = cols[order]
    values = inv_sqrt[rows[order]] * inv_sqrt[cols]
    del rows, order
    crow = np.zeros(n + 1, dtype=index_type)
    np.cumsum(degree, out=crow[1:])
    return csr_tensor(torch.from_numpy(crow), torch.from_numpy(cols.astype(index_type)), torch.from_numpy(values))


def csr_tensor(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor,
               n_columns: int | None = None) -> torch.Tensor:
    """A sparse CSR tensor from its parts (no copy), without torch's beta-feature warning: square unless
    ``n_columns`` is given (e.g. a few rows of a square matrix)."""
    n = len(crow) - 1
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols, values, (n, n if n_columns is None else n_columns),
                                       check_invariants=False)


class _SymmetricSpmm(torch.autograd.Function):
    """``A @ X`` for a symmetric sparse ``A``: the gradient is ``A @ grad``, so backward reuses ``A``
    instead of building its transpose at every step (torch's generic sparse backward does)."""

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adjacency = adjacency
        return torch.sparse.mm(adjacency, dense)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, torch.sparse.mm(ctx.adjacency, grad)


def propagate(adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """One graph-convolution layer ``adjacency @ dense`` for a symmetric (normalised) adjacency."""
    if torch.is_grad_enabled() and dense.requires_grad:
        return _SymmetricSpmm.apply(adjacency, dense)
    return torch.sparse.mm(adjacency, dense)
