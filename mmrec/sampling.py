"""Training datasets for implicit feedback: (user, positive, sampled negative) triplets."""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

from mmrec.data import Interactions


class TripletDataset(Dataset):
    """Unique (user, item) training pairs with one uniformly sampled negative item each.

    Negatives are redrawn by ``set_epoch`` from a generator seeded with ``(seed, epoch)`` and never hit a
    positive of the user, so an epoch's batches are the same whenever it is replayed (exact resume).
    Items are drawn from ``item_pool`` (default: every item in the vocabulary).
    """

    def __init__(self, train: Interactions, seed: int = 0, item_pool: np.ndarray | None = None) -> None:
        pairs = train.unique_pairs()
        if not len(pairs):
            raise ValueError("cannot train on empty interactions")
        self.users, self.items, self.seed = pairs.users, pairs.items, seed
        self.n_items = train.n_items
        self.pool = np.arange(train.n_items) if item_pool is None else np.asarray(item_pool, dtype=np.int64)
        self.positive_keys = np.sort(self.users * self.n_items + self.items)
        self.negatives = np.empty(len(self.users), dtype=np.int64)
        self.set_epoch(0)

    def fingerprint(self) -> str:
        """A hash of the training pairs and the negative pool: the data part of a checkpoint's run identity,
        so a resume on other data of the same size is refused."""
        digest = hashlib.sha256()
        for array in (self.users, self.items, self.pool):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        return f"{len(self.users)} pairs, sha256 {digest.hexdigest()[:16]}"

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's negatives."""
        rng = np.random.default_rng([self.seed, epoch])
        todo = np.arange(len(self.users))
        for _ in range(100):
            self.negatives[todo] = self.pool[rng.integers(len(self.pool), size=len(todo))]
            keys = self.users[todo] * self.n_items + self.negatives[todo]
            pos = np.searchsorted(self.positive_keys, keys).clip(max=len(self.positive_keys) - 1)
            todo = todo[self.positive_keys[pos] == keys]
            if not len(todo):
                return

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Gather a batch of triplets as tensors in one indexing step."""
        idx = np.asarray(indices, dtype=np.int64)
        return {"users": torch.from_numpy(self.users[idx]), "pos": torch.from_numpy(self.items[idx]),
                "neg": torch.from_numpy(self.negatives[idx])}
