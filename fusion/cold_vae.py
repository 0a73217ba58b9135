"""Parts of the cold-start fusion recommender: the frozen content kNN graph, the conditional VAE (or plain
regression) from content into the collaborative space, the count gate, the history content affinity (exact,
or through the sparse `AffinityGraph`) and LightGCN's propagation at a training batch's rows only (item
content vectors come from `mmrec.content`).

`mmrec.fusion.coldstart.VAEFusion` puts them together; they are plain functions and modules here so each
can be read and tested on its own.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmrec.fusion.baselines import csr_tensor



def normalize_rows(vectors: np.ndarray | torch.Tensor) -> np.ndarray:
    """Rows scaled to unit L2 norm as float32; an all-zero row (an item with no content) stays zero. NaN or
    infinite values are refused: silently zeroed, such an item would still be ranked, on no content."""
    array = np.asarray(vectors.detach().cpu() if isinstance(vectors, torch.Tensor) else vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"content vectors must be a [n_items, C] matrix, got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad):
        raise ValueError(f"{len(bad)} content vector(s) have NaN or infinite values (rows {bad[:5].tolist()}); "
                         f"give an item without content an all-zero row")
    wide = array.astype(np.float64)  # a float32 row near 1e38 has a norm float32 cannot hold (it was zeroed)
    norms = np.linalg.norm(wide, axis=1, keepdims=True)
    return np.where(norms > 1e-12, wide / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def power_(x: torch.Tensor, power: float) -> torch.Tensor:
    """``x ** power`` in place. A whole power up to 64 goes by repeated squaring (a few multiplications):
    torch's ``pow`` with an exponent other than 2 or 3 calls the general power per element, several times
    slower, and the affinity applies it to every (history item, item) product."""
    n = int(power)
    if n != power or not 1 <= n <= 64:
        return x.pow_(power)
    while not n & 1:            # x^(2^t) for the trailing zero bits of n
        x.mul_(x)
        n >>= 1
    base = x.clone() if n > 1 else x
    while n > 1:                # the remaining bits, lowest first: x collects base^(2^b) where bit b is set
        n >>= 1
        base.mul_(base)
        if n & 1:
            x.mul_(base)
    return x


# --------------------------------------------------------------------------------- content kNN graph

def knn_rows(content: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor, k: int,
             block: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges of a frozen content graph: each item of ``rows`` to its ``k`` nearest ``targets`` (cosine,
    itself excluded), weight 1/k (FREEDOM's symmetric normalisation of a k-regular kNN graph).

    Returns ``(indices [2, E], values [E])``. Rows whose content is all zeros get no edges (no evidence
    of similarity); so does everything when ``targets`` is empty.
    """
    if not len(rows) or not len(targets) or k < 1:
        return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0)
    k = min(k, len(targets))
    tgt = content[targets]
    usable = content[rows].norm(dim=1) > 0
    out_rows, out_cols = [], []
    for start in range(0, len(rows), block):
        r = rows[start:start + block]
        sim = content[r] @ tgt.t()
        sim[r[:, None] == targets[None, :]] = -math.inf          # no self loops
        sim[:, tgt.norm(dim=1) == 0] = -math.inf                  # zero content is nobody's neighbour
        top = torch.topk(sim, k, dim=1)
        keep = torch.isfinite(top.values) & usable[start:start + block, None]
        out_rows.append(r[:, None].expand(-1, k)[keep])
        out_cols.append(targets[top.indices][keep])
    indices = torch.stack([torch.cat(out_rows), torch.cat(out_cols)])
    return indices, torch.full((indices.shape[1],), 1.0 / k)


# -------------------------------------------------------------------------------- content generators

def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with LeakyReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


