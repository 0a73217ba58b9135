"""Screen text read by OCR and matched to catalog titles and descriptions (`mmrec.screen_text`), and a layout-free
grounder that lets a page's title or description tell apart photos its search finds alike."""
from __future__ import annotations

import io
import logging
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from test_screen_windows import _photos, _twin_space

import mmrec.grounding as grounding
import mmrec.screen_text as screen_text
from mmrec.grounding import Grounder, GroundingSettings, layout_free_settings, load_grounding, save_grounding
from mmrec.screen_text import DESCRIPTION_LINE, TITLES_READ, TitleIndex, normalise, ocr_available, read_lines
from mmrec.screen_windows import PhotoCheck, ScreenWindows

needs_ocr = pytest.mark.skipif(not ocr_available(), reason="no OCR reader (pip install rapidocr_onnxruntime)")


def _page(photo: Image.Image, title: str, description: str = "") -> Image.Image:
    """A product page: the photo large at the top, its title in dark type below, and a line of description."""
    screen = Image.new("RGB", (180, 320), (245, 245, 245))
    screen.paste(photo.resize((120, 180), Image.Resampling.BOX), (30, 20))
    draw = ImageDraw.Draw(screen)
    draw.text((14, 222), title, fill=(20, 20, 20), font=ImageFont.load_default(size=15))
    draw.text((8, 262), description, fill=(60, 60, 60), font=ImageFont.load_default(size=11))
    return screen


def test_titles_are_found_by_the_lines_that_name_them():
    titles = ["Luve Jumper", "DIV+ Luve knit", "REGULAR PRINTED TEE 9.99 B3", "", "Tina"]
    index = TitleIndex(titles)
    assert normalise("  R-NECK LS  Slim-fit! ") == "r neck ls slim fit"
    assert index.named(["kvist", "luve jumper", "36 99 usd"]).tolist() == [0]
    assert index.named(["luve jumpcr"]).tolist() == [0]  # one letter misread still names it
    assert index.named(["regular printed tee", "9 99 b3"]).tolist() == [2]  # a title wrapped over two lines
    assert index.named(["regular", "printed tee", "9 99 b3"]).tolist() == [2]  # ... and over three
    wrapped = TitleIndex(["Embrace Skinny Ankle High Waist", "Skinny"])  # a narrow column: a word a line
    assert wrapped.named(["embrace", "skinny", "ankle", "high", "waist", "29 99"]).tolist() == [0, 1]
    assert wrapped.named(["embrace", "skinny", "ankle", "high", "waist"], above=0).tolist() == []
    assert index.named(["", "ab", "add to bag"]).tolist() == []  # nothing near; an empty title is never named
    many = TitleIndex(["Tina"] * (TITLES_READ + 8))
    assert len(many.named(["tina"])) == TITLES_READ


def test_a_line_of_a_description_names_the_items_it_matches_best():
    """A page prints its description in plain type, read where a heavy title is not: a line of at least
    DESCRIPTION_LINE characters within an item's description names it; of several descriptions holding the
    lines, only those that hold them best, summed over the lines; a short or common phrase alone names
    nothing it should not; and where a title is read, descriptions are not asked."""
    titles = ["June Jeggings", "Jade HW Skinny", "Georgina", "Sonja top"]
    descriptions = ["Slim-fit, denim-look leggings in stretch twill with a high, elasticated waist.",
                    "5-pocket jeans in washed, stretch denim with a high waist and skinny legs.",
                    "Fitted, long-sleeved top in soft, ribbed jersey with a V-neck.",
                    "Fitted top in soft, ribbed viscose jersey with a small collar."]
    index = TitleIndex(titles, descriptions)
    assert index.named(["sane jsoginge", "slimfit denim look leggings in stretch", "51 00"]).tolist() == [0]
    assert index.named(["in washed stretch denim with a high waist"], above=0).tolist() == [1]
    assert index.named(["slim fit denim look leggings in stretch twill"], above=0).tolist() == []  # its own
    assert index.named(["fitted long sleeved top in soft ribbed jersey"]).tolist() == [2]  # not Sonja's, less
    assert index.named(["with a high waist"]).tolist() == []  # shorter than a description line
    assert len("with a high waist") < DESCRIPTION_LINE
    assert TitleIndex(titles).named(["slim fit denim look leggings in stretch twill"]).tolist() == []
    # beside a title read, descriptions are not asked (look-alikes share one)
    assert index.named(["june jeggings", "in washed stretch denim with a high waist"]).tolist() == [0]
    twins = TitleIndex(["Tee A", "Tee B"], ["Relaxed top in soft cotton jersey with a round neck.",
                                            "Relaxed top in soft cotton jersey with short sleeves."])
    assert twins.named(["relaxed top in soft cotton jersey"]).tolist() == [0, 1]  # a line both hold
    assert twins.named(["relaxed top in soft cotton jersey", "jersey with short sleeves"]).tolist() == [1]  # summed
    with pytest.raises(ValueError, match="one description per title"):
        TitleIndex(titles, descriptions[:2])


