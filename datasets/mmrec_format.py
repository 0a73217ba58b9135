"""Reader and writer for MMRec's data folders (github.com/enoche/MMRec).

A folder holds ``<name>.inter``, a tab-separated table with the header ``userID itemID timestamp
x_label`` (extra columns such as ``rating`` may be present and are ignored; ``x_label`` is 0 train,
1 valid, 2 test), and optionally:

- ``i_id_mapping.csv`` / ``u_id_mapping.csv``: raw id (first column, e.g. ``article_id``) and the dense
  ``itemID`` / ``userID``; comma- or tab-separated. Without them the dense ids are the raw ids.
- ``*.npy`` feature matrices such as ``image_feat.npy`` and ``text_feat.npy``: float [n_items, d], row
  ``i`` is itemID ``i``.

`load` returns `MMRecData` whose `Interactions` codes equal MMRec's userID/itemID, so a model trained
here and one trained in MMRec see the same numbering. `save` writes the same layout as a whole folder,
built in a temporary sibling and renamed into place with a ``manifest.json`` (`mmrec.pretrained`; MMRec
ignores it), so that ``load`` gives back exactly what was saved, and refuses a damaged or half-replaced
folder. Folders from elsewhere (no manifest) load as they are.
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.data import Interactions
from mmrec.io import atomic_save_npy, atomic_write
from mmrec.pretrained import MANIFEST_FILE, relist_files, verify_folder, write_folder
from mmrec.splits import Split, from_labels

logger = logging.getLogger(__name__)

ITEM_MAPPING_FILE = "i_id_mapping.csv"
USER_MAPPING_FILE = "u_id_mapping.csv"
SPLIT_KIND = "mmrec-split"
INTER_COLUMNS = ("userID", "itemID", "timestamp", "x_label")
REQUIRED_COLUMNS = ("userID", "itemID")
MAX_ID_GAP = 1000  # without a mapping file, the largest id may exceed twice the distinct ids by this much
_EXPECTED = {"userID": "a non-negative integer", "itemID": "a non-negative integer",
             "timestamp": "an integer (Unix seconds)", "x_label": "0 (train), 1 (valid) or 2 (test)"}


class MMRecFormatError(ValueError):
    """A file of an MMRec folder that cannot be read as it is; the message names file, line or column."""

    def __init__(self, path: str | os.PathLike, problem: str, *, line: int | None = None) -> None:
        self.path, self.line = str(path), line
        super().__init__(f"{path}" + (f", line {line}" if line is not None else "") + f": {problem}")


@dataclass
class MMRecData:
    """One MMRec data set: all its interactions, the ``x_label`` column (None when the file has none),
    the item feature matrices keyed by file name (``"image_feat.npy"``), and the data set's name."""

    interactions: Interactions
    labels: np.ndarray | None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = ""


def load(folder: str | os.PathLike, name: str | None = None) -> MMRecData:
    """Read ``<folder>/<name>.inter`` with its id mappings and every ``*.npy`` feature file in the folder.

    ``name`` defaults to the folder's only ``.inter`` file. Item vocabulary: the raw ids of
    ``i_id_mapping.csv`` in itemID order when it exists, else ``"0" .. str(max itemID)``; users alike.
    Feature files must have one row per item.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MMRec data folder {folder} does not exist")
    if (folder / MANIFEST_FILE).is_file():  # written by `save`: complete and unchanged, or refused
        verify_folder(folder, SPLIT_KIND)
    inter_path = _inter_file(folder, name)
    name = inter_path.stem
    table = _read_inter(inter_path)
    item_ids = _vocabulary(folder / ITEM_MAPPING_FILE, "itemID", table["itemID"], inter_path)
    user_ids = _vocabulary(folder / USER_MAPPING_FILE, "userID", table["userID"], inter_path)
    interactions = Interactions(table["userID"], table["itemID"], user_ids, item_ids,
                                timestamps=table.get("timestamp"))
    features = {}
    for path in sorted(folder.glob("*.npy")):
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as err:  # empty, truncated, garbled or a pickle
            raise ValueError(f"{path}: not a readable .npy feature matrix ({err})") from None
        _check_features(path, array, len(item_ids))
        features[path.name] = array
    logger.info("MMRec %s: %d interactions, %d users, %d items, features %s", inter_path, len(interactions),
                len(user_ids), len(item_ids), {k: v.shape for k, v in features.items()})
    return MMRecData(interactions, table.get("x_label"), features, name)


def to_split(data: MMRecData) -> Split:
    """The train/valid/test split given by the data set's ``x_label`` column."""
    if data.labels is None:
        raise ValueError(f"MMRec data set {data.name!r} has no x_label column, so it carries no split; "
                         f"make one with mmrec.splits.mmrec_protocol")
    return from_labels(data.interactions, data.labels)