class ContentVAE(nn.Module):
    """Conditional VAE from content ``c`` into the collaborative space.

    Encoder q(z | x, c) with x the warm item embedding, prior p(z | c), decoder (z, c) → x̂. `generate`
    is the deterministic content-only path used for items: prior mean → decoder.
    """

    def __init__(self, content_dim: int, dim: int, latent_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.encoder = mlp([dim + content_dim, hidden_dim, 2 * latent_dim])
        self.prior = mlp([content_dim, hidden_dim, 2 * latent_dim])
        self.decoder = mlp([latent_dim + content_dim, hidden_dim, dim])

    def _content_terms(self, content: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What depends on the content alone: the prior's mean and log-variance, and the decoder's first
        layer applied to the content half of its input (bias included)."""
        mu, logvar = self.prior(content).chunk(2, dim=-1)
        return mu, logvar, self._content_term(content)

    def _content_term(self, content: torch.Tensor) -> torch.Tensor:
        """The decoder's first layer applied to the content half of its input (bias included)."""
        first = self.decoder[0]
        return F.linear(content, first.weight[:, first.in_features - content.shape[-1]:], first.bias)

    @staticmethod
    def _draw(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """A reparameterised draw from N(mu, exp(logvar)), the log-variance clamped to [-10, 10]."""
        return mu + torch.randn_like(mu) * (0.5 * logvar.clamp(-10, 10)).exp()

    def _decode(self, z: torch.Tensor, content_term: torch.Tensor) -> torch.Tensor:
        """The decoder on ``[z, c]``, its first layer's content half given as ``content_term``."""
        hidden = F.linear(z, self.decoder[0].weight[:, : z.shape[1]]) + content_term
        return self.decoder[1:](hidden)

    def generate(self, content: torch.Tensor) -> torch.Tensor:
        """Content → collaborative vector through the prior mean."""
        mu, _, term = self._content_terms(content)
        return self._decode(mu, term)

    def losses(self, target: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction (squared error per item, summed over dims) of ``target`` through a posterior
        sample, and KL(q(z | target, c) || p(z | c)), both averaged over the batch."""
        return self._losses(target, content, *self._content_terms(content))

    def generate_with_losses(self, content: torch.Tensor, target: torch.Tensor, rows: torch.Tensor,
                             sample: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`generate` (``content``) and `losses` (``target`` of the items ``content[rows]``) with the
        content-only terms computed once, as a training step needs both for overlapping items. With
        ``sample`` the generated vectors are decoded from a reparameterised draw of p(z | content) instead
        of its mean: what ranks them in training then sees the prior's spread (gradients reach its variance)."""
        mu_p, logvar_p, term = self._content_terms(content)
        z = self._draw(mu_p, logvar_p) if sample else mu_p
        return self._decode(z, term), self._losses(target, content[rows], mu_p[rows], logvar_p[rows], term[rows])

    def reconstruct(self, target: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """``target`` through the VAE: a reparameterised draw of q(z | target, content), decoded. What a
        ranking loss on reconstructions trains (`VAEFusionConfig.posterior_rank`): the decoder that makes new
        items' vectors from the prior then learns to rank from the latents of items with purchases."""
        mu_q, logvar_q = self.encoder(torch.cat([target, content], -1)).chunk(2, dim=-1)
        return self._decode(self._draw(mu_q, logvar_q), self._content_term(content))

    def _losses(self, target: torch.Tensor, content: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor,
                content_term: torch.Tensor) -> dict[str, torch.Tensor]:
        mu_q, logvar_q = self.encoder(torch.cat([target, content], -1)).chunk(2, dim=-1)
        z = self._draw(mu_q, logvar_q)
        logvar_q, logvar_p = logvar_q.clamp(-10, 10), logvar_p.clamp(-10, 10)
        recon = (self._decode(z, content_term) - target).pow(2).sum(-1).mean()
        kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1).sum(-1).mean()
        return {"recon": recon, "kl": kl}


class ContentRegressor(nn.Module):
    """The no-VAE ablation: a deterministic MLP from content into the collaborative space."""

    def __init__(self, content_dim: int, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = mlp([content_dim, hidden_dim, dim])

    def generate(self, content: torch.Tensor) -> torch.Tensor:
        """Content → collaborative vector."""
        return self.net(content)

    def losses(self, target: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Squared error to ``target``; no KL term."""
        return self.generate_with_losses(content, target, torch.arange(len(content), device=content.device))[1]

    def generate_with_losses(self, content: torch.Tensor, target: torch.Tensor, rows: torch.Tensor,
                             sample: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`generate` (``content``) and `losses` (``target`` of the items ``content[rows]``) from one pass
        (``sample`` is ignored: a regression has no distribution to draw from)."""
        generated = self.generate(content)
        return generated, {"recon": (generated[rows] - target).pow(2).sum(-1).mean(), "kl": target.new_zeros(())}


class CountGate(nn.Module):
    """g(n) = sigmoid(a · log(1 + n) + b): the weight of the learned embedding of an item with n
    interactions (1 − g goes to the generated one). ``a`` is kept positive (softplus), so more
    interactions never mean less trust in behaviour."""

    def __init__(self, a_init: float = 1.0, b_init: float = 0.0) -> None:
        super().__init__()
        self.raw_a = nn.Parameter(torch.tensor(math.log(math.expm1(a_init))))
        self.b = nn.Parameter(torch.tensor(float(b_init)))

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.softplus(self.raw_a) * torch.log1p(counts.float()) + self.b)


# ------------------------------------------------------------------------------ history content affinity

def history_rows(indptr: torch.Tensor, indices: torch.Tensor,
                 users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The users' items in the CSR ``(indptr, indices)``, flattened: ``(row, item, lengths)`` where
    ``row[j]`` is the position in ``users`` of the user who has ``item[j]``."""
    lengths = indptr[users + 1] - indptr[users]
    rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), lengths)
    return rows, indices[_csr_positions(indptr, users)], lengths


def history_mean(indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor,
                 table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per user the mean of ``table`` rows over the user's items in the CSR ``(indptr, indices)``, and
    the item counts; users without items get a zero row."""
    lengths = indptr[users + 1] - indptr[users]
    return csr_row_sums(indptr, indices, users, table) / lengths.clamp(min=1).unsqueeze(1).to(table.dtype), lengths


def csr_row_sums(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor, table: torch.Tensor,
                 values: torch.Tensor | None = None) -> torch.Tensor:
    """``(S @ table)[rows]`` for the sparse matrix S of the CSR ``(indptr, indices, values)`` (all ones
    without ``values``), touching only those rows' entries; gradients reach ``table``."""
    positions = _csr_positions(indptr, rows)
    lengths = indptr[rows + 1] - indptr[rows]
    owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lengths)
    gathered = table[indices[positions]]
    if values is not None:
        gathered = gathered * values[positions].unsqueeze(1).to(table.dtype)
    return table.new_zeros(len(rows), table.shape[1]).index_add(0, owner, gathered)


def layer_mean_(adjacency: torch.Tensor, dense: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN's propagation in place: ``dense`` ← mean of A^l · dense over l = 0..n_layers."""
    layer = dense
    for _ in range(n_layers):
        layer = torch.sparse.mm(adjacency, layer)
        dense.add_(layer)
    return dense.div_(n_layers + 1)


class _LayerMeanRows(torch.autograd.Function):
    """Rows of LightGCN's output M·E, M = mean of A^l over l = 0..L, for a symmetric A. M is symmetric
    too, so the gradient of E is M · (the rows' gradient scattered into a full table): one running sum
    each way, no per-layer tensor kept for backward and no full-size gradient per slice or gather."""

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, n_layers: int, rows: torch.Tensor,  # type: ignore[override]
                *tables: torch.Tensor) -> torch.Tensor:
        ctx.adjacency, ctx.n_layers, ctx.rows = adjacency, n_layers, rows
        ctx.sizes = [len(t) for t in tables]
        layer = torch.cat(tables)
        out = layer[rows]
        for depth in range(1, n_layers + 1):  # the last layer is needed at ``rows`` only
            layer = torch.sparse.mm(adjacency if depth < n_layers else _csr_select(adjacency, rows), layer)
            out.add_(layer if depth == n_layers else layer[rows])
        return out.div_(n_layers + 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        full = grad.new_zeros(sum(ctx.sizes), grad.shape[1]).index_add_(0, ctx.rows, grad)
        return (None, None, None, *layer_mean_(ctx.adjacency, full, ctx.n_layers).split(ctx.sizes))


def _csr_select(matrix: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The rows ``rows`` of a sparse CSR matrix, as a ``[len(rows), n_columns]`` CSR matrix."""
    indptr = matrix.crow_indices().long()
    lengths = indptr[rows + 1] - indptr[rows]
    positions = _csr_positions(indptr, rows)
    crow = torch.zeros(len(rows) + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.cumsum(lengths, 0)
    return csr_tensor(crow, matrix.col_indices()[positions].long(), matrix.values()[positions], matrix.shape[1])


def lightgcn_rows(adjacency: torch.Tensor, user_emb: torch.Tensor, item_emb: torch.Tensor, n_layers: int,
                  users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LightGCN's final vectors of ``users`` and ``items`` (the same values as `LightGCN.embeddings` at
    those rows) for a training step that needs only its batch's rows: ``adjacency`` is the symmetric
    normalised [U+I, U+I] graph, gradients reach both embedding tables."""
    rows = torch.cat([users, items + len(user_emb)])
    out = _LayerMeanRows.apply(adjacency, n_layers, rows, user_emb, item_emb)
    return out[:len(users)], out[len(users):]


def history_affinity(indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor, content: torch.Tensor,
                     power: float, items: torch.Tensor | None = None, chunk: int = 2048,
                     graph: "AffinityGraph | None" = None) -> torch.Tensor:
    """``[len(users), n]`` mean over each user's history items ``j`` of max(0, c_j · c_i)^power, for every
    item (or the item codes ``items``). A high power keeps only near-duplicates in content (an H&M
    article's colour variants share their text), so the score asks "did the user buy something that
    looks like this?" rather than "is this like the average of what she bought?". With ``graph`` (an
    `AffinityGraph` of this content and power) the weights are its truncated ones."""
    if graph is not None:
        return graph.affinity(indptr, indices, users, items)
    rows, hist, lengths = history_rows(indptr, indices, users)
    target = content if items is None else content[items]
    out = content.new_zeros(len(users), len(target))
    for start in range(0, len(hist), chunk):
        sims = power_((content[hist[start:start + chunk]] @ target.t()).clamp_(min=0), power)
        out.index_add_(0, rows[start:start + chunk], sims)
    return out / lengths.clamp(min=1).unsqueeze(1).to(out.dtype)


@torch.no_grad()
def history_affinity_candidates(indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor,
                                items: torch.Tensor, content: torch.Tensor, power: float,
                                graph: "AffinityGraph | None" = None) -> torch.Tensor:
    """`history_affinity` of each user's own candidates ``items [len(users), c]`` → ``[len(users), c]``: the
    histories padded to the longest one in ``users`` and multiplied in one batch, so a retrieval index's
    candidates are re-ranked without scoring the whole catalogue (pass users of similar history length)."""
    rows, hist, lengths = history_rows(indptr, indices, users)
    longest = int(lengths.max()) if len(users) else 0
    if longest == 0:
        return content.new_zeros(items.shape)
    position = torch.arange(len(hist), device=hist.device) - torch.repeat_interleave(
        torch.cumsum(lengths, 0) - lengths, lengths)
    if graph is not None:
        slots = hist.new_full((len(users), longest), -1)
        slots[rows, position] = hist
        sims = graph.lookup(items.unsqueeze(1), slots.clamp(min=0).unsqueeze(2)) * (slots >= 0).unsqueeze(2)
        return sims.sum(1) / lengths.clamp(min=1).unsqueeze(1).to(content.dtype)
    padded = content.new_zeros(len(users), longest, content.shape[1])
    padded[rows, position] = content[hist]
    sims = power_(torch.bmm(padded, content[items].transpose(1, 2)).clamp_(min=0), power)  # [u, longest, c]
    return sims.sum(1) / lengths.clamp(min=1).unsqueeze(1).to(content.dtype)


def history_affinity_pairs(indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                           content: torch.Tensor, power: float, chunk: int = 1 << 16, sample: int = 0,
                           graph: "AffinityGraph | None" = None) -> torch.Tensor:
    """`history_affinity` for the pairs ``(users[r], items[r])``, leaving the item itself out of the
    user's history (a training positive must not explain itself).

    The content is fixed, so this is computed without autograd, ``chunk`` history entries at a time: a
    large batch of users with long histories would otherwise gather two history × content-width tensors.
    With ``sample`` > 0, a history longer than that is replaced by a stratified random sample of ``sample``
    of its items (one from each of ``sample`` equal stretches): the mean over it estimates the mean over the
    whole history without bias, and a pair costs at most ``sample`` rows however long the history is — the
    cost that dominates a training epoch at full shop size, where pairs come from heavy buyers most. With
    ``graph`` a pair's weights are looked up in it (no content products)."""
    if sample > 0:
        return _sampled_affinity_pairs(indptr, indices, users, items, content, power, sample, chunk, graph)
    rows, hist, _ = history_rows(indptr, indices, users)
    with torch.no_grad():
        other = hist != items[rows]
        sums = content.new_zeros(len(users))
        for start in range(0, len(hist), chunk):
            r, h = rows[start:start + chunk], hist[start:start + chunk]
            if graph is not None:
                sims = graph.lookup(items[r], h) * other[start:start + chunk]
            else:
                sims = power_((content[h] * content[items[r]]).sum(1).clamp_(min=0), power) * other[start:start + chunk]
            sums.index_add_(0, r, sims)
        n = content.new_zeros(len(users)).index_add_(0, rows, other.to(content.dtype))
        return sums / n.clamp(min=1)


@torch.no_grad()
def _sampled_affinity_pairs(indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                            content: torch.Tensor, power: float, sample: int, chunk: int,
                            graph: "AffinityGraph | None" = None) -> torch.Tensor:
    """`history_affinity_pairs` over ``sample`` history slots per pair: all of a short history, else item
    ``floor((t + U) · L / sample)`` of slot ``t`` with one uniform ``U`` per pair (stratified). Each pair's
    item vector is read once and multiplied with its slots in a batched product."""
    lengths = (indptr[users + 1] - indptr[users]).unsqueeze(1)
    slot = torch.arange(sample, device=users.device).unsqueeze(0)
    shift = torch.rand(len(users), 1, device=users.device)
    strided = ((slot + shift) * lengths / sample).long().clamp(max=(lengths - 1).clamp(min=0))
    offset = torch.where(lengths <= sample, slot, strided)
    hist = indices[(indptr[users].unsqueeze(1) + offset).clamp(max=max(len(indices) - 1, 0))] if len(indices) \
        else torch.zeros_like(offset)
    other = (slot < lengths) & (hist != items.unsqueeze(1))
    if graph is not None:
        return (graph.lookup(items.unsqueeze(1), hist) * other).sum(1) / other.sum(1).clamp(min=1).to(content.dtype)
    sums = content.new_zeros(len(users))
    per = max(1, chunk // sample)
    for start in range(0, len(users), per):
        h, i = hist[start:start + per], items[start:start + per]
        vectors = content.index_select(0, h.reshape(-1)).view(len(h), sample, -1)
        sims = torch.bmm(vectors, content.index_select(0, i).unsqueeze(2)).squeeze(2)
        sums[start:start + per] = (power_(sims.clamp_(min=0), power) * other[start:start + per]).sum(1)
    return sums / other.sum(1).clamp(min=1).to(content.dtype)


class AffinityWeight(nn.Module):
    """The weight of the history content affinity in an item's score: g·w_warm + (1 − g)·w_cold, with g the
    count gate's value, so cold items can lean on content more than warm ones. Both weights are kept in
    log space (positive, and an optimiser step changes them by a factor, whatever their size)."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.log_warm = nn.Parameter(torch.tensor(math.log(init)))
        self.log_cold = nn.Parameter(torch.tensor(math.log(init)))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return g * self.log_warm.exp() + (1 - g) * self.log_cold.exp()


# ------------------------------------------------------------------------------ sparse affinity graph

class AffinityGraph:
    """The history content affinity's item × item weights, truncated: for each item ``i`` its ``k`` most
    content-similar items ``j`` (itself included — today's exact affinity counts a user's own item 1.0)
    with weight w(j, i) = max(0, c_j · c_i)^power, stored as ``[n, k]`` tensors (memory O(n·k); built
    ``block`` rows at a time, never an n × n matrix). With a high power the weights below the k-th
    neighbour are tiny, so the affinity barely moves, and scoring a user costs her history length × k
    instead of history length × n × content width. ``k ≥ n`` keeps every pair: the exact affinity."""

    def __init__(self, content: torch.Tensor, power: float, k: int, block: int = 1024) -> None:
        self.power, self.k, self.block = float(power), int(k), int(block)
        self.n = 0
        self.neighbours = torch.zeros(0, 0, dtype=torch.long, device=content.device)
        self.weights = content.new_zeros(0, 0)
        self._by_source: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._keys: torch.Tensor | None = None
        self.extend(content)

    def _top(self, content: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` best sources of the items ``rows`` among all of ``content``, block by block."""
        k = min(self.k, len(content))
        neighbours, weights = [], []
        for start in range(0, len(rows), self.block):
            sims = content[rows[start:start + self.block]] @ content.t()          # [block, n]
            values, index = torch.topk(sims, k, dim=1)
            neighbours.append(index)
            weights.append(power_(values.clamp_(min=0), self.power))
        if not neighbours:
            return rows.new_zeros(0, k), content.new_zeros(0, k)
        return torch.cat(neighbours), torch.cat(weights)

    @torch.no_grad()
    def extend(self, content: torch.Tensor) -> None:
        """Grow to the items of ``content`` (its first ``n`` rows are the items already in the graph):
        the new items get their ``k`` best sources among all items, and an old item's list takes a new
        item in where it beats its current ``k``-th (the same lists as a build from scratch, up to ties)."""
        n_old, n = self.n, len(content)
        if n == n_old:
            return
        new = torch.arange(n_old, n, device=content.device)
        k = min(self.k, n)
        top_new, w_new = self._top(content, new)
        if n_old:
            merged_n, merged_w = [], []
            for start in range(0, n_old, self.block):
                stop = min(start + self.block, n_old)
                sims = power_((content[start:stop] @ content[n_old:].t()).clamp_(min=0), self.power)
                w = torch.cat([self.weights[start:stop], sims], 1)
                idx = torch.cat([self.neighbours[start:stop], new.expand(stop - start, -1)], 1)
                w, pick = torch.topk(w, k, dim=1)
                merged_n.append(torch.gather(idx, 1, pick))
                merged_w.append(w)
            top_new, w_new = torch.cat(merged_n + [top_new]), torch.cat(merged_w + [w_new])
        order = torch.argsort(top_new, dim=1)  # sources sorted per row: one sorted key array for lookups
        self.neighbours, self.weights = torch.gather(top_new, 1, order), torch.gather(w_new, 1, order)
        self.n, self._by_source, self._keys = n, None, None

    def nnz(self) -> int:
        """Stored (target, source) pairs."""
        return self.neighbours.numel()

    def lookup(self, targets: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """w(source, target) for broadcast-compatible code tensors; 0 where the source is not among the
        target's ``k`` neighbours."""
        if self._keys is None:
            rows = torch.arange(self.n, device=self.neighbours.device).unsqueeze(1)
            self._keys = (rows * self.n + self.neighbours).flatten()
        targets, sources = torch.broadcast_tensors(targets, sources)
        query = (targets * self.n + sources).flatten()
        if not len(self._keys):
            return self.weights.new_zeros(targets.shape)
        at = torch.searchsorted(self._keys, query).clamp_(max=len(self._keys) - 1)
        found = self._keys[at] == query
        return torch.where(found, self.weights.flatten()[at], self.weights.new_zeros(())).view(targets.shape)

    def by_source(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The graph as CSR by source item: ``(indptr, targets, weights)``."""
        if self._by_source is None:
            sources = self.neighbours.flatten()
            order = torch.argsort(sources, stable=True)
            targets = torch.arange(self.n, device=sources.device).repeat_interleave(self.neighbours.shape[1])
            indptr = torch.zeros(self.n + 1, dtype=torch.long, device=sources.device)
            indptr[1:] = torch.cumsum(torch.bincount(sources, minlength=self.n), 0)
            self._by_source = (indptr, targets[order], self.weights.flatten()[order])
        return self._by_source

    def affinity(self, indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor,
                 items: torch.Tensor | None = None) -> torch.Tensor:
        """`history_affinity` through the graph: each history item adds its out-edges' weights (an
        ItemKNN-style sparse product), ``[len(users), n]`` or ``[len(users), len(items)]``."""
        width = self.n if items is None else len(items)
        return self.add_affinity_(self.weights.new_zeros(len(users), width), indptr, indices, users, items)

    def add_affinity_(self, scores: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor,
                      items: torch.Tensor | None = None, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``scores += weight * affinity`` in place (``weight`` per column, default 1) and returned: only the
        history items' out-edges are touched, so scoring a batch costs its history length × k on top of the
        scores themselves (no second users × items matrix)."""
        rows, hist, lengths = history_rows(indptr, indices, users)
        src_ptr, src_targets, src_weights = self.by_source()
        edge = _csr_positions(src_ptr, hist)  # every out-edge of every history entry, entry after entry
        owner = rows.repeat_interleave(src_ptr[hist + 1] - src_ptr[hist])
        targets, values = src_targets[edge], src_weights[edge]
        if items is not None:
            column = torch.full((self.n,), -1, dtype=torch.long, device=targets.device)
            column[items] = torch.arange(len(items), device=targets.device)
            targets = column[targets]
            keep = targets >= 0
            targets, values, owner = targets[keep], values[keep], owner[keep]
        values = values / lengths[owner].to(values.dtype)
        if weight is not None:
            values = values * weight[targets]
        scores.view(-1).index_add_(0, owner * scores.shape[1] + targets, values.to(scores.dtype))
        return scores


def add_history_affinity_(scores: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, users: torch.Tensor,
                          content: torch.Tensor, power: float, weight: torch.Tensor,
                          items: torch.Tensor | None = None, graph: AffinityGraph | None = None) -> torch.Tensor:
    """``scores += weight * history_affinity(...)`` in place, ``weight`` per column of ``scores`` (the
    model's per-item affinity weight); through ``graph`` without building the affinity matrix."""
    if graph is not None:
        return graph.add_affinity_(scores, indptr, indices, users, items, weight)
    return scores.addcmul_(history_affinity(indptr, indices, users, content, power, items), weight)


def _csr_positions(indptr: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Positions in a CSR's index array of every entry of ``rows``, row after row."""
    lengths = indptr[rows + 1] - indptr[rows]
    offsets = torch.arange(int(lengths.sum()), device=rows.device) - \
        torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    return torch.repeat_interleave(indptr[rows], lengths) + offsets
