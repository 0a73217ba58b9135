"""Saved folders are data, never code: one format for every saved model, space and split.

A folder is built in a temporary sibling and renamed into place (`mmrec.io.atomic_folder`), so a kill
during a save leaves the old folder or the new one, never a mix. Its ``manifest.json`` names the format
version, the kind of object, a hash of its config, and the size and SHA-256 of every file; loading
verifies all of it before reading anything else, and refuses a mismatch with a message naming the file.
Only files the manifest lists are read, by names the code chooses (never a path taken from the folder).

`Pretrained` is the mixin that gives a class ``save_pretrained`` / ``from_pretrained`` on top of this;
`mmrec.recommender.Recommender` and `mmrec.space.UnifiedSpace` use it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Any, Callable, ClassVar, TypeVar

import torch

from mmrec.io import atomic_folder, atomic_write_json, dumps_json, read_json

FORMAT = "mmrec"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
P = TypeVar("P", bound="Pretrained")


class FolderError(ValueError):
    """A saved folder that is incomplete, tampered with or inconsistent (the message names the file)."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_hash(config: Any) -> str:
    """Hex SHA-256 of a config's canonical JSON (sorted keys): equal configs hash equal across runs."""
    return hashlib.sha256(dumps_json(config, sort_keys=True).encode("utf-8")).hexdigest()


def check_replaceable(directory: str | os.PathLike, kind: str, what: str | None = None) -> Path:
    """``directory`` if saving a ``kind`` there may replace what it holds: it is missing, an empty folder, or
    a saved mmrec folder of that kind holding only the files its manifest lists. Saving replaces the whole
    folder, so anything else — a data folder, a split given as the input, a file someone put in a model
    folder — is refused (`FileExistsError`) instead of deleted."""
    path, what = Path(directory), what or str(directory)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} is a file; it must be a folder (created if missing)")
    if not path.is_dir() or not any(path.iterdir()):
        return path
    manifest = path / MANIFEST_FILE
    try:
        saved = read_json(manifest) if manifest.is_file() else None
    except ValueError:
        saved = None
    held = saved.get("kind") if isinstance(saved, dict) else None
    if held != kind:
        holds = f"a saved mmrec {held!r}" if held else "files that are not a saved mmrec folder"
        raise FileExistsError(f"{what}: the folder exists and holds {holds}; saving a {kind} replaces the whole "
                              f"folder, so choose a new or empty folder (or one a {kind} was saved to)")
    listed = set(saved.get("files") or {}) | {MANIFEST_FILE}
    folders = {str(parent) for name in listed for parent in PurePosixPath(name).parents}
    listed |= folders - {"."}
    listed |= {f"{folder}/{MANIFEST_FILE}" for folder in folders - {"."}}  # a saved folder's own (a model's space/)
    extra = sorted(name for p in path.rglob("*") if (name := p.relative_to(path).as_posix()) not in listed)
    if extra:
        raise FileExistsError(f"{what}: the saved {kind} there also holds {len(extra)} file(s) or folder(s) it did not "
                              f"write, e.g. {extra[:3]}; saving replaces the whole folder, so move them or choose "
                              f"another folder")
    return path


def write_folder(directory: str | os.PathLike, kind: str, config: Any, fill: Callable[[Path], None]) -> Path:
    """Build a saved folder atomically: ``fill(tmp)`` writes the files, then the manifest is added and the
    folder renamed onto ``directory`` (replacing an older one of the same kind only once the new one is
    complete; anything else there is refused, see `check_replaceable`)."""
    directory = check_replaceable(directory, kind)
    with atomic_folder(directory) as tmp:
        fill(tmp)
        files = {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE}
        atomic_write_json(tmp / MANIFEST_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
                                                "config_sha256": config_hash(config), "files": files})
    return directory


