"""The one I/O layer: atomic files and folders, strict JSON, and paths that stay inside a folder.

A file written here is either its old self or complete, never half-written: it is written to a temporary
sibling with a unique name (two writers never share one), flushed and fsynced, then renamed over the
target. A folder (a saved model, space or split) is built in a temporary sibling and renamed into place,
the old folder kept until the new one is complete. Every module that saves something goes through here.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a unique temporary sibling of ``path`` to write; on success it is fsynced and renamed over
    ``path`` (mode as a plain ``open`` would give it), on error removed. For writers that take a path
    (parquet, video, safetensors); `atomic_write` is the shortcut for a file object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], *, binary: bool = True) -> Path:
    """Call ``write(f)`` on a temporary sibling opened for writing, then move it over ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        kwargs = {} if binary else {"encoding": "utf-8", "newline": ""}
        with open(tmp, "wb" if binary else "w", **kwargs) as f:
            write(f)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """Strict JSON text: NaN and infinity are refused (they are not JSON), numpy scalars and arrays become
    plain numbers and lists."""
    return json.dumps(obj, allow_nan=False, default=_plain, **kwargs)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON (see `dumps_json`) to ``path`` atomically."""
    return atomic_write_text(path, dumps_json(obj, indent=indent))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` (never pickled) to ``path`` atomically."""
    return atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def atomic_save_tensors(state: dict, path: str | os.PathLike) -> Path:
    """Save tensors as safetensors (moved to CPU, made contiguous) to ``path`` atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of ``path`` to fill; on success it replaces ``path`` (an
    existing folder is moved aside first and deleted once the new one is in place), on error it is removed
    and ``path`` is left as it was. ``path`` must not be a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    old = None
    try:
        yield tmp
        _fsync_dir(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "folder")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def inside(root: str | os.PathLike, relative: str, what: str) -> Path:
    """``root / relative``, refused unless it stays inside ``root`` (no absolute paths, no ``..`` out, no
    symlink leading out): a saved folder names its own files only."""
    root_path = Path(root).resolve()
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute():
        raise ValueError(f"{what}: {relative!r} must be a relative path inside {root}")
    target = (root_path / relative).resolve()
    if target != root_path and root_path not in target.parents:
        raise ValueError(f"{what}: {relative!r} points outside {root}")
    return target


def read_text(path: str | os.PathLike, what: str | None = None) -> str:
    """A UTF-8 text file's contents, without a leading byte-order mark (spreadsheets write one); missing, a
    folder or not UTF-8 is an error naming ``what`` (default: the path). A pipe reads as it comes (a shell's
    ``<(...)``)."""
    path = Path(path)
    label = what or str(path)
    if path.is_dir():
        raise IsADirectoryError(f"{label} is a folder, not a file")
    if not path.exists():
        raise FileNotFoundError(f"{label} is missing" if what is None else f"{label} does not exist")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{label}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_json(path: str | os.PathLike, what: str | None = None) -> Any:
    """Parse a JSON file, naming the file in every error (missing, not UTF-8, not JSON, NaN)."""
    label = what or str(path)
    text = read_text(path, what)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise ValueError(f"{label}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except _NotJSON as err:
        raise ValueError(f"{label}: not valid JSON ({err})") from None


class _NotJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON value")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def finite_or_none(value: float) -> float | None:
    """``value``, or None where it is NaN or infinite (for JSON reports where a measure is undefined)."""
    return value if math.isfinite(value) else None
