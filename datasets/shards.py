"""Webdataset shards of a `Catalog`: a writer (one sample per item) and a streaming reader.

`write_catalog_shards(catalog, out_dir)` writes::

    out_dir/catalog-000000.tar, catalog-000001.tar, ...   items in catalog order, ``items_per_shard`` each
    out_dir/catalog-shards.json                             shard names and counts (items, with image, ...)

One sample per item: ``<key>.json`` holds ``{"id", "code", "title", "text", "attributes"}`` (``code`` is
the item's row in the catalog, ``id`` the id exactly as the catalog spells it) and, when the item has an
image, ``<key>.jpg`` holds the image file's bytes unchanged (no re-encode; a PNG or WebP file is kept
as ``.png`` / ``.webp``). An item without an image is a sample with json only: a missing modality is
normal. ``<key>`` is `shard_key(id)`, a tar-safe name derived from the id.

`catalog_samples(urls)` reads shards back as a `webdataset.DataPipeline` (an ``IterableDataset``)::

    shard list ─► split_by_node ─► split_by_worker ─► tar members ─► samples ─► shuffle ─► decode ─► item dict
    (ResampledShards instead of the list and both splits when ``resample=True``)

Damage never stops the stream. A shard that cannot be opened, a truncated or corrupt shard (the samples
before the damage still arrive), image bytes that do not decode, json that does not parse or lacks the
catalog fields, a sample without json: each is skipped, logged with ``logging.warning`` and counted by
reason in a `SampleStats` (see there for which process sees which counts).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import multiprocessing
import multiprocessing.context
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import webdataset as wds
from PIL import Image
from webdataset import tariterators
from webdataset.autodecode import DecodingError
from webdataset.utils import pytorch_worker_info

from mmrec.data import Catalog
from mmrec.io import atomic_write
from mmrec.skips import Skips

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "png", "webp")
_MEMBER_EXTENSIONS = frozenset((*IMAGE_EXTENSIONS, "json"))
_IMAGE_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"))
SKIP_REASONS = {
    "unreadable_shard": "shard file could not be opened",
    "damaged_shard": "shard is truncated or corrupt; its samples after the damage are lost",
    "bad_image": "image bytes do not decode",
    "bad_json": "json does not parse or lacks the catalog fields",
    "incomplete_sample": "sample without json (a part cut off by damage, or a stray member)",
}
_REASON_SLOT = {reason: i for i, reason in enumerate(SKIP_REASONS)}
_DELIVERED_SLOT = len(SKIP_REASONS)
_MAX_KEY_CHARS = 64  # keeps "<key>.json" far inside the 100-character name limit of a ustar header
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
_MAX_LOGGED_WRITE_PROBLEMS = 5


# ---------------------------------------------------------------------------------------------- writer

def shard_key(item_id: str) -> str:
    """The sample key of an item id: the id itself when it is short and only ``[A-Za-z0-9_-]``.

    Any other id (dots, slashes, spaces, non-ASCII, over 64 characters, empty) becomes its safe
    characters, cut to 64, plus ``_`` and 12 hex digits of its SHA-1, so distinct ids keep distinct keys.
    Webdataset splits a member name at its first dot into key and extension, and a slash would make
    folders, hence the rule. The id itself travels unchanged in the json.
    """
    safe = _UNSAFE_KEY_CHARS.sub("_", item_id)
    if safe == item_id and 0 < len(item_id) <= _MAX_KEY_CHARS:
        return item_id
    digest = hashlib.sha1(item_id.encode("utf-8")).hexdigest()[:12]
    return f"{safe[:_MAX_KEY_CHARS]}_{digest}"


def shard_name(prefix: str, index: int) -> str:
    """File name of shard ``index`` of a set: ``catalog-000000.tar`` for prefix ``catalog``."""
    return f"{prefix}-{index:06d}.tar"


@dataclass
class _WriteCounts:
    """What a write put into its shards, and which image files it had to leave out."""

    items: int = 0
    with_image: int = 0
    image_paths: int = 0
    image_skips: Skips = field(default_factory=Skips)

    def skip_image(self, reason: str, item_id: str, path: str, detail: str) -> None:
        self.image_skips.add(reason, f"{item_id}: {path}")
        if self.image_skips.total <= _MAX_LOGGED_WRITE_PROBLEMS:
            logger.warning("item %r: image %s left out (%s): %s", item_id, path, reason, detail)


def write_catalog_shards(catalog: Catalog, out_dir: str | os.PathLike, *, items_per_shard: int = 1000,
                         prefix: str = "catalog", texts: Sequence[str] | None = None) -> list[Path]:
    """Write ``catalog`` as tar shards ``<prefix>-000000.tar, ...`` in ``out_dir``; return their paths in order.

    Shard ``s`` holds item codes ``s*items_per_shard`` up to the next shard's first. ``texts`` replaces
    the catalog's texts in the json (one string per item, e.g. `mmrec.datasets.hm.article_texts`).
    Each shard is written atomically (`mmrec.io.atomic_write`), so a shard file either is complete or is
    not there; tar headers carry a fixed mtime, so the same catalog gives
    byte-identical shards. ``<prefix>-shards.json`` records shard names and counts (items, with image,
    without image, image files left out by reason); the counts are also logged.

    An image file that is missing, unreadable, neither JPEG, PNG nor WebP, or does not decode (cut short,
    damaged, over Pillow's decompression-bomb guard: what a reader would drop the whole sample for) is left out
    of its sample (the item keeps its json), counted and logged; if every image file fails, the paths are wrong
    and `ValueError` is raised. An attribute value that is not a str, number, bool or None raises `TypeError`
    naming item and attribute. Shards an earlier write under the same prefix listed in its manifest and this
    one does not rewrite are deleted (a glob over the folder then reads one catalogue); other files are left
    alone, and shard-named ones only reported: pass the returned list (or the manifest's names) to the reader.
    """
    if items_per_shard < 1:
        raise ValueError(f"items_per_shard must be at least 1, got {items_per_shard}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", prefix):
        raise ValueError(f"shard prefix {prefix!r} must be non-empty and use only letters, digits, '_', '-', '.'")
    if len(catalog) == 0:
        raise ValueError("catalog has no items; there is nothing to write")
    if texts is not None:
        texts = [str(t) for t in texts]
        if len(texts) != len(catalog):
            raise ValueError(f"texts has {len(texts)} entries but the catalog has {len(catalog)} items")
    keys = _unique_keys(catalog.ids)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    earlier = _listed_shards(out / f"{prefix}-shards.json", prefix)

    counts = _WriteCounts()
    paths: list[Path] = []
    for start in range(0, len(catalog), items_per_shard):
        codes = range(start, min(start + items_per_shard, len(catalog)))
        path = out / shard_name(prefix, len(paths))
        atomic_write(path, lambda f: _write_tar(f, (_item_sample(catalog, c, keys[c], texts, counts)
                                                        for c in codes)))
        paths.append(path)

    if counts.image_paths and not counts.with_image:
        raise ValueError(f"none of the {counts.image_paths} image files of the catalog could be read "
                         f"({counts.image_skips}); check the catalog's image paths")
    manifest = {
        "prefix": prefix, "items_per_shard": items_per_shard, "shards": [p.name for p in paths],
        "items": counts.items, "with_image": counts.with_image, "without_image": counts.items - counts.with_image,
        "image_files_left_out": counts.image_skips,
    }
    atomic_write(out / f"{prefix}-shards.json", lambda f: f.write(json.dumps(manifest, indent=1).encode("utf-8")))
    for name in sorted(earlier - {p.name for p in paths}):  # the earlier write's own shards, now stale
        (out / name).unlink(missing_ok=True)
    logger.info("wrote %d items (%d with image, %d without; image files left out: %s) into %d shards in %s",
                counts.items, counts.with_image, counts.items - counts.with_image, counts.image_skips or 0,
                len(paths), out)
    _report_stale_shards(out, prefix, {p.name for p in paths})
    return paths


def _unique_keys(ids: np.ndarray) -> list[str]:
    keys = [shard_key(i) for i in ids]
    owner: dict[str, str] = {}
    for item_id, key in zip(ids, keys):
        if key in owner:
            raise ValueError(f"item ids {owner[key]!r} and {item_id!r} map to the same shard key {key!r}")
        owner[key] = item_id
    return keys


def _item_sample(catalog: Catalog, code: int, key: str, texts: list[str] | None,
                 counts: _WriteCounts) -> dict[str, Any]:
    item_id = str(catalog.ids[code])
    meta = {
        "id": item_id,
        "code": code,
        "title": catalog.titles[code],
        "text": catalog.texts[code] if texts is None else texts[code],
        "attributes": {name: _json_value(col[code], item_id, name) for name, col in catalog.attributes.items()},
    }
    sample: dict[str, Any] = {"__key__": key,
                              "json": json.dumps(meta, ensure_ascii=False, allow_nan=False).encode("utf-8")}
    counts.items += 1
    path = catalog.image_paths[code]
    if path is not None:
        counts.image_paths += 1
        image = _image_member(path, item_id, counts)
        if image is not None:
            extension, data = image
            sample[extension] = data
            counts.with_image += 1
    return sample


def _image_member(path: str, item_id: str, counts: _WriteCounts) -> tuple[str, bytes] | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exn:
        counts.skip_image("unreadable_image_file", item_id, path, f"{type(exn).__name__}: {exn}")
        return None
    extension = next((ext for magic, ext in _IMAGE_MAGIC if data.startswith(magic)), None)
    if extension is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        extension = "webp"
    if extension is None:
        counts.skip_image("unsupported_image_format", item_id, path, f"starts with {data[:8]!r}, not JPEG/PNG/WebP")
        return None
    try:
        _check_decodes(data)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exn:
        counts.skip_image("undecodable_image", item_id, path, f"{type(exn).__name__}: {exn}")
        return None
    return extension, data


def _check_decodes(data: bytes) -> None:
    """Decode image bytes as a reader's `decode_rgb` would (the bomb guard included), a JPEG at an eighth of its
    size (its whole stream is still read, so a cut-short file fails just the same)."""
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()


def _json_value(value: Any, item_id: str, name: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise TypeError(f"item {item_id!r}: attribute {name!r} holds a {type(value).__name__} ({value!r}); "
                    f"shards store str, int, float, bool or None")


def _write_tar(f, samples: Iterable[dict[str, Any]]) -> None:
    with wds.TarWriter(f, encoder=False, mtime=0) as tar:  # an int: a float mtime costs a pax header per member
        for sample in samples:
            tar.write(sample)




def _listed_shards(manifest: Path, prefix: str) -> set[str]:
    """The shard names an earlier write's manifest lists (only names of this prefix's shard form), or none."""
    try:
        names = json.loads(manifest.read_text(encoding="utf-8")).get("shards", [])
    except (OSError, ValueError, AttributeError):
        return set()
    pattern = _shard_names(prefix)
    return {n for n in names if isinstance(n, str) and pattern.fullmatch(n)} if isinstance(names, list) else set()


def _shard_names(prefix: str) -> re.Pattern:
    """What `shard_name` gives for ``prefix``: ``<prefix>-NNNNNN.tar``."""
    return re.compile(re.escape(prefix) + r"-\d{6}\.tar")


def _report_stale_shards(out: Path, prefix: str, written: set[str]) -> None:
    pattern = _shard_names(prefix)
    stale = sorted(p.name for p in out.iterdir() if pattern.fullmatch(p.name) and p.name not in written)
    if stale:
        logger.warning("%s holds %d shard(s) of an earlier write not in this set (e.g. %s); they were left in "
                       "place: read the returned paths or %s-shards.json, not a glob", out, len(stale),
                       stale[:3], prefix)


# ------------------------------------------------------------------------------------------ statistics

@dataclass(frozen=True)
class SkipExample:
    """One skipped sample or shard: the reason (a key of `SKIP_REASONS`), sample key, shard url, detail."""

    reason: str
    key: str | None
    url: str | None
    detail: str


class SampleStats:
    """Counts of samples delivered and skipped (by reason) by `catalog_samples` pipelines.

    Counts sit in shared memory allocated when this object is made. DataLoader worker processes receive
    the pipeline (and this object) when they start, by fork or spawn, and add to the same counters, so
    the main process reads totals over all its workers, also while they run. Reading and adding take a
    lock, so threads are safe too. `examples` (the first ``max_examples`` skips, with key, url, detail)
    is per process: a worker's examples stay in the worker, which logs every skip with
    ``logging.warning``. Separate training processes (torch.distributed ranks) each count their own
    samples; sum them across ranks if a global count is wanted. A copy made otherwise than by starting a
    process (``copy.deepcopy``, ``pickle.dumps``) starts its own counters from the current values.
    """

    def __init__(self, max_examples: int = 5) -> None:
        self._counts = _shared_counters([0] * (len(SKIP_REASONS) + 1))
        self.max_examples = max_examples
        self.examples: list[SkipExample] = []

    def record_skip(self, reason: str, *, key: str | None = None, url: str | None = None, detail: str = "") -> None:
        """Count and log one skip; ``reason`` is a key of `SKIP_REASONS`."""
        slot = _REASON_SLOT[reason]
        with self._counts.get_lock():
            self._counts[slot] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(SkipExample(reason, key, url, detail))
        logger.warning("skipped %s (%s): key=%s url=%s: %s", reason, SKIP_REASONS[reason], key, url, detail)

    def record_delivered(self) -> None:
        """Count one sample handed on by the pipeline."""
        with self._counts.get_lock():
            self._counts[_DELIVERED_SLOT] += 1

    @property
    def counts(self) -> dict[str, int]:
        """Skips by reason (every reason listed, zeros included)."""
        with self._counts.get_lock():
            values = list(self._counts)
        return {reason: values[slot] for reason, slot in _REASON_SLOT.items()}

    @property
    def skipped(self) -> int:
        """All skips, of samples and of shards."""
        return sum(self.counts.values())

    @property
    def delivered(self) -> int:
        """Samples handed on (across this process and the DataLoader workers it started)."""
        return self._counts[_DELIVERED_SLOT]

    def __repr__(self) -> str:
        skips = {reason: n for reason, n in self.counts.items() if n}
        return f"SampleStats(delivered={self.delivered}, skipped={skips})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if multiprocessing.context.get_spawning_popen() is None:  # not a process start: copy the values
            state["_counts"] = list(self._counts)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_counts"], list):
            state["_counts"] = _shared_counters(state["_counts"])
        self.__dict__.update(state)


def _shared_counters(values: list[int]) -> Any:
    # A lock made by the spawn context can be handed to fork, spawn and forkserver children alike;
    # one from the default (fork) context refuses to travel to spawned DataLoader workers.
    return multiprocessing.get_context("spawn").Array("q", values)


# ---------------------------------------------------------------------------------------------- reader

def check_shard_count(n_shards: int, num_workers: int, world_size: int, resample: bool) -> None:
    """Refuse a split that leaves readers without shards.

    Without resampling, each of ``max(1, num_workers) * world_size`` readers (DataLoader workers per
    process times processes) takes whole shards in turn; with fewer shards than readers some read
    nothing, and distributed training then waits forever on the ranks that ran dry. Raises `ValueError`
    saying how many shards, workers and processes there are and what to change. Resampling draws shards
    with replacement in every reader, so any count of shards is fine then.
    """
    if n_shards < 1:
        raise ValueError("no shards to read")
    if num_workers < 0 or world_size < 1:
        raise ValueError(f"num_workers must be >= 0 and world_size >= 1, got {num_workers} and {world_size}")
    readers = max(1, num_workers) * world_size
    if not resample and n_shards < readers:
        raise ValueError(
            f"{n_shards} shard(s) cannot feed {readers} readers ({max(1, num_workers)} DataLoader worker(s) "
            f"per process x {world_size} process(es)): without resampling every reader needs at least one "
            f"whole shard, so {readers - n_shards} would read nothing. Write at least {readers} shards "
            f"(write_catalog_shards with a smaller items_per_shard), use fewer workers or processes, or read "
            f"with resample=True.")


def catalog_samples(urls: str | os.PathLike | Sequence[str | os.PathLike], *, shuffle_buffer: int = 0,
                    resample: bool = False, seed: int = 0, decode_images: bool = True,
                    image_transform: Callable[[Any], Any] | None = None, stats: SampleStats | None = None,
                    num_workers: int | None = None, world_size: int | None = None) -> wds.DataPipeline:
    """Items streamed from catalog shards, as dicts ``{"id", "code", "title", "text", "attributes", "image"}``.

    ``urls``: shard paths or urls, or one string in webdataset's brace notation
    (``"out/catalog-{000000..000009}.tar"``). ``image`` is a PIL RGB image (Pillow's decompression-bomb
    guard applies), ``image_transform(image)`` when a transform is given, or None for an item without an
    image; with ``decode_images=False`` it is the stored file bytes (for decoding elsewhere, e.g. on a GPU).
    Each dict also carries webdataset's ``"__key__"``.

    Not resampled (default): every sample once per pass. Shards are split across processes
    (``split_by_node``) and then DataLoader workers (``split_by_worker``); `check_shard_count` runs here
    with ``num_workers`` (DataLoader workers; not checked when None) and ``world_size`` (read as
    webdataset reads it, from ``RANK``/``WORLD_SIZE`` or torch.distributed, when None), and again inside
    each worker once the real numbers are known. ``resample=True``: an endless stream; each reader draws
    shards with replacement from its own generator, seeded from ``seed``, rank and worker, so a run
    repeats exactly (cut it with ``.with_epoch(n)`` or ``itertools.islice``).

    ``shuffle_buffer > 0`` shuffles the shard order (seeded by ``seed``, the same in every process so the
    split stays a partition) and samples through a buffer of that many; decoding happens after the
    shuffle, so the buffer holds bytes. The order repeats for the same ``seed``; pass ``seed + epoch``
    for a new order each epoch. Skips are counted in ``stats`` (a new `SampleStats` when None), also
    reachable as the pipeline's ``stats`` attribute. A transform that raises is a bug, not damage: it
    stops the stream.
    """
    if shuffle_buffer < 0:
        raise ValueError(f"shuffle_buffer must be >= 0 (0: no shuffle), got {shuffle_buffer}")
    shard_urls = _expand_urls(urls)
    stats = SampleStats() if stats is None else stats
    if resample:
        shards: list[Any] = [wds.ResampledShards(shard_urls, seed=seed, deterministic=True)]
    else:
        world = pytorch_worker_info()[1] if world_size is None else world_size
        check_shard_count(len(shard_urls), num_workers or 0, world, resample=False)
        if world > 1 and len(shard_urls) % world:
            logger.warning("%d shards over %d processes: ranks get unequal shares and finish at different "
                           "steps; a distributed loop needs resample=True with .with_epoch(n) or its own "
                           "join logic", len(shard_urls), world)
        shards = [wds.SimpleShardList(shard_urls, seed=seed if shuffle_buffer > 0 else None),
                  _enough_shards(len(shard_urls)), wds.split_by_node, wds.split_by_worker]
    image_extensions = list(IMAGE_EXTENSIONS) if decode_images else []
    pipeline = wds.DataPipeline(
        *shards,
        _tar_samples(stats),
        wds.shuffle(shuffle_buffer, initial=shuffle_buffer, seed=seed) if shuffle_buffer > 0 else None,
        wds.decode(wds.handle_extension(" ".join(IMAGE_EXTENSIONS), decode_rgb), only=["json", *image_extensions],
                   handler=_DecodeFailed(stats)),
        wds.map(_CatalogItem(stats), handler=_ItemRefused(stats)),
        wds.map(_TransformImage(image_transform)) if image_transform is not None else None,
    )
    pipeline.stats = stats
    return pipeline


def decode_rgb(data: bytes) -> Image.Image:
    """Image file bytes as a loaded PIL RGB image; Pillow's decompression-bomb guard applies.

    (webdataset's ``imagehandler("pilrgb")`` converts twice, copying every image once more.)
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")


def _expand_urls(urls: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(urls, (str, os.PathLike)):
        found = wds.shardlists.expand_urls(os.fspath(urls))
    else:
        found = [os.fspath(u) for u in urls]
    if not found:
        raise ValueError("no shard urls given")
    local = [u for u in found if "://" not in u and not u.startswith("pipe:")]
    folders = [u for u in local if os.path.isdir(u)]
    if folders:
        raise ValueError(f"{folders[0]} is a folder; pass its shard files, e.g. the list write_catalog_shards "
                         f"returned or the names in its <prefix>-shards.json")
    missing = [u for u in local if not os.path.isfile(u)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(found)} shard file(s) do not exist, e.g. {missing[:3]}")
    return found


def _require_enough_shards(sources: Iterator[dict], n_shards: int) -> Iterator[dict]:
    _, world_size, _, num_workers = pytorch_worker_info()
    check_shard_count(n_shards, num_workers, world_size, resample=False)
    yield from sources


_enough_shards = wds.pipelinefilter(_require_enough_shards)


def _is_catalog_member(name: str) -> bool:
    extension = tariterators.base_plus_ext(name)[1]
    return extension is not None and extension.lower() in _MEMBER_EXTENSIONS


def _read_tar_samples(sources: Iterator[dict], stats: SampleStats) -> Iterator[dict]:
    """webdataset's own url_opener → tar_file_expander → group_by_keys, with each damaged shard counted once.

    Members other than json and images are never read (no pickles from an untrusted shard).
    """
    shards = _ShardWatch(stats)
    opened = tariterators.url_opener(sources, handler=shards.open_failed)
    files = tariterators.tar_file_expander(shards.watch(opened), handler=shards.read_failed,
                                           select_files=_is_catalog_member)
    return tariterators.group_by_keys(files, handler=shards.read_failed)


_tar_samples = wds.pipelinefilter(_read_tar_samples)


class _EndCheckedStream:
    """A shard's byte stream that remembers how it ended.

    Python's tarfile, reading a stream, takes a file cut inside or just before a header for a normal
    end: every sample after the cut would vanish unnoticed. A whole uncompressed tar ends with at least
    two zero blocks, so when the stream ran dry it must be block-aligned and end in 1024 zero bytes.
    """

    def __init__(self, raw: Any, url: str) -> None:
        self.raw, self.url = raw, url
        self.size, self.head, self.tail, self.ran_dry = 0, b"", b"", False

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if n is None or n < 0 or len(data) < n:
            self.ran_dry = True
        if len(self.head) < 512:
            self.head = (self.head + data)[:512]
        self.size += len(data)
        self.tail = (self.tail + data)[-1024:]
        return data

    def close(self) -> None:
        self.raw.close()

    def unclean_end(self) -> str | None:
        """Why the stream looks cut off, or None (a clean end, or a compressed tar this cannot judge)."""
        if not self.ran_dry or self.head[257:262] != b"ustar":
            return None
        if self.size % 512 or len(self.tail) < 1024 or self.tail.count(0) != len(self.tail):
            return f"file ends after {self.size} bytes without the tar end-of-archive blocks (truncated)"
        return None

    def __repr__(self) -> str:
        return f"<shard {self.url}>"


class _ShardWatch:
    """Per-iteration state of the tar stage: which shard is open and whether reading it failed."""

    def __init__(self, stats: SampleStats) -> None:
        self.stats = stats
        self.url: str | None = None
        self.stream: _EndCheckedStream | None = None
        self.error: BaseException | None = None

    def open_failed(self, exn: BaseException) -> bool:
        url = exn.args[-1] if exn.args else None
        self.stats.record_skip("unreadable_shard", url=str(url), detail=_describe(exn))
        return True

    def read_failed(self, exn: BaseException) -> bool:
        if self.error is None:
            self.error = exn
        return True

    def watch(self, sources: Iterator[dict]) -> Iterator[dict]:
        for source in sources:
            self.url, self.error = source["url"], None
            self.stream = _EndCheckedStream(source["stream"], source["url"])
            finished = False
            try:
                yield {**source, "stream": self.stream}
                finished = True  # the expander came back for the next shard: this one is done
            finally:
                self._close(judge=finished)

    def _close(self, judge: bool) -> None:
        stream, self.stream = self.stream, None
        stream.close()
        if not judge:  # the consumer stopped mid-shard; nothing to say about the rest of it
            return
        problem = _describe(self.error) if self.error is not None else stream.unclean_end()
        if problem:
            self.stats.record_skip("damaged_shard", url=self.url, detail=problem)


def _describe(exn: BaseException) -> str:
    message = str(exn.args[0]) if exn.args else str(exn)
    return f"{type(exn).__name__}: {message}"


class _SampleRefused(Exception):
    def __init__(self, reason: str, detail: str, sample: dict) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail
        self.key, self.url = sample.get("__key__"), sample.get("__url__")


class _DecodeFailed:
    """Handler of the decode stage: a member that does not decode skips its sample."""

    def __init__(self, stats: SampleStats) -> None:
        self.stats = stats

    def __call__(self, exn: BaseException) -> bool:
        if not isinstance(exn, DecodingError):
            raise exn
        cause = exn.__cause__
        self.stats.record_skip("bad_json" if exn.k == "json" else "bad_image", key=exn.key, url=exn.url,
                               detail=f".{exn.k}: " + (_describe(cause) if cause is not None else "undecodable"))
        return True


class _ItemRefused:
    """Handler of the item stage: a sample without usable json is skipped; anything else is a bug."""

    def __init__(self, stats: SampleStats) -> None:
        self.stats = stats

    def __call__(self, exn: BaseException) -> bool:
        if not isinstance(exn, _SampleRefused):
            raise exn
        self.stats.record_skip(exn.reason, key=exn.key, url=exn.url, detail=exn.detail)
        return True


_META_TYPES = {"id": str, "code": int, "title": str, "text": str, "attributes": dict}


class _CatalogItem:
    """A decoded sample as the item dict `catalog_samples` yields."""

    def __init__(self, stats: SampleStats) -> None:
        self.stats = stats

    def __call__(self, sample: dict) -> dict:
        if "json" not in sample:
            parts = sorted(k for k in sample if not k.startswith("__"))
            raise _SampleRefused("incomplete_sample", f"no json member, only {parts}", sample)
        meta = sample["json"]
        if not isinstance(meta, dict):
            raise _SampleRefused("bad_json", f"json is a {type(meta).__name__}, not an object", sample)
        for name, kind in _META_TYPES.items():
            value = meta.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise _SampleRefused("bad_json", f"json field {name!r} should be {kind.__name__}, "
                                                 f"got {value!r:.60}", sample)
        image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
        self.stats.record_delivered()
        return {"id": meta["id"], "code": meta["code"], "title": meta["title"], "text": meta["text"],
                "attributes": meta["attributes"], "image": image}


class _TransformImage:
    """Applies the user's image transform to items that have an image."""

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(self, item: dict) -> dict:
        if item["image"] is not None:
            item["image"] = self.transform(item["image"])
        return item
