"""Grounding by searching a screen for the item's photo: the windows, their crops, and the windowed Grounder."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import mmrec.screen_windows as screen_windows
from mmrec.fusion.screen_tower import ScreenSpaceConfig, train_screen_space
from mmrec.grounding import Grounder, GroundingSettings, load_grounding, save_grounding
from mmrec.screen_windows import AreaTable, PhotoCheck, ScreenWindows, crop_windows, iou, jittered_windows
from mmrec.space import SpaceConfig, UnifiedSpace, tiny_vit


@pytest.mark.parametrize("size", [(180, 320), (360, 640), (320, 180)])
def test_windows_cover_the_screen_edge_to_edge_in_steps(size):
    width, height = size
    windows = ScreenWindows(widths=(0.5, 0.7, 1.0), aspect=1.5, step=0.25)
    boxes = windows.boxes(width, height)
    assert len(boxes) == windows.count(width, height)
    sizes = np.round(boxes[:, 2] - boxes[:, 0], 6)
    for w in np.unique(sizes):
        same = boxes[sizes == w]
        h = same[0, 3] - same[0, 1]
        assert h == pytest.approx(1.5 * w) and h <= height + 1e-9  # a window taller than the screen shrinks
        assert same[:, 0].min() == pytest.approx(0) and same[:, 2].max() == pytest.approx(width)
        assert same[:, 1].min() == pytest.approx(0) and same[:, 3].max() == pytest.approx(height)
        for axis, length in ((0, w), (1, h)):
            starts = np.unique(np.round(same[:, axis], 6))
            assert len(starts) == 1 or np.diff(starts).max() <= 0.25 * length + 1e-6


def test_windows_fitted_to_photo_boxes_hold_every_photo_closely_and_are_few():
    rng = np.random.default_rng(0)
    width, height = 180, 320
    w = rng.uniform(90, 120, 200)
    x, y = rng.uniform(10, 170 - w), rng.uniform(30, 60, 200)
    photos = np.stack([x, y, x + w, y + 1.5 * w], axis=1)
    windows = ScreenWindows.fit(photos, (width, height), aspect=1.5, step=0.25)
    assert windows.widths[0] == pytest.approx(90 / 180, rel=0.02) and windows.widths[-1] >= 120 / 180 * 0.99
    boxes = windows.boxes(width, height)
    assert len(boxes) < ScreenWindows(widths=windows.widths).count(width, height)  # only where photos go
    best = np.array([max(iou(boxes, photo)) for photo in photos])
    assert best.min() > 0.6
    with pytest.raises(ValueError, match="region"):
        ScreenWindows(region=(0.5, 0.0, 0.4, 1.0))


def test_windows_reject_bad_settings():
    for bad in (dict(widths=()), dict(widths=(0.0,)), dict(widths=(1.2,)), dict(aspect=0), dict(step=0),
                dict(step=1.5)):
        with pytest.raises(ValueError, match="ScreenWindows"):
            ScreenWindows(**bad)


def test_crop_windows_takes_the_mean_of_the_area_under_each_pixel():
    screen = torch.zeros(1, 3, 40, 60)
    screen[:, :, 10:30, 20:40] = 200.0
    inside, whole = crop_windows(screen, np.array([[20, 10, 40, 30], [0, 0, 60, 40]]), (4, 4))
    torch.testing.assert_close(inside, torch.full((3, 4, 4), 200.0))
    assert whole.mean().item() == pytest.approx(200 * (20 * 20) / (40 * 60), rel=1e-4)
    with pytest.raises(ValueError, match="boxes"):
        crop_windows(screen, np.zeros((2, 3)), (4, 4))


def test_jittered_windows_stay_as_near_the_photo_as_the_grid_can_be():
    windows = ScreenWindows(widths=(0.5, 0.62, 0.78), aspect=1.5, step=0.25)
    photo = (30.0, 60.0, 130.0, 210.0)  # 100 x 150: the windows' aspect
    boxes = jittered_windows(photo, windows, 500, np.random.default_rng(0))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    np.testing.assert_allclose(h / w, 1.5)
    slack = windows.scale_slack()
    assert (w >= 100 / slack - 1e-6).all() and (w <= 100 * slack + 1e-6).all() and w.std() > 1
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    assert (abs(cx - 80) <= 0.125 * w + 1e-6).all() and (abs(cy - 135) <= 0.125 * h + 1e-6).all()


def _twin_space() -> UnifiedSpace:
    """A space whose screen tower and adapter are copies of the image ones: a window that is exactly an item's
    photo lands on that photo's vector."""
    tower = tiny_vit((48, 32), width=48, depth=1, heads=2, global_pool="avg")
    torch.manual_seed(0)
    space = UnifiedSpace(SpaceConfig(towers={"image": tower, "screen": tower}, dim=32, pairs=("screen-image",)))
    space.towers["screen"].load_state_dict(space.towers["image"].state_dict())
    space.adapters["screen"].load_state_dict(space.adapters["image"].state_dict())
    return space.eval()


def _photos(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(np.kron(rng.integers(0, 256, (6, 4, 3)), np.ones((16, 16, 1))).astype(np.uint8))
            for _ in range(n)]  # 96 x 64 blocky patterns, all different


def test_a_windowed_grounder_finds_a_photo_anywhere_on_a_busy_screen():
    space, photos = _twin_space(), _photos(6)
    windows = ScreenWindows(widths=(0.4, 0.6), aspect=1.5, step=0.25)
    boxes = windows.boxes(180, 320)
    rng = np.random.default_rng(2)
    screens, truth = [], []
    for k, box in enumerate(boxes[rng.choice(len(boxes), 6, replace=False)]):
        screen = Image.fromarray(rng.integers(0, 256, (320, 180, 3)).astype(np.uint8))  # noise everywhere else
        l, t, r, b = (int(round(v)) for v in box)
        screen.paste(photos[k].resize((r - l, b - t), Image.Resampling.BOX), (l, t))
        screens.append(screen)
        truth.append(k)
    items = space.embed_images(photos)
    codes, sims = Grounder(space, items, windows=windows, batch_size=4).similarities(screens)
    assert codes.tolist() == truth and (sims > 0.9).all()
    whole_codes, _ = Grounder(space, items).similarities(screens)  # the whole screen resized: noise wins
    assert (whole_codes != np.array(truth)).any()


def test_area_crops_are_exact_means_at_sub_pixel_places():
    from mmrec.screen_windows import AreaTable

    screen = torch.arange(3 * 20 * 30, dtype=torch.float32).view(3, 20, 30) % 7 * 30
    boxes = torch.tensor([[2.0, 3.0, 14.0, 15.0], [2.5, 3.25, 14.5, 15.25]])
    crops = AreaTable(screen[None]).crops(boxes[None], (4, 3))[0]
    torch.testing.assert_close(crops[0], crop_windows(screen[None], boxes[:1], (4, 3))[0])  # whole pixels
    l, t = 2.5 + 4 * 1, 3.25 + 3 * 2  # crop pixel (row 2, col 1) of the shifted box, 4 x 3 screen pixels
    xs, ys = np.arange(30), np.arange(20)
    wx = np.clip(np.minimum(xs + 1, l + 4) - np.maximum(xs, l), 0, None)
    wy = np.clip(np.minimum(ys + 1, t + 3) - np.maximum(ys, t), 0, None)
    expected = (screen.double().numpy() * wy[None, :, None] * wx[None, None, :]).sum((1, 2)) / 12
    np.testing.assert_allclose(crops[1, :, 2, 1].numpy(), expected, rtol=1e-4)


