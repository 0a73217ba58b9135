"""Embedding a whole catalog: images (or screenshots) and texts -> one vector per item, plus a validity mask.

Images are decoded in DataLoader workers. Two decoders:

* ``pil``: each worker reads, safely decodes (`mmrec.encoders.images`) and preprocesses one image;
  batches of ready pixels reach the tower.
* ``tensor``: workers only read bytes ahead and check headers; the main process decodes a whole batch
  with ``torchvision.io.decode_jpeg`` on the tower's device (nvJPEG on CUDA) and resizes and
  normalises it there in one call per image size. Files that are not plain JPEGs (PNG, CMYK, EXIF
  rotated, truncated) take the ``pil`` path inside the worker. The default on CUDA.

A missing or undecodable image is skipped and counted; the item keeps its other modalities. Texts are
encoded longest first so each batch pads little. With an `EmbeddingCache`, rows whose input hash is
cached are not encoded, and finished rows reach disk even when the run is interrupted.

Several processes (``accelerate launch``) each embed a contiguous shard of the catalog (`shard_bounds`);
`gather_result` joins the shards' results in rank order into the one result a single process makes.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from tqdm import tqdm

from mmrec.data import Catalog
from mmrec.encoders.base import Encoder, ImageEncoder, Preprocess, TextEncoder, pil_to_tensor
from mmrec.encoders.cache import EmbeddingCache, hash_bytes, hash_text
from mmrec.encoders.images import ImageDecodeError, decode_image, gpu_decodable, read_bytes

logger = logging.getLogger(__name__)

DECODERS = ("auto", "pil", "tensor")
MAX_LOGGED_FAILURES = 10


@dataclass
class EmbedResult:
    """Vectors for every row (zeros where ``valid`` is false), with counts and the failed rows' reasons.

    ``counts``: ``items``; ``encoded`` (by the tower in this run); ``from_cache``; ``missing`` (no image
    path / empty text); ``failed`` (unreadable or undecodable input). ``valid = encoded + from_cache``.
    """

    ids: np.ndarray
    vectors: np.ndarray
    valid: np.ndarray
    counts: dict[str, int]
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    modality: str = ""
    spec: str = ""

    def summary(self) -> dict[str, Any]:
        """Counts, time and throughput as a JSON-ready dict."""
        rate = self.counts["encoded"] / self.seconds if self.seconds > 0 else 0.0
        return {"modality": self.modality, "encoder": self.spec, "dim": int(self.vectors.shape[1]),
                **self.counts, "valid": int(self.valid.sum()), "seconds": round(self.seconds, 3),
                "encoded_per_second": round(rate, 1), "failure_examples": [list(f) for f in self.failures[:5]]}


def default_num_workers(device: torch.device) -> int:
    """Decode workers: on CPU the tower needs the cores (decoding is a few % of its cost), so decode
    inline on small machines; on CUDA the CPU only feeds the GPU, so use most cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return max(1, min(16, cores - 1))
    return 0 if cores <= 4 else max(1, cores // 8)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run small per-image tensor ops on one thread. With the tower's intra-op pool, a 0.3 ms resize
    took 15-30 ms on a busy 2-core machine (threads waking and waiting on each other); switching the
    count costs microseconds."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Batch(NamedTuple):
    """One loader batch, collated inside the worker: ready pixels stacked into one tensor, JPEG bytes for
    the tensor decoder, full-size images for screenshots, and the rows that failed with their reasons."""

    pixel_rows: list[int]
    pixels: torch.Tensor | None
    jpeg_rows: list[int]
    jpegs: list[bytes]
    image_rows: list[int]
    images: list[torch.Tensor]
    failures: list[tuple[int, str]]

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.pixel_rows) + len(self.jpeg_rows) + len(self.image_rows) + len(self.failures)


