"""Grounding screens in the catalog: which item, if any, a screenshot shows, in the unified space.

A `Grounder` embeds screenshots with the space's ``screen`` tower + adapter (`UnifiedSpace.embed_screens`)
and compares them with the catalog's item vectors (`UnifiedSpace.embed_images` of the item photos): the
nearest item is "on screen" when its cosine similarity reaches ``threshold``, else the screen shows "no
item" (grids, bag, checkout). With `ScreenWindows` it searches the screen for the photo instead: every
window goes through the screen tower and each item takes its best window (`mmrec.screen_windows`).
`calibrate_threshold` picks the threshold on labelled frames (`mmrec.stream.calibrate_on_streams`: on the
screens the stream processor grounds in labelled streams);
`save_grounding` / `load_grounding` keep threshold and windows next to a saved space.

`mmrec.screen_space.train_screen_space` trains such a space for a catalog; a space with pretrained towers
plugs in unchanged (`UnifiedSpace.from_pretrained`). benchmarks/stream_targets.py measures what each grounds.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from mmrec.data import Catalog
from mmrec.screen_windows import AreaTable, PhotoCheck, ScreenWindows, crop_windows
from mmrec.space import UnifiedSpace

logger = logging.getLogger(__name__)

NO_ITEM = -1
GROUNDING_FILE = "grounding.json"


class Grounder:
    """Screens → (item code or `NO_ITEM`, cosine similarity to the nearest item) in a `UnifiedSpace`.

    ``item_vectors`` ``[I, D]`` (L2-normalised) with ``valid`` marking items that have one; items without
    a vector are never grounded. ``threshold``: the least similarity for "item on screen". ``windows``: search
    each screen for the photo (`mmrec.screen_windows`): every window goes through the screen tower and each
    item takes its best window; without, the whole screen is one input. ``check`` (with windows, and
    ``thumbnails`` of the item photos from `PhotoCheck.thumbnails`): the nearest candidates are re-ranked by
    their photo, and the similarity is then the photo's correlation with the screen.
    """

    def __init__(self, space: UnifiedSpace, item_vectors: torch.Tensor, valid: np.ndarray | None = None,
                 threshold: float = 0.5, batch_size: int = 32, windows: ScreenWindows | None = None,
                 check: PhotoCheck | None = None, thumbnails: torch.Tensor | None = None) -> None:
        if item_vectors.ndim != 2 or item_vectors.shape[1] != space.config.dim:
            raise ValueError(f"item_vectors must be [items, {space.config.dim}], got {tuple(item_vectors.shape)}")
        if "screen" not in space.encoders:
            raise ValueError(f"the space has no 'screen' tower (it has {sorted(space.encoders)}); "
                             f"grounding needs one")
        self.space, self.threshold, self.batch_size = space.eval(), float(threshold), batch_size
        if check is not None and (windows is None or thumbnails is None or len(thumbnails) != len(item_vectors)):
            raise ValueError("a PhotoCheck re-ranks a windowed search: give windows and one thumbnail per item")
        self.windows, self.check, self.thumbnails = windows, check, thumbnails
        vectors = item_vectors.detach().float().to(space.device)
        if valid is not None:
            vectors = vectors.clone()
            vectors[~torch.as_tensor(np.asarray(valid, bool), device=vectors.device)] = 0.0
        self.item_vectors = vectors

    @classmethod
    def for_catalog(cls, space: UnifiedSpace, catalog: Catalog, threshold: float = 0.5,
                    batch_size: int = 32, windows: ScreenWindows | None = None,
                    check: PhotoCheck | None = None) -> "Grounder":
        """Item vectors from the catalog photos (`embed_images` with the space's image tower), and the
        photos' thumbnails for ``check``."""
        if "image" not in space.encoders:
            raise ValueError(f"the space has no 'image' tower (it has {sorted(space.encoders)}) to embed photos")
        valid = np.array([p is not None for p in catalog.image_paths], bool)
        paths = [p for p in catalog.image_paths if p is not None]
        if not paths:
            raise ValueError("no catalog item has a photo; nothing to ground screens against")
        vectors = torch.zeros(len(catalog), space.config.dim)
        vectors[torch.as_tensor(valid)] = space.embed_images(paths).float().cpu()
        thumbnails = None
        if check is not None:
            from mmrec.encoders import load_image

            thumbnails = check.thumbnails([None if p is None else load_image(p) for p in catalog.image_paths])
        return cls(space, vectors, valid, threshold, batch_size, windows, check, thumbnails)

    @torch.no_grad()
    def similarities(self, screens: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Nearest item code and its similarity for each screenshot (PIL images, HxWx3 uint8 arrays or uint8
        ``[3,H,W]`` tensors)."""
        if not len(screens):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.windows is None:
            best, codes = self.item_similarities(screens).max(dim=1)
            return codes.cpu().numpy().astype(np.int64), best.cpu().numpy().astype(np.float32)
        codes, sims = [], []
        for table in self._tables(screens):
            best, where = self._best_windows(table)
            if self.check is None:
                best, code = best.max(dim=1)
                codes.append(code.cpu()), sims.append(best.cpu())
                continue
            top = best.topk(min(self.check.candidates, best.shape[1]), dim=1).indices.cpu()  # [n, C]
            windows_at = torch.gather(where.cpu(), 1, top)  # each candidate's best window
            boxes = torch.as_tensor(self.windows.boxes(table.width, table.height))[windows_at]
            match = self.check.match(table, boxes, self.thumbnails[top])  # [n, C]
            best_match, k = match.max(dim=1)
            codes.append(top.gather(1, k[:, None])[:, 0]), sims.append(best_match)
        return torch.cat(codes).numpy().astype(np.int64), torch.cat(sims).numpy().astype(np.float32)

    @torch.no_grad()
    def item_similarities(self, screens: Sequence[Any]) -> torch.Tensor:
        """``[N, I]``: each item's similarity to each screen by the tower alone (its best window, with
        windows), before any `PhotoCheck` — how near the tower puts the true item."""
        if self.windows is None:
            from PIL import Image

            screens = [Image.fromarray(s) if isinstance(s, np.ndarray) else s for s in screens]
            return embed_screens(self.space, screens, self.batch_size) @ self.item_vectors.t()
        return torch.cat([self._best_windows(table)[0] for table in self._tables(screens)])

    def _tables(self, screens: Sequence[Any]) -> Iterator[AreaTable]:
        """`AreaTable`s of at most ``batch_size`` screens of one size each, in order: the tower's windows and
        the check's shifts are cut from one table per screen."""
        for start in range(0, len(screens), self.batch_size):
            batch = [screen_tensor(s) for s in screens[start:start + self.batch_size]]
            for same in _runs_of_one_size(batch):
                yield AreaTable(torch.stack([batch[k] for k in same]))

    def _best_windows(self, table: AreaTable) -> tuple[torch.Tensor, torch.Tensor]:
        """Each item's best similarity over the screens' windows ``[n, I]`` and which window gave it."""
        return (window_vectors(self.space, table, self.windows) @ self.item_vectors.t()).max(dim=1)  # over [n, K, I]

    def ground(self, screens: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Item code per screenshot (`NO_ITEM` below the threshold) and its similarity."""
        codes, sims = self.similarities(screens)
        return np.where(sims >= self.threshold, codes, NO_ITEM), sims


@torch.no_grad()
def embed_screens(space: UnifiedSpace, screens: Sequence[Any], batch_size: int = 32) -> torch.Tensor:
    """Screens → ``[N, D]`` through the space's screen tower and adapter.

    A trainable screen tower takes the whole screen (`UnifiedSpace.embed_screens`); a locked one is a
    `ScreenshotEncoder` (tiles), which has ``encode`` but no ``encode_images``, so it is called directly.
    """
    encoder = space.encoders["screen"]
    if hasattr(encoder, "encode_images"):
        return space.embed_screens(screens, batch_size=batch_size)
    out = [space.project("screen", encoder.encode(screens[s:s + batch_size])) for s in range(0, len(screens), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, space.config.dim, device=space.device)


def _runs_of_one_size(screens: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of consecutive screens of one size (a stream's frames are one run)."""
    runs: list[list[int]] = []
    for k, screen in enumerate(screens):
        if runs and screens[runs[-1][0]].shape == screen.shape:
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


def screen_tensor(screen: Any) -> torch.Tensor:
    """A screenshot (PIL image, HxWx3 uint8 array or uint8 ``[3, H, W]`` tensor) as a uint8 ``[3, H, W]`` tensor."""
    from mmrec.encoders.base import pil_to_tensor

    if isinstance(screen, torch.Tensor):
        return screen
    if isinstance(screen, np.ndarray):
        contiguous = np.ascontiguousarray(screen)
        return torch.from_numpy(contiguous if contiguous.flags.writeable else contiguous.copy()).permute(2, 0, 1)
    return pil_to_tensor(screen.convert("RGB"))


@torch.no_grad()
def embed_windows(space: UnifiedSpace, screens: Sequence[Any], windows: ScreenWindows) -> torch.Tensor:
    """Screens (PIL images, HxWx3 uint8 arrays or uint8 ``[3, H, W]`` tensors, any sizes) → ``[N, K, D]``: each
    of their `ScreenWindows` (K per screen; screens in one call must get as many, e.g. share a size) through
    the screen tower and adapter (`window_vectors`)."""
    tensors = [screen_tensor(s) for s in screens]
    if not tensors:
        return torch.zeros(0, 0, space.config.dim, device=space.device)
    out = [window_vectors(space, AreaTable(torch.stack([tensors[k] for k in same])), windows)
           for same in _runs_of_one_size(tensors)]
    counts = sorted({v.shape[1] for v in out})
    if len(counts) != 1:
        raise ValueError(f"screens of one call got different numbers of windows {counts}; "
                         f"ground screens of one size together")
    return torch.cat(out)


@torch.no_grad()
def window_vectors(space: UnifiedSpace, table: AreaTable, windows: ScreenWindows) -> torch.Tensor:
    """The `ScreenWindows` of screens of one size (their `AreaTable`) cut at the screen tower's input size →
    ``[n, K, D]`` through the tower and the screen adapter."""
    from mmrec.encoders.screenshot import ScreenshotEncoder

    encoder = space.encoders["screen"]
    tower = encoder.image_encoder if isinstance(encoder, ScreenshotEncoder) else encoder
    prep = tower.preprocess
    boxes = windows.boxes(table.width, table.height)
    pixels = prep.normalize(crop_windows(table, boxes, prep.size).div_(255).to(tower.device))
    was_training = space.training
    if was_training:  # train()/eval() walk every submodule: only when needed, not per grounding call
        space.eval()
    try:
        vectors = space.project("screen", tower.encode(pixels))
    finally:
        if was_training:
            space.train()
    return vectors.view(table.count, len(boxes), -1)


@dataclass
class GroundingSettings:
    """What grounds screens with a saved space besides its weights: the calibrated ``threshold``, the
    ``windows`` searched for the photo and the ``check`` re-ranking by photo (None: not used)."""

    threshold: float
    windows: ScreenWindows | None = None
    check: PhotoCheck | None = None


def save_grounding(directory: str | os.PathLike, settings: GroundingSettings, **extra: Any) -> Path:
    """Write ``settings`` (and anything in ``extra``, e.g. the calibration's fit) to
    ``directory/grounding.json``, atomically; `load_grounding` reads them back."""
    from mmrec.io import atomic_write_text

    Path(directory).mkdir(parents=True, exist_ok=True)
    return atomic_write_text(Path(directory) / GROUNDING_FILE,
                             json.dumps({**asdict(settings), **extra}, indent=1, default=list))


def load_grounding(directory: str | os.PathLike) -> GroundingSettings:
    """The `GroundingSettings` `save_grounding` wrote to ``directory/grounding.json`` (other keys ignored)."""
    from mmrec.config import from_dict

    path = Path(directory) / GROUNDING_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: calibrate the space (benchmarks/stream_targets.py writes "
                                f"it) or give the threshold")
    try:
        values = json.loads(path.read_text())
        known = {k: values[k] for k in ("threshold", "windows", "check") if k in values}
        return from_dict(GroundingSettings, known)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: expected a JSON object with a numeric 'threshold' and optional 'windows' and "
                         f"'check' ({err})") from err


def calibrate_threshold(codes: np.ndarray, sims: np.ndarray, truth: np.ndarray) -> tuple[float, dict[str, float]]:
    """The similarity threshold with the best F1 of "item X on screen" on labelled frames.

    ``codes``/``sims``: each frame's nearest item and similarity; ``truth``: its true item (`NO_ITEM` where the
    screen shows none). A prediction is right when it names the true item. Returns the threshold (midway
    between neighbouring similarities) and precision, recall and F1 there.
    """
    codes, sims, truth = np.asarray(codes), np.asarray(sims, np.float64), np.asarray(truth)
    if not len(codes) or not (truth != NO_ITEM).any():
        raise ValueError("calibration needs frames, some of them showing an item")
    order = np.argsort(-sims)
    right = (codes[order] == truth[order]).astype(np.float64)
    said = np.arange(1, len(order) + 1, dtype=np.float64)  # frames called "item" when cutting after each
    true_pos = np.cumsum(right)
    precision, recall = true_pos / said, true_pos / float((truth != NO_ITEM).sum())
    f1 = np.where(true_pos > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    ties = np.r_[sims[order][1:] == sims[order][:-1], False]  # cut only between distinct similarities
    f1[ties] = -1.0
    k = int(np.argmax(f1))
    below = sims[order][k + 1] if k + 1 < len(order) else sims[order][k] - 1e-3
    threshold = float((sims[order][k] + below) / 2)
    return threshold, {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k])}
