"""`ShardPairs`: alignment training data streamed from catalog shards instead of held in memory.

The webdataset reader `mmrec.datasets.shards.catalog_samples` does node/worker splitting, the shuffle
buffer, resampling, decode-late and the counted skips of damaged samples; this dataset resizes each
photo to the trainable image tower's input (in the reader, so DataLoader workers do it) and `collate`
turns a list of items into the batch dict `UnifiedSpace.training_step` reads: ``"image:pixels"`` and
``"image:mask"`` for the trainable photo tower, and ``"text:features"`` / ``"text:mask"`` from the locked
text tower run on the batch's texts (the json ``text`` written by `write_catalog_shards`).

One pass over the shards is an epoch (``set_epoch`` reseeds the shuffle). With several processes the
shards are a partition and ranks may get unequal shares, so a distributed run passes
``samples_per_epoch``: each process then draws that many samples from a resampled, endless stream and
every rank takes the same number of steps.
"""
from __future__ import annotations

import itertools
import os
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import IterableDataset

from mmrec.datasets.shards import SampleStats, catalog_samples
from mmrec.encoders.base import pil_to_tensor
from mmrec.space import UnifiedSpace


class _ResizeToTower:
    """Photo → uint8 ``[3, H, W]`` at the tower's input size (picklable, for DataLoader workers)."""

    def __init__(self, preprocess: Any) -> None:
        self.preprocess = preprocess

    def __call__(self, image: Any) -> torch.Tensor:
        return (self.preprocess.resize(pil_to_tensor(image))[0] * 255).round().to(torch.uint8)


class ShardPairs(IterableDataset):
    """Items from catalog shards as alignment batches for ``space`` (see the module docstring)."""

    def __init__(self, space: UnifiedSpace, urls: str | os.PathLike | Sequence[str | os.PathLike], *,
                 shuffle_buffer: int = 1000, seed: int = 0, samples_per_epoch: int | None = None,
                 num_workers: int = 0, image_modality: str = "image") -> None:
        if image_modality not in space.towers:
            raise ValueError(f"ShardPairs trains the photo tower {image_modality!r}, but the space's trainable "
                             f"towers are {sorted(space.towers)}")
        if "text" in space.towers:
            raise ValueError("ShardPairs runs the text tower in collate, so it must be locked (trainable=False)")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.space, self.urls, self.image_modality = space, urls, image_modality
        self.shuffle_buffer, self.seed, self.epoch = shuffle_buffer, seed, 0
        self.samples_per_epoch, self.num_workers = samples_per_epoch, num_workers
        preprocess = space.encoders[image_modality].preprocess
        self.resize, self.normalize, self.size = _ResizeToTower(preprocess), preprocess.normalize, preprocess.size
        self.stats = SampleStats()
        self.text_encoder = space.encoders.get("text") if "text" not in space.towers else None

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shard order and shuffle buffer for ``epoch`` (called by the training loop)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        resample = self.samples_per_epoch is not None
        items = catalog_samples(self.urls, shuffle_buffer=self.shuffle_buffer, resample=resample,
                                seed=self.seed + self.epoch, image_transform=self.resize, stats=self.stats,
                                num_workers=self.num_workers)
        if resample:
            workers = max(1, self.num_workers)
            return itertools.islice(items, -(-self.samples_per_epoch // workers))
        return iter(items)

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """Pixels and a has-photo mask for the image tower; frozen towers' features of the items' texts."""
        h, w = self.size
        pixels = torch.zeros(len(items), 3, h, w, dtype=torch.uint8)
        has_image = torch.zeros(len(items), dtype=torch.bool)
        for i, item in enumerate(items):
            if item["image"] is not None:
                pixels[i], has_image[i] = item["image"], True
        batch = {f"{self.image_modality}:pixels": self.normalize(pixels.float().div_(255)),
                 f"{self.image_modality}:mask": has_image}
        if self.text_encoder is not None:
            texts = [item["text"] for item in items]
            with torch.no_grad():
                batch["text:features"] = self.text_encoder.encode([t if t.strip() else " " for t in texts]).float().cpu().clone()
            batch["text:mask"] = torch.as_tensor([bool(t.strip()) for t in texts])
        return batch
