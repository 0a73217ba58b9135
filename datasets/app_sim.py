"""A shopping-app screen-recording simulator driven by real purchase sequences, with exact ground truth.

One user's purchases (item codes in time order) drive a session: the user lands on the home feed, goes
to a product grid, scrolls to the item, sometimes opens other items' pages first (distractor views),
opens the item's page, dwells, adds it to the bag; after each basket she opens the bag, checks out and
places the order. The result is a `Session`:

- ``states``: contiguous `ScreenState` intervals ``[start, end)`` in seconds (every boundary a whole
  frame, ``k / fps``), each of kind ``home | grid | product | cart | checkout`` with the item on screen
  (product pages) and the items, scroll movement, style seed and tap point needed to redraw it;
- ``events``: `LogEvent` rows as an app's logs would have them (``click`` on a card, ``view`` of a
  product page, ``cart`` on add-to-bag, ``purchase`` per item on placing an order — the names of
  `mmrec.data.KINDS`).

`render_frames` draws the session at its fps (scrolling, page slides, a touch mark or mouse pointer,
notification banners, JPEG noise) one frame at a time; `write_recording` encodes it to
``recording.mp4`` (PyAV), optionally webdataset frame shards, and ``truth.json`` (`load_truth` reads it
back); `record_sequence` does both for one purchase sequence. `items_on_screen` says which items a frame
shows (product page, visible grid cards, bag).
`sessions_from_purchases` picks real purchase sequences from an `Interactions` table.

The timeline depends only on the catalog, the sequence and the *timeline* settings of `SimConfig`; the
*noise* settings (notifications, cursor, JPEG quality) are applied when rendering, so one session can be
rendered under several noise settings (calibrate on one, test on another).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np
from PIL import Image

from mmrec.config import to_dict
from mmrec.data import KINDS, Catalog, Interactions
from mmrec.datasets import screens
from mmrec.io import atomic_path, atomic_write_text
from mmrec.skips import Skips

logger = logging.getLogger(__name__)

SCREEN_KINDS = ("home", "grid", "product", "cart", "checkout")
EVENT_KINDS = ("click", "view", "cart", "purchase")
TRUTH_FORMAT = "mmrec-app-recording"
TRUTH_VERSION = 1
# Catalog attributes that name an item's product type (H&M, synthetic world), for similar distractors.
TYPE_ATTRIBUTES = ("product_type_name", "category")
SHARD_PREFIX = "frames"  # frame shards of a recording: frames-000000.tar, ...
_MPEG4_BITS_PER_PIXEL = 0.25  # mpeg4 has no crf; its bit rate is this many bits per pixel per frame
_NOTIFICATION_TEXTS = (
    "Anna: are we still on for dinner tonight?", "Your parcel is out for delivery", "Meeting moved to 3 pm",
    "Breaking: markets close higher", "Rain expected from 4 pm", "You received $25.00", "New message from Tom",
    "Reminder: dentist tomorrow 9:30", "Flash sale ends in 2 hours", "Ben liked your photo",
)


# ------------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class SimConfig:
    """Settings of a simulated recording; `mmrec.config.from_dict` builds it from a mapping, rejecting unknown keys.

    Timeline (what happens when; changes the `Session`): ``seed``; ``fps`` (frames per second, an
    integer so every frame time ``i / fps`` is exact; phones record at 30–60); ``width`` × ``height``
    (even, for yuv420p); ``dwell_*`` ``(low, high)`` seconds a user stays on a screen of that kind,
    drawn log-uniformly (``dwell_product`` for items then bought, ``dwell_distractor`` for items only
    looked at, ``dwell_back`` on a grid after coming back to it, ``dwell_grid`` after scrolling);
    ``scroll_speed`` px/s range; ``grid_items`` cards per grid; ``distractors`` other product pages
    opened before each bought item; ``similar_share`` chance that a grid or distractor item has the
    bought item's product type; ``basket_size`` items per order when no purchase timestamps are given
    (with timestamps, items bought on the same timestamp form one basket, split at ``max_basket``);
    ``restyle_each_screen`` (False: one app look per session; True: a new theme and layout jitter
    per screen); ``tap_seconds`` how long a tap is visible before the screen changes.

    Noise (applied by `render_frames`; re-render one session with different values):
    ``notification_prob`` chance per screen state of a notification banner, shown for
    ``notification_seconds``; ``cursor`` ``"touch"`` (a touch mark at taps and drags), ``"arrow"`` (a
    mouse pointer always visible) or ``"none"``; ``jpeg_quality`` ``(low, high)`` JPEG round-trip quality
    drawn per screen state, or None for none; ``transition_seconds`` how long a new screen takes to slide
    in over the old one (0: a cut; the frames of a slide belong to the new state).

    Output (`write_recording`): ``codec`` (``libx264`` or ``mpeg4``), ``crf`` (libx264 quality; mpeg4 runs at
    a fixed 0.25 bit per pixel per frame),
    ``keyframe_interval`` frames (0: one per second), ``frame_shards`` (also write webdataset shards of
    JPEG frames), ``frames_per_shard``, ``shard_jpeg_quality``.
    """

    seed: int = 0
    fps: int = 30
    width: int = 360
    height: int = 640
    dwell_home: tuple[float, float] = (1.5, 4.0)
    dwell_grid: tuple[float, float] = (1.0, 3.0)
    dwell_back: tuple[float, float] = (0.5, 1.5)
    dwell_product: tuple[float, float] = (3.0, 8.0)
    dwell_distractor: tuple[float, float] = (1.0, 4.0)
    dwell_cart: tuple[float, float] = (1.5, 4.0)
    dwell_checkout: tuple[float, float] = (2.0, 5.0)
    dwell_confirmation: tuple[float, float] = (1.0, 2.5)
    scroll_speed: tuple[float, float] = (400.0, 1200.0)
    grid_items: tuple[int, int] = (8, 16)
    distractors: tuple[int, int] = (0, 2)
    similar_share: float = 0.5
    basket_size: tuple[int, int] = (1, 3)
    max_basket: int = 6
    restyle_each_screen: bool = False
    tap_seconds: float = 0.2
    notification_prob: float = 0.1
    notification_seconds: tuple[float, float] = (1.5, 3.5)
    cursor: Literal["touch", "arrow", "none"] = "touch"
    jpeg_quality: tuple[int, int] | None = (50, 90)
    transition_seconds: float = 0.25
    codec: Literal["libx264", "mpeg4"] = "libx264"
    crf: int = 23
    keyframe_interval: int = 0
    frame_shards: bool = False
    frames_per_shard: int = 1000
    shard_jpeg_quality: int = 90

    def __post_init__(self) -> None:
        def fail(name: str, problem: str) -> None:
            raise ValueError(f"SimConfig.{name}: {problem}, got {getattr(self, name)!r}")

        for name in ("seed", "fps", "width", "height", "max_basket", "crf", "keyframe_interval",
                     "frames_per_shard", "shard_jpeg_quality"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                fail(name, "must be an integer")
        if not 1 <= self.fps <= 240:
            fail("fps", "must be in [1, 240] frames per second")
        for name in ("width", "height"):
            if getattr(self, name) % 2 or getattr(self, name) < 120:
                fail(name, "must be even and >= 120 pixels (yuv420p video)")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("dwell_") or f.name in ("scroll_speed", "notification_seconds"):
                if len(value) != 2 or not 0 < value[0] <= value[1] or not math.isfinite(value[1]):
                    fail(f.name, "must be a (low, high) range with 0 < low <= high")
        for name in ("grid_items", "distractors", "basket_size"):
            low, high = getattr(self, name)
            if not 0 <= low <= high or (name != "distractors" and low < 1):
                fail(name, "must be a (low, high) integer range with 0 <= low <= high (>= 1 for counts of items)")
        for name in ("similar_share", "notification_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "must be a probability in [0, 1]")
        if self.max_basket < 1:
            fail("max_basket", "must be >= 1")
        for name in ("tap_seconds", "transition_seconds"):
            if not 0 <= getattr(self, name) <= 2:
                fail(name, "must be in [0, 2] seconds")
        if self.cursor not in ("touch", "arrow", "none"):
            fail("cursor", "must be 'touch', 'arrow' or 'none'")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 95:
            fail("jpeg_quality", "must be None or a (low, high) range within [1, 95]")
        if self.codec not in ("libx264", "mpeg4"):
            fail("codec", "must be 'libx264' or 'mpeg4'")
        if not 0 <= self.crf <= 51:
            fail("crf", "must be in [0, 51]")
        if self.keyframe_interval < 0 or self.frames_per_shard < 1:
            fail("keyframe_interval" if self.keyframe_interval < 0 else "frames_per_shard", "out of range")
        if not 1 <= self.shard_jpeg_quality <= 95:
            fail("shard_jpeg_quality", "must be in [1, 95]")

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the screen in pixels."""
        return (self.width, self.height)