def save(folder: str | os.PathLike, name: str, split_or_interactions: Split | Interactions, *,
         labels: np.ndarray | None = None, features: dict[str, np.ndarray] | None = None,
         raw_item_column: str = "item_id", raw_user_column: str = "user_id") -> Path:
    """Write ``<name>.inter``, both id mappings and the feature files into ``folder``; returns the ``.inter`` path.

    A `Split` is written as its train, valid and test rows with x_label 0, 1, 2 (cold item sets are not
    part of the format; their rows are). For plain `Interactions`, ``labels`` gives x_label (or none is
    written). ``features`` maps file names (``"image_feat.npy"``) to [n_items, d] arrays. The mapping
    files list the whole vocabularies, so codes, ids and unused vocabulary entries survive a round trip.
    """
    if isinstance(split_or_interactions, Split):
        if labels is not None:
            raise ValueError("labels come from the Split; pass labels only with plain Interactions")
        interactions, labels = _flatten(split_or_interactions)
    else:
        interactions = split_or_interactions
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(interactions),) or not np.isin(labels, (0, 1, 2)).all():
                raise ValueError(f"labels must be {len(interactions)} values of 0, 1 or 2")
    if not len(interactions):
        raise ValueError("there are no interactions to write; an MMRec .inter file needs at least one row")
    if not name or os.sep in name or name.endswith(".inter"):
        raise ValueError(f"name must be a plain data set name such as 'hm5core', got {name!r}")
    features = dict(features or {})
    for filename, array in features.items():
        _check_feature_name(filename)
        _check_features(Path(filename), np.asarray(array), interactions.n_items)
    columns = {"userID": interactions.users, "itemID": interactions.items, "timestamp": interactions.timestamps}
    if labels is not None:
        columns["x_label"] = labels.astype(np.int64)
    table = pd.DataFrame(columns)

    def fill(tmp: Path) -> None:
        for filename, array in features.items():
            _write_npy(tmp / filename, np.asarray(array))
        _write_mapping(tmp / ITEM_MAPPING_FILE, raw_item_column, "itemID", interactions.item_ids)
        _write_mapping(tmp / USER_MAPPING_FILE, raw_user_column, "userID", interactions.user_ids)
        atomic_write(tmp / f"{name}.inter", lambda f: table.to_csv(f, sep="\t", index=False, lineterminator="\n"),
                     binary=False)

    folder = Path(folder)
    write_folder(folder, SPLIT_KIND, {"name": name, "rows": len(interactions), "labels": labels is not None}, fill)
    return folder / f"{name}.inter"


def read_item_mapping(folder: str | os.PathLike) -> np.ndarray:
    """Raw item ids (strings) of ``i_id_mapping.csv`` ordered by itemID: entry ``i`` is the raw id of row ``i``
    of the folder's feature matrices."""
    path = Path(folder) / ITEM_MAPPING_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; an MMRec folder maps raw item ids to itemID there "
                                f"(header: raw id column, itemID)")
    return _read_mapping(path, "itemID")


