"""A synthetic fashion world with known ground truth: items, pictures, descriptions, users and purchases.

Every item has a category, a colour, a pattern and a season. Its picture is drawn from the first three
(a garment silhouette per category, filled in its colour, with its pattern printed on it), photographed in a
look of its own: a backdrop colour and a framing (the garment's size and place in the picture), different
for every item of a category (`item_looks`), so that no two items share a photo, as no two articles of a shop
do, even as a thumbnail; its title and description state all four in varied words. Season is said in text
only, so a model needs the text to learn it. Some items have no description and some have no picture, as in
real catalogs.

Each user has latent tastes: a Dirichlet-drawn preference over each attribute. An item's ground-truth
affinity for a user is

    affinity(u, i) = taste_strength * sum_a log(w_a[u, attr_a(i)] + 1e-3) + popularity(i)

so a user picks items as if choosing a category, a colour, a pattern and a season from her own weights,
tilted by a global popularity term. Training purchases are drawn without replacement from
softmax(affinity) over the warm items, with a bonus for repeating the category of the previous purchase
(sequence coherence) and a fraction of uniformly random picks (noise), at times spread over the training
period. The last ``n_new_items`` catalog items are new: they have no training purchases; their purchases
in the days after the cutoff are drawn from the same model and returned separately as ground truth.

`make_world` is deterministic for a config: the same config gives identical arrays and byte-identical
image files. Images go to ``image_dir/synthetic-<config hash>/`` and files already there are reused.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmrec.config import from_dict, to_dict
from mmrec.data import Catalog, Interactions
from mmrec.io import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

# Bump when drawing changes, so cached image folders of an older look are not reused.
RENDER_VERSION = 3  # 3: every item photographed in a look of its own (`item_looks`)

CATEGORIES = ("dress", "t-shirt", "trousers", "skirt", "jacket", "sweater", "shorts", "coat")
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 32),
    "white": (242, 242, 238),
    "grey": (135, 135, 140),
    "red": (200, 35, 45),
    "pink": (235, 120, 170),
    "yellow": (240, 205, 50),
    "green": (40, 130, 70),
    "blue": (40, 80, 180),
    "beige": (212, 190, 150),
    "brown": (115, 70, 40),
}
PATTERNS = ("solid", "striped", "dotted", "checked", "floral")
SEASONS = ("summer", "winter", "all-season")

CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "dress": ("dress", "midi dress", "A-line dress"),
    "t-shirt": ("t-shirt", "tee", "cotton t-shirt"),
    "trousers": ("trousers", "pants", "chinos"),
    "skirt": ("skirt", "midi skirt", "A-line skirt"),
    "jacket": ("jacket", "blazer"),
    "sweater": ("sweater", "jumper", "knit sweater"),
    "shorts": ("shorts", "bermuda shorts"),
    "coat": ("coat", "overcoat", "wool coat"),
}

_PATTERN_PRIOR = np.array([0.40, 0.15, 0.15, 0.15, 0.15])
# P(season | category): summer, winter, all-season.
_SEASON_GIVEN_CATEGORY = {
    "dress": (0.6, 0.1, 0.3), "t-shirt": (0.7, 0.0, 0.3), "trousers": (0.1, 0.3, 0.6),
    "skirt": (0.5, 0.1, 0.4), "jacket": (0.1, 0.4, 0.5), "sweater": (0.0, 0.7, 0.3),
    "shorts": (0.9, 0.0, 0.1), "coat": (0.0, 0.8, 0.2),
}
_TASTE_FLOOR = 1e-3


@dataclass(frozen=True)
class WorldConfig:
    """Everything that shapes a synthetic world; unknown keys in `from_dict` are errors.

    ``n_items`` counts warm items (with training purchases); the catalog holds ``n_items + n_new_items``.
    Ranges are inclusive ``(low, high)`` pairs. ``image_width`` × ``image_height`` is the picture size
    in pixels. ``taste_concentration`` is the Dirichlet alpha of user tastes (small: few favourites);
    ``popularity_skew`` the spread of the item popularity term; ``noise`` the fraction of purchases
    drawn uniformly at random; ``sequence_coherence`` the logit bonus for buying the previous category again.
    ``distinct_looks``: every item photographed in a look of its own (`item_looks`), so no two share a photo;
    False draws every garment alike (large, about centred, on grey), so items of one category, colour and
    pattern share a photo up to jitter (the world before looks, pixel for pixel).
    """

    seed: int = 0
    n_users: int = 400
    n_items: int = 300
    n_new_items: int = 60
    interactions_per_user: tuple[int, int] = (5, 30)
    new_interactions_per_user: tuple[int, int] = (1, 4)
    image_width: int = 128
    image_height: int = 160
    image_format: str = "jpeg"
    start_date: str = "2020-06-01"
    days: int = 90
    future_days: int = 14
    popularity_skew: float = 1.0
    taste_concentration: float = 0.3
    taste_strength: float = 1.0
    sequence_coherence: float = 1.0
    noise: float = 0.1
    missing_text_fraction: float = 0.1
    missing_image_fraction: float = 0.05
    distinct_looks: bool = True

    def fingerprint(self) -> str:
        """A short hash of the config and the drawing code version; names the image folder."""
        blob = json.dumps({"config": to_dict(self), "render_version": RENDER_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def __post_init__(self) -> None:
        for name in ("seed", "n_users", "n_items", "n_new_items", "image_width", "image_height", "days",
                     "future_days"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"WorldConfig.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("popularity_skew", "taste_concentration", "taste_strength", "sequence_coherence", "noise",
                     "missing_text_fraction", "missing_image_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.number)) or isinstance(value, bool) or not math.isfinite(value):
                raise TypeError(f"WorldConfig.{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        minimum = {"seed": 0, "n_users": 1, "n_items": 1, "n_new_items": 0, "image_width": 32,
                   "image_height": 32, "days": 1, "future_days": 1}
        for name, low in minimum.items():
            if getattr(self, name) < low:
                raise ValueError(f"WorldConfig.{name} must be >= {low}, got {getattr(self, name)}")
        self._check_range("interactions_per_user", 1, self.n_items, "n_items")
        self._check_range("new_interactions_per_user", 0, self.n_new_items, "n_new_items")
        if not isinstance(self.distinct_looks, (bool, np.bool_)):
            raise TypeError(f"WorldConfig.distinct_looks must be true or false, got {self.distinct_looks!r}")
        object.__setattr__(self, "distinct_looks", bool(self.distinct_looks))
        for name in ("noise", "missing_text_fraction", "missing_image_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"WorldConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.taste_concentration <= 0:
            raise ValueError(f"WorldConfig.taste_concentration must be > 0, got {self.taste_concentration}")
        for name in ("popularity_skew", "taste_strength", "sequence_coherence"):
            if getattr(self, name) < 0:
                raise ValueError(f"WorldConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError(f"WorldConfig.image_format must be 'jpeg' or 'png', got {self.image_format!r}")
        try:
            dt.date.fromisoformat(self.start_date)
        except (TypeError, ValueError) as err:
            raise ValueError(f"WorldConfig.start_date must be an ISO date like '2020-06-01', "
                             f"got {self.start_date!r}") from err

    def _check_range(self, name: str, low: int, high: int, high_name: str) -> None:
        value = getattr(self, name)
        if (not isinstance(value, (tuple, list)) or len(value) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
            raise TypeError(f"WorldConfig.{name} must be a pair of integers (low, high), got {value!r}")
        lo, hi = int(value[0]), int(value[1])
        if not low <= lo <= hi:
            raise ValueError(f"WorldConfig.{name} must satisfy {low} <= low <= high, got {value!r}")
        if hi > high:
            raise ValueError(f"WorldConfig.{name} high {hi} exceeds {high_name}={high} "
                             f"(purchases per user are distinct items)")
        object.__setattr__(self, name, (lo, hi))

    @property
    def start_timestamp(self) -> int:
        """Unix seconds of the start of the training period (midnight UTC of ``start_date``)."""
        day = dt.date.fromisoformat(self.start_date)
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())

    @property
    def cutoff_timestamp(self) -> int:
        """Unix seconds where training ends and the new items' future begins."""
        return self.start_timestamp + self.days * 86400


