"""Screenshots as overlapping tiles at the tower's input size, encoded as one batch and pooled.

A phone capture (1080x2400) or a desktop one (1920x1080) squashed to 224 px loses every word on it.
Instead the capture is scaled so its short side spans ``tiles_across`` tiles (each the tower's input
size, overlapping by ``tile_overlap``), cut into a grid of tiles covering the whole screen, plus one
letterboxed ``overview`` of the full screen. All tiles of all screens in a batch go through the image
tower together; `TilePool` turns each screen's tile vectors into one vector (mean, or attention).

Whether a screen tower tiles or takes the screen resized is decided in one place, `screen_tower_modality`: a
locked (pretrained) tower tiles, a trainable one sees what it was trained on, whole screens or windows resized
to its input. Every screen tower takes screenshots through ``encode_images``; `pixel_tower` is the image tower
under it, for callers that cut their own inputs (windows).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from mmrec.encoders.base import INTERPOLATIONS, Encoder, ImageEncoder, pil_to_tensor

POOLINGS = ("mean", "attention")


def screen_tower_modality(trainable: bool) -> str:
    """What a ``screen`` tower is built as (`mmrec.encoders.create_encoder`'s modality): ``"screen"`` — a
    `ScreenshotEncoder`, which tiles the screen — for a locked tower, whose pretraining saw photos, not
    screens; ``"image"`` — the whole screen (or a window) resized to the input — for a trainable one, which
    learns from what it is trained on. The one place this is decided."""
    return "image" if trainable else "screen"


def pixel_tower(encoder: Encoder) -> ImageEncoder:
    """The image tower that encodes a screen tower's pixels: a `ScreenshotEncoder`'s tile tower, or the
    (resizing) tower itself."""
    return encoder.image_encoder if isinstance(encoder, ScreenshotEncoder) else encoder


def tile_grid(height: int, width: int, tile: int, tiles_across: int, overlap: float) -> tuple[int, int, list[int], list[int]]:
    """Scaled size ``(h, w)`` and the tiles' top and left offsets covering it edge to edge.

    The short side is scaled to exactly ``tiles_across`` tiles overlapping by ``overlap``; the long
    side gets as many tiles as needed with at least that overlap, spread evenly.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"tile_overlap must be in [0, 1), got {overlap}")
    if tiles_across < 1:
        raise ValueError(f"tiles_across must be >= 1, got {tiles_across}")
    stride = tile * (1 - overlap)
    short_target = round(tile + (tiles_across - 1) * stride)
    scale = short_target / min(height, width)
    h, w = max(tile, round(height * scale)), max(tile, round(width * scale))

    def offsets(length: int) -> list[int]:
        count = 1 if length <= tile else math.ceil((length - tile) / stride - 1e-9) + 1
        if count == 1:
            return [0]
        return [round(k * (length - tile) / (count - 1)) for k in range(count)]

    return h, w, offsets(h), offsets(w)


class TilePool(torch.nn.Module):
    """Pools ``[T, dim]`` tile vectors of one screen into ``[dim]``.

    ``mean``: the average. ``attention``: softmax over tiles of ``<tile, query> / temperature``, where
    the query is the screen's overview vector (the last tile) plus a learnable offset that starts at
    zero; untrained, tiles resembling the whole screen weigh more and near-empty tiles less.
    """

    def __init__(self, dim: int, mode: str = "mean", temperature: float = 0.1) -> None:
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"screen pooling {mode!r} not in {POOLINGS}")
        self.mode = mode
        self.query = torch.nn.Parameter(torch.zeros(dim))
        self.log_temperature = torch.nn.Parameter(torch.tensor(math.log(temperature)))

    def weights(self, tiles: torch.Tensor) -> torch.Tensor:
        """The pooling weights ``[T]`` (they sum to 1)."""
        if self.mode == "mean":
            return torch.full((tiles.shape[0],), 1.0 / tiles.shape[0], device=tiles.device)
        query = F.normalize(tiles[-1], dim=-1) + self.query.to(tiles.device)
        logits = F.normalize(tiles, dim=-1) @ query / self.log_temperature.exp().to(tiles.device)
        return torch.softmax(logits, dim=0)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.weights(tiles) @ tiles


