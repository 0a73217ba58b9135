"""App screens and the screen-recording simulator: determinism, pixels that match the ground truth,
a contiguous timeline driven by real purchases, and an mp4 that decord reads back frame for frame."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrec.config import from_dict
from mmrec.data import Catalog
from mmrec.datasets import app_sim, screens
from mmrec.datasets.app_sim import SimConfig
from mmrec.datasets.synthetic import WorldConfig, make_world

SIZE = (180, 320)
FAST = dict(width=SIZE[0], height=SIZE[1], fps=30, dwell_home=(0.2, 0.4), dwell_grid=(0.2, 0.4),
            dwell_back=(0.1, 0.2), dwell_product=(0.3, 0.5), dwell_distractor=(0.2, 0.3), dwell_cart=(0.2, 0.3),
            dwell_checkout=(0.2, 0.3), dwell_confirmation=(0.1, 0.2), scroll_speed=(1500.0, 2500.0),
            grid_items=(5, 8), distractors=(1, 1), notification_seconds=(0.2, 0.4))
QUIET = dict(notification_prob=0.0, cursor="none", jpeg_quality=None, transition_seconds=0.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic world with pictures."""
    return make_world(WorldConfig(seed=3, n_users=30, n_items=40, n_new_items=4, interactions_per_user=(3, 8)),
                      tmp_path_factory.mktemp("world"))