@dataclass
class UserTastes:
    """Latent per-user preference weights: row ``u`` of each array is a distribution over that attribute's
    values (columns in the order of `CATEGORIES`, `COLOURS`, `PATTERNS`, `SEASONS`)."""

    category: np.ndarray
    colour: np.ndarray
    pattern: np.ndarray
    season: np.ndarray


@dataclass
class World:
    """A generated world: the catalog (warm items, then new ones), training purchases on warm items, the
    new items' future purchases (ground truth for cold start) and the latent parameters behind them.

    ``interactions`` and ``new_item_interactions`` share the catalog's item vocabulary, so item codes are
    catalog row numbers.
    """

    config: WorldConfig
    catalog: Catalog
    interactions: Interactions
    new_item_codes: np.ndarray
    new_item_interactions: Interactions
    user_tastes: UserTastes
    item_popularity: np.ndarray
    image_dir: Path | None

    @property
    def warm_item_codes(self) -> np.ndarray:
        """Codes of items that can have training purchases (all but the new ones)."""
        return np.arange(self.config.n_items)

    def affinity(self, users: Sequence[int] | np.ndarray | None = None,
                 items: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Ground-truth scores ``[len(users), len(items)]`` (all users / all items when ``None``).

        The logit of the choice model before noise and sequence effects; higher means likelier to buy.
        """
        users = np.arange(self.config.n_users) if users is None else np.asarray(users, dtype=np.int64)
        items = np.arange(len(self.catalog)) if items is None else np.asarray(items, dtype=np.int64)
        codes = _attribute_codes(self.catalog.attributes)
        return _affinity(self.user_tastes, {k: v[items] for k, v in codes.items()}, self.item_popularity[items],
                         self.config.taste_strength, users)


def make_world(config: WorldConfig | Mapping[str, Any], image_dir: str | os.PathLike | None) -> World:
    """Generate the world of ``config``; item images are written under ``image_dir`` (none when ``None``).

    Images land in ``image_dir/synthetic-<config.fingerprint()>/<item id>.<ext>``; files already there
    are reused, new ones are written atomically.
    """
    if not isinstance(config, WorldConfig):
        config = from_dict(WorldConfig, config)
    n_total = config.n_items + config.n_new_items
    attributes = _draw_attributes(config.seed, n_total)
    ids = np.asarray([f"S{i:06d}" for i in range(n_total)], dtype=object)
    titles, texts = _write_texts(config, attributes)
    has_image = np.random.default_rng([config.seed, 3]).random(n_total) >= config.missing_image_fraction
    folder = None if image_dir is None else Path(image_dir) / f"synthetic-{config.fingerprint()}"
    image_paths = _render_images(config, ids, attributes, has_image, folder) if folder else [None] * n_total
    catalog = Catalog(ids, titles, texts, image_paths, attributes)

    rng = np.random.default_rng([config.seed, 4])
    alpha = config.taste_concentration
    tastes = UserTastes(*(rng.dirichlet(np.full(k, alpha), size=config.n_users)
                          for k in (len(CATEGORIES), len(COLOURS), len(PATTERNS), len(SEASONS))))
    popularity = config.popularity_skew * rng.standard_normal(n_total)
    codes = _attribute_codes(attributes)
    scores = _affinity(tastes, codes, popularity, config.taste_strength, np.arange(config.n_users))

    user_ids = np.asarray([f"U{u:05d}" for u in range(config.n_users)], dtype=object)
    warm = np.arange(config.n_items)
    new = np.arange(config.n_items, n_total)
    train = _sample_purchases(rng, scores[:, warm], codes["category"][warm], config.interactions_per_user,
                              config.sequence_coherence, config.noise, config.start_timestamp, config.days)
    future = _sample_purchases(rng, scores[:, new], codes["category"][new], config.new_interactions_per_user,
                               0.0, config.noise, config.cutoff_timestamp, config.future_days)
    interactions = Interactions(train[0], warm[train[1]], user_ids, ids, timestamps=train[2])
    new_interactions = Interactions(future[0], new[future[1]], user_ids, ids, timestamps=future[2])
    logger.info("synthetic world %s: %d items (%d new), %d users, %d training and %d future purchases",
                config.fingerprint(), n_total, config.n_new_items, config.n_users, len(interactions),
                len(new_interactions))
    return World(config, catalog, interactions, new, new_interactions, tastes, popularity, folder)


# ---------------------------------------------------------------------------------------------- the model

def _draw_attributes(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 1])
    category = rng.integers(len(CATEGORIES), size=n)
    colour = rng.integers(len(COLOURS), size=n)
    pattern = rng.choice(len(PATTERNS), size=n, p=_PATTERN_PRIOR)
    season_p = np.asarray([_SEASON_GIVEN_CATEGORY[CATEGORIES[c]] for c in category])
    season = np.minimum((rng.random((n, 1)) > np.cumsum(season_p, axis=1)).sum(axis=1), len(SEASONS) - 1)
    names = list(COLOURS)
    return {
        "category": np.asarray([CATEGORIES[c] for c in category], dtype=object),
        "colour": np.asarray([names[c] for c in colour], dtype=object),
        "pattern": np.asarray([PATTERNS[p] for p in pattern], dtype=object),
        "season": np.asarray([SEASONS[s] for s in season], dtype=object),
    }


def _attribute_codes(attributes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    vocab = {"category": CATEGORIES, "colour": tuple(COLOURS), "pattern": PATTERNS, "season": SEASONS}
    out = {}
    for name, values in vocab.items():
        index = {v: i for i, v in enumerate(values)}
        out[name] = np.fromiter((index[v] for v in attributes[name]), dtype=np.int64, count=len(attributes[name]))
    return out


def _affinity(tastes: UserTastes, codes: Mapping[str, np.ndarray], popularity: np.ndarray, strength: float,
              users: np.ndarray) -> np.ndarray:
    total = np.zeros((len(users), len(popularity)))
    for name in ("category", "colour", "pattern", "season"):
        total += np.log(getattr(tastes, name)[users][:, codes[name]] + _TASTE_FLOOR)
    return strength * total + popularity[None, :]


def _sample_purchases(rng: np.random.Generator, scores: np.ndarray, category: np.ndarray, per_user: tuple[int, int],
                      coherence: float, noise: float, start: int, days: int) -> tuple[np.ndarray, ...]:
    """Distinct items per user by Gumbel-max over softmax(scores), in time order; columns (users, items, times)."""
    n_users, n_items = scores.shape
    counts = rng.integers(per_user[0], per_user[1] + 1, size=n_users)
    steps = int(counts.max()) if n_users else 0
    times = np.sort(rng.integers(0, days * 86400, size=(n_users, max(steps, 1))), axis=1) + start
    taken = np.zeros((n_users, n_items), dtype=bool)
    previous = np.full(n_users, -1)
    rows = []
    for t in range(steps):
        logits = scores + coherence * (category[None, :] == previous[:, None])
        random_pick = rng.random(n_users) < noise
        logits[random_pick] = 0.0
        logits[taken] = -np.inf
        choice = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        active = np.flatnonzero(counts > t)
        taken[active, choice[active]] = True
        previous[active] = category[choice[active]]
        rows.append(np.stack([active, choice[active], times[active, t]], axis=1))
    table = np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)
    table = table[np.lexsort((table[:, 0], table[:, 2]))]
    return table[:, 0], table[:, 1], table[:, 2]


# ----------------------------------------------------------------------------------------------- the text

_NAMES = ("Alba", "Bea", "Cleo", "Dana", "Edda", "Fia", "Greta", "Hanna", "Ida", "Juno", "Kaja", "Liv", "Mira",
          "Nova", "Olga", "Pia", "Rut", "Saga", "Tova", "Vera", "Wilma", "Ylva", "Zoe", "Nils", "Otto", "Arvid")
_PATTERN_ADJ = {"solid": ("", "plain "), "striped": ("striped ",), "dotted": ("dotted ", "polka-dot "),
                "checked": ("checked ",), "floral": ("floral ", "flower-print ")}
_PATTERN_WITH = {"solid": ("", " in a single colour"), "striped": (" with stripes", " in a striped pattern"),
                 "dotted": (" with polka dots", " with a dot print"),
                 "checked": (" with a check pattern", " in checks"),
                 "floral": (" with a floral print", " with a flower pattern")}
_SEASON_ADJ = {"summer": ("summer ",), "winter": ("winter ",), "all-season": ("",)}
_SEASON_SENTENCE = {"summer": ("Made for warm summer days.", "A summer favourite."),
                    "winter": ("Keeps you warm in winter.", "A cosy winter piece."),
                    "all-season": ("", "An all-season basic.")}
_FEEL = ("light", "soft", "classic", "relaxed", "easy", "timeless")
_FABRIC = {"dress": ("viscose", "cotton jersey"), "t-shirt": ("cotton jersey", "organic cotton"),
           "trousers": ("cotton twill", "woven fabric"), "skirt": ("woven viscose", "crêpe"),
           "jacket": ("woven fabric", "cotton twill"), "sweater": ("soft knit", "wool-blend knit"),
           "shorts": ("cotton twill", "linen-blend fabric"), "coat": ("wool-blend fabric", "felted wool")}
_DETAIL = {"dress": ("Sleeveless with a flared skirt.", "Fitted bodice and narrow shoulder straps."),
           "t-shirt": ("Short sleeves and a round neckline.", "Straight cut with a ribbed neckline."),
           "trousers": ("Regular waist with a zip fly and side pockets.", "High waist and straight legs."),
           "skirt": ("A-line cut with a concealed zip.", "Waistband and a gently flared hem."),
           "jacket": ("Notch lapels and long sleeves.", "Lapels, a front button and flap pockets."),
           "sweater": ("Long sleeves with ribbing at the cuffs and hem.", "Relaxed fit with ribbed trims."),
           "shorts": ("High waist and short legs.", "Waistband with belt loops and turn-ups."),
           "coat": ("Double-breasted with notch lapels and a tie belt.", "Long sleeves and a belt at the waist.")}


def _write_texts(config: WorldConfig, attributes: Mapping[str, np.ndarray]) -> tuple[list[str], list[str]]:
    titles, texts = [], []
    for i in range(len(attributes["category"])):
        rng = np.random.default_rng([config.seed, 2, i])
        cat, colour, pattern, season = (attributes[k][i] for k in ("category", "colour", "pattern", "season"))

        def pick(options: Sequence[str]) -> str:
            return options[int(rng.integers(len(options)))]

        word, word2 = pick(CATEGORY_WORDS[cat]), pick(CATEGORY_WORDS[cat])
        name = pick(_NAMES)
        if pattern != "solid" and rng.random() < 0.4:
            titles.append(f"{name} {pick(_PATTERN_ADJ[pattern])}{word}")
        else:
            titles.append(f"{name} {word}")
        if rng.random() < config.missing_text_fraction:
            texts.append("")
            continue
        template = int(rng.integers(3))
        if template == 0:
            text = (f"{colour.capitalize()} {pick(_PATTERN_ADJ[pattern])}{pick(_SEASON_ADJ[season])}{word}. "
                    f"A {pick(_FEEL)} {word2} in {colour}{pick(_PATTERN_WITH[pattern])}. {pick(_DETAIL[cat])}")
        elif template == 1:
            text = (f"{word.capitalize()} in {pick(_FABRIC[cat])}{pick(_PATTERN_WITH[pattern])}. "
                    f"{pick(_DETAIL[cat])} {pick(_SEASON_SENTENCE[season])} Colour: {colour}.")
        else:
            text = (f"{pick(_FEEL).capitalize()} {colour} {word}{pick(_PATTERN_WITH[pattern])}, made from "
                    f"{pick(_FABRIC[cat])}. {pick(_SEASON_SENTENCE[season])} {pick(_DETAIL[cat])}")
        texts.append(" ".join(text.split()))
    return titles, texts


# --------------------------------------------------------------------------------------------- the images

def _mirror(left: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """A symmetric outline from its left half, listed from top centre down to bottom centre."""
    return list(left) + [(1.0 - u, v) for u, v in reversed(left)]


_SILHOUETTES = {
    "t-shirt": _mirror([(0.5, 0.20), (0.40, 0.17), (0.36, 0.13), (0.20, 0.17), (0.05, 0.33), (0.15, 0.43),
                        (0.25, 0.36), (0.26, 0.88), (0.5, 0.88)]),
    "sweater": _mirror([(0.5, 0.17), (0.38, 0.12), (0.20, 0.15), (0.10, 0.30), (0.04, 0.80), (0.14, 0.82),
                        (0.22, 0.42), (0.24, 0.86), (0.5, 0.86)]),
    "jacket": _mirror([(0.5, 0.40), (0.40, 0.13), (0.22, 0.15), (0.11, 0.30), (0.06, 0.76), (0.15, 0.78),
                       (0.23, 0.42), (0.23, 0.76), (0.5, 0.76)]),
    "coat": _mirror([(0.5, 0.36), (0.40, 0.08), (0.24, 0.10), (0.14, 0.24), (0.08, 0.72), (0.17, 0.74),
                     (0.25, 0.36), (0.21, 0.96), (0.5, 0.96)]),
    "dress": _mirror([(0.5, 0.17), (0.42, 0.14), (0.41, 0.05), (0.37, 0.05), (0.34, 0.18), (0.31, 0.30),
                      (0.34, 0.42), (0.14, 0.94), (0.5, 0.96)]),
    "skirt": _mirror([(0.5, 0.18), (0.33, 0.18), (0.31, 0.26), (0.15, 0.84), (0.5, 0.86)]),
    "trousers": _mirror([(0.5, 0.06), (0.29, 0.06), (0.27, 0.20), (0.24, 0.96), (0.44, 0.96), (0.5, 0.38)]),
    "shorts": _mirror([(0.5, 0.22), (0.28, 0.22), (0.24, 0.36), (0.20, 0.68), (0.46, 0.70), (0.5, 0.50)]),
}

# Seams, lapels, waistbands: polylines in the same unit box, drawn in the detail colour.
_DETAILS = {
    "t-shirt": [[(0.37, 0.145), (0.43, 0.19), (0.5, 0.215), (0.57, 0.19), (0.63, 0.145)]],
    "sweater": [[(0.38, 0.13), (0.44, 0.18), (0.5, 0.19), (0.56, 0.18), (0.62, 0.13)],
                [(0.24, 0.81), (0.76, 0.81)], [(0.05, 0.76), (0.14, 0.775)], [(0.95, 0.76), (0.86, 0.775)]],
    "jacket": [[(0.40, 0.13), (0.34, 0.28), (0.5, 0.40)], [(0.60, 0.13), (0.66, 0.28), (0.5, 0.40)],
               [(0.5, 0.40), (0.5, 0.76)], [(0.28, 0.60), (0.40, 0.60)], [(0.60, 0.60), (0.72, 0.60)]],
    "coat": [[(0.40, 0.08), (0.33, 0.24), (0.5, 0.36)], [(0.60, 0.08), (0.67, 0.24), (0.5, 0.36)],
             [(0.5, 0.36), (0.5, 0.96)], [(0.245, 0.52), (0.755, 0.52)], [(0.245, 0.555), (0.755, 0.555)]],
    "dress": [[(0.345, 0.42), (0.655, 0.42)], [(0.42, 0.15), (0.5, 0.19), (0.58, 0.15)]],
    "skirt": [[(0.315, 0.24), (0.685, 0.24)], [(0.42, 0.24), (0.38, 0.85)], [(0.58, 0.24), (0.62, 0.85)]],
    "trousers": [[(0.28, 0.11), (0.72, 0.11)], [(0.5, 0.11), (0.5, 0.30)], [(0.36, 0.20), (0.34, 0.96)],
                 [(0.64, 0.20), (0.66, 0.96)]],
    "shorts": [[(0.27, 0.27), (0.73, 0.27)], [(0.5, 0.27), (0.5, 0.42)], [(0.21, 0.63), (0.46, 0.65)],
               [(0.79, 0.63), (0.54, 0.65)]],
}
_BUTTONS = {"jacket": [(0.5, 0.52)], "coat": [(0.43, 0.44), (0.57, 0.44), (0.43, 0.64), (0.57, 0.64),
                                              (0.43, 0.80), (0.57, 0.80)]}
_SUPERSAMPLE = 2

# Studio backdrops: of distinct hues, light enough for dark garments, each clear of every garment colour.
BACKDROPS: tuple[tuple[int, int, int], ...] = (
    (208, 208, 208), (246, 219, 165), (169, 204, 245), (248, 184, 197),
    (176, 234, 184), (207, 182, 245), (248, 240, 150), (154, 208, 205),
)
# Framings (scale, dx, dy): the garment's height as a share of the picture's, and its place in the room left
# around it (-1: against the left / top edge, 0: centred, 1: against the right / bottom edge).
FRAMINGS: tuple[tuple[float, float, float], ...] = (
    (0.62, -1.0, -1.0), (0.62, 1.0, 1.0), (0.62, 1.0, -1.0), (0.62, -1.0, 1.0), (0.62, 0.0, 0.0),
    (0.74, -1.0, -0.5), (0.74, 1.0, 0.5), (0.74, 0.0, 0.0), (0.74, 1.0, -0.5),
    (0.86, -1.0, 0.0), (0.86, 1.0, 0.0), (0.86, 0.0, 0.0),
)

_ROUND_SCALES = (1.0, 0.93, 1.07, 0.87)


@dataclass(frozen=True)
class Look:
    """How one item is photographed: ``backdrop`` (RGB) behind the garment, the garment's height as a share
    of the picture's (``scale``) and where it sits in the room left around it (``dx``, ``dy`` in [-1, 1]:
    edge to edge; 0 centred)."""

    backdrop: tuple[int, int, int]
    scale: float
    dx: float
    dy: float


def item_looks(seed: int, attributes: Mapping[str, np.ndarray]) -> list[Look]:
    """One `Look` per item, all different among the items of one category (whose garments share a cut): the
    ``k``-th of them takes framing ``k`` and backdrop ``k + k // 12`` (mod their counts, after offsets seeded
    per category), so the first 96 of a category never share both, and two sharing a framing differ in
    backdrop. Past 96, each further round of them shrinks or grows the garment a little (``_ROUND_SCALES``)."""
    count: dict[str, int] = {}
    looks = []
    for category in attributes["category"]:
        k = count.get(category, 0)
        count[category] = k + 1
        framing, backdrop = np.random.default_rng([seed, 6, CATEGORIES.index(category)]).integers(0, 96, size=2)
        scale, dx, dy = FRAMINGS[int(framing + k) % len(FRAMINGS)]
        scale *= _ROUND_SCALES[k // (len(FRAMINGS) * len(BACKDROPS)) % len(_ROUND_SCALES)]
        looks.append(Look(BACKDROPS[int(backdrop + k + k // len(FRAMINGS)) % len(BACKDROPS)], scale, dx, dy))
    return looks


def _luminance(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _render_item(category: str, colour: str, pattern: str, rng: np.random.Generator,
                 width: int, height: int, look: Look | None = None) -> Image.Image:
    """One garment picture: silhouette of ``category`` filled in ``colour`` with ``pattern``, photographed in
    ``look`` (None: large, about centred, on grey, as every item was before looks), jittered by ``rng``."""
    ss = _SUPERSAMPLE
    w, h = width * ss, height * ss
    if look is None:  # every item alike: large, about centred, on grey
        box_h = min(h, w / 0.8) * rng.uniform(0.84, 0.94)
        box_w = box_h * 0.8
        left = (w - box_w) / 2 + rng.uniform(-0.035, 0.035) * w
        top = (h - box_h) / 2 + rng.uniform(-0.03, 0.03) * h
        backdrop = (205, 205, 205)
    else:
        box_h = min(h, w / 0.8) * look.scale * rng.uniform(0.97, 1.03)
        box_w = box_h * 0.8
        left = (w - box_w) / 2 * (1 + 0.9 * look.dx) + rng.uniform(-0.02, 0.02) * w
        top = (h - box_h) / 2 * (1 + 0.9 * look.dy) + rng.uniform(-0.02, 0.02) * h
        backdrop = look.backdrop

    def to_px(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(left + u * box_w, top + v * box_h) for u, v in points]

    base = np.clip(np.asarray(COLOURS[colour], float) + rng.uniform(-8, 8) + rng.uniform(-4, 4, 3), 0, 255)
    light = _luminance(base) > 110
    second = base * 0.62 if light else base + (255 - base) * 0.45
    detail = base * 0.45 if _luminance(base) > 70 else base + (255 - base) * 0.35
    background = np.clip(np.asarray(backdrop, float) + rng.uniform(-5, 5) + rng.uniform(-3, 3, 3), 0, 255)

    texture = Image.fromarray(_pattern_texture(pattern, base, second, detail, rng, w, h, box_w))
    mask = Image.new("L", (w, h), 0)
    outline = to_px(_SILHOUETTES[category])
    ImageDraw.Draw(mask).polygon(outline, fill=255)
    image = Image.composite(texture, Image.new("RGB", (w, h), tuple(int(c) for c in background)), mask)

    draw = ImageDraw.Draw(image)
    ink = tuple(int(c) for c in detail)
    for line in _DETAILS[category]:
        draw.line(to_px(line), fill=ink, width=ss, joint="curve")
    radius = 0.018 * box_w
    for x, y in to_px(_BUTTONS.get(category, [])):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=ink)
    draw.polygon(outline, outline=ink, width=ss)
    return image.resize((width, height), Image.Resampling.LANCZOS)


def _pattern_texture(pattern: str, base: np.ndarray, second: np.ndarray, detail: np.ndarray,
                     rng: np.random.Generator, w: int, h: int, box_w: float) -> np.ndarray:
    """An ``h × w × 3`` uint8 fabric: ``base`` with the pattern printed in ``second``."""
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((h, w, 3))
    out[:] = base
    if pattern in ("striped", "checked"):
        period = box_w * rng.uniform(0.08, 0.12)
        band = (0.35 if pattern == "striped" else 0.22) * period
        rows = (y + rng.uniform(0, period)) % period < band
        cols = (x + rng.uniform(0, period)) % period < band
        if pattern == "striped":
            out[cols if rng.random() < 0.25 else rows] = second
        else:
            out[rows ^ cols] = (base + second) / 2
            out[rows & cols] = second
        return out.astype(np.uint8)
    image = Image.fromarray(out.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    fill = tuple(int(c) for c in second)
    if pattern == "dotted":
        step = box_w * rng.uniform(0.09, 0.12)
        r = step * rng.uniform(0.18, 0.25)
        oy, ox = rng.uniform(0, step, 2)
        for j, cy in enumerate(np.arange(-step + oy, h + step, step)):
            for cx in np.arange(-step + ox + (step / 2) * (j % 2), w + step, step):
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif pattern == "floral":
        step = box_w * rng.uniform(0.15, 0.19)
        petal = step * 0.16
        centre_fill = tuple(int(c) for c in detail)
        for cy in np.arange(-step, h + step, step):
            for cx in np.arange(-step, w + step, step):
                fx, fy = cx + rng.uniform(-0.3, 0.3) * step, cy + rng.uniform(-0.3, 0.3) * step
                turn = rng.uniform(0, 2 * math.pi)
                for k in range(5):
                    a = turn + k * 2 * math.pi / 5
                    px, py = fx + 1.1 * petal * math.cos(a), fy + 1.1 * petal * math.sin(a)
                    draw.ellipse((px - petal, py - petal, px + petal, py + petal), fill=fill)
                draw.ellipse((fx - 0.6 * petal, fy - 0.6 * petal, fx + 0.6 * petal, fy + 0.6 * petal),
                             fill=centre_fill)
    return np.asarray(image)


def _render_images(config: WorldConfig, ids: np.ndarray, attributes: Mapping[str, np.ndarray],
                   has_image: np.ndarray, folder: Path) -> list[str | None]:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "config.json").exists():
        atomic_write_text(folder / "config.json", json.dumps(to_dict(config), indent=2, sort_keys=True))
    ext = "jpg" if config.image_format == "jpeg" else "png"
    paths: list[str | None] = []
    written = 0
    looks = item_looks(config.seed, attributes) if config.distinct_looks else [None] * len(ids)
    for i, item_id in enumerate(ids):
        if not has_image[i]:
            paths.append(None)
            continue
        path = folder / f"{item_id}.{ext}"
        if not path.exists():
            rng = np.random.default_rng([config.seed, 5, i])
            image = _render_item(attributes["category"][i], attributes["colour"][i], attributes["pattern"][i],
                                 rng, config.image_width, config.image_height, looks[i])
            _atomic_save(image, path, config.image_format)
            written += 1
        paths.append(str(path))
    logger.info("synthetic images in %s: %d written, %d reused", folder, written,
                sum(p is not None for p in paths) - written)
    return paths


def _atomic_save(image: Image.Image, path: Path, image_format: str) -> None:
    if image_format == "jpeg":
        atomic_write(path, lambda f: image.save(f, format="JPEG", quality=92))
    else:
        atomic_write(path, lambda f: image.save(f, format="PNG"))


# ------------------------------------------------------------------------------------------ contact sheet

def contact_sheet(catalog: Catalog, codes: Sequence[int] | np.ndarray, columns: int = 6,
                  tile: tuple[int, int] = (128, 160)) -> Image.Image:
    """A grid of item pictures with their colour/pattern/category under each (a grey tile where none)."""
    codes = [int(c) for c in codes]
    rows = max(1, math.ceil(len(codes) / columns))
    tw, th = tile
    caption_h = 28
    sheet = Image.new("RGB", (columns * tw, rows * (th + caption_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, code in enumerate(codes):
        x, y = (k % columns) * tw, (k // columns) * (th + caption_h)
        path = catalog.image_paths[code]
        if path is None:
            draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=(170, 170, 170))
            draw.text((x + 6, y + th // 2), "no image", fill=(60, 60, 60), font=font)
        else:
            with Image.open(path) as im:
                sheet.paste(im.convert("RGB").resize(tile), (x, y))
        attrs = catalog.attributes
        lines = f"{catalog.ids[code]} {attrs['colour'][code]}\n{attrs['pattern'][code]} {attrs['category'][code]}"
        draw.multiline_text((x + 4, y + th + 1), lines, fill=(0, 0, 0), font=font, spacing=1)
    return sheet