# ------------------------------------------------------------------------------------------ session

@dataclass(frozen=True)
class ScreenState:
    """What the screen shows during ``[start, end)`` seconds.

    ``kind`` is one of `SCREEN_KINDS`; ``item`` the catalog code of the product page's item (None on
    other screens); ``items`` the catalog codes on a grid, home feed or cart in display order;
    ``scroll`` the offsets (px) the page scrolls from and to during the first ``scroll_seconds``;
    ``tap`` the screen point tapped at the end (None: no tap); ``style`` the seed of the screen's look;
    ``variant`` ``"placed"`` for the order confirmation (a ``checkout`` state) else ``""``;
    ``heading`` a grid's title.
    """

    start: float
    end: float
    kind: str
    item: int | None = None
    items: tuple[int, ...] = ()
    scroll: tuple[float, float] = (0.0, 0.0)
    scroll_seconds: float = 0.0
    tap: tuple[int, int] | None = None
    style: int = 0
    variant: str = ""
    heading: str = ""

    def offset_at(self, t: float) -> float:
        """Scroll offset at time ``t`` (smooth start and stop, then still)."""
        a, b = self.scroll
        if self.scroll_seconds <= 0 or a == b:
            return b
        x = min(1.0, max(0.0, (t - self.start) / self.scroll_seconds))
        return a + (b - a) * x * x * (3 - 2 * x)


@dataclass(frozen=True)
class LogEvent:
    """An app log row: ``timestamp`` seconds from the session start, ``kind`` in `EVENT_KINDS`, item code."""

    timestamp: float
    kind: str
    item: int | None


