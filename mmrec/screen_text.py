"""Text on screens, read by OCR and matched to catalog titles: the cue a search by photo lacks.

Two articles whose photos are alike at screen size (one knit in two lines, a crew-neck top and a sweatshirt of
one navy) are told apart by no pixel search at these sizes, but a product page names its article in its title.
`read_lines` reads a screen's text with Tesseract (its library binding ``tesserocr`` and the system's English
model, Debian's ``tesseract-ocr``; without either `ocr_available` is False and a `mmrec.grounding.Grounder`
grounds by photo alone), and `TitleIndex` finds the catalog items whose title matches a line read, or two
adjacent lines (a title that wraps), by rapidfuzz's ratio. Reading is of text only: nothing in a screen is run.

Tesseract runs in reader processes of its own (``python -m mmrec.screen_text``), each kept with its model
loaded: loading costs more than reading a screen, and in-process it would share the process's libraries — with
decord loaded first, Tesseract's PNG step bound to decord's old zlib and aborted the whole process.
"""
from __future__ import annotations

import atexit
import functools
import glob
import importlib.util
import logging
import os
import queue
import re
import struct
import subprocess
import sys
from typing import Any, Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

OCR_SCALE = 4  # screens are enlarged this much before OCR: a phone capture's text is 8-12 px tall
OCR_TIMEOUT = 30.0  # seconds one screen may take; past it the screen is read as having no text (logged)
TITLE_MATCH = 85.0  # the least ratio (0-100) of a line to a normalised title for the title to count as read
TITLES_READ = 32  # at most this many items named by one screen's text, the best matched (a generic title names many)
READERS = min(4, os.cpu_count() or 1)  # reader processes reading side by side at most (each holds a model)
TESSDATA_PLACES = ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata", "/usr/local/share/tessdata",
                   "/opt/homebrew/share/tessdata")  # where systems keep Tesseract's models, after TESSDATA_PREFIX
_WORDS = re.compile(r"[^0-9a-z]+")
_idle_readers: queue.SimpleQueue = queue.SimpleQueue()  # reader processes started and not in use


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


class _NotRead(RuntimeError):
    """A reader answered that it could not read a screen (it goes on reading others)."""


def _send(out: Any, ok: bool, text: str) -> None:
    """One answer of a reader: a byte (1: read, 0: failed), the length of the text, the UTF-8 text."""
    data = text.encode("utf-8")
    out.write(struct.pack("<BI", int(ok), len(data)) + data)
    out.flush()


def _answer(reader: subprocess.Popen) -> str:
    """The next answer of ``reader``: its text; `_NotRead` where it failed; RuntimeError where it stopped."""
    head = reader.stdout.read(5)
    if len(head) < 5:
        raise RuntimeError(f"the reader process stopped (exit status {reader.poll()})")
    ok, size = struct.unpack("<BI", head)
    text = reader.stdout.read(size).decode("utf-8", "replace")
    if not ok:
        raise _NotRead(text)
    return text