def save_features(folder: str | os.PathLike, filename: str, array: np.ndarray) -> Path:
    """Atomically write a float32 [n_items, d] feature matrix as ``<folder>/<filename>`` (e.g. ``image_feat.npy``).

    When the folder has ``i_id_mapping.csv`` the row count must match it.
    """
    _check_feature_name(filename)
    folder = Path(folder)
    path = folder / filename
    array = np.asarray(array)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{path}: features must be a 2-D float array, got {array.dtype} of shape {array.shape}")
    mapping = folder / ITEM_MAPPING_FILE
    if mapping.is_file():
        _check_features(path, array, len(_read_mapping(mapping, "itemID")))
    folder.mkdir(parents=True, exist_ok=True)
    _write_npy(path, array.astype(np.float32, copy=False))
    if (folder / MANIFEST_FILE).is_file():  # a folder `save` wrote: its manifest lists the new file too
        relist_files(folder, [filename])
    return path


# -------------------------------------------------------------------------------------------- reading

def _inter_file(folder: Path, name: str | None) -> Path:
    if name is not None:
        path = folder / f"{name.removesuffix('.inter')}.inter"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        return path
    found = sorted(folder.glob("*.inter"))
    if len(found) != 1:
        what = "no .inter file" if not found else f"several .inter files {[p.name for p in found]}"
        raise FileNotFoundError(f"{folder} has {what}; keep one data set per folder (from Python, "
                                f"mmrec_format.load(folder, name=...) chooses one)")
    return found[0]


def _read_inter(path: Path) -> dict[str, np.ndarray]:
    """The integer columns of a ``.inter`` file that are present (userID, itemID, timestamp, x_label)."""
    with open(path, encoding="utf-8-sig") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise MMRecFormatError(path, f"missing column(s) {missing}; found {header} (tab-separated header "
                                     f"expected: {' '.join(INTER_COLUMNS)})", line=1)
    present = [c for c in INTER_COLUMNS if c in header]
    df = pd.read_csv(path, sep="\t", usecols=present, dtype=str, keep_default_na=False, na_filter=False)
    if not len(df):
        raise MMRecFormatError(path, "has a header but no interactions")
    out = {}
    for column in present:
        values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) > 2.0 ** 53)  # exact in float64
        if column == "x_label":
            bad |= ~np.isin(values, (0, 1, 2))
        elif column != "timestamp":
            bad |= values < 0
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise MMRecFormatError(path, f"{column} is {df[column].iat[row]!r}, expected {_EXPECTED[column]} "
                                         f"({int(bad.sum())} bad value(s) in this column)", line=_line_of(path, row))
        out[column] = values.astype(np.int64)
    return out


def _vocabulary(mapping: Path, id_column: str, codes: np.ndarray, inter_path: Path) -> np.ndarray:
    """Raw ids ordered by dense id from the mapping file, or ``"0" .. str(max)`` without one."""
    if mapping.is_file():
        vocab = _read_mapping(mapping, id_column)
    else:
        distinct = len(np.unique(codes))
        if int(codes.max()) + 1 > 2 * distinct + MAX_ID_GAP:  # one typo would make a vocabulary of billions
            row = int(np.argmax(codes))
            raise MMRecFormatError(inter_path, f"{id_column} {codes[row]} is far beyond the {distinct} distinct ids: "
                                               f"without {mapping.name} ids are codes 0..n-1 (a mapping file maps "
                                               f"raw ids to them)", line=_line_of(inter_path, row))
        vocab = np.array([str(i) for i in range(int(codes.max()) + 1)], dtype=object)
    if codes.max() >= len(vocab):
        row = int(np.flatnonzero(codes >= len(vocab))[0])
        raise MMRecFormatError(inter_path, f"{id_column} {codes[row]} is outside {mapping.name}, which maps "
                                           f"{len(vocab)} ids (0..{len(vocab) - 1})", line=_line_of(inter_path, row))
    return vocab