@dataclass
class Session:
    """A simulated session: contiguous screen states, log events, the purchase sequence behind it."""

    states: list[ScreenState]
    events: list[LogEvent]
    item_sequence: tuple[int, ...]
    fps: int
    size: tuple[int, int]
    seed: int
    user_id: str | None = None

    @property
    def n_frames(self) -> int:
        """Frames of the recording: one per ``1 / fps`` from 0 to the end of the last state."""
        return round(self.duration * self.fps)

    @property
    def duration(self) -> float:
        """Seconds from the start of the first state to the end of the last."""
        return self.states[-1].end if self.states else 0.0

    def frame_range(self, state: ScreenState) -> range:
        """Indices of the frames that show ``state``."""
        return range(round(state.start * self.fps), round(state.end * self.fps))

    def product_per_frame(self) -> np.ndarray:
        """The item whose product page each frame shows, -1 off product pages (`mmrec.grounding.NO_ITEM`)."""
        out = np.full(self.n_frames, -1, np.int64)
        for state in self.states:
            if state.kind == "product":
                out[self.frame_range(state)] = state.item
        return out

    def state_at(self, t: float) -> ScreenState:
        """The state on screen at time ``t`` seconds."""
        frame = math.floor(t * self.fps + 1e-6)
        for state in self.states:
            if frame in self.frame_range(state):
                return state
        raise ValueError(f"time {t} s is outside the session [0, {self.duration})")

    def to_dict(self, catalog: Catalog | None = None) -> dict[str, Any]:
        """JSON-ready dict; with ``catalog``, every item code also gets its external id (``item_id``)."""
        def ident(code: int | None) -> dict:
            return {} if catalog is None or code is None else {"item_id": str(catalog.ids[code])}

        return {
            "fps": self.fps, "width": self.size[0], "height": self.size[1], "seed": self.seed,
            "user_id": self.user_id, "n_frames": self.n_frames, "duration": self.duration,
            "item_sequence": list(self.item_sequence),
            **({} if catalog is None else {"item_ids": [str(catalog.ids[i]) for i in self.item_sequence]}),
            "states": [{**dataclasses.asdict(s), "scroll": list(s.scroll), "items": list(s.items),
                        "tap": None if s.tap is None else list(s.tap), **ident(s.item)} for s in self.states],
            "events": [{**dataclasses.asdict(e), **ident(e.item)} for e in self.events],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Session":
        """Inverse of `to_dict` (external ids are ignored; codes are kept)."""
        state_fields = {f.name for f in dataclasses.fields(ScreenState)}
        states = []
        for s in data["states"]:
            s = {k: v for k, v in s.items() if k in state_fields}
            s["items"] = tuple(s.get("items", ()))
            s["scroll"] = tuple(s.get("scroll", (0.0, 0.0)))
            s["tap"] = None if s.get("tap") is None else tuple(s["tap"])
            states.append(ScreenState(**s))
        events = [LogEvent(e["timestamp"], e["kind"], e["item"]) for e in data["events"]]
        return cls(states, events, tuple(data["item_sequence"]), int(data["fps"]),
                   (int(data["width"]), int(data["height"])), int(data["seed"]), data.get("user_id"))


# ------------------------------------------------------------------------------- purchase sequences

@dataclass(frozen=True)
class PurchaseSequence:
    """One user's purchases in time order: item codes (into the interactions' item vocabulary) and
    their Unix timestamps."""

    user: int
    user_id: str
    items: np.ndarray
    timestamps: np.ndarray


def sessions_from_purchases(interactions: Interactions, n: int, min_len: int = 2, seed: int = 0, *,
                            max_len: int | None = None) -> list[PurchaseSequence]:
    """``n`` users drawn at random (seeded) among those with at least ``min_len`` purchases, each with
    their purchases sorted by time (ties in table order). The same item bought more than once on one
    timestamp (several units) counts once. ``max_len`` keeps each chosen user's most recent purchases
    (it may be below ``min_len``: users with long histories, their last few purchases). Fewer than
    ``n`` sequences come back (with a warning) when fewer users qualify; none qualifying is an error."""
    if n < 1 or min_len < 1 or (max_len is not None and max_len < 1):
        raise ValueError(f"need n, min_len and max_len >= 1, got n={n}, min_len={min_len}, max_len={max_len}")
    rows = np.flatnonzero(interactions.kinds == KINDS.index("purchase"))
    order = rows[np.lexsort((rows, interactions.timestamps[rows], interactions.users[rows]))]
    users, items, times = interactions.users[order], interactions.items[order], interactions.timestamps[order]
    # keep the first of repeated (user, item, timestamp) rows: several units of one purchase
    _, first = np.unique(np.stack([users, items, times], axis=1), axis=0, return_index=True)
    keep = np.zeros(len(order), bool)
    keep[first] = True
    users, items, times = users[keep], items[keep], times[keep]
    bounds = np.flatnonzero(np.diff(users)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(users)]
    eligible = [(s, e) for s, e in zip(starts, ends) if len(users) and e - s >= min_len]
    if not eligible:
        raise ValueError(f"no user has {min_len} or more purchases ({len(rows)} purchase rows)")
    if len(eligible) < n:
        logger.warning("only %d users have >= %d purchases; returning %d sequences, not %d",
                       len(eligible), min_len, len(eligible), n)
    rng = np.random.default_rng([int(seed), 11])
    picked = sorted(rng.choice(len(eligible), size=min(n, len(eligible)), replace=False).tolist())
    out = []
    for k in picked:
        s, e = eligible[k]
        if max_len is not None:
            s = max(s, e - max_len)
        u = int(users[s])
        out.append(PurchaseSequence(u, str(interactions.user_ids[u]), items[s:e].copy(), times[s:e].copy()))
    return out


# ------------------------------------------------------------------------------------- prices, photos

def catalog_for_sequences(catalog: Catalog, interactions: Interactions, n_sequences: int, n_items: int, *,
                          seed: int = 0, min_len: int = 2, max_len: int | None = 4
                          ) -> tuple[Catalog, list[PurchaseSequence], Interactions]:
    """A sub-catalog for simulated sessions: ``n_items`` items with photos, those bought in ``n_sequences``
    purchase sequences drawn from ``interactions`` (as `sessions_from_purchases` draws them) first, the rest
    drawn at random (seeded). Returns the sub-catalog, the sequences in its codes, and the interactions on
    its items re-coded into it (users keep their codes). All the sequences' items are kept even when
    they are more than ``n_items`` (logged)."""
    has_photo = np.array([p is not None for p in catalog.image_paths], bool)
    with_photo = interactions.select(has_photo[interactions.items])
    sequences = sessions_from_purchases(with_photo, n_sequences, min_len=min_len, seed=seed, max_len=max_len)
    bought = list(dict.fromkeys(int(i) for s in sequences for i in s.items))
    if len(bought) > n_items:
        logger.warning("the %d purchase sequences hold %d items, more than the %d asked for: the catalog has "
                       "them all", n_sequences, len(bought), n_items)
    rng = np.random.default_rng([seed, 5])
    others = rng.permutation(np.setdiff1d(np.flatnonzero(has_photo), bought))[:max(0, n_items - len(bought))]
    codes = np.array(bought + sorted(others.tolist()), np.int64)
    new = {int(c): k for k, c in enumerate(codes)}
    sequences = [PurchaseSequence(s.user, s.user_id, np.array([new[int(i)] for i in s.items]), s.timestamps)
                 for s in sequences]
    remap = np.full(len(catalog), -1, np.int64)
    remap[codes] = np.arange(len(codes))
    rows = interactions.select(remap[interactions.items] >= 0)
    sub = catalog.subset(codes)
    on_items = Interactions(rows.users, remap[rows.items], rows.user_ids, np.asarray(sub.ids), rows.timestamps,
                            rows.kinds, rows.weights)
    return sub, sequences, on_items


def item_price(catalog: Catalog, code: int) -> float:
    """The shop price of an item: the catalog's ``price`` attribute where it has one, else a stable price
    derived from the item id (``$4.99``–``$99.99``; H&M's own prices are normalised and not kept)."""
    if "price" in catalog.attributes:
        value = float(catalog.attributes["price"][code])
        if math.isfinite(value) and value >= 0:
            return round(value, 2)
    digest = int(hashlib.sha256(str(catalog.ids[code]).encode()).hexdigest()[:8], 16)
    return float(5 + digest % 95) - 0.01


class PhotoCache:
    """Item photos loaded on demand (reduced-size JPEG decoding) and kept in a small LRU cache.

    A missing image path gives None (the screens draw a placeholder); a file that does not open or decode
    is skipped the same way, logged once and counted in ``skipped``.
    """

    def __init__(self, catalog: Catalog, max_size: tuple[int, int], capacity: int = 64) -> None:
        self.catalog, self.max_size, self.capacity = catalog, max_size, capacity
        self._cache: OrderedDict[int, Image.Image | None] = OrderedDict()
        self.skipped = Skips(max_examples=1)  # {item id: photo loads that failed}

    def __call__(self, code: int) -> Image.Image | None:
        if code in self._cache:
            self._cache.move_to_end(code)
            return self._cache[code]
        photo = self._load(code)
        self._cache[code] = photo
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return photo

    def _load(self, code: int) -> Image.Image | None:
        path = self.catalog.image_paths[code]
        if path is None:
            return None
        try:
            with Image.open(path) as im:
                im.draft("RGB", self.max_size)
                photo = im.convert("RGB")
            photo.thumbnail(self.max_size, Image.Resampling.BILINEAR)
            return photo
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            item_id = str(self.catalog.ids[code])
            if item_id not in self.skipped:
                logger.warning("item %s: image %s does not load (%s); drawing a placeholder", item_id, path, err)
            self.skipped.add(item_id, f"{path}: {err}")
            return None


# --------------------------------------------------------------------------------------- simulation

class _Timeline:
    """Appends whole-frame states and events; times are ``frame / fps``."""

    def __init__(self, fps: int) -> None:
        self.fps, self.frame = fps, 0
        self.states: list[ScreenState] = []
        self.events: list[LogEvent] = []

    @property
    def now(self) -> float:
        return self.frame / self.fps

    def add(self, seconds: float, kind: str, **fields: Any) -> ScreenState:
        n = max(1, round(seconds * self.fps))
        state = ScreenState(start=self.frame / self.fps, end=(self.frame + n) / self.fps, kind=kind, **fields)
        self.frame += n
        self.states.append(state)
        return state

    def log(self, kind: str, item: int | None) -> None:
        self.events.append(LogEvent(self.now, kind, None if item is None else int(item)))


def _center(box: tuple[int, int, int, int], rng: np.random.Generator) -> tuple[int, int]:
    """A point near the middle of a box (taps are not pixel-exact)."""
    l, t, r, b = box
    return (int(round((l + r) / 2 + rng.uniform(-0.2, 0.2) * (r - l))),
            int(round((t + b) / 2 + rng.uniform(-0.2, 0.2) * (b - t))))


def _baskets(sequence: Sequence[int], timestamps: Sequence[int] | None, config: SimConfig,
             rng: np.random.Generator) -> list[list[int]]:
    if timestamps is not None:
        groups: list[list[int]] = []
        for k, item in enumerate(sequence):
            if groups and timestamps[k] == timestamps[k - 1] and len(groups[-1]) < config.max_basket:
                groups[-1].append(item)
            else:
                groups.append([item])
        return groups
    groups, k = [], 0
    while k < len(sequence):
        size = int(rng.integers(config.basket_size[0], config.basket_size[1] + 1))
        groups.append(list(sequence[k:k + size]))
        k += size
    return groups


def simulate_session(catalog: Catalog, item_sequence: Sequence[int] | np.ndarray, config: SimConfig, *,
                     timestamps: Sequence[int] | np.ndarray | None = None, user_id: str | None = None) -> Session:
    """The session of one user buying ``item_sequence`` (catalog codes, in order) in a shop app.

    ``timestamps`` (one per item, e.g. from `sessions_from_purchases`) group items bought together into
    one order; without them baskets are drawn from ``config.basket_size``. Deterministic for the
    catalog, sequence and config.
    """
    if not isinstance(config, SimConfig):
        raise TypeError(f"config must be a SimConfig, got {type(config).__name__}")
    seq = [int(i) for i in np.asarray(item_sequence).ravel()]
    if not seq:
        raise ValueError("item_sequence is empty; a session needs at least one purchased item")
    bad = [i for i in seq if not 0 <= i < len(catalog)]
    if bad:
        raise ValueError(f"item_sequence has codes outside the catalog of {len(catalog)} items, e.g. {bad[:3]}")
    if timestamps is not None and len(timestamps) != len(seq):
        raise ValueError(f"timestamps has {len(timestamps)} entries for {len(seq)} items")
    rng = np.random.default_rng([config.seed, 21, *seq[:64]])
    size = config.size
    types = _item_types(catalog)
    session_style = int(rng.integers(2**31))

    def style() -> int:
        return int(rng.integers(2**31)) if config.restyle_each_screen else session_style

    def dwell(rng_range: tuple[float, float]) -> float:
        low, high = rng_range
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))

    def scroll_state(kind: str, items: list[int], target_index: int | None, seconds: float, heading: str = "",
                     start: float = 0.0, tap: tuple[int, int] | None = None) -> tuple[ScreenState, int]:
        s = style()
        layout = (screens.home_layout(len(items), size=size, seed=s) if kind == "home"
                  else screens.grid_layout(len(items), size=size, seed=s))
        if target_index is None:
            end = layout.clip(start + rng.uniform(0.0, 0.6) * (layout.max_offset - start))
        else:
            end = layout.offset_showing(target_index, float(rng.random()))
        speed = float(rng.uniform(*config.scroll_speed))
        scroll_s = abs(end - start) / speed
        if tap is None and target_index is not None:
            tap = _center(layout.screen_box(target_index, end), rng)
        state = tl.add(scroll_s + seconds, kind, items=tuple(items), scroll=(float(start), float(end)),
                       scroll_seconds=scroll_s, tap=tap, style=s, heading=heading)
        return state, end

    tl = _Timeline(config.fps)
    baskets = _baskets(seq, timestamps, config, rng)
    for b, basket in enumerate(baskets):
        home_items = _fill(rng, len(catalog), int(rng.integers(*config.grid_items, endpoint=True)), set(seq))
        tap_tab = _center(screens.action_box("tab:search", size), rng)
        scroll_state("home", home_items, None, dwell(config.dwell_home), tap=tap_tab)
        for target in basket:
            n = int(rng.integers(*config.grid_items, endpoint=True))
            grid_items = _grid_items(rng, target, n, types, config.similar_share, len(catalog))
            t_index = grid_items.index(target)
            heading = _heading(catalog, types, target)
            n_distractors = int(rng.integers(*config.distractors, endpoint=True))
            grid, offset = scroll_state("grid", grid_items, t_index, dwell(config.dwell_grid), heading)
            viewed = {t_index}
            for _ in range(n_distractors):
                s = grid.style
                layout = screens.grid_layout(len(grid_items), size=size, seed=s)
                shown = [i for i, _share in layout.visible(offset, 0.999) if i not in viewed]
                if not shown:
                    break
                d = shown[int(rng.integers(len(shown)))]
                viewed.add(d)
                # re-issue the grid's tap: the user taps the distractor instead of the target
                tl.states[-1] = dataclasses.replace(tl.states[-1], tap=_center(layout.screen_box(d, offset), rng))
                tl.log("click", grid_items[d])
                tl.log("view", grid_items[d])
                page_style = style()
                tl.add(dwell(config.dwell_distractor), "product", item=grid_items[d], style=page_style,
                       tap=_center(screens.action_box("back", size), rng))
                tl.add(dwell(config.dwell_back), "grid", items=tuple(grid_items), scroll=(float(offset), float(offset)),
                       tap=_center(layout.screen_box(t_index, offset), rng), style=s, heading=heading)
            tl.log("click", target)
            tl.log("view", target)
            page_style = style()
            tl.add(dwell(config.dwell_product), "product", item=target, style=page_style,
                   tap=_center(screens.action_box("add_to_cart", size, page_style), rng))
            tl.log("cart", target)
        tl.add(dwell(config.dwell_cart), "cart", items=tuple(basket), style=style(),
               tap=_center(screens.action_box("checkout", size), rng))
        tl.add(dwell(config.dwell_checkout), "checkout", style=style(), items=tuple(basket),
               tap=_center(screens.action_box("place_order", size), rng))
        for item in basket:
            tl.log("purchase", item)
        last = b == len(baskets) - 1
        tl.add(dwell(config.dwell_confirmation), "checkout", items=tuple(basket), style=style(), variant="placed",
               tap=None if last else _center(screens.action_box("continue_shopping", size), rng))
    return Session(tl.states, tl.events, tuple(seq), config.fps, size, config.seed, user_id)


