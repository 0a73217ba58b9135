"""Windows over a screen where an item's photo may sit: grounding by photo search, not whole-screen likeness.

A product page shows the item's photo large; the rest of the screen (the app's theme, header, text, buttons)
varies from app to app and says little about which item it is. Embedding the whole screen makes the tower
learn every look; searching the screen for the photo does not. `ScreenWindows` lays windows of the photos'
aspect over a screen at a few sizes, edge to edge in steps of a fraction of their size (or `ScreenWindows.fit`
fits them to where an app's pages put photos); `crop_windows` cuts them out at the tower's input size, each
output pixel the exact mean of the screen area under it (from an `AreaTable`, a summed-area table); a
`mmrec.grounding.Grounder` given windows scores each item by its best window, and with a `PhotoCheck`
re-ranks its best candidates by their own photo. `jittered_windows` draws the windows a training page should
teach: around the photo's true box, off by at most what the grid of windows can be off.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

CROWD_OVERLAP = 0.1  # two windows are apart (two photos, not one seen twice) when they share under this of the smaller
CROWD_MARGIN = 0.1  # ... and it matches within this of the best photo
CROWD_SIZE = 0.5  # ... in a window at least this share of the best one's width
CROWD_CHECKED = 5  # a feed found on coarse thumbnails: its best this many second photos are matched at full size,
CROWD_CONFIDENT = 0.9  # and it is a product page after all where the best photo matches at least this there
CROWD_MARGIN_DETAILED = 0.2  # ... and no second photo within this of it (small cards lose more detail than a page)
CROWD_INNER = 0.15  # a second photo's window without this share of its width and height at each side (its inside)
CROWD_FLAT = 0.15  # ... holds at least this share of the window's contrast: else the match is the window's edge
SEARCH_MATCHED = 100  # candidates of a screen that PhotoCheck.search matches with shifts after locating them all
# (enough that a feed's other cards stay among them when a catalogue holds many articles alike to one card)
SEARCH_APART = 20  # ... of which at least this many located apart from the best (a feed's other cards)
SEARCH_DETAILED = 10  # ... and, with coarse thumbnails, matches again at full size
SEARCH_DETAILED_EACH = 1  # ... and this many best of each variant besides (the photo whole, each crop of it)
LOCATE_SCORES = 1 << 24  # candidate-window scores PhotoCheck.locate holds at once (64 MiB of float32)
LOCATE_BLOCK = 256  # ... and at most this many candidates (a narrow band of contrasts: see PhotoCheck._best_windows)
POOLED_KEPT = 16  # shared thumbnail tensors whose pooled copies _pooled keeps (a catalogue's variants at two sizes)


@dataclass
class ScreenWindows:
    """Windows of ``aspect`` (height / width) whose widths are ``widths`` (fractions of the screen's width;
    a window taller than the screen is shrunk to its height), placed edge to edge inside ``region`` (left,
    top, right, bottom as fractions of the screen) at least every ``step`` of the window's own width and
    height, and with ``stride`` at most that share of the screen's width apart in both directions (large
    windows placed as finely as small ones: a photo a large window misses by a step's share of its size
    matches no better than a small window on part of it). Per screen: `boxes`; how many: `count`; fitted to
    where an app's pages put photos: `fit`."""

    widths: tuple[float, ...] = (0.5, 0.62, 0.78)
    aspect: float = 1.5
    step: float = 0.25
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    stride: float | None = None

    def __post_init__(self) -> None:
        self.widths = tuple(float(w) for w in self.widths)
        self.region = tuple(float(r) for r in self.region)
        if not self.widths or any(not 0 < w <= 1 for w in self.widths):
            raise ValueError(f"ScreenWindows.widths must be fractions of the screen width in (0, 1], got {self.widths}")
        if not self.aspect > 0:
            raise ValueError(f"ScreenWindows.aspect (height / width) must be positive, got {self.aspect}")
        if not 0 < self.step <= 1:
            raise ValueError(f"ScreenWindows.step must be in (0, 1] (a fraction of the window), got {self.step}")
        if self.stride is not None and not 0 < self.stride <= 1:
            raise ValueError(f"ScreenWindows.stride must be None or in (0, 1] (a fraction of the screen's width), "
                             f"got {self.stride}")
        left, top, right, bottom = self.region
        if len(self.region) != 4 or not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
            raise ValueError(f"ScreenWindows.region must be (left, top, right, bottom) fractions of the screen with "
                             f"left < right and top < bottom, got {self.region}")

    @classmethod
    def fit(cls, boxes: np.ndarray, size: tuple[int, int], aspect: float = 1.5, step: float = 0.25) -> "ScreenWindows":
        """Windows for photos seen at ``boxes`` (``[N, 4]`` pixels on ``size`` (width, height) screens, e.g. the
        photo boxes of training pages): widths from the narrowest to the widest window holding one of them,
        ``1 + step`` apart, inside the smallest region holding all those windows."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not len(boxes):
            raise ValueError("ScreenWindows.fit needs at least one photo box")
        width, height = size
        w = np.maximum(boxes[:, 2] - boxes[:, 0], (boxes[:, 3] - boxes[:, 1]) / aspect)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        widths = _widths(w.min() / width, min(1.0, w.max() / width), step)
        region = (max(0.0, (cx - w / 2).min() / width), max(0.0, (cy - w * aspect / 2).min() / height),
                  min(1.0, (cx + w / 2).max() / width), min(1.0, (cy + w * aspect / 2).max() / height))
        return cls(widths=widths, aspect=aspect, step=step, region=region)

    @classmethod
    def grid(cls, narrowest: float = 0.45, widest: float = 1.0, aspect: float = 1.5,
             step: float = 0.25, ratio: float | None = None, stride: float | None = None) -> "ScreenWindows":
        """Layout-free windows: widths from ``narrowest`` to ``widest`` (fractions of the screen's width) ``ratio``
        apart (default ``1 + step``), over the whole screen, placed every ``step`` of their size. A photo shown
        between two widths is matched (`PhotoCheck`) at the wrong scale, so a finer ``ratio`` than the
        positions' step pays where photo sizes vary from app to app (``stride``: see the class). Unlike `fit`,
        nothing about where any app puts its photos is assumed, so a page of an app never seen (another
        renderer, another layout) is searched as well as a known one; the price is more windows per screen and
        more places where a photo that is not a product page's (a home feed's card, a grid tile as wide as
        ``narrowest``) can be found. ``narrowest`` is the only prior: the
        smallest photo a product page shows, as a share of the screen's width."""
        if not 0 < narrowest <= widest <= 1:
            raise ValueError(f"ScreenWindows.grid needs 0 < narrowest <= widest <= 1 (fractions of the screen width), "
                             f"got {narrowest}, {widest}")
        if ratio is not None and not ratio > 1:
            raise ValueError(f"ScreenWindows.grid ratio (between consecutive widths) must be > 1, got {ratio}")
        return cls(widths=_widths(narrowest, widest, step if ratio is None else ratio - 1), aspect=aspect, step=step,
                   stride=stride)

    def boxes(self, width: int, height: int) -> np.ndarray:
        """``[K, 4]`` float boxes ``(left, top, right, bottom)`` in pixels covering the region of a ``width`` x
        ``height`` screen at every window size (a fresh copy: the windows of one shape are laid out once)."""
        return _boxes(tuple(self.widths), float(self.aspect), float(self.step), tuple(self.region), self.stride,
                      int(width), int(height)).copy()

    def count(self, width: int, height: int) -> int:
        """How many windows a ``width`` x ``height`` screen gets."""
        return len(self.boxes(width, height))

    def scale_slack(self) -> float:
        """The most a photo's size can be off the nearest window size, as a ratio (≥ 1)."""
        widths = sorted(self.widths)
        gaps = [b / a for a, b in zip(widths, widths[1:])]
        return math.sqrt(max(gaps)) if gaps else 1.0