def _read_mapping(path: Path, id_column: str) -> np.ndarray:
    """Raw ids (first column, strings as written) ordered by the dense ``id_column``, checked to be 0..n-1."""
    with open(path, encoding="utf-8-sig") as f:
        header_line = f.readline()
    sep = "\t" if "\t" in header_line else ","
    df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False)
    if id_column not in df.columns or len(df.columns) < 2:
        raise MMRecFormatError(path, f"expected two columns, the raw id and {id_column}; found {list(df.columns)}",
                               line=1)
    raw_column = next(c for c in df.columns if c != id_column)
    dense = pd.to_numeric(df[id_column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(dense) | (dense != np.round(dense))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise MMRecFormatError(path, f"{id_column} {df[id_column].iat[row]!r} is not an integer",
                               line=_line_of(path, row))
    dense = dense.astype(np.int64)
    if not np.array_equal(np.sort(dense), np.arange(len(dense))):
        repeats = len(dense) - len(np.unique(dense))
        raise MMRecFormatError(path, f"{id_column} must be a permutation of 0..{len(dense) - 1}; it spans "
                                     f"{dense.min()}..{dense.max()} with {repeats} repeat(s)")
    raw = df[raw_column].to_numpy(dtype=object)
    if (raw == "").any():
        raise MMRecFormatError(path, f"empty {raw_column}", line=_line_of(path, int(np.flatnonzero(raw == "")[0])))
    out = np.empty(len(dense), dtype=object)
    out[dense] = raw
    if len(set(out)) != len(out):
        raise MMRecFormatError(path, f"{raw_column} has repeated ids")
    return out


def _check_features(path: Path, array: np.ndarray, n_items: int) -> None:
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise MMRecFormatError(path, f"features must be a 2-D float array [n_items, d], got {array.dtype} "
                                     f"of shape {array.shape}")
    if array.shape[0] != n_items:
        raise MMRecFormatError(path, f"has {array.shape[0]} feature rows but the data set has {n_items} items "
                                     f"(row i must be itemID i)")
    if array.shape[1] == 0:
        raise MMRecFormatError(path, "features have width 0")
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        raise MMRecFormatError(path, f"feature row {int(np.flatnonzero(~finite)[0])} is not finite (NaN or "
                                     f"infinity; {int((~finite).sum())} such row(s))")


def _line_of(path: Path, record: int) -> int:
    """1-based file line of a 0-based data record (blank lines, which pandas skips, are counted)."""
    with open(path, encoding="utf-8-sig") as f:
        next(f, None)
        seen = -1
        for line_number, line in enumerate(f, start=2):
            if line.strip("\r\n"):
                seen += 1
                if seen == record:
                    return line_number
    return record + 2


# -------------------------------------------------------------------------------------------- writing

def _flatten(split: Split) -> tuple[Interactions, np.ndarray]:
    parts = (split.train, split.valid, split.test)
    for part in parts[1:]:
        same_users = np.array_equal(part.user_ids, split.train.user_ids)
        if not (same_users and np.array_equal(part.item_ids, split.train.item_ids)):
            raise ValueError("the split's train, valid and test tables must share one vocabulary")
    for cold in (split.cold_valid_items, split.cold_test_items):
        if cold is not None and len(cold):
            logger.info("MMRec's format has no cold item sets; writing their rows with x_label only")
    labels = np.concatenate([np.full(len(p), k, np.int64) for k, p in enumerate(parts)])
    return parts[0].concat(parts[1]).concat(parts[2]), labels


def _check_feature_name(filename: str) -> None:
    if Path(filename).name != filename or not filename.endswith(".npy"):
        raise ValueError(f"feature file name must be a plain '<name>.npy', got {filename!r}")


def _write_mapping(path: Path, raw_column: str, id_column: str, ids: np.ndarray) -> None:
    def write(f) -> None:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([raw_column, id_column])
        writer.writerows(zip(ids, range(len(ids))))
    atomic_write(path, write, binary=False)


def _write_npy(path: Path, array: np.ndarray) -> None:
    atomic_save_npy(path, array)
