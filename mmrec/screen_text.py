"""Text on screens, read by OCR and matched to catalog titles and descriptions: the cue a search by photo lacks.

Two articles whose photos are alike at screen size (one knit in two lines, black jeggings and black skinny
jeans) are told apart by no pixel search at these sizes, but a product page names its article in its title and
often prints its description. `read_lines` reads a screen's text with RapidOCR (``rapidocr_onnxruntime``: the
PP-OCR text detector and recogniser, shipped inside the package and run by onnxruntime, so nothing is
downloaded; without it `ocr_available` is False and a `mmrec.grounding.Grounder` grounds by photo alone), and
`TitleIndex` finds the catalog items whose title matches a line read, or a few adjacent lines (a title that
wraps), by rapidfuzz's ratio, or whose description a line is part of. Its detector finds small plain text
(a description at phone size) that Tesseract, enlarged, read only in pieces. Reading is of text only:
nothing in a screen is run.

The reader runs in processes of its own (``python -m mmrec.screen_text``), each kept with its models loaded:
loading costs more than reading a screen, and in-process it would share the process's libraries (with decord
loaded first, an OCR library's PNG step once bound to decord's old zlib and aborted the whole process).
"""
from __future__ import annotations

import atexit
import dataclasses
import importlib.util
import logging
import os
import queue
import re
import select
import struct
import subprocess
import sys
from typing import Any, Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

OCR_TIMEOUT = 30.0  # seconds one screen may take; past it the reader is stopped and the screen reads nothing (logged)
TITLE_MATCH = 85.0  # the least ratio (0-100) of a line to a normalised title for the title to count as read
TITLE_LINES = 6  # a title may be read over at most this many adjacent lines (a narrow column sets a word a line)
TITLES_READ = 32  # at most this many items named by one screen's text, the best matched (a generic title names many)
DESCRIPTION_LINE = 20  # the fewest characters (spaces aside) of a line read to match it to the catalog's descriptions
DESCRIPTION_MATCH = 90.0  # the least partial ratio (0-100) of such a line to a description for the item to be named
READERS = min(4, os.cpu_count() or 1)  # reader processes reading side by side at most (each holds its models)
READER_THREADS = 1  # onnxruntime threads in each reader: readers read side by side, one core each
ALONE_THREADS = READERS  # ... and in a screen read alone (`read_lines`' ``alone``): the cores the readers would use
_WORDS = re.compile(r"[^0-9a-z]+")
_idle_readers: queue.SimpleQueue = queue.SimpleQueue()  # reader processes started and not in use


def ocr_available() -> bool:
    """Whether screens can be read here: ``rapidocr_onnxruntime`` (with its models) is installed."""
    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


def normalise(text: str) -> str:
    """Lower case, every run of characters other than letters and digits one space, trimmed."""
    return _WORDS.sub(" ", str(text).lower()).strip()


def _unspaced(text: str) -> str:
    """``text`` without its spaces."""
    return text.replace(" ", "")


class _NotRead(RuntimeError):
    """A reader answered that it could not read a screen (it goes on reading others)."""


def _send(out: Any, ok: bool, text: str) -> None:
    """One answer of a reader: a byte (1: read, 0: failed), the length of the text, the UTF-8 text."""
    data = text.encode("utf-8")
    out.write(struct.pack("<BI", int(ok), len(data)) + data)
    out.flush()


def _answer(reader: subprocess.Popen, timeout: float | None = None) -> str:
    """The next answer of ``reader``: its text; `_NotRead` where it failed; RuntimeError where it stopped or
    gave no answer within ``timeout`` seconds (None: waits)."""
    if timeout is not None and not select.select([reader.stdout], [], [], timeout)[0]:
        raise RuntimeError(f"no answer within {timeout:g} s")
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


