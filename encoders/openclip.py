"""open_clip image and text towers (any name in ``open_clip.list_models()``, a config file, or an export folder).

Weights: ``@random``, ``@TAG`` (open_clip's pretrained tags, fetched from the hub or its cache),
``@/path/checkpoint`` (safetensors, or a torch file loaded with ``weights_only=True``), or a folder with
``open_clip_config.json`` and weights. Preprocessing comes from the weights: the tag's config, the
folder's ``preprocess_cfg``, or the ``open_clip_config.json`` beside a checkpoint file, falling back to
open_clip's defaults for the architecture. Both towers are contrastive, so outputs are L2-normalised.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import open_clip
import torch
from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

from mmrec.encoders import hub
from mmrec.encoders.base import (EncoderSourceError, ImageEncoder, Preprocess, TextEncoder, TextPreprocess,
                                 weights_identity)
from mmrec.encoders.registry import EncoderSpec, classify_weights, register


PREPROCESS_KEYS = ("size", "mean", "std", "interpolation", "resize_mode", "fill_color")
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def _knows(arch: str) -> bool:
    return arch in open_clip.list_models()


def _register_config_file(path: str) -> str:
    """Register a model-config JSON with open_clip (its file stem becomes the name) and return the name."""
    name = Path(path).stem
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg = cfg.get("model_cfg", cfg)
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise ValueError(f"open_clip model config {path} lacks {missing}")
    existing = open_clip.get_model_config(name)
    if existing is not None and existing != cfg:
        raise EncoderSourceError(
            f"open_clip config file {path} is named {name!r}, which is also a different built-in open_clip "
            f"model; rename the file so 'openclip:{name}' has one reading")
    if existing is None:
        open_clip.add_model_config(path)
    return name


def _sibling_preprocess(checkpoint: str) -> dict[str, Any]:
    """``preprocess_cfg`` of an ``open_clip_config.json`` next to a checkpoint file (hub layout), if any."""
    cfg_file = Path(checkpoint).parent / "open_clip_config.json"
    if not cfg_file.is_file():
        return {}
    with open(cfg_file, encoding="utf-8") as f:
        return json.load(f).get("preprocess_cfg", {})


def _hub_names(cfg: dict[str, Any] | None) -> list[str]:
    """Hub repos an architecture itself pulls in (HF text towers and tokenizers) even with local weights."""
    text = (cfg or {}).get("text_cfg", {})
    return [text[k] for k in ("hf_model_name", "hf_tokenizer_name") if text.get(k) and not os.path.isdir(text[k])]


def _require_hub_names(cfg: dict[str, Any] | None, spec: EncoderSpec) -> None:
    for repo in _hub_names(cfg):
        if hub.cached_hub_file(repo, ["config.json", "tokenizer_config.json"]) is None:
            reason = hub.unreachable_reason()
            if reason:
                raise EncoderSourceError(
                    f"{spec.text}: the architecture needs the transformers config/tokenizer {repo!r} from the hub, "
                    f"but {reason}. Put it in the Hugging Face cache, or use an export folder: openclip:/path/to/folder")


def _build_model(spec: EncoderSpec, preprocess: dict[str, Any] | None,
                 model_kwargs: dict[str, Any]) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """The open_clip model, the name its tokenizer is found by, and what its weights are."""
    arch = os.path.expanduser(spec.arch)
    if os.path.isdir(arch) and spec.weights is None:
        folder = os.path.abspath(arch)
        if not any(p.suffix in CHECKPOINT_SUFFIXES for p in Path(folder).iterdir()):
            raise EncoderSourceError(f"{spec.text}: folder {folder} has no checkpoint (*.safetensors, *.bin, *.pth)")
        if not (Path(folder) / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{spec.text}: folder {folder} has no open_clip_config.json")
        name = f"local-dir:{folder}"
        _require_hub_names(open_clip.get_model_config(name), spec)
        model = open_clip.create_model(name, force_preprocess_cfg=preprocess, **model_kwargs)
        return model, name, weights_identity(folder)
    if arch.endswith(".json") and os.path.isfile(arch):
        name = _register_config_file(arch)
    elif _knows(spec.arch):
        name = spec.arch
    else:
        raise EncoderSourceError(f"{spec.text}: {spec.arch!r} is not an open_clip model (open_clip.list_models()), "
                                 f"a model-config .json file, or a folder with open_clip_config.json")
    _require_hub_names(open_clip.get_model_config(name), spec)
    kind, value = classify_weights(spec, list_pretrained_tags_by_model(name))
    if kind == "random":
        model = open_clip.create_model(name, pretrained=None, pretrained_image=False, pretrained_text=False,
                                       force_preprocess_cfg=preprocess, **model_kwargs)
        return model, name, {"random": True}
    if kind == "path":
        checkpoint = value
        if os.path.isdir(checkpoint):
            found = sorted(p for p in Path(checkpoint).iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
            if len(found) != 1:
                raise EncoderSourceError(f"{spec.text}: expected one checkpoint in {checkpoint}, found "
                                         f"{[p.name for p in found]}; name the file")
            checkpoint = str(found[0])
        overlay = {**_sibling_preprocess(checkpoint), **(preprocess or {})}
        model = open_clip.create_model(name, pretrained=checkpoint, force_preprocess_cfg=overlay, **model_kwargs)
        return model, name, weights_identity(checkpoint)
    cfg = get_pretrained_cfg(name, value)
    what = f"open_clip {name} tag {value!r}"
    hint = f"openclip:{name}@/path/to/open_clip_model.safetensors (or a folder: openclip:/path/to/folder)"
    if cfg.get("hf_hub"):
        org, repo_name, filename = (cfg["hf_hub"].split("/", 2) + [""])[:3]
        repo, filename = f"{org}/{repo_name}", filename or "open_clip_pytorch_model.bin"
        safe = filename.rsplit(".", 1)[0] + ".safetensors"
        checkpoint = hub.fetch_hub_file(repo, [safe, "open_clip_model.safetensors", filename], what=what, local_hint=hint)
    else:
        hub.require_url(cfg["url"], what=what, local_hint=hint)
        checkpoint = open_clip.download_pretrained(cfg)
    overlay = {**{k: cfg[k] for k in PREPROCESS_KEYS if k in cfg}, **(preprocess or {})}
    model = open_clip.create_model(name, pretrained=checkpoint, force_quick_gelu=bool(cfg.get("quick_gelu")),
                                   force_preprocess_cfg=overlay, **model_kwargs)
    return model, name, {"tag": value, **weights_identity(checkpoint)}


def _preprocess_of(model: torch.nn.Module) -> Preprocess:
    cfg = dict(model.visual.preprocess_cfg)
    return Preprocess(size=cfg["size"], mean=cfg["mean"], std=cfg["std"], interpolation=cfg["interpolation"],
                      resize_mode=cfg["resize_mode"], fill_color=int(cfg.get("fill_color", 0)))


class OpenClipImageEncoder(ImageEncoder):
    """The image tower of an open_clip model; output is the L2-normalised projected embedding."""

    def __init__(self, spec: str, visual: torch.nn.Module, preprocess: Preprocess, weights: dict[str, Any],
                 device: torch.device, dtype: torch.dtype) -> None:
        self.spec, self.preprocess, self.weights = spec, preprocess, weights
        self.device, self.dtype, self.normalized = device, dtype, True
        self.module = visual.to(device=device, dtype=dtype).eval().requires_grad_(False)
        with torch.inference_mode():
            probe = torch.zeros(1, 3, *preprocess.size, device=device, dtype=dtype)
            self.dim = int(self.module(probe).shape[-1])

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.module(pixels)


class OpenClipTextEncoder(TextEncoder):
    """The text tower of an open_clip model with its own tokenizer; output is L2-normalised."""

    def __init__(self, spec: str, model: torch.nn.Module, tokenizer: Any, weights: dict[str, Any],
                 device: torch.device, dtype: torch.dtype) -> None:
        self.spec, self.tokenizer, self.weights = spec, tokenizer, weights
        self.device, self.dtype, self.normalized = device, dtype, True
        model.visual = None  # keep only the text tower in memory
        self.module = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.text_preprocess = TextPreprocess(max_length=int(getattr(tokenizer, "context_length", 77)),
                                              pooling="tower", normalize=True)
        self.dim = int(self.encode(["probe"]).shape[-1])

    @torch.inference_mode()
    def encode(self, batch: Sequence[str]) -> torch.Tensor:
        """Strings -> ``float32 [N, dim]``, L2-normalised."""
        texts = list(batch)
        if not texts:
            return torch.zeros(0, getattr(self, "dim", 0), device=self.device)
        tokens = self.tokenizer(texts).to(self.device)
        return self.module.encode_text(tokens, normalize=True).float()


@register("openclip", modalities=("image", "text"), knows=_knows)
def build_openclip(spec: EncoderSpec, *, modality: str, device: torch.device, dtype: torch.dtype, seed: int,
                   preprocess: dict[str, Any] | None = None, model_kwargs: dict[str, Any] | None = None) -> Any:
    """An open_clip image or text tower. ``preprocess`` overrides preprocessing keys (e.g. ``{"size": 64}``);
    ``model_kwargs`` go to ``open_clip.create_model``."""
    if preprocess:
        unknown = sorted(set(preprocess) - set(PREPROCESS_KEYS))
        if unknown:
            raise ValueError(f"unknown open_clip preprocess keys {unknown}; known: {list(PREPROCESS_KEYS)}")
    kwargs = dict(model_kwargs or {})
    model, name, weights = _build_model(spec, preprocess, kwargs)
    if weights.get("random"):
        weights = {"random": True, "seed": seed}
    if kwargs or preprocess:
        weights = {**weights, "model_kwargs": kwargs, "preprocess_override": preprocess or {}}
    if modality == "image":
        return OpenClipImageEncoder(spec.text, model.visual, _preprocess_of(model), weights, device, dtype)
    return OpenClipTextEncoder(spec.text, model, open_clip.get_tokenizer(name), weights, device, dtype)
