"""SASRec: a causal transformer over a user's behaviour sequence that predicts the next item.

Each input token is an event: the item's representation (an ID embedding plus, with ``use_content``, an
adapter of the item's fixed content vector), a learned position, and with ``use_dwell`` the event's
dwell time and kind. Every position predicts the next item in one pass (a causal mask, right padding);
scores are the final hidden state · item representations — the same representations the input uses.

Items with fewer than ``id_min_count`` training events have no ID embedding (it is zeroed, never trained),
so an item never seen in training is scored from its content alone (and, without content, scores 0).

Training loss (``loss``): ``"softmax"`` is cross-entropy over the whole catalogue at every position —
SASRec trained this way is markedly better than with its original one-negative BCE (Klenitskiy & Vasilev,
RecSys 2023), and with a few tens of thousands of items and short sequences its cost is small;
``"sampled_softmax"`` replaces the catalogue by ``n_negatives`` uniform items shared by the batch, for
catalogues (or CPUs) too small for the full softmax. With ``train_candidates="seen"`` (default) only
items with training events are softmax classes / negatives: an item that is never a target must not be
pushed down in training, else the model learns to recognise "never bought" content and buries new items.

Per-event features (``use_dwell``): an event's ``Interactions.weights`` are read as its dwell seconds
(the convention for grounded screen events, written by `mmrec.events.dwell_weights` — as
`mmrec.events.events_to_interactions` does for an events file — and read by `mmrec.events.dwell_from_weights`:
NaN — a click/cart/purchase log row has none — reads as 0), ``Interactions.kinds`` as its kind
(`mmrec.data.KINDS`). Both enter as ``Linear(log1p(dwell)) + Embedding(kind)`` added to the token.

Scoring uses each user's *history*: the training sequence after `fit`, or whatever `set_history` was
given (for leave-last-out testing: train + valid events, so the test item is the next one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from mmrec.data import KINDS, Interactions
from mmrec.events import dwell_from_weights
from mmrec.fusion.adapters import AdapterConfig, create_adapter
from mmrec.recommender import Recommender, register_model


@dataclass
class SASRecConfig:
    """Transformer size, training loss, and which item/event inputs the model reads."""

    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ff_mult: int = 4
    max_len: int = 50
    dropout: float = 0.2
    loss: Literal["softmax", "sampled_softmax"] = "softmax"
    n_negatives: int = 512
    id_min_count: int = 1  # items with fewer training events get no ID embedding (content only)
    train_candidates: Literal["seen", "all"] = "seen"  # softmax / negatives over items with training events, or all
    use_content: bool = False
    content_dim: int = 384
    adapter: Literal["linear", "mlp", "query"] = "mlp"
    adapter_hidden: int = 256
    use_dwell: bool = False

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "ff_mult", "max_len", "n_negatives", "content_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"SASRecConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise ValueError(f"SASRecConfig.dim {self.dim} must be divisible by n_heads {self.n_heads}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"SASRecConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.id_min_count < 0:
            raise ValueError(f"SASRecConfig.id_min_count must be ≥ 0, got {self.id_min_count}")


# -- sequences as CSR arrays -------------------------------------------------------------------------

@dataclass
class Sequences:
    """Every user's events in time order: ``items[indptr[u]:indptr[u+1]]`` with their dwell and kind."""

    indptr: np.ndarray
    items: np.ndarray
    dwell: np.ndarray
    kinds: np.ndarray

    @classmethod
    def from_interactions(cls, inter: Interactions) -> "Sequences":
        """Group by user, order by timestamp; ties keep row order (as `mmrec.splits.leave_last_out`)."""
        order = np.lexsort((np.arange(len(inter)), inter.timestamps, inter.users))
        indptr = np.zeros(inter.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(inter.users, minlength=inter.n_users), out=indptr[1:])
        dwell = dwell_from_weights(inter.weights[order])  # no dwell (NaN): a log event, read as 0
        return cls(indptr, inter.items[order], dwell, inter.kinds[order].astype(np.int64))


