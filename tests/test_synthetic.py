"""The synthetic fashion world: determinism, pictures and text that follow the attributes, useful ground truth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrec.config import from_dict, to_dict
from mmrec.datasets.synthetic import (CATEGORIES, CATEGORY_WORDS, COLOURS, PATTERNS, World, WorldConfig,
                                      contact_sheet, item_looks, make_world)
from mmrec.screen_windows import PhotoCheck

SMALL = dict(n_users=40, n_items=30, n_new_items=8, interactions_per_user=(3, 10), new_interactions_per_user=(1, 3))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The default world, with images."""
    return make_world(WorldConfig(), tmp_path_factory.mktemp("synthetic"))


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=float)


def _garment_mask(pixels: np.ndarray) -> np.ndarray:
    """Pixels that differ clearly from the background, estimated as the median colour of the image border."""
    border = np.concatenate([pixels[:3].reshape(-1, 3), pixels[-3:].reshape(-1, 3),
                             pixels[:, :3].reshape(-1, 3), pixels[:, -3:].reshape(-1, 3)])
    return np.linalg.norm(pixels - np.median(border, axis=0), axis=2) > 30


def _interaction_rows(inter) -> np.ndarray:
    return np.stack([inter.users, inter.items, inter.timestamps], axis=1)


# ------------------------------------------------------------------------------------------ determinism

def test_same_config_gives_identical_world_and_image_bytes(tmp_path: Path) -> None:
    a = make_world(WorldConfig(seed=7, **SMALL), tmp_path / "a")
    b = make_world(WorldConfig(seed=7, **SMALL), tmp_path / "b")
    assert list(a.catalog.ids) == list(b.catalog.ids)
    assert a.catalog.titles == b.catalog.titles and a.catalog.texts == b.catalog.texts
    for name in a.catalog.attributes:
        assert list(a.catalog.attributes[name]) == list(b.catalog.attributes[name])
    np.testing.assert_array_equal(_interaction_rows(a.interactions), _interaction_rows(b.interactions))
    np.testing.assert_array_equal(_interaction_rows(a.new_item_interactions),
                                  _interaction_rows(b.new_item_interactions))
    np.testing.assert_array_equal(a.affinity(), b.affinity())
    paths_a = [p for p in a.catalog.image_paths if p]
    paths_b = [p for p in b.catalog.image_paths if p]
    assert [Path(p).name for p in paths_a] == [Path(p).name for p in paths_b] and len(paths_a) > 30
    for pa, pb in zip(paths_a, paths_b):
        assert pa != pb and Path(pa).read_bytes() == Path(pb).read_bytes()

    other = make_world(WorldConfig(seed=8, **SMALL), None)
    assert other.catalog.texts != a.catalog.texts
    assert not np.array_equal(_interaction_rows(other.interactions), _interaction_rows(a.interactions))


def test_rebuild_reuses_image_files_and_leaves_no_temporaries(tmp_path: Path) -> None:
    first = make_world(WorldConfig(**SMALL), tmp_path)
    paths = [Path(p) for p in first.catalog.image_paths if p]
    stamps = [p.stat().st_mtime_ns for p in paths]
    again = make_world(WorldConfig(**SMALL), tmp_path)
    assert again.catalog.image_paths == first.catalog.image_paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    assert not list(tmp_path.rglob("*.tmp"))
    changed = make_world(WorldConfig(**{**SMALL, "image_width": 96, "image_height": 128}), tmp_path)
    assert changed.image_dir != first.image_dir
    with Image.open(next(p for p in changed.catalog.image_paths if p)) as im:
        assert im.size == (96, 128)


# ----------------------------------------------------------------------------------------- the catalog

def test_catalog_and_interaction_layout(world: World) -> None:
    cfg = world.config
    n_total = cfg.n_items + cfg.n_new_items
    assert len(world.catalog) == n_total and world.catalog.ids[0] == "S000000"
    np.testing.assert_array_equal(world.new_item_codes, np.arange(cfg.n_items, n_total))
    assert set(world.catalog.attributes) >= {"category", "colour", "pattern"}
    assert world.catalog.attributes["category"].dtype == object

    train, future = world.interactions, world.new_item_interactions
    for inter in (train, future):
        assert list(inter.item_ids) == list(world.catalog.ids) and inter.n_users == cfg.n_users
        assert len(inter.unique_pairs()) == len(inter)
    assert train.items.max() < cfg.n_items and future.items.min() >= cfg.n_items
    assert train.timestamps.min() >= cfg.start_timestamp and train.timestamps.max() < cfg.cutoff_timestamp
    assert future.timestamps.min() >= cfg.cutoff_timestamp
    lo, hi = cfg.interactions_per_user
    assert lo <= train.user_counts().min() and train.user_counts().max() <= hi

    with Image.open(next(p for p in world.catalog.image_paths if p)) as im:
        assert im.format == "JPEG" and im.size == (cfg.image_width, cfg.image_height)


