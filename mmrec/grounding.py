"""Grounding screens in the catalog: which item, if any, a screenshot shows, in the unified space.

A `Grounder` embeds screenshots with the space's ``screen`` tower + adapter (`UnifiedSpace.embed_screens`)
and compares them with the catalog's item vectors (`UnifiedSpace.embed_images` of the item photos): the
nearest item is "on screen" when its cosine similarity reaches ``threshold``, else the screen shows "no
item" (grids, bag, checkout). With `ScreenWindows` it searches the screen for the photo instead: every
window goes through the screen tower and each item takes its best window (`mmrec.screen_windows`). With
``titles`` (layout-free), a page's title read by OCR tells apart photos the search finds alike (`mmrec.screen_text`).
`calibrate_threshold` picks the threshold on labelled frames (`mmrec.stream.calibrate_on_streams`: on the
screens the stream processor grounds in labelled streams; `mmrec.calibration` on simulator recordings, as
``mmrec stream calibrate`` runs it); `save_grounding` / `load_grounding` keep threshold, windows and photo
check next to a saved space, and `load_grounder` builds the `Grounder` a saved space grounds with.

An item whose photo cannot be decoded is skipped, logged and counted (`Grounder.skipped_photos`): it is
never grounded, as an item without a photo. `mmrec.fusion.screen_tower.train_screen_space` trains such a
space for a catalog; a space with pretrained towers plugs in unchanged (`UnifiedSpace.from_pretrained`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from mmrec.data import Catalog
from mmrec.screen_text import READERS, TitleIndex, ocr_available, read_lines, start_readers
from mmrec.screen_windows import AreaTable, PhotoCheck, ScreenWindows, crop_windows
from mmrec.space import UnifiedSpace

logger = logging.getLogger(__name__)

NO_ITEM = -1
GROUNDING_FILE = "grounding.json"
PHOTO_BATCH = 128  # catalog photos decoded and embedded at a time
SEARCH_SCORES = 1 << 24  # window-item scores a search holds at once (64 MiB of float32); more go in item blocks
# a presence cut (a photo search's) sits at most this far below the lowest true page it keeps: another app shows
# the same photo resampled and compressed otherwise, so its pages correlate a little less, not much less
PRESENCE_MARGIN = 0.1
# ... and at least this, where most pages kept score well above it: a product page shows its photo large, and
# correlates with it far above this in any app; under it a screen's best photo is a thumbnail (a checkout's, a
# bag's), which one training page scored low would otherwise let through
PRESENCE_FLOOR = 0.8
# with ``titles``: a screen whose best photo has another within this of it is read (OCR), and an item its title
# names is named instead where its photo, matched in the same window, comes within this of the best's
TITLE_BAND = 0.1


def check_threshold(value: float, what: str = "threshold") -> float:
    """``value`` as a float if it is a usable grounding threshold: finite and in [-1, 1] (a cosine similarity or
    a photo correlation); else a one-line ValueError naming ``what``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [-1, 1], got {value!r}") from None
    if not math.isfinite(number) or not -1.0 <= number <= 1.0:
        raise ValueError(f"{what} must be a finite number in [-1, 1] (a similarity), got {value!r}")
    return number