def test_one_area_table_cuts_every_window_of_its_screens_exactly():
    """The tower's windows and the check's shifts come from one table per screen: the same crops as tables
    built apart, exact for uint8 screens (integer sums) and for float ones; bad shapes are refused."""
    from mmrec.screen_windows import AreaTable

    rng = np.random.default_rng(5)
    screens = torch.from_numpy(rng.integers(0, 256, (2, 3, 64, 36), dtype=np.uint8))
    table = AreaTable(screens)
    boxes = torch.tensor([[[0.0, 0.0, 36.0, 64.0], [3.5, 7.25, 20.5, 31.0]]]).repeat(2, 1, 1)
    crops = table.crops(boxes, (4, 3))
    torch.testing.assert_close(crops, AreaTable(screens.float()).crops(boxes, (4, 3)), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(crops[1, 1], AreaTable(screens[1:]).crops(boxes[1:, 1:], (4, 3))[0, 0])
    cells = screens.double().view(2, 3, 4, 16, 3, 12).mean((3, 5))  # whole screen, 4 x 3 cells of 16 x 12 px
    torch.testing.assert_close(crops[:, 0].double(), cells, rtol=1e-6, atol=1e-4)
    check = PhotoCheck(candidates=2)
    thumbs = torch.rand(2, 2, 3, *check.size) * 255
    torch.testing.assert_close(check.match(table, boxes, thumbs), check.match(screens, boxes, thumbs))
    with pytest.raises(ValueError, match="screens"):
        AreaTable(screens[0])
    with pytest.raises(ValueError, match="boxes"):
        table.crops(boxes[:1], (4, 3))


def test_photo_check_names_the_photo_among_near_copies_and_rejects_other_screens():
    """The tower's candidates are re-ranked by their photo: the pasted one wins over near copies (the same
    pattern in other colours or shifted), also when the window is off by a few pixels; a screen without the
    photo matches none well."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (6, 4, 3))
    photos = [np.kron(base, np.ones((25, 25, 1))), np.kron(base[:, :, ::-1], np.ones((25, 25, 1))),
              np.kron(np.roll(base, 1, axis=0), np.ones((25, 25, 1))), np.kron(base * 0.9, np.ones((25, 25, 1)))]
    photos = [Image.fromarray(p.astype(np.uint8)) for p in photos]  # 100 x 150
    check = PhotoCheck(candidates=4)
    thumbnails = check.thumbnails(photos)
    screen = Image.new("RGB", (180, 320), (240, 240, 240))
    screen.paste(photos[0], (41, 57))
    x = torch.from_numpy(np.asarray(screen).copy()).permute(2, 0, 1)
    for box in ([41, 57, 141, 207], [45, 53, 145, 203]):  # exact, and off by 4 px (< margin 12.5 px)
        match = check.match(x[None], np.repeat(np.array([[box]], float), 4, 1), thumbnails[None])[0]
        assert int(match.argmax()) == 0 and match[0] > 0.95
    blank = torch.from_numpy(rng.integers(0, 256, (3, 320, 180)).astype(np.uint8))
    boxes = np.repeat(np.array([[[41, 57, 141, 207]]], float), 4, 1)
    assert check.match(blank[None], boxes, thumbnails[None]).max() < 0.5
    both = check.match(torch.stack([x, blank]), np.repeat(boxes, 2, 0), thumbnails.repeat(2, 1, 1, 1, 1))
    assert int(both[0].argmax()) == 0 and both[0, 0] > 0.95 and both[1].max() < 0.5  # screens batched
    mixed = np.array([[[41, 57, 141, 207], [45, 53, 145, 203], [41, 57, 141, 207], [0, 0, 100, 150]]], float)
    coarse = PhotoCheck(candidates=4, refine=0)  # without the finer pass, candidates are scored one by one
    alone = [float(coarse.match(x[None], mixed[:, k:k + 1], thumbnails[None, k:k + 1])[0, 0]) for k in range(4)]
    together = coarse.match(x[None], mixed, thumbnails[None])[0]
    np.testing.assert_allclose(together.numpy(), alone, rtol=1e-5)
    refined = check.match(x[None], mixed, thumbnails[None])[0]  # the finer pass only ever finds better shifts
    assert (refined >= together - 1e-6).all() and (refined > together + 1e-3).any()
    # every candidate is refined: its score does not depend on how the coarse grid ranked the others
    alone = [float(check.match(x[None], mixed[:, k:k + 1], thumbnails[None, k:k + 1])[0, 0]) for k in range(4)]
    np.testing.assert_allclose(refined.numpy(), alone, rtol=1e-5)
    best_two = PhotoCheck(candidates=4, refine=2).match(x[None], mixed, thumbnails[None])[0]
    assert (best_two <= refined + 1e-6).all() and (best_two < refined - 1e-3).any()
    with pytest.raises(ValueError, match="shifts"):
        PhotoCheck(shifts=4)
    with pytest.raises(ValueError, match="refine"):
        PhotoCheck(refine=-1)


def test_a_grounder_with_a_photo_check_needs_windows_and_thumbnails():
    space, photos = _twin_space(), _photos(3)
    items = space.embed_images(photos)
    check = PhotoCheck(candidates=2)
    with pytest.raises(ValueError, match="PhotoCheck"):
        Grounder(space, items, check=check, thumbnails=check.thumbnails(photos))
    windows = ScreenWindows(widths=(0.5,), step=0.25)
    box = windows.boxes(180, 320)[3]
    screen = Image.new("RGB", (180, 320), (30, 30, 30))
    l, t, r, b = (int(round(v)) for v in box)
    screen.paste(photos[1].resize((r - l, b - t), Image.Resampling.BOX), (l, t))
    grounder = Grounder(space, items, windows=windows, check=check, thumbnails=check.thumbnails(photos),
                        batch_size=2)
    small = screen.resize((90, 160), Image.Resampling.BOX)  # another size: grounded in a group of its own
    codes, sims = grounder.similarities([screen, np.asarray(screen), small, screen])
    assert codes.tolist() == [1, 1, 1, 1] and (sims > 0.9).all()  # a correlation now, not a cosine in the space


def test_search_in_item_blocks_gives_the_same_result_and_stages_are_timed(monkeypatch):
    """A search that would hold more window-item scores than `SEARCH_SCORES` scores the items a block at a
    time: the same best windows and similarities (so a large catalogue does not need [screens, windows,
    items] at once); with ``stage_seconds`` a dict, each stage of `similarities` adds its seconds there."""
    import mmrec.grounding as grounding

    space, photos = _twin_space(), _photos(7)
    windows = ScreenWindows(widths=(0.4, 0.6), aspect=1.5, step=0.25)
    rng = np.random.default_rng(4)
    screens = [Image.fromarray(rng.integers(0, 256, (320, 180, 3)).astype(np.uint8)) for _ in range(3)]
    l, t, r, b = (int(round(v)) for v in windows.boxes(180, 320)[5])
    screens[1].paste(photos[4].resize((r - l, b - t), Image.Resampling.BOX), (l, t))
    check = PhotoCheck(candidates=3)
    grounder = Grounder(space, space.embed_images(photos), windows=windows, check=check,
                        thumbnails=check.thumbnails(photos))
    whole = grounder.item_similarities(screens)
    codes, sims = grounder.similarities(screens)
    k = windows.count(180, 320)
    monkeypatch.setattr(grounding, "SEARCH_SCORES", 3 * k * 2)  # blocks of 2 items of the 7 for 3 screens
    torch.testing.assert_close(grounder.item_similarities(screens), whole)
    vectors = grounding.window_vectors(space, next(grounder._tables(screens))[0], windows)
    blocked = grounder._search(vectors)
    monkeypatch.setattr(grounding, "SEARCH_SCORES", 1 << 24)
    plain = grounder._search(vectors)
    torch.testing.assert_close(blocked[0], plain[0])
    assert torch.equal(blocked[1], plain[1])
    monkeypatch.setattr(grounding, "SEARCH_SCORES", 3 * k * 2)
    grounder.stage_seconds = {}
    blocked_codes, blocked_sims = grounder.similarities(screens)
    assert blocked_codes.tolist() == codes.tolist() and codes[1] == 4
    np.testing.assert_allclose(blocked_sims, sims, rtol=1e-6)
    assert set(grounder.stage_seconds) == {"screens", "tower", "search", "check"}
    assert all(v >= 0 for v in grounder.stage_seconds.values())
    grounder.stage_seconds = None  # off again: nothing recorded
    assert grounder.similarities(screens)[0].tolist() == codes.tolist()


def test_screen_space_learns_windows_and_its_grounding_settings_round_trip(tmp_path):
    from mmrec.datasets.synthetic import WorldConfig, make_world

    world = make_world(WorldConfig(seed=3, n_users=20, n_items=6, n_new_items=0, interactions_per_user=(2, 3),
                                   new_interactions_per_user=(0, 0), missing_image_fraction=0.0,
                                   missing_text_fraction=0.0), tmp_path / "world")
    windows = ScreenWindows()
    with pytest.raises(ValueError, match="aspect"):
        ScreenSpaceConfig(windows=windows)  # the default screen size is a whole screen's, not a window's
    config = ScreenSpaceConfig(windows=windows, screen_size=(48, 32), image_size=(48, 32), renderings=2,
                               window_crops=2, negative_crops=1, page_size=(120, 208), epochs=2, batch_size=8,
                               overlays=0.5)
    space = train_screen_space(world.catalog, config)
    assert space.encoders["screen"].preprocess.size == (48, 32) and space.config.unpaired_negatives
    with pytest.raises(ValueError, match="negative_crops"):
        ScreenSpaceConfig(negative_crops=2)  # windows off the photo need windows
    settings = GroundingSettings(0.25, windows, PhotoCheck(candidates=3))
    save_grounding(tmp_path / "space", settings, calibration={"f1": 0.5})
    assert load_grounding(tmp_path / "space") == settings
    save_grounding(tmp_path / "plain", GroundingSettings(0.5))
    assert load_grounding(tmp_path / "plain") == GroundingSettings(0.5)
    (tmp_path / "plain" / "grounding.json").write_text(json.dumps({"threshold": 0.5, "windows": {"sizes": [1]}}))
    with pytest.raises(ValueError, match="grounding.json"):
        load_grounding(tmp_path / "plain")
    with pytest.raises(FileNotFoundError, match="grounding.json"):
        load_grounding(tmp_path / "nowhere")


def test_fixed_tower_inputs_are_built_in_blocks_as_they_were_whole(tmp_path):
    """Training a fixed tower on a large catalogue holds neither every photo decoded at full size nor one copy
    of every window: photos are decoded a block at a time and the tower's outputs come batch by batch from
    the parts — the same pixels and the same outputs as from the whole (a missing photo included)."""
    from mmrec.datasets.synthetic import WorldConfig, make_world
    from mmrec.fusion import screen_tower
    from mmrec.fusion.alignment import decode_resized

    world = make_world(WorldConfig(seed=3, n_users=20, n_items=7, n_new_items=0, interactions_per_user=(2, 3),
                                   new_interactions_per_user=(0, 0), missing_image_fraction=0.3,
                                   missing_text_fraction=0.0), tmp_path / "world")
    space = _twin_space()
    prep = space.encoders["image"].preprocess
    photos, has_photo = screen_tower._photos(world.catalog)
    whole, _ = decode_resized(photos, prep)
    pixels, mask = screen_tower._photo_pixels(world.catalog, prep, block=3)
    assert torch.equal(pixels, whole) and mask.tolist() == has_photo.tolist() and not mask.all()
    rng = np.random.default_rng(5)
    parts = [torch.from_numpy(rng.integers(0, 256, (n, 3, 48, 32)).astype(np.uint8)) for n in (11, 0, 6, 2)]
    blocked = screen_tower._features_of_parts(space, "screen", parts, batch_size=4)  # batches straddle parts
    assert torch.equal(blocked, screen_tower._features(space, "screen", torch.cat(parts), batch_size=4))


def test_grid_windows_find_a_photo_where_no_training_layout_put_one():
    """Windows fitted to training pages (photo top centre, wide) miss a smaller photo low on the left, as
    another app lays it out; layout-free grid windows hold it closely, and the photo check matches it there
    (and not through the fitted windows)."""
    width, height = 180, 320
    rng = np.random.default_rng(5)
    w = rng.uniform(120, 140, 50)
    x = (width - w) / 2
    train = np.stack([x, np.full(50, 30.0), x + w, 30 + 1.5 * w], axis=1)
    fitted = ScreenWindows.fit(train, (width, height), aspect=1.5)
    grid = ScreenWindows.grid(narrowest=0.45, aspect=1.5)
    assert grid.region == (0.0, 0.0, 1.0, 1.0) and grid.widths[0] == 0.45 and grid.widths[-1] == 1.0
    assert all(b / a == pytest.approx(1.25) for a, b in zip(grid.widths, grid.widths[1:-1]))
    photo_box = (6, 150, 96, 285)  # 90 x 135: narrower than any training photo, below all of them
    assert max(iou(fitted.boxes(width, height), photo_box)) < 0.4
    assert max(iou(grid.boxes(width, height), photo_box)) > 0.6
    base = rng.integers(0, 256, (6, 4, 3))
    photo = Image.fromarray(np.kron(base, np.ones((25, 25, 1))).astype(np.uint8)).resize((90, 135))
    other = Image.fromarray(np.kron(base[::-1], np.ones((25, 25, 1))).astype(np.uint8))
    check = PhotoCheck(candidates=2)
    thumbnails = check.thumbnails([photo, other])
    screen = Image.new("RGB", (width, height), (240, 240, 240))
    screen.paste(photo, photo_box[:2])
    x = torch.from_numpy(np.asarray(screen).copy()).permute(2, 0, 1)[None]

    def best(windows: ScreenWindows) -> float:
        boxes = windows.boxes(width, height)
        return float(max(check.match(x, np.repeat(boxes[None, k:k + 1], 2, 1), thumbnails[None])[0, 0]
                         for k in range(len(boxes))))

    found, missed = best(grid), best(fitted)
    assert found > 0.9 and missed < 0.6, (found, missed)
    finer = ScreenWindows.grid(narrowest=0.45, aspect=1.5, ratio=1.1)
    assert finer.step == 0.25 and all(b / a == pytest.approx(1.1) for a, b in zip(finer.widths, finer.widths[1:-1]))
    for bad in (dict(narrowest=0.6, widest=0.5), dict(ratio=1.0)):
        with pytest.raises(ValueError, match="ScreenWindows.grid"):
            ScreenWindows.grid(**bad)


def test_photo_check_locates_photos_anywhere_and_calls_a_screen_of_several_a_feed():
    """`PhotoCheck.locate` puts each candidate's window on its own photo among layout-free windows; with
    ``crowd`` a screen showing two candidates' photos apart (a feed) scores -1, one showing one photo does not."""
    width, height = 180, 320
    rng = np.random.default_rng(7)
    photos = [Image.fromarray(np.kron(rng.integers(0, 256, (6, 4, 3)), np.ones((15, 15, 1))).astype(np.uint8))
              for _ in range(3)]  # 60 x 90
    check = PhotoCheck(candidates=3, crowd=0.9)
    thumbnails = check.thumbnails(photos)
    feed, page = Image.new("RGB", (width, height), (250, 250, 250)), Image.new("RGB", (width, height), (250, 250, 250))
    feed.paste(photos[0], (10, 40)), feed.paste(photos[1], (100, 200)), page.paste(photos[2], (60, 120))
    screens = torch.stack([torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) for im in (feed, page)])
    windows = ScreenWindows.grid(narrowest=0.3, aspect=1.5, step=0.125).boxes(width, height)
    boxes = check.locate(screens, windows, thumbnails[None].repeat(2, 1, 1, 1, 1))
    assert boxes.shape == (2, 3, 4)
    assert iou(boxes[0, 0].numpy()[None], (10, 40, 70, 130))[0] > 0.7
    assert iou(boxes[0, 1].numpy()[None], (100, 200, 160, 290))[0] > 0.7
    assert iou(boxes[1, 2].numpy()[None], (60, 120, 120, 210))[0] > 0.7
    scores = check.match(screens, boxes, thumbnails[None].repeat(2, 1, 1, 1, 1))
    assert (scores[0] == -1).all() and scores[1, 2] > 0.95 and scores[1, :2].max() < 0.9
    alone = PhotoCheck(candidates=3).match(screens, boxes, thumbnails[None].repeat(2, 1, 1, 1, 1))
    assert alone[0, :2].min() > 0.9 and torch.equal(alone[1], scores[1])  # without crowd: both photos found
    with pytest.raises(ValueError, match="crowd"):
        PhotoCheck(crowd=1.5)


