"""A synthetic H&M-shaped world at any size, written in the competition's layout (`mmrec.datasets.hm` reads it).

The full H&M download (105,542 articles, 1,371,980 customers, 31,788,324 purchase lines) is what a mid-size
shop has; this writes a world of that size or any other so that training, retrieval and serving can be
measured where the real download is not at hand. What it keeps of H&M's shape:

- **products with colour variants**: an article is a (product, colour); variants share the product's type,
  pattern, section and description, and the article id is ``0`` + 6-digit product code + 3-digit variant;
- **long-tailed popularity that moves**: a product's appeal is log-normal and each article has a launch day
  after which its appeal decays, so bestsellers change over time and new articles appear;
- **segments**: each customer shops mostly in one index (Ladieswear, Divided, Menswear, ...);
- **baskets**: purchases come in visits of several lines; a next line is often a colour variant of the
  previous one or the same article again (H&M repeats a line per unit bought);
- **missing photos**: a share of articles has no photo (``photo_share``); photos are drawn from the
  article's type, colour and pattern (`mmrec.datasets.synthetic`'s renderer) at a small size.

Transactions are generated one day at a time and written as fixed-width byte rows, so memory stays at the
size of the catalogue and customer tables plus one day of rows; the folder is filled under a temporary
name and renamed into place when complete (`mmrec.io.atomic_folder`). The same config gives byte-identical
files.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np
import pandas as pd

from mmrec.config import from_dict, to_dict
from mmrec.io import atomic_folder, atomic_write_json

logger = logging.getLogger(__name__)

FULL_SIZE = {"users": 1_371_980, "items": 105_542, "purchases": 31_788_324}
HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
SEGMENTS = ("Ladieswear", "Divided", "Menswear", "Children Sizes 92-140", "Sport")
SEGMENT_GROUPS = ("Ladieswear", "Divided", "Menswear", "Baby/Children", "Sport")
SEGMENT_SHARE = np.array([0.42, 0.2, 0.14, 0.16, 0.08])
# The renderer's garment categories and what H&M calls them (type, group, garment group, department).
CATEGORY_NAMES = {
    "dress": ("Dress", "Garment Full body", "Dresses Ladies", "Dresses"),
    "t-shirt": ("T-shirt", "Garment Upper body", "Jersey Basic", "Jersey"),
    "trousers": ("Trousers", "Garment Lower body", "Trousers", "Trousers"),
    "skirt": ("Skirt", "Garment Lower body", "Skirts", "Skirts"),
    "jacket": ("Jacket", "Garment Upper body", "Outdoor", "Outerwear"),
    "sweater": ("Sweater", "Garment Upper body", "Knitwear", "Knitwear"),
    "shorts": ("Shorts", "Garment Lower body", "Shorts", "Shorts"),
    "coat": ("Coat", "Garment Upper body", "Outdoor", "Outerwear"),
}
PATTERN_NAMES = {"solid": "Solid", "striped": "Stripe", "dotted": "Dot", "checked": "Check",
                 "floral": "All over pattern"}
PATTERN_PRIOR = np.array([0.45, 0.15, 0.1, 0.12, 0.18])
COLOUR_VALUES = {"black": "Dark", "white": "Light", "grey": "Medium", "red": "Bright", "pink": "Dusty Light",
                 "yellow": "Bright", "green": "Medium Dusty", "blue": "Medium Dusty", "beige": "Dusty Light",
                 "brown": "Dark"}
MATERIALS = ("cotton jersey", "soft organic cotton", "woven fabric", "fine-knit viscose", "denim",
             "recycled polyester", "linen blend", "ribbed modal")
DETAILS = ("a round neckline", "narrow shoulder straps", "side pockets", "a zip at the back", "long sleeves",
           "short sleeves", "a drawstring waist", "buttons down the front", "a relaxed fit", "a slim fit")
ARTICLE_COLUMNS = (
    "article_id", "product_code", "prod_name", "product_type_no", "product_type_name", "product_group_name",
    "graphical_appearance_no", "graphical_appearance_name", "colour_group_code", "colour_group_name",
    "perceived_colour_value_id", "perceived_colour_value_name", "perceived_colour_master_id",
    "perceived_colour_master_name", "department_no", "department_name", "index_code", "index_name",
    "index_group_no", "index_group_name", "section_no", "section_name", "garment_group_no",
    "garment_group_name", "detail_desc")


@dataclass(frozen=True)
class HMWorldConfig:
    """Size and shape of a world; unknown keys in `from_dict` are errors.

    ``users`` customers (every one buys at least once), ``items`` articles, ``purchases`` transaction lines
    over ``days`` days from ``start_date``. Shape: ``variants_mean`` articles per product, ``basket_mean``
    lines per visit, ``variant_share`` / ``repeat_share`` the chance that a next line is a colour variant of
    the previous line / the same article again, ``segment_focus`` the chance a line comes from the
    customer's own segment, ``popularity_sigma`` the log-normal spread of product appeal, ``lifetime_days``
    the decay of an article's appeal after its launch, ``photo_share`` the articles with a photo.
    """

    users: int = 20_000
    items: int = 5_000
    purchases: int = 400_000
    seed: int = 0
    start_date: str = "2018-09-20"
    days: int = 734
    variants_mean: float = 2.25
    basket_mean: float = 3.0
    variant_share: float = 0.15
    repeat_share: float = 0.1
    segment_focus: float = 0.8
    popularity_sigma: float = 1.5
    lifetime_days: float = 120.0
    photo_share: float = 0.79
    photos: bool = True
    photo_width: int = 64
    photo_height: int = 80

    def __post_init__(self) -> None:
        for name in ("users", "items", "purchases", "days", "photo_width", "photo_height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"HMWorldConfig.{name} must be a positive integer, got {value!r}")
        if self.purchases < self.users:
            raise ValueError(f"HMWorldConfig.purchases ({self.purchases}) must be ≥ users ({self.users}): "
                             "every customer buys at least once")
        for name in ("variant_share", "repeat_share", "segment_focus", "photo_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"HMWorldConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.variant_share + self.repeat_share > 1.0:
            raise ValueError("HMWorldConfig.variant_share + repeat_share must be ≤ 1")
        for name in ("variants_mean", "basket_mean"):
            if getattr(self, name) < 1.0:
                raise ValueError(f"HMWorldConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.popularity_sigma < 0 or self.lifetime_days <= 0:
            raise ValueError("HMWorldConfig.popularity_sigma must be ≥ 0 and lifetime_days > 0")
        np.datetime64(self.start_date, "D")  # raises on a malformed date

    @classmethod
    def at_fraction(cls, fraction: float, **overrides: Any) -> "HMWorldConfig":
        """The full H&M download's size times ``fraction`` (e.g. 1/16, 1/4, 1), other fields as given."""
        if not 0 < fraction <= 64:
            raise ValueError(f"fraction must be in (0, 64], got {fraction}")
        sizes = {k: max(1, round(v * fraction)) for k, v in FULL_SIZE.items()}
        return from_dict(cls, {**sizes, **overrides})


