"""Text on screens, read by OCR and matched to catalog titles: the cue a search by photo lacks.

Two articles whose photos are alike at screen size (one knit in two lines, a crew-neck top and a sweatshirt of
one navy) are told apart by no pixel search at these sizes, but a product page names its article in its title.
`read_lines` reads a screen's text with the ``tesseract`` program (Debian's ``tesseract-ocr``; without it
`ocr_available` is False and a `mmrec.grounding.Grounder` grounds by photo alone), and `TitleIndex` finds the
catalog items whose title matches a line read, or two adjacent lines (a title that wraps), by rapidfuzz's
ratio. Reading is of text only: nothing in a screen is run.
"""
from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
from typing import Any, Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

OCR_SCALE = 4  # screens are enlarged this much before OCR: a phone capture's text is 8-12 px tall
OCR_TIMEOUT = 30.0  # seconds one screen may take; past it the screen is read as having no text (logged)
TITLE_MATCH = 85.0  # the least ratio (0-100) of a line to a normalised title for the title to count as read
TITLES_READ = 32  # at most this many items named by one screen's text, the best matched (a generic title names many)
_WORDS = re.compile(r"[^0-9a-z]+")


def ocr_available() -> bool:
    """Whether the ``tesseract`` program is on the PATH."""
    return shutil.which("tesseract") is not None


def normalise(text: str) -> str:
    """Lower case, every run of characters other than letters and digits one space, trimmed."""
    return _WORDS.sub(" ", str(text).lower()).strip()


def read_lines(screen: Any) -> list[str]:
    """The lines of text tesseract reads on ``screen`` (PIL image or uint8 ``[H, W, 3]`` array), enlarged
    `OCR_SCALE` times, as sparse text (any layout), each `normalise`d, empty ones left out. A failed read
    (the program missing, an error, over `OCR_TIMEOUT`) is logged and reads nothing."""
    image = screen if isinstance(screen, Image.Image) else Image.fromarray(np.asarray(screen, np.uint8))
    grey = image.convert("L").resize((image.width * OCR_SCALE, image.height * OCR_SCALE), Image.LANCZOS)
    png = io.BytesIO()
    grey.save(png, format="PNG")
    try:
        done = subprocess.run(["tesseract", "stdin", "stdout", "--psm", "11"], input=png.getvalue(),
                              capture_output=True, timeout=OCR_TIMEOUT, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        logger.warning("screen text: tesseract read nothing (%s)", err)
        return []
    return [line for line in map(normalise, done.stdout.decode("utf-8", "replace").splitlines()) if line]


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