def test_a_grounder_with_locate_all_finds_each_photo_among_layout_free_windows(tmp_path):
    """``PhotoCheck.locate_all``: the grounder's check looks for every candidate's photo in every grid window,
    so a photo where no layout was fitted is named with a photo-level correlation; the setting is saved with
    the grounding settings and read back."""
    from mmrec.grounding import GroundingSettings, load_grounding, save_grounding

    space, photos = _twin_space(), _photos(4)
    items = space.embed_images(photos)
    grid = ScreenWindows.grid(narrowest=0.45, aspect=1.5)
    check = PhotoCheck(candidates=len(photos), locate_all=True)
    grounder = Grounder(space, items, windows=grid, check=check, thumbnails=check.thumbnails(photos), batch_size=2)
    boxes = grid.boxes(180, 320)
    screens = []
    for k, box in enumerate(boxes[[0, len(boxes) // 3, len(boxes) // 2, -1]]):
        screen = Image.new("RGB", (180, 320), (235, 235, 235))
        l, t, r, b = (int(round(v)) for v in box)
        screen.paste(photos[k].resize((r - l, b - t), Image.Resampling.BOX), (l, t))
        screens.append(screen)
    codes, sims = grounder.similarities(screens)
    assert codes.tolist() == [0, 1, 2, 3] and (sims > 0.95).all(), (codes, sims)
    save_grounding(tmp_path, GroundingSettings(0.8, grid, check))
    assert load_grounding(tmp_path).check.locate_all is True


def _screen_with(photo: Image.Image, box: tuple[int, int, int, int], size=(180, 320)) -> torch.Tensor:
    screen = Image.new("RGB", size, (240, 240, 240))
    screen.paste(photo.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.BOX), box[:2])
    return torch.from_numpy(np.asarray(screen).copy()).permute(2, 0, 1)


def test_contrast_keeps_a_faint_photo_from_matching_a_bolder_copy_of_its_shape():
    """Correlation alone cannot tell a photo from the same pattern at three times its contrast (a text block of
    the same shape); ``contrast`` scales the match by the ratio of the two contrasts."""
    rng = np.random.default_rng(3)
    pattern = rng.integers(-10, 11, (6, 4, 3))
    faint = Image.fromarray(np.kron(128 + pattern, np.ones((15, 15, 1))).astype(np.uint8))
    bold = Image.fromarray(np.kron(128 + 3 * pattern, np.ones((15, 15, 1))).astype(np.uint8))
    screens = torch.stack([_screen_with(faint, (40, 80, 100, 170)), _screen_with(bold, (40, 80, 100, 170))])
    windows = np.array([[40.0, 80.0, 100.0, 170.0]])
    plain, strict = PhotoCheck(candidates=1), PhotoCheck(candidates=1, contrast=1.0)
    thumbnails = plain.thumbnails([faint])[None].expand(2, -1, -1, -1, -1)
    boxes = torch.as_tensor(windows, dtype=torch.float32)[None].expand(2, 1, 4)
    loose, tight = plain.match(screens, boxes, thumbnails)[:, 0], strict.match(screens, boxes, thumbnails)[:, 0]
    assert loose.min() > 0.97  # the bold copy matches as well as the photo itself
    assert tight[0] > 0.97 and tight[1] < 0.4  # ~1/3: its contrast is three times the photo's
    with pytest.raises(ValueError, match="contrast"):
        PhotoCheck(contrast=-1.0)
    # colour: the same pattern on a panel 60 grey levels darker is not the photo
    dark = Image.fromarray(np.kron(68 + pattern, np.ones((15, 15, 1))).astype(np.uint8))
    screens = torch.stack([_screen_with(faint, (40, 80, 100, 170)), _screen_with(dark, (40, 80, 100, 170))])
    coloured = PhotoCheck(candidates=1, colour=40.0).match(screens, boxes, thumbnails)[:, 0]
    assert plain.match(screens, boxes, thumbnails)[:, 0].min() > 0.97
    assert coloured[0] > 0.97 and coloured[1] < 0.15  # exp(-(60 * sqrt(3) / 40) ** 2)
    with pytest.raises(ValueError, match="colour"):
        PhotoCheck(colour=0.0)


def test_contrast_power_and_flat_areas_score_as_defined():
    """The contrast factor is (min / max contrast) ** ``contrast`` for any power, and a flat screen area or a
    flat photo (no contrast: nothing to correlate) scores about 0, never NaN."""
    rng = np.random.default_rng(4)
    pattern = rng.integers(-10, 11, (6, 4, 3))
    faint = Image.fromarray(np.kron(128 + pattern, np.ones((15, 15, 1))).astype(np.uint8))
    bold = Image.fromarray(np.kron(128 + 3 * pattern, np.ones((15, 15, 1))).astype(np.uint8))
    flat = Image.new("RGB", (60, 90), (128, 128, 128))
    box = (40, 80, 100, 170)
    screens = torch.stack([_screen_with(bold, box), _screen_with(flat, box)])
    boxes = torch.as_tensor([[box, box], [box, box]], dtype=torch.float32)
    for power in (0.5, 1.0, 2.0):
        check = PhotoCheck(candidates=2, contrast=power, shifts=1)
        thumbnails = check.thumbnails([faint, flat])[None].expand(2, -1, -1, -1, -1)
        scores = check.match(screens, boxes, thumbnails)
        assert torch.isfinite(scores).all()
        assert scores[0, 0] == pytest.approx((1 / 3) ** power, abs=0.02)  # the bold copy: 3 times the contrast
        # (a flat area cut from the summed-area table keeps float rounding, far below any photo's contrast)
        assert scores[0, 1].abs() < 1e-3 and scores[1, 0].abs() < 1e-3 and scores[1, 1].abs() < 1e-3


def test_search_finds_a_photo_shown_cut_to_a_square_and_ignores_thumbnails_narrower_than_a_page_shows():
    """``crops``: a page that shows the photo cut to a square (``object-fit: cover``) is matched by the photo's
    square template; ``smallest``: the same photo as a narrow thumbnail (a bag row) is no product page."""
    photos = _photos(3)  # 96 x 64: aspect 1.5
    check = PhotoCheck(candidates=3, crops=(1.0,), contrast=1.0, smallest=0.4, crowd=0.8)
    square = [check.thumbnails(photos, 1.0)]
    assert square[0].shape == (3, 3, 12, 12) and check.thumbnails(photos).shape == (3, 3, 18, 12)
    cut = photos[1].crop((0, 16, 64, 80))  # the middle 64 x 64
    page, thumb = _screen_with(cut, (30, 60, 150, 180)), _screen_with(photos[2], (10, 100, 42, 148))
    screens = torch.stack([page, thumb])
    grid = ScreenWindows.grid(narrowest=0.15, aspect=1.5, step=0.125, ratio=1.1)
    tall = check.thumbnails(photos)[None].expand(2, -1, -1, -1, -1)
    variants = [(grid.boxes(180, 320), tall),
                (ScreenWindows.grid(narrowest=0.15, aspect=1.0, step=0.125, ratio=1.1).boxes(180, 320),
                 square[0][None].expand(2, -1, -1, -1, -1))]
    scores, where = check.search(screens, variants)
    assert scores[0].argmax() == 1 and scores[0, 1] > 0.9, scores[0]
    assert iou(where[0, 1].numpy()[None], (30, 60, 150, 180))[0] > 0.7
    only_tall = check.search(screens, variants[:1])[0]
    assert only_tall[0, 1] < scores[0, 1] - 0.05  # without the square template the cut photo matches worse
    assert (scores[1] == -1).all()  # the thumbnail matches in a window narrower than smallest
    loose = dataclasses.replace(check, smallest=None).search(screens, variants)[0]
    assert loose[1].argmax() == 2 and loose[1, 2] > 0.9
    with pytest.raises(ValueError, match="smallest"):
        PhotoCheck(smallest=1.5)


def test_a_grounder_searches_every_crop_and_needs_their_thumbnails():
    """The grounder hands `PhotoCheck.search` the photo's own windows and thumbnails and one pair per crop;
    a check with crops and no crop thumbnails is refused."""
    space, photos = _twin_space(), _photos(3)
    grid = ScreenWindows.grid(narrowest=0.3, aspect=1.5, step=0.125, ratio=1.1)
    check = PhotoCheck(candidates=3, locate_all=True, crops=(1.0,), contrast=1.0)
    items = space.embed_images(photos)
    with pytest.raises(ValueError, match="crops"):
        Grounder(space, items, windows=grid, check=check, thumbnails=check.thumbnails(photos))
    grounder = Grounder(space, items, windows=grid, check=check, thumbnails=check.thumbnails(photos),
                        crop_thumbnails=[check.thumbnails(photos, 1.0)])
    screen = Image.new("RGB", (180, 320), (240, 240, 240))
    screen.paste(photos[0].crop((0, 16, 64, 80)).resize((120, 120), Image.Resampling.BOX), (30, 60))
    codes, sims = grounder.similarities([screen])
    assert codes.tolist() == [0] and sims[0] > 0.8
    plain = dataclasses.replace(check, crops=())
    without = Grounder(space, items, windows=grid, check=plain, thumbnails=check.thumbnails(photos))
    assert without.similarities([screen])[1][0] < sims[0] - 0.05


def test_locate_scores_candidates_in_blocks_with_the_same_result(monkeypatch):
    """A large catalogue is located in blocks of candidates (memory bounded by LOCATE_SCORES), same windows."""
    import mmrec.screen_windows as sw

    photos = _photos(5)
    check = PhotoCheck(candidates=5, contrast=1.0)
    thumbnails = check.thumbnails(photos)[None].expand(2, -1, -1, -1, -1)
    screens = torch.stack([_screen_with(photos[1], (20, 40, 84, 136)), _screen_with(photos[3], (90, 150, 154, 246))])
    windows = ScreenWindows.grid(narrowest=0.3, aspect=1.5, step=0.125).boxes(180, 320)
    whole = check._locate(screens, windows, thumbnails)
    monkeypatch.setattr(sw, "LOCATE_SCORES", 2 * len(windows))  # one candidate per block
    blocks = check._locate(screens, windows, thumbnails)
    assert torch.equal(whole[0], blocks[0]) and torch.allclose(whole[1], blocks[1])
    assert iou(whole[0][0, 1].numpy()[None], (20, 40, 84, 136))[0] > 0.7


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0, 2.0])
def test_locate_in_contrast_bands_scores_every_window_as_defined(monkeypatch, power):
    """`_locate` moves the contrast factor of windows duller or brighter than a whole block of candidates out of
    the pairwise scores; every candidate's best window and score are still those of correlation times
    (min / max contrast) ** ``contrast`` over every window, with thumbnails per screen or shared."""
    rng = np.random.default_rng(5)
    screens = torch.from_numpy(np.clip(128 + rng.normal(0, 1, (2, 3, 96, 64)) * rng.uniform(2, 60, (2, 1, 96, 1)),
                                       0, 255)).to(torch.uint8)
    thumbnails = torch.from_numpy(128 + rng.normal(0, 1, (40, 3, 9, 6)) * rng.uniform(1, 60, (40, 1, 1, 1))).float()
    windows = ScreenWindows.grid(narrowest=0.3, aspect=1.5, step=0.25).boxes(64, 96)
    check = PhotoCheck(candidates=40, size=(9, 6), contrast=power)
    table = AreaTable(screens)
    crops, spread = screen_windows._centred_with_contrast(table.crops(torch.as_tensor(
        windows, dtype=torch.float32)[None].expand(2, -1, -1), (9, 6)).flatten(2))
    templates, own = screen_windows._centred_with_contrast(thumbnails.flatten(1))
    x, y = own[None, :, None, 0], spread[:, None, :, 0]
    factor = (torch.minimum(x, y) / torch.maximum(x, y).clamp(min=1e-6)) ** power
    expected, at = (torch.einsum("cd,nkd->nck", templates, crops) * factor).max(dim=2)
    monkeypatch.setattr(screen_windows, "LOCATE_BLOCK", 3)  # many blocks: windows below, within and above each band
    for given in (thumbnails, thumbnails[None].expand(2, -1, -1, -1, -1)):
        boxes, scores = check._locate(table, windows, given)
        assert torch.allclose(scores, expected, atol=1e-5)
        assert torch.equal(boxes, torch.as_tensor(windows, dtype=torch.float32)[at])


