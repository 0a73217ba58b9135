"""Behaviour events as files and as interactions: the end of the screen-stream path, the input of the sequence model.

``mmrec stream`` (`mmrec.stream.write_events`) writes one parquet row per event with the columns of
`EVENT_FIELDS`: who (``user``), what (``kind``: ``view`` from the screen, ``click``/``cart``/``purchase`` from
the app's logs), when (``timestamp``, seconds on the recording's clock; a view also has ``end`` and
``dwell``), which item (``item_id``, and its catalog code ``item``) and how sure the grounding was.
`read_events` reads such a file back, checking it; `events_to_interactions` turns events into
`mmrec.data.Interactions` for a model, with each event's dwell in ``weights`` (`dwell_weights`: the one
dwell → weight convention; `dwell_from_weights` is how `mmrec.fusion.sequence` reads it back).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmrec.data import KINDS, Catalog, Interactions

EVENT_KINDS = ("view", "click", "cart", "purchase")
# (column, parquet type): the events table `write_events` writes and `read_events` checks
EVENT_FIELDS = (("user", "string"), ("kind", "string"), ("timestamp", "double"), ("end", "double"),
                ("dwell", "double"), ("item", "int64"), ("item_id", "string"), ("score", "double"),
                ("frames", "int64"), ("on_screen", "bool"), ("seen_ago", "double"))


def event_schema() -> Any:
    """The pyarrow schema of an events file (`EVENT_FIELDS`)."""
    import pyarrow as pa

    types = {"string": pa.string(), "double": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}
    return pa.schema([(name, types[kind]) for name, kind in EVENT_FIELDS])


def dwell_weights(dwell: Any) -> np.ndarray:
    """The `Interactions.weights` of events with ``dwell`` seconds — the convention the sequence model reads
    (`mmrec.fusion.sequence`, ``use_dwell``): a view's weight is its dwell in seconds; an event without one
    (NaN: a click, cart or purchase log row) keeps NaN, read as 0. A negative or infinite dwell is an error."""
    values = np.asarray(dwell, np.float64)
    bad = np.isinf(values) | (values < 0)
    if bad.any():
        raise ValueError(f"dwell must be seconds >= 0 (NaN for events without one); {int(bad.sum())} value(s) "
                         f"are negative or infinite, e.g. {values[bad][0]!r}")
    return values.astype(np.float32)


def dwell_from_weights(weights: Any) -> np.ndarray:
    """Dwell seconds from `Interactions.weights` as `dwell_weights` wrote them: NaN (no dwell) reads as 0."""
    values = np.asarray(weights, np.float32).copy()
    if np.isinf(values).any():
        raise ValueError("Interactions.weights (dwell seconds) must not be infinite")
    values[np.isnan(values)] = 0.0
    return values


def read_events(path: str | os.PathLike) -> Any:
    """An events parquet file (`mmrec.stream.write_events`) as a pandas DataFrame, checked: every column of
    `EVENT_FIELDS` with its type, known kinds, items named. Errors name the file and the problem."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"events file {path} does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path}: not a readable parquet file ({err})") from None
    expected = event_schema()
    missing = [f.name for f in expected if f.name not in table.schema.names]
    if missing:
        raise ValueError(f"{path}: not an events file: column(s) {missing} missing (have {table.schema.names})")
    for field in expected:
        got = table.schema.field(field.name).type
        if not _compatible(got, field.type):
            raise ValueError(f"{path}: column {field.name!r} is {got}, expected {field.type}")
    frame = table.select([f.name for f in expected]).to_pandas()
    unknown = sorted(set(frame["kind"].dropna()) - set(EVENT_KINDS)) + (["<null>"] if frame["kind"].isna().any() else [])
    if unknown:
        raise ValueError(f"{path}: unknown event kind(s) {unknown[:3]} (expected {list(EVENT_KINDS)})")
    if frame["user"].isna().any():
        raise ValueError(f"{path}: {int(frame['user'].isna().sum())} event(s) have no user")
    if not np.isfinite(frame["timestamp"].to_numpy(np.float64)).all():
        raise ValueError(f"{path}: some events have no finite timestamp")
    return frame


