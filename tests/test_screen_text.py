"""Screen text read by OCR and matched to catalog titles (`mmrec.screen_text`), and a layout-free grounder that
lets a page's title tell apart photos its search finds alike."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from test_screen_windows import _photos, _twin_space

import mmrec.grounding as grounding
import mmrec.screen_text as screen_text
from mmrec.grounding import Grounder, GroundingSettings, layout_free_settings, load_grounding, save_grounding
from mmrec.screen_text import TITLES_READ, TitleIndex, normalise, ocr_available, read_lines
from mmrec.screen_windows import PhotoCheck, ScreenWindows

needs_ocr = pytest.mark.skipif(not ocr_available(),
                               reason="no tesserocr or Tesseract model (apt-get install tesseract-ocr)")


def _page(photo: Image.Image, title: str) -> Image.Image:
    """A product page: the photo large at the top, its title in dark type below."""
    screen = Image.new("RGB", (180, 320), (245, 245, 245))
    screen.paste(photo.resize((120, 180), Image.Resampling.BOX), (30, 20))
    ImageDraw.Draw(screen).text((14, 222), title, fill=(20, 20, 20), font=ImageFont.load_default(size=15))
    return screen


def test_titles_are_found_by_the_lines_that_name_them():
    titles = ["Luve Jumper", "DIV+ Luve knit", "REGULAR PRINTED TEE 9.99 B3", "", "Tina"]
    index = TitleIndex(titles)
    assert normalise("  R-NECK LS  Slim-fit! ") == "r neck ls slim fit"
    assert index.named(["kvist", "luve jumper", "36 99 usd"]).tolist() == [0]
    assert index.named(["luve jumpcr"]).tolist() == [0]  # one letter misread still names it
    assert index.named(["regular printed tee", "9 99 b3"]).tolist() == [2]  # a title wrapped over two lines
    assert index.named(["", "ab", "add to bag"]).tolist() == []  # nothing near; an empty title is never named
    many = TitleIndex(["Tina"] * (TITLES_READ + 8))
    assert len(many.named(["tina"])) == TITLES_READ


@needs_ocr
def test_read_lines_reads_a_title_drawn_on_a_screen():
    lines = read_lines(np.asarray(_page(_photos(1)[0], "Luve Jumper")))
    assert "luve jumper" in lines, lines


def test_a_failed_read_is_logged_and_reads_nothing(monkeypatch, caplog):
    class TimedOut:  # an engine whose recognition runs out of time
        def SetImage(self, image):
            pass

        def Recognize(self, timeout):
            return False

        def Clear(self):
            pass
    monkeypatch.setattr(screen_text, "_engine", TimedOut)
    monkeypatch.setattr(screen_text, "_idle_engines", screen_text.queue.SimpleQueue())
    with caplog.at_level(logging.WARNING, logger="mmrec.screen_text"):
        assert read_lines(Image.new("RGB", (30, 40))) == []
    assert "tesseract read nothing" in caplog.text and "no text within" in caplog.text


@needs_ocr
def test_screens_read_side_by_side_read_as_one_at_a_time():
    """Threads share the pool of loaded engines: each screen's text is its own, however they interleave."""
    names = ["Luve Jumper", "Harbour Hoodie", "Alpha Coat", "Tina Skirt"]
    pages = [np.asarray(_page(photo, name)) for photo, name in zip(_photos(len(names)), names)] * 2
    with ThreadPoolExecutor(4) as pool:
        read = list(pool.map(read_lines, pages))
    assert [normalise(name) in lines for name, lines in zip(names * 2, read)] == [True] * len(pages), read


def _twin_grounder(titles, photos):
    space = _twin_space()
    check = PhotoCheck(candidates=len(photos), locate_all=True, contrast=1.0)
    return Grounder(space, space.embed_images(photos), windows=ScreenWindows.grid(narrowest=0.45, aspect=1.5),
                    check=check, thumbnails=check.thumbnails(photos), batch_size=2, titles=titles)


@needs_ocr
def test_a_title_tells_apart_photos_alike_and_is_read_only_where_they_are(monkeypatch):
    """Items 0 and 1 show one photo (twins, scored alike): by photo alone the first is named; the page's title
    names the second, whose photo comes as close in the same window, so it is named with the same similarity.
    A title naming an item whose photo is unlike the one shown changes nothing, and a screen whose best photo
    has no rival near it is not read at all."""
    photos = _photos(3)
    photos[1] = photos[0].copy()
    titles = ["Alpha coat", "Luve Jumper", "Harbour hoodie"]
    alone = _twin_grounder(None, photos)
    read = _twin_grounder(titles, photos)
    assert read.titles is not None
    twin_page, other_title = _page(photos[1], "Luve Jumper"), _page(photos[0], "Harbour hoodie")
    codes, sims = alone.similarities([twin_page, other_title])
    assert codes.tolist() == [0, 0]
    named, named_sims = read.similarities([twin_page, other_title])
    assert named.tolist() == [1, 0] and np.allclose(named_sims, sims)
    calls = []
    monkeypatch.setattr(grounding, "read_lines", lambda screen: calls.append(1) or ["luve jumper"])
    assert read.similarities([_page(photos[2], "Luve Jumper")])[0].tolist() == [2] and not calls


def test_titles_need_a_layout_free_check_and_tesseract(monkeypatch, caplog, tmp_path):
    photos = _photos(2)
    with pytest.raises(ValueError, match="one per item"):
        _twin_grounder(["only one"], photos)
    monkeypatch.setattr(grounding, "ocr_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="mmrec.grounding"):
        assert _twin_grounder(["a", "b"], photos).titles is None
    assert "no tesseract" in caplog.text
    settings = layout_free_settings(1.5, 2)
    assert settings.titles is True
    save_grounding(tmp_path, settings)
    assert load_grounding(tmp_path).titles is True
    save_grounding(tmp_path, GroundingSettings(0.5))
    assert load_grounding(tmp_path).titles is False


def test_a_named_item_scored_close_by_the_search_wins_where_the_best_window_does_not_fit_its_photo(monkeypatch):
    """The search scored the named item's photo close to the best (in a window of its own); matched in the best's
    window, where the best's photo is, it scores far lower. Its own score counts: it is named. An item named
    whose own score is far below, and whose photo does not match in the best's window, is not."""
    photos = _photos(3)
    grounder = _twin_grounder(["Alpha coat", "Luve Jumper", "Harbour hoodie"], photos)
    screen = grounding.screen_tensor(_page(photos[0], ""))[None]  # the best's photo where the search found it
    match = torch.tensor([[0.98, 0.97, 0.5]])
    where = torch.tensor([[[30.0, 20.0, 150.0, 200.0], [20.0, 30.0, 160.0, 240.0], [0.0, 0.0, 10.0, 15.0]]])
    variants = [(None, grounder.thumbnails)]
    monkeypatch.setattr(grounding, "read_lines", lambda image: ["luve jumper", "harbour hoodie"])
    named = grounder._named_by_title(screen, match, where, variants)
    assert int(named.argmax()) == 1 and float(named.max()) == pytest.approx(0.98)
    monkeypatch.setattr(grounding, "read_lines", lambda image: ["harbour hoodie"])
    assert torch.equal(grounder._named_by_title(screen, match, where, variants), match)