def test_search_takes_shared_thumbnails_and_a_shortlist_without_changing_the_answer():
    """A whole catalogue's thumbnails are shared by every screen (``[C, 3, h, w]``, not copied per screen) with
    the same scores; a ``shortlist`` keeps the best by half-size thumbnails and still finds the photo."""
    photos = _photos(6)
    check = PhotoCheck(candidates=6, contrast=1.0, crowd=0.8)
    thumbnails = check.thumbnails(photos)
    screens = torch.stack([_screen_with(photos[4], (30, 60, 130, 210)), _screen_with(photos[2], (40, 40, 140, 190))])
    windows = ScreenWindows.grid(narrowest=0.3, aspect=1.5, step=0.125, ratio=1.1).boxes(180, 320)
    shared, _ = check.search(screens, [(windows, thumbnails)])
    copied, _ = check.search(screens, [(windows, thumbnails[None].expand(2, -1, -1, -1, -1))])
    assert torch.allclose(shared, copied) and shared.argmax(dim=1).tolist() == [4, 2]
    short, where = dataclasses.replace(check, shortlist=2).search(screens, [(windows, thumbnails)])
    assert short.argmax(dim=1).tolist() == [4, 2] and torch.allclose(short.amax(dim=1), shared.amax(dim=1))
    assert ((short == -1).sum(dim=1) >= 4).all()  # off the shortlist
    with pytest.raises(ValueError, match="shortlist"):
        PhotoCheck(shortlist=0)