def read_lines(screen: Any, alone: bool = False) -> list[str]:
    """The lines of text read on ``screen`` (PIL image or uint8 ``[H, W, 3]`` array), each box of text the
    detector finds one line, top to bottom, each `normalise`d, empty ones left out. A failed read (no
    reader library, an error, over `OCR_TIMEOUT`, a reader that died) is logged and reads nothing. Safe
    from several threads at once: each read takes an idle reader process, or starts one. ``alone``: no other
    screen is read meanwhile, so the reader takes `ALONE_THREADS` threads, not `READER_THREADS` (the same
    lines, read sooner: a live page waits on its one screen's text; side by side, more threads than cores
    slow every read)."""
    image = screen if isinstance(screen, Image.Image) else Image.fromarray(np.asarray(screen, np.uint8))
    rgb = image.convert("RGB")
    reader = None
    try:
        try:
            reader = _idle_readers.get_nowait()
        except queue.Empty:
            reader = _start_reader()
        threads = ALONE_THREADS if alone else READER_THREADS
        reader.stdin.write(struct.pack("<III", rgb.width, rgb.height, threads) + rgb.tobytes())
        reader.stdin.flush()
        text = _answer(reader, OCR_TIMEOUT)
    except (RuntimeError, OSError) as err:
        logger.warning("screen text: the OCR reader read nothing (%s)", err)
        if reader is not None:
            _idle_readers.put(reader) if isinstance(err, _NotRead) else _stop(reader)
        return []
    _idle_readers.put(reader)
    return [line for line in map(normalise, text.splitlines()) if line]


def _serve(source: Any, sink: Any) -> None:
    """A reader process: loads the models, answers that it is ready (or why not, and ends), then for each
    screen on ``source`` (width, height and threads as three little-endian uint32, then the RGB pixels row by
    row) answers with the text read, one box of text a line; ends when ``source`` does. The threads are
    `READER_THREADS` or `ALONE_THREADS`: a model is loaded for each, as onnxruntime fixes its threads when it
    loads. Screens are upright, so the detector's boxes go straight to the recogniser (no orientation
    classifier)."""
    try:
        from rapidocr_onnxruntime import RapidOCR

        engines = {threads: RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
                   for threads in {READER_THREADS, ALONE_THREADS}}
    except Exception as err:  # noqa: BLE001 - whatever stops the library loading, the parent is told why
        _send(sink, False, f"the OCR reader could not start: {type(err).__name__}: {err}")
        return
    _send(sink, True, "")
    while len(head := source.read(12)) == 12:
        width, height, threads = struct.unpack("<III", head)
        pixels = np.frombuffer(source.read(width * height * 3), np.uint8).reshape(height, width, 3)
        try:
            boxes, _ = engines.get(threads, engines[READER_THREADS])(pixels, use_cls=False)
        except Exception as err:  # noqa: BLE001 - one screen the library cannot read; the next may be fine
            _send(sink, False, f"{type(err).__name__}: {err}")
            continue
        _send(sink, True, "\n".join(str(box[1]) for box in boxes or ()))


@dataclasses.dataclass(frozen=True)
class TextReading:
    """What one screen's lines say of the catalog (`TitleIndex.read`), so the grounder searches the titles once a
    screen: ``scores``, each item the text names with how well (its best title ratio, or where no title is read
    its description ratios summed); ``twice``, whether some title is read twice (`TitleIndex.read_twice`)."""

    scores: dict[int, float]
    twice: bool

    def named(self, above: int | None = None) -> np.ndarray:
        """The items named, best matched first, at most `TITLES_READ`; ``above``: see `TitleIndex.named`."""
        floor = self.scores.get(above, -1.0) if above is not None else -1.0
        ranked = sorted((c for c in self.scores if self.scores[c] > floor), key=lambda c: (-self.scores[c], c))
        return np.array(ranked[:TITLES_READ], np.int64)