class Grounder:
    """Screens → (item code or `NO_ITEM`, cosine similarity to the nearest item) in a `UnifiedSpace`.

    ``item_vectors`` ``[I, D]`` (L2-normalised) with ``valid`` marking items that have one; items without
    a vector are never grounded. ``threshold``: the least similarity for "item on screen". ``windows``: search
    each screen for the photo (`mmrec.screen_windows`): every window goes through the screen tower and each
    item takes its best window; without, the whole screen is one input. ``check`` (with windows, and
    ``thumbnails`` of the item photos from `PhotoCheck.thumbnails`): the nearest candidates are re-ranked by
    their photo, and the similarity is then the photo's correlation with the screen; with ``check.locate_all``
    every candidate is found by its photo (`PhotoCheck.search`), also in windows of each of ``check.crops``
    against ``crop_thumbnails`` (one ``[I, 3, h, w]`` per crop, `PhotoCheck.thumbnails` with the aspect), and
    with ``check.candidates`` at least the catalog's size the tower is not run at all. ``titles`` and
    ``descriptions`` (one per item each; with a ``locate_all`` check): a screen whose photos alike compete is
    read by OCR, and the item its title or description names, among them, is chosen. ``skipped_photos``:
    (item id, reason) of catalog photos that could not be decoded (`for_catalog`). ``stage_seconds``: None
    (the default), or a dict that `similarities` adds its seconds to by stage — ``screens`` (screens to
    tensors and area tables), ``tower`` (windows or screens through the screen tower), ``search`` (every
    item's vector scored), ``check`` (the `PhotoCheck`) — to see where grounding time goes.
    """

    skipped_photos: list[tuple[str, str]]
    stage_seconds: dict[str, float] | None

    def __init__(self, space: UnifiedSpace, item_vectors: torch.Tensor, valid: np.ndarray | None = None,
                 threshold: float = 0.5, batch_size: int = 32, windows: ScreenWindows | None = None,
                 check: PhotoCheck | None = None, thumbnails: torch.Tensor | None = None,
                 crop_thumbnails: Sequence[torch.Tensor] = (), titles: Sequence[str] | None = None,
                 descriptions: Sequence[str] | None = None) -> None:
        if item_vectors.ndim != 2 or item_vectors.shape[1] != space.config.dim:
            raise ValueError(f"item_vectors must be [items, {space.config.dim}], got {tuple(item_vectors.shape)}")
        if "screen" not in space.encoders:
            raise ValueError(f"the space has no 'screen' tower (it has {sorted(space.encoders)}); "
                             f"grounding needs one")
        self.space, self.threshold, self.batch_size = space.eval(), check_threshold(threshold), batch_size
        self.skipped_photos, self.stage_seconds = [], None
        if check is not None and (windows is None or thumbnails is None or len(thumbnails) != len(item_vectors)):
            raise ValueError("a PhotoCheck re-ranks a windowed search: give windows and one thumbnail per item")
        if check is not None and check.crops and (
                len(crop_thumbnails) != len(check.crops) or any(len(t) != len(item_vectors) for t in crop_thumbnails)):
            raise ValueError(f"a PhotoCheck with crops {check.crops} needs one [items, 3, h, w] thumbnail tensor per "
                             f"crop (PhotoCheck.thumbnails(photos, aspect)), got {len(crop_thumbnails)}")
        self.windows, self.check, self.thumbnails = windows, check, thumbnails
        self.crop_thumbnails = list(crop_thumbnails)
        self.titles = None
        if titles is not None:
            if check is None or not check.locate_all or len(titles) != len(item_vectors):
                raise ValueError("titles tell apart photos a layout-free PhotoCheck finds alike: give one per item "
                                 "and a check with locate_all")
            if ocr_available():
                self.titles = TitleIndex(titles, descriptions)
                start_readers()  # the first screens read (live: the first page's view) pay no start-up
            else:
                logger.warning("grounding: no OCR reader (pip install rapidocr_onnxruntime), so screens are "
                               "grounded by photo alone, not told apart by their titles")
        vectors = item_vectors.detach().float().to(space.device)
        if valid is not None:
            vectors = vectors.clone()
            vectors[~torch.as_tensor(np.asarray(valid, bool), device=vectors.device)] = 0.0
        self.item_vectors = vectors

    @classmethod
    def for_catalog(cls, space: UnifiedSpace, catalog: Catalog, threshold: float = 0.5,
                    batch_size: int = 32, windows: ScreenWindows | None = None,
                    check: PhotoCheck | None = None, titles: bool = False) -> "Grounder":
        """Item vectors from the catalog photos (`embed_images` with the space's image tower), and the
        photos' thumbnails for ``check``. Photos are decoded ``PHOTO_BATCH`` at a time by the safe decoder
        (`mmrec.encoders.load_image`); one that cannot be decoded is skipped, logged and counted in
        ``skipped_photos``, and its item is never grounded. ``titles``: the catalog's titles and descriptions (its
        texts) tell apart items whose photos the check finds alike (`Grounder`)."""
        from mmrec.encoders import ImageDecodeError, load_image

        if "image" not in space.encoders:
            raise ValueError(f"the space has no 'image' tower (it has {sorted(space.encoders)}) to embed photos")
        if not any(p is not None for p in catalog.image_paths):
            raise ValueError("no catalog item has a photo; nothing to ground screens against")
        valid = np.zeros(len(catalog), bool)
        vectors = torch.zeros(len(catalog), space.config.dim)
        thumbnails = None if check is None else torch.zeros(len(catalog), 3, *check.size)
        crops = [] if check is None else [check.thumbnails([None] * len(catalog), a) for a in check.crops]
        skipped: list[tuple[str, str]] = []
        batch: list[int] = []
        photos: list[Any] = []

        def flush() -> None:
            if batch:
                vectors[batch] = space.embed_images(photos, batch_size=PHOTO_BATCH).float().cpu()
                if thumbnails is not None:
                    thumbnails[batch] = check.thumbnails(photos)
                    for aspect, cropped in zip(check.crops, crops):
                        cropped[batch] = check.thumbnails(photos, aspect)
                valid[batch] = True
                batch.clear(), photos.clear()

        for code, path in enumerate(catalog.image_paths):
            if path is None:
                continue
            try:
                photos.append(load_image(path))
            except ImageDecodeError as err:
                skipped.append((str(catalog.ids[code]), err.reason))
                logger.warning("grounding: item %s left out, its photo cannot be used: %s", catalog.ids[code], err)
                continue
            batch.append(code)
            if len(batch) == PHOTO_BATCH:
                flush()
        flush()
        if not valid.any():
            raise ValueError(f"none of the catalog's {len(skipped)} photos could be decoded "
                             f"(e.g. {skipped[0][0]}: {skipped[0][1]}); nothing to ground screens against")
        if skipped:
            logger.warning("grounding: %d of %d catalog photos skipped (undecodable); those items are never "
                           "grounded", len(skipped), len(skipped) + int(valid.sum()))
        grounder = cls(space, vectors, valid, threshold, batch_size, windows, check, thumbnails, crops,
                       catalog.titles if titles else None, catalog.texts if titles else None)
        grounder.skipped_photos = skipped
        return grounder

    @torch.no_grad()
    def similarities(self, screens: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Nearest item code and its similarity for each screenshot (PIL images, HxWx3 uint8 arrays or uint8
        ``[3,H,W]`` tensors)."""
        if not len(screens):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        tick = self._clock()
        if self.windows is None:
            tick("screens")
            queries = self._whole_screens(screens)
            tick("tower")
            best, codes = (queries @ self.item_vectors.t()).max(dim=1)
            tick("search")
            return codes.cpu().numpy().astype(np.int64), best.cpu().numpy().astype(np.float32)
        codes, sims = [], []
        every_item = (self.check is not None and self.check.locate_all
                      and self.check.candidates >= len(self.item_vectors))
        for table, pixels in self._tables(screens):
            tick("screens")
            if every_item:  # every item is located by its photo: the tower would shortlist nothing
                top = torch.arange(len(self.item_vectors)).expand(table.count, -1)  # item k in column k
            else:
                vectors = window_vectors(self.space, table, self.windows)
                tick("tower")
                best, where = self._search(vectors)
                tick("search")
                if self.check is None:
                    best, code = best.max(dim=1)
                    codes.append(code.cpu()), sims.append(best.cpu())
                    continue
                top = best.topk(min(self.check.candidates, best.shape[1]), dim=1).indices.cpu()  # [n, C]
            all_boxes = self.windows.boxes(table.width, table.height)
            if self.check.locate_all:  # layout-free windows: each candidate's window found by its photo
                pick = (lambda t: t) if every_item else (lambda t: t[top])  # every item: shared, not per screen
                variants = [(all_boxes, pick(self.thumbnails))] + [
                    (dataclasses.replace(self.windows, aspect=aspect).boxes(table.width, table.height), pick(cropped))
                    for aspect, cropped in zip(self.check.crops, self.crop_thumbnails)]
                if self.titles is not None and every_item:  # columns are item codes
                    scores, where, feed = self.check.search_feeds(table, variants)
                    tick("check")
                    match = self._named_by_title(pixels, scores.masked_fill(feed[:, None], -1.0), where, variants)
                    match = self._paged_by_title(pixels, match, scores, feed)
                    tick("titles")
                else:
                    match, where = self.check.search(table, variants)
            else:
                windows_at = torch.gather(where.cpu(), 1, top)  # each candidate's best window
                boxes = torch.as_tensor(all_boxes)[windows_at]
                match = self.check.match(table, boxes, self.thumbnails[top])  # [n, C]
            best_match, k = match.max(dim=1)
            codes.append(top.gather(1, k[:, None])[:, 0]), sims.append(best_match)
            tick("check")
        return torch.cat(codes).numpy().astype(np.int64), torch.cat(sims).numpy().astype(np.float32)

    def _clock(self):
        """``tick(stage)``: adds the seconds since the last tick (or since this call) to ``stage_seconds[stage]``
        when `stage_seconds` is a dict; does nothing when it is None."""
        if self.stage_seconds is None:
            return lambda stage: None
        times, last = self.stage_seconds, [time.perf_counter()]

        def tick(stage: str) -> None:
            now = time.perf_counter()
            times[stage] = times.get(stage, 0.0) + now - last[0]
            last[0] = now
        return tick

    @torch.no_grad()
    def item_similarities(self, screens: Sequence[Any]) -> torch.Tensor:
        """``[N, I]``: each item's similarity to each screen by the tower alone (its best window, with
        windows), before any `PhotoCheck` — how near the tower puts the true item."""
        if self.windows is None:
            return self._whole_screens(screens) @ self.item_vectors.t()
        return torch.cat([self._search(window_vectors(self.space, table, self.windows))[0]
                          for table, _ in self._tables(screens)])

    def _whole_screens(self, screens: Sequence[Any]) -> torch.Tensor:
        """``[N, D]``: whole screens (PIL images or uint8 ``[H, W, 3]`` arrays) through the screen tower and adapter."""
        from PIL import Image

        screens = [Image.fromarray(s) if isinstance(s, np.ndarray) else s for s in screens]
        return self.space.embed_screens(screens, batch_size=self.batch_size)

    def _tables(self, screens: Sequence[Any]) -> Iterator[tuple[AreaTable, torch.Tensor]]:
        """`AreaTable`s of at most ``batch_size`` screens of one size each, in order, with those screens (uint8
        ``[n, 3, H, W]``): the tower's windows and the check's shifts are cut from one table per screen."""
        for start in range(0, len(screens), self.batch_size):
            batch = [screen_tensor(s) for s in screens[start:start + self.batch_size]]
            for same in _runs_of_one_size(batch):
                pixels = torch.stack([batch[k] for k in same])
                yield AreaTable(pixels), pixels

    def _named_by_title(self, pixels: torch.Tensor, match: torch.Tensor, where: torch.Tensor,
                        variants: Sequence[tuple[np.ndarray, torch.Tensor]]) -> torch.Tensor:
        """``match`` ``[N, C]`` (the check's scores of the screens ``pixels``, uint8 ``[N, 3, H, W]``; item k in
        column k) with, on each screen where another photo comes within `TITLE_BAND` of the best, the best's
        score moved to the item the screen's text names better than it names the best (`mmrec.screen_text`;
        text naming the best as well as any other leaves it) whose photo comes within
        `TITLE_BAND` of the best: as the search scored it (in the window it was found in), matched in the
        window the best was found in (at the crop whose aspect is nearest the window's) against the best's own
        match there, or searched for on the screen by itself (every window of every crop): among many articles
        alike, the catalogue-wide search may keep look-alikes at full size and not the named one, and find the
        best in a window off the photo (a square cut of one trouser leg). The screen's similarity stays the
        best photo's: the title tells which of the photos alike it is, not whether a page is on screen, with one
        exception: text that reads a title twice (`TitleIndex.read_twice`) lists two cards of it, so the screen
        is a feed (every score -1), whatever its photos. Screens are read side by side (`mmrec.screen_text`'s
        reader processes)."""
        best, top = match.max(dim=1)
        second = match.scatter(1, top[:, None], -1.0).amax(dim=1)
        unsure = [i for i in range(len(match)) if best[i] > -1 and second[i] >= best[i] - TITLE_BAND]
        if not unsure:
            return match
        lines = _screen_lines(pixels, unsure)
        aspects = np.log([self.windows.aspect, *self.check.crops])
        check = dataclasses.replace(self.check, refine=None)  # every one refined as finely as the best was
        match = match.clone()
        for i in unsure:
            text = self.titles.read(lines[i])
            if text.twice:  # two cards of one title: a list, not a page
                match[i] = -1.0
                continue
            read = text.named(above=int(top[i]))
            named = torch.as_tensor(read[read != int(top[i])])
            if not len(named):
                continue
            box = where[i, top[i]]
            v = int(np.abs(aspects - np.log(float((box[3] - box[1]) / (box[2] - box[0])))).argmin())
            candidates = torch.cat([top[i:i + 1], named])
            table = AreaTable(pixels[i:i + 1])
            scores = check.match(table, box.expand(1, len(candidates), 4), variants[v][1][candidates][None],
                                 uncrowd=False)[0]
            alone = self.check.search(table, [(boxes, thumbnails[named][None]) for boxes, thumbnails in variants])[0][0]
            found = torch.maximum(match[i, named], alone)
            close = (scores[1:] >= scores[0] - TITLE_BAND) | (found >= best[i] - TITLE_BAND)
            if close.any():  # the closest of them, by the better of its scores against the best's
                gap = torch.maximum(scores[1:] - scores[0], found - best[i]).masked_fill(~close, -2.0)
                chosen = named[int(gap.argmax())]
                match[i, chosen], match[i, top[i]] = best[i], match[i, chosen].clamp(max=float(best[i]) - 1e-6)
        return match

    def _paged_by_title(self, pixels: torch.Tensor, match: torch.Tensor, scores: torch.Tensor, feed: torch.Tensor
                        ) -> torch.Tensor:
        """``match`` ``[N, C]`` (item k in column k) with, on each screen the photo check called a feed on its
        coarse thumbnails alone (``feed``, `PhotoCheck.search_feeds`; ``scores``: its scores before that
        verdict), the item the screen's text names given its own score, where the text names one title only
        (`TitleIndex.one_title`) and that item's photo is found, wide enough for a page, within `TITLE_BAND`
        of the best. Without colour a look-alike can match a page's coloured bar or text block as a second
        photo; at full size no second photo came near the best (else the screen is a feed there too, and no
        title overturns that: a grid's cards match as well as each other, and one card's title is often
        read). A feed's titles, read, name two or more, or one twice (two cards of it), and the verdict
        stands."""
        best = scores.max(dim=1).values
        called = [i for i in range(len(scores)) if feed[i] and best[i] > -1]
        if not called:
            return match
        lines = _screen_lines(pixels, called)
        match = match.clone()
        for i in called:
            text = self.titles.read(lines[i])
            read = text.named()
            named = torch.as_tensor(read)
            if not len(named) or not self.titles.one_title(read) or text.twice:
                continue
            own = scores[i, named]
            k = int(own.argmax())
            if own[k] > -1 and own[k] >= best[i] - TITLE_BAND:
                match[i, named[k]] = own[k]
        return match

    def _search(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Window vectors ``[n, K, D]`` → each item's best similarity over the K windows ``[n, I]`` and which
        window gave it. Brute force over every item vector (a few thousand to tens of thousands of items cost
        little next to the tower); the ``[n, K, I]`` scores are held at most `SEARCH_SCORES` at a time, so many
        windows over a large catalogue (layout-free windows) do not blow up memory: items are taken in blocks
        then, with the same result."""
        n, k, _ = vectors.shape
        items = len(self.item_vectors)
        if n * k * items <= SEARCH_SCORES:
            return (vectors @ self.item_vectors.t()).max(dim=1)  # over [n, K, I]
        block = max(1, SEARCH_SCORES // max(1, n * k))
        parts = [(vectors @ self.item_vectors[s:s + block].t()).max(dim=1) for s in range(0, items, block)]
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)

    def ground(self, screens: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Item code per screenshot (`NO_ITEM` below the threshold) and its similarity."""
        codes, sims = self.similarities(screens)
        return np.where(sims >= self.threshold, codes, NO_ITEM), sims


def _runs_of_one_size(screens: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of consecutive screens of one size (a stream's frames are one run)."""
    runs: list[list[int]] = []
    for k, screen in enumerate(screens):
        if runs and screens[runs[-1][0]].shape == screen.shape:
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


def screen_tensor(screen: Any) -> torch.Tensor:
    """A screenshot (PIL image, HxWx3 uint8 array or uint8 ``[3, H, W]`` tensor) as a uint8 ``[3, H, W]`` tensor."""
    from mmrec.encoders.base import pil_to_tensor

    if isinstance(screen, torch.Tensor):
        return screen
    if isinstance(screen, np.ndarray):
        contiguous = np.ascontiguousarray(screen)
        return torch.from_numpy(contiguous if contiguous.flags.writeable else contiguous.copy()).permute(2, 0, 1)
    return pil_to_tensor(screen.convert("RGB"))


@torch.no_grad()
def embed_windows(space: UnifiedSpace, screens: Sequence[Any], windows: ScreenWindows) -> torch.Tensor:
    """Screens (PIL images, HxWx3 uint8 arrays or uint8 ``[3, H, W]`` tensors, any sizes) → ``[N, K, D]``: each
    of their `ScreenWindows` (K per screen; screens in one call must get as many, e.g. share a size) through
    the screen tower and adapter (`window_vectors`)."""
    tensors = [screen_tensor(s) for s in screens]
    if not tensors:
        return torch.zeros(0, 0, space.config.dim, device=space.device)
    out = [window_vectors(space, AreaTable(torch.stack([tensors[k] for k in same])), windows)
           for same in _runs_of_one_size(tensors)]
    counts = sorted({v.shape[1] for v in out})
    if len(counts) != 1:
        raise ValueError(f"screens of one call got different numbers of windows {counts}; "
                         f"ground screens of one size together")
    return torch.cat(out)


@torch.no_grad()
def window_vectors(space: UnifiedSpace, table: AreaTable, windows: ScreenWindows) -> torch.Tensor:
    """The `ScreenWindows` of screens of one size (their `AreaTable`) cut at the screen tower's input size →
    ``[n, K, D]`` through the tower (`pixel_tower`: a tiling tower's own image tower) and the screen adapter."""
    was_training = space.training
    if was_training:  # train()/eval() walk every submodule: only when needed, not per grounding call
        space.eval()
    try:
        vectors = space.project("screen", window_features(space, table, windows))
    finally:
        if was_training:
            space.train()
    return vectors.view(table.count, -1, vectors.shape[-1])


@torch.no_grad()
def window_features(space: UnifiedSpace, table: AreaTable, windows: ScreenWindows) -> torch.Tensor:
    """``[n * K, F]``: the screen tower's outputs (before the adapter) for the `ScreenWindows` of screens of one
    size, screen-major — what `window_vectors` projects; a fixed tower's can be kept and projected again as
    the adapter trains. Call with the space in eval mode (`window_vectors` does)."""
    from mmrec.encoders.screenshot import pixel_tower

    tower = pixel_tower(space.encoders["screen"])
    prep = tower.preprocess
    boxes = windows.boxes(table.width, table.height)
    pixels = prep.normalize(crop_windows(table, boxes, prep.size).div_(255).to(tower.device))
    return tower.encode(pixels)


@dataclass
class GroundingSettings:
    """What grounds screens with a saved space besides its weights: the calibrated ``threshold`` (finite, in
    [-1, 1]), the ``windows`` searched for the photo, the ``check`` re-ranking by photo (None: not used) and
    whether the screens' ``titles`` (OCR) tell apart items whose photos a layout-free check finds alike."""

    threshold: float
    windows: ScreenWindows | None = None
    check: PhotoCheck | None = None
    titles: bool = False

    def __post_init__(self) -> None:
        self.threshold = check_threshold(self.threshold, "GroundingSettings.threshold")


LAYOUT_FREE_CROPS = (1.0, 1.25, 1.5)  # frames apps cut photos to (height / width): square, 4:5, 2:3
LAYOUT_FREE_SHORTLIST = 200  # items a layout-free search locates at full size after the half-size pass
LAYOUT_FREE_SHORTLIST_SHARE = 0.04  # ... or this share of the catalogue where that is more (200 of 5,000)


def _screen_lines(pixels: torch.Tensor, rows: Sequence[int]) -> dict[int, list[str]]:
    """The text lines `read_lines` reads on each screen ``rows`` of ``pixels`` (uint8 ``[N, 3, H, W]``), read side by
    side (`mmrec.screen_text`'s reader processes, at most `READERS` at once); one screen is read ``alone``, on
    the cores side-by-side reading would take (live, a page's one screen)."""
    alone = len(rows) == 1
    with ThreadPoolExecutor(max_workers=max(1, min(len(rows), READERS))) as pool:
        return dict(zip(rows, pool.map(lambda i: read_lines(pixels[i].permute(1, 2, 0).numpy(), alone), rows)))


def layout_free_settings(aspect: float, items: int, threshold: float = 0.5) -> GroundingSettings:
    """Grounding settings that assume nothing about where an app puts its photos, for apps whose pages the
    space never saw (the fitted windows of `ScreenWindows.fit` know only the training app's photo region).

    Windows of the photos' ``aspect`` over the whole screen from a fifth of its width up, 12 % apart in width,
    placed at most a twentieth of the screen's width apart (`ScreenWindows.grid`), and a `PhotoCheck` that finds
    every one of the ``items`` photos in them (``locate_all``; with that many candidates the grounder skips the
    screen tower, beyond them it shortlists with it): as the photo is and cut to the `LAYOUT_FREE_CROPS` apps crop
    photos to, at matching contrast and colour (a grey panel or a text block of a photo's shape is not the photo),
    each also on a finer grid and in windows up to 5 % larger and smaller (half the gap between widths), on
    thumbnails 12 wide (refining only the best few let a look-alike that fits the window's size outrank the item
    itself, shown a few per cent off it, and keep it from the next stage); with more than `LAYOUT_FREE_SHORTLIST`
    items, those located best by thumbnails 6 wide go on, `LAYOUT_FREE_SHORTLIST` or `LAYOUT_FREE_SHORTLIST_SHARE`
    of the items, whichever is more (a count fixed for 5,000 items let a whole catalogue's look-alikes at that size
    crowd out the item itself); the best 10, and the best of each variant (the photo whole, each cut: a coat cut to
    4:5 may rank only twelfth over all variants behind a dress's square cut), are matched again on thumbnails 36
    wide (``coarse`` 3), which tell apart photos alike when small (black trousers on white, two navy sweaters once a
    page has cut them square). A screen where a second photo alike matches apart from the best (``crowd`` 0.65, see
    `PhotoCheck`) is a feed, and a photo narrower than 0.35 of the screen (a feed card, a bag row) is no product
    page. Where photos alike compete, the page's title read by OCR names the item (``titles``; `Grounder`), and a
    screen called a feed on the coarse thumbnails alone is a page after all where its text names one title whose
    photo comes within `TITLE_BAND` of the best. ``threshold`` is then calibrated
    (`mmrec.calibration.calibrate_space`) on labelled recordings of any app."""
    if not (math.isfinite(aspect) and aspect > 0) or items < 1:
        raise ValueError(f"layout_free_settings needs a positive photo aspect (height / width) and items >= 1, "
                         f"got {aspect}, {items}")
    crops = tuple(a for a in LAYOUT_FREE_CROPS if abs(a / aspect - 1) > 0.05)
    check = PhotoCheck(candidates=items, size=(max(2, round(36 * aspect)), 36), crowd=0.65, locate_all=True,
                       contrast=1.0, colour=40.0, crops=crops, smallest=0.35, scales=(0.95, 0.975, 1.025, 1.05),
                       refine=None, shortlist=max(LAYOUT_FREE_SHORTLIST, round(LAYOUT_FREE_SHORTLIST_SHARE * items)),
                       coarse=3)
    return GroundingSettings(threshold, ScreenWindows.grid(0.2, 1.0, aspect=aspect, ratio=1.12, stride=0.05), check,
                             titles=True)


def photo_aspect(catalog: Catalog, sample: int = 64) -> float:
    """The median height / width of up to ``sample`` catalog photos (read from their headers; undecodable ones
    are passed over), for windows of the photos' shape."""
    from PIL import Image

    aspects = []
    for path in [p for p in catalog.image_paths if p is not None][:sample]:
        try:
            with Image.open(path) as image:
                aspects.append(image.height / image.width)
        except (OSError, ValueError, ZeroDivisionError, Image.DecompressionBombError):
            continue
    if not aspects:
        raise ValueError("no catalog photo could be read to take the photos' aspect from")
    return float(np.median(aspects))


def save_grounding(target: str | os.PathLike, settings: GroundingSettings, **extra: Any) -> Path:
    """Write ``settings`` (and anything in ``extra``, e.g. the calibration's fit) to ``target``: a space
    folder's ``grounding.json``, or a ``.json`` file path; atomically, as strict JSON. `load_grounding` reads
    a folder's back."""
    from mmrec.io import atomic_write_json

    from mmrec.pretrained import MANIFEST_FILE, relist_files

    target = Path(target)
    path = target if target.suffix == ".json" else target / GROUNDING_FILE
    atomic_write_json(path, {**asdict(settings), **extra}, indent=1)
    if path.parent == target and (target / MANIFEST_FILE).is_file():
        relist_files(target, [GROUNDING_FILE])  # part of the space folder: covered by its manifest like the rest
    return path


def load_grounding(directory: str | os.PathLike) -> GroundingSettings:
    """The `GroundingSettings` `save_grounding` wrote to ``directory/grounding.json`` (other keys ignored)."""
    from mmrec.config import from_dict
    from mmrec.io import read_json

    path = Path(directory) / GROUNDING_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: calibrate the space (mmrec stream calibrate writes it) "
                                f"or give the threshold")
    values = read_json(path)  # names the file in its errors; NaN is not JSON
    try:
        known = {k: values[k] for k in ("threshold", "windows", "check", "titles") if k in values}
        return from_dict(GroundingSettings, known)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: expected a JSON object with a numeric 'threshold' and optional 'windows' and "
                         f"'check' ({err})") from None


