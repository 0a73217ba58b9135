"""The browser renderer: a session drawn as HTML pages by headless Chromium is written in app_sim's recording
format, keeps app_sim's timeline, and its truth matches the pixels (product photos, visible grid cards)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrec.calibration import recording_truth
from mmrec.config import from_dict
from mmrec.datasets import app_sim, browser_pages
from mmrec.datasets.browser_pages import BrowserConfig
from mmrec.datasets.frames import shard_frames, video_frames
from mmrec.datasets.synthetic import WorldConfig, make_world
from mmrec.grounding import NO_ITEM

SIZE = (180, 320)
FAST = dict(dwell_home=(0.2, 0.3), dwell_grid=(0.2, 0.3), dwell_back=(0.1, 0.2), dwell_product=(0.3, 0.4),
            dwell_distractor=(0.2, 0.3), dwell_cart=(0.2, 0.3), dwell_checkout=(0.2, 0.3),
            dwell_confirmation=(0.1, 0.2), scroll_speed=(1500.0, 2500.0), grid_items=(9, 12), distractors=(1, 1),
            notification_prob=0.0, cursor="none", jpeg_quality=None, transition_seconds=0.0)
needs_chromium = pytest.mark.skipif(not browser_pages.chromium_available(),
                                    reason=f"chromium not installed at {browser_pages.DEFAULT_CHROMIUM}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic world with pictures."""
    return make_world(WorldConfig(seed=3, n_users=30, n_items=40, n_new_items=4, interactions_per_user=(3, 8)),
                      tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def recorded(world, tmp_path_factory: pytest.TempPathFactory):
    """One purchase drawn by both renderers from the same seed: (sequence, browser folder, app_sim folder)."""
    sequence = app_sim.sessions_from_purchases(world.interactions, 1, min_len=2, seed=0, max_len=1)[0]
    folder = tmp_path_factory.mktemp("browser")
    app_folder = tmp_path_factory.mktemp("app")
    browser_pages.record_sequence(world.catalog, sequence, folder, seed=4, size=SIZE, fps=30, **FAST)
    app_sim.record_sequence(world.catalog, sequence, app_folder, seed=4, size=SIZE, fps=30, **FAST)
    return sequence, folder, app_folder


def _frames(folder: Path) -> dict[int, np.ndarray]:
    return {f.index: f.image.astype(np.int16) for f in video_frames(folder / "recording.mp4")}


def _cover(path: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """A photo as CSS ``object-fit: cover`` centred draws it into ``box`` (screen pixels)."""
    w, h = box[2] - box[0], box[3] - box[1]
    with Image.open(path) as im:
        photo = im.convert("RGB")
    scale = max(w / photo.width, h / photo.height)
    cw, ch = w / scale, h / scale
    left, top = (photo.width - cw) / 2, (photo.height - ch) / 2
    return np.asarray(photo.resize((w, h), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch)),
                      dtype=np.int16)


def _nearest_is(world, frame: np.ndarray, box: list[float], item: int) -> bool:
    """The frame's pixels inside ``box`` are the photo of ``item`` (nearest of all catalog photos; the
    synthetic world repeats photos, so a tie with the same picture counts). False: the item has no photo."""
    if world.catalog.image_paths[item] is None:
        return False
    l, t, r, b = (int(round(v)) for v in box)
    assert r - l >= 12 and b - t >= 12, box
    shot = frame[t:b, l:r]
    mw, mh = (r - l) // 4, (b - t) // 4  # inner half: no rounded corners (round thumbnails) or borders
    diffs = np.array([np.abs(_cover(p, (l, t, r, b))[mh:-mh, mw:-mw] - shot[mh:-mh, mw:-mw]).mean()
                      if p is not None else np.inf for p in world.catalog.image_paths])
    typical = np.median(diffs[np.isfinite(diffs)])  # other photos: a wrong box is about as far from all of them
    assert diffs[item] <= diffs.min() + 1.0 and diffs[item] < 0.6 * typical, (item, diffs[item], diffs.min(), typical)
    return True


def test_missing_chromium_is_a_one_line_error(world, tmp_path: Path) -> None:
    sequence = app_sim.sessions_from_purchases(world.interactions, 1, seed=0, max_len=1)[0]
    with pytest.raises(FileNotFoundError, match="chromium not found at /nonexistent/chromium: apt-get install"):
        browser_pages.record_sequence(world.catalog, sequence, tmp_path, seed=0,
                                      browser=BrowserConfig(chromium="/nonexistent/chromium"))
    with pytest.raises(ValueError, match="unknown"):
        from_dict(BrowserConfig, {"chromium": "/usr/bin/chromium", "headful": True})
    with pytest.raises(ValueError, match="css_width"):
        BrowserConfig(css_width=(500, 400))


def test_looks_vary_with_the_seed_and_pages_are_html() -> None:
    looks = [browser_pages.look_for(s) for s in range(12)]
    assert len({(x.grid, x.product, x.feed, x.body_font, x.background) for x in looks}) >= 8
    assert browser_pages.look_for(3) == browser_pages.look_for(3)
    entry = browser_pages._Entry(0, "Tank <top>", "9.99 USD", "Soft", None)
    page = browser_pages.page_html(looks[0], "product", [entry])
    assert "Tank &lt;top&gt;" in page and 'data-action="add_to_cart"' in page and 'data-photo="0"' in page


@needs_chromium
def test_truth_has_app_sims_format_and_timeline(recorded, world) -> None:
    sequence, folder, app_folder = recorded
    session, data = app_sim.load_truth(folder / "truth.json")
    app_session, app_data = app_sim.load_truth(app_folder / "truth.json")
    assert set(data) == set(app_data) | {"renderer"}
    assert all(set(s) == set(a) for s, a in zip(data["states"], app_data["states"]))
    assert set(data["events"][0]) == set(app_data["events"][0])
    # the same session: screens, items and times as app_sim plans them; only positions are the browser's
    strip = lambda s: (s.start, s.end, s.kind, s.item, s.items, s.variant)  # noqa: E731
    assert [strip(s) for s in session.states] == [strip(s) for s in app_session.states]
    assert session.events == app_session.events
    assert data["renderer"]["name"] == "chromium-html" and "Chrome" in data["renderer"]["browser"]
    assert len(data["renderer"]["layouts"]) == len(session.states)
    frames = _frames(folder)
    assert len(frames) == session.n_frames == round(session.duration * session.fps)
    assert next(iter(frames.values())).shape == (SIZE[1], SIZE[0], 3)
    video, truth = recording_truth(folder, world.catalog.ids)  # what `mmrec stream calibrate` reads
    assert np.array_equal(truth, session.product_per_frame()) and (truth != NO_ITEM).any()


@needs_chromium
def test_product_and_grid_photos_are_where_the_truth_says(recorded, world) -> None:
    _, folder, _ = recorded
    session, data = app_sim.load_truth(folder / "truth.json")
    frames = _frames(folder)
    checked = {"product": 0, "grid": 0}
    for k, (state, layout) in enumerate(zip(session.states, data["renderer"]["layouts"])):
        last = frames[session.frame_range(state)[-1]]
        if state.kind == "product":
            checked["product"] += _nearest_is(world, last, layout["photos"]["0"], int(state.item))
        elif state.kind in ("grid", "home"):
            offset = state.scroll[1]
            header = 52 * layout["scale"]  # the sticky header hides what scrolls under it
            assert abs(layout["top"] - header) < 1.5
            # the cards wholly in view (from the measured layouts) show their items' photos, in the frame
            on_screen = browser_pages.items_on_screen(data, k, state.end - 1e-6, min_fraction=0.999)
            assert on_screen or state.kind == "home"
            for item, _share in on_screen:
                l, t, r, b = layout["photos"][str(state.items.index(item))]
                checked["grid"] += _nearest_is(world, last, [l, t - offset, r, b - offset], item)
            following = session.states[k + 1]
            if following.kind == "product":  # the tapped card is the next product page's, and in view
                card = layout["cards"][str(state.items.index(following.item))]
                assert card[0] <= state.tap[0] <= card[2] and card[1] <= state.tap[1] + offset <= card[3]
    assert checked["product"] >= 2 and checked["grid"] >= 4


@needs_chromium
def test_a_recording_is_reproducible(recorded, world, tmp_path: Path) -> None:
    """The same sequence and seed give the same video, byte for byte (Chromium draws at an integer pixel
    ratio, where a capture does not depend on when it is taken); frame shards hold the same frames."""
    sequence, folder, _ = recorded
    browser_pages.record_sequence(world.catalog, sequence, tmp_path, seed=4, size=SIZE, fps=30, frame_shards=True,
                                  frames_per_shard=40, **FAST)
    assert (tmp_path / "recording.mp4").read_bytes() == (folder / "recording.mp4").read_bytes()
    _, again = app_sim.load_truth(tmp_path / "truth.json")
    _, first = app_sim.load_truth(folder / "truth.json")
    assert {k: v for k, v in again.items() if k not in ("shards", "config")} == \
           {k: v for k, v in first.items() if k not in ("shards", "config")}
    shards = [tmp_path / name for name in again["shards"]]
    assert len(shards) > 1 and all(p.is_file() for p in shards)
    stored = list(shard_frames(shards))
    assert [f.index for f in stored] == list(range(len(stored))) and len(stored) == again["n_frames"]
    assert np.allclose([f.timestamp for f in stored], np.arange(len(stored)) / 30)