def _item_types(catalog: Catalog) -> np.ndarray | None:
    for name in TYPE_ATTRIBUTES:
        if name in catalog.attributes:
            return np.asarray([str(v) for v in catalog.attributes[name]], dtype=object)
    return None


def _heading(catalog: Catalog, types: np.ndarray | None, item: int) -> str:
    if types is None or not str(types[item]).strip():
        return "New arrivals"
    return str(types[item]).strip().capitalize()


def _fill(rng: np.random.Generator, n_catalog: int, n: int, avoid: set[int]) -> list[int]:
    """``n`` distinct random catalog codes, avoiding ``avoid`` while the catalog allows."""
    pool_size = n_catalog - len(avoid)
    n = min(n, n_catalog if pool_size <= 0 else pool_size)
    out: list[int] = []
    chosen: set[int] = set()
    while len(out) < n:
        code = int(rng.integers(n_catalog))
        if code not in chosen and (code not in avoid or pool_size <= 0):
            chosen.add(code)
            out.append(code)
    return out


def _grid_items(rng: np.random.Generator, target: int, n: int, types: np.ndarray | None, similar: float,
                n_catalog: int) -> list[int]:
    """A grid of ``n`` items holding ``target`` at a random position; others are of the target's type
    with probability ``similar`` (where the catalog has types), else random."""
    n = max(1, min(n, n_catalog))
    same = np.flatnonzero(types == types[target]) if types is not None else np.zeros(0, np.int64)
    items, chosen = [target], {target}
    tries = 0
    while len(items) < n and tries < 50 * n:
        tries += 1
        pool = same if len(same) > 1 and rng.random() < similar else None
        code = int(pool[rng.integers(len(pool))]) if pool is not None else int(rng.integers(n_catalog))
        if code not in chosen:
            chosen.add(code)
            items.append(code)
    others = items[1:]
    rng.shuffle(others)
    pos = int(rng.integers(len(others) + 1))
    return others[:pos] + [target] + others[pos:]


