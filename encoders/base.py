"""The `Encoder` interface every tower implements, and the image `Preprocess` that travels with weights.

An encoder turns a batch of one modality into ``float32`` vectors ``[N, dim]`` on its device. Image
towers take pixels that their own `Preprocess` produced (so the GPU path can decode, resize and
normalise a whole batch before calling the tower); text towers take strings. `Encoder.describe` names
everything that decides the output (spec, weights identity, preprocessing, pooling), and its hash,
`Encoder.fingerprint`, keys the embedding cache.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

MODALITIES = ("image", "text", "screen")
RESIZE_MODES = ("shortest", "longest", "squash")
INTERPOLATIONS = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                  "nearest": InterpolationMode.NEAREST}
TEXT_POOLINGS = ("mean", "cls", "last", "tower")  # tower: the network pools itself (open_clip)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class EncoderSourceError(ValueError):
    """A spec that cannot be built: unknown, ambiguous, or naming weights that cannot be reached."""


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"image size must be an int or (height, width), got {size}")
    return size  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocess:
    """How pixels must look for one set of weights: input size, resize rule, interpolation, mean/std.

    ``resize_mode``: ``shortest`` resizes the short side to ``size / crop_pct`` and centre-crops
    (open_clip's and timm's eval transform), ``longest`` fits the whole image and pads with
    ``fill_color``, ``squash`` resizes to ``size`` ignoring the aspect ratio.
    """

    size: tuple[int, int] | int = (224, 224)  # an int is a square
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    crop_pct: float = 1.0
    fill_color: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _pair(self.size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"Preprocess mean/std need 3 channels, got {self.mean} / {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Preprocess.interpolation {self.interpolation!r} not in {sorted(INTERPOLATIONS)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"Preprocess.resize_mode {self.resize_mode!r} not in {RESIZE_MODES}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"Preprocess.crop_pct must be in (0, 1], got {self.crop_pct}")

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images ``[N, 3, H, W]`` (one size) -> float ``[N, 3, *size]`` in [0, 1].

        uint8 images on the CPU are resized as uint8 (torchvision's vectorised path, ~10x faster than
        float); elsewhere in float32.
        """
        if images.dim() == 3:
            images = images.unsqueeze(0)
        as_uint8 = images.dtype == torch.uint8 and images.device.type == "cpu"
        if as_uint8:
            x, fill = images, float(self.fill_color)
        else:
            x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
            fill = self.fill_color / 255
        h, w = self.size
        mode = INTERPOLATIONS[self.interpolation]
        if self.resize_mode == "squash":
            x = TF.resize(x, [h, w], interpolation=mode, antialias=True)
        elif self.resize_mode == "shortest":
            scaled = [math.floor(h / self.crop_pct)] if h == w else \
                [math.floor(h / self.crop_pct), math.floor(w / self.crop_pct)]
            x = TF.center_crop(TF.resize(x, scaled, interpolation=mode, antialias=True), [h, w])
        else:  # longest: fit inside, pad the rest
            scale = min(h / x.shape[-2], w / x.shape[-1])
            nh, nw = max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale))
            x = TF.resize(x, [nh, nw], interpolation=mode, antialias=True)
            top, left = (h - nh) // 2, (w - nw) // 2
            x = F.pad(x, (left, w - nw - left, top, h - nh - top), value=fill)
        return x.float().div_(255) if as_uint8 else x.clamp_(0, 1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] float pixels -> the tower's input (mean/std normalised), in place."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Resize and normalise a batch of same-sized images (uint8 ``[N, 3, H, W]`` or ``[3, H, W]``)."""
        return self.normalize(self.resize(images))

    def batch(self, images: Sequence["Image.Image | torch.Tensor"]) -> torch.Tensor:
        """Preprocess images of any sizes (RGB PIL images or uint8 ``[3, H, W]`` tensors) into one batch."""
        return torch.cat([self(pil_to_tensor(im) if isinstance(im, Image.Image) else im) for im in images])


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a uint8 ``[3, H, W]`` tensor (no copy beyond numpy's)."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r}; decode with mmrec.encoders.images")
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


@dataclass(frozen=True)
class TextPreprocess:
    """What a text tower does around the network: length cap, prompt template, pooling, normalisation.

    ``append_eos`` adds the end-of-sequence token after truncation (last-token pooling of LLMs).
    """

    max_length: int = 256
    pooling: str = "mean"
    template: str = "{text}"
    normalize: bool = True
    append_eos: bool = False

    def __post_init__(self) -> None:
        if self.pooling not in TEXT_POOLINGS:
            raise ValueError(f"TextPreprocess.pooling {self.pooling!r} not in {TEXT_POOLINGS}")
        if "{text}" not in self.template:
            raise ValueError(f"prompt template must contain '{{text}}', got {self.template!r}")
        if self.max_length < 1:
            raise ValueError(f"TextPreprocess.max_length must be positive, got {self.max_length}")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(device: torch.device, precision: str) -> torch.dtype:
    """``auto`` is bf16 (fp16 where bf16 is missing) on CUDA and fp32 elsewhere."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {['auto', *PRECISIONS]}")
    return PRECISIONS[precision]


def weights_identity(path: str | os.PathLike) -> dict[str, Any]:
    """Path, total size and newest mtime of a weights file or folder: changes when the weights change."""
    p = Path(path).expanduser().resolve()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    stats = [f.stat() for f in files]
    return {"path": str(p), "bytes": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}


class Encoder(ABC):
    """A frozen tower: ``encode(batch) -> float32 Tensor[N, dim]`` on `device`.

    Subclasses set ``spec``, ``modality``, ``dim``, ``normalized`` (L2-normalised output),
    ``device``, ``dtype`` and ``weights`` (what the weights are: a path identity, a tag, or the random
    seed), and implement `encode`.
    """

    spec: str
    modality: str
    dim: int
    normalized: bool
    device: torch.device
    dtype: torch.dtype
    weights: dict[str, Any]

    @abstractmethod
    def encode(self, batch: Any) -> torch.Tensor:
        """Vectors ``float32 [N, dim]`` for one batch of this encoder's modality."""

    def describe(self) -> dict[str, Any]:
        """Everything that decides the output vectors, JSON-ready (no device or dtype: results must
        agree across them within tolerance)."""
        return {"spec": self.spec, "modality": self.modality, "dim": self.dim, "normalized": self.normalized,
                "weights": self.weights, "class": type(self).__name__}

    @property
    def fingerprint(self) -> str:
        """Hex digest of `describe`: equal fingerprints mean interchangeable vectors."""
        text = json.dumps(self.describe(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, modality={self.modality!r}, dim={self.dim})"


class ImageEncoder(Encoder):
    """An image tower: `encode` takes pixels made by `preprocess`; `encode_images` takes images."""

    modality = "image"
    preprocess: Preprocess
    module: torch.nn.Module

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "preprocess": asdict(self.preprocess)}

    @abstractmethod
    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The tower's raw output for normalised pixels already on device and in `dtype`."""

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` pixels from `preprocess` -> ``float32 [N, dim]``."""
        if batch.dim() != 4 or batch.shape[1] != 3 or tuple(batch.shape[-2:]) != self.preprocess.size:
            raise ValueError(f"{self.spec}: expected pixels [N, 3, {self.preprocess.size[0]}, "
                             f"{self.preprocess.size[1]}], got {list(batch.shape)}")
        if batch.shape[0] == 0:
            return torch.zeros(0, self.dim, device=self.device)
        out = self.forward_features(batch.to(self.device, self.dtype, non_blocking=True)).float()
        return F.normalize(out, dim=-1) if self.normalized else out

    def encode_images(self, images: Sequence["Image.Image | torch.Tensor"]) -> torch.Tensor:
        """RGB PIL images or uint8 ``[3, H, W]`` tensors of any size -> ``float32 [N, dim]``."""
        return self.encode(self.preprocess.batch(images))


class TextEncoder(Encoder):
    """A text tower: `encode` takes a list of strings."""

    modality = "text"
    text_preprocess: TextPreprocess

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "text_preprocess": asdict(self.text_preprocess)}

    @abstractmethod
    def encode(self, batch: Sequence[str]) -> torch.Tensor:
        """Strings -> ``float32 [N, dim]``."""