def windows(seq: dict[str, torch.Tensor], users: torch.Tensor, length: int, bos: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The last ``length`` tokens of ``[BOS] + sequence`` per user, right-padded (with ``bos + 1``).

    ``seq`` holds the CSR tensors ``indptr``, ``items``, ``dwell``, ``kinds``. Returns ``(tokens,
    dwell, kinds, lengths)``; BOS and padding have dwell 0 and kind ``len(KINDS)``.
    """
    start, stop = seq["indptr"][users], seq["indptr"][users + 1]
    n_tokens = stop - start + 1  # with BOS
    lengths = n_tokens.clamp(max=length)
    width = int(lengths.max()) if len(users) else 0
    pos = torch.arange(width, device=users.device)
    virtual = (n_tokens - lengths)[:, None] + pos[None, :]  # index into [BOS] + sequence
    real = (pos[None, :] < lengths[:, None]) & (virtual > 0)
    flat = (start[:, None] + virtual - 1).clamp(min=0, max=max(len(seq["items"]) - 1, 0))
    tokens = torch.full_like(virtual, bos + 1)
    tokens[pos[None, :] < lengths[:, None]] = bos
    dwell = torch.zeros(virtual.shape, dtype=torch.float32, device=users.device)
    kinds = torch.full_like(virtual, len(KINDS))
    if len(seq["items"]):
        tokens = torch.where(real, seq["items"][flat], tokens)
        dwell = torch.where(real, seq["dwell"][flat], dwell)
        kinds = torch.where(real, seq["kinds"][flat], kinds)
    return tokens, dwell, kinds, lengths


class SequenceDataset(Dataset):
    """One sample per user with training events: inputs ``[BOS, i1 … i_{n-1}]`` and targets ``[i1 … i_n]``
    (the last ``max_len`` of them); every position is a next-item example."""

    def __init__(self, train: Interactions, max_len: int) -> None:
        seq = Sequences.from_interactions(train)
        self.seq = {k: torch.as_tensor(getattr(seq, k)) for k in ("indptr", "items", "dwell", "kinds")}
        self.users = np.flatnonzero(np.diff(seq.indptr) > 0)
        if not len(self.users):
            raise ValueError("cannot train a sequence model on empty interactions")
        self.max_len, self.bos = max_len, train.n_items

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Windows of ``max_len + 1`` tokens split into inputs and next-item targets (padding = -1)."""
        users = torch.as_tensor(self.users[np.asarray(indices, dtype=np.int64)])
        tokens, dwell, kinds, lengths = windows(self.seq, users, self.max_len + 1, self.bos)
        targets = tokens[:, 1:].clone()
        targets[torch.arange(targets.shape[1])[None, :] >= (lengths - 1)[:, None]] = -1
        return {"tokens": tokens[:, :-1], "dwell": dwell[:, :-1], "kinds": kinds[:, :-1], "targets": targets}


# -- the model ---------------------------------------------------------------------------------------

@register_model("sasrec")
class SASRec(Recommender):
    """Self-attentive sequential recommender with optional content vectors and per-event features.

    Call ``set_content(vectors)`` before `fit` when ``use_content``; `fit` keeps the training sequences
    as the scoring history (see `set_history`).
    """

    config_class = SASRecConfig

    def __init__(self, config: SASRecConfig, n_users: int, n_items: int) -> None:
        super().__init__(config, n_users, n_items)
        d = config.dim
        self.item_emb = nn.Embedding(n_items, d)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.pos_emb = nn.Embedding(config.max_len, d)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.register_buffer("id_known", torch.zeros(n_items, dtype=torch.bool))
        self.register_buffer("item_seen", torch.zeros(n_items, dtype=torch.bool))
        if config.use_content:
            self.register_buffer("content", torch.zeros(n_items, config.content_dim))
            self.register_buffer("content_valid", torch.zeros(n_items, dtype=torch.bool))
            self.adapter = create_adapter(AdapterConfig(kind=config.adapter, in_dim=config.content_dim,
                                                        out_dim=d, hidden=config.adapter_hidden))
            self.content_scale = nn.Parameter(torch.ones(()))
        if config.use_dwell:
            self.dwell_proj = nn.Linear(1, d)
            self.kind_emb = nn.Embedding(len(KINDS) + 1, d)
            for weight in (self.dwell_proj.weight, self.kind_emb.weight):  # on the scale of the item embeddings
                nn.init.normal_(weight, std=0.02)
            nn.init.zeros_(self.dwell_proj.bias)
        self.input_drop = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(d, config.n_heads, dim_feedforward=config.ff_mult * d,
                                           dropout=config.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)
        for name in ("indptr", "items", "dwell", "kinds"):
            dtype = torch.float32 if name == "dwell" else torch.long
            self.register_buffer(f"hist_{name}", torch.zeros(n_users + 1 if name == "indptr" else 0, dtype=dtype))

    # -- inputs --------------------------------------------------------------------------------------
    def set_content(self, vectors: torch.Tensor | np.ndarray, valid: torch.Tensor | np.ndarray | None = None) -> None:
        """Fix the items' content vectors ``[n_items, content_dim]``; rows with ``valid`` false count as missing."""
        if not self.config.use_content:
            raise ValueError("set_content needs SASRecConfig.use_content=True")
        vectors = torch.as_tensor(np.asarray(vectors) if not isinstance(vectors, torch.Tensor) else vectors,
                                  dtype=torch.float32)
        expected = (self.n_items, self.config.content_dim)
        if tuple(vectors.shape) != expected:
            raise ValueError(f"content vectors have shape {tuple(vectors.shape)}, expected {expected} (n_items, content_dim)")
        valid = torch.ones(self.n_items, dtype=torch.bool) if valid is None else torch.as_tensor(np.asarray(valid), dtype=torch.bool)
        if valid.shape != (self.n_items,):
            raise ValueError(f"content valid mask has shape {tuple(valid.shape)}, expected ({self.n_items},)")
        if not torch.isfinite(vectors[valid]).all():
            raise ValueError("content vectors contain NaN or inf in rows marked valid")
        self.content = vectors.to(self.device) * valid[:, None].to(self.device)
        self.content_valid = valid.to(self.device)

    def set_history(self, interactions: Interactions) -> None:
        """Use these events as every user's sequence when scoring (e.g. train + valid to predict test)."""
        if (interactions.n_users, interactions.n_items) != (self.n_users, self.n_items):
            raise ValueError(f"history has {interactions.n_users} users × {interactions.n_items} items, "
                             f"the model {self.n_users} × {self.n_items}")
        seq = Sequences.from_interactions(interactions)
        for name in ("indptr", "items", "dwell", "kinds"):
            setattr(self, f"hist_{name}", torch.as_tensor(getattr(seq, name)).to(self.device))

    def prepare(self, train: Interactions) -> None:
        """Mark the items that keep an ID embedding and store the training sequences as history."""
        if self.config.use_content and not self.content_valid.any():
            raise ValueError("SASRec with use_content=True needs set_content(vectors) before fit")
        counts = torch.as_tensor(train.item_counts(), device=self.device)
        self.id_known = counts >= max(self.config.id_min_count, 1)
        self.item_seen = counts > 0
        self.set_history(train)

    def training_data(self, train: Interactions, seed: int) -> SequenceDataset:
        return SequenceDataset(train, self.config.max_len)

    # -- forward -------------------------------------------------------------------------------------
    def item_repr(self, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Representations ``[len(codes), dim]`` of item codes (all items when None): ID (known items) + content."""
        codes = torch.arange(self.n_items, device=self.device) if codes is None else codes
        out = self.item_emb(codes) * self.id_known[codes, None]
        if self.config.use_content:
            out = out + self.content_scale * self.adapter(self.content[codes]) * self.content_valid[codes, None]
        return out

    def hidden(self, tokens: torch.Tensor, dwell: torch.Tensor, kinds: torch.Tensor,
               table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, L, dim]``; item token ``t`` reads row ``index[t]`` of ``table``."""
        is_item = tokens < self.n_items
        x = torch.zeros(*tokens.shape, self.config.dim, device=tokens.device, dtype=table.dtype)
        x[is_item] = table[index[tokens[is_item]]]
        x[tokens == self.n_items] = self.bos.to(x.dtype)
        x = x + self.pos_emb.weight[: tokens.shape[1]]
        if self.config.use_dwell:
            x = x + self.dwell_proj(torch.log1p(dwell.clamp(min=0))[..., None]) + self.kind_emb(kinds)
        causal = nn.Transformer.generate_square_subsequent_mask(tokens.shape[1], device=tokens.device)
        return self.encoder(self.input_drop(x), mask=causal, is_causal=True)

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens, targets = batch["tokens"], batch["targets"]
        at = targets >= 0
        if self.config.loss == "softmax":
            table = self.item_repr()
            index = torch.arange(self.n_items, device=tokens.device)
            h = self.hidden(tokens, batch["dwell"], batch["kinds"], table, index)[at]
            logits = h @ table.t()
            if self.config.train_candidates == "seen":
                logits = logits.masked_fill(~self.item_seen, float("-inf"))
            loss = F.cross_entropy(logits, targets[at])
        else:
            pool = torch.nonzero(self.item_seen).squeeze(1) if self.config.train_candidates == "seen" \
                else torch.arange(self.n_items, device=tokens.device)
            negatives = pool[torch.randint(len(pool), (self.config.n_negatives,), device=tokens.device)]
            used = torch.unique(torch.cat([tokens[tokens < self.n_items], targets[at], negatives]))
            index = torch.zeros(self.n_items, dtype=torch.long, device=tokens.device)
            index[used] = torch.arange(len(used), device=tokens.device)
            table = self.item_repr(used)
            h = self.hidden(tokens, batch["dwell"], batch["kinds"], table, index)[at]
            pos = (h * table[index[targets[at]]]).sum(-1, keepdim=True)
            neg = h @ table[index[negatives]].t()
            neg = neg.masked_fill(negatives[None, :] == targets[at][:, None], float("-inf"))
            logits = torch.cat([pos, neg], 1)
            loss = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
        return {"loss": loss}

    def user_states(self, users: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """The final hidden state ``[len(users), dim]`` after each user's history (BOS alone when empty)."""
        seq = {"indptr": self.hist_indptr, "items": self.hist_items, "dwell": self.hist_dwell, "kinds": self.hist_kinds}
        tokens, dwell, kinds, lengths = windows(seq, users.to(self.device), self.config.max_len, self.n_items)
        table = self.item_repr() if table is None else table
        h = self.hidden(tokens, dwell, kinds, table, torch.arange(self.n_items, device=self.device))
        return h[torch.arange(len(users), device=self.device), lengths - 1]

    def score(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Next-item scores ``[len(users), n_items]`` (or ``len(items)``) after each user's history."""
        table = self.item_repr()
        state = self.user_states(users, table)
        return state @ (table if items is None else table[items.to(self.device)]).t()


# ------------------------------------------------------------------------ fitting and testing, by target

REPORTED = ("hr@10", "ndcg@10")  # what the next-item benchmarks report


def target_warmth_report(result, split, metrics: tuple[str, ...] = REPORTED) -> dict:
    """Test metrics of an `mmrec.evaluate.EvalResult` over all users, and over users whose test target is
    warm (bought in training) or cold (not), with the cold share: a content model should gain on cold."""
    seen = split.train.item_counts() > 0
    target = np.zeros(split.test.n_users, dtype=np.int64)
    target[split.test.users] = split.test.items
    warm = seen[target[result.users]]
    out = {"all": {m: result.metrics[m] for m in metrics}, "users": int(len(result.users)),
           "cold_target_share": float(1 - warm.mean())}
    for name, rows in (("warm", warm), ("cold", ~warm)):
        out[name] = {m: float(result.per_user[m][rows].mean()) for m in metrics}
    return out


def fit_and_test(split, config: dict, content: tuple[np.ndarray, np.ndarray] | None, seed: int, train: dict,
                 valid_users: np.ndarray | None = None, history: Interactions | None = None) -> dict:
    """Fit one `sasrec` through the one loop, early-stopped on valid NDCG@10 (of ``valid_users``, default
    all), then rank the test targets after ``history`` (default: train + valid events), seen items masked;
    valid metrics, `target_warmth_report` of test, best epoch and fit seconds."""
    import time

    from accelerate.utils import set_seed

    from mmrec.evaluate import evaluate
    from mmrec.recommender import create_model
    from mmrec.train import TrainConfig

    set_seed(seed)
    model = create_model("sasrec", split.train.n_users, split.train.n_items, config)
    if content is not None:
        model.set_content(*content)

    def validate(m) -> dict[str, float]:
        return evaluate(m, split, on="valid", ks=(10,), metrics=("hr", "ndcg"), users=valid_users).metrics

    started = time.perf_counter()
    result = model.fit(split.train, train_config=TrainConfig(seed=seed, early_stop_metric="ndcg@10", **train),
                       evaluate_fn=validate)
    seconds = time.perf_counter() - started
    valid = validate(model)
    model.set_history(split.train.concat(split.valid) if history is None else history)
    test = evaluate(model, split, on="test", ks=(10,), metrics=("hr", "ndcg"), mask_valid_at_test=True)
    return {"valid": {m: valid[m] for m in REPORTED}, "test": target_warmth_report(test, split),
            "best_epoch": result.best_epoch, "epochs": result.epochs_run, "fit_seconds": seconds}