def test_missing_modalities_follow_the_configured_fractions(world: World) -> None:
    n_total = len(world.catalog)
    assert 0 < sum(t == "" for t in world.catalog.texts) < 0.3 * n_total
    assert 0 < sum(p is None for p in world.catalog.image_paths) < 0.2 * n_total
    assert all(world.catalog.titles)
    complete = make_world(WorldConfig(missing_text_fraction=0.0, missing_image_fraction=0.0, **SMALL), None)
    assert all(complete.catalog.texts)
    bare = make_world(WorldConfig(missing_text_fraction=1.0, **SMALL), None)
    assert not any(bare.catalog.texts) and all(bare.catalog.titles)


# ---------------------------------------------------------------------------------------------- images

def test_garment_colour_in_pixels_matches_colour_attribute(world: World) -> None:
    palette_names = list(COLOURS)
    palette = np.asarray(list(COLOURS.values()), dtype=float)
    codes = [i for i, p in enumerate(world.catalog.image_paths) if p]
    dominant = []
    for i in codes:
        pixels = _pixels(world.catalog.image_paths[i])
        dominant.append(np.median(pixels[_garment_mask(pixels)], axis=0))
    dominant = np.asarray(dominant)
    tagged = np.asarray([palette_names.index(world.catalog.attributes["colour"][i]) for i in codes])
    nearest = np.argmin(((dominant[:, None] - palette[None]) ** 2).sum(-1), axis=1)
    assert (nearest == tagged).mean() > 0.9
    for k, name in enumerate(palette_names):
        mean = dominant[tagged == k].mean(axis=0)
        assert np.argmin(((palette - mean) ** 2).sum(-1)) == k, f"items tagged {name} look {mean}"