class _ImageFiles(Dataset):
    """Row ``i``: the file ``paths[rows[i]]`` as ``(row, kind, data)`` for the chosen decoder. Kinds:
    ``pixels`` (preprocessed), ``jpeg`` (bytes for the tensor decoder), ``image`` (full-size uint8), ``error``."""

    def __init__(self, paths: Sequence[str], rows: Sequence[int], mode: str, preprocess: Preprocess | None) -> None:
        self.paths, self.rows, self.mode, self.preprocess = paths, list(rows), mode, preprocess
        side = int(np.ceil(max(preprocess.size) / preprocess.crop_pct)) if preprocess is not None else 0
        self.draft = (side, side)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, str, Any]:
        index = self.rows[i]
        path = self.paths[index]
        try:
            data = read_bytes(path)
            if self.mode == "image":
                return index, "image", pil_to_tensor(decode_image(data, path))
            if self.mode == "tensor" and gpu_decodable(data, path):
                return index, "jpeg", data
            with single_thread():
                return index, "pixels", self.preprocess(pil_to_tensor(decode_image(data, path, self.draft)))[0]
        except ImageDecodeError as err:
            return index, "error", err.reason


def _collate(items: list[tuple[int, str, Any]]) -> _Batch:
    def of(kind: str) -> tuple[list[int], list[Any]]:
        chosen = [(i, d) for i, k, d in items if k == kind]
        return [i for i, _ in chosen], [d for _, d in chosen]

    (pixel_rows, pixels), (jpeg_rows, jpegs), (image_rows, images), (bad_rows, reasons) = \
        of("pixels"), of("jpeg"), of("image"), of("error")
    stacked = torch.stack(pixels) if pixels else None
    return _Batch(pixel_rows, stacked, jpeg_rows, jpegs, image_rows, images, list(zip(bad_rows, reasons)))


def _decode_jpegs(rows: list[int], datas: list[bytes], device: torch.device, preprocess: Preprocess,
                  paths: Sequence[str]) -> tuple[list[int], list[torch.Tensor], list[tuple[int, str]]]:
    """Batch-decode JPEG bytes on ``device``, then resize + normalise each same-size group in one call.
    A file the batch decoder rejects goes to Pillow, which decodes it or names the problem."""
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*image decoding and encoding capabilities of TorchVision")
        try:
            images = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one bad file fails the whole batch: decode one by one
            images = []
            for t in tensors:
                try:
                    images.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    images.append(None)
    out_rows, pixels, failures = [], [], []
    groups: dict[tuple[int, int], list[int]] = {}
    for k, image in enumerate(images):
        if image is not None:
            groups.setdefault(tuple(image.shape[-2:]), []).append(k)
            continue
        try:
            decoded = pil_to_tensor(decode_image(datas[k], paths[rows[k]]))
            out_rows.append(rows[k])
            pixels.append(preprocess(decoded.to(device)))
        except ImageDecodeError as err:
            failures.append((rows[k], err.reason))
    for members in groups.values():
        out_rows.extend(rows[k] for k in members)
        pixels.append(preprocess(torch.stack([images[k] for k in members])))
    return out_rows, pixels, failures


def _pixels_of(batch: _Batch, device: torch.device, preprocess: Preprocess,
               paths: Sequence[str]) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    rows = list(batch.pixel_rows)
    parts = [batch.pixels.to(device, non_blocking=True)] if batch.pixels is not None else []
    failures: list[tuple[int, str]] = []
    if batch.jpeg_rows:
        more_rows, more, failures = _decode_jpegs(batch.jpeg_rows, batch.jpegs, device, preprocess, paths)
        rows, parts = rows + more_rows, parts + more
    return rows, (torch.cat(parts) if parts else None), failures