class ScreenshotEncoder(Encoder):
    """Wraps an `ImageEncoder`: ``encode(screens)`` takes RGB PIL images or uint8 ``[3, H, W]`` tensors."""

    modality = "screen"

    def __init__(self, image_encoder: ImageEncoder, *, tiles_across: int = 3, tile_overlap: float = 0.25,
                 screen_pooling: str = "mean", overview: bool = True, tile_batch_size: int = 256) -> None:
        if not isinstance(image_encoder, ImageEncoder):
            raise TypeError(f"ScreenshotEncoder wraps an ImageEncoder, got {type(image_encoder).__name__}")
        self.image_encoder = image_encoder
        self.spec, self.dim, self.weights = image_encoder.spec, image_encoder.dim, image_encoder.weights
        self.device, self.dtype, self.normalized = image_encoder.device, image_encoder.dtype, image_encoder.normalized
        self.preprocess = image_encoder.preprocess
        self.tiles_across, self.tile_overlap, self.overview = tiles_across, tile_overlap, overview
        self.tile_batch_size = tile_batch_size
        if screen_pooling == "attention" and not overview:
            raise ValueError("screen_pooling='attention' queries with the overview tile; keep overview=True")
        self.pool = TilePool(self.dim, screen_pooling).to(self.device)
        tile_grid(1, 1, min(self.preprocess.size), tiles_across, tile_overlap)  # validates the options

    def describe(self) -> dict[str, Any]:
        return {**self.image_encoder.describe(), "modality": "screen", "class": type(self).__name__,
                "tiling": {"tiles_across": self.tiles_across, "tile_overlap": self.tile_overlap,
                           "overview": self.overview, "pooling": self.pool.mode}}

    def tiles(self, screen: "Image.Image | torch.Tensor") -> torch.Tensor:
        """One screen -> normalised tiles ``[T, 3, S, S]`` on the device (the overview last, if on)."""
        image = pil_to_tensor(screen) if isinstance(screen, Image.Image) else screen
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"a screen must be an RGB image or a [3, H, W] tensor, got shape {list(image.shape)}")
        prep = self.preprocess
        tile = min(prep.size)
        h, w, tops, lefts = tile_grid(image.shape[-2], image.shape[-1], tile, self.tiles_across, self.tile_overlap)
        x = image.to(self.device).float().div_(255)
        scaled = TF.resize(x, [h, w], interpolation=INTERPOLATIONS[prep.interpolation], antialias=True).clamp_(0, 1)
        crops = [scaled[:, t:t + tile, l:l + tile] for t in tops for l in lefts]
        if prep.size != (tile, tile):
            crops = [TF.resize(c, list(prep.size), antialias=True) for c in crops]
        batch = torch.stack(crops)
        if self.overview:
            letterbox = replace(prep, resize_mode="longest", crop_pct=1.0)
            batch = torch.cat([batch, letterbox.resize(x)])
        return prep.normalize(batch)

    def encode_images(self, images: Sequence["Image.Image | torch.Tensor"]) -> torch.Tensor:
        """Screens -> ``[N, dim]``, as an `ImageEncoder` takes images (`encode`: tiled and pooled)."""
        return self.encode(images)

    @torch.inference_mode()
    def encode(self, batch: Sequence["Image.Image | torch.Tensor"]) -> torch.Tensor:
        """Screens -> ``float32 [N, dim]``: every tile of every screen encoded, then pooled per screen."""
        screens = list(batch)
        if not screens:
            return torch.zeros(0, self.dim, device=self.device)
        tiles = [self.tiles(s) for s in screens]
        flat = torch.cat(tiles)
        vectors = torch.cat([self.image_encoder.encode(flat[s:s + self.tile_batch_size])
                             for s in range(0, len(flat), self.tile_batch_size)])
        out, start = [], 0
        for t in tiles:
            out.append(self.pool(vectors[start:start + len(t)]))
            start += len(t)
        pooled = torch.stack(out)
        return F.normalize(pooled, dim=-1) if self.normalized else pooled
