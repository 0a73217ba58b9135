"""A plain catalog file for any shop: CSV with ``id``, ``title``, ``text`` and optional ``image`` columns.

Every other column is an attribute (kept as text). ``image`` paths are relative to the file's folder (or
absolute); an empty one means no photo. `read_catalog` picks the reader by what a path is: this layout, an
H&M ``articles.csv``-layout file, or an H&M folder.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from mmrec.data import Catalog

REQUIRED = ("id", "title", "text")


def read_catalog_csv(path: str | os.PathLike) -> Catalog:
    """A `Catalog` from a plain catalog CSV; a missing column, a line with fewer or more fields than the
    header, an empty or repeated id is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:  # a spreadsheet's byte-order mark is dropped
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; a catalog CSV has {list(REQUIRED)} "
                                 f"and optionally 'image' and attribute columns")
            rows, lines = [], []
            start = reader.line_num + 1
            for row in reader:
                fields = len(columns) - sum(v is None for v in row.values()) + len(row.get(None) or ())
                if fields != len(columns):  # DictReader fills a short line with None, keeps a long one's rest
                    raise ValueError(f"{path} line {start}: {fields} fields where the header has {len(columns)}")
                rows.append(row)
                lines.append(start)
                start = reader.line_num + 1
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise ValueError(f"{path}: not a readable CSV ({err})") from None
    if not rows:
        raise ValueError(f"{path}: has a header but no items")
    seen: set[str] = set()
    for line, row in zip(lines, rows):
        item_id = (row["id"] or "").strip()
        if not item_id or item_id in seen:
            raise ValueError(f"{path} line {line}: {'empty' if not item_id else 'repeated'} id {item_id!r}")
        seen.add(item_id)
    images = [_image(path, row.get("image")) for row in rows]
    attributes = {c: np.asarray([row[c] or "" for row in rows], dtype=object)
                  for c in columns if c not in REQUIRED and c != "image"}
    return Catalog(np.asarray([row["id"].strip() for row in rows], dtype=object), [row["title"] or "" for row in rows],
                   [row["text"] or "" for row in rows], images, attributes)


def _image(path: Path, value: str | None) -> str | None:
    if not value:
        return None
    image = Path(value)
    return str(image if image.is_absolute() else path.parent / image)


def read_catalog(path: str | os.PathLike, images: str | os.PathLike | None = None) -> Catalog:
    """A `Catalog` from any catalog layout the readers take: a plain catalog CSV (``id,title,text[,image]``),
    a file in the layout of H&M's ``articles.csv`` (photos from ``images``), or an H&M folder."""
    from mmrec.datasets import hm

    path = Path(path)
    if path.is_dir():
        if not (path / hm.ARTICLES_FILE).is_file():
            raise ValueError(f"{path}: a catalog folder must hold {hm.ARTICLES_FILE} (H&M layout)")
        catalog, _ = hm.load(path, transactions=False, images=True)
        return catalog
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader([f.readline()]), [])
    if "article_id" in header:
        return hm.read_articles(path, images)
    return read_catalog_csv(path)