def _quadrant_photo(w: int = 120, h: int = 180) -> Image.Image:
    """A photo whose four quadrants have four saturated colours that no screen chrome uses."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 255)
    a[: h // 2, w // 2:] = (0, 255, 255)
    a[h // 2:, : w // 2] = (255, 255, 0)
    a[h // 2:, w // 2:] = (0, 0, 255)
    return Image.fromarray(a)


def _px(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


# ------------------------------------------------------------------------------------------- screens

def test_product_page_is_deterministic_and_varies_with_seed() -> None:
    photo = _quadrant_photo()
    a = screens.render_product_page(photo, "Strap top", 9.99, "Jersey top with narrow straps. " * 8, seed=4)
    b = screens.render_product_page(photo, "Strap top", 9.99, "Jersey top with narrow straps. " * 8, seed=4)
    c = screens.render_product_page(photo, "Strap top", 9.99, "Jersey top with narrow straps. " * 8, seed=5)
    assert a.size == (360, 640) and a.mode == "RGB"
    assert np.array_equal(_px(a), _px(b))
    assert not np.array_equal(_px(a), _px(c))
    boxes = {screens.product_page_layout(seed=s).frame for s in range(8)}
    assert len(boxes) > 4  # photo position/scale jitter


def test_product_page_shows_the_photo_where_the_layout_says() -> None:
    photo = _quadrant_photo()
    for seed in range(4):
        page = _px(screens.render_product_page(photo, "Title", 19.5, "Words " * 30, size=(360, 640), seed=seed))
        l, t, r, b = screens.product_page_layout((360, 640), seed, photo.size).photo
        assert (r - l) >= 0.7 * 360 * 0.74 * 0.9  # the photo is large
        my, mx = (t + b) // 2, (l + r) // 2
        for (y0, y1, x0, x1), colour in (((t + 4, my - 4, l + 4, mx - 4), (255, 0, 255)),
                                         ((t + 4, my - 4, mx + 4, r - 4), (0, 255, 255)),
                                         ((my + 4, b - 4, l + 4, mx - 4), (255, 255, 0)),
                                         ((my + 4, b - 4, mx + 4, r - 4), (0, 0, 255))):
            assert np.abs(page[y0:y1, x0:x1] - colour).max() <= 2
    empty = _px(screens.render_product_page(None, "No photo", None, "", seed=0))
    assert not (np.abs(empty - (255, 0, 255)).max(axis=2) <= 2).any()  # placeholder, no photo colours


def test_grid_truth_matches_pixels_while_scrolling() -> None:
    colours = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 0, 255), (0, 255, 255), (255, 255, 0), (128, 0, 255),
               (255, 128, 0), (0, 128, 128)]
    photos = [Image.new("RGB", (100, 150), c) for c in colours]
    page = screens.grid_page(photos, [f"Item {i}" for i in range(9)], [5.0 + i for i in range(9)], seed=2,
                             columns=2, size=(360, 640))
    assert page.layout.max_offset > 0
    for offset in (0, page.layout.max_offset // 2, page.layout.max_offset):
        frame = _px(page.frame(offset))
        visible = dict(page.layout.visible(offset))
        for i, colour in enumerate(colours):
            hits = (np.abs(frame - colour).max(axis=2) <= 2).sum()
            if visible.get(i, 0) == 1.0:
                l, t, r, b = page.layout.screen_box(i, offset)
                assert (np.abs(frame[t + 5, (l + r) // 2] - colour) <= 2).all()
            if i not in visible:
                assert hits == 0, f"item {i} is drawn at offset {offset} but the layout says it is hidden"


def test_overlays_change_pixels_and_validate() -> None:
    page = screens.render_cart([_quadrant_photo()], ["Coat"], [49.0], seed=1)
    noted = screens.add_notification(page, "Hello there", np.random.default_rng(0))
    assert not np.array_equal(_px(noted)[:80], _px(page)[:80]) and np.array_equal(_px(noted)[200:], _px(page)[200:])
    touched = screens.add_cursor(page, (100, 300), pressed=True)
    assert (np.abs(_px(touched) - _px(page)).sum(axis=2) > 0).sum() > 300
    noisy = screens.jpeg_noise(page, 10)
    assert noisy.size == page.size and 0 < np.abs(_px(noisy) - _px(page)).mean() < 20
    with pytest.raises(ValueError, match="quality"):
        screens.jpeg_noise(page, 0)
    with pytest.raises(ValueError, match="size"):
        screens.render_product_page(None, "x", 1.0, "", size=(50, 50))


# ------------------------------------------------------------------------------------------ sessions

def test_sessions_use_real_purchase_sequences(world) -> None:
    inter = world.interactions
    seqs = app_sim.sessions_from_purchases(inter, 5, min_len=4, seed=1)
    assert len(seqs) == 5 and len({s.user for s in seqs}) == 5
    assert [s.user for s in seqs] == [s.user for s in app_sim.sessions_from_purchases(inter, 5, min_len=4, seed=1)]
    for s in seqs:
        rows = np.flatnonzero(inter.users == s.user)
        rows = rows[np.argsort(inter.timestamps[rows], kind="stable")]
        assert s.items.tolist() == inter.items[rows].tolist() and len(s.items) >= 4
        assert np.all(np.diff(s.timestamps) >= 0)
    tail = app_sim.sessions_from_purchases(inter, 5, min_len=4, seed=1, max_len=2)
    assert all(t.items.tolist() == s.items[-2:].tolist() for t, s in zip(tail, seqs))
    with pytest.raises(ValueError, match="no user has"):
        app_sim.sessions_from_purchases(inter, 1, min_len=10_000)


def test_timeline_is_contiguous_and_events_follow_the_purchases(world) -> None:
    seq = app_sim.sessions_from_purchases(world.interactions, 1, min_len=3, seed=0, max_len=4)[0]
    config = SimConfig(seed=2, **FAST)
    session = app_sim.simulate_session(world.catalog, seq.items, config, timestamps=seq.timestamps, user_id=seq.user_id)
    again = app_sim.simulate_session(world.catalog, seq.items, config, timestamps=seq.timestamps, user_id=seq.user_id)
    assert session.states == again.states and session.events == again.events
    states = session.states
    assert states[0].start == 0 and all(a.end == b.start for a, b in zip(states, states[1:]))
    for s in states:
        assert s.kind in app_sim.SCREEN_KINDS and s.end > s.start
        assert abs(s.start * config.fps - round(s.start * config.fps)) < 1e-6  # whole frames
        assert (s.item is not None) == (s.kind == "product")
    assert session.n_frames == sum(len(session.frame_range(s)) for s in states) == round(states[-1].end * config.fps)
    purchases = [e.item for e in session.events if e.kind == "purchase"]
    assert purchases == seq.items.tolist()
    carts = [e for e in session.events if e.kind == "cart"]
    assert [e.item for e in carts] == seq.items.tolist()
    for cart in carts:  # each add-to-cart ends that item's product page, which a view opened
        page = next(s for s in states if s.end == cart.timestamp)
        assert page.kind == "product" and page.item == cart.item
        assert app_sim.LogEvent(page.start, "view", cart.item) in session.events
    viewed = [e.item for e in session.events if e.kind == "view"]
    assert len(viewed) == 2 * len(seq.items)  # one distractor per bought item (config.distractors == (1, 1))
    assert session.state_at(states[3].start + 1e-9) == states[3]


def test_bad_inputs_raise_clear_errors(world) -> None:
    with pytest.raises(ValueError, match="fps"):
        SimConfig(fps=0)
    with pytest.raises(ValueError, match="width"):
        SimConfig(width=181)
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(SimConfig, {"fsp": 30})
    assert from_dict(SimConfig, {"dwell_product": [1, 2], "jpeg_quality": None}).dwell_product == (1.0, 2.0)
    with pytest.raises(ValueError, match="outside the catalog"):
        app_sim.simulate_session(world.catalog, [0, len(world.catalog)], SimConfig(**FAST))
    session = app_sim.simulate_session(world.catalog, [0], SimConfig(**FAST))
    with pytest.raises(ValueError, match="simulated at"):
        next(app_sim.render_frames(session, world.catalog, SimConfig(**{**FAST, "fps": 60})))


def test_broken_photo_is_a_counted_skip(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    catalog = Catalog(["a", "b"], ["Top", "Skirt"], ["", ""], [str(bad), None])
    cache = app_sim.PhotoCache(catalog, (120, 160))
    assert cache(0) is None and cache(1) is None and cache.skipped == {"a": 1}


# ----------------------------------------------------------------------------------------- rendering

def test_frames_follow_the_timeline_and_noise_is_separate(world) -> None:
    config = SimConfig(seed=5, **FAST, **QUIET)
    item = int(np.flatnonzero([p is not None for p in world.catalog.image_paths])[0])
    session = app_sim.simulate_session(world.catalog, [item], config)
    frames = list(app_sim.render_frames(session, world.catalog, config))
    assert len(frames) == session.n_frames
    assert [t for t, _ in frames] == [i / config.fps for i in range(session.n_frames)]
    page = next(s for s in session.states if s.kind == "product")
    photo = app_sim.PhotoCache(world.catalog, (SIZE[0], SIZE[0] * 4 // 3))(item)
    expected = screens.render_product_page(photo, world.catalog.titles[item], app_sim.item_price(world.catalog, item),
                                           world.catalog.texts[item], size=SIZE, seed=page.style + item,
                                           style_seed=page.style)
    for i in session.frame_range(page):
        assert np.array_equal(_px(frames[i][1]), _px(expected))
    noisy = SimConfig(seed=5, **FAST, notification_prob=1.0, cursor="touch", jpeg_quality=(20, 30))
    noisy_frames = app_sim.render_frames(session, world.catalog, noisy)
    diffs = [np.abs(_px(a) - _px(b)).mean() for (_, a), (_, b) in zip(frames, noisy_frames)]
    assert min(diffs) > 0  # every frame carries JPEG noise
    assert len(app_sim.plan_notifications(session, noisy)) == len(session.states)
    slide = SimConfig(seed=5, **FAST, **{**QUIET, "transition_seconds": 0.2})
    sliding = app_sim.render_frames(session, world.catalog, slide)
    changed = [i for i, ((_, a), (_, b)) in enumerate(zip(frames, sliding)) if not np.array_equal(_px(a), _px(b))]
    starts = [session.frame_range(s)[0] for s in session.states[1:]]
    assert changed and all(any(0 <= i - k < 6 for k in starts) for i in changed)  # only the first 0.2 s of a screen


def test_write_recording_reads_back_with_decord(world, tmp_path: Path) -> None:
    import decord
    import webdataset as wds

    seq = app_sim.sessions_from_purchases(world.interactions, 1, min_len=2, seed=4, max_len=2)[0]
    config = SimConfig(seed=1, **FAST, frame_shards=True, frames_per_shard=40, crf=18, notification_prob=0.3,
                       transition_seconds=0.0)
    session = app_sim.simulate_session(world.catalog, seq.items, config, timestamps=seq.timestamps)
    rec = app_sim.write_recording(session, world.catalog, config, tmp_path / "rec")
    assert rec.n_frames == session.n_frames and not list((tmp_path / "rec").glob("*.tmp"))

    vr = decord.VideoReader(str(rec.video))
    assert len(vr) == session.n_frames and vr[0].shape == (SIZE[1], SIZE[0], 3)
    starts = vr.get_frame_timestamp(range(len(vr)))[:, 0]
    assert np.allclose(starts, np.arange(len(vr)) / config.fps, atol=1e-3)
    decoded = vr.get_batch(range(len(vr))).asnumpy().astype(np.int16)
    rendered = np.stack([_px(img) for _, img in app_sim.render_frames(session, world.catalog, config)])
    for state in session.states[1:]:  # at every screen change, frame k is the new screen, not the old one
        k = session.frame_range(state)[0]
        here, before = np.abs(decoded[k] - rendered[k]).mean(), np.abs(decoded[k] - rendered[k - 1]).mean()
        assert here < 8 and (here < before or np.abs(rendered[k] - rendered[k - 1]).mean() < 1)

    truth = json.loads(rec.truth.read_text())
    assert truth["n_frames"] == len(vr) and truth["time_base"] == f"1/{config.fps}"
    assert truth["item_ids"] == [str(world.catalog.ids[i]) for i in seq.items]
    loaded, _ = app_sim.load_truth(rec.truth)
    assert loaded.states == session.states and loaded.events == session.events
    broken = tmp_path / "broken"  # a truth.json of another shape is one error naming the file, not an AttributeError
    broken.mkdir()
    for text in ("[1, 2]", json.dumps({**truth, "states": [None]}), json.dumps({k: v for k, v in truth.items()
                                                                               if k != "states"})):
        (broken / "truth.json").write_text(text)
        with pytest.raises(ValueError, match=r"broken/truth\.json: "):
            app_sim.load_truth(broken / "truth.json")

    samples = list(wds.WebDataset([str(p) for p in rec.shards], shardshuffle=False).decode("rgb8"))
    assert len(rec.shards) == -(-session.n_frames // 40) and len(samples) == session.n_frames
    meta = [json.loads(s["json"]) if isinstance(s["json"], bytes) else s["json"] for s in samples]
    assert [m["index"] for m in meta] == list(range(session.n_frames))
    assert [m["timestamp"] for m in meta] == [i / config.fps for i in range(session.n_frames)]
    assert samples[0]["jpg"].shape == (SIZE[1], SIZE[0], 3)


def test_hm_slice_session_shows_real_photos(hm_root: Path) -> None:
    from mmrec.datasets import hm

    catalog, interactions = hm.load(hm_root)
    seqs = app_sim.sessions_from_purchases(interactions, 3, min_len=3, seed=0, max_len=3)
    for s in seqs:  # every (item, day) is one of the user's real purchases, in time order
        rows = interactions.users == s.user
        real = set(zip(interactions.items[rows].tolist(), interactions.timestamps[rows].tolist()))
        assert set(zip(s.items.tolist(), s.timestamps.tolist())) <= real and np.all(np.diff(s.timestamps) >= 0)
    with_photo = next((s for s in seqs if any(catalog.image_paths[i] for i in s.items)), None)
    if with_photo is None:
        pytest.skip("the drawn H&M users have no product photos")
    config = SimConfig(seed=0, **FAST, **QUIET)
    session = app_sim.simulate_session(catalog, with_photo.items, config, timestamps=with_photo.timestamps)
    assert [e.item for e in session.events if e.kind == "purchase"] == with_photo.items.tolist()
    item = next(i for i in with_photo.items.tolist() if catalog.image_paths[i])
    page = next(s for s in session.states if s.kind == "product" and s.item == item)
    first = session.frame_range(page)[0]
    for i, (_, img) in enumerate(app_sim.render_frames(session, catalog, config)):
        if i == first:
            with Image.open(catalog.image_paths[item]) as im:
                photo = im.convert("RGB")
            l, t, r, b = screens.product_page_layout(SIZE, page.style, photo.size).photo
            crop = img.crop((l, t, r, b))
            expect = photo.resize(crop.size, Image.Resampling.BILINEAR)
            assert np.abs(_px(crop) - _px(expect)).mean() < 12
            break