@functools.lru_cache(maxsize=64)
def _boxes(widths: tuple[float, ...], aspect: float, step: float, region: tuple[float, float, float, float],
           stride: float | None, width: int, height: int) -> np.ndarray:
    """`ScreenWindows.boxes` of those settings, kept: a layout-free grid holds thousands of windows, laid out in
    Python loops, and every screen of a stream has one of a few sizes."""
    left, top, right, bottom = region[0] * width, region[1] * height, region[2] * width, region[3] * height
    out = []
    for fraction in widths:
        w = fraction * width
        h = w * aspect
        if h > height:
            h, w = float(height), height / aspect
        across = step if stride is None else min(step, stride * width / w)  # of the window's size
        for y in _starts(top, bottom, h, across * w / h if stride is not None else across, height):
            for x in _starts(left, right, w, across, width):
                out.append((x, y, x + w, y + h))
    return np.asarray(out, np.float64)


def _widths(narrow: float, wide: float, step: float) -> tuple[float, ...]:
    """Window widths from ``narrow`` to at least ``wide``, ``1 + step`` apart (none over the screen's width)."""
    count = 1 + math.ceil(math.log(wide / narrow) / math.log(1 + step) - 1e-9) if wide > narrow else 1
    return tuple(min(1.0, narrow * (1 + step) ** k) for k in range(count))


def _starts(low: float, high: float, size: float, step: float, limit: float) -> np.ndarray:
    """Window starts from ``low`` to ``high - size``, evenly, at most ``step * size`` apart; a window larger
    than the span is centred on it (kept on the screen, ``[0, limit]``)."""
    if size >= high - low:
        return np.array([min(max((low + high - size) / 2, 0.0), max(limit - size, 0.0))])
    count = math.ceil((high - low - size) / (step * size) - 1e-9) + 1
    return np.linspace(low, high - size, count)


def crop_windows(screens: torch.Tensor | AreaTable, boxes: np.ndarray | torch.Tensor,
                 size: tuple[int, int]) -> torch.Tensor:
    """``[N, 3, H, W]`` screens (any dtype, 0–255, or their `AreaTable`) and ``[K, 4]`` boxes (the same for every
    screen) or ``[N, K, 4]`` → float ``[N * K, 3, size[0], size[1]]`` window crops, screen-major, each pixel the
    mean of the area under it."""
    table = screens if isinstance(screens, AreaTable) else AreaTable(screens)
    boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.float64)
    if boxes.dim() == 2:
        boxes = boxes.expand(table.count, *boxes.shape)
    if boxes.dim() != 3 or boxes.shape[0] != table.count or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be [K, 4] or [N, K, 4] for {table.count} screens, got {list(boxes.shape)}")
    return table.crops(boxes, size).flatten(0, 1)


def iou(boxes: np.ndarray, box: Any) -> np.ndarray:
    """Intersection over union of each of ``[K, 4]`` boxes with one ``(left, top, right, bottom)`` box."""
    l, t, r, b = box
    inter = (np.clip(np.minimum(boxes[:, 2], r) - np.maximum(boxes[:, 0], l), 0, None)
             * np.clip(np.minimum(boxes[:, 3], b) - np.maximum(boxes[:, 1], t), 0, None))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (areas + (r - l) * (b - t) - inter)


def jittered_windows(photo_box: tuple[float, float, float, float], windows: ScreenWindows, n: int,
                     rng: np.random.Generator) -> np.ndarray:
    """``[n, 4]`` windows of ``windows.aspect`` around ``photo_box``: the smallest window holding the photo,
    scaled by up to `ScreenWindows.scale_slack` either way and shifted by up to half a step of its size,
    so a tower trained on them sees the photo as the grid of windows will show it."""
    left, top, right, bottom = photo_box
    w = max(right - left, (bottom - top) / windows.aspect)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    slack = math.log(windows.scale_slack())
    scale = np.exp(rng.uniform(-slack, slack, n))
    ws, hs = w * scale, w * scale * windows.aspect
    dx = rng.uniform(-0.5, 0.5, n) * windows.step * ws
    dy = rng.uniform(-0.5, 0.5, n) * windows.step * hs
    x0, y0 = cx + dx - ws / 2, cy + dy - hs / 2
    return np.stack([x0, y0, x0 + ws, y0 + hs], axis=1)


