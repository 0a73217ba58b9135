"""Cold-start baselines that all read the same fixed item content vectors ``[n_items, C]``.

Every model here takes the vectors through ``set_content(vectors)`` before ``fit`` and can score items
that had no training interactions ("cold" items) from their content alone:

- ``random``: seeded random user and item factors, independent of the data — the floor.
- ``content_knn``: a user is the mean of her training items' (L2-normalised) content vectors; score = cosine.
- ``affinity``: the history content affinity alone, training-free — score(u, i) = mean over the user's
  training items j of max(0, cos(c_j, c_i))^power (`mmrec.fusion.cold_vae.history_affinity`, the term
  ``vae_fusion`` adds to its scores).
- ``affinity_pop``: ``affinity`` + ``weight`` × the item's *content-neighbour popularity*: the mean
  log(1 + training buyers) of its ``neighbours`` nearest items with training interactions (cosine of the
  content; itself excluded), divided by its largest value. A new item has no buyers of its own, but its
  look-alikes do; warm items get the same neighbour-based value, so cold and warm items share one scale.
- ``dropoutnet``: DropoutNet (Volkovs et al., NeurIPS 2017). A BPR-MF (`mmrec.fusion.baselines.BPRMF`) is
  trained first for the ID preference vectors; then two MLPs map ``user pref`` and ``[item pref, content]``
  into one space, trained to reproduce the BPR scores while the item preference input is dropped (zeroed)
  with probability ``dropout`` — so the item tower learns to score from content when no preference exists.
- ``vbpr``: VBPR as in MMRec (He & McAuley, AAAI 2016): user ``[γ_u, θ_u]`` · item ``[γ_i, E c_i]``
  trained with BPR; a cold item has no ``γ_i`` and is scored by ``θ_u · E c_i`` only.
- ``clcrec``: CLCRec-style (Wei et al., WWW 2021): a content encoder is trained contrastively to land on the
  item's ID embedding (representation–embedding InfoNCE) and, together with the ID embeddings, to rank a
  user's items (user–item InfoNCE, where part of the positives use the encoded content; the other
  positives of the batch, in chunks of 1024, are the negatives); cold items use the encoded content.

All trainable models run through the one loop (`mmrec.train.fit`); negatives are drawn from items that
have training interactions only, so nothing about cold items is used but their content.

``update(interactions)`` folds in new interactions without retraining (the warm-up protocol of
``benchmarks/coldstart_hm.py``): the buyers become "seen" and, for items that had no training
interactions, DropoutNet uses the mean preference vector of the item's buyers (as in the paper), VBPR and
CLCRec a shrunk, norm-matched mean of the buyers' user embeddings as the item's ID vector.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmrec.config import check_at_least
from mmrec.data import Interactions
from mmrec.fusion.baselines import BPRConfig, BPRMF
from mmrec.fusion.cold_vae import history_affinity, history_mean, history_rows, knn_rows
from mmrec.recommender import Recommender, register_model
from mmrec.sampling import TripletDataset
from mmrec.train import TrainConfig, TrainResult
from mmrec.train import fit as loop_fit


def warm_triplets(train: Interactions, seed: int) -> TripletDataset:
    """BPR triplets whose negatives come only from items with training interactions."""
    return TripletDataset(train, seed, item_pool=np.flatnonzero(train.unique_pairs().item_counts() > 0))


class ContentRecommender(Recommender):
    """Base of the cold-start baselines: holds the content vectors, the per-item interaction counts and
    the warm-up ``update``. A subclass builds its content-sized modules in ``build(content_dim)`` and
    scores with ``user_vectors(users) @ item_vectors().T`` unless it overrides ``score``.

    Its config has a ``content_dim`` field: 0 until ``set_content`` fixes it, so a saved model
    rebuilds the same modules on load.
    """

    def __init__(self, config: Any, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.register_buffer("content", torch.zeros(n_items, config.content_dim))
        self.register_buffer("item_counts", torch.zeros(n_items))
        self._item_cache: torch.Tensor | None = None
        if config.content_dim:
            self.build(config.content_dim)

    def build(self, content_dim: int) -> None:
        """Create the modules whose size depends on the content dimension (none by default)."""

    def set_content(self, vectors: np.ndarray | torch.Tensor, recipe: Any = None) -> None:
        """Give every item its content vector: ``[n_items, C]``, finite; zero rows are items without content.
        ``recipe`` (the `mmrec.content.ContentRecipe` that made them) is saved with the model."""
        self.content_recipe = recipe
        v = torch.as_tensor(np.asarray(vectors) if not isinstance(vectors, torch.Tensor) else vectors)
        if v.ndim != 2 or v.shape[0] != self.n_items:
            raise ValueError(f"{self.name}: content vectors must be [n_items={self.n_items}, C], got {tuple(v.shape)}")
        v = v.to(torch.float32)
        if not torch.isfinite(v).all():
            row = int((~torch.isfinite(v)).any(1).nonzero()[0])
            raise ValueError(f"{self.name}: content vector of item {row} is not finite")
        if self.config.content_dim == 0:
            self.config.content_dim = v.shape[1]
            self.build(v.shape[1])
        elif v.shape[1] != self.config.content_dim:
            raise ValueError(f"{self.name} was built for {self.config.content_dim}-d content, got {v.shape[1]}-d")
        self.content = v.to(self.device)
        self._item_cache = None

    def prepare(self, train: Interactions) -> None:
        if self.config.content_dim == 0:
            raise RuntimeError(f"{self.name}: call set_content(vectors) before fit")
        self.item_counts = torch.as_tensor(train.unique_pairs().item_counts(), dtype=torch.float32,
                                           device=self.device)
        self._item_cache = None

    def train(self, mode: bool = True) -> "ContentRecommender":
        self._item_cache = None
        return super().train(mode)

    # -- warm-up -------------------------------------------------------------------------------------
    def seen_interactions(self) -> Interactions:
        """The (user, item) pairs the model currently knows, as `Interactions`."""
        ptr, idx = self.seen_indptr.cpu().numpy(), self.seen_indices.cpu().numpy()
        users = np.repeat(np.arange(self.n_users), np.diff(ptr))
        user_ids = self.user_ids if self.user_ids is not None else np.arange(self.n_users).astype(str)
        item_ids = self.item_ids if self.item_ids is not None else np.arange(self.n_items).astype(str)
        return Interactions(users, idx, user_ids, item_ids)

    @torch.no_grad()
    def update(self, interactions: Interactions) -> None:
        """Fold in new interactions without retraining: they join the users' seen items and the item
        counts, and items without training interactions get ID vectors from their buyers (`fold_in`)."""
        if (interactions.n_users, interactions.n_items) != (self.n_users, self.n_items):
            raise ValueError(f"{self.name}: update() needs interactions over the model's {self.n_users} users × "
                             f"{self.n_items} items, got {interactions.n_users} × {interactions.n_items}")
        untrained = self.item_counts == 0
        known = self.seen_interactions()
        merged = Interactions(np.concatenate([known.users, interactions.users]),
                              np.concatenate([known.items, interactions.items]),
                              interactions.user_ids, interactions.item_ids).unique_pairs()
        user_ids, item_ids = self.user_ids, self.item_ids
        self.remember(merged)
        self.user_ids, self.item_ids = user_ids, item_ids
        self.fold_in(merged, untrained.cpu().numpy() & (merged.item_counts() > 0))
        self.item_counts = torch.as_tensor(merged.item_counts(), dtype=torch.float32, device=self.device)
        self._item_cache = None

    def fold_in(self, seen: Interactions, items: np.ndarray) -> None:
        """Set ID vectors of the items in boolean mask ``items`` (no training data, now some buyers)."""

    def buyer_means(self, seen: Interactions, items: np.ndarray, user_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For the item codes ``items``: mean of ``user_table`` rows of their buyers in ``seen``, and buyer counts."""
        item_csr = Interactions(seen.items, seen.users, seen.item_ids, seen.user_ids).csr()
        ptr, idx = (torch.as_tensor(a, device=user_table.device) for a in item_csr)
        return history_mean(ptr, idx, torch.as_tensor(items, device=user_table.device), user_table)

    # -- scoring -------------------------------------------------------------------------------------
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """Rows that score items by a dot product with `item_vectors`."""
        raise NotImplementedError

    def compute_item_vectors(self) -> torch.Tensor:
        """``[n_items, d]`` item vectors (cold items from content)."""
        raise NotImplementedError

    def item_vectors(self) -> torch.Tensor:
        """`compute_item_vectors`, cached while the model is in eval mode."""
        if self.training:
            return self.compute_item_vectors()
        if self._item_cache is None:
            self._item_cache = self.compute_item_vectors()
        return self._item_cache

    def score(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        vectors = self.item_vectors()
        return self.user_vectors(users) @ (vectors if items is None else vectors[items]).t()


def _train_config(config: Any) -> TrainConfig:
    from mmrec.config import from_dict

    return config if isinstance(config, TrainConfig) else from_dict(TrainConfig, config)


def _info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of normalised rows: row i of ``a`` should match row i of ``b`` among all rows of ``b``."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).t() / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


# ------------------------------------------------------------------------------------------------ random

@dataclass
class RandomConfig:
    """The seed of the random scores, the width of the random factors; ``content_dim`` is unused."""

    seed: int = 0
    dim: int = 32
    content_dim: int = 0

    def __post_init__(self) -> None:
        check_at_least(self, dim=1, content_dim=0)


@register_model("random")
class RandomScores(ContentRecommender):
    """Scores from fixed Gaussian user and item factors drawn from ``seed``: independent of any data, the
    same on every call, and nearly independent rankings across users."""

    config_class = RandomConfig

    def __init__(self, config: RandomConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        generator = torch.Generator().manual_seed(config.seed)
        self.register_buffer("user_noise", torch.randn(n_users, config.dim, generator=generator))
        self.register_buffer("item_noise", torch.randn(n_items, config.dim, generator=generator))

    def fit(self, train: Interactions, **_) -> None:
        """Only remember the training items (to exclude them)."""
        self.remember(train)
        self.prepare(train)

    def prepare(self, train: Interactions) -> None:
        self.item_counts = torch.as_tensor(train.unique_pairs().item_counts(), dtype=torch.float32)

    def compute_item_vectors(self) -> torch.Tensor:
        return self.item_noise

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_noise[users]


# ------------------------------------------------------------------------------------------- content KNN

@dataclass
class ContentKNNConfig:
    """No settings beyond ``content_dim`` (set by ``set_content``)."""

    content_dim: int = 0


@register_model("content_knn")
class ContentKNN(ContentRecommender):
    """A user is the mean of her seen items' normalised content vectors; an item's score is the cosine."""

    config_class = ContentKNNConfig

    def fit(self, train: Interactions, **_) -> None:
        """Nothing to learn: remember the users' training items."""
        self.remember(train)
        self.prepare(train)

    def compute_item_vectors(self) -> torch.Tensor:
        return F.normalize(self.content, dim=1)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        mean, _ = history_mean(self.seen_indptr, self.seen_indices, users, self.item_vectors())
        return F.normalize(mean, dim=1)


# ------------------------------------------------------------------------- history content affinity

_POPULARITY: dict[str, Any] = {}  # the last content-neighbour popularity computed, with its key
_PAIRS: dict[str, Any] = {}  # the last item × item max(0, cos)^power built, with its key


def _fingerprint(content: torch.Tensor) -> tuple[float, float]:
    """Two sums that tell content matrices apart (with the shape, the key of the shared matrix)."""
    flat = content.reshape(-1).double()
    return float(flat.sum()), float((flat * torch.arange(1, len(flat) + 1, dtype=torch.float64).remainder(977)).sum())


@dataclass
class AffinityConfig:
    """The power ``p`` of max(0, cos)^p; ``dense_mb``: the item × item matrix of max(0, cos)^p is kept in
    memory (scoring is then a sum of its rows) when it fits in this many MiB, else each score is computed
    from the content (`history_affinity`); ``content_dim`` is set by ``set_content``."""

    power: float = 6.0
    dense_mb: int = 4096
    content_dim: int = 0

    def __post_init__(self) -> None:
        check_at_least(self, power=1e-9, dense_mb=0, content_dim=0)


@register_model("affinity")
class HistoryAffinity(ContentRecommender):
    """Training-free: the mean over a user's training items of max(0, cos(c_j, c_i))^power for every item i
    (a high power keeps only near-duplicates in content, e.g. colour variants of one product)."""

    config_class = AffinityConfig

    def __init__(self, config: Any, n_users: int, n_items: int) -> None:
        if not config.power > 0:
            raise ValueError(f"{type(config).__name__}.power must be > 0, got {config.power}")
        super().__init__(config, n_users, n_items)

    def fit(self, train: Interactions, **_) -> None:
        """Nothing to learn: remember the users' training items (their histories)."""
        self.remember(train)
        self.prepare(train)

    def compute_item_vectors(self) -> torch.Tensor:
        return F.normalize(self.content, dim=1)

    def set_content(self, vectors: np.ndarray | torch.Tensor, recipe: Any = None) -> None:
        super().set_content(vectors, recipe)
        self._pairs_key = None

    @torch.no_grad()
    def pair_affinity(self) -> torch.Tensor | None:
        """``[n_items, n_items]`` max(0, cos)^power, or None when it exceeds ``dense_mb``. Only the last one
        built is kept, shared by every model with equal content and power (several seeds on one catalogue,
        or the points of a grid with one power, build it once)."""
        n = self.n_items
        if n * n * 4 > self.config.dense_mb * 2**20:
            return None
        if getattr(self, "_pairs_key", None) is None:
            self._pairs_key = (tuple(self.content.shape), _fingerprint(self.content), float(self.config.power))
        if _PAIRS.get("key") != self._pairs_key:
            _PAIRS.clear()  # one matrix at a time (the models hold its key, not the matrix)
            unit = F.normalize(self.content, dim=1)
            pairs = unit.new_empty(n, n)
            for start in range(0, n, 2048):
                pairs[start:start + 2048] = (unit[start:start + 2048] @ unit.t()).clamp_(min=0).pow_(self.config.power)
            _PAIRS.update(key=self._pairs_key, pairs=pairs)
        return _PAIRS["pairs"]

    @torch.no_grad()
    def affinity(self, users: torch.Tensor, items: torch.Tensor | None = None, chunk: int = 2048) -> torch.Tensor:
        """``[len(users), n]`` history content affinity (all items, or the codes ``items``)."""
        pairs = self.pair_affinity()
        if pairs is None:
            return history_affinity(self.seen_indptr, self.seen_indices, users, self.item_vectors(),
                                    self.config.power, items)
        rows, hist, lengths = history_rows(self.seen_indptr, self.seen_indices, users)
        out = pairs.new_zeros(len(users), self.n_items if items is None else len(items))
        for start in range(0, len(hist), chunk):
            block = pairs[hist[start:start + chunk]]
            out.index_add_(0, rows[start:start + chunk], block if items is None else block[:, items])
        return out / lengths.clamp(min=1).unsqueeze(1).to(out.dtype)

    def score(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        return self.affinity(users, items)


@dataclass
class AffinityPopConfig:
    """``affinity``'s power, the weight of the content-neighbour popularity (in [0, 1]) added to it, and
    how many neighbours with training interactions make an item's popularity."""

    power: float = 6.0
    weight: float = 0.01
    neighbours: int = 20
    dense_mb: int = 4096
    content_dim: int = 0

    def __post_init__(self) -> None:
        check_at_least(self, power=1e-9, weight=0, neighbours=1, dense_mb=0, content_dim=0)


def neighbour_popularity(content: torch.Tensor, counts: torch.Tensor, k: int) -> torch.Tensor:
    """Per item the mean log(1 + count) of its ``k`` nearest (cosine of ``content``, itself excluded) items
    with ``counts`` > 0, divided by the largest such value; items without content get 0."""
    rows = torch.arange(len(content), device=content.device)
    (src, dst), weights = knn_rows(content, rows, torch.nonzero(counts > 0).flatten(), k)
    pop = content.new_zeros(len(content)).index_add_(0, src, torch.log1p(counts[dst]) * weights.to(content))
    return pop / pop.max().clamp(min=1e-12)


@register_model("affinity_pop")
class AffinityPopularity(HistoryAffinity):
    """``affinity`` + ``weight`` × content-neighbour popularity (see the module docstring); training-free."""

    config_class = AffinityPopConfig

    def __init__(self, config: AffinityPopConfig, n_users: int, n_items: int) -> None:
        if config.weight < 0 or config.neighbours < 1:
            raise ValueError(f"AffinityPopConfig: weight must be ≥ 0 and neighbours ≥ 1, got {config.weight}, "
                             f"{config.neighbours}")
        super().__init__(config, n_users, n_items)
        self.register_buffer("popularity", torch.zeros(n_items))

    def prepare(self, train: Interactions) -> None:
        super().prepare(train)
        key = (tuple(self.content.shape), _fingerprint(self.content), _fingerprint(self.item_counts),
               self.config.neighbours)
        if _POPULARITY.get("key") != key:  # the points of a grid search share it
            _POPULARITY.update(key=key, popularity=neighbour_popularity(
                F.normalize(self.content, dim=1), self.item_counts, self.config.neighbours))
        self.popularity = _POPULARITY["popularity"].clone()

    def score(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        pop = self.popularity if items is None else self.popularity[items]
        return self.affinity(users, items) + self.config.weight * pop.unsqueeze(0)


# -------------------------------------------------------------------------------------------- DropoutNet

@dataclass
class DropoutNetConfig:
    """BPR-MF preference size and its training (``bpr_*``), the towers' hidden and output sizes, and the
    probability that an item's preference input is dropped in training."""

    dim: int = 64
    bpr_epochs: int = 30
    bpr_lr: float = 5e-3
    bpr_reg_weight: float = 1e-2
    hidden: int = 256
    out_dim: int = 128
    dropout: float = 0.5
    content_dim: int = 0

    def __post_init__(self) -> None:
        check_at_least(self, dim=1, bpr_epochs=1, bpr_lr=1e-12, bpr_reg_weight=0, hidden=1, out_dim=1, dropout=0,
                       content_dim=0)
        if not self.dropout < 1:
            raise ValueError(f"DropoutNetConfig.dropout must be < 1, got {self.dropout!r}")


def _tower(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


@register_model("dropoutnet")
class DropoutNet(ContentRecommender):
    """DropoutNet on frozen BPR-MF preference vectors plus item content (see the module docstring)."""

    config_class = DropoutNetConfig

    def __init__(self, config: DropoutNetConfig, n_users: int, n_items: int) -> None:
        if not 0.0 <= config.dropout <= 1.0:
            raise ValueError(f"DropoutNetConfig.dropout must be in [0, 1], got {config.dropout}")
        super().__init__(config, n_users, n_items)
        self.bpr = BPRMF(BPRConfig(dim=config.dim, reg_weight=config.bpr_reg_weight), n_users, n_items)
        self.register_buffer("item_pref", torch.zeros(n_items, config.dim))
        self.user_tower = _tower(config.dim, config.hidden, config.out_dim)

    def build(self, content_dim: int) -> None:
        self.item_tower = _tower(self.config.dim + content_dim, self.config.hidden, self.config.out_dim)

    def fit(self, train: Interactions, *, train_config: Any = None,
            evaluate_fn: Callable[[nn.Module], dict[str, float]] | None = None) -> TrainResult:
        """Train the BPR-MF preferences (fixed ``bpr_epochs``, no validation), then the towers with ``evaluate_fn``."""
        config = _train_config(train_config)
        self.bpr.remember(train)
        self.bpr.requires_grad_(True)
        bpr_config = dataclasses.replace(config, epochs=self.config.bpr_epochs, lr=self.config.bpr_lr,
                                         checkpoint_dir=config.checkpoint_dir and f"{config.checkpoint_dir}/bpr")
        loop_fit(self.bpr, warm_triplets(train, config.seed), bpr_config)
        self.bpr.requires_grad_(False)
        warm = torch.as_tensor(train.unique_pairs().item_counts() > 0, device=self.device)
        self.item_pref = self.bpr.item_emb.detach() * warm[:, None]
        return super().fit(train, train_config=config, evaluate_fn=evaluate_fn)

    def training_data(self, train: Interactions, seed: int) -> TripletDataset:
        return warm_triplets(train, seed)

    def items_from(self, pref: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """The item tower on preference and content inputs."""
        return self.item_tower(torch.cat([pref, content], 1))

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        users = torch.cat([batch["users"], batch["users"]])
        items = torch.cat([batch["pos"], batch["neg"]])
        u_pref, i_pref = self.bpr.user_emb[users], self.item_pref[items]
        target = (u_pref * i_pref).sum(1)
        keep = (torch.rand(len(items), 1, device=i_pref.device) >= self.config.dropout).to(i_pref.dtype)
        pred = (self.user_tower(u_pref) * self.items_from(i_pref * keep, self.content[items])).sum(1)
        loss = F.mse_loss(pred, target)
        return {"loss": loss}

    def compute_item_vectors(self) -> torch.Tensor:
        return self.items_from(self.item_pref, self.content)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_tower(self.bpr.user_emb[users])

    def fold_in(self, seen: Interactions, items: np.ndarray) -> None:
        codes = np.flatnonzero(items)
        if len(codes):
            mean, _ = self.buyer_means(seen, codes, self.bpr.user_emb.detach())
            self.item_pref[torch.as_tensor(codes, device=self.device)] = mean


# -------------------------------------------------------------------------------------------------- VBPR

@dataclass
class VBPRConfig:
    """Sizes of the ID factors and of the content factors (``E c``), and the L2 weight (MMRec's VBPR)."""

    dim: int = 64
    content_factors: int = 64
    reg_weight: float = 1e-4
    content_dim: int = 0

    def __post_init__(self) -> None:
        check_at_least(self, dim=1, content_factors=1, reg_weight=0, content_dim=0)


def _fold_in_ids(model: ContentRecommender, seen: Interactions, items: np.ndarray,
                 user_table: torch.Tensor, item_table: torch.Tensor, known: torch.Tensor) -> None:
    """ID vectors for ``items`` from their buyers: the direction of the buyers' mean user vector, the mean
    norm of the trained item vectors, shrunk by n / (n + 1) for n buyers."""
    codes = np.flatnonzero(items)
    if not len(codes):
        return
    mean, n = model.buyer_means(seen, codes, user_table)
    scale = item_table[known].norm(dim=1).mean() * (n / (n + 1.0)).unsqueeze(1)
    idx = torch.as_tensor(codes, device=item_table.device)
    item_table[idx] = F.normalize(mean, dim=1) * scale
    known[idx] = True


@register_model("vbpr")
class VBPR(ContentRecommender):
    """VBPR: user ``[γ_u, θ_u]`` · item ``[γ_i, E c_i]`` with BPR; items without training data have no ``γ_i``."""

    config_class = VBPRConfig

    def __init__(self, config: VBPRConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, config.dim + config.content_factors)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, config.dim)))
        self.register_buffer("id_known", torch.zeros(n_items, dtype=torch.bool))

    def build(self, content_dim: int) -> None:
        self.project = nn.Linear(content_dim, self.config.content_factors, bias=False)
        nn.init.xavier_uniform_(self.project.weight)

    def prepare(self, train: Interactions) -> None:
        super().prepare(train)
        self.id_known = self.item_counts > 0

    def training_data(self, train: Interactions, seed: int) -> TripletDataset:
        return warm_triplets(train, seed)

    def compute_item_vectors(self) -> torch.Tensor:
        ids = self.item_emb * self.id_known.unsqueeze(1).to(self.item_emb.dtype)
        return torch.cat([ids, self.project(self.content)], 1)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb[users]

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        u = self.user_emb[batch["users"]]
        p = torch.cat([self.item_emb[batch["pos"]], self.project(self.content[batch["pos"]])], 1)
        n = torch.cat([self.item_emb[batch["neg"]], self.project(self.content[batch["neg"]])], 1)
        bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
        reg = (u.norm(2).pow(2) + p.norm(2).pow(2) + n.norm(2).pow(2)) / len(u)
        return {"loss": bpr + self.config.reg_weight * reg, "bpr": bpr.detach()}

    def fold_in(self, seen: Interactions, items: np.ndarray) -> None:
        _fold_in_ids(self, seen, items, self.user_emb.detach()[:, : self.config.dim], self.item_emb.data,
                     self.id_known)


# ------------------------------------------------------------------------------------------------ CLCRec

@dataclass
class CLCRecConfig:
    """Embedding size, content-encoder hidden size, InfoNCE temperature, the weight ``lam`` of the
    user–item loss against the representation–embedding loss, the share of positives represented by
    their encoded content in the user–item loss, and the L2 weight."""

    dim: int = 64
    hidden: int = 256
    temperature: float = 0.2
    lam: float = 0.5
    content_share: float = 0.5
    reg_weight: float = 1e-4
    content_dim: int = 0

    def __post_init__(self) -> None:
        check_at_least(self, dim=1, hidden=1, temperature=1e-9, lam=0, content_share=0, reg_weight=0, content_dim=0)
        if not (self.lam <= 1 and self.content_share <= 1):
            raise ValueError(f"CLCRecConfig.lam and content_share must be in [0, 1], got {self.lam}, "
                             f"{self.content_share}")


CONTRAST_CHUNK = 1024


@register_model("clcrec")
class CLCRec(ContentRecommender):
    """CLCRec-style contrastive mapping of content into the ID space; cold items use the mapped content.

    Scores are cosines: user · item, both normalised, as in the training objective.
    """

    config_class = CLCRecConfig

    def __init__(self, config: CLCRecConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.user_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, config.dim)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, config.dim)))
        self.register_buffer("id_known", torch.zeros(n_items, dtype=torch.bool))

    def build(self, content_dim: int) -> None:
        self.encoder = _tower(content_dim, self.config.hidden, self.config.dim)

    def prepare(self, train: Interactions) -> None:
        super().prepare(train)
        self.id_known = self.item_counts > 0

    def training_data(self, train: Interactions, seed: int) -> TripletDataset:
        return warm_triplets(train, seed)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        users, pos = batch["users"], batch["pos"]
        u = self.user_emb[users]
        ids, mapped = self.item_emb[pos], self.encoder(self.content[pos])
        use_content = (torch.rand(len(pos), 1, device=ids.device) < self.config.content_share).to(ids.dtype)
        reps = use_content * mapped + (1 - use_content) * ids
        # In-batch InfoNCE over chunks of CONTRAST_CHUNK rows, so the cost stays linear in the batch size.
        ui = re = u.new_zeros(())
        chunks = list(zip(*(torch.split(t, CONTRAST_CHUNK) for t in (u, reps, mapped, ids))))
        for cu, creps, cmapped, cids in chunks:
            ui = ui + _info_nce(cu, creps, self.config.temperature) / len(chunks)  # user -> her item
            re = re + _info_nce(cmapped, cids, self.config.temperature) / len(chunks)  # content -> its ID
        reg = (u.norm(2).pow(2) + ids.norm(2).pow(2)) / len(u)
        loss = self.config.lam * ui + (1 - self.config.lam) * re + self.config.reg_weight * reg
        return {"loss": loss, "user_item": ui.detach(), "content_id": re.detach()}

    def compute_item_vectors(self) -> torch.Tensor:
        known = self.id_known.unsqueeze(1)
        mapped = F.normalize(self.encoder(self.content), dim=1)
        return torch.where(known, F.normalize(self.item_emb, dim=1), mapped)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.user_emb[users], dim=1)

    def fold_in(self, seen: Interactions, items: np.ndarray) -> None:
        codes = np.flatnonzero(items)
        if not len(codes):
            return
        # Blend the mapped content with the buyers' mean user direction, trusting buyers more as n grows.
        mean, n = self.buyer_means(seen, codes, F.normalize(self.user_emb.detach(), dim=1))
        idx = torch.as_tensor(codes, device=self.device)
        mapped = F.normalize(self.encoder(self.content[idx]), dim=1)
        w = (n / (n + 1.0)).unsqueeze(1).to(mapped.dtype)
        self.item_emb.data[idx] = F.normalize((1 - w) * mapped + w * F.normalize(mean, dim=1), dim=1)
        self.id_known[idx] = True
