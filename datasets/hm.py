"""Reader for the H&M Personalized Fashion Recommendations layout (Kaggle competition files).

``root`` holds ``articles.csv``, ``transactions_train.csv``, ``customers.csv`` and
``images/<id[:3]>/<id>.jpg``. `load` turns it into a `Catalog` (one row per article) and
`Interactions` (one row per transaction line) whose item vocabulary is the catalog's ids.

The transactions file of the full competition has 31.8M lines (3.4 GB). It is cut into blocks of
whole lines here and each block parsed by ``pyarrow.csv.read_csv`` with every column dictionary-encoded,
so per block only the unique dates, customers and articles are handled one by one; customer ids are
mapped into a growing vocabulary per block, codes kept as int32 per block and written once into the
final int64 columns. Measured on a synthetic full-size download (``benchmarks/load_transactions.py``):
about 1.9 GB peak RSS against a 3 GB budget.

Damage confined to one line (a transaction whose article is not in ``articles.csv``, an empty
customer id, a line with the wrong number of fields) is skipped, counted in a `LoadReport` and logged.
Damage that makes the whole file suspect (missing columns, an unparsable date, article ids that were
read as numbers and lost their leading zero, no rows at all) raises `HMDataError` naming the file,
the line (1-based, as an editor shows it) or the column.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from mmrec.data import Catalog, Interactions
from mmrec.skips import Skips

logger = logging.getLogger(__name__)

ARTICLES_FILE = "articles.csv"
TRANSACTIONS_FILE = "transactions_train.csv"
CUSTOMERS_FILE = "customers.csv"
IMAGES_DIR = "images"

NAME_COLUMNS = (
    "product_type_name", "product_group_name", "graphical_appearance_name", "colour_group_name",
    "perceived_colour_value_name", "perceived_colour_master_name", "department_name", "index_name",
    "index_group_name", "section_name", "garment_group_name",
)
ATTRIBUTE_COLUMNS = ("product_code", *NAME_COLUMNS)
ARTICLE_COLUMNS = ("article_id", "prod_name", "detail_desc", *ATTRIBUTE_COLUMNS)
TRANSACTION_COLUMNS = ("t_dat", "customer_id", "article_id")

SKIP_REASONS = {
    "malformed_line": "wrong number of fields",
    "not_utf8": "not UTF-8 text",
    "blank_line": "blank line",
    "missing_customer_id": "empty customer_id",
    "unknown_article_id": "article_id not in articles.csv",
}
_DAY = 86_400
_MAX_EXAMPLES = 5
DICTIONARY_STRING = pa.dictionary(pa.int32(), pa.string())  # how transaction columns are parsed
_NO_DAY = np.iinfo(np.int32).min  # day code of an unparsable date
# A number-mangled H&M id: digits without the leading zero, or a float rendering of it.
_MANGLED_ID = re.compile(r"\d{1,9}|\d+\.0*|\d(\.\d+)?[eE]\+?\d+")


class HMDataError(ValueError):
    """A file of the H&M layout that cannot be read as it is; the message names file, line or column."""

    def __init__(self, path: str | os.PathLike, problem: str, *, line: int | None = None,
                 column: str | None = None) -> None:
        self.path, self.line, self.column = str(path), line, column
        where = f"{self.path}" + (f", line {line}" if line is not None else "")
        super().__init__(f"{where}: {problem}")


@dataclass
class LoadReport:
    """What `load` read and what it left out.

    ``skipped`` counts transaction lines dropped per reason (keys of `SKIP_REASONS`) and
    ``skipped_examples`` keeps the first few as ``"line N: value"``. ``items_without_image`` is None when
    images were not read; ``customers_without_side_data`` is None when transactions were not read or
    ``customers.csv`` is absent. ``customers`` is the size of the user vocabulary.
    """

    articles: int = 0
    items_without_image: int | None = None
    empty_texts: int = 0
    transaction_lines_read: int = 0
    transaction_rows_kept: int = 0
    skipped: Skips = field(default_factory=lambda: Skips(max_examples=_MAX_EXAMPLES))
    customers: int = 0
    customers_without_side_data: int | None = None

    @property
    def skipped_examples(self) -> dict[str, list[str]]:
        """The first few skipped lines per reason."""
        return self.skipped.examples



@overload
def load(root: str | os.PathLike, *, transactions: bool = ..., images: bool = ..., chunk_rows: int = ...,
         report: Literal[False] = ...) -> tuple[Catalog, Interactions]: ...


@overload
def load(root: str | os.PathLike, *, transactions: bool = ..., images: bool = ..., chunk_rows: int = ...,
         report: Literal[True]) -> tuple[Catalog, Interactions, LoadReport]: ...


def load(root: str | os.PathLike, *, transactions: bool = True, images: bool = True,
         chunk_rows: int = 2_000_000, report: bool = False):
    """Read an H&M folder into ``(catalog, interactions)``, or ``(catalog, interactions, report)`` with ``report=True``.

    Catalog: ids are ``article_id`` strings as written (leading zeros kept), titles ``prod_name``, texts
    ``detail_desc``, image paths absolute where ``images/<id[:3]>/<id>.jpg`` exists, attributes
    ``product_code`` and the ``*_name`` columns. Interactions: one row per transaction line (repeats are
    several units; use ``unique_pairs()``), item codes are catalog rows, user vocabulary the sorted
    customer ids, timestamps ``t_dat`` as Unix seconds at UTC midnight, kind purchase, weight 1.
    ``transactions=False`` returns an empty table; ``images=False`` leaves every image path None.
    ``chunk_rows`` is roughly how many transaction lines are parsed at a time (memory vs. speed).
    The same counts are always logged; ``report=True`` also returns them as a `LoadReport`.
    """
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise FileNotFoundError(f"H&M data folder {root} does not exist; expected a folder with "
                                f"{ARTICLES_FILE}, {TRANSACTIONS_FILE} and {IMAGES_DIR}/<id[:3]>/<id>.jpg")
    rep = LoadReport()
    catalog = _read_catalog(root, images, rep)
    if transactions:
        columns = _read_transactions(_required_file(root, TRANSACTIONS_FILE), catalog, chunk_rows, rep)
        rep.customers_without_side_data = _count_without_side_data(root / CUSTOMERS_FILE, columns.user_vocab)
        pa.default_memory_pool().release_unused()  # hand parse buffers back before the big columns exist
        interactions = columns.assemble(catalog.ids)
    else:
        no_rows = np.zeros(0, np.int64)
        interactions = Interactions(no_rows, no_rows, np.zeros(0, dtype=object), catalog.ids)
    rep.customers = interactions.n_users
    _log_report(root, rep)
    return (catalog, interactions, rep) if report else (catalog, interactions)


def load_customers(root: str | os.PathLike) -> pd.DataFrame:
    """``customers.csv`` as a DataFrame indexed by ``customer_id`` (ids and postal codes stay strings).

    Most buyers have no row here; look customers up with ``df.reindex(interactions.user_ids)``.
    """
    path = _required_file(Path(os.path.abspath(root)), CUSTOMERS_FILE)
    _require_columns(path, ("customer_id",))
    df = _read_table(path, dtype={"customer_id": str, "postal_code": str, "club_member_status": str,
                                  "fashion_news_frequency": str}, keep_default_na=False, na_values=[""])
    empty = df["customer_id"].isna().to_numpy()
    if empty.any():
        raise HMDataError(path, "empty customer_id", line=_csv_lines(path, [int(np.flatnonzero(empty)[0])])[0])
    dupes = df["customer_id"].duplicated().to_numpy()
    if dupes.any():
        row = int(np.flatnonzero(dupes)[0])
        raise HMDataError(path, f"customer_id {df['customer_id'].iat[row]!r} appears twice",
                          line=_csv_lines(path, [row])[0])
    return df.set_index("customer_id")


def article_texts(catalog: Catalog) -> list[str]:
    """Per item H&M's reference text for text towers: "prod_name. product_type_name. colour_group_name.
    graphical_appearance_name. section_name. detail_desc" (`mmrec.content.item_texts` on its default fields,
    which are these)."""
    from mmrec.content import DEFAULT_FIELDS, item_texts

    return item_texts(catalog, DEFAULT_FIELDS)


# ----------------------------------------------------------------------------------------- articles

def read_articles(path: str | os.PathLike, images_dir: str | os.PathLike | None = None) -> Catalog:
    """A `Catalog` from a file in the layout of H&M's ``articles.csv`` (e.g. new articles to add to a
    trained model), with photos from ``images_dir`` (``<id[:3]>/<id>.jpg``; none when None).

    A missing column, an empty or mangled article id, or an id listed twice is an `HMDataError` naming
    the file, line and id; an article without a photo is fine (it keeps its text).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected a CSV in the layout of H&M's {ARTICLES_FILE})")
    return _read_articles(path, Path(images_dir) if images_dir is not None else None, LoadReport())


