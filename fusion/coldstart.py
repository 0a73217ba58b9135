"""The cold-start fusion recommender ("vae_fusion"): LightGCN + a frozen content graph + a content VAE + a
count gate + the user's history content affinity.

Item ``i`` has a *learned* vector and a *generated* one:

* learned = LightGCN's item output (`mmrec.fusion.baselines.LightGCN`, over the user–item graph) plus,
  as in FREEDOM, the mean ID embedding of its ``knn_k`` nearest items in content space (a frozen kNN
  graph built once from the content vectors; its targets are items with a trained ID embedding, so a
  new item still gets the ID embeddings of the warm items that look like it);
* generated = a conditional VAE's decoder applied to the prior mean of p(z | content), i.e. a vector in
  the collaborative space made from content alone.

The score of user ``u`` for item ``i`` is ``u · (g·learned + (1 − g)·generated) + w(g)·a(u, i)`` with
g = sigmoid(a·log(1 + n) + b), ``n`` the item's count of training interactions, so an item moves from
content-driven to behaviour-driven as it gathers purchases. ``a(u, i)`` is the *history content
affinity*: the mean over u's items j of max(0, c_j · c_i)^p (``affinity_power`` p = 6) — with a high
power only near-duplicates in content count, which on H&M means colour variants of what the user
bought. Its weight w(g) = g·w_warm + (1 − g)·w_cold is learned (log-parametrised), so cold items may lean
on it more than warm ones. Users are LightGCN's user
vectors. Exact, a(u, i) multiplies every history item's content with every item's; ``affinity_k`` > 0 sums
instead over each item's k most content-similar items (`AffinityGraph`, built once), which makes scoring
cost little more than the dot products; ``affinity_train_exact`` keeps training on the exact term (the
README's cold-start "Cost" paragraph has the measured trade-off).

One ``training_step`` sums: BPR on these scores (the positive left out of its own affinity) + LightGCN's
L2 term, the VAE's reconstruction of the (detached) learned vectors of the batch's positives and
β·KL(q(z | learned, content) || p(z | content)), and BPR of the users against the *generated* vectors
(``ranking_loss``) so content-made vectors rank, not only reconstruct. With ``cold_dropout`` a share of
the batch's items are treated as unseen (count 0, no LightGCN part), which trains the gate, w_cold and the
generator for the cold case (DropoutNet's trick).

Items without training interactions (cold items of a split, items from `add_items`) have no trained ID
embedding: their vector comes from content. `update` (new purchases, no retraining) folds an embedding
into such an item from its buyers and adds the edges to the graph, but does not move the gate (see
`VAEFusion.trained_counts`). With ``cobuyer_weight`` > 0 such an item's score also gets the *co-buyer
evidence*: the mean, over its buyers, of the cosine between the user's purchase history and the buyer's
(both as sets), times that weight — who bought it says more through what else they bought than through
their user vectors. With ``profile_weight`` > 0 it also gets the *profile evidence*: how close, in content,
what the user bought is to what its buyers bought (`cobuyer_table`), which still speaks where two purchase
sets share no article. Ablations: ``gate=False`` uses the learned vector for items with training
interactions and the generated one otherwise; ``vae=False`` replaces the VAE by a plain content → ID-space
regression; ``ranking_loss=False`` drops the generated-vector BPR; ``affinity=False`` drops a(u, i).
``prior_sample=True`` (off by default) trains on generated vectors decoded from a draw of p(z | content)
instead of its mean, one of the attempts to make the VAE's variance matter (the README has its numbers).
``posterior_rank=True`` (off by default) adds BPR on the VAE's reconstructions of the batch's items, decoded
from draws of q(z | learned, content), so the decoder that makes new items' vectors is trained to rank from
the latents of items with purchases (CVAR's idea); another such attempt.

Warm use on an MMRec folder whose raw ids are H&M articles (hm5core)::

    catalog, _ = hm.load(hm_root, transactions=False, images=False)
    model = create_model("vae_fusion", split.train.n_users, split.train.n_items)
    recipe = ContentRecipe()                                     # MiniLM on the catalog's text fields
    model.set_content(recipe.embed_mmrec_folder(folder, catalog, cache="runs/embed-cache"), recipe=recipe)
    model.fit(split.train, train_config=TrainConfig(lr=5e-3, eval_every=5, patience=4), evaluate_fn=...)

Defaults were chosen on validation data (the README's cold-start section has the grids and figures).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmrec.data import Catalog, Interactions
from mmrec.fusion.baselines import LightGCN, csr_tensor, normalized_adjacency
from mmrec.config import check_at_least
from mmrec.content import ContentRecipe
from mmrec.fusion.cold_vae import (AffinityGraph, AffinityWeight, ContentRegressor, ContentVAE, CountGate,
                                   add_history_affinity_, csr_row_sums, history_affinity_candidates,
                                   history_affinity_pairs, history_mean, knn_rows, lightgcn_rows, normalize_rows)
from mmrec.recommender import register_model
from mmrec.sampling import TripletDataset


@dataclass
class VAEFusionConfig:
    """Settings of `VAEFusion` (LightGCN's ``dim``/``n_layers``/``reg_weight`` mean what they mean there)."""

    dim: int = 128
    n_layers: int = 2
    reg_weight: float = 1e-3
    content_dim: int = 0            # width of the content vectors; 0: taken from `set_content`
    similarity_dims: int = 0        # the affinity and content graph compare the first N content dims only (0: all)
    content_graph: bool = True      # add the frozen content kNN propagation to learned item vectors
    knn_k: int = 10
    latent_dim: int = 32
    hidden_dim: int = 128
    beta: float = 0.1               # weight of KL(q || p)
    recon_weight: float = 1.0
    rank_weight: float = 0.1        # weight of BPR on generated vectors
    cold_dropout: float = 0.1       # share of batch items treated as unseen
    edge_dropout: float = 0.0       # FREEDOM's degree-sensitive pruning: share of graph edges dropped per step
    ranking_loss: bool = True
    gate: bool = True
    vae: bool = True
    gate_a_init: float = 1.0
    gate_b_init: float = 0.0
    affinity: bool = True           # add the user's history content affinity to every item's score
    affinity_power: float = 6.0
    affinity_init: float = 20.0
    affinity_sample: int = 0        # training: a history's affinity from ≤ this many sampled items (0: all)
    affinity_k: int = 0             # affinity over each item's k most content-similar items (sparse graph; 0: exact)
    affinity_train_exact: bool = False  # train on the exact affinity; the affinity_k graph then serves scoring only
    cold_offset: float = 0.0        # added to the scores of items without a trained ID embedding (`mmrec.hybrid`)
    cobuyer_weight: float = 30.0    # after `update`: weight of the co-buyer evidence on items without a trained ID
    profile_weight: float = 3.0     # after `update`: weight of the buyers' content-profile evidence on those items
    profile_power: float = 4.0      # ... as max(0, cos)^power
    prior_sample: bool = False      # training: generated vectors from a draw of the VAE's prior (tried; off)
    posterior_rank: bool = False    # training: BPR on the VAE's reconstructions of batch items (tried; off)

    def __post_init__(self) -> None:
        check_at_least(self, dim=1, latent_dim=1, hidden_dim=1, n_layers=0, knn_k=1, reg_weight=0, beta=0,
                       recon_weight=0, rank_weight=0, content_dim=0, similarity_dims=0, affinity_k=0,
                       affinity_sample=0, cobuyer_weight=0, profile_weight=0)
        if self.content_dim and self.similarity_dims > self.content_dim:
            raise ValueError(f"VAEFusionConfig.similarity_dims ({self.similarity_dims}) exceeds content_dim "
                             f"({self.content_dim})")
        for name in ("cold_dropout", "edge_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"VAEFusionConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.affinity_power <= 0 or self.affinity_init <= 0:
            raise ValueError(f"VAEFusionConfig.affinity_power and affinity_init must be > 0, got "
                             f"{self.affinity_power}, {self.affinity_init}")
        if self.profile_power <= 0:
            raise ValueError(f"VAEFusionConfig.profile_power must be > 0, got {self.profile_power}")
        if self.posterior_rank and not self.vae:
            raise ValueError("VAEFusionConfig.posterior_rank needs vae: a regression has no posterior to rank through")
        if self.gate_a_init <= 0:
            raise ValueError(f"VAEFusionConfig.gate_a_init must be > 0, got {self.gate_a_init}")


def _tensor_key(*tensors: torch.Tensor) -> tuple:
    """What identifies the tensors' current contents for a derived cache: storage, in-place version, shape and
    device (a replaced, loaded-into, resized or moved tensor gives a new key)."""
    return tuple((t.data_ptr(), t._version, tuple(t.shape), t.device) for t in tensors)


def _bpr(users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """BPR of each user's vector against a positive and a negative item vector, averaged over the batch."""
    return -F.logsigmoid((users * positives).sum(1) - (users * negatives).sum(1)).mean()


@register_model("vae_fusion")
class VAEFusion(LightGCN):
    """LightGCN backbone + frozen content graph + conditional VAE + count gate, for warm and cold items.

    Call `set_content` with ``[n_items, content_dim]`` vectors (every item, cold ones included) before
    `fit`. After fitting: `recommend` (``candidates="all" | "cold" | "warm" | codes``), `add_items`,
    `update`, `explain`, `recommend_for_unknown`, `save_pretrained` / `from_pretrained`.
    """

    config_class = VAEFusionConfig
    item_edges = (("knn_indices", "knn_values"),)

    def __init__(self, config: VAEFusionConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        self.register_buffer("content", torch.zeros(n_items, config.content_dim))
        self.register_buffer("counts", torch.zeros(n_items))
        self.register_buffer("has_id", torch.zeros(n_items, dtype=torch.bool))
        self.register_buffer("knn_indices", torch.zeros(2, 0, dtype=torch.long))
        self.register_buffer("knn_values", torch.zeros(0))
        self.content_set = False
        self.generator = self._make_generator() if config.content_dim else None
        self.gate = CountGate(config.gate_a_init, config.gate_b_init)
        self.affinity = AffinityWeight(config.affinity_init)
        self._fused: tuple[torch.Tensor, torch.Tensor] | None = None
        self._affinity_graph: AffinityGraph | None = None
        self._knn_csr: tuple[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._similarity: tuple[tuple, torch.Tensor] | None = None
        self._cobuyers: tuple[tuple, tuple | None] | None = None

    def _make_generator(self) -> ContentVAE | ContentRegressor:
        cfg = self.config
        if cfg.vae:
            return ContentVAE(cfg.content_dim, cfg.dim, cfg.latent_dim, cfg.hidden_dim)
        return ContentRegressor(cfg.content_dim, cfg.dim, cfg.hidden_dim)

    # -- content and data --------------------------------------------------------------------------
    def set_content(self, vectors: np.ndarray | torch.Tensor, recipe: ContentRecipe | None = None) -> None:
        """Item content vectors ``[n_items, content_dim]`` (row = item code); rows are L2-normalised and an
        all-zero row (an item with no content) is allowed. With ``content_dim`` 0 the width is taken from
        ``vectors`` (and the content networks are built now). ``recipe``, the `ContentRecipe` that made
        them, is saved with the model so `add_items` can embed a catalog the same way later."""
        array = normalize_rows(vectors)
        if self.config.content_dim == 0 and array.ndim == 2:
            self.config = replace(self.config, content_dim=array.shape[1])  # validated again: similarity_dims
            self.generator = self._make_generator().to(self.device)
        if array.shape != (self.n_items, self.config.content_dim):
            raise ValueError(f"content vectors have shape {array.shape}, the model needs "
                             f"({self.n_items}, {self.config.content_dim}) (n_items, config.content_dim)")
        self.content = torch.as_tensor(array, device=self.device)
        self._affinity_graph = None
        self.content_set = True
        self.content_recipe = recipe
        self._invalidate()

    def prepare(self, train: Interactions) -> None:
        """Graph, counts, which items have an ID embedding, and the content kNN graph over them."""
        if not self.content_set:
            raise RuntimeError("VAEFusion needs item content: call set_content(vectors) before fit()")
        super().prepare(train)
        self.counts = torch.as_tensor(train.unique_pairs().item_counts(), dtype=torch.float32, device=self.device)
        self.has_id = self.counts > 0
        with torch.no_grad():
            self.item_emb[~self.has_id] = 0.0  # never a positive or a negative: stays zero
        self.knn_indices, self.knn_values = self.knn_indices[:, :0], self.knn_values[:0]
        self._build_knn(torch.arange(self.n_items, device=self.device))
        if self.config.affinity:
            self.affinity_graph()  # built before the training loop, not inside its first step

    def similarity_content(self) -> torch.Tensor:
        """The content that the affinity, the content graph, `explain` and the unknown-user fallback compare:
        its first ``similarity_dims`` columns, rows renormalised (all of it when 0); the generator reads all.
        With ``[text, photo]`` content and ``similarity_dims`` the text's width, the photo reaches only the
        generator: near-duplicates in text (an article's colour variants) are what the affinity finds, and
        their photos differ in colour, so a photo half there dilutes it."""
        n = self.config.similarity_dims
        if not n or n == self.content.shape[1]:
            return self.content
        key = _tensor_key(self.content)
        if self._similarity is None or self._similarity[0] != key:
            self._similarity = (key, F.normalize(self.content[:, :n], dim=1))
        return self._similarity[1]

    def _build_knn(self, rows: torch.Tensor) -> None:
        """Append the content-graph edges of ``rows`` (rows already in the graph keep theirs)."""
        targets = torch.nonzero(self.has_id).flatten() if self.config.content_graph else rows[:0]
        indices, values = knn_rows(self.similarity_content(), rows, targets, self.config.knn_k)
        self.knn_indices = torch.cat([self.knn_indices, indices.to(self.device)], 1)
        self.knn_values = torch.cat([self.knn_values, values.to(self.device)])

    def _knn_parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The content graph's edges as CSR parts ``(indptr, columns, values)``, rebuilt when the edge
        buffers change (replaced, loaded into in place, moved)."""
        key = _tensor_key(self.knn_indices, self.knn_values)
        if self._knn_csr is None or self._knn_csr[0] != key or len(self._knn_csr[1][0]) != self.n_items + 1:
            rows, cols = self.knn_indices
            order = torch.argsort(rows, stable=True)
            indptr = torch.zeros(self.n_items + 1, dtype=torch.long, device=rows.device)
            indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=self.n_items), 0)
            self._knn_csr = (key, (indptr, cols[order], self.knn_values[order]))
        return self._knn_csr[1]

    def _content_neighbours(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The content-graph propagation of ID embeddings (mean ID embedding of each item's ``knn_k``
        nearest items), for every item or at ``items`` only (a training step's)."""
        indptr, cols, values = self._knn_parts()
        if items is None:
            return torch.sparse.mm(csr_tensor(indptr, cols, values), self.item_emb)
        return csr_row_sums(indptr, cols, items, self.item_emb, values)

    def training_data(self, train: Interactions, seed: int) -> TripletDataset:
        return TripletDataset(train, seed, item_pool=torch.nonzero(self.has_id).flatten().cpu().numpy())

    # -- vectors -------------------------------------------------------------------------------------
    def _parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """LightGCN users, LightGCN items, content-graph propagation of item ID embeddings."""
        users, items = LightGCN.embeddings(self)
        return users, items, self._content_neighbours()

    def affinity_graph(self) -> AffinityGraph | None:
        """The sparse top-``affinity_k`` affinity graph of the content, or None for the exact affinity. It is
        derived from the content (so not saved) and built on first use, again after `add_items`: a build from
        the same content is the same graph, ties included, so a saved and loaded model scores identically
        (growing it in place, `AffinityGraph.extend`, can break ties between equal weights differently). A
        changed ``affinity_k`` or ``affinity_power`` in the config also rebuilds it."""
        if not self.config.affinity_k:
            return None
        graph, cfg = self._affinity_graph, self.config
        if graph is None or graph.n != len(self.content) or graph.neighbours.device != self.content.device \
                or graph.k != cfg.affinity_k or graph.power != float(cfg.affinity_power):
            graph = self._affinity_graph = AffinityGraph(self.similarity_content(), self.config.affinity_power,
                                                         self.config.affinity_k)
        return graph

    def trained_counts(self) -> torch.Tensor:
        """The gate's input per item: its interaction count where its ID embedding was trained, else 0.
        Buyers that arrive by `update` after training fold into the item's embedding but do not move the
        gate: on H&M, trusting an embedding folded in from up to 10 buyers as much as a trained one made
        new items rank worse than their content alone did (the warm-up curve in the README)."""
        return self.counts * self.has_id

    def _gate(self, counts: torch.Tensor) -> torch.Tensor:
        """The weight of the learned vector per item: the count gate, or 0/1 by count without it."""
        return self.gate(counts) if self.config.gate else (counts > 0).to(self.item_emb.dtype)

    def _fuse(self, learned: torch.Tensor, generated: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        g = self._gate(counts)[:, None]
        return g * learned + (1 - g) * generated

    @torch.no_grad()
    def item_vectors(self) -> dict[str, torch.Tensor]:
        """Every item's ``learned``, ``generated`` and ``fused`` vectors and its gate weight ``g``."""
        _, items, knn = self._parts()
        learned = items + knn
        generated = self.generator.generate(self.content)
        counts = self.trained_counts()
        return {"learned": learned, "generated": generated, "fused": self._fuse(learned, generated, counts),
                "g": self._gate(counts)}

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Users and fused items (cached while in eval mode)."""
        if not self.training and self._fused is not None:
            return self._fused
        users, items, knn = self._parts()
        fused = self._fuse(items + knn, self.generator.generate(self.content), self.trained_counts())
        if not self.training:
            self._fused = (users, fused)
        return users, fused

    def score(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """users · fused items, plus (with ``affinity``) the weighted history content affinity, plus
        ``cold_offset`` on items without a trained ID embedding."""
        scores = self._add_cold_offset(super().score(users, items), items)
        scores = self._add_cobuyer_evidence(scores, users, items)
        if not self.config.affinity:
            return scores
        counts = self.trained_counts() if items is None else self.trained_counts()[items]
        return add_history_affinity_(scores, self.seen_indptr, self.seen_indices, users, self.similarity_content(),
                                     self.config.affinity_power, self.affinity(self._gate(counts)), items,
                                     graph=self.affinity_graph())

    def _add_cold_offset(self, scores: torch.Tensor, items: torch.Tensor | None) -> torch.Tensor:
        """``scores`` with ``cold_offset`` added where the item (all items, or ``items``) has no trained ID
        embedding: one number that puts content-made and trained items on one scale in a whole-catalogue
        ranking (chosen on valid hybrid Recall by `mmrec.hybrid.fit_cold_offset`; 0 leaves scores as they are)."""
        if not self.config.cold_offset:
            return scores
        untrained = ~self.has_id if items is None else ~self.has_id[items]
        return scores + self.config.cold_offset * untrained.to(scores.dtype)

    def cobuyer_table(self) -> tuple | None:
        """What the buyers' evidence needs, derived from the seen pairs (so never saved): the *folded*
        items (buyers from `update`, no trained ID embedding), each item's column among them (-1 if not
        folded), the users' purchase sets as rows of unit length ``H`` (sparse, users × items), the mean of
        each folded item's buyers' rows ``B`` (sparse, items × folded), the users' purchases of trained items
        ``T`` (sparse, users × items) and the folded items' buyer profiles ``P`` (folded × content dims).
        A user's co-buyer evidence for f is ``(H @ B)[u, f]``: the mean cosine of the user's purchase set
        with each buyer's. Their profile evidence is max(0, cos(profile(u), P[f]))^p, a user's *profile*
        being the unit mean of the `similarity_content` of the trained items they bought and P[f] the unit
        mean of f's buyers' profiles: what kind of shopper buys f, read through what else they bought even
        where two purchase sets share no article. None when no item is folded. Sparse where it can be, so a
        catalogue with many new items costs what its purchases cost."""
        key = _tensor_key(self.seen_indices, self.counts, self.has_id)
        if self._cobuyers is not None and self._cobuyers[0] == key:
            return self._cobuyers[1]
        folded = torch.nonzero(~self.has_id & (self.counts > 0)).flatten()
        table = None
        if len(folded):
            import scipy.sparse as sp

            seen = self._seen_pairs()
            users, items = seen.users, seen.items
            length = np.diff(self.seen_indptr.cpu().numpy())
            history = sp.csr_matrix((1.0 / np.sqrt(length[users]), (users, items)), shape=(self.n_users, self.n_items),
                                    dtype=np.float32)
            column = np.full(self.n_items, -1, dtype=np.int64)
            column[folded.cpu().numpy()] = np.arange(len(folded))
            bought = column[items] >= 0
            buyers = sp.csr_matrix((np.ones(int(bought.sum()), dtype=np.float32), (column[items[bought]], users[bought])),
                                   shape=(len(folded), self.n_users))
            buyers = sp.diags(1.0 / np.asarray(buyers.sum(1)).ravel()).astype(np.float32) @ buyers
            trained = self.has_id.cpu().numpy()[items]
            owned = sp.csr_matrix((np.ones(int(trained.sum()), dtype=np.float32), (users[trained], items[trained])),
                                  shape=(self.n_users, self.n_items))
            who = np.unique(users[bought])
            profiles = self._profiles(owned, who)
            buyer_profiles = torch.as_tensor(buyers[:, who] @ profiles.cpu().numpy(), device=self.device)
            table = (folded, torch.as_tensor(column, device=self.device), history, (buyers @ history).T.tocsr(),
                     owned, F.normalize(buyer_profiles, dim=1))
        self._cobuyers = (key, table)
        return table

    def _profiles(self, owned: Any, users: np.ndarray) -> torch.Tensor:
        """Unit means of the `similarity_content` of the trained items each of ``users`` bought (rows of the
        sparse ``owned``); zero rows for users without one."""
        content = self.similarity_content().detach().cpu().numpy()
        return F.normalize(torch.as_tensor(owned[users] @ content, device=self.device), dim=1)

    def _add_cobuyer_evidence(self, scores: torch.Tensor, users: torch.Tensor, items: torch.Tensor | None) -> torch.Tensor:
        """``scores`` (of all items, of the codes ``items``, or of each user's own candidates ``items``
        ``[len(users), c]``) plus, on folded items, ``cobuyer_weight`` × the co-buyer evidence and
        ``profile_weight`` × the buyers' profile evidence (`cobuyer_table`)."""
        cfg = self.config
        table = self.cobuyer_table() if cfg.cobuyer_weight or cfg.profile_weight else None
        if table is None:
            return scores
        folded, column, history, buyers, owned, buyer_profiles = table
        rows = users.cpu().numpy()
        evidence = cfg.cobuyer_weight * torch.as_tensor((history[rows] @ buyers).toarray(), device=scores.device)
        if cfg.profile_weight:
            cosine = self._profiles(owned, rows) @ buyer_profiles.T
            evidence = evidence + cfg.profile_weight * cosine.clamp(min=0).pow(cfg.profile_power).to(evidence.dtype)
        if items is None:
            return scores.index_add_(1, folded, evidence.to(scores.dtype))
        where = column[items]
        picked = evidence.gather(1, where.clamp(min=0)) if items.dim() == 2 else evidence[:, where.clamp(min=0)]
        return scores + picked.to(scores.dtype) * (where >= 0).to(scores.dtype)

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """`score` of each user's own candidates ``items [len(users), c]``, the affinity over the candidates
        only (what re-ranks a retrieval index's proposals)."""
        users_all, fused = self.embeddings()
        scores = self._add_cold_offset(torch.einsum("ud,ucd->uc", users_all[users], fused[items]), items)
        scores = self._add_cobuyer_evidence(scores, users, items)
        if not self.config.affinity:
            return scores
        affinity = history_affinity_candidates(self.seen_indptr, self.seen_indices, users, items,
                                               self.similarity_content(), self.config.affinity_power,
                                               graph=self.affinity_graph())
        return scores + self.affinity(self._gate(self.trained_counts()[items])) * affinity

    def _invalidate(self) -> None:
        self._cache, self._fused = None, None

    def train(self, mode: bool = True) -> "VAEFusion":
        self._fused = None
        return super().train(mode)

    # -- training ------------------------------------------------------------------------------------
    def _pruned_adjacency(self) -> torch.Tensor:
        """The user–item graph with ``edge_dropout`` of its edges dropped, an edge (u, i) kept with
        probability ∝ 1/sqrt(deg u · deg i) (FREEDOM's degree-sensitive pruning), renormalised."""
        pairs = self._seen_pairs()
        degree_u = np.bincount(pairs.users, minlength=self.n_users)
        degree_i = np.bincount(pairs.items, minlength=self.n_items)
        weights = torch.as_tensor(1.0 / np.sqrt(degree_u[pairs.users] * degree_i[pairs.items]))
        keep = torch.multinomial(weights, int(len(pairs) * (1.0 - self.config.edge_dropout))).numpy()
        return normalized_adjacency(pairs.select(keep), self.n_users, self.n_items).to(self.device)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.config.edge_dropout > 0:
            full, self.adjacency = self.adjacency, self._pruned_adjacency()
            try:
                return self._training_step(batch)
            finally:
                self.adjacency = full
        return self._training_step(batch)

    def _training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.config
        # Every item vector (LightGCN, content graph, content networks) is made once per distinct item of
        # the batch, and only for those: the rest of the catalogue gets no gradient anyway.
        items, inverse = torch.unique(torch.cat([batch["pos"], batch["neg"]]), return_inverse=True)
        u, lgcn_items = lightgcn_rows(self.adjacency, self.user_emb, self.item_emb, cfg.n_layers,
                                      batch["users"], items)
        knn_items = self._content_neighbours(items)
        positives = torch.unique(inverse[: len(u)])  # rows of the distinct positives in `items`
        target = (lgcn_items[positives] + knn_items[positives]).detach()
        generated_all, vae = self.generator.generate_with_losses(self.content[items], target, positives,
                                                                 sample=cfg.prior_sample)
        train_graph = None if cfg.affinity_train_exact else self.affinity_graph()
        similarity = self.similarity_content()
        vectors = []
        for key, rows in (("pos", inverse[: len(u)]), ("neg", inverse[len(u):])):
            idx = batch[key]
            lgcn, knn, counts = lgcn_items[rows], knn_items[rows], self.counts[idx]
            if cfg.cold_dropout > 0:
                cold = torch.rand(len(idx), device=idx.device) < cfg.cold_dropout
                lgcn = torch.where(cold[:, None], torch.zeros_like(lgcn), lgcn)
                counts = torch.where(cold, torch.zeros_like(counts), counts)
            generated = generated_all[rows]
            score = (u * self._fuse(lgcn + knn, generated, counts)).sum(1)
            if cfg.affinity:
                score = score + self.affinity(self._gate(counts)) * history_affinity_pairs(
                    self.seen_indptr, self.seen_indices, batch["users"], idx, similarity, cfg.affinity_power,
                    sample=cfg.affinity_sample, graph=train_graph)
            vectors.append((generated, score))
        (gen_p, score_p), (gen_n, score_n) = vectors
        bpr = -F.logsigmoid(score_p - score_n).mean()
        ego = (self.user_emb[batch["users"]], self.item_emb[batch["pos"]], self.item_emb[batch["neg"]])
        reg = sum(e.norm(2).pow(2) for e in ego) / len(batch["users"])
        loss = bpr + cfg.reg_weight * reg + cfg.recon_weight * vae["recon"] + cfg.beta * vae["kl"]
        out = {"bpr": bpr.detach(), "reg": reg.detach(), "recon": vae["recon"].detach(), "kl": vae["kl"].detach()}
        if cfg.ranking_loss:
            rank = _bpr(u, gen_p, gen_n)
            loss = loss + cfg.rank_weight * rank
            out["rank_generated"] = rank.detach()
        if cfg.posterior_rank:
            recon = self.generator.reconstruct((lgcn_items + knn_items).detach(), self.content[items])
            rank = _bpr(u, recon[inverse[: len(u)]], recon[inverse[len(u):]])
            loss = loss + cfg.rank_weight * rank
            out["rank_posterior"] = rank.detach()
        return {"loss": loss, **out}

    # -- inference -----------------------------------------------------------------------------------
    def recommend_for_unknown(self, k: int = 10, candidates: Any = "all") -> dict[str, Any]:
        """The fallback for a user the model does not know: items ranked by content similarity to the
        interaction-weighted mean content of all items ("popular by content"), flagged as a fallback."""
        weights = self.counts / self.counts.sum().clamp(min=1.0)
        content = self.similarity_content()
        centroid = F.normalize(weights @ content, dim=0)
        scores = content @ centroid
        cand = self.candidate_codes(candidates)
        codes = torch.as_tensor(np.arange(self.n_items) if cand is None else cand, device=self.device)
        top = torch.topk(scores[codes], min(k, len(codes)))
        return {"items": codes[top.indices].cpu().numpy(), "scores": top.values.cpu().numpy(),
                "fallback": "popular_by_content"}

    def explain(self, user: int, item: int, *, n: int = 3, catalog: Catalog | None = None) -> list[dict[str, Any]]:
        """The ``n`` items of ``user``'s history closest to ``item`` in content space (cosine), each with the
        catalog attributes it shares with ``item`` when ``catalog`` (holding the model's item ids) is given."""
        if not 0 <= user < self.n_users:
            raise ValueError(f"user code {user} is outside 0..{self.n_users - 1}")
        if not 0 <= item < self.n_items:
            raise ValueError(f"item code {item} is outside 0..{self.n_items - 1}")
        history = self.seen_indices[self.seen_indptr[user]:self.seen_indptr[user + 1]]
        content = self.similarity_content()
        sims = content[history] @ content[item]
        top = torch.topk(sims, min(n, len(history)))
        out = []
        for code, sim in zip(history[top.indices].tolist(), top.values.tolist()):
            entry: dict[str, Any] = {"item": code, "similarity": sim}
            if self.item_ids is not None:
                entry["id"] = str(self.item_ids[code])
            if catalog is not None and self.item_ids is not None:
                a, b = catalog.index_of([self.item_ids[code], self.item_ids[item]])
                entry["shared"] = {name: str(col[a]) for name, col in catalog.attributes.items()
                                   if str(col[a]) and col[a] == col[b]}
            out.append(entry)
        return out

    # -- growing without retraining ------------------------------------------------------------------
    def add_items(self, items: Catalog | Sequence[str], vectors: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        """Append new items and return their codes: a `Catalog` from any reader (embedded by the model's
        saved `ContentRecipe`), or external ids with their content ``vectors`` ``[len(ids), content_dim]``
        (zero rows allowed). Nothing is trained: the new items have no interactions and no ID embedding
        (zero rows), their content-graph edges go to their ``knn_k`` nearest items with an ID embedding, so
        their vector is the gate's mix of those neighbours and the VAE's generated vector. Existing items'
        vectors are unchanged."""
        if self.item_ids is None:
            raise RuntimeError("add_items needs a fitted model (it extends the item vocabulary)")
        if isinstance(items, Catalog):
            if vectors is None:
                if self.content_recipe is None:
                    raise ValueError("add_items(catalog) needs the model's content recipe (set_content(..., "
                                     "recipe=...)), or pass the new items' vectors")
                vectors = self.content_recipe.embed(items)
            items = list(items.ids)
        elif vectors is None:
            raise ValueError("add_items(ids) needs the new items' content vectors")
        ids = [str(i) for i in items]
        array = normalize_rows(vectors)
        if array.shape != (len(ids), self.config.content_dim):
            raise ValueError(f"{len(ids)} new item ids need content vectors of shape "
                             f"({len(ids)}, {self.config.content_dim}), got {array.shape}")
        known, seen = set(self.item_ids), set()
        for item_id in ids:
            if item_id in known or item_id in seen:
                problem = "already in the model" if item_id in known else "given twice"
                raise ValueError(f"item id {item_id!r} is {problem}")
            seen.add(item_id)
        m, dev = len(ids), self.device
        codes = np.arange(self.n_items, self.n_items + m)
        self.n_items += m
        self.item_ids = np.concatenate([self.item_ids, np.asarray(ids, dtype=object)])
        with torch.no_grad():
            self.item_emb = torch.nn.Parameter(torch.cat([self.item_emb, self.item_emb.new_zeros(m, self.config.dim)]))
        self.content = torch.cat([self.content, torch.as_tensor(array, device=dev)])
        self.counts = torch.cat([self.counts, torch.zeros(m, device=dev)])
        self.has_id = torch.cat([self.has_id, torch.zeros(m, dtype=torch.bool, device=dev)])
        self._build_knn(torch.as_tensor(codes, device=dev))
        self._rebuild_graph()
        return codes

    def update(self, new: Interactions) -> int:
        """Warm-up without retraining. Rows of ``new`` (users and items named by the model's ids) join the
        seen pairs: they are excluded from later recommendations, raise the items' counts (so the gate
        moves them toward their learned vectors) and become edges of the LightGCN graph, whose
        propagation of the fixed embeddings then reaches the items (for a new item, its buyers' vectors).
        No parameter changes. Returns the number of new (user, item) pairs."""
        if self.user_ids is None or self.item_ids is None:
            raise RuntimeError("update needs a fitted model")
        user_index = {u: i for i, u in enumerate(self.user_ids)}
        item_index = {v: i for i, v in enumerate(self.item_ids)}
        users_raw = [str(new.user_ids[c]) for c in new.users]
        items_raw = [str(new.item_ids[c]) for c in new.items]
        for raw, index, what in ((users_raw, user_index, "user"), (items_raw, item_index, "item")):
            unknown = sorted({r for r in raw if r not in index})
            if unknown:
                raise KeyError(f"update: {len(unknown)} {what} id(s) unknown to the model, e.g. {unknown[:3]}"
                               + (" (add them with add_items first)" if what == "item" else ""))
        users = np.fromiter((user_index[r] for r in users_raw), np.int64, len(users_raw))
        items = np.fromiter((item_index[r] for r in items_raw), np.int64, len(items_raw))
        old = self._seen_pairs()
        old_keys = set((old.users * self.n_items + old.items).tolist())
        pairs = Interactions(np.concatenate([old.users, users]), np.concatenate([old.items, items]),
                             self.user_ids, self.item_ids).unique_pairs()
        added = len(pairs) - len(old_keys)
        indptr, indices = pairs.csr()
        self.seen_indptr = torch.as_tensor(indptr, device=self.device)
        self.seen_indices = torch.as_tensor(indices, device=self.device)
        self.counts = torch.as_tensor(pairs.item_counts(), dtype=torch.float32, device=self.device)
        self._fold_in(pairs)
        self._rebuild_graph()
        return added

    @torch.no_grad()
    def _fold_in(self, pairs: Interactions) -> None:
        """Give items without a trained ID embedding that now have buyers one: the mean direction of their
        buyers' user embeddings, at the mean length of the trained item embeddings (a trained item points
        where its buyers do)."""
        items = torch.nonzero(~self.has_id & (self.counts > 0)).flatten()
        if not len(items):
            return
        by_item = Interactions(pairs.items, pairs.users, pairs.item_ids, pairs.user_ids).csr()
        ptr, idx = (torch.as_tensor(a, device=self.device) for a in by_item)
        mean, _ = history_mean(ptr, idx, items, self.user_emb)
        length = self.item_emb[self.has_id].norm(dim=1).mean()
        self.item_emb[items] = F.normalize(mean, dim=1) * length

    def _seen_pairs(self) -> Interactions:
        ptr, idx = self.seen_indptr.cpu().numpy(), self.seen_indices.cpu().numpy()
        users = np.repeat(np.arange(self.n_users), np.diff(ptr))
        return Interactions(users, idx, np.arange(self.n_users).astype(str), np.arange(self.n_items).astype(str))

    def _rebuild_graph(self) -> None:
        self.adjacency = normalized_adjacency(self._seen_pairs(), self.n_users, self.n_items).to(self.device)
        self._invalidate()

    def load_pretrained_state(self, state: dict[str, torch.Tensor]) -> None:
        super().load_pretrained_state(state)  # LightGCN rebuilds its graph from the seen pairs
        self.content_set = True
        self._affinity_graph = None
        self._invalidate()