class TitleIndex:
    """The catalog's titles, and optionally its descriptions, `normalise`d, to find the items a screen's lines
    name (`named`). A description counts where a page prints it: set in plain type, it is read where a heavy
    title at phone size is misread, and it tells apart articles whose photos are alike (black jeggings and
    black skinny jeans). Lines are matched with their spaces left out, on both sides: the reader often runs
    the words of small type together ("alphacoat")."""

    def __init__(self, titles: Sequence[str], descriptions: Sequence[str] | None = None) -> None:
        self.titles = [normalise(t) for t in titles]
        if descriptions is not None and len(descriptions) != len(self.titles):
            raise ValueError(f"TitleIndex needs one description per title: {len(descriptions)} for "
                             f"{len(self.titles)} titles")
        self._titles = [_unspaced(t) for t in self.titles]
        self._descriptions = [_unspaced(normalise(t)) for t in descriptions] if descriptions is not None else None

    def named(self, lines: Sequence[str], above: int | None = None) -> np.ndarray:
        """Codes of the items whose title matches a line, or up to `TITLE_LINES` adjacent lines joined (a title
        set large in a narrow column wraps, a word a line), with a ratio of at least `TITLE_MATCH` (items without
        a title never). Where no title is read and descriptions are given, the items whose description the lines
        of at least `DESCRIPTION_LINE` characters match best instead: each such line within the description with
        a partial ratio of at least `DESCRIPTION_MATCH`, the ratios summed over the lines (a phrase such as "in
        soft cotton jersey" is in many; several lines tell). Descriptions are not asked beside a title read: H&M
        gives look-alikes one description, so they would only add those. Best matched first, at most
        `TITLES_READ`. ``above`` (an item code): only the items whose text matches better than that item's does
        (all of them where it is not named), so text that names an item as well as any other does not name
        another instead (colour variants share a title, or one adds to it)."""
        return self.read(lines).named(above)

    def read_twice(self, lines: Sequence[str]) -> bool:
        """Whether some title is read on two runs of ``lines`` that share no line, each with a ratio of at least
        `TITLE_MATCH` (see `named`): the screen lists two cards of that title (colour variants share one, in a
        grid or a bag); a product page prints its title once."""
        return self.read(lines).twice

    def read(self, lines: Sequence[str]) -> TextReading:
        """Both answers of one screen's ``lines``, `named` and `read_twice`, from one search of the titles."""
        lines = [_unspaced(line) for line in lines]
        reads = self._title_reads(lines)
        twice = any(a[1] <= b[0] for spans in reads.values() for _, a in spans for _, b in spans)
        best = {code: max(score for score, _ in spans) for code, spans in reads.items()}
        if not best:  # no title read: the description may tell (read beside a title, it only adds look-alikes)
            best = self._described(lines)
        return TextReading(best, twice)

    def _title_reads(self, lines: Sequence[str]) -> dict[int, list[tuple[float, tuple[int, int]]]]:
        """Each item whose title a run of 1 to `TITLE_LINES` adjacent (unspaced) lines, joined, matches with a
        ratio of at least `TITLE_MATCH` (items without a title never), with each such ratio and run (first
        line, one past the last)."""
        from rapidfuzz import fuzz, process

        runs = [(k, k + n) for n in range(1, TITLE_LINES + 1) for k in range(len(lines) - n + 1)]
        reads: dict[int, list[tuple[float, tuple[int, int]]]] = {}
        for run in runs:
            query = "".join(lines[run[0]:run[1]])
            if len(query) < 3:
                continue
            for _, score, code in process.extract(query, self._titles, scorer=fuzz.ratio, score_cutoff=TITLE_MATCH,
                                                  limit=None):
                if self._titles[code]:
                    reads.setdefault(code, []).append((score, run))
        return reads

    def _described(self, lines: Sequence[str]) -> dict[int, float]:
        """The items whose description the (unspaced) lines match best (see `named`): each item's partial
        ratios summed over the lines that match it, only the items with the highest sum."""
        from rapidfuzz import fuzz, process

        if self._descriptions is None:
            return {}
        scores: dict[int, float] = {}
        for line in (line for line in lines if len(line) >= DESCRIPTION_LINE):
            for _, score, code in process.extract(line, self._descriptions, scorer=fuzz.partial_ratio,
                                                  score_cutoff=DESCRIPTION_MATCH, limit=None):
                if self._descriptions[code]:
                    scores[code] = scores.get(code, 0.0) + score
        top = max(scores.values(), default=None)
        return {code: score for code, score in scores.items() if score == top}

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