def _start_reader() -> subprocess.Popen:
    """A reader process with its model loaded (it answers once when ready)."""
    path = os.pathsep.join(p for p in sys.path if p)  # mmrec importable there as here, installed or not
    reader = subprocess.Popen([sys.executable, "-m", "mmrec.screen_text"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": path})
    try:
        _answer(reader)
    except RuntimeError:
        _stop(reader)
        raise
    return reader


def _stop(reader: subprocess.Popen) -> None:
    """Ends a reader: its input closed (it exits), killed if it does not within a second."""
    try:
        reader.stdin.close()
        reader.wait(timeout=1.0)
    except (OSError, subprocess.TimeoutExpired):
        reader.kill()
        reader.wait()


@atexit.register
def _stop_idle_readers() -> None:
    while True:
        try:
            _stop(_idle_readers.get_nowait())
        except queue.Empty:
            return


def start_readers(count: int = READERS) -> None:
    """Starts reader processes until ``count`` wait idle, so the first screens read pay no start-up (a failure
    to start is left to the first read, which logs it)."""
    for _ in range(max(0, count - _idle_readers.qsize())):
        try:
            _idle_readers.put(_start_reader())
        except (RuntimeError, OSError):
            return


def read_lines(screen: Any) -> list[str]:
    """The lines of text Tesseract reads on ``screen`` (PIL image or uint8 ``[H, W, 3]`` array), enlarged
    `OCR_SCALE` times, as sparse text (any layout), each `normalise`d, empty ones left out. A failed read
    (no binding or model, an error, over `OCR_TIMEOUT`, a reader that died) is logged and reads nothing.
    Safe from several threads at once: each read takes an idle reader process, or starts one."""
    image = screen if isinstance(screen, Image.Image) else Image.fromarray(np.asarray(screen, np.uint8))
    grey = image.convert("L")
    reader = None
    try:
        try:
            reader = _idle_readers.get_nowait()
        except queue.Empty:
            reader = _start_reader()
        reader.stdin.write(struct.pack("<II", grey.width, grey.height) + grey.tobytes())
        reader.stdin.flush()
        text = _answer(reader)
    except (RuntimeError, OSError) as err:
        logger.warning("screen text: tesseract read nothing (%s)", err)
        if reader is not None:
            _idle_readers.put(reader) if isinstance(err, _NotRead) else _stop(reader)
        return []
    _idle_readers.put(reader)
    return [line for line in map(normalise, text.splitlines()) if line]


def _serve(source: Any, sink: Any) -> None:
    """A reader process: loads the model, answers that it is ready (or why not, and ends), then for each
    screen on ``source`` (width and height as two little-endian uint32, then the grey pixels row by row)
    answers with the text read, enlarged `OCR_SCALE` times, as sparse text; ends when ``source`` does."""
    try:
        import tesserocr

        path = tessdata()
        if path is None:
            raise RuntimeError("no eng.traineddata (Debian: apt-get install tesseract-ocr)")
        engine = tesserocr.PyTessBaseAPI(path=path, lang="eng", psm=tesserocr.PSM.SPARSE_TEXT)
    except (ImportError, RuntimeError) as err:
        _send(sink, False, f"tesseract could not start: {err}")
        return
    _send(sink, True, "")
    while len(head := source.read(8)) == 8:
        width, height = struct.unpack("<II", head)
        grey = Image.frombytes("L", (width, height), source.read(width * height))
        engine.SetImage(grey.resize((width * OCR_SCALE, height * OCR_SCALE), Image.LANCZOS))
        if engine.Recognize(timeout=int(OCR_TIMEOUT * 1000)):
            _send(sink, True, engine.GetUTF8Text())
        else:
            _send(sink, False, f"no text within {OCR_TIMEOUT:g} s")
        engine.Clear()


class TitleIndex:
    """The catalog's titles, `normalise`d, to find the items a screen's lines name (`named`)."""

    def __init__(self, titles: Sequence[str]) -> None:
        self.titles = [normalise(t) for t in titles]

    def named(self, lines: Sequence[str], above: int | None = None) -> np.ndarray:
        """Codes of the items whose title matches a line, or two or three adjacent lines joined (a title set
        large in a narrow column wraps), with a ratio of at least `TITLE_MATCH` (items without a title never),
        best matched first, at most `TITLES_READ`. ``above`` (an item code): only the items whose title
        matches better than that item's does (all of them where it is not named), so text that names an item
        as well as any other does not name another instead (colour variants share a title, or one adds to it)."""
        from rapidfuzz import fuzz, process

        joined = [" ".join(lines[k:k + n]) for n in (2, 3) for k in range(len(lines) - n + 1)]
        queries = [q for q in [*lines, *joined] if len(q) >= 3]
        best: dict[int, float] = {}
        for query in queries:
            for _, score, code in process.extract(query, self.titles, scorer=fuzz.ratio, score_cutoff=TITLE_MATCH,
                                                  limit=None):
                if self.titles[code] and score > best.get(code, -1.0):
                    best[code] = score
        floor = best.get(above, -1.0) if above is not None else -1.0
        ranked = sorted((c for c in best if best[c] > floor), key=lambda c: (-best[c], c))[:TITLES_READ]
        return np.array(ranked, np.int64)

    def one_title(self, codes: Sequence[int]) -> bool:
        """Whether the items ``codes`` (`named` by a screen's text) share one title: each of their titles has
        the first's words, or the first has its, give or take a word (rapidfuzz's token-set ratio at least
        `TITLE_MATCH`), as one heading matches a title and its multipack or line ("Small basic scrunchie",
        "PQ silk small basic scrunchie"), while a feed's cards name titles unlike each other."""
        from rapidfuzz import fuzz

        first = self.titles[int(codes[0])] if len(codes) else ""
        return bool(first) and all(fuzz.token_set_ratio(first, self.titles[int(c)]) >= TITLE_MATCH for c in codes)


if __name__ == "__main__":
    answers = os.fdopen(os.dup(1), "wb")  # the pipe to the parent, kept for answers alone: whatever a library
    os.dup2(2, 1)  # prints to standard output goes where its errors go
    _serve(sys.stdin.buffer, answers)