def _compatible(got: Any, want: Any) -> bool:
    """Whether a parquet column of type ``got`` reads as ``want`` (all-null columns and wider numbers do)."""
    import pyarrow as pa

    t = pa.types
    return (got == want or t.is_null(got) or (t.is_integer(got) and t.is_integer(want))
            or (t.is_floating(got) and t.is_floating(want))
            or (t.is_string(want) and (t.is_string(got) or t.is_large_string(got))))


def events_to_interactions(events: Any, catalog: Catalog | Sequence[str], *, user: str | None = None,
                           user_ids: Sequence[str] | None = None, start: int = 0,
                           kinds: Sequence[str] = EVENT_KINDS) -> Interactions:
    """Events (a `read_events` DataFrame, or a path to one) → `Interactions` over ``catalog``'s items.

    Items are matched by ``item_id`` (the catalog's ids; an event without one falls back to its ``item`` code);
    an id the catalog lacks is an error. ``user`` names the user of every event (default: the events' ``user``
    column). ``user_ids``: the user vocabulary to code users in (e.g. a model's or a data set's, so the rows
    can join its interactions); users not in it are appended, in sorted order. Only events of ``kinds`` are
    kept. Timestamps become ``start`` plus whole seconds of the recording's clock (Interactions count Unix
    seconds; ``start``: the recording's start), rows in time order per user (ties keep the file's order), so
    `Interactions.concat` with earlier history and a later ``start`` puts them after it. Weights are the
    dwell (`dwell_weights`), kinds index `mmrec.data.KINDS`.
    """
    frame = read_events(events) if isinstance(events, (str, os.PathLike)) else events
    unknown_kinds = sorted(set(kinds) - set(EVENT_KINDS))
    if unknown_kinds:
        raise ValueError(f"events_to_interactions: unknown kind(s) {unknown_kinds} (expected {list(EVENT_KINDS)})")
    frame = frame[frame["kind"].isin(list(kinds))]
    item_ids = np.asarray(catalog.ids if isinstance(catalog, Catalog) else catalog, dtype=object)
    index = {str(i): k for k, i in enumerate(item_ids)}
    named = frame["item_id"].notna().to_numpy()
    idents = frame["item_id"].to_numpy(object)
    missing = sorted({str(i) for i in idents[named] if str(i) not in index})
    if missing:
        raise ValueError(f"events name {len(missing)} item id(s) not in the catalog, e.g. {missing[:3]}")
    items = np.zeros(len(frame), np.int64)
    items[named] = [index[str(i)] for i in idents[named]]
    codes = frame["item"].to_numpy()
    if (~named).any():
        fallback = np.asarray(codes[~named], np.float64)
        if not (np.isfinite(fallback) & (fallback >= 0) & (fallback < len(item_ids))).all():
            raise ValueError(f"{int((~named).sum())} event(s) have no item_id and an item code outside the "
                             f"catalog's {len(item_ids)} items")
        items[~named] = fallback.astype(np.int64)
    if user is not None:
        users = np.full(len(frame), str(user), dtype=object)
    else:
        users = frame["user"].astype(str).to_numpy(object)
    known = [] if user_ids is None else [str(u) for u in user_ids]
    vocabulary = np.asarray(known + sorted(set(users.tolist()) - set(known)), dtype=object)
    user_index = {u: k for k, u in enumerate(vocabulary)}
    times = frame["timestamp"].to_numpy(np.float64)
    seconds = np.floor(times).astype(np.int64) + int(start)
    user_codes = np.array([user_index[u] for u in users], np.int64)
    order = np.lexsort((np.arange(len(frame)), times, user_codes))  # exact times: whole seconds tie
    kind_codes = np.array([KINDS.index(k) for k in frame["kind"]], np.int64)
    return Interactions(user_codes[order], items[order], vocabulary, item_ids, timestamps=seconds[order],
                        kinds=kind_codes[order], weights=dwell_weights(frame["dwell"].to_numpy(np.float64))[order])