def test_stride_places_large_windows_as_finely_as_small_ones():
    """``stride``: window starts at most that share of the screen's width apart in x and y, whatever the window's
    size (``step`` alone spaces a screen-wide window a quarter of its size apart)."""
    coarse = ScreenWindows(widths=(0.9,), aspect=1.0, step=0.25).boxes(180, 320)
    fine = ScreenWindows(widths=(0.9,), aspect=1.0, step=0.25, stride=0.05).boxes(180, 320)
    for boxes in (coarse, fine):
        assert np.allclose(boxes[:, 2] - boxes[:, 0], 162)
    gaps = lambda b, axis: np.diff(np.unique(np.round(b[:, axis], 6)))  # noqa: E731
    assert gaps(coarse, 1).max() > 30 and gaps(fine, 1).max() <= 9 + 1e-6 and gaps(fine, 0).max() <= 9 + 1e-6
    assert len(fine) > len(coarse)
    with pytest.raises(ValueError, match="stride"):
        ScreenWindows(stride=0.0)


def test_crowd_needs_a_second_photo_alike_in_size_and_match():
    """A feed shows its photos alike: a second photo apart from the best calls the screen a feed only when it
    matches within CROWD_MARGIN of the best and in a window at least CROWD_SIZE of its width; a small photo
    beside a page's large one (a 'you may also like' thumbnail, a dark text line on white) does not."""
    from mmrec.screen_windows import CROWD_SIZE

    photos = _photos(3)
    check = PhotoCheck(candidates=3, crowd=0.8, contrast=1.0, smallest=0.35, scales=(0.95, 0.975, 1.025, 1.05))
    thumbnails = check.thumbnails(photos)
    page = Image.new("RGB", (180, 320), (240, 240, 240))
    page.paste(photos[0].resize((100, 150), Image.Resampling.BOX), (40, 20))
    small = int(100 * CROWD_SIZE) - 20
    page.paste(photos[1].resize((small, int(small * 1.5)), Image.Resampling.BOX), (10, 200))
    feed = Image.new("RGB", (180, 320), (240, 240, 240))
    feed.paste(photos[0].resize((80, 120), Image.Resampling.BOX), (5, 40))
    feed.paste(photos[1].resize((80, 120), Image.Resampling.BOX), (95, 40))
    screens = torch.stack([torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1) for im in (page, feed)])
    windows = ScreenWindows.grid(narrowest=0.15, aspect=1.5, step=0.125, ratio=1.1).boxes(180, 320)
    scores, where = check.search(screens, [(windows, thumbnails)])
    assert scores[0].argmax() == 0 and scores[0, 0] > 0.9 and scores[0, 1] == -1  # the thumbnail: too narrow, no feed
    loose = dataclasses.replace(check, smallest=None, crowd=None).search(screens, [(windows, thumbnails)])[0]
    assert loose[0, 1] > 0.9  # the thumbnail does match, better than the large photo: only its size tells them apart
    assert (scores[1] == -1).all()  # two photos alike side by side: a feed
    kept, _, coarse_feeds = check.search_feeds(screens, [(windows, thumbnails)])  # no coarse stage: none marked
    assert torch.equal(kept, scores) and not coarse_feeds.any()


