"""Training a grounding space for a catalog: screen and photo towers aligned on rendered product pages.

No pretrained weights are reachable offline, so `train_screen_space` builds a space from scratch: tiny timm
ViTs at a seeded random init, kept fixed or trained (``train_towers``), and MLP adapters trained with pair
``screen-image`` through the one loop (`mmrec.fusion.alignment.align`). Each item's photo is paired with its
product page rendered with several layouts, themes, overlays and JPEG noise
(`mmrec.datasets.training_pages`): the whole page, or (with ``windows``) the windows a windowed
`mmrec.grounding.Grounder` searches, cut around the photo as the grid can be off, with windows that miss
the photo and windows of screens without an item as "no item" negatives. The epoch is chosen on other
renderings, never on recordings. `fitted_windows` gives the windows where these pages put the photo.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np
import torch

from mmrec.data import Catalog
from mmrec.datasets.training_pages import TrainingPages
from mmrec.fusion.augment import ScreenAugment
from mmrec.screen_windows import ScreenWindows
from mmrec.space import SpaceConfig, TowerConfig, UnifiedSpace, tiny_vit

logger = logging.getLogger(__name__)

HELD_OUT_SEED = 1_000_000  # the renderings the epoch is chosen on use seed + this: never trained on
HELD_OUT_CHUNK = 64  # held-out pages searched at a time when the epoch is chosen
PHOTO_BLOCK = 512  # catalog photos decoded at a time for fixed towers


@dataclass
class ScreenSpaceConfig:
    """A small space for grounding: tiny ViT towers (seeded random init, kept fixed or trained) for photos and
    screens (whole, or the windows searched for the photo), and MLP adapters trained to align them.

    ``screen_size``/``image_size``: tower inputs ``(height, width)`` (multiples of ``patch``; give the
    screen tower a screen's aspect ratio, or the windows' with ``windows``). Towers use mean pooling of
    their patch tokens. ``renderings``: product pages per item in training (layouts/themes from ``seed``),
    ``jpeg_share`` of them JPEG-compressed at a quality drawn from ``jpeg_quality``, drawn at ``page_size``
    (width, height) (`pages`).
    ``train_towers``: False keeps the towers at their seeded random init and trains the adapters on tower
    outputs computed once (minutes on a CPU); True trains towers and adapters end to end on the pixels
    (meant for a GPU). Training: ``epochs``, ``batch_size``, ``lr`` (towers trained from scratch want
    about 3e-4), ``mixed_precision``; the epoch is chosen, every ``eval_every`` epochs, on other renderings
    (recall@1 of screen → photo), never on recordings. ``augment``: per-sample changes of look, layout,
    resolution and overlays drawn anew for every training page or window (a `ScreenAugment`; trained towers
    only; off by default: on whole pages it slowed learning, see the README's screen-stream section).
    ``checkpoint_dir``: where the loop checkpoints each epoch, so a long run resumes. ``overlays``: the share of
    training pages that get a notification banner and a pointer, as recordings carry.

    ``windows`` (a `ScreenWindows`): the screen tower learns the windows a `Grounder` with those windows
    searches, not whole screens: ``window_crops`` windows per rendered page around the photo's true box,
    as far off as the windows' grid can be (`mmrec.screen_windows.jittered_windows`); give ``screen_size``
    the windows' aspect. ``negative_crops`` windows per page that miss the photo (text, header, a sliver of
    the photo) are "no item" rows, negatives for every photo (`SpaceConfig.unpaired_negatives`), and so are
    the searched windows of ``negative_screens`` screens without an item (home feed, grids, bag, checkout)
    from simulated sessions. The epoch is then chosen on the windowed search itself over other renderings.
    ``render_workers``: processes drawing the windows' renderings side by side (`TrainingPages.workers`; the
    same windows for any count): drawing pages is single-threaded and most of a large catalogue's training.
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
    jpeg_share: float = 1.0
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    train_towers: bool = False
    mixed_precision: str = "no"
    eval_every: int = 1
    augment: ScreenAugment | None = None
    checkpoint_dir: str | None = None
    overlays: float = 0.0
    windows: ScreenWindows | None = None
    window_crops: int = 4
    negative_crops: int = 0
    negative_screens: int = 0
    seed: int = 0
    render_workers: int = 1

    def __post_init__(self) -> None:
        if self.render_workers < 1:
            raise ValueError(f"ScreenSpaceConfig.render_workers must be at least 1, got {self.render_workers}")
        if self.windows is not None:
            h, w = self.screen_size
            if abs(h / w - self.windows.aspect) > 0.1 * self.windows.aspect:
                raise ValueError(f"ScreenSpaceConfig.screen_size {self.screen_size} (height, width) must have the "
                                 f"windows' aspect {self.windows.aspect} (height / width)")
            if self.window_crops < 1 or self.negative_crops < 0 or self.negative_screens < 0:
                raise ValueError(f"ScreenSpaceConfig needs window_crops >= 1 and negative_crops, negative_screens >= 0, "
                                 f"got {self.window_crops}, {self.negative_crops}, {self.negative_screens}")
        elif self.negative_crops or self.negative_screens:
            raise ValueError("ScreenSpaceConfig.negative_crops and negative_screens are windows: set windows too")
        for name in ("overlays", "jpeg_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"ScreenSpaceConfig.{name} is a share of pages in [0, 1], got {getattr(self, name)}")
        if self.augment is not None and not self.train_towers:
            raise ValueError("ScreenSpaceConfig.augment changes training pixels, which only trained towers see; "
                             "set train_towers=True or augment=None")
        if self.eval_every < 1 or self.epochs % self.eval_every:
            raise ValueError(f"ScreenSpaceConfig.eval_every must divide epochs ({self.epochs}) so that the last "
                             f"epoch is evaluated, got {self.eval_every}")

    @property
    def pages(self) -> TrainingPages:
        """How the training pages are drawn."""
        return TrainingPages(tuple(self.page_size), self.overlays, tuple(self.jpeg_quality), self.jpeg_share,
                             self.render_workers)


def training_photo_boxes(catalog: Catalog, config: ScreenSpaceConfig) -> np.ndarray:
    """``[renderings * items, 4]``: where the photo sits on each product page `train_screen_space` renders for
    ``config`` (pixels of ``page_size``)."""
    return config.pages.photo_boxes(catalog, config.seed, config.renderings)


def fitted_windows(catalog: Catalog, config: ScreenSpaceConfig) -> ScreenWindows:
    """`ScreenWindows.fit` to where the pages `train_screen_space` renders for ``config`` put the photo: the
    windows a tower trained with them searches (never fitted on recordings)."""
    return ScreenWindows.fit(training_photo_boxes(catalog, config), config.page_size)


def photo_aspect(catalog: Catalog) -> float:
    """The catalog photos' median height / width (from their headers): the aspect of the windows searched for
    them and of the photo check's thumbnails."""
    pages = ScreenSpaceConfig().pages
    sizes = [pages.photo_size(catalog, code) for code in range(len(catalog))]
    ratios = [h / w for w, h in (s for s in sizes if s is not None)]
    if not ratios:
        raise ValueError("no catalog photo could be read; grounding by photo needs catalog photos")
    return float(np.median(ratios))


def windowed_recipe(catalog: Catalog, *, seed: int = 0, renderings: int = 6, epochs: int = 24,
                    negative_screens: int = 200) -> tuple[ScreenSpaceConfig, Any]:
    """The CPU recipe for grounding ``catalog`` by photo: (`ScreenSpaceConfig`, `PhotoCheck`). Windows fitted to
    where the training pages put the photo at the photos' aspect (`ScreenWindows.fit`), a fixed random tower
    with adapters trained on them (4 windows around the photo and 2 off it per page, ``negative_screens``
    item-less screens as "no item", overlays on 30% of pages, JPEG on half, about 4 evaluations over
    ``epochs``), and a `PhotoCheck` over the tower's 10 nearest at the photos' aspect."""
    from mmrec.screen_windows import PhotoCheck

    aspect = photo_aspect(catalog)
    width = 32  # tower input: 4 patches across, as many down as the photos' aspect asks
    size = (8 * max(1, round(width * aspect / 8)), width)
    base = ScreenSpaceConfig(seed=seed, renderings=renderings)  # where its pages put the photo
    windows = ScreenWindows.fit(training_photo_boxes(catalog, base), base.page_size, aspect=aspect)
    every = next(d for d in range(max(1, epochs // 4), 0, -1) if epochs % d == 0)  # about 4 checks
    config = replace(base, screen_size=size, image_size=size, epochs=epochs, eval_every=every, windows=windows,
                     window_crops=4, negative_crops=2, negative_screens=negative_screens, overlays=0.3,
                     jpeg_share=0.5)
    return config, PhotoCheck(size=(max(2, round(12 * aspect)), 12))


def _vit(size: tuple[int, int], config: ScreenSpaceConfig) -> TowerConfig:
    # trainable: the screen tower takes the whole screen or window resized (`screen_tower_modality`), as it
    # is trained; without ``train_towers`` the weights stay at their seeded random init, only adapters train
    return tiny_vit(size, patch=config.patch, width=config.width, depth=config.depth, heads=config.heads,
                    global_pool="avg")


@torch.no_grad()
def _features(space: UnifiedSpace, modality: str, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """A fixed tower's outputs for uint8 ``[N, 3, H, W]`` pixels at its input size."""
    encoder = space.encoders[modality]
    was_training = space.training
    space.eval()
    try:
        return torch.cat([encoder.encode(encoder.preprocess.normalize(pixels[s:s + batch_size].float().div_(255)))
                          .float().cpu() for s in range(0, len(pixels), batch_size)])
    finally:
        space.train(was_training)


def _photos(catalog: Catalog) -> tuple[list[Any], np.ndarray]:
    """Every item's photo (a grey 8x8 stand-in where there is none or it cannot be decoded: masked out of
    training) and which items have one; unreadable photos are skipped, logged and counted."""
    photos, has_photo, broken = _load_photos(catalog, range(len(catalog)))
    _log_broken(broken)
    return photos, has_photo


def _log_broken(broken: list[str]) -> None:
    if broken:
        logger.warning("screen space: %d catalog photo(s) could not be decoded and are left out, e.g. %s",
                       len(broken), broken[0])


def _load_photos(catalog: Catalog, codes: range) -> tuple[list[Any], np.ndarray, list[str]]:
    """`_photos` of ``codes`` without the warning, and the decoding errors (a caller with blocks logs once)."""
    from PIL import Image

    from mmrec.encoders import ImageDecodeError, load_image

    photos, has_photo, broken = [], np.zeros(len(codes), bool), []
    for k, code in enumerate(codes):
        path = catalog.image_paths[code]
        try:
            photos.append(load_image(path) if path is not None else None)
        except ImageDecodeError as err:
            broken.append(str(err))
            photos.append(None)
        has_photo[k] = photos[-1] is not None
        if photos[-1] is None:
            photos[-1] = Image.new("RGB", (8, 8))
    return photos, has_photo, broken


def _photo_pixels(catalog: Catalog, preprocess, block: int = PHOTO_BLOCK) -> tuple[torch.Tensor, np.ndarray]:
    """What ``decode_resized(_photos(catalog)[0], preprocess)`` gives — every item's photo as uint8 pixels at the
    tower's input size — and which items have one, decoding ``block`` photos at a time: a large catalogue's
    photos are never all held decoded at full size."""
    from mmrec.fusion.alignment import decode_resized

    parts, masks, broken = [], [], []
    for start in range(0, len(catalog), block):
        photos, has_photo, failed = _load_photos(catalog, range(start, min(len(catalog), start + block)))
        parts.append(decode_resized(photos, preprocess)[0])
        masks.append(has_photo)
        broken += failed
    _log_broken(broken)
    return torch.cat(parts), np.concatenate(masks)


@torch.no_grad()
def _features_of_parts(space: UnifiedSpace, modality: str, parts: list[torch.Tensor],
                       batch_size: int = 256) -> torch.Tensor:
    """`_features` of the rows of ``parts`` one after another, without concatenating the pixels (only a batch
    that straddles two parts is copied): the same batches, so the same outputs, as `_features` of their
    concatenation."""
    total = sum(len(p) for p in parts)
    out, bounds = [], np.cumsum([0] + [len(p) for p in parts])
    for start in range(0, total, batch_size):
        stop = min(total, start + batch_size)
        pieces = [p[max(start, lo) - lo:min(stop, hi) - lo] for p, lo, hi in zip(parts, bounds[:-1], bounds[1:])
                  if lo < stop and hi > start]
        out.append(_features(space, modality, pieces[0] if len(pieces) == 1 else torch.cat(pieces),
                             batch_size=batch_size))
    return torch.cat(out) if out else torch.zeros(0, 0)


@torch.no_grad()
def _held_out_window_features(space: UnifiedSpace, pages: Any, windows: ScreenWindows,
                              chunk: int = HELD_OUT_CHUNK) -> list[torch.Tensor]:
    """The fixed screen tower's outputs for the searched windows of held-out pages (an iterator of (page, box)),
    ``chunk`` pages at a time (`mmrec.grounding.window_features`): kept instead of the pages, and projected again
    at each evaluation as the adapter trains."""
    from mmrec.grounding import screen_tensor, window_features
    from mmrec.screen_windows import AreaTable

    was_training = space.training
    space.eval()
    try:
        out, batch = [], []
        for page, _ in pages:
            batch.append(screen_tensor(page))
            if len(batch) == chunk:
                out.append(window_features(space, AreaTable(torch.stack(batch)), windows))
                batch = []
        if batch:
            out.append(window_features(space, AreaTable(torch.stack(batch)), windows))
        return out
    finally:
        space.train(was_training)


def train_screen_space(catalog: Catalog, config: ScreenSpaceConfig | None = None) -> UnifiedSpace:
    """A `UnifiedSpace` with ``image`` and ``screen`` towers whose adapters (and towers, with
    ``train_towers``) are aligned on the catalog's product pages (pair ``screen-image``) through
    `mmrec.fusion.alignment.align`."""
    from mmrec.fusion.alignment import CatalogPairs, align, decode_resized, retrieval_metrics
    from mmrec.grounding import embed_windows
    from mmrec.train import TrainConfig

    config = config or ScreenSpaceConfig()
    torch.manual_seed(config.seed)
    space = UnifiedSpace(SpaceConfig(
        towers={"image": _vit(config.image_size, config), "screen": _vit(config.screen_size, config)},
        dim=config.dim, adapter="mlp", adapter_options={"hidden": config.hidden}, pairs=("screen-image",),
        unpaired_negatives=config.negative_crops + config.negative_screens > 0))
    space.towers.requires_grad_(config.train_towers)
    encoders = space.encoders
    if config.train_towers:  # the photos are embedded again as the towers move
        photos, has_photo = _photos(catalog)
        photo_pixels = None
    else:  # only their pixels at the tower's input, decoded a block at a time
        photos = None
        photo_pixels, has_photo = _photo_pixels(catalog, encoders["image"].preprocess)
    if not has_photo.any():
        raise ValueError("no catalog item has a photo; a screen space needs item photos")
    n, pages = config.renderings, config.pages
    if config.windows is not None:  # screen rows: windows on the photo, then "no item" windows
        parts = [*pages.windows(catalog, config.seed, n, config.windows, config.window_crops, config.negative_crops,
                                tuple(config.screen_size)),
                 pages.screens_without_item(catalog, config.seed, config.windows, config.negative_screens,
                                            tuple(config.screen_size))]
        n *= config.window_crops
    else:
        parts = [decode_resized(pages.pages(catalog, config.seed, n), encoders["screen"].preprocess)[0]]
    n_negatives = sum(len(p) for p in parts[1:])
    held_out_rendering = pages.rendering(catalog, config.seed + HELD_OUT_SEED, 0)  # what pages(..., 1) holds
    held_out_pages = held_out_windows = None
    if config.windows is not None and not config.train_towers:  # the fixed tower's outputs, not the pages
        held_out_windows = _held_out_window_features(space, held_out_rendering, config.windows)
    else:
        held_out_pages = [page for page, _ in held_out_rendering]
    masks = {"image": np.r_[np.tile(has_photo, n), np.zeros(n_negatives, bool)],
             "screen": np.ones(n * len(catalog) + n_negatives, bool)}
    if photo_pixels is None:
        photo_pixels, _ = decode_resized(photos, encoders["image"].preprocess)
    image_rows = np.r_[np.tile(np.arange(len(catalog)), n), np.zeros(n_negatives, int)]
    normalize = {m: encoders[m].preprocess.normalize for m in ("image", "screen")}
    unpaired = space.config.unpaired_negatives
    if config.train_towers:
        screen_pixels = torch.cat(parts)
        del parts
        data = CatalogPairs({"image": (photo_pixels[image_rows], masks["image"]),
                             "screen": (screen_pixels, masks["screen"])}, {}, normalize, pairs=("screen-image",),
                            augment={"screen": config.augment} if config.augment is not None else None,
                            unpaired=unpaired)
        del screen_pixels
    else:  # tower outputs computed once, a batch at a time from the parts (never one copy of every pixel)
        photo_features = _features(space, "image", photo_pixels)
        screen_features = _features_of_parts(space, "screen", parts)
        del parts
        data = CatalogPairs({}, {"image": (photo_features[image_rows], masks["image"]),
                                 "screen": (screen_features, masks["screen"])}, {},
                            pairs=("screen-image",), unpaired=unpaired)
        if config.windows is None:
            held_out = _features(space, "screen", decode_resized(held_out_pages, encoders["screen"].preprocess)[0])
    windows_per_page = config.windows.count(*config.page_size) if config.windows is not None else 0

    def held_out_search(s: UnifiedSpace) -> Iterator[torch.Tensor]:
        """``[pages, K, D]`` window vectors of the held-out pages, ``HELD_OUT_CHUNK`` pages at a time."""
        if held_out_windows is None:  # the towers move: the pages through them again
            for k in range(0, len(catalog), HELD_OUT_CHUNK):
                yield embed_windows(s, held_out_pages[k:k + HELD_OUT_CHUNK], config.windows)
            return
        was_training = s.training
        if was_training:  # as `window_vectors` projects them
            s.eval()
        try:
            for features in held_out_windows:
                yield s.project("screen", features).view(-1, windows_per_page, s.config.dim)
        finally:
            if was_training:
                s.train()

    def s2i(s: UnifiedSpace) -> dict[str, float]:
        with torch.no_grad():
            if config.train_towers:  # the towers moved: embed the photos again
                targets = s.embed_images(photos)
            else:
                targets = s.project("image", photo_features.to(s.device))
            if config.windows is not None:  # the search a windowed Grounder runs, on other renderings
                sims = torch.cat([(vectors @ targets[has_photo].t()).amax(dim=1) for vectors in held_out_search(s)])
                return {"s2i_recall@1": float((sims[has_photo].argmax(1) == torch.arange(int(has_photo.sum()),
                                                                                           device=sims.device))
                                              .float().mean())}
            queries = s.embed_screens(held_out_pages, batch_size=32) if config.train_towers else \
                s.project("screen", held_out.to(s.device))
            found = retrieval_metrics(queries[has_photo], targets[has_photo])
        return {f"s2i_{k}": v for k, v in found.items()}

    result = align(space, data, TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                                            seed=config.seed, progress=False, patience=config.epochs,
                                            mixed_precision=config.mixed_precision, eval_every=config.eval_every,
                                            early_stop_metric="s2i_recall@1", checkpoint_dir=config.checkpoint_dir),
                   evaluate_fn=s2i)
    logger.info("screen space: best epoch %s %s", result.best_epoch, result.best_metrics)
    return space.eval()