def write_world(config: HMWorldConfig | Mapping[str, Any], out: str | os.PathLike) -> dict[str, Any]:
    """Write ``articles.csv``, ``customers.csv``, ``transactions_train.csv`` (and ``images/``) into ``out``
    atomically and return a summary (also saved as ``world.json``). ``out`` must not exist yet."""
    if not isinstance(config, HMWorldConfig):
        config = from_dict(HMWorldConfig, dict(config))
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists (a world is written into a new folder)")
    with atomic_folder(out) as tmp:
        catalog = _draw_catalog(config)
        _write_articles(tmp / "articles.csv", catalog)
        customers = _draw_customers(config)
        _write_customers(tmp / "customers.csv", customers, config)
        with open(tmp / "transactions_train.csv", "wb") as f:
            lines = _write_transactions(f, config, catalog, customers)
        photos = _write_photos(tmp / "images", catalog, config) if config.photos else 0
        summary = {"config": to_dict(config), "articles": config.items, "products": int(catalog["n_products"]),
                   "customers": config.users, "purchases": lines, "photos": photos}
        atomic_write_json(tmp / "world.json", summary)
    logger.info("H&M-shaped world in %s: %d articles, %d customers, %d purchases, %d photos", out,
                config.items, config.users, lines, photos)
    return summary


# --------------------------------------------------------------------------------------------- catalogue

