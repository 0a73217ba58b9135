"""An on-disk embedding cache that survives interruptions.

Vectors are keyed by *what was encoded* (a hash of the image bytes or the text) inside a folder per
encoder fingerprint (spec, weights identity, preprocessing, pooling: `Encoder.describe`). So a changed
image or text misses the cache and is recomputed, a changed encoder gets a fresh folder, and an
unchanged row is never encoded twice — whichever catalog, order or path it comes from.

Layout: ``root/<fingerprint[:32]>/meta.json`` and append-only shards ``shard-<id>.vectors.npy`` +
``shard-<id>.keys.npy``. Each file is written to a temporary name and moved into place; the keys file
goes last and marks the shard complete, so a killed run leaves only whole shards. Vectors are read
memory-mapped. Pending rows are flushed every ``flush_every`` rows and on `close` (also when an
exception or Ctrl-C unwinds a ``with`` block).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmrec.io import atomic_save_npy, atomic_write_json, read_json

logger = logging.getLogger(__name__)

KEY_DTYPE = "S32"  # hex blake2b-128; hex keeps NUL bytes out of numpy's fixed-width strings


def hash_bytes(data: bytes) -> bytes:
    """Cache key of raw input bytes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest().encode()


def hash_text(text: str) -> bytes:
    """Cache key of a text (UTF-8, exactly as given)."""
    return hash_bytes(b"text:" + text.encode("utf-8"))


class EmbeddingCache:
    """Vectors of one encoder keyed by input hash, in memory-mapped shards under ``root/<fingerprint>``.

    Use as a context manager (or call `close`) so pending rows are flushed.
    """

    def __init__(self, root: str | os.PathLike, description: dict[str, Any], dim: int, *,
                 flush_every: int = 4096, max_shards: int = 32) -> None:
        text = json.dumps(description, sort_keys=True, default=str)
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()
        self.dir = Path(root) / self.fingerprint[:32]
        self.dim, self.flush_every, self.max_shards = int(dim), int(flush_every), int(max_shards)
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if meta.exists():
            stored = read_json(meta)
            if not isinstance(stored, dict) or stored.get("dim") != self.dim:
                raise ValueError(f"{meta}: cache holds dim {stored.get('dim') if isinstance(stored, dict) else '?'}, "
                                 f"encoder has dim {self.dim}")
        else:
            atomic_write_json(meta, json.loads(json.dumps(
                {"dim": self.dim, "description": description, "fingerprint": self.fingerprint}, default=str)))
        self._pending_keys: list[bytes] = []
        self._pending_vectors: list[np.ndarray] = []
        self._load()

    @classmethod
    def for_encoder(cls, root: str | os.PathLike, encoder: Any, **options: Any) -> "EmbeddingCache":
        """The cache folder of ``encoder`` (by its `describe`) under ``root``."""
        return cls(root, encoder.describe(), encoder.dim, **options)

    def _shard_files(self) -> list[tuple[Path, Path]]:
        pairs = []
        for keys_file in sorted(self.dir.glob("shard-*.keys.npy")):
            pairs.append((keys_file, keys_file.with_name(keys_file.name.replace(".keys.npy", ".vectors.npy"))))
        return pairs

    def _load(self) -> None:
        self._shards: list[np.ndarray] = []
        self._loaded: list[tuple[Path, Path]] = []  # the shard files this process reads (and may compact)
        self._index: dict[bytes, tuple[int, int]] = {}
        for keys_file, vectors_file in self._shard_files():
            try:
                keys = np.load(keys_file, allow_pickle=False)
                vectors = np.load(vectors_file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                logger.warning("embedding cache: skipping unreadable shard %s (%s)", keys_file, err)
                continue
            if vectors.shape != (len(keys), self.dim) or keys.dtype != np.dtype(KEY_DTYPE):
                logger.warning("embedding cache: skipping shard %s: %s keys, vectors %s, dim %d",
                               keys_file, len(keys), vectors.shape, self.dim)
                continue
            shard = len(self._shards)
            self._shards.append(vectors)
            self._loaded.append((keys_file, vectors_file))
            for row, key in enumerate(keys.tolist()):
                self._index[key] = (shard, row)
        logger.debug("embedding cache %s: %d rows in %d shards", self.dir, len(self._index), len(self._shards))

    def __len__(self) -> int:
        return len(self._index) + len(self._pending_keys)

    def __contains__(self, key: bytes) -> bool:
        return key in self._index or key in self._pending_keys

    def get(self, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """``(found, vectors)``: a bool mask over ``keys`` and ``float32 [len(keys), dim]`` (zeros where not found)."""
        pending = dict(zip(self._pending_keys, range(len(self._pending_keys)))) if self._pending_keys else {}
        found = np.zeros(len(keys), dtype=bool)
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        for i, key in enumerate(keys):
            where = self._index.get(key)
            if where is not None:
                out[i] = self._shards[where[0]][where[1]]
                found[i] = True
            elif key in pending:
                out[i] = self._pending_vectors[pending[key]]
                found[i] = True
        return found, out

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Queue rows; they reach disk at the next flush (every ``flush_every`` rows, and on close)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(f"cache add: {len(keys)} keys but vectors of shape {vectors.shape} (dim {self.dim})")
        self._pending_keys.extend(keys)
        self._pending_vectors.extend(vectors)
        if len(self._pending_keys) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write pending rows as one new shard (atomically); compact when shards pile up."""
        self._write_pending()
        if len(self._shards) > self.max_shards:
            self.compact()

    def _write_pending(self) -> None:
        if not self._pending_keys:
            return
        keys = np.asarray(self._pending_keys, dtype=KEY_DTYPE)
        vectors = np.stack(self._pending_vectors).astype(np.float32)
        name = f"shard-{time.time_ns():020d}-{os.getpid()}"
        atomic_save_npy(self.dir / f"{name}.vectors.npy", vectors)
        atomic_save_npy(self.dir / f"{name}.keys.npy", keys)  # written last: marks the shard complete
        shard = len(self._shards)
        self._shards.append(np.load(self.dir / f"{name}.vectors.npy", mmap_mode="r", allow_pickle=False))
        self._loaded.append((self.dir / f"{name}.keys.npy", self.dir / f"{name}.vectors.npy"))
        for row, key in enumerate(keys.tolist()):
            self._index[key] = (shard, row)
        self._pending_keys, self._pending_vectors = [], []

    def compact(self) -> None:
        """Merge the shards this process has read into one (written before they are removed). Shards a
        concurrent writer added since are not touched: they are read again afterwards, never deleted."""
        self._write_pending()
        old = list(self._loaded)
        if len(old) <= 1:
            return
        keys = list(self._index)
        vectors = np.stack([self._shards[s][r] for s, r in (self._index[k] for k in keys)]).astype(np.float32)
        name = f"shard-{time.time_ns():020d}-{os.getpid()}"
        atomic_save_npy(self.dir / f"{name}.vectors.npy", vectors)
        atomic_save_npy(self.dir / f"{name}.keys.npy", np.asarray(keys, dtype=KEY_DTYPE))
        for keys_file, vectors_file in old:
            keys_file.unlink(missing_ok=True)  # keys first: a half-removed shard is never read
            vectors_file.unlink(missing_ok=True)
        self._load()

    def close(self) -> None:
        """Flush pending rows."""
        self.flush()

    def __enter__(self) -> "EmbeddingCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