def test_a_title_read_on_two_separate_runs_of_lines_is_read_twice():
    """A list shows two cards of one title (colour variants), each read, misread or not; a page prints its
    title once, however it wraps, whatever junk is read beside it."""
    index = TitleIndex(["RICHIE HOOD", "Greta Thong Mynta Low 3p"])
    assert index.read_twice(["richie hood", "10 99 usd", "richehood", "56 99 usd"])
    assert index.read_twice(["richie", "hood", "10 99", "richie hood"])  # wrapped once, then again
    assert not index.read_twice(["richie hood", "10 99 usd", "greta thong mynta low 3p"])  # two titles, once each
    assert not index.read_twice(["x", "richie hood", "hoodie in sweatshirt fabric"])  # overlapping runs: once
    assert not index.read_twice(["richie", "hood"]) and not index.read_twice([])


def test_one_reading_of_a_screen_gives_the_items_named_and_whether_a_title_is_read_twice(monkeypatch):
    """The grounder asks both of each screen read; `TitleIndex.read` answers both from one search of the titles,
    as `named` and `read_twice` do one at a time."""
    index = TitleIndex(["RICHIE HOOD", "Greta Thong Mynta Low 3p", "Richie hood 2p"])
    searches: list[int] = []
    title_reads = index._title_reads
    monkeypatch.setattr(index, "_title_reads", lambda lines: searches.append(1) or title_reads(lines))
    for lines in (["richie hood", "10 99 usd", "richehood"], ["greta thong mynta low 3p", "richie hood"], []):
        searches.clear()
        text = index.read(lines)
        assert len(searches) == 1
        assert text.twice == index.read_twice(lines)
        for above in (None, 0, 1, 2):
            assert text.named(above).tolist() == index.named(lines, above).tolist()
    assert index.read(["richie hood", "x", "richie hood"]).twice
    assert index.read(["richie hood"]).named().tolist() == [0, 2] and not index.read(["richie hood"]).twice


def test_text_naming_an_item_as_well_as_any_other_names_no_other_instead():
    """Colour variants share a title, or one adds to it ("(C)"): read text names both, and only the items
    it names strictly better than a given one (``above``) could replace that one."""
    index = TitleIndex(["Malaga loose tank (C)", "Malaga loose tank", "Malaga loose tank", "Tina"])
    read = ["solstice", "malaga loose tank c", "89 99 usd"]
    assert index.named(read).tolist() == [0, 1, 2]
    assert index.named(read, above=0).tolist() == []  # the page's own title read exactly: nothing better
    assert index.named(read, above=1).tolist() == [0]  # the variant without "(C)": the read names (C) better
    assert index.named(["malaga loose tank"], above=1).tolist() == []  # a shared title: no variant is better
    assert index.named(read, above=3).tolist() == [0, 1, 2]  # an item the text does not name: all of them
    assert index.one_title([0, 1, 2]) and index.one_title([3]) and not index.one_title([0, 3])
    lines = TitleIndex(["Small basic scrunchie", "PQ silk small basic scrunchie", "Velvet scrunchie"])
    assert lines.one_title([0, 1]) and not lines.one_title([0, 2])  # a title within another's words: one
    assert not index.one_title([]) and not TitleIndex(["", "Tina"]).one_title([0])