def _draw_catalog(config: HMWorldConfig) -> dict[str, Any]:
    """Products and their colour variants: per article its product, colour, pattern, segment, appeal."""
    rng = np.random.default_rng([config.seed, 1])
    n_products = max(1, round(config.items / config.variants_mean))
    variants = 1 + rng.poisson(config.variants_mean - 1.0, n_products)
    variants = np.minimum(variants, 10)  # one colour per variant
    while variants.sum() < config.items:  # top up the most popular-looking products, one variant each
        room = np.flatnonzero(variants < 10)
        variants[room[: config.items - variants.sum()]] += 1
    product = np.repeat(np.arange(n_products), variants)[: config.items]
    n_products = int(product.max()) + 1
    variant = np.arange(len(product)) - np.searchsorted(product, product)
    categories = np.array(list(CATEGORY_NAMES), dtype=object)
    colours = np.array(list(COLOUR_VALUES), dtype=object)
    patterns = np.array(list(PATTERN_NAMES), dtype=object)
    p_category = rng.integers(len(categories), size=n_products)
    p_pattern = rng.choice(len(patterns), size=n_products, p=PATTERN_PRIOR)
    p_segment = rng.choice(len(SEGMENTS), size=n_products, p=SEGMENT_SHARE)
    p_colour_order = np.argsort(rng.random((n_products, len(colours))), axis=1)
    p_appeal = rng.lognormal(0.0, config.popularity_sigma, n_products)
    p_price = rng.lognormal(np.log(0.025), 0.5, n_products).clip(0.001, 0.5)
    p_text = rng.integers(0, [len(MATERIALS), len(DETAILS)], size=(n_products, 2))
    # Product codes: distinct 6-digit numbers in catalogue order, as H&M's grow with time.
    codes = np.sort(rng.choice(900_000, n_products, replace=False) + 100_000)
    launch = rng.integers(-180, config.days, n_products)
    return {
        "n_products": n_products, "product": product, "variant": variant, "code": codes[product],
        "category": categories[p_category[product]], "pattern": patterns[p_pattern[product]],
        "segment": p_segment[product], "colour": colours[p_colour_order[product, variant]],
        "appeal": p_appeal[product] * rng.lognormal(0.0, 0.5, len(product)),
        "price": p_price[product], "material": p_text[product, 0], "detail": p_text[product, 1],
        "launch": launch[product] + rng.integers(0, 30, len(product)),
        "has_photo": rng.random(len(product)) < config.photo_share,
        "ids": np.array([f"0{c:06d}{v:03d}" for c, v in zip(codes[product], variant)], dtype=object),
    }


def _write_articles(path: Path, catalog: Mapping[str, Any]) -> None:
    """articles.csv with the competition's 25 columns."""
    category, pattern, colour, segment = catalog["category"], catalog["pattern"], catalog["colour"], catalog["segment"]
    names = np.array([CATEGORY_NAMES[c] for c in category], dtype=object)
    colour_name = np.array([c.capitalize() for c in colour], dtype=object)
    appearance = np.array([PATTERN_NAMES[p] for p in pattern], dtype=object)
    seg = np.array(SEGMENTS, dtype=object)[segment]
    material = np.array(MATERIALS, dtype=object)[catalog["material"]]
    detail = np.array(DETAILS, dtype=object)[catalog["detail"]]
    desc = [f"{a} {t.lower()} in {m} with {d}." for a, t, m, d in zip(appearance, names[:, 0], material, detail)]
    desc = np.where(np.random.default_rng(int(catalog["code"][0])).random(len(desc)) < 0.004, "", desc)
    numbers = {name: pd.factorize(values)[0] for name, values in (("type", names[:, 0]), ("look", appearance),
                                                                  ("colour", colour_name), ("dept", names[:, 3]))}
    df = pd.DataFrame({
        "article_id": catalog["ids"], "product_code": [f"{c:07d}" for c in catalog["code"]],
        "prod_name": [f"{c} {t}" for c, t in zip(colour_name, names[:, 0])],
        "product_type_no": 250 + numbers["type"], "product_type_name": names[:, 0], "product_group_name": names[:, 1],
        "graphical_appearance_no": 1010001 + numbers["look"], "graphical_appearance_name": appearance,
        "colour_group_code": 9 + numbers["colour"], "colour_group_name": colour_name,
        "perceived_colour_value_id": 1 + pd.factorize(np.array([COLOUR_VALUES[c] for c in colour]))[0],
        "perceived_colour_value_name": [COLOUR_VALUES[c] for c in colour],
        "perceived_colour_master_id": 5 + numbers["colour"], "perceived_colour_master_name": colour_name,
        "department_no": 1000 + numbers["dept"] + 100 * segment, "department_name": names[:, 3],
        "index_code": np.array(list("ADFHS"))[segment], "index_name": seg, "index_group_no": 1 + segment,
        "index_group_name": np.array(SEGMENT_GROUPS, dtype=object)[segment], "section_no": 10 + segment,
        "section_name": [f"{s} {d}" for s, d in zip(seg, names[:, 3])], "garment_group_no": 1001 + numbers["dept"],
        "garment_group_name": names[:, 2], "detail_desc": desc,
    })
    df[list(ARTICLE_COLUMNS)].to_csv(path, index=False)


