"""Training a grounding space for a catalog: screen and photo towers aligned on rendered product pages.

No pretrained weights are reachable offline, so `train_screen_space` builds a space from scratch: tiny timm
ViTs at a seeded random init, kept fixed or trained (``train_towers``), and MLP adapters trained with pair
``screen-image`` through the one loop (`mmrec.fusion.alignment.align`). Each item's photo is paired with its
product page rendered with several layouts, themes, overlays and JPEG noise
(`mmrec.fusion.alignment.product_pages`): the whole page, or (with ``windows``) the windows a windowed
`mmrec.grounding.Grounder` searches, cut around the photo as the grid can be off, with windows that miss
the photo and windows of screens without an item as "no item" negatives. The epoch is chosen on other
renderings, never on recordings.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from mmrec.data import Catalog
from mmrec.fusion.augment import ScreenAugment
from mmrec.grounding import embed_screens, embed_windows
from mmrec.screen_windows import ScreenWindows, crop_windows, iou, jittered_windows
from mmrec.space import SpaceConfig, TowerConfig, UnifiedSpace

logger = logging.getLogger(__name__)


@dataclass
class ScreenSpaceConfig:
    """A small space for grounding: tiny ViT towers (seeded random init, kept fixed or trained) for photos and
    screens (whole, or the windows searched for the photo), and MLP adapters trained to align them.

    ``screen_size``/``image_size``: tower inputs ``(height, width)`` (multiples of ``patch``; give the
    screen tower a screen's aspect ratio, or the windows' with ``windows``). Towers use mean pooling of
    their patch tokens. ``renderings``: product pages per item in training (layouts/themes from ``seed``),
    ``jpeg_share`` of them JPEG-compressed at a quality drawn from ``jpeg_quality``, drawn at ``page_size``
    (width, height).
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

    def __post_init__(self) -> None:
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


def _vit(size: tuple[int, int], config: ScreenSpaceConfig) -> TowerConfig:
    kwargs = {"img_size": list(size), "patch_size": config.patch, "embed_dim": config.width,
              "depth": config.depth, "num_heads": config.heads, "global_pool": "avg"}
    # "trainable" makes the screen tower see the whole screen resized (a locked one would tile it); without
    # ``train_towers`` the tower weights stay at their seeded random init and only the adapters train
    return TowerConfig("timm:vit_tiny_patch16_224@random", {"model_kwargs": kwargs}, True)


def _page_renderings(catalog: Catalog, config: ScreenSpaceConfig, seed: int, n: int) -> list[Any]:
    """``n`` renderings per item (seeded layouts, overlays and JPEG noise), rendering-major order."""
    return [page for r in range(n) for page, _ in _rendering(catalog, config, seed, r)]


def _rendering(catalog: Catalog, config: ScreenSpaceConfig, seed: int, r: int) -> Iterator[tuple[Any, Any]]:
    """Rendering ``r`` of every item's product page: (page, the photo's box on it), in item order."""
    from mmrec.datasets.screens import add_cursor, add_notification, jpeg_noise
    from mmrec.fusion.alignment import product_pages

    rng = np.random.default_rng([seed, 77, r])
    render = product_pages(catalog, size=tuple(config.page_size), seed=_render_seed(seed, r))
    for code in range(len(catalog)):
        page = render(code)
        if rng.random() < config.overlays:
            w, h = page.size
            page = add_notification(page, catalog.titles[int(rng.integers(len(catalog)))], rng,
                                    progress=float(rng.uniform(0.3, 1.0)))
            page = add_cursor(page, (rng.uniform(0, w), rng.uniform(0, h)), style=str(rng.choice(["touch", "arrow"])))
        box = _photo_box(catalog, config, seed, r, code)
        quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        yield (jpeg_noise(page, quality) if rng.random() < config.jpeg_share else page), box


def _photo_size(catalog: Catalog, code: int, config: ScreenSpaceConfig) -> tuple[int, int] | None:
    """The size `product_pages` decodes an item's photo at (JPEGs in draft mode), without decoding it."""
    from PIL import Image

    if catalog.image_paths[code] is None:
        return None
    with Image.open(catalog.image_paths[code]) as im:
        if im.format == "JPEG":
            im.draft("RGB", tuple(config.page_size))
        return im.size


