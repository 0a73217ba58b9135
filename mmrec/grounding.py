"""Grounding screens in the catalog: which item, if any, a screenshot shows, in the unified space.

A `Grounder` embeds screenshots with the space's ``screen`` tower + adapter (`UnifiedSpace.embed_screens`)
and compares them with the catalog's item vectors (`UnifiedSpace.embed_images` of the item photos): the
nearest item is "on screen" when its cosine similarity reaches ``threshold``, else the screen shows "no
item" (grids, bag, checkout). `calibrate_threshold` picks that threshold on labelled frames
(`calibrate_on_frames`: on labelled streams).

`train_screen_space` builds such a space for a catalog from scratch (no pretrained weights are reachable
offline): tiny timm ViTs at a seeded random init, kept fixed, and MLP adapters trained with pair
``screen-image`` — each item's photo against its product page rendered with several layouts, themes and
JPEG noise (`mmrec.fusion.alignment.product_pages`) — through the one loop (`mmrec.fusion.alignment.align`).
Fixed random towers are what a shared CPU allows; they ground poorly (see benchmarks/stream_targets.py):
a space with trained or pretrained towers plugs in unchanged (`UnifiedSpace.from_pretrained`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from mmrec.data import Catalog
from mmrec.fusion.augment import ScreenAugment
from mmrec.space import SpaceConfig, TowerConfig, UnifiedSpace

logger = logging.getLogger(__name__)

NO_ITEM = -1


class Grounder:
    """Screens → (item code or `NO_ITEM`, cosine similarity to the nearest item) in a `UnifiedSpace`.

    ``item_vectors`` ``[I, D]`` (L2-normalised) with ``valid`` marking items that have one; items without
    a vector are never grounded. ``threshold``: the least similarity for "item on screen".
    """

    def __init__(self, space: UnifiedSpace, item_vectors: torch.Tensor, valid: np.ndarray | None = None,
                 threshold: float = 0.5, batch_size: int = 32) -> None:
        if item_vectors.ndim != 2 or item_vectors.shape[1] != space.config.dim:
            raise ValueError(f"item_vectors must be [items, {space.config.dim}], got {tuple(item_vectors.shape)}")
        if "screen" not in space.encoders:
            raise ValueError(f"the space has no 'screen' tower (it has {sorted(space.encoders)}); "
                             f"grounding needs one")
        self.space, self.threshold, self.batch_size = space.eval(), float(threshold), batch_size
        vectors = item_vectors.detach().float().to(space.device)
        if valid is not None:
            vectors = vectors.clone()
            vectors[~torch.as_tensor(np.asarray(valid, bool), device=vectors.device)] = 0.0
        self.item_vectors = vectors

    @classmethod
    def for_catalog(cls, space: UnifiedSpace, catalog: Catalog, threshold: float = 0.5,
                    batch_size: int = 32) -> "Grounder":
        """Item vectors from the catalog photos (`embed_images` with the space's image tower)."""
        if "image" not in space.encoders:
            raise ValueError(f"the space has no 'image' tower (it has {sorted(space.encoders)}) to embed photos")
        valid = np.array([p is not None for p in catalog.image_paths], bool)
        paths = [p for p in catalog.image_paths if p is not None]
        if not paths:
            raise ValueError("no catalog item has a photo; nothing to ground screens against")
        vectors = torch.zeros(len(catalog), space.config.dim)
        vectors[torch.as_tensor(valid)] = space.embed_images(paths).float().cpu()
        return cls(space, vectors, valid, threshold, batch_size)

    @torch.no_grad()
    def similarities(self, screens: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Nearest item code and its similarity for each screenshot (PIL images, HxWx3 uint8 arrays or uint8
        ``[3,H,W]`` tensors)."""
        if not len(screens):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        from PIL import Image

        screens = [Image.fromarray(s) if isinstance(s, np.ndarray) else s for s in screens]
        vectors = embed_screens(self.space, screens, self.batch_size)
        sims = vectors @ self.item_vectors.t()
        best, codes = sims.max(dim=1)
        return codes.cpu().numpy().astype(np.int64), best.cpu().numpy().astype(np.float32)

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


def calibrate_on_frames(grounder: Grounder, labelled: Iterable[tuple[Iterable[Any], np.ndarray]],
                        every: int = 1) -> tuple[float, dict[str, float]]:
    """`calibrate_threshold` on labelled streams: ``(frames, true item per frame index)`` pairs (frames with
    ``index`` and ``image``, as the `mmrec.datasets.frames` sources give them), every ``every``-th frame
    grounded. Returns the threshold and the fit; the grounder is not changed."""
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    codes, sims, truth = [], [], []
    for frames, labels in labelled:
        kept = [(f.index, f.image.copy()) for f in frames if f.index % every == 0]  # a copy frees the batch
        c, s = grounder.similarities([image for _, image in kept])
        codes.append(c), sims.append(s), truth.append(np.asarray(labels)[[index for index, _ in kept]])
    if not codes:
        raise ValueError("calibration needs at least one labelled stream")
    return calibrate_threshold(np.concatenate(codes), np.concatenate(sims), np.concatenate(truth))


# ------------------------------------------------------------------------------------------- training

@dataclass
class ScreenSpaceConfig:
    """A small space for grounding: tiny ViT towers (random init, kept fixed) for photos and whole screens,
    and MLP adapters trained to align them.

    ``screen_size``/``image_size``: tower inputs ``(height, width)`` (multiples of ``patch``; give the
    screen tower a screen's aspect ratio: it sees the whole screen resized). Towers use mean pooling of
    their patch tokens. ``renderings``: product pages per item in training (layouts/themes from ``seed``),
    each JPEG-compressed at a quality drawn from ``jpeg_quality``, drawn at ``page_size`` (width, height).
    ``train_towers``: False keeps the towers at their seeded random init and trains the adapters on tower
    outputs computed once (minutes on a CPU); True trains towers and adapters end to end on the pixels
    (meant for a GPU). Training: ``epochs``, ``batch_size``, ``lr`` (towers trained from scratch want
    about 3e-4), ``mixed_precision``; the epoch is chosen, every ``eval_every`` epochs, on other renderings
    (recall@1 of screen → photo), never on recordings. ``augment``: per-sample changes of look, layout,
    resolution and overlays drawn anew for every training page (a `ScreenAugment`; trained towers only;
    off by default: within a fixed budget it slowed learning, see the README's screen-stream section).
    ``checkpoint_dir``: where the loop checkpoints each epoch, so a long run resumes.
    """

    dim: int = 64
    screen_size: tuple[int, int] = (96, 56)
    image_size: tuple[int, int] = (64, 48)
    patch: int = 8
    width: int = 96
    depth: int = 2
    heads: int = 3
    hidden: int = 256
    renderings: int = 6
    page_size: tuple[int, int] = (180, 320)
    jpeg_quality: tuple[int, int] = (30, 95)
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    train_towers: bool = False
    mixed_precision: str = "no"
    eval_every: int = 1
    augment: ScreenAugment | None = None
    checkpoint_dir: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.augment is not None and not self.train_towers:
            raise ValueError("ScreenSpaceConfig.augment changes training pixels, which only trained towers see; "
                             "set train_towers=True or augment=None")
        if self.eval_every < 1 or self.epochs % self.eval_every:
            raise ValueError(f"ScreenSpaceConfig.eval_every must divide epochs ({self.epochs}) so that the last "
                             f"epoch is evaluated, got {self.eval_every}")


def _vit(size: tuple[int, int], config: ScreenSpaceConfig) -> TowerConfig:
    kwargs = {"img_size": list(size), "patch_size": config.patch, "embed_dim": config.width,
              "depth": config.depth, "num_heads": config.heads, "global_pool": "avg"}
    # "trainable" makes the screen tower see the whole screen resized (a locked one would tile it); without
    # ``train_towers`` the tower weights stay at their seeded random init and only the adapters train
    return TowerConfig("timm:vit_tiny_patch16_224@random", {"model_kwargs": kwargs}, True)


def _page_renderings(catalog: Catalog, config: ScreenSpaceConfig, seed: int, n: int) -> list[Any]:
    """``n`` renderings per item (seeded layouts and JPEG noise), rendering-major order."""
    from mmrec.datasets.screens import jpeg_noise
    from mmrec.fusion.alignment import product_pages

    rng = np.random.default_rng([seed, 77])
    out = []
    for r in range(n):
        render = product_pages(catalog, size=tuple(config.page_size), seed=seed + 100_003 * r)
        for code in range(len(catalog)):
            quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
            out.append(jpeg_noise(render(code), quality))
    return out


@torch.no_grad()
def _features(space: UnifiedSpace, modality: str, images: Sequence[Any], batch_size: int = 64) -> torch.Tensor:
    encoder = space.encoders[modality]
    was_training = space.training
    space.eval()
    try:
        return torch.cat([encoder.encode_images(list(images[s:s + batch_size])).float()
                          for s in range(0, len(images), batch_size)])
    finally:
        space.train(was_training)


def train_screen_space(catalog: Catalog, config: ScreenSpaceConfig | None = None) -> UnifiedSpace:
    """A `UnifiedSpace` with ``image`` and ``screen`` towers whose adapters (and towers, with
    ``train_towers``) are aligned on the catalog's product pages (pair ``screen-image``) through
    `mmrec.fusion.alignment.align`."""
    from PIL import Image

    from mmrec.fusion.alignment import CatalogPairs, align, decode_resized, retrieval_metrics
    from mmrec.train import TrainConfig

    config = config or ScreenSpaceConfig()
    has_photo = np.array([p is not None for p in catalog.image_paths], bool)
    if not has_photo.any():
        raise ValueError("no catalog item has a photo; a screen space needs item photos")
    torch.manual_seed(config.seed)
    space = UnifiedSpace(SpaceConfig(
        towers={"image": _vit(config.image_size, config), "screen": _vit(config.screen_size, config)},
        dim=config.dim, adapter="mlp", adapter_options={"hidden": config.hidden}, pairs=("screen-image",)))
    space.towers.requires_grad_(config.train_towers)
    photos = []
    for path in catalog.image_paths:
        if path is None:
            photos.append(Image.new("RGB", (8, 8)))  # masked out of training by has_photo
            continue
        with Image.open(path) as im:
            photos.append(im.convert("RGB"))
    n = config.renderings
    pages = _page_renderings(catalog, config, config.seed, n)
    held_out_pages = _page_renderings(catalog, config, config.seed + 1_000_000, 1)
    masks = {"image": np.tile(has_photo, n), "screen": np.ones(len(pages), bool)}
    if config.train_towers:
        encoders = space.encoders
        photo_pixels, _ = decode_resized(photos, encoders["image"].preprocess)
        page_pixels, _ = decode_resized(pages, encoders["screen"].preprocess)
        data = CatalogPairs({"image": (photo_pixels.repeat(n, 1, 1, 1), masks["image"]),
                             "screen": (page_pixels, masks["screen"])}, {},
                            {m: encoders[m].preprocess.normalize for m in ("image", "screen")}, pairs=("screen-image",),
                            augment={"screen": config.augment} if config.augment is not None else None)
        del pages, page_pixels
    else:
        photo_features, page_features = _features(space, "image", photos), _features(space, "screen", pages)
        data = CatalogPairs({}, {"image": (photo_features.repeat(n, 1), masks["image"]),
                                 "screen": (page_features, masks["screen"])}, {}, pairs=("screen-image",))
        del pages
        held_out = _features(space, "screen", held_out_pages)

    def s2i(s: UnifiedSpace) -> dict[str, float]:
        with torch.no_grad():
            if config.train_towers:  # the towers moved: embed the held-out pages and the photos again
                queries, targets = embed_screens(s, held_out_pages), s.embed_images(photos)
            else:
                queries = s.project("screen", held_out.to(s.device))
                targets = s.project("image", photo_features.to(s.device))
            found = retrieval_metrics(queries[has_photo], targets[has_photo])
        return {f"s2i_{k}": v for k, v in found.items()}

    result = align(space, data, TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                                            seed=config.seed, progress=False, patience=config.epochs,
                                            mixed_precision=config.mixed_precision, eval_every=config.eval_every,
                                            early_stop_metric="s2i_recall@1", checkpoint_dir=config.checkpoint_dir),
                   evaluate_fn=s2i)
    logger.info("screen space: best epoch %s %s", result.best_epoch, result.best_metrics)
    return space.eval()