class AreaTable:
    """Summed-area tables of ``[N, 3, H, W]`` screens (any dtype, 0–255): `crops` cuts boxes at any sub-pixel
    place, each crop pixel the exact mean of the screen area under it. Build one per screen and cut every
    window from it (the tower's windows and the `PhotoCheck`'s shifts share it)."""

    def __init__(self, screens: torch.Tensor) -> None:
        if screens.dim() != 4 or screens.shape[1] != 3:
            raise ValueError(f"screens must be [N, 3, H, W], got {list(screens.shape)}")
        self.count, _, self.height, self.width = screens.shape
        pixels = screens.detach().cpu().numpy()
        if screens.is_floating_point():
            dtype = np.float64
        else:  # integer sums are exact; int32 holds a whole screen's sum up to 8.4 million pixels
            dtype = np.int32 if self.height * self.width * 255 < 2 ** 31 else np.int64
        table = np.zeros((self.count, 3, self.height + 1, self.width + 1), np.float32)
        # numpy: torch's integer cumsum is several times slower on CPU
        table[:, :, 1:, 1:] = np.cumsum(np.cumsum(pixels, axis=2, dtype=dtype), axis=3)
        self.table = torch.from_numpy(table)  # [N, 3, H + 1, W + 1]

    def crops(self, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``[N, B, 4]`` boxes (left, top, right, bottom in pixels) → float ``[N, B, 3, h, w]`` crops (bilinear
        between pixel corners of the table, so exact for sub-pixel boxes too; area outside the screen counts
        as zero): many shifted crops cost one ``grid_sample``."""
        import torch.nn.functional as F

        n, h, w = self.count, *size
        boxes = torch.as_tensor(boxes).float()  # float32 places a box within 1e-4 px on a 1,000 px screen
        if boxes.dim() != 3 or boxes.shape[0] != n or boxes.shape[2] != 4:
            raise ValueError(f"boxes must be [{n}, B, 4] for {n} screens, got {list(boxes.shape)}")
        xs = boxes[..., :1] + (boxes[..., 2:3] - boxes[..., :1]) * torch.linspace(0, 1, w + 1)
        ys = boxes[..., 1:2] + (boxes[..., 3:4] - boxes[..., 1:2]) * torch.linspace(0, 1, h + 1)
        b = boxes.shape[1]
        grid = torch.stack([(xs * (2 / self.width) - 1)[:, :, None, :].expand(-1, -1, h + 1, -1),
                            (ys * (2 / self.height) - 1)[:, :, :, None].expand(-1, -1, -1, w + 1)], dim=-1)
        corners = F.grid_sample(self.table, grid.view(n, -1, w + 1, 2), mode="bilinear", padding_mode="border",
                                align_corners=True).view(n, 3, b, h + 1, w + 1)
        sums = corners.diff(dim=-1).diff(dim=-2)  # each cell: its four corners' +/- sum
        area = ((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]) / (w * h)).view(n, 1, b, 1, 1)
        return sums.div_(area).transpose(1, 2)


@dataclass
class PhotoCheck:
    """Re-ranks a windowed search's best candidates by the item's own photo, pixel for pixel.

    Each of the ``candidates`` items nearest in the space is compared, as a ``size`` (height, width)
    thumbnail, with the screen around the window where it scored best, shifted by up to ``margin`` of the
    window's size in ``shifts`` steps per axis (normalised cross-correlation of the colour thumbnails, each
    centred on its mean), then again on a 5 x 5 grid as fine again around their best shift (every candidate,
    or the ``refine`` best by the coarse grid): the best match names the item, and its correlation is the
    score the grounding threshold applies to. Near-twins (one cut in two dark greys) are ranked by the fine
    grid, not the coarse one: a pixel off their photo costs more than the twin's difference. A
    product page shows the catalog photo itself, so once the tower has narrowed 1,000 items to a few, the
    photo settles which (near-identical articles included); a screen without an item matches no photo well.
    Assumes windows of the photos' aspect (as `ScreenWindows.fit` or `ScreenWindows.grid` make them).
    ``crowd`` (None: off) is for windows that do not know the app's layout (`ScreenWindows.grid`): a screen
    where, besides the best candidate's photo, another matches at least ``crowd`` in a window apart from it
    (overlapping by under `CROWD_OVERLAP` of the smaller) shows several items — a feed, a grid — not one
    item's page, and every candidate scores -1.
    With many windows the tower's best window for an item is often not on its photo: `locate` finds each
    candidate's window by its photo instead (the windows to give `match`); ``locate_all`` makes the
    `mmrec.grounding.Grounder` do so (for `ScreenWindows.grid`; off: the tower's best window, as fitted
    windows need).

    For apps whose layout is unknown (`search`, with `locate_all`), three more settings. ``contrast``: the
    correlation is multiplied by ``(min(s, t) / max(s, t)) ** contrast`` of the two contrasts (the root mean
    square of the centred pixels): correlation alone ignores contrast, so a faint photo (a pale top on a pale
    background) correlates highly with a text block or a form of the same rough shape; a product page shows
    the photo at its own contrast. ``crops``: aspects (height / width) at which an app may show a photo cut
    to fit a frame (CSS ``object-fit: cover``: square tiles, tall cards), centre-cropped; each is one more
    template of every photo (`thumbnails` with ``aspect``), searched in windows of that aspect.
    ``smallest``: the narrowest a product page shows its photo, as a share of the screen's width; an item
    whose photo matches best in a narrower window is a card in a feed or a bag's thumbnail, not a page (it
    still counts for ``crowd``, so the windows should reach down to feed cards). ``scales``: factors the fine
    grid also tries the window at (about its centre): windows a ratio apart in width leave a photo up to half
    that ratio off the nearest, and a photo matched at the wrong scale correlates less. ``shortlist``: with
    more candidates than this, `search` keeps the best by thumbnails half as fine before locating them (a
    whole catalogue costs a quarter as much per screen). ``colour`` (None: off): the match is also multiplied
    by ``exp(-(d / colour) ** 2)``, d the distance between the mean colours (0-255 RGB) of photo and screen
    area: a page shows the photo in its own colours, and a grey panel of the right shape is not it. Colour
    scores the shifted match only, not `locate`'s unshifted windows (which only choose the candidates `search`
    matches): a window a little off a dark garment photographed on white loses white border, and its mean
    colour darkens far more than its correlation falls. ``coarse``: `search` locates and matches at thumbnails
    pooled this many times (``size`` over ``coarse``), without ``colour``, then matches its best few again at
    the full ``size``, with it: in a large catalogue many photos are alike at the coarse size (black trousers
    on white), and the detail that tells them apart (a waistband, a print) shows only finer.
    """

    candidates: int = 10
    size: tuple[int, int] = (18, 12)
    margin: float = 0.125
    shifts: int = 7
    refine: int | None = None
    crowd: float | None = None
    locate_all: bool = False
    contrast: float = 0.0
    crops: tuple[float, ...] = ()
    smallest: float | None = None
    scales: tuple[float, ...] = ()
    shortlist: int | None = None
    colour: float | None = None
    coarse: int = 1

    def __post_init__(self) -> None:
        self.size = tuple(int(s) for s in self.size)
        self.crops = tuple(float(a) for a in self.crops)
        self.scales = tuple(float(f) for f in self.scales)
        if (self.candidates < 1 or len(self.size) != 2 or min(self.size) < 2 or not 0 <= self.margin <= 0.5
                or self.shifts < 1 or self.shifts % 2 == 0 or (self.refine is not None and self.refine < 0)
                or (self.crowd is not None and not -1 <= self.crowd <= 1)):
            raise ValueError(f"PhotoCheck needs candidates >= 1, a (height, width) size >= 2, margin in [0, 0.5], an "
                             f"odd number of shifts (the window itself among them), refine None or >= 0 and crowd None "
                             f"or in [-1, 1], got {self.candidates}, {self.size}, {self.margin}, {self.shifts}, "
                             f"{self.refine}, {self.crowd}")
        if not (math.isfinite(self.contrast) and self.contrast >= 0) or any(
                not (math.isfinite(a) and a > 0) for a in self.crops) or (
                self.smallest is not None and not 0 < self.smallest <= 1) or any(
                not 0.5 <= f <= 2 for f in self.scales) or (self.shortlist is not None and self.shortlist < 1) or (
                self.colour is not None and not self.colour > 0) or self.coarse < 1:
            raise ValueError(f"PhotoCheck needs contrast >= 0, crops of positive aspects (height / width), smallest "
                             f"None or in (0, 1], scales in [0.5, 2], shortlist None or >= 1, colour None or > 0 and "
                             f"coarse >= 1, got {self.contrast}, {self.crops}, {self.smallest}, {self.scales}, "
                             f"{self.shortlist}, {self.colour}, {self.coarse}")

    def thumbnails(self, photos: list, aspect: float | None = None) -> torch.Tensor:
        """PIL photos (None for items without one) → float ``[I, 3, h, w]`` thumbnails (area-averaged); with
        ``aspect`` (one of ``crops``), each photo centre-cropped to that aspect first, ``size[1]`` wide."""
        from PIL import Image

        h, w = self.size if aspect is None else (max(2, round(self.size[1] * aspect)), self.size[1])
        out = torch.zeros(len(photos), 3, h, w)
        for k, photo in enumerate(photos):
            if photo is not None:
                photo = photo.convert("RGB") if aspect is None else _centre_crop(photo.convert("RGB"), aspect)
                small = photo.resize((w, h), Image.Resampling.BOX)
                out[k] = torch.from_numpy(np.asarray(small, np.float32).copy()).permute(2, 0, 1)
        return out

    def search(self, screens: torch.Tensor | AreaTable,
               variants: Sequence[tuple[np.ndarray, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Layout-free grounding of screens of one size: ``variants`` pairs ``[K, 4]`` windows with the
        candidates' thumbnails of the windows' aspect (the photos as they are, and cut to each of ``crops``):
        ``[N, C, 3, h, w]`` per screen, or ``[C, 3, h, w]`` shared by every screen (a whole catalogue). With
        more than ``shortlist`` candidates, the ``shortlist`` best by thumbnails half as fine (`_locate` over
        every variant) go on. Each candidate is found by its photo in every variant (`locate`, which scores
        the unshifted windows, without ``colour``); the `SEARCH_MATCHED` best of a screen are matched again with
        shifts (`match`) in every variant (in both lists the `SEARCH_APART` best located apart from the best
        one keep a place, `_with_apart`: look-alikes of one card can fill a list and hide a feed's others), and
        their score is the best of these matches (with ``colour``), every other candidate's -1. Then ``crowd``
        (another photo apart from the best: a feed) and ``smallest`` (its window too narrow for a product page)
        set scores to -1. With ``coarse`` above 1, locating and matching run on thumbnails pooled ``coarse`` times
        and without ``colour`` (a window placed to a coarse pixel takes in border or loses garment), and the
        `SEARCH_DETAILED` best of a screen, and the `SEARCH_DETAILED_EACH` best of each variant (a photo shown
        whole may rank first only among whole matches, below look-alikes of its centre matched by their crops), are
        matched once more at full size (in their best window's variant, with ``colour``): their score is that
        match, every other candidate's -1; ``crowd`` and ``smallest``
        judge both stages. A feed's other cards need not be among those 10, so a feed is told at the coarse
        stage, from every candidate matched there; but there, without colour, a panel of another photo's shape
        in other colours can pass for a second photo. So the `CROWD_CHECKED` best second photos are matched at
        full size as well, and the coarse verdict is overturned where the best matches at least
        `CROWD_CONFIDENT` and none of them within `CROWD_MARGIN_DETAILED` of it (a feed's cards, small and cut
        to their frames, lose more at full size than a page's own photo, so that margin is wider). Returns
        the scores ``[N, C]`` (-1 off the shortlist) and each candidate's window ``[N, C, 4]`` (for those
        matched at full size, the box they matched best in)."""
        scores, where, feed = self.search_feeds(screens, variants)
        return scores.masked_fill(feed[:, None], -1.0), where

    def search_feeds(self, screens: torch.Tensor | AreaTable, variants: Sequence[tuple[np.ndarray, torch.Tensor]]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`search` with the verdict of the coarse stage apart: the scores ``[N, C]`` after ``smallest`` and the
        ``crowd`` verdict at full size, the windows, and which screens ``[N]`` only the coarse stage calls
        feeds (`search` sets all their scores to -1 too). That verdict, made without colour, can rest on a
        panel passing for a second photo; other evidence (the page's title, `mmrec.grounding.Grounder`) may
        overturn it. With ``coarse`` 1 there is no such stage and no screen is marked."""
        if not variants:
            raise ValueError("PhotoCheck.search needs at least one (windows, thumbnails) variant")
        table = screens if isinstance(screens, AreaTable) else AreaTable(screens)
        if self.coarse == 1:
            scores, where, _, _ = self._search(table, variants)
            return self._judged(scores, where, table), where, torch.zeros(len(scores), dtype=torch.bool)
        rough = dataclasses.replace(self, colour=None)  # placed to a coarse pixel, a photo's colours are not yet its
        scores, where, chosen, each = rough._search(table, [(windows, _pooled(thumbnails, self.coarse))
                                                            for windows, thumbnails in variants])
        wide = self._wide(where, table.width)
        crowded, crowders = rough._crowding(table, scores, where, wide)  # [N], [N, k] (-1 where none)
        ranked = scores.masked_fill(~wide, -1.0)
        top = ranked.topk(min(SEARCH_DETAILED, ranked.shape[1]), dim=1).indices  # [N, k]
        live = ranked.gather(1, top) > -1
        # each variant's best (a photo shown whole can rank first among whole matches only, below crops of
        # look-alikes), and a coarse feed's second photos (to overturn the verdict there) are matched too
        each = each.masked_fill(~wide, -1.0)
        found, best_each = each.topk(min(SEARCH_DETAILED_EACH, each.shape[2]), dim=2)  # [V, N, e]
        for more, alive in [(b, f > -1) for b, f in zip(best_each, found)] + [(crowders.clamp(min=0), crowders >= 0)]:
            alive = alive & ~(more[:, :, None] == top[:, None, :]).any(dim=2)
            alive = alive & ~torch.triu(more[:, :, None] == more[:, None, :], diagonal=1).any(dim=1)
            live, top = torch.cat([live, alive], dim=1), torch.cat([top, more], dim=1)
        scores, where = self._detailed(table, variants, top, live, where, chosen)
        judged = self._judged(scores, where, table)
        overturned = self._judged(scores, where, table, CROWD_MARGIN_DETAILED).amax(dim=1) >= CROWD_CONFIDENT
        return judged, where, crowded & ~overturned & (judged > -1).any(dim=1)

    def _wide(self, where: torch.Tensor, width: int) -> torch.Tensor:
        """``[N, C]``: whether each candidate's window ``where`` is wide enough for a product page on a screen
        ``width`` wide (``smallest``; all True without it)."""
        if self.smallest is None:
            return torch.ones(where.shape[:2], dtype=torch.bool)
        return (where[..., 2] - where[..., 0]) >= self.smallest * width * (1 - 1e-6)

    def _judged(self, scores: torch.Tensor, where: torch.Tensor, table: "AreaTable", margin: float = CROWD_MARGIN
                ) -> torch.Tensor:
        """``scores`` ``[N, C]`` after ``crowd`` (another photo apart from the best, within ``margin`` of it: a
        feed) and ``smallest`` (the candidate's window ``where`` too narrow for a product page on the screens of
        ``table``) set some to -1."""
        wide = self._wide(where, table.width)
        return self._uncrowded(table, scores, where, wide, margin).masked_fill(~wide, -1.0)

    def _detailed(self, table: AreaTable, variants: Sequence[tuple[np.ndarray, torch.Tensor]], top: torch.Tensor,
                  live: torch.Tensor, where: torch.Tensor, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``[N, C]`` of the candidates ``top`` (``[N, k]``, where ``live``) matched at full size in their
        window ``where`` of variant ``chosen``, -1 for every other, and the windows ``[N, C, 4]`` (the box each
        of those was matched in at full size). Each is shifted about its window as it is and at the extreme
        ``scales``, then refined (at every scale) a quarter as far about the best: its window was located at
        the coarse size. One found by a cut of its photo is also matched whole, in the window the cut implies
        (`_uncut`), and keeps the better: on coarse thumbnails a photo shown whole can be found by a cut of it
        placed off its middle, too far for the shifts to reach, and then lose to a look-alike matched whole."""
        rows = torch.arange(table.count)[:, None]
        fine = torch.full(top.shape, -1.0)
        spots = top[..., None].expand(-1, -1, 4)
        boxes_found = where.gather(1, spots)  # [N, k, 4]
        factors = (min(self.scales), max(self.scales)) if self.scales else ()
        shifted, closer = dataclasses.replace(self, refine=0), dataclasses.replace(self, refine=None,
                                                                                    margin=self.margin / 4)
        aspects = [thumbnails.shape[-2] / thumbnails.shape[-1] for _, thumbnails in variants]
        whole = where.clone()
        for v in range(1, len(variants)):
            whole = torch.where((chosen == v)[..., None], _uncut(where, aspects[v], aspects[0]), whole)
        on = chosen.gather(1, top)
        passes = [(v, live & (on == v), where) for v in range(len(variants))] + [(0, live & (on > 0), whole)]
        for v, mine, windows in passes:
            thumbnails = variants[v][1]
            first = _marked_first(mine)  # [N, m]
            if first is None:
                continue
            m = first.shape[1]
            picked, sizes = top.gather(1, first), 1 + len(factors)
            boxes = windows[rows, picked]
            boxes = torch.stack([boxes] + [_scaled(boxes, f) for f in factors], dim=2).flatten(1, 2)  # [N, m * sizes]
            templates = _take(thumbnails, rows, picked)
            matched, found = shifted._match(table, boxes, templates.repeat_interleave(sizes, dim=1))
            matched, size = matched.view(len(picked), m, sizes).max(dim=-1)
            found = found.view(len(picked), m, sizes, 4).gather(2, size[..., None, None].expand(-1, -1, 1, 4))[:, :, 0]
            nearer, nearer_found = closer._match(table, found, templates)
            found = torch.where((nearer > matched)[..., None], nearer_found, found)
            matched = torch.maximum(matched, nearer)
            ours = mine.gather(1, first) & (matched > fine.gather(1, first))
            fine.scatter_(1, first, torch.where(ours, matched, fine.gather(1, first)))
            at = first[..., None].expand(-1, -1, 4)
            boxes_found.scatter_(1, at, torch.where(ours[..., None], found, boxes_found.gather(1, at)))
        screen = rows.expand_as(top)[live]  # the live ones name each candidate at most once
        scores, where = torch.full(chosen.shape, -1.0), where.clone()
        scores[screen, top[live]], where[screen, top[live]] = fine[live], boxes_found[live]
        return scores, where

    def _search(self, table: AreaTable, variants: Sequence[tuple[np.ndarray, torch.Tensor]]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`search` at the thumbnails' own size: the scores, windows and which variant each window is of
        (``[N, C]``), and each variant's own match ``[V, N, C]`` (the scores are their best; -1 where the
        candidate was not matched)."""
        n, c = table.count, variants[0][1].shape[-4]
        rows = torch.arange(n)[:, None]
        if self.shortlist is not None and c > self.shortlist:
            located = [self._locate(table, windows, _pooled(thumbnails, 2)) for windows, thumbnails in variants]
            rough, best_variant = torch.stack([scores for _, scores in located]).max(dim=0)  # [N, C]
            rough_where = torch.stack([boxes for boxes, _ in located])[best_variant, rows, torch.arange(c)]
            listed = _with_apart(rough, rough_where, self.shortlist)  # [N, S]
            scores, where, chosen, each = dataclasses.replace(self, shortlist=None)._search(
                table, [(windows, _take(thumbnails, rows, listed)) for windows, thumbnails in variants])
            return (torch.full((n, c), -1.0).scatter(1, listed, scores),
                    torch.zeros(n, c, 4).scatter(1, listed[..., None].expand(-1, -1, 4), where),
                    torch.zeros(n, c, dtype=torch.long).scatter(1, listed, chosen),
                    torch.full((len(variants), n, c), -1.0).scatter(2, listed.expand(len(variants), -1, -1), each))
        located = [self._locate(table, windows, thumbnails) for windows, thumbnails in variants]
        best, chosen = torch.stack([scores for _, scores in located]).max(dim=0)  # [N, C] over [V, N, C]
        where = torch.stack([boxes for boxes, _ in located])[chosen, rows, torch.arange(c)]  # [N, C, 4]
        keep = _with_apart(best, where, min(SEARCH_MATCHED, c))  # [N, M]
        matched = torch.full(keep.shape, -math.inf)  # the located score (no colour) only chose them
        each = torch.full((len(variants), n, c), -1.0)
        for v, ((_, thumbnails), (boxes, _)) in enumerate(zip(variants, located)):
            kept_boxes = boxes[rows, keep]
            scores = self.match(table, kept_boxes, _take(thumbnails, rows, keep), uncrowd=False)  # [N, M]
            each[v].scatter_(1, keep, scores)
            better = scores > matched
            matched = torch.where(better, scores, matched)
            where[rows, keep] = torch.where(better[..., None], kept_boxes, where[rows, keep])
            chosen[rows, keep] = torch.where(better, v, chosen[rows, keep])
        return torch.full_like(best, -1.0).scatter(1, keep, matched), where, chosen, each

    def locate(self, screens: torch.Tensor | AreaTable, windows: np.ndarray | torch.Tensor,
               thumbnails: torch.Tensor) -> torch.Tensor:
        """Each candidate's best window ``[N, C, 4]``: the one of ``windows`` (``[K, 4]``, the same for every
        screen) whose crop correlates best with the candidate's thumbnail (``[N, C, 3, h, w]``), unshifted; for
        layout-free windows, where the tower's best window need not be on the photo."""
        return self._locate(screens, windows, thumbnails)[0]

    def _locate(self, screens: torch.Tensor | AreaTable, windows: np.ndarray | torch.Tensor,
                thumbnails: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`locate`'s windows ``[N, C, 4]`` and their scores ``[N, C]`` (with ``contrast``, without ``colour``);
        ``thumbnails`` may also be ``[C, 3, h, w]``, shared by every screen."""
        table = screens if isinstance(screens, AreaTable) else AreaTable(screens)
        windows = torch.as_tensor(np.asarray(windows), dtype=torch.float32).reshape(-1, 4)
        size = tuple(thumbnails.shape[-2:])
        crops, spread = _centred_with_contrast(table.crops(windows[None].expand(table.count, -1, -1),
                                                           size).flatten(2))  # [N, K, d], [N, K, 4]
        templates, own = _centred_with_contrast(thumbnails.to(crops).flatten(-3))  # [(N,) C, d], [(N,) C, 4]
        n, c, k = table.count, templates.shape[-2], len(windows)
        block = max(1, min(LOCATE_BLOCK, LOCATE_SCORES // max(1, k)))  # candidates scored at once: [block, K]
        best, at = torch.empty(n, c), torch.empty(n, c, dtype=torch.long)
        for i in range(n):  # a shared [C, d] is every screen's
            mine = (templates, own) if templates.dim() == 2 else (templates[i], own[i])
            best[i], at[i] = self._best_windows(*mine, crops[i], spread[i], block)
        return windows[at], best  # [N, C, 4], [N, C]

    def _best_windows(self, templates: torch.Tensor, own: torch.Tensor, crops: torch.Tensor, spread: torch.Tensor,
                      block: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One screen's `_locate`: each candidate's best window (an index into ``crops``) and its score, the
        correlation times ``(min / max contrast) ** contrast`` (`_agreement`), from `_centred_with_contrast`'s
        rows and statistics of the ``[C, d]`` templates and ``[K, d]`` window crops.

        That factor, over every candidate and window, costs more than the correlations; but against a block of
        candidates (taken in order of contrast) a window duller than all of them scores ``corr * (y / x) **
        p`` and one brighter than all ``corr * (x / y) ** p`` (x, y the contrasts): the window's part goes into
        its crop before the products and the candidate's after the best is found, so only the windows within
        the block's band of contrasts are scored pair by pair."""
        c, k, power = len(templates), len(crops), self.contrast  # power 0: every factor is 1
        best, at = torch.empty(c), torch.empty(c, dtype=torch.long)
        by_window = spread[:, 0].argsort()
        spread, crops = spread[by_window], crops[by_window]
        ys = spread[:, 0].contiguous()
        duller, brighter = crops * ys[:, None] ** power, crops / ys.clamp(min=1e-6)[:, None] ** power
        colourless = dataclasses.replace(self, colour=None)
        by_candidate = own[:, 0].argsort()
        for s in range(0, c, block):
            rows = by_candidate[s:s + block]
            xs, mine = own[rows, 0], templates[rows]
            low, high = torch.searchsorted(ys, xs[[0, -1]].contiguous(), right=True).tolist()  # ys[:low] <= every x
            parts = []  # (best score, its window) over each range of windows
            if low:
                score, where = (mine @ duller[:low].T).max(dim=1)
                parts.append((score / xs.clamp(min=1e-6) ** power, where))
            if high > low:
                score, where = (mine @ crops[low:high].T).mul_(_agreement(
                    own[rows, None], spread[None, low:high], colourless)).max(dim=1)
                parts.append((score, where + low))
            if high < k:
                score, where = (mine @ brighter[high:].T).max(dim=1)
                parts.append((score * xs ** power, where + high))
            scores, wheres = torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])
            part = scores.argmax(dim=0, keepdim=True)
            best[rows], at[rows] = scores.gather(0, part)[0], by_window[wheres.gather(0, part)[0]]
        return best, at

    def match(self, screens: torch.Tensor | AreaTable, boxes: np.ndarray | torch.Tensor,
              thumbnails: torch.Tensor, uncrowd: bool = True) -> torch.Tensor:
        """Best correlation ``[N, C]`` of each screen's candidates' thumbnails (``[N, C, 3, h, w]``) with the screen
        (``[N, 3, H, W]``, one size, or their `AreaTable`) around the candidate's window (``[N, C, 4]``): the window
        shifted by up to ``margin`` of its size in ``shifts`` steps per axis (finer than the thumbnail's pixels),
        each shift cut out at the thumbnail size. ``uncrowd`` False: ``crowd`` is not applied (`search` applies
        it once over every variant)."""
        table = screens if isinstance(screens, AreaTable) else AreaTable(screens)
        boxes = torch.as_tensor(np.asarray(boxes), dtype=torch.float32)
        best = self._match(table, boxes, thumbnails)[0]
        return self._uncrowded(table, best, boxes) if uncrowd else best

    def _match(self, table: AreaTable, boxes: torch.Tensor, thumbnails: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """`match`'s scores ``[N, C]`` (without ``crowd``) and the shifted (and rescaled) box each was found in
        ``[N, C, 4]``."""
        n, c = boxes.shape[:2]
        # each candidate against every shift of its own window, cut on its own screen only
        shifted = _shifted(boxes, self.margin, self.shifts)  # [N, C, S, 4]
        size = tuple(thumbnails.shape[-2:])
        patches, spread = _centred_with_contrast(table.crops(shifted.reshape(n, -1, 4), size).reshape(
            n, c, self.shifts ** 2, -1))  # [N, C, S, d], [N, C, S, 4]
        templates, own = _centred_with_contrast(thumbnails.to(patches).flatten(2))  # [N, C, d], [N, C]
        best, at = (torch.einsum("ncsd,ncd->ncs", patches, templates)
                    * _agreement(spread, own[:, :, None, :], self)).max(dim=-1)  # [N, C] over [N, C, S]
        found = shifted.gather(2, at[..., None, None].expand(-1, -1, 1, 4))[:, :, 0]  # [N, C, 4]
        if self.refine == 0 or self.shifts == 1:
            return best, found
        # again on a grid as fine again around their best shift: a pixel off costs near-twins
        k = c if self.refine is None else min(self.refine, c)
        top = best.topk(k, dim=1).indices  # [N, k]
        spots = top[..., None].expand(-1, -1, 4)
        start = found.gather(1, spots)  # [N, k, 4]
        if self.scales:  # the start window and its rescalings about its centre: [N, k * (1 + scales), 4]
            start = torch.stack([start] + [_scaled(start, f) for f in self.scales], dim=2).flatten(1, 2)
        moved = _shifted(start, self.margin / (self.shifts - 1), 5).view(n, k, -1, 4)  # [N, k, 25 * (1 + scales), 4]
        crops, spread = _centred_with_contrast(table.crops(moved.reshape(n, -1, 4), size).reshape(
            n, k, moved.shape[2], -1))
        refined, at = (torch.einsum("nksd,nkd->nks", crops, templates.gather(
            1, top[:, :, None].expand(-1, -1, templates.shape[-1])))
            * _agreement(spread, own.gather(1, top[..., None].expand(-1, -1, own.shape[-1]))[:, :, None], self)
        ).max(dim=-1)  # [N, k]
        better = refined > best.gather(1, top)
        moved_best = moved.gather(2, at[..., None, None].expand(-1, -1, 1, 4))[:, :, 0]  # [N, k, 4]
        found = found.scatter(1, spots, torch.where(better[..., None], moved_best, found.gather(1, spots)))
        return best.scatter(1, top, torch.maximum(best.gather(1, top), refined)), found

    def _uncrowded(self, table: "AreaTable", scores: torch.Tensor, boxes: torch.Tensor,
                   eligible: torch.Tensor | None = None, margin: float = CROWD_MARGIN) -> torch.Tensor:
        """``[N, C]`` scores, all -1 on screens `_crowding` finds crowded (with ``crowd`` None: unchanged)."""
        return scores.masked_fill(self._crowding(table, scores, boxes, eligible, margin)[0][:, None], -1.0)

    def _crowding(self, table: "AreaTable", scores: torch.Tensor, boxes: torch.Tensor,
                  eligible: torch.Tensor | None = None, margin: float = CROWD_MARGIN
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Which screens ``[N]`` are crowded — besides the best candidate (among ``eligible`` ones, if given),
        another matches at least ``crowd`` in a window (``[N, C, 4]``) overlapping the best one's by under
        `CROWD_OVERLAP` of the smaller: two photos side by side, a feed — and the `CROWD_CHECKED` best such
        other candidates ``[N, k]`` (-1 where fewer; never crowded with ``crowd`` None). A feed shows its photos
        alike, so the other must also match within ``margin`` of the best, in a window at least `CROWD_SIZE` of
        its width: a line of dark text on a white page can match a small photo of a dark garment on white, never
        as well as the page's own photo matches. And it must not be flat inside its window on the screens of
        ``table`` (`_flat_inside`)."""
        n = len(scores)
        if self.crowd is None or scores.shape[1] < 2:
            return torch.zeros(n, dtype=torch.bool), torch.full((n, 1), -1)
        ranked = scores if eligible is None else scores.masked_fill(~eligible, -2.0)
        first = ranked.argmax(dim=1)  # [N]
        apart = _apart(boxes, first)
        width = boxes[..., 2] - boxes[..., 0]
        alike = (width >= CROWD_SIZE * width.gather(1, first[:, None])) & (
            scores >= ranked.gather(1, first[:, None]) - margin)
        second = apart & alike & (scores >= self.crowd)
        second &= ~_flat_inside(table, boxes, second)
        others = scores.masked_fill(~second, -math.inf)
        found, crowders = others.topk(min(CROWD_CHECKED, others.shape[1]), dim=1)
        return found[:, 0] > -math.inf, crowders.masked_fill(found == -math.inf, -1)


def _flat_inside(table: AreaTable, boxes: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """``[N, C]``: which of the windows ``boxes`` (``[N, C, 4]``) marked in ``which`` are flat inside — their
    inside (without `CROWD_INNER` of each side) holds under `CROWD_FLAT` of the whole window's contrast. A
    window that reaches a little way onto a page's photo (on a dark page, the photo's white ground) can
    correlate with a dark garment photographed on white through that edge alone; a second photo on a feed
    has its own garment inside its window."""
    flat = torch.zeros_like(which)
    order = _marked_first(which)  # [N, m]
    if order is None:
        return flat
    picked = boxes.gather(1, order[..., None].expand(-1, -1, 4))  # [N, m, 4]
    size = (picked[..., 2:] - picked[..., :2]).repeat(1, 1, 2) * torch.tensor([1.0, 1.0, -1.0, -1.0])
    inside = picked + CROWD_INNER * size
    h, w = 12, 8  # coarse: the garment-scale structure, not texture or compression noise

    def contrast(b: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        crops = table.crops(b, shape).flatten(3)  # [N, m, 3, h * w]: centred per channel, so a flat coloured
        return (crops - crops.mean(-1, keepdim=True)).pow(2).mean((-2, -1)).sqrt()  # ground has no contrast

    ratio = contrast(inside, (h - 4, w - 2)) / contrast(picked, (h, w)).clamp(min=1e-6)
    marked = which.gather(1, order)
    return flat.scatter(1, order, marked & (ratio < CROWD_FLAT))


def _apart(boxes: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """``[N, C]``: which windows ``boxes`` (``[N, C, 4]``) are apart from each screen's window ``first`` (``[N]``,
    a column): they overlap it by under `CROWD_OVERLAP` of the smaller of the two (two photos, not one seen twice)."""
    best_box = boxes[torch.arange(len(boxes)), first][:, None, :]  # [N, 1, 4]
    lo, hi = torch.maximum(boxes[..., :2], best_box[..., :2]), torch.minimum(boxes[..., 2:], best_box[..., 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=-1)  # [N, C]
    area = (boxes[..., 2:] - boxes[..., :2]).prod(dim=-1)  # [N, C]
    return inter < CROWD_OVERLAP * torch.minimum(area, area.gather(1, first[:, None]))


def _with_apart(scores: torch.Tensor, where: torch.Tensor, k: int) -> torch.Tensor:
    """``[N, k]``: each screen's ``k`` best candidates by ``scores`` (``[N, C]``), with the `SEARCH_APART` best of
    those located (``where``, ``[N, C, 4]``) apart from the best one's window among them (as `PhotoCheck`'s
    ``crowd`` judges apart, in a window at least `CROWD_SIZE` of its width) in place of the weakest others.
    Photos alike to one card of a feed (a dark page of black garments) can fill every place, leaving out the
    feed's other cards, and a photo never matched cannot be seen as a second photo."""
    n, c = scores.shape
    if k >= c:
        return scores.topk(c, dim=1).indices
    first = scores.argmax(dim=1)
    width = where[..., 2] - where[..., 0]
    apart = _apart(where, first) & (width >= CROWD_SIZE * width.gather(1, first[:, None]))
    extra = min(SEARCH_APART, k // 2, c)
    chosen = scores.masked_fill(~apart, -math.inf).topk(extra, dim=1)
    priority = scores.clone()
    rows = torch.arange(n)[:, None].expand_as(chosen.indices)
    lift = chosen.values > -math.inf
    priority[rows[lift], chosen.indices[lift]] = math.inf  # ties among them: topk keeps them all (extra <= k)
    return priority.topk(k, dim=1).indices


# (id of the shared thumbnails, factor) -> (a weak reference to them, their version, their pooled copy); an id is
# reused only once its tensor is gone, which the weak reference tells
_POOLED: dict[tuple[int, int], tuple[weakref.ReferenceType, int, torch.Tensor]] = {}


def _marked_first(marks: torch.Tensor) -> torch.Tensor | None:
    """``[N, m]``: each row's columns with its marked ones (``marks`` ``[N, C]`` bool) first, in order, m the most
    marked in any row (so a row with fewer ends in unmarked columns); None where nothing is marked."""
    m = int(marks.sum(dim=1).max()) if marks.numel() else 0
    return torch.sort(marks.int(), dim=1, descending=True, stable=True).indices[:, :m] if m else None


def _take(thumbnails: torch.Tensor, rows: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``[N, S, 3, h, w]``: each screen's ``chosen`` candidates (``[N, S]``) of per-screen ``[N, C, 3, h, w]`` or
    shared ``[C, 3, h, w]`` thumbnails (``rows``: ``[N, 1]`` screen indices)."""
    return thumbnails[chosen] if thumbnails.dim() == 4 else thumbnails[rows, chosen]


def _pooled(thumbnails: torch.Tensor, factor: int) -> torch.Tensor:
    """``[..., 3, h, w]`` thumbnails area-averaged ``factor`` times smaller (at least 2 x 2). Shared ``[C, 3, h, w]``
    thumbnails (a whole catalogue's, the same tensor for every screen) are pooled once and the result kept while
    that tensor lives unchanged (`_POOLED`): pooling a catalogue again for every screen is a sizeable share of a
    layout-free search."""
    import torch.nn.functional as F

    shared = thumbnails.dim() == 4 and not thumbnails.is_inference()  # an inference tensor keeps no version
    key = (id(thumbnails), factor)
    if shared and key in _POOLED:
        source, version, pooled = _POOLED[key]
        if source() is thumbnails and version == thumbnails._version:
            return pooled
    h, w = thumbnails.shape[-2:]
    size = (max(2, round(h / factor)), max(2, round(w / factor)))
    pooled = F.adaptive_avg_pool2d(thumbnails.flatten(0, -4), size).view(*thumbnails.shape[:-2], *size)
    if shared:
        _POOLED.pop(key, None)
        while len(_POOLED) >= POOLED_KEPT:
            _POOLED.pop(next(iter(_POOLED)))  # the oldest
        _POOLED[key] = (weakref.ref(thumbnails), thumbnails._version, pooled)
    return pooled


def _centre_crop(photo: Any, aspect: float) -> Any:
    """A PIL photo cut to ``aspect`` (height / width) about its centre, as CSS ``object-fit: cover`` shows it."""
    width, height = photo.size
    if height / width > aspect:
        top = round((height - width * aspect) / 2)
        return photo.crop((0, top, width, height - top))
    left = round((width - height / aspect) / 2)
    return photo.crop((left, 0, width - left, height))


def _uncut(boxes: torch.Tensor, cut: float, photo: float) -> torch.Tensor:
    """``[..., 4]`` windows of a photo centre-cropped to aspect ``cut`` (height / width) → the windows the whole
    photo (aspect ``photo``) fills when that cut of it fills them: the same centre, grown along the side the
    cut shortened."""
    centre, size = (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]
    grown = torch.stack([size[..., 0], size[..., 0] * photo] if cut < photo else
                        [size[..., 1] / photo, size[..., 1]], dim=-1)
    return torch.cat([centre - grown / 2, centre + grown / 2], dim=-1)


def _scaled(boxes: torch.Tensor, factor: float) -> torch.Tensor:
    """``[..., 4]`` boxes scaled by ``factor`` about their centres."""
    centre, half = (boxes[..., :2] + boxes[..., 2:]) / 2, (boxes[..., 2:] - boxes[..., :2]) * (factor / 2)
    return torch.cat([centre - half, centre + half], dim=-1)


def _shifted(boxes: torch.Tensor, reach: float, steps: int) -> torch.Tensor:
    """``[..., 4]`` boxes → ``[..., steps ** 2, 4]``: each moved on a ``steps`` x ``steps`` grid (rows by y) by up
    to ``reach`` of its own width and height either way (one step: the box itself)."""
    offsets = torch.linspace(-reach, reach, steps) if steps > 1 else torch.zeros(1)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    size = torch.stack([boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]], dim=-1)  # [..., 2]
    move = torch.stack([dx.flatten(), dy.flatten()], dim=1) * size[..., None, :]  # [..., S, 2]
    return boxes[..., None, :] + torch.cat([move, move], dim=-1)


def _centred_with_contrast(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of colour crops (channel-major ``3 * h * w``) minus their mean, to unit length (their dot products
    are correlations), and each row's statistics ``[..., 4]``: its contrast (the root mean square of its
    centred values) and its mean colour."""
    centred = x - x.mean(-1, keepdim=True)
    norm = torch.linalg.vector_norm(centred, dim=-1, keepdim=True)  # one pass, nothing squared is kept
    stats = torch.cat([norm / math.sqrt(x.shape[-1]), x.unflatten(-1, (3, -1)).mean(-1)], dim=-1)
    return centred.div_(norm.clamp_(min=1e-12)), stats


def _agreement(a: torch.Tensor, b: torch.Tensor, check: "PhotoCheck") -> torch.Tensor:
    """How far two broadcast `_centred_with_contrast` statistics agree, in (0, 1]: ``(min / max contrast) **
    check.contrast`` times ``exp(-(colour distance / check.colour) ** 2)`` (1 for a setting that is off)."""
    factor = torch.ones(())
    if check.contrast:  # in place: the tensors are fresh, and as large as the scores they scale
        x, y = a[..., 0], b[..., 0]
        factor = torch.minimum(x, y).div_(torch.maximum(x, y).clamp_(min=1e-6)).clamp_(min=0)
        if check.contrast != 1:
            factor.pow_(check.contrast)
    if check.colour is not None:
        factor = factor * torch.exp(-((a[..., 1:] - b[..., 1:]).pow(2).sum(-1) / check.colour ** 2))
    return factor