def load_grounder(directory: str | os.PathLike, catalog: Catalog, *, threshold: float | None = None,
                  batch_size: int = 32, device: str | torch.device | None = None,
                  settings: GroundingSettings | None = None) -> Grounder:
    """The `Grounder` a saved space grounds ``catalog`` with: the space's weights, and ``settings`` (default:
    its ``grounding.json``; without one, ``threshold`` and a whole-screen search). ``threshold`` replaces the
    saved one. One of them must give a threshold."""
    if threshold is not None:
        threshold = check_threshold(threshold)
    if settings is None:
        if (Path(directory) / GROUNDING_FILE).is_file():
            settings = load_grounding(directory)
        elif threshold is None:
            raise ValueError(f"no threshold given and {Path(directory) / GROUNDING_FILE} does not exist; "
                             f"calibrate the space (mmrec stream calibrate) or give a threshold")
        else:
            settings = GroundingSettings(threshold)
    space = UnifiedSpace.from_pretrained(directory, **({} if device is None else {"device": device}))
    return Grounder.for_catalog(space, catalog, threshold=settings.threshold if threshold is None else threshold,
                                batch_size=batch_size, windows=settings.windows, check=settings.check,
                                titles=settings.titles)


def calibrate_threshold(codes: np.ndarray, sims: np.ndarray, truth: np.ndarray, identity: bool = True
                        ) -> tuple[float, dict[str, Any]]:
    """The similarity threshold with the best F1 of "item X on screen" on labelled frames.

    ``codes``/``sims``: each frame's nearest item and similarity; ``truth``: its true item (`NO_ITEM` where the
    screen shows none). A prediction is right when it names the true item. Returns the threshold (midway
    between neighbouring similarities) and precision, recall and F1 there. A similarity of -1 is a photo
    check's verdict that the screen shows no item page (a feed, a card), not a similarity: when the cut falls
    just above such frames, the threshold is midway between the cut and 0 (unrelated pictures correlate about
    0), not -1, so that it does not accept nearly everything on the screens of another app. The cut never
    falls below such frames: a rejected frame keeps the code it was searched for, and counting it right would
    make the threshold accept every screen the check rejects (with every frame rejected, the threshold is 0, or
    `PRESENCE_FLOOR` for presence).

    ``identity`` False: a frame counts as right when it names any item on a screen that shows one, so the
    threshold only tells screens with an item from screens without. For a grounder that finds every catalog
    photo by its pixels (`PhotoCheck.locate_all`), a wrong name on a product page is another article's photo
    alike (a near-twin), scored as high as the right one: a cut above it drops the right names of every
    page scored lower, which on another app's screens is most of them. There the threshold is also at least
    the lowest page kept less `PRESENCE_MARGIN`: a page scores as its photo correlates with itself on the
    screen, much the same in any app, while the screens without an item that one app's recordings hold say
    little of another app's (its checkout, its bag), and with none scored (all rejected as feeds) the midway
    cut would accept any screen that correlates half as well with some photo. It is also at least
    `PRESENCE_FLOOR` (but no higher than the median page kept less the margin, so an app whose pages all
    correlate less keeps its cut): one page of the training recording scored low drags the margin's cut down to
    where another app's checkout thumbnails pass. The fit names its ``objective``.
    """
    codes, sims, truth = np.asarray(codes), np.asarray(sims, np.float64), np.asarray(truth)
    if not len(codes) or not (truth != NO_ITEM).any():
        raise ValueError("calibration needs frames, some of them showing an item")
    if not identity:  # any item named on a screen showing one is right: only presence is judged
        codes = np.where((truth != NO_ITEM) & (codes != NO_ITEM), truth, codes)
    order = np.argsort(-sims)
    right = (codes[order] == truth[order]).astype(np.float64)
    said = np.arange(1, len(order) + 1, dtype=np.float64)  # frames called "item" when cutting after each
    true_pos = np.cumsum(right)
    precision, recall = true_pos / said, true_pos / float((truth != NO_ITEM).sum())
    f1 = np.where(true_pos > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    ties = np.r_[sims[order][1:] == sims[order][:-1], False]  # cut only between distinct similarities
    f1[ties] = -1.0
    scored = sims[order] > -1.0
    if not scored.any():  # every frame rejected by the photo check: nothing to cut between
        return (0.0 if identity else PRESENCE_FLOOR), {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                                       "objective": "item" if identity else "presence"}
    f1[~scored] = -1.0  # a cut under -1 would accept what the photo check rejected, whatever the code it kept
    k = int(np.argmax(f1))
    below = sims[order][k + 1] if k + 1 < len(order) else sims[order][k] - 1e-3
    if below <= -1.0 and sims[order][k] > 0:  # rejected outright (PhotoCheck's -1), not a similarity
        below = 0.0
    threshold = float((sims[order][k] + below) / 2)
    if not identity:  # within the margin below the lowest page kept, never below the midway cut or the floor
        kept = sims[order][: k + 1][right[: k + 1] > 0]
        floor = min(PRESENCE_FLOOR, float(np.median(kept)) - PRESENCE_MARGIN) if len(kept) else -np.inf
        threshold = max(threshold, float(sims[order][k]) - PRESENCE_MARGIN, floor)
    return threshold, {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                       "objective": "item" if identity else "presence"}