def test_one_shift_matches_the_window_itself():
    """``shifts=1`` is the window alone, whatever the margin (not the window moved by -margin)."""
    photo = _photos(1)[0]
    screen = _screen_with(photo, (40, 80, 100, 170))[None]
    boxes, thumbnails = torch.tensor([[[40.0, 80.0, 100.0, 170.0]]]), PhotoCheck().thumbnails([photo])[None]
    alone = PhotoCheck(candidates=1, shifts=1, margin=0.0).match(screen, boxes, thumbnails)
    assert alone[0, 0] > 0.99
    torch.testing.assert_close(PhotoCheck(candidates=1, shifts=1, margin=0.25).match(screen, boxes, thumbnails), alone)


def test_colour_scores_the_shifted_match_not_the_located_window():
    """A window a little off a dark garment photographed on white loses white border and darkens: locating
    ignores colour (the photo's windows stay in the running), the final match applies it."""
    photo = np.full((150, 100, 3), 250, np.uint8)
    photo[20:130, 20:80] = np.kron(np.random.default_rng(4).integers(10, 70, (11, 6, 3)), np.ones((10, 10, 1)))
    photo = Image.fromarray(photo)
    screen = Image.new("RGB", (180, 320), (15, 15, 15))
    screen.paste(photo, (40, 80))
    screen = torch.from_numpy(np.asarray(screen).copy()).permute(2, 0, 1)[None]
    off = np.array([[46.0, 86.0, 141.0, 228.5]])  # 6 px in, 5 % smaller: mostly garment
    plain, coloured = PhotoCheck(candidates=1, contrast=1.0), PhotoCheck(candidates=1, contrast=1.0, colour=40.0)
    thumbnails = plain.thumbnails([photo])[None]
    (_, located), (_, without) = coloured._locate(screen, off, thumbnails), plain._locate(screen, off, thumbnails)
    torch.testing.assert_close(located, without)
    exact = torch.tensor([[[40.0, 80.0, 140.0, 230.0]]])
    assert coloured.match(screen, exact, thumbnails)[0, 0] > 0.95
    darker = coloured.match(screen, torch.as_tensor(off, dtype=torch.float32)[None], thumbnails.mul(0.5))[0, 0]
    off = torch.as_tensor(off, dtype=torch.float32)[None]
    assert darker < 0.5 * plain.match(screen, off, thumbnails.mul(0.5))[0, 0]


def test_coarse_search_tells_near_twins_apart_at_full_size():
    """Two photos alike at the pooled size (a fine checker averages out) are told apart by the full-size match
    of the best few; every other candidate scores -1."""
    photos = _photos(12)
    cells = (np.indices((13, 9)).sum(0) % 2) * 2 - 1
    checker = np.kron(cells, np.ones((8, 8)))[4:100, 4:68, None] * 40  # 8 px cells, 4 px off: gone when pooled
    twin = Image.fromarray((np.asarray(photos[0], np.float64) * 0.7 + 40 + checker).astype(np.uint8))
    plain = Image.fromarray((np.asarray(photos[0], np.float64) * 0.7 + 40).astype(np.uint8))
    photos = [plain, twin] + photos[1:]
    check = PhotoCheck(candidates=len(photos), size=(24, 16), coarse=2, contrast=1.0, locate_all=True,
                       scales=(0.95, 0.975, 1.025, 1.05))
    thumbnails = check.thumbnails(photos)
    screens = torch.stack([_screen_with(twin, (30, 60, 94, 156)), _screen_with(plain, (30, 60, 94, 156))])
    windows = ScreenWindows.grid(narrowest=0.3, aspect=1.5, step=0.125, ratio=1.1).boxes(180, 320)
    pooled, _ = dataclasses.replace(check, coarse=1, size=(12, 8)).search(
        screens, [(windows, torch.nn.functional.avg_pool2d(thumbnails, 2))])
    assert (pooled[:, :2].max(dim=1).values - pooled[:, :2].min(dim=1).values).max() < 0.01  # alike pooled
    scores, _ = check.search(screens, [(windows, thumbnails)])
    assert scores.argmax(dim=1).tolist() == [1, 0] and scores.amax(dim=1).min() > 0.9
    assert (scores[0, 1] - scores[0, 0]) > 0.05 and (scores[1, 0] - scores[1, 1]) > 0.2
    assert ((scores == -1).sum(dim=1) == len(photos) - 10).all()  # only the best 10 matched at full size
    with pytest.raises(ValueError, match="coarse"):
        PhotoCheck(coarse=0)


def test_a_match_says_where_it_found_the_photo():
    """`_match` returns, with each score, the shifted and rescaled box it was found in: nearer the photo than
    the window it started from (the full-size pass of `search` starts again from there)."""
    photo = _photos(1)[0]
    screen = _screen_with(photo, (40, 80, 100, 170))[None]
    check = PhotoCheck(candidates=1, refine=None, scales=(0.95, 1.05))
    start = torch.tensor([[[44.0, 84.0, 101.0, 169.5]]])  # 4 px off, 5 % small
    score, found = check._match(AreaTable(screen), start, check.thumbnails([photo])[None])
    truth = (40, 80, 100, 170)
    assert score[0, 0] > 0.97 and iou(found[0].numpy(), truth)[0] > iou(start[0].numpy(), truth)[0]
    assert np.abs(found[0, 0].numpy() - [40, 80, 100, 170]).max() < 3