def _read_catalog(root: Path, images: bool, rep: LoadReport) -> Catalog:
    return _read_articles(_required_file(root, ARTICLES_FILE), root / IMAGES_DIR if images else None, rep)


def _read_articles(path: Path, images_dir: Path | None, rep: LoadReport) -> Catalog:
    _require_columns(path, ARTICLE_COLUMNS)
    df = _read_table(path, dtype=str, usecols=list(ARTICLE_COLUMNS), keep_default_na=False, na_filter=False)
    if not len(df):
        raise HMDataError(path, "has a header but no articles")
    _check_records(path)
    ids = df["article_id"].to_numpy(dtype=object)
    _check_article_ids(path, ids)
    image_paths: list[str | None] = [None] * len(ids)
    if images_dir is not None:
        found = _scan_images(images_dir)
        image_paths = [found.get(i) for i in ids]
        rep.items_without_image = sum(p is None for p in image_paths)
    texts = df["detail_desc"].tolist()
    rep.articles = len(ids)
    rep.empty_texts = sum(not t.strip() for t in texts)
    return Catalog(ids=ids, titles=df["prod_name"].tolist(), texts=texts, image_paths=image_paths,
                   attributes={name: df[name].to_numpy(dtype=object) for name in ATTRIBUTE_COLUMNS})


