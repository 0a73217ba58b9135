"""Alignment training data and `align`, which fits a `UnifiedSpace` through the one training loop.

`CatalogPairs` holds, per catalog item, the pixels of its photo already resized to the image tower's input
size (uint8, decoded once — decoding, not the model, is the cost on a CPU) and the outputs of the frozen
towers (e.g. locked MiniLM text features, computed once and cached). A batch is a dict in the form
`UnifiedSpace.training_step` reads. For catalogs too large for memory, the webdataset reader
`mmrec.datasets.shards.catalog_samples` yields the same samples from shards.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mmrec.data import Catalog
from mmrec.space import UnifiedSpace
from mmrec.train import TrainConfig, TrainResult, fit

log = logging.getLogger(__name__)


def decode_resized(paths: Sequence[str | None], preprocess, *, progress: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 ``[N, 3, H, W]`` images resized to ``preprocess.size`` and a mask of rows that decoded.

    Missing and broken images are counted and logged, and their rows stay zero with mask False.
    """
    from mmrec.encoders import ImageDecodeError, load_image
    from mmrec.encoders.base import pil_to_tensor

    h, w = preprocess.size
    out = torch.zeros(len(paths), 3, h, w, dtype=torch.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    failures = 0
    for i, path in enumerate(paths):
        if path is None:
            continue
        try:
            image = load_image(path, draft_size=(w, h))
        except ImageDecodeError as err:
            failures += 1
            if failures <= 5:
                log.warning("skipping image: %s", err)
            continue
        resized = preprocess.resize(pil_to_tensor(image))
        out[i] = (resized[0] * 255).round().to(torch.uint8)
        ok[i] = True
    if failures:
        log.warning("%d of %d images could not be decoded and were skipped", failures, len(paths))
    return out, ok


class CatalogPairs(Dataset):
    """Per-item training inputs for a `UnifiedSpace`: pixels for trainable towers, features for frozen ones."""

    def __init__(self, pixels: dict[str, tuple[torch.Tensor, np.ndarray]],
                 features: dict[str, tuple[torch.Tensor, np.ndarray]], normalize: dict[str, Callable]) -> None:
        sizes = {len(v[0]) for v in list(pixels.values()) + list(features.values())}
        if len(sizes) != 1:
            raise ValueError(f"all modalities need the same number of items, got sizes {sorted(sizes)}")
        self.n = sizes.pop()
        self.pixels, self.features, self.normalize = pixels, features, normalize
        usable = np.ones(self.n, dtype=bool)
        for _, mask in list(pixels.values()) + list(features.values()):
            usable &= mask
        self.rows = np.flatnonzero(usable)
        if not len(self.rows):
            raise ValueError("no item has every modality needed for training")

    @classmethod
    def from_catalog(cls, space: UnifiedSpace, catalog: Catalog, *, texts: Sequence[str] | None = None,
                     cache: str | None = None) -> "CatalogPairs":
        """Decode photos for trainable image towers, embed the rest with their frozen towers."""
        from mmrec.encoders import embed

        pixels, features, normalize = {}, {}, {}
        for modality, encoder in space.encoders.items():
            if modality in space.towers:
                pixels[modality] = decode_resized(catalog.image_paths, encoder.preprocess)
                normalize[modality] = encoder.preprocess.normalize
            else:
                result = embed(catalog, encoder, texts=texts if modality == "text" else None, cache=cache,
                               progress=False)
                features[modality] = (torch.as_tensor(result.vectors), result.valid)
        return cls(pixels, features, normalize)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> int:
        return int(self.rows[index])

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """One batch dict: normalised float pixels and feature rows, gathered by index."""
        idx = torch.as_tensor(rows)
        batch = {}
        for modality, (images, _) in self.pixels.items():
            batch[f"{modality}:pixels"] = self.normalize[modality](images[idx].float().div_(255))
        for modality, (vectors, _) in self.features.items():
            batch[f"{modality}:features"] = vectors[idx]
        return batch


def align(space: UnifiedSpace, data: Dataset, config: TrainConfig | None = None, *,
          evaluate_fn: Callable[[UnifiedSpace], dict[str, float]] | None = None) -> TrainResult:
    """Train the space's adapters (and trainable towers) on ``data`` with the one loop."""
    return fit(space, data, config or TrainConfig(lr=1e-3, batch_size=256, early_stop_metric="t2i_recall@10"),
               evaluate_fn=evaluate_fn)


@torch.no_grad()
def retrieval_metrics(queries: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    """Recall@k of retrieving row i of ``targets`` with row i of ``queries`` (cosine, all rows compete)."""
    sims = queries @ targets.t()
    true = sims.diagonal()[:, None]
    rank = (sims > true).sum(1)
    return {f"recall@{k}": float((rank < k).float().mean()) for k in ks}
