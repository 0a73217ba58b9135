"""timm vision backbones as image towers: pooled features (the classifier removed) of any timm model.

Weights: ``@random``, ``@TAG`` (timm's pretrained tags: ``timm:vit_small_patch16_224@augreg_in1k``),
``@/path/checkpoint`` (loaded by timm with ``weights_only=True`` or from safetensors), or a folder saved
by ``timm.models.save_for_hf`` (``config.json`` with its ``pretrained_cfg`` + weights). Preprocessing
is timm's data config resolved from the model's pretrained_cfg. Features are not contrastive, so they
are left unnormalised unless ``normalize=True``.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import timm
import torch
from timm.data import resolve_model_data_config

from mmrec.encoders import hub
from mmrec.encoders.base import EncoderSourceError, ImageEncoder, Preprocess, weights_identity
from mmrec.encoders.registry import EncoderSpec, classify_weights, register

logger = logging.getLogger(__name__)


def _knows(arch: str) -> bool:
    return timm.is_model(arch.partition(".")[0])


def _tags(arch: str) -> list[str]:
    return [name.partition(".")[2] for name in timm.list_pretrained(f"{arch}.*")]


def _fetch_tag(arch: str, tag: str) -> str:
    """Local path of the weights of ``arch.tag``: from the HF cache or hub, else the URL (fail fast offline)."""
    cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}")
    what = f"timm {arch} tag {tag!r}"
    hint = f"timm:{arch}@/path/to/model.safetensors (or a save_for_hf folder: timm:/path/to/folder)"
    if cfg.hf_hub_id:
        repo = cfg.hf_hub_id.partition("@")[0]
        files = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
        return hub.fetch_hub_file(repo, files + ["model.safetensors", "pytorch_model.bin"], what=what, local_hint=hint)
    if cfg.url:
        hub.require_url(cfg.url, what=what, local_hint=hint)
        from timm.models._hub import download_cached_file

        return download_cached_file(cfg.url)
    raise EncoderSourceError(f"{what} has no download source in timm; pass {hint}")


def _create(spec: EncoderSpec, model_kwargs: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    arch_path = os.path.expanduser(spec.arch)
    if os.path.isdir(arch_path) and spec.weights is None:
        folder = os.path.abspath(arch_path)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise FileNotFoundError(f"{spec.text}: folder {folder} has no timm config.json")
        model = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0, **model_kwargs)
        return model, weights_identity(folder)
    arch, _, name_tag = spec.arch.partition(".")
    if not timm.is_model(arch):
        raise EncoderSourceError(f"{spec.text}: {arch!r} is not a timm model (timm.list_models()) "
                                 f"or a folder saved by timm.models.save_for_hf")
    if name_tag:
        raise EncoderSourceError(f"{spec.text}: write the tag after '@' (timm:{arch}@{name_tag}), not after '.'")
    kind, value = classify_weights(spec, _tags(arch))
    if kind == "random":
        return timm.create_model(arch, pretrained=False, num_classes=0, **model_kwargs), {"random": True}
    if kind == "path":
        if os.path.isdir(value):
            model = timm.create_model(f"local-dir:{value}", pretrained=True, num_classes=0, **model_kwargs)
            return model, weights_identity(value)
        model = timm.create_model(arch, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay={"file": value}, **model_kwargs)
        return model, weights_identity(value)
    file = _fetch_tag(arch, value)
    model = timm.create_model(f"{arch}.{value}", pretrained=True, num_classes=0,
                              pretrained_cfg_overlay={"file": file}, **model_kwargs)
    return model, {"tag": value, **weights_identity(file)}


def _preprocess_of(model: torch.nn.Module, model_kwargs: dict[str, Any]) -> Preprocess:
    args = {}
    if model_kwargs.get("img_size") is not None:  # the pretrained_cfg still names the default size
        size = model_kwargs["img_size"]
        args["input_size"] = (3, size, size) if isinstance(size, int) else (3, *size)
    cfg = resolve_model_data_config(model, args=args)
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in ("bicubic", "bilinear", "nearest"):
        logger.warning("timm interpolation %r not supported here; using bicubic", interpolation)
        interpolation = "bicubic"
    crop_mode = cfg.get("crop_mode", "center")
    return Preprocess(size=tuple(cfg["input_size"][1:]), mean=cfg["mean"], std=cfg["std"], interpolation=interpolation,
                      resize_mode="squash" if crop_mode == "squash" else "shortest",
                      crop_pct=float(cfg.get("crop_pct") or 1.0))


class TimmImageEncoder(ImageEncoder):
    """A timm backbone without its classifier; ``dim`` is its pooled feature size."""

    def __init__(self, spec: str, model: torch.nn.Module, preprocess: Preprocess, weights: dict[str, Any],
                 device: torch.device, dtype: torch.dtype, normalize: bool) -> None:
        self.spec, self.preprocess, self.weights = spec, preprocess, weights
        self.device, self.dtype, self.normalized = device, dtype, normalize
        self.module = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.dim = int(getattr(model, "head_hidden_size", None) or model.num_features)

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.module(pixels)


@register("timm", modalities=("image",), knows=_knows)
def build_timm(spec: EncoderSpec, *, modality: str, device: torch.device, dtype: torch.dtype, seed: int,
               normalize: bool = False, model_kwargs: dict[str, Any] | None = None) -> TimmImageEncoder:
    """A timm image tower; ``model_kwargs`` go to ``timm.create_model`` (e.g. ``img_size``, ``depth``)."""
    kwargs = dict(model_kwargs or {})
    model, weights = _create(spec, kwargs)
    if weights.get("random"):
        weights = {"random": True, "seed": seed}
    if kwargs:
        weights = {**weights, "model_kwargs": kwargs}
    return TimmImageEncoder(spec.text, model, _preprocess_of(model, kwargs), weights, device, dtype, normalize)
