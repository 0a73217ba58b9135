"""`UnifiedSpace`: towers + cross-modal adapters → one L2-normalised space of size ``D``.

Every modality (``image``, ``text``, ``screen``, and tower-less ones such as ``behaviour`` whose inputs
are vectors, e.g. a warm model's item ID embeddings) has a tower (or none) and an adapter into the same
space. `UnifiedSpace.training_step` is what the one loop, `mmrec.train.fit`, calls: it encodes a batch
into the space and hands the vectors to the alignment objective, `mmrec.fusion.clip_losses.PairObjective`
(open_clip's `ClipLoss` per configured pair, one learnable temperature, features gathered across
processes). Dependencies run one way: this module uses the building blocks `mmrec.fusion.adapters` and
`mmrec.fusion.clip_losses`, which know nothing of it; `mmrec.fusion.alignment` (training data, hold-out,
validation, `align`) builds on it.

A training batch is a dict whose keys name a modality and its input form:
``"<modality>:pixels"`` (``[B, 3, H, W]`` from the tower's `Preprocess`; the tower runs, with gradients
when it is trainable), ``"<modality>:features"`` (``[B, tower.dim]`` precomputed outputs of a frozen
tower, e.g. locked MiniLM text features), or ``"<modality>:vectors"`` (inputs of a tower-less modality).
Optional ``"<modality>:mask"`` marks rows that have that modality; a pair's loss uses rows with both.

Named presets (`space_preset`, `SPACE_PRESETS`) give the space configurations the toolkit uses, e.g.
``"lit-tiny-vit"``; `tiny_vit` is the one definition of the small from-scratch ViT tower.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

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


# -- presets -----------------------------------------------------------------------------------------
TINY_VIT_SPEC = "timm:vit_tiny_patch16_224@random"  # timm's ViT, sized by its model_kwargs, seeded random init


def tiny_vit(size: int | Sequence[int], *, patch: int = 8, width: int = 192, depth: int = 4, heads: int = 3,
             trainable: bool = True, **model_kwargs: Any) -> TowerConfig:
    """A small timm ViT trained from scratch (needs no pretrained weights, so it works offline): input
    ``size`` (an int, or ``(height, width)``; multiples of ``patch``), ``width`` channels, ``depth``
    blocks of ``heads`` heads. Further ``model_kwargs`` go to ``timm.create_model`` (e.g.
    ``global_pool="avg"``)."""
    img_size = list(size) if isinstance(size, (tuple, list)) else size
    kwargs = {"img_size": img_size, "patch_size": patch, "embed_dim": width, "depth": depth, "num_heads": heads,
              **model_kwargs}
    return TowerConfig(TINY_VIT_SPEC, {"model_kwargs": kwargs}, trainable)


def _lit_tiny_vit() -> SpaceConfig:
    return SpaceConfig(towers={"image": tiny_vit((96, 64)), "text": TowerConfig("minilm")})


def _text_behaviour() -> SpaceConfig:
    return SpaceConfig(towers={"text": TowerConfig("minilm"), "behaviour": TowerConfig(input_dim=64)},
                       pairs=("text-behaviour",))


SPACE_PRESETS: dict[str, Callable[[], SpaceConfig]] = {
    # LiT: a tiny ViT image tower (96x64 input, patch 8, width 192, depth 4) trained from scratch against the
    # locked all-MiniLM-L6-v2 text tower; MLP adapters into D 256
    "lit-tiny-vit": _lit_tiny_vit,
    # the locked MiniLM text tower aligned to a warm model's item embeddings (the tower-less ``behaviour``
    # modality, 64-d: override its input_dim for other models); MLP adapters into D 256
    "text-behaviour": _text_behaviour,
}


def space_preset(name: str, **overrides: Any) -> SpaceConfig:
    """The `SpaceConfig` of preset ``name`` (see `SPACE_PRESETS`) with ``overrides`` of its fields applied;
    ``towers`` entries replace the preset's towers of those modalities and keep the others. Unknown
    presets, fields and ill-typed values are a `ValueError`."""
    if name not in SPACE_PRESETS:
        raise ValueError(f"space preset {name!r} is unknown; presets: {', '.join(SPACE_PRESETS)}")
    base = asdict(SPACE_PRESETS[name]())
    towers = {m: asdict(t) if isinstance(t, TowerConfig) else t for m, t in (overrides.pop("towers", None) or {}).items()}
    return from_dict(SpaceConfig, {**base, **overrides, "towers": {**base["towers"], **towers}},
                     where=f"space preset {name!r}")


class UnifiedSpace(Pretrained, nn.Module):
    """Towers and adapters mapping every modality into one space; `embed_*` use them, `training_step` is
    what `mmrec.train.fit` minimises (`mmrec.fusion.alignment.align` runs it on alignment data)."""

    def __init__(self, config: SpaceConfig, device: str | torch.device = "cpu", *,
                 trust_remote_code: bool = False) -> None:
        super().__init__()
        from mmrec.encoders import create_encoder
        from mmrec.encoders.screenshot import screen_tower_modality
        from mmrec.fusion.clip_losses import PairObjective  # imports open_clip: only when a space is built

        self.config = config
        self.encoders: dict[str, Any] = {}
        self.towers = nn.ModuleDict()
        self.adapters = nn.ModuleDict()
        for modality, tower in config.towers.items():
            if tower.spec:
                # tiles or the whole screen resized: decided by `screen_tower_modality` alone
                build_as = screen_tower_modality(tower.trainable) if modality == "screen" else modality
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
        self.objective = PairObjective(config.pairs, config.pair_weights, config.unpaired_negatives)

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
        """Texts → ``[N, D]`` (a list of strings: one string alone is refused, not read as its characters)."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("embed_texts takes a list of texts; wrap one text as [text]")
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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
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
        """The alignment objective on the batch's space vectors: the weighted sum of `ClipLoss` over the
        configured pairs present in the batch (``loss``), the temperature, and each pair's loss."""
        vectors = self.encode_batch(batch)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        return self.objective(vectors, scale)

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
        try:
            space = cls(config, device=device, trust_remote_code=trust_remote_code)
        except ValueError as err:  # a tower the file describes cannot be built (an option its builder lacks)
            raise FolderError(f"{path}: {err}") from None
        weights = folder / WEIGHTS_FILE
        state = load_tensors(weights, device)
        check_state(weights, space.state_dict(), state)
        space.load_state_dict(state)
        return space.eval()
