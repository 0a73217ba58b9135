"""Atomic file writes: a file is either its old self or complete, never half-written."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temporary sibling, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def atomic_save_tensors(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Save tensors as safetensors (moved to CPU, made contiguous) through a temporary sibling."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)
    return path