class _Progress:
    def __init__(self, total: int, unit: str, enabled: bool) -> None:
        self.bar = tqdm(total=total, unit=unit, disable=not enabled, dynamic_ncols=True, smoothing=0.1)

    def __enter__(self) -> tqdm:
        return self.bar

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _log_failures(failures: list[tuple[str, str]], what: str) -> None:
    if not failures:
        return
    for item_id, reason in failures[:MAX_LOGGED_FAILURES]:
        logger.warning("skipped %s %s: %s", what, item_id, reason)
    if len(failures) > MAX_LOGGED_FAILURES:
        logger.warning("... and %d more %s skipped", len(failures) - MAX_LOGGED_FAILURES, what)


def _hash_files(paths: Sequence[str], rows: Sequence[int]) -> Iterator[tuple[int, bytes | None, str | None]]:
    def one(i: int) -> tuple[int, bytes | None, str | None]:
        try:
            return i, hash_bytes(read_bytes(paths[i])), None
        except ImageDecodeError as err:
            return i, None, err.reason

    with ThreadPoolExecutor(max_workers=8) as pool:
        yield from pool.map(one, rows, chunksize=64)


def embed_images(paths: Sequence[str | None], encoder: Encoder, *, ids: Sequence[str] | None = None,
                 batch_size: int = 64, num_workers: int | None = None, decoder: str = "auto",
                 cache: EmbeddingCache | None = None, progress: bool = True) -> EmbedResult:
    """Embed image files (``None`` = no image) with an image or screenshot encoder.

    ``decoder``: ``pil``, ``tensor`` (batched ``decode_jpeg`` on the encoder's device) or ``auto``
    (``tensor`` on CUDA, ``pil`` elsewhere). ``num_workers`` defaults to `default_num_workers`.
    """
    start = time.perf_counter()
    if encoder.modality not in ("image", "screen"):
        raise ValueError(f"embed_images needs an image or screen encoder, got {encoder!r}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r} not in {DECODERS}")
    n = len(paths)
    todo = [i for i, p in enumerate(paths) if p]
    ids, vectors, valid, counts = _empty_result(n, ids, encoder.dim, len(todo), "image paths")
    failures: list[tuple[int, str]] = []
    keys: dict[int, bytes] = {}
    if cache is not None and todo:
        for i, key, reason in _hash_files(paths, todo):
            if key is None:
                failures.append((i, reason))  # type: ignore[arg-type]
            else:
                keys[i] = key
        rows = list(keys)
        found, cached = cache.get([keys[i] for i in rows])
        hit = np.asarray(rows, dtype=np.int64)[found]
        vectors[hit], valid[hit] = cached[found], True
        counts["from_cache"] = int(found.sum())
        todo = [i for i, f in zip(rows, found) if not f]

    screen = encoder.modality == "screen"
    if decoder == "auto":
        decoder = "tensor" if encoder.device.type == "cuda" and not screen else "pil"
    mode = "image" if screen else ("tensor" if decoder == "tensor" else "pixels")
    preprocess = None if screen else encoder.preprocess  # type: ignore[attr-defined]
    device = encoder.device
    workers = default_num_workers(device) if num_workers is None else num_workers
    loader = DataLoader(_ImageFiles(paths, todo, mode, preprocess), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate, worker_init_fn=_one_thread if workers else None,
                        prefetch_factor=4 if workers else None, pin_memory=device.type == "cuda")
    # On CUDA, batch k+1 is decoded on a side stream while batch k is encoded, and batch k's vectors
    # are copied back only then; elsewhere each batch is stored as soon as it is done.
    side = torch.cuda.Stream(device) if device.type == "cuda" else None
    pending: tuple[list[int], torch.Tensor] | None = None

    def finish(rows: list[int], out: torch.Tensor) -> None:
        array = out.float().cpu().numpy()
        vectors[rows], valid[rows] = array, True
        counts["encoded"] += len(rows)
        if cache is not None:
            cache.add([keys[i] for i in rows], array)

    try:
        with _Progress(len(todo), "img", progress) as bar:
            for batch in loader:
                failures.extend(batch.failures)
                if screen:
                    rows, inputs = batch.image_rows, batch.images
                else:
                    with torch.cuda.stream(side) if side is not None else single_thread():
                        rows, inputs, bad = _pixels_of(batch, device, preprocess, paths)
                    failures.extend(bad)
                if pending is not None:
                    done, pending = pending, None
                    finish(*done)
                if rows:
                    if side is not None and isinstance(inputs, torch.Tensor):
                        torch.cuda.current_stream(device).wait_stream(side)
                        inputs.record_stream(torch.cuda.current_stream(device))
                    pending = (rows, encoder.encode(inputs))
                    if side is None:
                        done, pending = pending, None
                        finish(*done)
                bar.update(len(batch))
    finally:
        try:
            if pending is not None:  # the last batch, or the one before an interruption: keep it
                finish(*pending)
        finally:
            if cache is not None:
                cache.flush()
    counts["failed"] = len(failures)
    named = [(str(ids[i]), reason) for i, reason in sorted(failures)]
    _log_failures(named, "image")
    return EmbedResult(ids, vectors, valid, counts, named, time.perf_counter() - start, encoder.modality, encoder.spec)