# ---------------------------------------------------------------------------------------- rendering

@dataclass(frozen=True)
class Notification:
    """A notification banner shown during ``[start, end)`` seconds."""

    start: float
    end: float
    text: str
    seed: int


def plan_notifications(session: Session, config: SimConfig) -> list[Notification]:
    """The notification banners `render_frames` draws for ``config`` (recorded in truth.json)."""
    rng = np.random.default_rng([config.seed, 31, session.seed, len(session.states)])
    out = []
    for state in session.states:
        if rng.random() >= config.notification_prob:
            continue
        start = float(rng.uniform(state.start, state.end))
        length = float(rng.uniform(*config.notification_seconds))
        text = _NOTIFICATION_TEXTS[int(rng.integers(len(_NOTIFICATION_TEXTS)))]
        out.append(Notification(start, min(start + length, session.duration), text, int(rng.integers(2**31))))
    return out


def _state_qualities(session: Session, config: SimConfig) -> list[int | None]:
    if config.jpeg_quality is None:
        return [None] * len(session.states)
    rng = np.random.default_rng([config.seed, 32, len(session.states)])
    low, high = config.jpeg_quality
    return [int(q) for q in rng.integers(low, high + 1, size=len(session.states))]


class _StatePainter:
    """Draws the frames of one state: its page once, then a crop or copy per frame."""

    def __init__(self, state: ScreenState, catalog: Catalog, photos: PhotoCache, size: tuple[int, int]) -> None:
        self.state, self.page, self.still = state, None, None
        s = state
        if s.kind in ("home", "grid", "cart"):
            photos_ = [photos(i) for i in s.items]
            titles = [catalog.titles[i] for i in s.items]
            prices = [item_price(catalog, i) for i in s.items]
            if s.kind == "home":
                self.page = screens.home_page(photos_, titles, prices, size=size, seed=s.style)
            elif s.kind == "grid":
                self.page = screens.grid_page(photos_, titles, prices, heading=s.heading or "New arrivals",
                                              size=size, seed=s.style)
            else:
                self.still = screens.render_cart(photos_, titles, prices, size=size, seed=s.style)
        elif s.kind == "product":
            code = int(s.item)
            self.still = screens.render_product_page(photos(code), catalog.titles[code], item_price(catalog, code),
                                                     catalog.texts[code], size=size, seed=s.style + code,
                                                     style_seed=s.style)
        elif s.kind == "checkout":
            total = sum(item_price(catalog, i) for i in s.items)
            self.still = screens.render_checkout(len(s.items), total, size=size, seed=s.style,
                                                 placed=s.variant == "placed")
        else:
            raise ValueError(f"screen state of unknown kind {s.kind!r}; known: {SCREEN_KINDS}")

    def frame(self, t: float) -> Image.Image:
        return self.page.frame(self.state.offset_at(t)) if self.page is not None else self.still.copy()