def test_nearest_centroid_on_downscaled_pixels_predicts_category(world: World) -> None:
    codes = [i for i, p in enumerate(world.catalog.image_paths) if p]
    features = []
    for i in codes:  # the silhouette, cropped to the garment: each item is framed its own way
        mask = Image.fromarray(_garment_mask(_pixels(world.catalog.image_paths[i])).astype(np.uint8) * 255)
        mask = mask.crop(mask.getbbox())
        features.append(np.asarray(mask.resize((16, 20), Image.Resampling.BOX), dtype=float).ravel() / 255)
    features = np.asarray(features)
    labels = np.asarray([CATEGORIES.index(world.catalog.attributes["category"][i]) for i in codes])
    train = np.arange(len(codes)) % 2 == 0
    centroids = np.stack([features[train & (labels == c)].mean(axis=0) for c in range(len(CATEGORIES))])
    predicted = np.argmin(((features[~train][:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    chance = 1 / len(CATEGORIES)
    assert (predicted == labels[~train]).mean() > 4 * chance


def test_patterns_are_printed_on_the_garment(world: World) -> None:
    spread = {p: [] for p in PATTERNS}
    for i, path in enumerate(world.catalog.image_paths):
        if path:
            pixels = _pixels(path)
            luminance = pixels[_garment_mask(pixels)] @ np.array([0.299, 0.587, 0.114])
            spread[world.catalog.attributes["pattern"][i]].append(luminance.std())
    solid = np.median(spread["solid"])
    for pattern in PATTERNS[1:]:
        assert np.median(spread[pattern]) > solid, pattern


def _thumbnail_correlations(world: World) -> tuple[np.ndarray, list[int]]:
    """What a photo check compares (mmrec.screen_windows.PhotoCheck): correlations of the items' 15 x 12 colour
    thumbnails, each centred on its mean (the diagonal set to -1), and the items with a photo."""
    codes = [i for i, p in enumerate(world.catalog.image_paths) if p]
    photos = [Image.open(world.catalog.image_paths[i]) for i in codes]
    thumbs = PhotoCheck(size=(15, 12)).thumbnails(photos).flatten(1).double()
    thumbs = thumbs - thumbs.mean(1, keepdim=True)
    thumbs = thumbs / thumbs.norm(dim=1, keepdim=True)
    return (thumbs @ thumbs.T).fill_diagonal_(-1).numpy(), codes


def test_every_item_has_its_own_photo_even_as_a_thumbnail(world: World, tmp_path: Path) -> None:
    corr, codes = _thumbnail_correlations(world)
    attrs = world.catalog.attributes
    kind = [tuple(attrs[k][i] for k in ("category", "colour", "pattern")) for i in codes]
    assert len(set(kind)) < len(kind) - 20  # many items share all three attributes...
    assert corr.max() < 0.985  # ...yet no two photos are alike pixel for pixel
    assert np.median(corr.max(axis=1)) < 0.93
    plain, _ = _thumbnail_correlations(make_world(WorldConfig(distinct_looks=False), tmp_path))
    assert plain.max() > 0.99  # every item drawn alike: those items share a photo up to jitter
    looks = item_looks(world.config.seed, attrs)
    for category in CATEGORIES:  # every item of a category framed or backed its own way (fewer than 96 each)
        of = [looks[i] for i in range(len(looks)) if attrs["category"][i] == category]
        assert len(set(of)) == len(of), category


def test_contact_sheet_tiles_the_items(world: World) -> None:
    sheet = contact_sheet(world.catalog, range(8), columns=4, tile=(64, 80))
    assert sheet.size[0] == 4 * 64 and sheet.size[1] > 2 * 80


# ------------------------------------------------------------------------------------------------ text

def test_text_mentions_colour_and_category(world: World) -> None:
    attrs = world.catalog.attributes
    described = [i for i, t in enumerate(world.catalog.texts) if t]
    for i in described:
        text = world.catalog.texts[i].lower()
        assert attrs["colour"][i] in text, (attrs["colour"][i], text)
        assert any(w.lower() in text for w in CATEGORY_WORDS[attrs["category"][i]]), (attrs["category"][i], text)
    for i, title in enumerate(world.catalog.titles):
        assert any(w.lower() in title.lower() for w in CATEGORY_WORDS[attrs["category"][i]]), title
    assert len(set(world.catalog.texts[i] for i in described)) > 0.8 * len(described)


# ---------------------------------------------------------------------------------------- ground truth

def _one_hot_content(world: World) -> np.ndarray:
    columns = []
    for name in ("category", "colour", "pattern"):
        values = world.catalog.attributes[name]
        columns.append((values[:, None] == np.unique(values)[None, :]).astype(float))
    return np.concatenate(columns, axis=1)


def _recall_at_10(scores: np.ndarray, world: World, users: np.ndarray) -> float:
    """Mean over users of |top-10 new items ∩ future new items| / |future new items|."""
    future = world.new_item_interactions
    relevant = np.zeros((world.config.n_users, len(world.new_item_codes)), dtype=bool)
    relevant[future.users, future.items - world.config.n_items] = True
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    hits = np.take_along_axis(relevant[users], top, axis=1).sum(axis=1)
    return float((hits / relevant[users].sum(axis=1)).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_content_knn_beats_popularity_and_random_on_new_items(seed: int) -> None:
    world = make_world(WorldConfig(seed=seed), None)
    users = np.unique(world.new_item_interactions.users)
    content = _one_hot_content(world)
    history = np.zeros((world.config.n_users, len(world.catalog)))
    history[world.interactions.users, world.interactions.items] = 1.0
    user_vectors = history @ content / history.sum(axis=1, keepdims=True)
    new = world.new_item_codes

    content_recall = _recall_at_10(user_vectors[users] @ content[new].T, world, users)
    popularity = np.broadcast_to(world.interactions.item_counts()[new].astype(float), (len(users), len(new)))
    popularity_recall = _recall_at_10(popularity, world, users)
    random_recall = _recall_at_10(np.random.default_rng(seed).random((len(users), len(new))), world, users)
    oracle_recall = _recall_at_10(world.affinity(users, new), world, users)
    assert content_recall > 2 * random_recall
    assert content_recall > 2 * popularity_recall
    assert oracle_recall > content_recall


def test_affinity_and_popularity_drive_training_purchases() -> None:
    world = make_world(WorldConfig(), None)
    warm = world.warm_item_codes
    scores = world.affinity(None, warm)
    percentile = scores.argsort(axis=1).argsort(axis=1) / (len(warm) - 1)
    bought = percentile[world.interactions.users, world.interactions.items]
    assert bought.mean() > 0.75
    counts = world.interactions.item_counts()[warm]
    rank_corr = np.corrcoef(counts.argsort().argsort(), world.item_popularity[warm].argsort().argsort())[0, 1]
    assert rank_corr > 0.3


# ------------------------------------------------------------------------------------------ bad config

def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="WorldConfig: unknown key.*n_user"):
        from_dict(WorldConfig, {"n_user": 10})
    with pytest.raises(ValueError, match="colour_count"):
        make_world({"seed": 1, "colour_count": 3}, tmp_path)
    for bad in (0, -5):
        with pytest.raises(ValueError, match="n_items"):
            WorldConfig(n_items=bad)
    with pytest.raises(ValueError, match="interactions_per_user.*n_items=10"):
        WorldConfig(n_items=10, interactions_per_user=(5, 30))
    with pytest.raises(ValueError, match="image_format"):
        WorldConfig(image_format="gif")
    with pytest.raises(ValueError, match="start_date"):
        WorldConfig(start_date="June 2020")
    with pytest.raises(ValueError, match="noise"):
        WorldConfig(noise=1.5)
    with pytest.raises(TypeError, match="n_users"):
        WorldConfig(n_users=True)
    with pytest.raises(TypeError, match="distinct_looks"):
        WorldConfig(distinct_looks="yes")
    assert from_dict(WorldConfig, {"interactions_per_user": [2, 4]}).interactions_per_user == (2, 4)
    assert from_dict(WorldConfig, to_dict(WorldConfig(seed=3))) == WorldConfig(seed=3)
