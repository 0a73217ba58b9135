"""`UnifiedSpace`: towers + cross-modal adapters → one L2-normalised space of size ``D``.

Every modality (``image``, ``text``, ``screen``, and tower-less ones such as ``behaviour`` whose inputs
are vectors, e.g. a warm model's item ID embeddings) has a tower (or none) and an adapter into the same
space. Training aligns pairs of modalities with open_clip's `ClipLoss` (symmetric InfoNCE, learnable
temperature, features gathered across processes) through the one loop, `mmrec.train.fit`.

A training batch is a dict whose keys name a modality and its input form:
``"<modality>:pixels"`` (``[B, 3, H, W]`` from the tower's `Preprocess`; the tower runs, with gradients
when it is trainable), ``"<modality>:features"`` (``[B, tower.dim]`` precomputed outputs of a frozen
tower, e.g. locked MiniLM text features), or ``"<modality>:vectors"`` (inputs of a tower-less modality).
Optional ``"<modality>:mask"`` marks rows that have that modality; a pair's loss uses rows with both.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmrec.config import from_dict
from mmrec.data import Catalog
from mmrec.io import atomic_save_tensors, atomic_write_json, read_json
from mmrec.pretrained import FolderError, Pretrained, check_state, load_tensors
from mmrec.fusion.adapters import AdapterConfig, create_adapter

CONFIG_FILE, WEIGHTS_FILE = "space.json", "space.safetensors"
CODE_OPTIONS = ("trust_remote_code",)  # encoder options that can import code; never read from a saved folder


@dataclass
class TowerConfig:
    """A tower by spec (see `mmrec.encoders.create_encoder`), its build options, and whether it trains."""

    spec: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    trainable: bool = False
    input_dim: int = 0  # tower-less modalities (spec ""): size of the input vectors


@dataclass
class SpaceConfig:
    """Towers and adapters per modality, the space size, and the modality pairs aligned in training.

    ``unpaired_negatives``: a batch row with one side of a pair only (e.g. a screen showing no item, which has
    no photo) is a negative for every row of the other side in that pair's loss, instead of left out.
    """

    towers: dict[str, TowerConfig] = field(default_factory=dict)
    dim: int = 256
    adapter: str = "mlp"
    adapter_options: dict[str, Any] = field(default_factory=dict)
    pairs: tuple[str, ...] = ("image-text",)
    pair_weights: tuple[float, ...] = ()
    init_temperature: float = 0.07
    unpaired_negatives: bool = False

    def __post_init__(self) -> None:
        self.towers = {m: from_dict(TowerConfig, t) if isinstance(t, dict) else t for m, t in self.towers.items()}
        for pair in self.pairs:
            a, _, b = pair.partition("-")
            if not b or a not in self.towers or b not in self.towers:
                raise ValueError(f"SpaceConfig.pairs: {pair!r} must be 'a-b' with both in towers {sorted(self.towers)}")
        if self.pair_weights and len(self.pair_weights) != len(self.pairs):
            raise ValueError("SpaceConfig.pair_weights needs one weight per pair")


class UnifiedSpace(Pretrained, nn.Module):
    """Towers and adapters mapping every modality into one space; `fit` aligns them, `embed_*` use them."""

    def __init__(self, config: SpaceConfig, device: str | torch.device = "cpu", *,
                 trust_remote_code: bool = False) -> None:
        super().__init__()
        from mmrec.encoders import create_encoder

        self.config = config
        self.encoders: dict[str, Any] = {}
        self.towers = nn.ModuleDict()
        self.adapters = nn.ModuleDict()
        for modality, tower in config.towers.items():
            if tower.spec:
                # A trainable screen tower sees the whole screen resized to its input (give it a screen's
                # aspect ratio); a locked one tiles the screen (`ScreenshotEncoder`).
                build_as = "image" if modality == "screen" and tower.trainable else modality
                trusted = trust_remote_code and tower.spec.startswith("hf:")  # only transformers towers take it
                options = {**tower.options, **({"trust_remote_code": True} if trusted else {})}
                encoder = create_encoder(tower.spec, build_as, device=device, precision="fp32", **options)
                self.encoders[modality] = encoder
                if tower.trainable:
                    module = encoder.module
                    module.requires_grad_(True)
                    self.towers[modality] = module
                in_dim = encoder.dim
            elif tower.input_dim > 0:
                in_dim = tower.input_dim
            else:
                raise ValueError(f"tower {modality!r} needs a spec or an input_dim")
            adapter_cfg = from_dict(AdapterConfig, {"kind": config.adapter, **config.adapter_options,
                                                    "in_dim": in_dim, "out_dim": config.dim})
            self.adapters[modality] = create_adapter(adapter_cfg)
        self.adapters.to(device)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature), device=device))
        self._loss = None

    def _apply(self, fn, *args, **kwargs):  # what .to() / .cuda() / accelerate's prepare go through
        super()._apply(fn, *args, **kwargs)
        for modality, tower in self.towers.items():  # a trained tower moved: its encoder must feed it there
            weight = next(tower.parameters(), None)
            if weight is not None:
                self.encoders[modality].device = weight.device
        return self

    # -- embedding -----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the adapters live."""
        return self.logit_scale.device

    def project(self, modality: str, features: torch.Tensor) -> torch.Tensor:
        """Tower outputs (or tower-less input vectors) of ``modality`` → ``[N, D]`` in the space."""
        return self.adapters[modality](features.to(self.device, torch.float32))

    def _tower_features(self, modality: str, pixels: torch.Tensor) -> torch.Tensor:
        encoder = self.encoders[modality]
        pixels = pixels.to(self.device, torch.float32)
        if modality in self.towers and self.training:
            return encoder.forward_features(pixels).float()
        return encoder.encode(pixels)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Texts → ``[N, D]``."""
        return self._embed_batches("text", list(texts), batch_size, lambda enc, b: enc.encode(b))

    @torch.no_grad()
    def embed_images(self, images: Sequence[Any], batch_size: int = 128, modality: str = "image") -> torch.Tensor:
        """PIL images, uint8 tensors or image paths → ``[N, D]``."""
        from PIL import Image

        def encode(enc: Any, batch: list) -> torch.Tensor:
            loaded = []
            for img in batch:
                if isinstance(img, (str, os.PathLike)):
                    with Image.open(img) as im:
                        img = im.convert("RGB")
                loaded.append(img)
            # An image tower takes PIL images through encode_images; a screenshot tower tiles them in encode.
            return enc.encode_images(loaded) if hasattr(enc, "encode_images") else enc.encode(loaded)

        return self._embed_batches(modality, list(images), batch_size, encode)

    @torch.no_grad()
    def embed_screens(self, screens: Sequence[Any], batch_size: int = 8) -> torch.Tensor:
        """App screenshots (any size: tiled by a locked screen tower, resized by a trained one) → ``[N, D]``."""
        return self.embed_images(screens, batch_size, modality="screen")

    def _embed_batches(self, modality: str, inputs: list, batch_size: int, encode) -> torch.Tensor:
        if modality not in self.encoders:
            raise ValueError(f"this space has no {modality!r} tower; it has {sorted(self.encoders)}")
        was_training = self.training
        self.eval()
        try:
            out = [self.project(modality, encode(self.encoders[modality], inputs[s:s + batch_size]))
                   for s in range(0, len(inputs), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.config.dim, device=self.device)

    @torch.no_grad()
    def embed_items(self, catalog: Catalog, *, texts: Sequence[str] | None = None,
                    modalities: Sequence[str] = ("image", "text"), batch_size: int = 128,
                    cache: str | os.PathLike | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Item vectors ``[N, D]`` fusing the modalities each item has (mean, renormalised), and a mask of
        items that got any vector. Tower outputs go through `mmrec.encoders.embed` (parallel decoding,
        counted skips of broken images, optional on-disk cache)."""
        from mmrec.encoders import embed

        total = torch.zeros(len(catalog), self.config.dim, device=self.device)
        count = torch.zeros(len(catalog), device=self.device)
        for modality in modalities:
            if modality not in self.encoders:
                continue
            if modality in self.towers:
                was_training = self.training
                self.eval()
            result = embed(catalog, self.encoders[modality], texts=texts if modality == "text" else None,
                           batch_size=batch_size, cache=None if modality in self.towers else cache, progress=False)
            if modality in self.towers:
                self.train(was_training)
            valid = torch.as_tensor(result.valid, device=self.device)
            vectors = self.project(modality, torch.as_tensor(result.vectors, device=self.device))
            total[valid] += vectors[valid]
            count[valid] += 1
        has = count > 0
        total[has] = F.normalize(total[has], dim=-1)
        return total, has.cpu().numpy()

    # -- training ------------------------------------------------------------------------------------
    def encode_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Space vectors (and row masks) of every modality present in a training batch."""
        out = {}
        for key, value in batch.items():
            modality, _, form = key.partition(":")
            if form == "mask":
                continue
            if form == "pixels":
                features = self._tower_features(modality, value)
            elif form in ("features", "vectors"):
                features = value
            else:
                raise KeyError(f"batch key {key!r}: expected '<modality>:pixels|features|vectors|mask'")
            out[modality] = (self.project(modality, features), batch.get(f"{modality}:mask"))
        return out

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted sum of `ClipLoss` over the configured modality pairs present in the batch."""
        vectors = self.encode_batch(batch)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        weights = self.config.pair_weights or (1.0,) * len(self.config.pairs)
        losses: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.device)
        for pair, weight in zip(self.config.pairs, weights):
            a, _, b = pair.partition("-")
            if a not in vectors or b not in vectors:
                continue
            (va, ma), (vb, mb) = vectors[a], vectors[b]
            ma = None if ma is None else ma.to(va.device).bool()
            mb = None if mb is None else mb.to(va.device).bool()
            keep = ma if mb is None else mb if ma is None else ma & mb
            only_a = only_b = None
            if self.config.unpaired_negatives:
                only_a = None if mb is None else ~mb if ma is None else ma & ~mb
                only_b = None if ma is None else ~ma if mb is None else mb & ~ma
            loss = self.clip_loss(va, vb, scale, keep, only_a, only_b)
            losses[pair] = loss.detach()
            total = total + weight * loss
        return {"loss": total, "temperature": (1.0 / scale).detach(), **losses}

    def clip_loss(self, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, keep: torch.Tensor | None = None,
                  only_a: torch.Tensor | None = None, only_b: torch.Tensor | None = None) -> torch.Tensor:
        """open_clip's `ClipLoss` over the rows of ``a`` and ``b`` that ``keep`` marks (all rows without it).

        ``only_a`` / ``only_b`` mark rows with that side alone (``unpaired_negatives``): they join the other
        side's softmax as negatives (``b`` rows are then scored against the kept ``a`` rows and the ``only_a``
        ones), and the loss, the same symmetric cross-entropy, is computed here.
        When training is distributed, features (with gradients) and row masks of every process are gathered
        first and the loss is taken over the global batch, so processes may keep different numbers of rows.
        """
        from open_clip.loss import ClipLoss, gather_features

        if self._loss is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            self._rank = torch.distributed.get_rank() if dist else 0
            self._world = torch.distributed.get_world_size() if dist else 1
            self._loss = ClipLoss()  # it sees features already gathered from every process
        if self._world > 1:
            a, b = gather_features(a, b, gather_with_grad=True, rank=self._rank, world_size=self._world)
            keep, only_a, only_b = (None if m is None else self._gather_mask(m) for m in (keep, only_a, only_b))
        extra_a = a[only_a] if only_a is not None and bool(only_a.any()) else None
        extra_b = b[only_b] if only_b is not None and bool(only_b.any()) else None
        if keep is not None:
            if not bool(keep.any()):  # no row has both sides: no signal, but keep the graph connected
                return (a.sum() + b.sum()) * 0.0
            a, b = a[keep], b[keep]
        if extra_a is None and extra_b is None:
            return self._loss(a, b, scale)
        labels = torch.arange(len(a), device=a.device)
        all_a = a if extra_a is None else torch.cat([a, extra_a])
        all_b = b if extra_b is None else torch.cat([b, extra_b])
        return (F.cross_entropy(scale * a @ all_b.t(), labels) + F.cross_entropy(scale * b @ all_a.t(), labels)) / 2

    def _gather_mask(self, mask: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(mask, dtype=torch.uint8) for _ in range(self._world)]
        torch.distributed.all_gather(parts, mask.to(torch.uint8))
        return torch.cat(parts).bool()

    # -- persistence (data, never code: `mmrec.pretrained`) ------------------------------------------
    folder_kind = "space"

    def folder_config(self) -> dict[str, Any]:
        """What ``space.json`` holds: the `SpaceConfig`."""
        return asdict(self.config)

    def write_files(self, folder: Path) -> None:
        """``space.json`` + safetensors of the adapters, temperature and trained towers (frozen towers are
        rebuilt from their spec when loading)."""
        atomic_write_json(folder / CONFIG_FILE, self.folder_config())
        atomic_save_tensors(self.state_dict(), folder / WEIGHTS_FILE)

    @classmethod
    def read_files(cls, folder: Path, manifest: dict[str, Any], device: str | torch.device = "cpu",
                   trust_remote_code: bool = False) -> "UnifiedSpace":
        """Build the space its verified config describes and load its weights. Tower options that can run
        code are refused in the file: ``trust_remote_code`` comes from the caller only."""
        path = folder / CONFIG_FILE
        try:
            config = from_dict(SpaceConfig, read_json(path), where=str(path))
        except (TypeError, ValueError) as err:
            raise FolderError(str(err) if str(path) in str(err) else f"{path}: {err}") from None
        for modality, tower in config.towers.items():
            unsafe = sorted(set(tower.options) & set(CODE_OPTIONS))
            if unsafe:
                raise FolderError(f"{path}: tower {modality!r} sets {unsafe}; options that can run code are never "
                                  f"read from a saved folder (pass trust_remote_code=True to from_pretrained "
                                  f"if you trust {tower.spec!r})")
        space = cls(config, device=device, trust_remote_code=trust_remote_code)
        weights = folder / WEIGHTS_FILE
        state = load_tensors(weights, device)
        check_state(weights, space.state_dict(), state)
        space.load_state_dict(state)
        return space.eval()