def test_search_scores_with_colour_so_a_panel_in_other_colours_is_no_second_photo(monkeypatch):
    """Locating ignores colour, but `search`'s scores are the colour-weighted matches: a panel with another
    item's pattern in other colours does not score as that item, nor make a product page a feed (``crowd``).
    With ``coarse`` 2 the coarse pass, without colour, sees a feed; its second photo is matched again at full
    size with colour, and the verdict is overturned there: the page's photo matches confidently
    (`CROWD_CONFIDENT`) and the panel nowhere near it. Below that confidence the feed stands."""
    a, b = (np.asarray(p).astype(np.int64) for p in _photos(3)[1:])
    page, other = Image.fromarray((a // 3 + 60).astype(np.uint8)), Image.fromarray((b // 3 + 60).astype(np.uint8))
    screen = Image.new("RGB", (180, 320), (240, 240, 240))
    screen.paste(page.resize((60, 90)), (10, 40))
    screen.paste(Image.fromarray((b // 3 + 150).astype(np.uint8)).resize((60, 90)), (100, 40))  # b's, paler
    screen = torch.from_numpy(np.asarray(screen).copy()).permute(2, 0, 1)[None]
    windows = np.array([[10.0, 40, 70, 130], [100.0, 40, 160, 130], [10.0, 160, 70, 250]])
    for coarse in (1, 2):
        check = PhotoCheck(candidates=2, size=(18 * coarse, 12 * coarse), contrast=1.0, colour=40.0,
                           locate_all=True, coarse=coarse, crowd=0.65)
        thumbnails = check.thumbnails([page, other])
        scores = check.search(screen, [(windows, thumbnails)])[0][0]
        if coarse == 2:  # the coarse pass alone calls it a feed
            rough = dataclasses.replace(check, coarse=1, size=(18, 12), colour=None)
            assert (rough.search(screen, [(windows, rough.thumbnails([page, other]))])[0] == -1).all()
        assert scores[0] > 0.95 and scores[1] < 0.3  # a page of the first item, not a feed
        plain = dataclasses.replace(check, colour=None, crowd=None).search(screen, [(windows, thumbnails)])[0][0]
        assert plain[1] > 0.95  # without colour the panel is the second item
    monkeypatch.setattr(screen_windows, "CROWD_CONFIDENT", float(scores[0]) + 1e-3)
    assert (check.search(screen, [(windows, thumbnails)])[0] == -1).all()
    kept, _, coarse_feeds = check.search_feeds(screen, [(windows, thumbnails)])  # the coarse verdict apart
    assert coarse_feeds.tolist() == [True] and torch.equal(kept[0], scores)


def test_coarse_search_matches_each_photo_at_full_size_in_the_frame_it_was_found_in():
    """With a second variant (photos cut square, as a shop's square tiles show them), the full-size pass matches
    each candidate in the variant its window came from: a square-cut photo and an uncut one both score high."""
    photos = _photos(12)
    check = PhotoCheck(candidates=len(photos), size=(24, 16), coarse=2, contrast=1.0, locate_all=True, crops=(1.0,),
                       scales=(0.95, 0.975, 1.025, 1.05))
    square = photos[3].crop((0, 16, 64, 80))  # its centre, as object-fit: cover cuts it
    screens = torch.stack([_screen_with(square, (30, 60, 126, 156)), _screen_with(photos[5], (30, 60, 94, 156))])
    variants = [(ScreenWindows.grid(narrowest=0.3, aspect=a, step=0.125, ratio=1.1).boxes(180, 320),
                 check.thumbnails(photos, None if a == 1.5 else a)) for a in (1.5, 1.0)]
    scores, where = check.search(screens, variants)
    assert scores.argmax(dim=1).tolist() == [3, 5] and scores.amax(dim=1).min() > 0.95
    assert iou(where[0, 3:4].numpy(), (30, 60, 126, 156))[0] > 0.7


def _feed_of_look_alikes() -> tuple[torch.Tensor, list[Image.Image]]:
    """A feed of two cards (``[1, 3, 320, 180]``) and a catalogue where the first card's photo has 11 near-copies
    (items 0-11) and the second card's photo, shown noisier, is item 12."""
    photos, rng = _photos(16), np.random.default_rng(5)
    first = np.asarray(photos[0], np.float64)
    copies = [Image.fromarray(np.clip(first + rng.normal(0, 6, first.shape), 0, 255).astype(np.uint8))
              for _ in range(11)]
    screen = Image.new("RGB", (180, 320), (240, 240, 240))
    screen.paste(photos[0].resize((80, 120), Image.Resampling.BOX), (5, 60))
    second = np.asarray(photos[1].resize((80, 120), Image.Resampling.BOX), np.float64)
    screen.paste(Image.fromarray(np.clip(second + rng.normal(0, 25, second.shape), 0, 255).astype(np.uint8)), (95, 60))
    return torch.from_numpy(np.asarray(screen).copy()).permute(2, 0, 1)[None], [photos[0]] + copies + photos[1:]


def test_coarse_search_tells_a_feed_whose_other_cards_are_not_among_the_best_ten():
    """A feed of two cards, the first an item with many near-copies in the catalogue: the best 10 are all
    copies of the first card, so the feed must be told at the coarse stage, from every matched candidate."""
    screen, catalogue = _feed_of_look_alikes()
    check = PhotoCheck(candidates=len(catalogue), size=(24, 16), coarse=2, contrast=1.0, locate_all=True, crowd=0.65)
    windows = ScreenWindows.grid(narrowest=0.3, aspect=1.5, step=0.125, ratio=1.1).boxes(180, 320)
    thumbnails = check.thumbnails(catalogue)
    alone = dataclasses.replace(check, crowd=None).search(screen, [(windows, thumbnails)])[0][0]
    assert alone[12] == -1 and int(alone.argmax()) < 12  # the second card is not among the best 10 ...
    rough = dataclasses.replace(check, crowd=None, coarse=1, size=(12, 8)).search(
        screen, [(windows, torch.nn.functional.avg_pool2d(thumbnails, 2))])[0][0]
    assert rough[12] > alone.max() - 0.1  # ... though it matches alike at the coarse size
    assert (check.search(screen, [(windows, thumbnails)])[0] == -1).all()  # a feed


def test_a_feed_is_told_when_look_alikes_of_one_card_would_fill_every_place_matched(monkeypatch):
    """Photos alike to one card of a feed (a dark page of black garments) can fill every place `search` matches
    with shifts, so the feed's other card is never matched and the screen is named as the first card; the best
    located apart from the best keep their places (`SEARCH_APART`), and the feed is told."""
    screen, catalogue = _feed_of_look_alikes()
    check = PhotoCheck(candidates=len(catalogue), size=(24, 16), contrast=1.0, locate_all=True, crowd=0.65)
    windows = ScreenWindows.grid(narrowest=0.3, aspect=1.5, step=0.125, ratio=1.1).boxes(180, 320)
    thumbnails = check.thumbnails(catalogue)
    monkeypatch.setattr(screen_windows, "SEARCH_MATCHED", 8)  # fewer places than look-alikes of the first card
    monkeypatch.setattr(screen_windows, "SEARCH_APART", 0)
    named = check.search(screen, [(windows, thumbnails)])[0][0]
    assert named[12] == -1 and int(named.argmax()) < 12 and named.max() > 0.8  # named as the first card
    monkeypatch.setattr(screen_windows, "SEARCH_APART", 2)
    assert (check.search(screen, [(windows, thumbnails)])[0] == -1).all()  # a feed


def test_candidates_kept_apart_from_the_best_displace_the_weakest_and_keep_their_count():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    near, far = [0.0, 0.0, 60.0, 90.0], [100.0, 0.0, 160.0, 90.0]
    where = torch.tensor([[near, near, near, near, far, far]])
    kept = screen_windows._with_apart(scores, where, 4)
    assert sorted(kept[0].tolist()) == [0, 1, 4, 5]  # the two apart ones in place of the two weakest near ones
    assert sorted(screen_windows._with_apart(scores, where, 6)[0].tolist()) == list(range(6))
    narrow = torch.tensor([[near, near, near, near, [100.0, 0.0, 110.0, 15.0], far]])  # too narrow for a photo
    assert sorted(screen_windows._with_apart(scores, narrow, 4)[0].tolist()) == [0, 1, 2, 5]


def test_a_window_matching_only_by_its_edge_on_a_page_photo_is_no_second_photo(monkeypatch):
    """On a dark page, a window over empty background that reaches a little onto the page photo's white ground
    correlates with a dark garment photographed on white (a dark field, a white edge) through that edge alone;
    the crowd rule does not count it as a feed's second photo, because it is flat inside (CROWD_FLAT)."""
    rng = np.random.default_rng(7)
    page_photo = np.full((126, 84, 3), 250, np.uint8)  # a garment on a white ground
    page_photo[16:110, 14:70] = np.kron(rng.integers(30, 200, (47, 28, 3)), np.ones((2, 2, 1)))
    edge_photo = np.full((96, 64, 3), 20, np.uint8)  # dark all over but a white strip at the right
    edge_photo[:, 61:] = 250
    photos = [Image.fromarray(page_photo), Image.fromarray(edge_photo)]
    screen = Image.new("RGB", (180, 320), (18, 18, 18))
    screen.paste(photos[0], (90, 60))
    screens = torch.from_numpy(np.asarray(screen).copy()).permute(2, 0, 1)[None]
    check = PhotoCheck(candidates=2, crowd=0.65, contrast=1.0, colour=40.0, smallest=0.35,
                       scales=(0.95, 0.975, 1.025, 1.05))
    windows = ScreenWindows.grid(narrowest=0.2, aspect=1.5, step=0.125, ratio=1.05).boxes(180, 320)
    variants = [(windows, check.thumbnails(photos))]
    monkeypatch.setattr(screen_windows, "CROWD_FLAT", 0.0)  # the rule without the inside test
    assert (check.search(screens, variants)[0] == -1).all()  # the edge match makes the page a feed
    monkeypatch.undo()
    scores, _ = check.search(screens, variants)
    assert scores[0].argmax() == 0 and scores[0, 0] > 0.9


def test_a_photo_found_by_its_square_cut_is_also_matched_whole_where_the_cut_puts_it(monkeypatch):
    """Located on coarse thumbnails, a photo shown whole can be found by a square cut of it, placed low on the
    photo; shifting that cut at full size does not reach its place. The full-size pass also matches the whole
    photo in the window the cut implies (grown to the photo's aspect about the same centre), which holds the
    photo, and keeps the better match and its window."""
    photos = _photos(12)
    check = PhotoCheck(candidates=len(photos), size=(24, 16), coarse=2, contrast=1.0, locate_all=True, crops=(1.0,),
                       scales=(0.95, 0.975, 1.025, 1.05))
    shown = (30, 60, 94, 156)  # photo 3 whole, 64 x 96
    table = AreaTable(_screen_with(photos[3], shown)[None])
    variants = [(ScreenWindows.grid(narrowest=0.3, aspect=a, step=0.125, ratio=1.1).boxes(180, 320),
                 check.thumbnails(photos, None if a == 1.5 else a)) for a in (1.5, 1.0)]
    where = torch.zeros(1, len(photos), 4)
    where[0, 3] = torch.tensor([30.0, 90.0, 94.0, 154.0])  # a square on the photo's lower part
    chosen = torch.zeros(1, len(photos), dtype=torch.long)
    chosen[0, 3] = 1  # found by the square cut

    def detailed():
        return check._detailed(table, variants, torch.tensor([[3]]), torch.tensor([[True]]), where, chosen)
    monkeypatch.setattr(screen_windows, "_uncut", lambda boxes, cut, photo: boxes)  # the whole photo in the cut's box
    assert float(detailed()[0][0, 3]) < 0.9
    monkeypatch.undo()
    scores, found = detailed()
    assert float(scores[0, 3]) > 0.99 and iou(found[0, 3:4].numpy(), shown)[0] > 0.9
    assert screen_windows._uncut(torch.tensor([30.0, 76.0, 94.0, 140.0]), 1.0, 1.5).tolist() == [30, 60, 94, 156]
    assert screen_windows._uncut(torch.tensor([0.0, 0.0, 60.0, 60.0]), 2.0, 1.5).tolist() == [10, 0, 50, 60]


def test_shared_thumbnails_are_pooled_once_and_again_when_they_change():
    shared = torch.rand(7, 3, 18, 12) * 255
    first = screen_windows._pooled(shared, 3)
    assert screen_windows._pooled(shared, 3) is first  # the same catalogue, the same pooled copy
    assert torch.equal(first, torch.nn.functional.adaptive_avg_pool2d(shared, (6, 4)))
    shared[2] = 0.0  # changed in place: pooled again, not served stale
    again = screen_windows._pooled(shared, 3)
    assert again is not first and torch.equal(again[2], torch.zeros(3, 6, 4))
    per_screen = shared[None].clone()  # [N, C, 3, h, w]: each screen's own candidates, never kept
    assert screen_windows._pooled(per_screen, 3) is not screen_windows._pooled(per_screen, 3)
    windows = ScreenWindows.grid(0.2, 1.0, aspect=1.5, ratio=1.12, stride=0.05)
    boxes = windows.boxes(180, 320)
    boxes[:] = -1.0  # a caller's copy: the layout kept for the next screen is untouched
    assert (windows.boxes(180, 320) >= 0).all() and len(windows.boxes(180, 320)) == windows.count(180, 320)


def test_layout_free_matching_scores_each_candidate_as_it_would_score_alone():
    """Every candidate the layout-free check matches is refined (finer shifts, nearby sizes), so which go on to
    full size is decided on equal terms: refining only the best few let a look-alike that fits the window's size
    outrank the item itself, shown a few per cent off every window size. With ``refine`` 1 the others keep their
    coarse-grid scores, which depend on who else competes."""
    from mmrec.grounding import layout_free_settings

    assert layout_free_settings(1.5, 10).check.refine is None
    photos, rng = _photos(6), np.random.default_rng(3)
    shown = np.asarray(photos[4], np.float64)
    photos += [Image.fromarray(np.clip(shown + rng.normal(0, 20, shown.shape), 0, 255).astype(np.uint8))
               for _ in range(6)]  # look-alikes of the photo shown
    table = AreaTable(_screen_with(photos[4], (33, 61, 131, 208))[None])
    windows = ScreenWindows.grid(0.3, 1.0, aspect=1.5, ratio=1.12, stride=0.05).boxes(180, 320)
    for refine, equal in ((None, True), (1, False)):
        check = PhotoCheck(candidates=12, contrast=1.0, refine=refine, scales=(0.95, 1.05))
        thumbnails = check.thumbnails(photos)
        together = check._search(table, [(windows, thumbnails)])[0][0]
        alone = torch.stack([check._search(table, [(windows, thumbnails[[k]])])[0][0, 0] for k in range(12)])
        assert torch.allclose(together, alone, atol=1e-6) == equal


def test_the_best_of_each_variant_is_matched_at_full_size_besides_the_best_overall(monkeypatch):
    """Look-alikes by the square cut (their centre is the page photo's, their top and bottom are not) can fill
    every place of the full-size pass while the photo shown whole ranks first only among whole matches: each
    variant's best is matched at full size too, so the page's own item is scored there."""
    photos, rng = _photos(12), np.random.default_rng(7)
    true = np.asarray(photos[3], np.float64)
    shown = true.copy()
    shown[16:80] = np.clip(shown[16:80] + rng.normal(0, 40, shown[16:80].shape), 0, 255)  # a noisy middle
    for k in range(3):  # look-alikes of the noisy middle, other tops and bottoms
        other = np.asarray(photos[6 + k], np.float64).copy()
        other[16:80] = shown[16:80]
        photos.append(Image.fromarray(other.astype(np.uint8)))
    table = AreaTable(_screen_with(Image.fromarray(shown.astype(np.uint8)), (30, 60, 94, 156))[None])
    check = PhotoCheck(candidates=len(photos), size=(24, 16), coarse=2, contrast=1.0, locate_all=True, crops=(1.0,),
                       scales=(0.95, 1.05))
    variants = [(ScreenWindows.grid(narrowest=0.3, aspect=a, step=0.125, ratio=1.1).boxes(180, 320),
                 check.thumbnails(photos, None if a == 1.5 else a)) for a in (1.5, 1.0)]
    monkeypatch.setattr(screen_windows, "SEARCH_DETAILED", 2)
    assert float(check.search(table, variants)[0][0, 3]) > 0.5
    monkeypatch.setattr(screen_windows, "SEARCH_DETAILED_EACH", 0)
    assert float(check.search(table, variants)[0][0, 3]) == -1.0  # the two best overall are look-alikes


def test_the_layout_free_shortlist_grows_with_the_catalogue():
    """The 6-wide pass keeps 200 items up to 5,000 and 4 % of a larger catalogue: a fixed 200 of the whole H&M
    catalogue dropped articles that ranked 267th to 1,097th there, behind look-alikes at that size."""
    from mmrec.grounding import LAYOUT_FREE_SHORTLIST, layout_free_settings

    shortlists = [layout_free_settings(1.5, items).check.shortlist for items in (10, 1_000, 5_000, 5_013, 22_246)]
    assert shortlists == [LAYOUT_FREE_SHORTLIST] * 3 + [201, 890]