def _read_table(path: Path, **options: Any) -> pd.DataFrame:
    """``pd.read_csv(path, **options)``, its parse and encoding errors naming the file."""
    try:
        return pd.read_csv(path, **options)
    except UnicodeDecodeError as err:
        with open(path, "rb") as f:  # pandas' byte offset is within its own buffer: find the line
            line = next((n for n, raw in enumerate(f, 1) if not _is_utf8(raw)), None)
        raise HMDataError(path, f"not UTF-8 text ({err.reason})", line=line) from None
    except pd.errors.ParserError as err:
        raise HMDataError(path, f"not a readable CSV ({str(err).strip()})") from None


_SWALLOWED_ROW = re.compile(r"\n\d{10},")  # a text field holding a newline, then what starts an article's line


def _check_records(path: Path) -> None:
    """Refuse a damaged line that pandas reads without a word: a line cut short (its missing fields read as
    empty) and a quote left open (the lines after it read as one text field, their articles lost). A quoted
    text that spans lines is fine, unless it holds what starts an article's line."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        width = len(next(reader, []))
        start = reader.line_num + 1
        for row in reader:
            if row and len(row) < width:
                raise HMDataError(path, f"{len(row)} fields where the header has {width}: the line is cut short",
                                  line=start)
            if reader.line_num > start and any(_SWALLOWED_ROW.search(value) for value in row):
                raise HMDataError(path, "a quote (\") opened on this line is not closed before the next article's "
                                        "line, so the lines after it would be read as one text", line=start)
            start = reader.line_num + 1


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_article_ids(path: Path, ids: np.ndarray) -> None:
    series = pd.Series(ids, dtype=object)
    empty = (series == "").to_numpy()
    if empty.any():
        raise HMDataError(path, "empty article_id", line=_csv_lines(path, [int(np.flatnonzero(empty)[0])])[0],
                          column="article_id")
    mangled = series.str.fullmatch(_MANGLED_ID.pattern).to_numpy(dtype=bool)
    if mangled.any():
        row = int(np.flatnonzero(mangled)[0])
        raise HMDataError(path, _mangled_message(ids[row], mangled.sum()), line=_csv_lines(path, [row])[0],
                          column="article_id")
    dupes = series.duplicated().to_numpy()
    if dupes.any():
        row = int(np.flatnonzero(dupes)[0])
        first = int(np.flatnonzero(ids == ids[row])[0])
        lines = _csv_lines(path, [first, row])
        raise HMDataError(path, f"article_id {ids[row]!r} appears twice (lines {lines[0]} and {lines[1]})",
                          line=lines[1], column="article_id")


def _mangled_message(value: str, count: int) -> str:
    return (f"article_id {value!r} looks like a number that lost its leading zero ({count} such id(s)); "
            f"H&M article ids are 10-digit strings such as '0108775044'. The file was probably read with the "
            f"column as a number and written back: re-export it reading article_id as a string "
            f"(pandas: dtype={{'article_id': str}}), or pad the ids with str.zfill(10)")


def _scan_images(images_dir: Path) -> dict[str, str]:
    """``{article_id: absolute path}`` for every ``images/*/*.jpg``, listing each folder once."""
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir} does not exist; the H&M layout keeps photos in "
                                f"{IMAGES_DIR}/<id[:3]>/<id>.jpg. Pass images=False to load without photos")
    found: dict[str, str] = {}
    with os.scandir(images_dir) as folders:
        for folder in folders:
            if not folder.is_dir():
                continue
            with os.scandir(folder.path) as files:
                for entry in files:
                    if entry.name.endswith(".jpg") and entry.is_file():
                        found[entry.name[:-4]] = entry.path
    return found


# ------------------------------------------------------------------------------------- transactions

@dataclass
class _Vocabulary:
    """Customer ids seen so far, in order of first appearance."""

    known: pa.Array = field(default_factory=lambda: pa.array([], pa.large_string()))

    def codes_of(self, values: pa.Array) -> np.ndarray:
        """First-appearance codes of unique ``values``, adding the ones not seen before."""
        values = values.cast(pa.large_string())
        found = pc.index_in(values, value_set=self.known)
        new = found.is_null().to_numpy(zero_copy_only=False)
        codes = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        n_new = int(new.sum())
        if n_new:
            codes[new] = np.arange(len(self.known), len(self.known) + n_new, dtype=np.int32)
            self.known = pa.concat_arrays([self.known, values.filter(pa.array(new))])
        return codes


def _read_transactions(path: Path, catalog: Catalog, chunk_rows: int, rep: LoadReport) -> _Columns:
    header = _require_columns(path, TRANSACTION_COLUMNS)
    catalog_ids = pa.array(catalog.ids.tolist(), pa.string())
    vocab = _Vocabulary()
    users, items, days = [], [], []
    for lines, batch in _line_blocks(path, header, _block_size(path, chunk_rows), rep):
        block = _Block(batch, catalog_ids)
        keep = _usable_rows(path, block, lines, rep)
        used = np.flatnonzero(np.bincount(block.cust_codes[keep], minlength=len(block.cust_values)))
        user_of_value = np.full(len(block.cust_values), -1, np.int32)
        user_of_value[used] = vocab.codes_of(block.cust_values.take(pa.array(used)))
        users.append(user_of_value[block.cust_codes[keep]])
        items.append(block.item_of_value[block.item_codes[keep]])
        days.append(block.day_of_value[block.date_codes[keep]])
    rep.transaction_rows_kept = sum(len(u) for u in users)
    if rep.transaction_lines_read == rep.skipped.get("blank_line", 0):
        raise HMDataError(path, "has a header but no transactions")
    if rep.transaction_rows_kept == 0:
        raise HMDataError(path, f"no usable transactions: every line was skipped ({_skip_text(rep)})")
    return _Columns(users, items, days, vocab.known)


@dataclass
class _LineMap:
    """File lines of one block's parsed records: the block starts at file line ``first`` and has ``count``
    lines; ``skipped`` are the (ascending) file lines pyarrow dropped as malformed."""

    first: int
    count: int
    skipped: list[int] = field(default_factory=list)

    def of(self, rows: np.ndarray | list[int]) -> list[int]:
        """1-based file lines of 0-based record indices within the block."""
        out = []
        for row in rows:
            line = self.first + int(row)
            for skipped in self.skipped:
                if skipped > line:
                    break
                line += 1
            out.append(line)
        return out


def _line_blocks(path: Path, header: list[str], block_bytes: int, rep: LoadReport):
    """Yield ``(_LineMap, RecordBatch)`` per block of whole lines of about ``block_bytes``; counts lines read.

    The file is cut at newlines here and each block parsed on its own, so memory holds one block
    (pyarrow's streaming reader reads ahead without bound when parsing is slower than the disk).
    Transaction fields hold no newlines, so a line is a record; blank lines are parsed as records (then
    skipped as blank) and lines with the wrong number of fields are dropped by pyarrow and reported with
    their line number, as are lines that are not UTF-8 (a block is searched for them only when pyarrow
    refuses it).
    """
    convert = pa_csv.ConvertOptions(include_columns=list(TRANSACTION_COLUMNS),
                                    column_types={c: DICTIONARY_STRING for c in TRANSACTION_COLUMNS})
    first_line = 2
    with open(path, "rb") as f:
        f.readline()
        while True:
            start = f.tell()
            data = f.read(block_bytes)
            if not data:
                return
            at_end = len(data) < block_bytes
            cut = len(data) if at_end else data.rfind(b"\n") + 1
            if cut == 0:  # a single line longer than the block: try again with a bigger block
                block_bytes *= 2
                f.seek(start)
                continue
            f.seek(start + cut)
            lines = _LineMap(first_line, data.count(b"\n", 0, cut) + (data[cut - 1:cut] != b"\n"))

            dropped: list[tuple[int, str]] = []  # (line, text) pyarrow dropped; counted once a parse succeeds

            def on_invalid_line(row, lines: _LineMap = lines, dropped: list = dropped) -> str:
                dropped.append((lines.first + row.number - 1, row.text))
                return "skip"

            def parse(buffer) -> pa.Table:
                return pa_csv.read_csv(
                    pa.BufferReader(buffer),
                    read_options=pa_csv.ReadOptions(column_names=header, use_threads=False, block_size=cut + 1),
                    parse_options=pa_csv.ParseOptions(invalid_row_handler=on_invalid_line, ignore_empty_lines=False),
                    convert_options=convert)

            try:
                table = parse(memoryview(data)[:cut])
            except pa.ArrowInvalid as err:  # rare: only then is the block searched for lines that are not UTF-8
                if "UTF8" not in str(err):
                    raise HMDataError(path, f"lines {lines.first}..{lines.first + lines.count - 1}: {err}") from None
                dropped.clear()
                table = parse(_mark_non_utf8_lines(data[:cut]))
            for line, text in dropped:
                lines.skipped.append(line)
                if text == _NOT_UTF8_LINE:
                    rep.skipped.add_many("not_utf8", 1, [f"line {line}"])
                else:
                    rep.skipped.add_many("malformed_line", 1, [f"line {line}: {text[:80]!r}"])
            del data
            rep.transaction_lines_read += lines.count
            first_line += lines.count
            if table.num_rows:
                yield lines, table.combine_chunks().to_batches()[0]


# What a line that is not UTF-8 becomes before parsing: one field where the layout has several, so pyarrow
# drops it as invalid and the handler counts it under "not_utf8" with its line number.
_NOT_UTF8_LINE = "<mmrec: this line is not UTF-8>"


def _mark_non_utf8_lines(block: bytes) -> bytes:
    """``block`` with every line that does not decode as UTF-8 replaced by `_NOT_UTF8_LINE` (line count kept)."""
    marker = _NOT_UTF8_LINE.encode()
    return b"\n".join(line if _is_utf8(line) else marker for line in block.split(b"\n"))


class _Block:
    """One parsed block: per column the row codes (-1 for null) into its dictionary of unique values,
    and per unique value its parsed day, catalog row (-1 unknown) and emptiness. Arrays indexed by value
    have one extra trailing entry that the null code -1 picks."""

    def __init__(self, batch: pa.RecordBatch, catalog_ids: pa.Array) -> None:
        self.date_codes, self.date_values = _dictionary_parts(batch.column(0))
        self.cust_codes, self.cust_values = _dictionary_parts(batch.column(1))
        self.item_codes, self.item_values = _dictionary_parts(batch.column(2))
        self.catalog_ids = catalog_ids
        self.day_of_value = _parse_days(self.date_values)
        found = pc.index_in(self.item_values, value_set=catalog_ids).fill_null(-1)
        self.item_of_value = np.append(found.to_numpy(zero_copy_only=False).astype(np.int32), np.int32(-1))
        self.date_empty = _is_empty(self.date_codes, self.date_values)
        self.cust_empty = _is_empty(self.cust_codes, self.cust_values)
        self.item_empty = _is_empty(self.item_codes, self.item_values)

    def value(self, which: str, row: int) -> str:
        """The raw text of column ``which`` ("date", "cust", "item") at ``row``."""
        code = int(getattr(self, f"{which}_codes")[row])
        return "" if code < 0 else getattr(self, f"{which}_values")[code].as_py()


def _usable_rows(path: Path, block: _Block, lines: _LineMap, rep: LoadReport) -> np.ndarray:
    """Mask of the block's usable rows; counts skips in ``rep``; raises on bad dates and mangled ids."""
    blank = block.date_empty & block.cust_empty & block.item_empty
    rep.skipped.add_many("blank_line", int(blank.sum()),
                         [f"line {n}" for n in lines.of(np.flatnonzero(blank)[:_MAX_EXAMPLES])])

    bad_date = (block.day_of_value[block.date_codes] == _NO_DAY) & ~blank
    if bad_date.any():
        row = int(np.flatnonzero(bad_date)[0])
        raise HMDataError(path, f"t_dat {block.value('date', row)!r} is not a date like 2020-09-22 (YYYY-MM-DD)",
                          line=lines.of([row])[0], column="t_dat")

    missing_cust = block.cust_empty & ~blank
    rep.skipped.add_many("missing_customer_id", int(missing_cust.sum()),
                         [f"line {n}" for n in lines.of(np.flatnonzero(missing_cust)[:_MAX_EXAMPLES])])

    unknown = (block.item_of_value[block.item_codes] < 0) & ~blank & ~missing_cust
    if unknown.any():
        _refuse_mangled_ids(path, block, unknown, lines)
    rows = np.flatnonzero(unknown)[:_MAX_EXAMPLES]
    rep.skipped.add_many("unknown_article_id", int(unknown.sum()),
                         [f"line {n}: {block.value('item', r)!r}" for n, r in zip(lines.of(rows), rows)])
    return ~(blank | missing_cust | unknown)


def _refuse_mangled_ids(path: Path, block: _Block, unknown: np.ndarray, lines: _LineMap) -> None:
    """Raise if unknown article ids are catalog ids that lost their leading zero (read as numbers)."""
    values = block.item_values.take(pa.array(np.unique(block.item_codes[unknown & ~block.item_empty]))).to_pylist()
    numeric = [v for v in values if _MANGLED_ID.fullmatch(v)]
    if not numeric:
        return
    padded = pa.array([v.split(".")[0].zfill(10) if "e" not in v.lower() else f"{float(v):.0f}".zfill(10)
                       for v in numeric])
    hits = pc.is_in(padded, value_set=block.catalog_ids).to_numpy(zero_copy_only=False)
    if hits.any():
        value = numeric[int(np.flatnonzero(hits)[0])]
        code = int(pc.index(block.item_values, value).as_py())
        row = int(np.flatnonzero(block.item_codes == code)[0])
        raise HMDataError(path, _mangled_message(value, int(hits.sum())), line=lines.of([row])[0], column="article_id")


def _dictionary_parts(column: pa.DictionaryArray) -> tuple[np.ndarray, pa.Array]:
    """Row codes (-1 for null) and the dictionary of a dictionary-encoded column."""
    return column.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32), column.dictionary


def _is_empty(codes: np.ndarray, values: pa.Array) -> np.ndarray:
    empty_value = np.append(pc.equal(values, "").fill_null(True).to_numpy(zero_copy_only=False), True)
    return empty_value[codes]  # code -1 (null) picks the appended True


def _parse_days(values: pa.Array) -> np.ndarray:
    """Days since 1970-01-01 of ``YYYY-MM-DD`` strings; int32 minimum where a value does not parse.

    One extra trailing entry (also the minimum) serves the null code -1.
    """
    parsed = pc.strptime(values, format="%Y-%m-%d", unit="s", error_is_null=True)
    seconds = pc.fill_null(parsed.cast(pa.int64()), np.iinfo(np.int64).min).to_numpy(zero_copy_only=False)
    days = np.full(len(values) + 1, _NO_DAY, np.int32)
    ok = seconds != np.iinfo(np.int64).min
    days[:-1][ok] = seconds[ok] // _DAY
    return days


@dataclass
class _Columns:
    """Per-block int32 codes (users in first-appearance order, catalog rows, days) and the user vocabulary."""

    users: list[np.ndarray]
    items: list[np.ndarray]
    days: list[np.ndarray]
    user_vocab: pa.Array

    def assemble(self, item_ids: np.ndarray) -> Interactions:
        """Concatenate the blocks once into int64 columns, users recoded to the sorted vocabulary.

        Each block is freed as soon as it is copied, so the peak is the output plus one block.
        """
        order = pc.sort_indices(self.user_vocab).to_numpy(zero_copy_only=False)
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        user_ids = self.user_vocab.take(pa.array(order)).to_numpy(zero_copy_only=False)
        self.user_vocab = None
        n = sum(len(u) for u in self.users)
        users, items, timestamps = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        start = 0
        for i in range(len(self.users)):
            stop = start + len(self.users[i])
            users[start:stop] = rank[self.users[i]]
            items[start:stop] = self.items[i]
            np.multiply(self.days[i], _DAY, out=timestamps[start:stop], dtype=np.int64)
            self.users[i] = self.items[i] = self.days[i] = None
            start = stop
        return Interactions(users, items, user_ids, item_ids, timestamps=timestamps)


def _count_without_side_data(path: Path, user_vocab: pa.Array) -> int | None:
    if not path.is_file():
        logger.info("%s is absent; customer side data not checked", path)
        return None
    _require_columns(path, ("customer_id",))
    table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(
        include_columns=["customer_id"], column_types={"customer_id": pa.large_string()}))
    has_row = pc.is_in(user_vocab, value_set=table.column("customer_id").combine_chunks())
    return int(len(user_vocab) - pc.sum(has_row).as_py()) if len(user_vocab) else 0


# ------------------------------------------------------------------------------------------ helpers

def _required_file(root: Path, name: str) -> Path:
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; the H&M layout expects {ARTICLES_FILE}, "
                                f"{TRANSACTIONS_FILE} (and optionally {CUSTOMERS_FILE}, "
                                f"{IMAGES_DIR}/<id[:3]>/<id>.jpg) directly in {root}")
    return path


def _require_columns(path: Path, needed: tuple[str, ...]) -> list[str]:
    """The header's column names; raises naming the file and the missing columns."""
    with open(path, "rb") as f:  # the header line only: a later line that is not UTF-8 is the reader's to name
        first = f.readline()
    try:
        header = next(csv.reader([first.decode("utf-8-sig")]), [])
    except UnicodeDecodeError as err:
        raise HMDataError(path, f"the header is not UTF-8 text ({err.reason} at byte {err.start})", line=1) from None
    missing = [c for c in needed if c not in header]
    if missing:
        raise HMDataError(path, f"missing column(s) {missing}; found {header}", line=1, column=missing[0])
    return header


def _block_size(path: Path, chunk_rows: int) -> int:
    """Bytes per parsed block so that a block holds about ``chunk_rows`` lines."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    with open(path, "rb") as f:
        sample = f.read(1 << 20)
    bytes_per_line = len(sample) / max(1, sample.count(b"\n"))
    return int(min(max(chunk_rows * bytes_per_line, 1), 1 << 30))


def _csv_lines(path: Path, records: list[int]) -> list[int]:
    """1-based file lines where the given 0-based records of a CSV start (quoted newlines allowed).

    Only used on the way to an error message, so a plain rescan of the file is fine.
    """
    wanted = {r: None for r in records}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader, None)
        record, start = 0, reader.line_num + 1
        for row in reader:
            if row:
                if record in wanted:
                    wanted[record] = start
                record += 1
                if record > max(records):
                    break
            start = reader.line_num + 1
    return [wanted[r] for r in records]


def _skip_text(rep: LoadReport) -> str:
    return ", ".join(f"{n} {SKIP_REASONS[k]}" for k, n in rep.skipped.items()) or "none skipped"


def _log_report(root: Path, rep: LoadReport) -> None:
    logger.info("H&M %s: %d articles (%s without image, %d empty texts), %d transaction rows, %d customers "
                "(%s without side data)", root, rep.articles, rep.items_without_image, rep.empty_texts,
                rep.transaction_rows_kept, rep.customers, rep.customers_without_side_data)
    for reason, count in rep.skipped.items():
        log = logger.info if reason == "blank_line" else logger.warning
        log("%s: skipped %d transaction line(s) with %s, e.g. %s", root / TRANSACTIONS_FILE, count,
            SKIP_REASONS[reason], "; ".join(rep.skipped_examples.get(reason, [])))