@needs_ocr
def test_read_lines_reads_a_title_drawn_on_a_screen():
    lines = read_lines(np.asarray(_page(_photos(1)[0], "Luve Jumper")))
    assert "luve jumper" in lines, lines


@needs_ocr
def test_a_reader_that_died_is_logged_reads_nothing_and_is_replaced(caplog):
    screen_text._stop_idle_readers()
    screen_text.start_readers(1)
    dead = screen_text._idle_readers.get_nowait()
    dead.kill()
    dead.wait()
    screen_text._idle_readers.put(dead)
    page = np.asarray(_page(_photos(1)[0], "Luve Jumper"))
    with caplog.at_level(logging.WARNING, logger="mmrec.screen_text"):
        assert read_lines(page) == []
    assert "OCR reader read nothing" in caplog.text
    assert "luve jumper" in read_lines(page)  # a new reader started


@needs_ocr
def test_a_reader_past_the_timeout_is_stopped_and_the_screen_reads_nothing(monkeypatch, caplog):
    page = np.asarray(_page(_photos(1)[0], "Luve Jumper"))
    monkeypatch.setattr(screen_text, "OCR_TIMEOUT", 1e-4)
    with caplog.at_level(logging.WARNING, logger="mmrec.screen_text"):
        assert read_lines(page) == []
    assert "no answer within" in caplog.text
    monkeypatch.setattr(screen_text, "OCR_TIMEOUT", 60.0)
    assert "luve jumper" in read_lines(page)  # the late answer is not taken for this screen's


def test_a_reader_that_cannot_start_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # importing it fails
    sink = io.BytesIO()
    screen_text._serve(io.BytesIO(), sink)
    ok, size = struct.unpack("<BI", sink.getvalue()[:5])
    assert ok == 0 and "could not start: ModuleNotFoundError" in sink.getvalue()[5:5 + size].decode()


@needs_ocr
def test_a_reader_answers_each_screen_until_its_input_ends():
    """The reader program itself (in-process, its libraries would share this process's: see the decord test); the
    first screen asked again with the threads of a screen read alone reads the same."""
    pages = [_page(photo, name) for photo, name in zip(_photos(2), ["Luve Jumper", "Alpha Coat"])]
    asked = [(pages[0], screen_text.READER_THREADS), (pages[1], screen_text.READER_THREADS),
             (pages[0], screen_text.ALONE_THREADS)]
    request = b"".join(struct.pack("<III", *p.size, threads) + p.tobytes() for p, threads in asked)
    done = subprocess.run([sys.executable, "-m", "mmrec.screen_text"], input=request, capture_output=True,
                          timeout=120)
    answers, data = [], done.stdout
    while data:
        ok, size = struct.unpack("<BI", data[:5])
        answers.append((ok, normalise(data[5:5 + size].decode())))
        data = data[5 + size:]
    assert done.returncode == 0 and answers[0] == (1, "")  # ready
    assert [ok for ok, _ in answers] == [1, 1, 1, 1]  # then one answer per screen
    assert "luvejumper" in answers[1][1].replace(" ", "") and "alphacoat" in answers[2][1].replace(" ", "")
    assert answers[3] == answers[1]


def test_one_screen_is_read_alone_and_several_side_by_side(monkeypatch):
    """A screen read alone takes the readers' cores (a live page waits on its text); several share them."""
    asked = []
    monkeypatch.setattr(grounding, "read_lines", lambda image, alone=False: asked.append(alone) or [str(image.sum())])
    pixels = torch.arange(3 * 3 * 2 * 2, dtype=torch.uint8).view(3, 3, 2, 2)
    assert grounding._screen_lines(pixels, [1]) == {1: [str(int(pixels[1].sum()))]} and asked == [True]
    asked.clear()
    assert list(grounding._screen_lines(pixels, [0, 2])) == [0, 2] and asked == [False, False]