def relist_files(directory: str | os.PathLike, names: list[str]) -> None:
    """Add or update files in a saved folder's manifest (for formats that grow, e.g. feature files added to
    a saved split); the manifest is rewritten atomically."""
    root = Path(directory)
    manifest = read_json(root / MANIFEST_FILE)
    for name in names:
        path = root / name
        manifest["files"][name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    atomic_write_json(root / MANIFEST_FILE, manifest)


def verify_folder(directory: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Check a saved folder against its manifest (format, kind, every file's size and hash) and return the
    manifest; `FolderError` naming the file on any mismatch."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist or is not a folder (expected a saved mmrec {kind})")
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FolderError(f"{manifest_path} is missing: {root} is not a complete saved mmrec {kind} "
                          f"(half-written, or saved by an older mmrec: save it again)")
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise FolderError(f"{manifest_path}: not an mmrec manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise FolderError(f"{manifest_path}: format version {manifest.get('format_version')!r}, this mmrec reads "
                          f"{FORMAT_VERSION}")
    if manifest.get("kind") != kind:
        raise FolderError(f"{manifest_path}: the folder holds a {manifest.get('kind')!r}, not a {kind!r}")
    for name, entry in manifest["files"].items():
        path = root / name
        if not isinstance(entry, dict) or not path.is_file() or path.is_symlink() or ".." in Path(name).parts:
            raise FolderError(f"{path}: listed in {MANIFEST_FILE} but missing or not a plain file inside {root}")
        if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            raise FolderError(f"{path}: size or SHA-256 differs from {MANIFEST_FILE} (damaged or changed after saving)")
    return manifest


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file (no code can run from it), naming the file when it cannot be parsed and
    refusing NaN or infinite values in floating tensors."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device=str(device))
    except Exception as err:  # safetensors raises its own error types for damaged headers and data
        raise FolderError(f"{path}: not a readable safetensors file ({err})") from None
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise FolderError(f"{path}: tensor {key!r} has NaN or infinite values")
    return state


def check_state(path: Path, expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                resizable: Callable[[str], bool] = lambda key: False) -> None:
    """Refuse a saved state whose keys differ from ``expected`` or whose shapes differ where they are fixed
    by the config (``resizable(key)`` marks data-sized buffers), naming the file and the tensor."""
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise FolderError(f"{path}: tensors do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in state.items():
        want = expected[key]
        if value.dtype != want.dtype:
            raise FolderError(f"{path}: tensor {key!r} is {value.dtype}, the config builds {want.dtype}")
        if value.shape != want.shape and not resizable(key):
            raise FolderError(f"{path}: tensor {key!r} has shape {tuple(value.shape)}, the config builds "
                              f"{tuple(want.shape)}")


class Pretrained:
    """Mixin: ``save_pretrained(dir)`` / ``from_pretrained(dir)`` through a verified, atomic folder.

    A subclass sets ``folder_kind`` and implements ``folder_config`` (what the manifest hashes),
    ``write_files(folder)`` and the classmethod ``read_files(folder, manifest, **options)``.
    """

    folder_kind: ClassVar[str] = ""

    def folder_config(self) -> Any:
        """The config that identifies what is saved (hashed into the manifest)."""
        raise NotImplementedError

    def write_files(self, folder: Path) -> None:
        """Write every file of the saved form into ``folder`` (a temporary folder, renamed when done)."""
        raise NotImplementedError

    @classmethod
    def read_files(cls: type[P], folder: Path, manifest: dict[str, Any], **options: Any) -> P:
        """Build the object from a verified folder."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Save to ``directory`` atomically, with a manifest; an existing folder there is replaced."""
        return write_folder(directory, self.folder_kind, self.folder_config(), self.write_files)

    @classmethod
    def from_pretrained(cls: type[P], directory: str | os.PathLike, **options: Any) -> P:
        """Load a folder written by `save_pretrained`, after verifying it against its manifest."""
        root = Path(directory)
        return cls.read_files(root, verify_folder(root, cls.folder_kind), **options)