def _empty_result(n: int, ids: Sequence[str] | None, dim: int, n_todo: int,
                  what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Ids (default ``"0".."n-1"``), zero vectors, an all-false valid mask and the counts an embedding starts
    from (inputs that are missing counted already)."""
    ids = np.asarray([str(i) for i in range(n)] if ids is None else [str(i) for i in ids], dtype=object)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} {what}")
    counts = {"items": n, "encoded": 0, "from_cache": 0, "missing": n - n_todo, "failed": 0}
    return ids, np.zeros((n, dim), dtype=np.float32), np.zeros(n, dtype=bool), counts


def embed_texts(texts: Sequence[str | None], encoder: Encoder, *, ids: Sequence[str] | None = None,
                batch_size: int = 128, cache: EmbeddingCache | None = None, progress: bool = True) -> EmbedResult:
    """Embed texts (``None`` or blank = missing), longest first so batches pad little."""
    start = time.perf_counter()
    if not isinstance(encoder, TextEncoder):
        raise ValueError(f"embed_texts needs a text encoder, got {encoder!r}")
    n = len(texts)
    todo = [i for i, t in enumerate(texts) if t and t.strip()]
    ids, vectors, valid, counts = _empty_result(n, ids, encoder.dim, len(todo), "texts")
    keys: dict[int, bytes] = {}
    if cache is not None and todo:
        keys = {i: hash_text(texts[i]) for i in todo}  # type: ignore[arg-type]
        found, cached = cache.get([keys[i] for i in todo])
        hit = np.asarray(todo, dtype=np.int64)[found]
        vectors[hit], valid[hit] = cached[found], True
        counts["from_cache"] = int(found.sum())
        todo = [i for i, f in zip(todo, found) if not f]
    order = sorted(todo, key=lambda i: len(texts[i]), reverse=True)  # type: ignore[arg-type]
    try:
        with _Progress(len(order), "text", progress) as bar:
            for s in range(0, len(order), batch_size):
                rows = order[s:s + batch_size]
                array = encoder.encode([texts[i] for i in rows]).float().cpu().numpy()
                vectors[rows], valid[rows] = array, True
                counts["encoded"] += len(rows)
                if cache is not None:
                    cache.add([keys[i] for i in rows], array)
                bar.update(len(rows))
    finally:
        if cache is not None:
            cache.flush()
    return EmbedResult(ids, vectors, valid, counts, [], time.perf_counter() - start, "text", encoder.spec)


def embed(catalog: Catalog, encoder: Encoder, *, texts: Sequence[str] | None = None, batch_size: int | None = None,
          num_workers: int | None = None, decoder: str = "auto", cache: EmbeddingCache | str | os.PathLike | None = None,
          progress: bool = True) -> EmbedResult:
    """Embed every item of ``catalog`` in the encoder's modality.

    Text towers read ``texts`` (default: ``catalog.full_text(i)``); image and screen towers read
    ``catalog.image_paths``. ``cache`` is an `EmbeddingCache` or a root folder for one.
    """
    if isinstance(cache, (str, os.PathLike)):
        cache = EmbeddingCache.for_encoder(cache, encoder)
    if isinstance(encoder, TextEncoder):
        if texts is None:
            texts = [catalog.full_text(i) for i in range(len(catalog))]
        elif len(texts) != len(catalog):
            raise ValueError(f"{len(texts)} texts for a catalog of {len(catalog)} items")
        return embed_texts(texts, encoder, ids=catalog.ids, batch_size=batch_size or 128, cache=cache,
                           progress=progress)
    if texts is not None:
        raise ValueError(f"texts were given but {encoder!r} is not a text encoder")
    if not isinstance(encoder, ImageEncoder) and encoder.modality != "screen":
        raise ValueError(f"cannot embed a catalog with {encoder!r}")
    return embed_images(catalog.image_paths, encoder, ids=catalog.ids, batch_size=batch_size or 64,
                        num_workers=num_workers, decoder=decoder, cache=cache, progress=progress)


# -- several processes (``accelerate launch``): a contiguous shard of the catalog each -------------------
def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of an ``n``-row catalog that process ``rank`` of ``world_size`` embeds: contiguous
    shards in rank order whose sizes differ by at most one (rank r: ``n·r // N`` to ``n·(r+1) // N``)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"process rank {rank} is outside 0..{world_size - 1}")
    return n * rank // world_size, n * (rank + 1) // world_size


def merge_results(parts: Sequence[EmbedResult]) -> EmbedResult:
    """One result from the results of consecutive shards (in shard order): rows concatenated, counts
    summed, failures listed in row order, the time of the slowest shard."""
    if not parts:
        raise ValueError("merge_results needs at least one shard's result")
    counts = {key: sum(p.counts[key] for p in parts) for key in parts[0].counts}
    return EmbedResult(np.concatenate([p.ids for p in parts]), np.concatenate([p.vectors for p in parts]),
                       np.concatenate([p.valid for p in parts]), counts, [f for p in parts for f in p.failures],
                       max(p.seconds for p in parts), parts[0].modality, parts[0].spec)


def gather_result(part: EmbedResult, device: torch.device | str = "cpu") -> EmbedResult:
    """Every process's `EmbedResult` of its shard (`shard_bounds`), merged in rank order, on every process
    of the torch.distributed group. Vectors and masks travel as tensors on ``device`` (a CUDA device under
    NCCL), padded to the longest shard; counts and failure reasons as small objects."""
    import torch.distributed as dist

    world = dist.get_world_size()
    lengths = [0] * world
    dist.all_gather_object(lengths, len(part.ids))
    longest = max(lengths)
    rows = torch.zeros(longest, part.vectors.shape[1] + 1, dtype=torch.float32, device=device)
    rows[: len(part.ids), :-1] = torch.from_numpy(part.vectors).to(device)
    rows[: len(part.ids), -1] = torch.from_numpy(part.valid.astype(np.float32)).to(device)
    gathered = [torch.empty_like(rows) for _ in range(world)]
    dist.all_gather(gathered, rows)
    meta: list[Any] = [None] * world
    dist.all_gather_object(meta, {"ids": [str(i) for i in part.ids], "counts": part.counts,
                                  "failures": [list(f) for f in part.failures], "seconds": part.seconds})
    parts = []
    for length, block, info in zip(lengths, gathered, meta):
        block = block[:length].cpu().numpy()
        parts.append(EmbedResult(np.asarray(info["ids"], dtype=object), np.ascontiguousarray(block[:, :-1]),
                                 block[:, -1] > 0.5, info["counts"], [tuple(f) for f in info["failures"]],
                                 info["seconds"], part.modality, part.spec))
    return merge_results(parts)