@needs_ocr
def test_screens_are_read_with_decord_loaded_first(tmp_path):
    """decord loads its own old zlib into the process: an OCR library in-process once aborted the whole process."""
    _page(_photos(1)[0], "Luve Jumper").save(tmp_path / "page.png")
    code = ("import decord, numpy, PIL.Image; from mmrec.screen_text import read_lines; "
            f"print(read_lines(numpy.asarray(PIL.Image.open(r'{tmp_path / 'page.png'}').convert('RGB'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "luve jumper" in done.stdout, done.stderr[-2000:]


@needs_ocr
def test_screens_read_side_by_side_read_as_one_at_a_time():
    """Threads share the idle reader processes: each screen's text is its own, however they interleave (the
    reader may run small words together: compared without spaces)."""
    names = ["Luve Jumper", "Harbour Hoodie", "Alpha Coat", "Tina Skirt"]
    pages = [np.asarray(_page(photo, name)) for photo, name in zip(_photos(len(names)), names)] * 2
    with ThreadPoolExecutor(4) as pool:
        read = list(pool.map(read_lines, pages))
    unspaced = [[line.replace(" ", "") for line in lines] for lines in read]
    assert [normalise(name).replace(" ", "") in lines for name, lines in zip(names * 2, unspaced)] == [True] * 8, read


def _twin_grounder(titles, photos, descriptions=None):
    space = _twin_space()
    check = PhotoCheck(candidates=len(photos), locate_all=True, contrast=1.0)
    return Grounder(space, space.embed_images(photos), windows=ScreenWindows.grid(narrowest=0.45, aspect=1.5),
                    check=check, thumbnails=check.thumbnails(photos), batch_size=2, titles=titles,
                    descriptions=descriptions)


@needs_ocr
def test_a_titled_item_the_search_did_not_keep_is_found_by_its_own_photo():
    """Among many articles alike the catalogue-wide search can keep look-alikes and not the shown item (score
    -1), and find the best in a window off the photo: the item the title names is then searched for on the
    screen by itself, and named where its photo comes within TITLE_BAND of the best (matched only in the
    best's window, as before, it is not)."""
    photos = _photos(3)
    read = _twin_grounder(["Alpha coat", "Luve Jumper", "Harbour hoodie"], photos)
    page = torch.from_numpy(np.asarray(_page(photos[1], "Luve Jumper")).copy()).permute(2, 0, 1)[None]
    boxes = read.windows.boxes(180, 320)
    match = torch.tensor([[0.95, -1.0, 0.9]])  # items 0 and 2 kept, alike (so the title is read); item 1 not
    where = torch.zeros(1, 3, 4)
    where[0, 0] = torch.tensor([0.0, 200.0, 80.0, 320.0])  # item 0 found below the photo
    named = read._named_by_title(page, match, where, [(boxes, read.thumbnails)])
    assert int(named[0].argmax()) == 1 and float(named[0].max()) == pytest.approx(0.95)


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
    monkeypatch.setattr(grounding, "read_lines", lambda screen, alone=False: ["luve jumper", "9 99 usd", "luve jumpcr"])
    assert read.similarities([twin_page])[1].tolist() == [-1.0]  # one title twice: a list's two cards, no page
    calls = []
    monkeypatch.setattr(grounding, "read_lines", lambda screen, alone=False: calls.append(1) or ["luve jumper"])
    assert read.similarities([_page(photos[2], "Luve Jumper")])[0].tolist() == [2] and not calls


@needs_ocr
def test_a_description_tells_apart_photos_alike_where_the_title_is_not_read():
    """Twins 0 and 1 again, on a page whose title is not there to read (an app's heavy type at phone size is
    misread): the line of description printed below names the second, with descriptions given; without them
    the first is named, by photo alone."""
    photos = _photos(3)
    photos[1] = photos[0].copy()
    titles = ["Alpha coat", "Luve Jumper", "Harbour hoodie"]
    descriptions = ["Long coat in a wool blend with notch lapels.", "Jumper in a soft, fine knit with a round neck.",
                    "Hoodie in sweatshirt fabric with a lined hood."]
    page = _page(photos[1], "", "Jumper in a soft, fine knit")
    assert _twin_grounder(titles, photos).similarities([page])[0].tolist() == [0]
    assert _twin_grounder(titles, photos, descriptions).similarities([page])[0].tolist() == [1]


def test_titles_need_a_layout_free_check_and_an_ocr_reader(monkeypatch, caplog, tmp_path):
    photos = _photos(2)
    with pytest.raises(ValueError, match="one per item"):
        _twin_grounder(["only one"], photos)
    monkeypatch.setattr(grounding, "ocr_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="mmrec.grounding"):
        assert _twin_grounder(["a", "b"], photos).titles is None
    assert "no OCR reader" in caplog.text
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
    variants = [(grounder.windows.boxes(180, 320), grounder.thumbnails)]
    monkeypatch.setattr(grounding, "read_lines", lambda image, alone=False: ["luve jumper", "harbour hoodie"])
    named = grounder._named_by_title(screen, match, where, variants)
    assert int(named.argmax()) == 1 and float(named.max()) == pytest.approx(0.98)
    monkeypatch.setattr(grounding, "read_lines", lambda image, alone=False: ["harbour hoodie"])
    assert torch.equal(grounder._named_by_title(screen, match, where, variants), match)


def test_a_page_called_a_feed_is_named_by_its_one_title(monkeypatch):
    """The photo check called the screen a feed (a look-alike matched a coloured bar apart from the photo), but
    its text names one title, of the item found best: it is that item's page, at its own score. Text naming
    two titles (a feed's cards) or one title twice, an item whose photo is far below the best, or no title,
    leaves the verdict; a screen not called a feed is not read."""
    grounder = _twin_grounder(["Alpha coat", "Luve Jumper", "Harbour hoodie"], _photos(3))
    screens = grounding.screen_tensor(_page(_photos(1)[0], ""))[None].expand(2, -1, -1, -1)
    scores = torch.tensor([[0.9, 0.97, 0.5], [0.9, 0.97, 0.5]])
    judged = torch.full((2, 3), -1.0)
    feed = torch.tensor([True, True])

    def paged(lines: list[str], called: torch.Tensor = feed) -> torch.Tensor:
        monkeypatch.setattr(grounding, "read_lines", lambda image, alone=False: calls.append(1) or lines)
        return grounder._paged_by_title(screens, judged.masked_fill(~called[:, None], 0.0), scores, called)

    calls: list[int] = []
    named = paged(["kvist", "luve jumper", "36 99 usd"])
    assert named[:, 1].tolist() == pytest.approx([0.97, 0.97]) and (named[:, [0, 2]] == -1).all()
    assert (paged(["luve jumper", "alpha coat"]) == -1).all()  # two titles: a feed's cards
    assert (paged(["luve jumper", "36 99 usd", "luve jumper"]) == -1).all()  # one title twice: two cards
    grounder.titles = TitleIndex(["Alpha coat", "Luve Jumper", "Luve Jumper 2p"])
    assert paged(["luve jumper"])[:, 1].tolist() == pytest.approx([0.97, 0.97])  # a title and its multipack: one
    grounder.titles = TitleIndex(["Alpha coat", "Luve Jumper", "Harbour hoodie"])
    assert (paged(["harbour hoodie"]) == -1).all()  # its photo 0.47 below the best
    assert (paged(["add to bag"]) == -1).all()
    calls.clear()
    assert torch.equal(paged(["luve jumper"], torch.tensor([False, False])), torch.zeros(2, 3)) and not calls
    searches: list[int] = []
    title_reads = grounder.titles._title_reads
    monkeypatch.setattr(grounder.titles, "_title_reads", lambda lines: searches.append(1) or title_reads(lines))
    paged(["kvist", "luve jumper", "36 99 usd"])
    assert len(searches) == 2  # the titles searched once a screen read