def training_photo_boxes(catalog: Catalog, config: ScreenSpaceConfig) -> np.ndarray:
    """``[renderings * items, 4]``: where the photo sits on each product page `train_screen_space` renders for
    ``config`` (pixels of ``page_size``), e.g. for `ScreenWindows.fit`: windows where the app puts photos."""
    return np.array([_photo_box(catalog, config, config.seed, r, code)
                     for r in range(config.renderings) for code in range(len(catalog))], np.float64)


def _render_seed(seed: int, r: int) -> int:
    """The `product_pages` seed of rendering ``r`` (item ``code``'s page then uses ``seed + code``)."""
    return seed + 100_003 * r


def _photo_box(catalog: Catalog, config: ScreenSpaceConfig, seed: int, r: int, code: int) -> Any:
    """Where rendering ``r`` of item ``code``'s product page puts the photo."""
    from mmrec.datasets.screens import product_page_layout

    return product_page_layout(tuple(config.page_size), _render_seed(seed, r) + code,
                               _photo_size(catalog, code, config)).photo


def _window_renderings(catalog: Catalog, config: ScreenSpaceConfig, seed: int,
                       n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 windows at the screen tower's input size from ``n`` renderings per item: ``window_crops`` around
    the photo (``[n * window_crops * items, 3, h, w]``, rendering-major, then window, then item) and
    ``negative_crops`` windows of the searched sizes anywhere on the page that hardly overlap the photo
    (IoU < 0.3; same order)."""
    from mmrec.encoders.base import pil_to_tensor

    per, neg = config.window_crops, config.negative_crops
    positives = torch.zeros(n, per, len(catalog), 3, *config.screen_size, dtype=torch.uint8)
    negatives = torch.zeros(n, neg, len(catalog), 3, *config.screen_size, dtype=torch.uint8)
    for r in range(n):
        rng = np.random.default_rng([seed, 78, r])
        for code, (page, box) in enumerate(_rendering(catalog, config, seed, r)):
            boxes = np.concatenate([jittered_windows(box, config.windows, per, rng),
                                    _windows_off(box, config.windows, page.size, neg, rng)])
            crops = crop_windows(pil_to_tensor(page)[None], boxes, config.screen_size).round_().clamp_(0, 255)
            positives[r, :, code] = crops[:per].to(torch.uint8)
            negatives[r, :, code] = crops[per:].to(torch.uint8)
    return positives.view(-1, 3, *config.screen_size), negatives.view(-1, 3, *config.screen_size)


def _windows_off(photo_box: Any, windows: ScreenWindows, size: tuple[int, int], n: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``[n, 4]`` windows of the searched sizes at random places on a ``size`` page, each with IoU < 0.3 with
    the photo (the best of 20 draws where none is that far off)."""
    width, height = size
    out = np.zeros((n, 4))
    for k in range(n):
        w = float(rng.choice(windows.widths)) * width
        h = min(w * windows.aspect, height)
        w = h / windows.aspect
        x, y = rng.uniform(0, width - w, 20), rng.uniform(0, height - h, 20)
        candidates = np.stack([x, y, x + w, y + h], axis=1)
        out[k] = candidates[int(np.argmin(iou(candidates, photo_box)))]
    return out


def _screen_negatives(catalog: Catalog, config: ScreenSpaceConfig, seed: int) -> torch.Tensor:
    """uint8 search windows (``[negative_screens * K, 3, h, w]``) of ``negative_screens`` frames of screens
    without an item — home feed, grids, bag, checkout — from sessions of random items simulated with
    training seeds (`mmrec.datasets.app_sim`, no codec, overlays and JPEG as for the product pages)."""
    from dataclasses import replace

    from mmrec.datasets.app_sim import SimConfig, render_frames, simulate_session
    from mmrec.datasets.screens import jpeg_noise
    from mmrec.encoders.base import pil_to_tensor

    rng = np.random.default_rng([seed, 79])
    base = SimConfig(width=config.page_size[0], height=config.page_size[1], fps=10, cursor="none",
                     notification_prob=0.0, jpeg_quality=None)
    boxes = config.windows.boxes(*config.page_size)
    crops, session_seed = [], seed + 7_000_000
    while len(crops) < config.negative_screens:
        sim = replace(base, seed=session_seed)
        session_seed += 1
        session = simulate_session(catalog, rng.choice(len(catalog), size=min(3, len(catalog)), replace=False), sim)
        wanted = [i for st in session.states if st.kind != "product" for i in session.frame_range(st)
                  if i / sim.fps - st.start >= sim.transition_seconds]  # settled screens, no slide between two
        wanted = set(rng.choice(wanted, size=min(len(wanted), 24, config.negative_screens - len(crops)),
                                replace=False).tolist()) if wanted else set()
        for i, (_, frame) in enumerate(render_frames(session, catalog, sim)):
            if i in wanted:
                if rng.random() < config.jpeg_share:
                    frame = jpeg_noise(frame, int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)))
                crops.append(crop_windows(pil_to_tensor(frame)[None], boxes, config.screen_size))
    if not crops:
        return torch.zeros(0, 3, *config.screen_size, dtype=torch.uint8)
    return torch.cat(crops).round_().clamp_(0, 255).to(torch.uint8)


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
        dim=config.dim, adapter="mlp", adapter_options={"hidden": config.hidden}, pairs=("screen-image",),
        unpaired_negatives=config.negative_crops + config.negative_screens > 0))
    space.towers.requires_grad_(config.train_towers)
    photos = []
    for path in catalog.image_paths:
        if path is None:
            photos.append(Image.new("RGB", (8, 8)))  # masked out of training by has_photo
            continue
        with Image.open(path) as im:
            photos.append(im.convert("RGB"))
    n = config.renderings
    encoders = space.encoders
    negatives = torch.zeros(0, 3, *config.screen_size, dtype=torch.uint8)
    if config.windows is not None:
        screen_pixels, negatives = _window_renderings(catalog, config, config.seed, n)
        negatives = torch.cat([negatives, _screen_negatives(catalog, config, config.seed)])
        n *= config.window_crops
    else:
        screen_pixels, _ = decode_resized(_page_renderings(catalog, config, config.seed, n),
                                          encoders["screen"].preprocess)
    held_out_pages = _page_renderings(catalog, config, config.seed + 1_000_000, 1)
    masks = {"image": np.r_[np.tile(has_photo, n), np.zeros(len(negatives), bool)],
             "screen": np.ones(len(screen_pixels) + len(negatives), bool)}
    screen_pixels = torch.cat([screen_pixels, negatives])
    del negatives
    photo_pixels, _ = decode_resized(photos, encoders["image"].preprocess)
    image_rows = np.r_[np.tile(np.arange(len(catalog)), n), np.zeros(len(screen_pixels) - n * len(catalog), int)]
    normalize = {m: encoders[m].preprocess.normalize for m in ("image", "screen")}
    unpaired = space.config.unpaired_negatives
    if config.train_towers:
        data = CatalogPairs({"image": (photo_pixels[image_rows], masks["image"]),
                             "screen": (screen_pixels, masks["screen"])}, {}, normalize, pairs=("screen-image",),
                            augment={"screen": config.augment} if config.augment is not None else None,
                            unpaired=unpaired)
    else:
        photo_features = _features(space, "image", photo_pixels)
        data = CatalogPairs({}, {"image": (photo_features[image_rows], masks["image"]),
                                 "screen": (_features(space, "screen", screen_pixels), masks["screen"])}, {},
                            pairs=("screen-image",), unpaired=unpaired)
        if config.windows is None:
            held_out = _features(space, "screen", decode_resized(held_out_pages, encoders["screen"].preprocess)[0])
    del screen_pixels

    def s2i(s: UnifiedSpace) -> dict[str, float]:
        with torch.no_grad():
            if config.train_towers:  # the towers moved: embed the photos again
                targets = s.embed_images(photos)
            else:
                targets = s.project("image", photo_features.to(s.device))
            if config.windows is not None:  # the search a windowed Grounder runs, on other renderings
                sims = torch.cat([(embed_windows(s, held_out_pages[k:k + 64], config.windows)
                                   @ targets[has_photo].t()).amax(dim=1) for k in range(0, len(photos), 64)])
                return {"s2i_recall@1": float((sims[has_photo].argmax(1) == torch.arange(int(has_photo.sum()),
                                                                                           device=sims.device))
                                              .float().mean())}
            queries = embed_screens(s, held_out_pages) if config.train_towers else \
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