# --------------------------------------------------------------------------------------------- customers

def _draw_customers(config: HMWorldConfig) -> dict[str, np.ndarray]:
    """Per customer: a 64-hex id, a home segment, an activity weight and an age."""
    rng = np.random.default_rng([config.seed, 2])
    segment = rng.choice(len(SEGMENTS), size=config.users, p=SEGMENT_SHARE)
    age = np.where(segment == 1, rng.integers(16, 30, config.users), rng.integers(18, 80, config.users))
    return {"ids": hex_ids(rng, config.users), "segment": segment, "activity": rng.lognormal(0.0, 1.2, config.users),
            "age": age}


def _write_customers(path: Path, customers: Mapping[str, np.ndarray], config: HMWorldConfig) -> None:
    """customers.csv for 95% of the customers (as in H&M, some have no side data)."""
    listed = np.flatnonzero(np.random.default_rng([config.seed, 3]).random(config.users) < 0.95)
    middle = np.frombuffer(b",,ACTIVE,NONE", np.uint8)
    with open(path, "wb") as f:
        f.write(b"customer_id,FN,Active,club_member_status,fashion_news_frequency,age\n")
        write_fixed(f, [customers["ids"][listed], np.broadcast_to(middle, (len(listed), len(middle))),
                        digit_matrix(customers["age"][listed], 2)])


# ------------------------------------------------------------------------------------------ transactions

