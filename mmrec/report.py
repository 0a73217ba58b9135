"""Self-contained HTML reports: tables and item galleries with pictures embedded as base64 thumbnails."""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from mmrec.data import Catalog
from mmrec.io import atomic_write_text

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.row{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 18px}
.card{width:110px;font-size:11px;text-align:center}.card img{width:100px;height:125px;object-fit:contain;
background:#fafafa;border:1px solid #ddd}.noimg{width:100px;height:125px;display:flex;align-items:center;
justify-content:center;background:#eee;color:#888;border:1px solid #ddd;margin:auto}
.hit img{outline:3px solid #2a2}.muted{color:#777}
"""


def thumbnail_data_uri(path: str | os.PathLike | None, size: tuple[int, int] = (100, 125)) -> str | None:
    """A small JPEG of the image at ``path`` as a ``data:`` URI, or None when it is missing or unreadable."""
    if path is None or not Path(path).is_file():
        return None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail(size)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=80)
    except (OSError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def item_cards(catalog: Catalog, codes: Iterable[int], *, captions: Sequence[str] | None = None,
               highlight: set[int] | None = None) -> str:
    """A row of item cards (picture + title) for item codes of ``catalog``."""
    cards = []
    for j, code in enumerate(codes):
        uri = thumbnail_data_uri(catalog.image_paths[code])
        pic = f'<img src="{uri}" alt="">' if uri else '<div class="noimg">no image</div>'
        caption = html.escape(captions[j] if captions else catalog.titles[code])
        cls = "card hit" if highlight and code in highlight else "card"
        cards.append(f'<div class="{cls}">{pic}<div>{caption}</div></div>')
    return '<div class="row">' + "".join(cards) + "</div>"


def table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """An HTML table; floats are shown with four decimals."""
    def cell(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def check_page_path(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as a place for an HTML report: missing, or an earlier HTML page (a rerun replaces its report);
    anything else (a folder, the README, a CSV) is refused, so a mistyped ``--out`` destroys nothing. Demos call
    it before their work, `write_page` again before writing."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; give the HTML file to write, e.g. {path / 'report.html'}")
    if path.exists():
        with open(path, "rb") as f:
            head = f.read(64).lstrip().lower()
        if not (head.startswith(b"<!doctype html") or head.startswith(b"<html")):
            raise FileExistsError(f"{what} {path} exists and is not an HTML page; a report replaces only an "
                                  f"earlier report (give a new file name)")
    return path


def write_page(path: str | os.PathLike, title: str, sections: Sequence[str]) -> Path:
    """Write a complete HTML page atomically (over an earlier page only: `check_page_path`) and return its path."""
    path = check_page_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>")
    return atomic_write_text(path, page)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation over seeds (NaN, NaN for none), as the README tables give them."""
    if not len(values):
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values))


def process_memory_mib() -> dict[str, float]:
    """This process's resident memory now (``VmRSS``) and at its peak (``VmHWM``), in MiB, from
    ``/proc/self/status`` (Linux); empty where that file does not exist."""
    fields: dict[str, float] = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":")
                    fields[name] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return fields
