"""Text on screens, read by OCR and matched to catalog titles: the cue a search by photo lacks.

Two articles whose photos are alike at screen size (one knit in two lines, a crew-neck top and a sweatshirt of
one navy) are told apart by no pixel search at these sizes, but a product page names its article in its title.
`read_lines` reads a screen's text with Tesseract through its library binding ``tesserocr`` and the system's
English model (Debian's ``tesseract-ocr``; without either `ocr_available` is False and a
`mmrec.grounding.Grounder` grounds by photo alone), and `TitleIndex` finds the catalog items whose title
matches a line read, or two adjacent lines (a title that wraps), by rapidfuzz's ratio. Reading is of text
only: nothing in a screen is run.
"""
from __future__ import annotations

import functools
import glob
import importlib.util
import logging
import os
import queue
import re
from typing import Any, Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

OCR_SCALE = 4  # screens are enlarged this much before OCR: a phone capture's text is 8-12 px tall
OCR_TIMEOUT = 30.0  # seconds one screen may take; past it the screen is read as having no text (logged)
TITLE_MATCH = 85.0  # the least ratio (0-100) of a line to a normalised title for the title to count as read
TITLES_READ = 32  # at most this many items named by one screen's text, the best matched (a generic title names many)
TESSDATA_PLACES = ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata", "/usr/local/share/tessdata",
                   "/opt/homebrew/share/tessdata")  # where systems keep Tesseract's models, after TESSDATA_PREFIX
_WORDS = re.compile(r"[^0-9a-z]+")
_idle_engines: queue.SimpleQueue = queue.SimpleQueue()  # Tesseract engines loaded and not in use


@functools.lru_cache(maxsize=1)
def tessdata() -> str | None:
    """The folder holding Tesseract's English model (``eng.traineddata``): ``TESSDATA_PREFIX`` (that folder, or
    one with a ``tessdata`` folder in it) if it has one, else the first of `TESSDATA_PLACES` that has it (the
    newest version first); None where none has."""
    prefix = os.environ.get("TESSDATA_PREFIX")
    places = [prefix, os.path.join(prefix, "tessdata")] if prefix else []
    places += [p for pattern in TESSDATA_PLACES for p in sorted(glob.glob(pattern), reverse=True)]
    return next((p for p in places if os.path.isfile(os.path.join(p, "eng.traineddata"))), None)


def ocr_available() -> bool:
    """Whether screens can be read here: the ``tesserocr`` binding is installed and `tessdata` finds the model."""
    return importlib.util.find_spec("tesserocr") is not None and tessdata() is not None


def normalise(text: str) -> str:
    """Lower case, every run of characters other than letters and digits one space, trimmed."""
    return _WORDS.sub(" ", str(text).lower()).strip()


def _engine() -> Any:
    """A loaded Tesseract engine not in use (loading the model costs more than reading a screen, so engines are
    kept, one per thread reading at the same time), reading sparse text: any layout."""
    try:
        return _idle_engines.get_nowait()
    except queue.Empty:
        import tesserocr

        path = tessdata()
        if path is None:
            raise RuntimeError("no eng.traineddata (Debian: apt-get install tesseract-ocr)")
        return tesserocr.PyTessBaseAPI(path=path, lang="eng", psm=tesserocr.PSM.SPARSE_TEXT)


def read_lines(screen: Any) -> list[str]:
    """The lines of text Tesseract reads on ``screen`` (PIL image or uint8 ``[H, W, 3]`` array), enlarged
    `OCR_SCALE` times, as sparse text (any layout), each `normalise`d, empty ones left out. A failed read
    (no binding or model, an error, over `OCR_TIMEOUT`) is logged and reads nothing. Safe from several
    threads at once, which read side by side (the binding lets go of the GIL while it reads)."""
    image = screen if isinstance(screen, Image.Image) else Image.fromarray(np.asarray(screen, np.uint8))
    grey = image.convert("L").resize((image.width * OCR_SCALE, image.height * OCR_SCALE), Image.LANCZOS)
    engine = None
    try:
        engine = _engine()
        engine.SetImage(grey)
        if not engine.Recognize(timeout=int(OCR_TIMEOUT * 1000)):
            raise RuntimeError(f"no text within {OCR_TIMEOUT:g} s")
        text = engine.GetUTF8Text()
    except (ImportError, RuntimeError, OSError) as err:
        logger.warning("screen text: tesseract read nothing (%s)", err)
        return []
    finally:
        if engine is not None:
            engine.Clear()
            _idle_engines.put(engine)
    return [line for line in map(normalise, text.splitlines()) if line]


class TitleIndex:
    """The catalog's titles, `normalise`d, to find the items a screen's lines name (`named`)."""

    def __init__(self, titles: Sequence[str]) -> None:
        self.titles = [normalise(t) for t in titles]

    def named(self, lines: Sequence[str]) -> np.ndarray:
        """Codes of the items whose title matches a line, or two adjacent lines joined, with a ratio of at least
        `TITLE_MATCH` (items without a title never), best matched first, at most `TITLES_READ`."""
        from rapidfuzz import fuzz, process

        queries = [q for q in [*lines, *(f"{a} {b}" for a, b in zip(lines, lines[1:]))] if len(q) >= 3]
        best: dict[int, float] = {}
        for query in queries:
            for _, score, code in process.extract(query, self.titles, scorer=fuzz.ratio, score_cutoff=TITLE_MATCH,
                                                  limit=None):
                if self.titles[code] and score > best.get(code, -1.0):
                    best[code] = score
        ranked = sorted(best, key=lambda c: (-best[c], c))[:TITLES_READ]
        return np.array(ranked, np.int64)