def _cursor(img: Image.Image, state: ScreenState, prev_tap: tuple[int, int] | None, t: float,
            config: SimConfig, viewport: tuple[int, int]) -> Image.Image:
    """Touch marks at taps and during drags, or an always-visible mouse pointer."""
    w, h = img.size
    scrolling = state.scroll_seconds > 0 and t < state.start + state.scroll_seconds
    tapping = state.tap is not None and t >= state.end - config.tap_seconds
    if config.cursor == "touch":
        if tapping:
            return screens.add_cursor(img, state.tap, style="touch", pressed=True)
        if scrolling:
            top, height = viewport
            stroke = 0.6 * height  # one flick moves the content this far, then the finger lifts
            moved = abs(state.offset_at(t) - state.scroll[0])
            y = top + 0.8 * height - (moved % stroke)
            return screens.add_cursor(img, (0.62 * w, y), style="touch")
        return img
    if config.cursor == "arrow":
        start = prev_tap or (w // 2, h // 2)
        goal = state.tap or start
        x = min(1.0, (t - state.start) / max(1e-6, 0.5 * (state.end - state.start)))
        x = x * x * (3 - 2 * x)
        xy = (start[0] + (goal[0] - start[0]) * x, start[1] + (goal[1] - start[1]) * x)
        return screens.add_cursor(img, xy, style="arrow", pressed=tapping)
    return img


def render_frames(session: Session, catalog: Catalog, config: SimConfig, *,
                  photos: PhotoCache | None = None) -> Iterator[tuple[float, Image.Image]]:
    """Yield ``(timestamp seconds, RGB image)`` for every frame ``i / fps`` of the session, with
    scrolling, notifications, cursor and JPEG noise from ``config``. Only one screen's page is held at a
    time. ``config.fps`` and size must be the session's."""
    if (config.fps, config.size) != (session.fps, tuple(session.size)):
        raise ValueError(f"config renders {config.fps} fps at {config.size} but the session was simulated at "
                         f"{session.fps} fps and {tuple(session.size)}; pass the config it was simulated with "
                         f"(noise settings may differ)")
    size = tuple(session.size)
    photos = photos or PhotoCache(catalog, (size[0], round(size[0] * 4 / 3)))
    notes = plan_notifications(session, config)
    qualities = _state_qualities(session, config)
    top = screens.status_bar_height(size) + screens.header_height(size)
    viewport = (top, size[1] - top - screens.tab_bar_height(size))
    prev_tap, prev_kind, last = None, None, None
    slide = 0.25  # seconds a banner takes to slide in or out
    for k, state in enumerate(session.states):
        painter = _StatePainter(state, catalog, photos, size)
        back = state.kind == "home" or (state.kind == "grid" and prev_kind == "product")
        for i in session.frame_range(state):
            t = i / session.fps
            img = clean = painter.frame(t)
            if last is not None and t - state.start < config.transition_seconds:
                # the first frame of a state already shows some of it
                progress = min(1.0, (t - state.start + 1 / session.fps) / config.transition_seconds)
                img = _transition(last, clean, progress, back)
            for note in notes:
                if note.start <= t < note.end:
                    progress = min(1.0, (t - note.start) / slide, (note.end - t) / slide)
                    img = screens.add_notification(img, note.text, np.random.default_rng(note.seed),
                                                   progress=max(0.0, progress))
            img = _cursor(img, state, prev_tap, t, config, viewport)
            if qualities[k] is not None:
                img = screens.jpeg_noise(img, qualities[k])
            yield t, img
        prev_tap, prev_kind, last = state.tap or prev_tap, state.kind, clean


def _transition(old: Image.Image, new: Image.Image, progress: float, back: bool) -> Image.Image:
    """A page push: the new screen slides in from the right (from the left when going ``back``) while
    the old one moves a third as far, eased."""
    x = progress * progress * (3 - 2 * progress)
    w = old.width
    shift = round(w * (1 - x))
    out = Image.new("RGB", old.size)
    if back:
        out.paste(old, (round(w * x / 3), 0))
        out.paste(new.crop((shift, 0, w, new.height)), (0, 0))
    else:
        out.paste(old, (-round(w * x / 3), 0))
        out.paste(new.crop((0, 0, w - shift, new.height)), (shift, 0))
    return out


def items_on_screen(session: Session, state: ScreenState, t: float,
                    min_fraction: float = 0.5) -> list[tuple[int, float]]:
    """``(item code, visible share)`` of the items on screen in ``state`` at time ``t``: the product of a
    product page, grid or feed cards showing more than ``min_fraction`` of their height at the scroll
    offset of ``t``, the items in the bag or order. Computed from layouts; nothing is drawn."""
    size = tuple(session.size)
    if state.kind == "product":
        return [(int(state.item), 1.0)]
    if state.kind in ("home", "grid"):
        layout = (screens.home_layout(len(state.items), size=size, seed=state.style) if state.kind == "home"
                  else screens.grid_layout(len(state.items), size=size, seed=state.style))
        return [(state.items[i], share) for i, share in layout.visible(state.offset_at(t), min_fraction)]
    return [(int(i), 1.0) for i in state.items]


# ------------------------------------------------------------------------------------------ writing

@dataclass(frozen=True)
class Recording:
    """What `write_recording` wrote: paths, frame count and rate, photos that failed to load."""

    video: Path
    truth: Path
    shards: tuple[Path, ...]
    n_frames: int
    fps: int
    duration: float
    skipped_photos: dict[str, int] = field(default_factory=dict)


def encode_video(frames: Iterable[tuple[float, Image.Image]], path: str | os.PathLike, fps: int,
                 size: tuple[int, int], config: SimConfig) -> tuple[int, tuple[Path, ...]]:
    """Encode ``(time, RGB image)`` frames of ``size`` as app_sim's recordings are encoded (yuv420p, constant
    ``fps``: frame ``i`` has pts ``i`` in time base ``1/fps``; ``config.codec``: libx264 at ``config.crf``
    without B-frames, or mpeg4 at a fixed bit rate per pixel; a keyframe every ``config.keyframe_interval``
    frames, else every second) and, with ``config.frame_shards``, also as frame shards next to the video.
    Returns the frame count and the shards. One encoder for every renderer; each file appears complete or
    not at all (temporary names, then rename)."""
    import av

    from mmrec.datasets.frames import Frame, write_frame_shards

    video = Path(path)
    count = 0

    def encoded(stream: Any) -> Iterator[Frame]:
        """Every frame, muxed into the video as it goes by (and passed on to the shard writer)."""
        nonlocal count
        for t, img in frames:
            frame = av.VideoFrame.from_image(img)
            frame.pts, frame.time_base = count, Fraction(1, fps)
            container.mux(stream.encode(frame))
            count += 1
            yield Frame(count - 1, t, np.asarray(img), video.name)

    container, shard_paths = None, ()
    try:
        with atomic_path(video) as tmp_video:  # a unique temporary sibling, renamed into place when complete
            container = av.open(str(tmp_video), mode="w", format="mp4")
            options = {"crf": str(config.crf), "bf": "0", "preset": "veryfast"} if config.codec == "libx264" else {}
            stream = container.add_stream(config.codec, rate=Fraction(fps), options=options)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            stream.time_base = Fraction(1, fps)
            stream.codec_context.gop_size = config.keyframe_interval or fps
            if config.codec == "mpeg4":
                stream.bit_rate = _MPEG4_BITS_PER_PIXEL * size[0] * size[1] * fps
            if config.frame_shards:  # the one frame-shard writer, fed while the video is encoded
                shard_paths = tuple(write_frame_shards(encoded(stream), video.parent,
                                                       frames_per_shard=config.frames_per_shard,
                                                       prefix=SHARD_PREFIX, jpeg_quality=config.shard_jpeg_quality))
            else:
                for _ in encoded(stream):
                    pass
            container.mux(stream.encode(None))
            container, closing = None, container
            closing.close()
    except BaseException:
        if container is not None:
            container.close()
        for leftover in video.parent.glob(f"{SHARD_PREFIX}-*.tar") if config.frame_shards else ():
            leftover.unlink(missing_ok=True)  # a recording is written whole or not at all
        raise
    return count, shard_paths


def write_recording(session: Session, catalog: Catalog, config: SimConfig, out_dir: str | os.PathLike) -> Recording:
    """Write ``out_dir/recording.mp4`` (`encode_video`: constant ``fps``, frame ``i`` has pts ``i`` in time
    base ``1/fps``, so its timestamp is exactly ``i / fps``), ``frames-*.tar`` shards when
    ``config.frame_shards``, and ``truth.json`` (states, events with item ids, notifications, config).
    Each file appears complete or not at all (temporary names, then rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video = out / "recording.mp4"
    size = tuple(session.size)
    photos = PhotoCache(catalog, (size[0], round(size[0] * 4 / 3)))
    frames, shard_paths = encode_video(render_frames(session, catalog, config, photos=photos), video, session.fps,
                                       size, config)
    if frames != session.n_frames:
        raise RuntimeError(f"rendered {frames} frames but the session has {session.n_frames}")
    truth = {
        "format": TRUTH_FORMAT, "version": TRUTH_VERSION, "video": video.name, "time_base": f"1/{session.fps}",
        **session.to_dict(catalog),
        "notifications": [dataclasses.asdict(x) for x in plan_notifications(session, config)],
        "shards": [p.name for p in shard_paths], "skipped_photos": dict(photos.skipped),
        "config": to_dict(config),
    }
    truth_path = atomic_write_text(out / "truth.json", json.dumps(truth, indent=1))
    return Recording(video, truth_path, shard_paths, session.n_frames, session.fps, session.duration,
                     dict(photos.skipped))


def record_sequence(catalog: Catalog, sequence: PurchaseSequence, out_dir: str | os.PathLike, *, seed: int,
                    size: tuple[int, int] = (180, 320), fps: int = 30, dwell_scale: float = 1.0,
                    **settings: Any) -> tuple[Session, Path]:
    """Simulate one purchase sequence as an app session and write it as a labelled recording (`write_recording`:
    the video and ``truth.json``, what ``mmrec stream calibrate`` takes) in ``out_dir``; returns the session and
    the video. ``size`` (width, height), ``fps`` and any other `SimConfig` ``settings`` (noise: cursor,
    notifications, JPEG, codec); ``dwell_scale`` stretches every ``dwell_*`` range (a user who reads longer)."""
    if not dwell_scale > 0:
        raise ValueError(f"record_sequence: dwell_scale must be > 0, got {dwell_scale!r}")
    dwell = {f.name: tuple(x * dwell_scale for x in f.default) for f in dataclasses.fields(SimConfig)
             if f.name.startswith("dwell_") and f.name not in settings}
    config = SimConfig(seed=seed, width=size[0], height=size[1], fps=fps, **dwell, **settings)
    session = simulate_session(catalog, sequence.items, config, timestamps=sequence.timestamps)
    recording = write_recording(session, catalog, config, out_dir)
    return session, recording.video


def load_truth(path: str | os.PathLike) -> tuple[Session, dict[str, Any]]:
    """Read a ``truth.json`` back: the `Session` and the whole JSON document (notifications, config...)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable truth.json ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a truth.json is a JSON object, not a {type(data).__name__}")
    if data.get("format") != TRUTH_FORMAT or data.get("version") != TRUTH_VERSION:
        raise ValueError(f"{path}: format {data.get('format')!r} version {data.get('version')!r}, expected "
                         f"{TRUTH_FORMAT!r} version {TRUTH_VERSION}")
    try:
        return Session.from_dict(data), data
    except (KeyError, TypeError, AttributeError, ValueError) as err:  # a field missing or of another shape
        raise ValueError(f"{path}: not a truth.json of this format ({type(err).__name__}: {err})") from None