def _write_transactions(f: BinaryIO, config: HMWorldConfig, catalog: Mapping[str, Any],
                        customers: Mapping[str, np.ndarray]) -> int:
    """Draw visits (baskets), assign each a customer and a day, and write their lines day by day."""
    rng = np.random.default_rng([config.seed, 4])
    sizes = 1 + rng.poisson(config.basket_mean - 1.0, int(config.purchases / config.basket_mean * 1.1) + 16)
    while sizes.sum() < config.purchases:
        sizes = np.concatenate([sizes, 1 + rng.poisson(config.basket_mean - 1.0, len(sizes) // 4 + 16)])
    n_baskets = int(np.searchsorted(np.cumsum(sizes), config.purchases)) + 1
    sizes = sizes[:n_baskets].copy()
    sizes[-1] -= int(sizes.sum() - config.purchases)
    if n_baskets < config.users:  # every customer needs a visit: split baskets into single lines
        sizes = np.ones(config.purchases, dtype=np.int64)
        n_baskets = config.purchases
    activity = customers["activity"]
    owner = np.concatenate([rng.permutation(config.users),
                            rng.choice(config.users, n_baskets - config.users, p=activity / activity.sum())])
    weekday = np.array([1.0, 0.9, 0.9, 1.0, 1.2, 1.4, 1.1])
    day_weight = weekday[np.arange(config.days) % 7] * np.linspace(0.8, 1.2, config.days)
    day = np.sort(rng.choice(config.days, n_baskets, p=day_weight / day_weight.sum()))
    order = rng.permutation(n_baskets)  # which basket (owner, size) falls on which day slot
    owner, sizes = owner[order], sizes[order]

    siblings_ptr = np.concatenate([[0], np.cumsum(np.bincount(catalog["product"]))])
    days_text = np.array([str(np.datetime64(config.start_date, "D") + d) for d in range(config.days)], dtype="S10")
    day_bytes = np.frombuffer(days_text.tobytes(), np.uint8).reshape(config.days, 10)
    article_bytes = np.frombuffer(np.array(catalog["ids"], dtype="S10").tobytes(), np.uint8).reshape(-1, 10)
    price_bytes = digit_matrix(np.round(catalog["price"] * 1e6), 6)
    f.write(b"t_dat,customer_id,article_id,price,sales_channel_id\n")
    starts = np.searchsorted(day, np.arange(config.days + 1))
    written = 0
    for d in range(config.days):
        baskets = np.arange(starts[d], starts[d + 1])
        if not len(baskets):
            continue
        who = np.repeat(owner[baskets], sizes[baskets])
        items = _basket_lines(rng, d, sizes[baskets], customers["segment"][who], catalog, siblings_ptr, config)
        n = len(items)
        price = np.concatenate([np.broadcast_to(np.frombuffer(b"0.", np.uint8), (n, 2)), price_bytes[items]], axis=1)
        channel = np.where(rng.random((n, 1)) < 0.7, ord("2"), ord("1")).astype(np.uint8)
        write_fixed(f, [np.broadcast_to(day_bytes[d], (n, 10)), customers["ids"][who], article_bytes[items],
                        price, channel])
        written += n
    return written


def _basket_lines(rng: np.random.Generator, day: int, sizes: np.ndarray, segment: np.ndarray,
                  catalog: Mapping[str, Any], siblings_ptr: np.ndarray, config: HMWorldConfig) -> np.ndarray:
    """The articles of one day's baskets (lines in basket order): a first line drawn from the day's appeal in
    the customer's segment (or any, 1 - ``segment_focus``), each next line a colour variant of the previous
    one, the same article again, or a fresh draw."""
    age = day - catalog["launch"]
    appeal = np.where(age >= 0, catalog["appeal"] * np.exp(-np.maximum(age, 0) / config.lifetime_days), 0.0)
    if appeal.sum() == 0:
        appeal = catalog["appeal"].copy()
    fresh_segment = np.where(rng.random(len(segment)) < config.segment_focus, segment, -1)
    fresh = np.empty(len(segment), dtype=np.int64)
    for s in range(-1, len(SEGMENTS)):
        rows = np.flatnonzero(fresh_segment == s)
        if not len(rows):
            continue
        weight = appeal if s < 0 else np.where(catalog["segment"] == s, appeal, 0.0)
        if weight.sum() == 0:
            weight = appeal
        cdf = np.cumsum(weight)
        fresh[rows] = np.minimum(np.searchsorted(cdf, rng.random(len(rows)) * cdf[-1], side="right"), len(cdf) - 1)
    position = np.arange(len(segment)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    kind = rng.random(len(segment))
    items = fresh
    for p in range(1, int(sizes.max())):
        rows = np.flatnonzero(position == p)
        previous = items[rows - 1]
        product = catalog["product"][previous]
        lo, n_var = siblings_ptr[product], siblings_ptr[product + 1] - siblings_ptr[product]
        variant = lo + rng.integers(0, n_var)
        items[rows] = np.where(kind[rows] < config.variant_share, variant,
                               np.where(kind[rows] < config.variant_share + config.repeat_share, previous, items[rows]))
    return items


# ------------------------------------------------------------------------------------------------ photos

def _write_photos(folder: Path, catalog: Mapping[str, Any], config: HMWorldConfig) -> int:
    """A JPEG per article with a photo at ``images/<id[:3]>/<id>.jpg``, drawn from type, colour, pattern."""
    from mmrec.datasets.synthetic import _render_item

    count = 0
    for i in np.flatnonzero(catalog["has_photo"]):
        article = catalog["ids"][i]
        path = folder / article[:3] / f"{article}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image = _render_item(catalog["category"][i], catalog["colour"][i], catalog["pattern"][i],
                             np.random.default_rng([config.seed, 5, int(i)]), config.photo_width, config.photo_height)
        image.save(path, format="JPEG", quality=85)
        count += 1
    return count


# ------------------------------------------------------------------------------------- fixed-width rows

def hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random 64-hex-character ids as a ``[n, 64]`` byte matrix (H&M's customer id form)."""
    raw = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    out = np.empty((n, 64), np.uint8)
    out[:, 0::2], out[:, 1::2] = HEX[raw >> 4], HEX[raw & 15]
    return out


def digit_matrix(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers as zero-padded ASCII digits, ``[n, width]`` bytes."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((np.asarray(values).astype(np.int64)[:, None] // powers) % 10 + ord("0")).astype(np.uint8)


def write_fixed(f: BinaryIO, columns: list[np.ndarray]) -> None:
    """Write rows whose fields are byte matrices, comma-separated and newline-terminated."""
    n = len(columns[0])
    buf = np.empty((n, sum(c.shape[1] for c in columns) + len(columns)), np.uint8)
    pos = 0
    for column in columns:
        buf[:, pos:pos + column.shape[1]] = column
        buf[:, pos + column.shape[1]] = ord(",")
        pos += column.shape[1] + 1
    buf[:, -1] = ord("\n")
    f.write(buf.tobytes())
