"""Fetching pretrained weights named by a tag or hub id, failing at once when the hub cannot be reached.

Files already in the local Hugging Face cache are used without touching the network. Otherwise the
hub's host is probed with a short timeout before any library download starts (the libraries' own
retries take tens of seconds to give up), and an unreachable hub raises `EncoderSourceError` saying
what was tried and how to pass a local path instead. ``HF_HUB_OFFLINE=1`` skips the probe: cache only.
"""
from __future__ import annotations

import os
import socket
from typing import Sequence
from urllib.parse import urlparse

from mmrec.encoders.base import EncoderSourceError


PROBE_TIMEOUT_S = 3.0


def offline_requested() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value (read now, not at import)."""
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower()
    return env in ("1", "true", "yes", "on") or bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    """The hub's base URL (``HF_ENDPOINT`` read now, else huggingface_hub's default)."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def unreachable_reason(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why ``url`` (default: the hub) cannot be reached, or ``None`` when a TCP connection opens."""
    if offline_requested():
        return "offline mode is set (HF_HUB_OFFLINE)"
    parsed = urlparse(url or hub_endpoint())
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{host}:{port} unreachable ({err})"


def _fail(what: str, tried: str, reason: str, local_hint: str) -> EncoderSourceError:
    return EncoderSourceError(
        f"{what}: cannot load pretrained weights — tried {tried}, but {reason}. No weights were loaded "
        f"(never silently random). Pass local weights instead: {local_hint}. Files already in the "
        f"Hugging Face cache are used without network.")


def cached_hub_file(repo_id: str, filenames: Sequence[str], revision: str | None = None) -> str | None:
    """The local cache path of the first of ``filenames`` present for ``repo_id``, without network."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        path = try_to_load_from_cache(repo_id, name, revision=revision)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def fetch_hub_file(repo_id: str, filenames: Sequence[str], *, what: str, local_hint: str,
                   revision: str | None = None) -> str:
    """A local path of the first of ``filenames`` in hub repo ``repo_id``: from cache, else downloaded."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    tried = f"hub repo {repo_id!r} files {list(filenames)}"
    cached = cached_hub_file(repo_id, filenames, revision)
    if cached:
        return cached
    reason = unreachable_reason()
    if reason:
        raise _fail(what, tried, reason, local_hint)
    for name in filenames:
        try:
            return hf_hub_download(repo_id, name, revision=revision)
        except EntryNotFoundError:
            continue
        except Exception as err:  # network dropped mid-way, gated repo, ...
            raise _fail(what, tried, f"the download failed ({err})", local_hint) from err
    raise _fail(what, tried, "none of these files exists in the repo", local_hint)


def fetch_hub_snapshot(repo_id: str, *, what: str, local_hint: str) -> str:
    """A local folder with the config, tokenizer and safetensors weights of hub repo ``repo_id``."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.model", "*.safetensors", "*.tiktoken", "1_Pooling/*"]
    try:
        return snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except Exception:
        pass
    tried = f"hub repo {repo_id!r} (config, tokenizer, *.safetensors)"
    reason = unreachable_reason()
    if reason:
        raise _fail(what, tried, reason, local_hint)
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except Exception as err:
        raise _fail(what, tried, f"the download failed ({err})", local_hint) from err


def require_url(url: str, *, what: str, local_hint: str) -> None:
    """Raise at once when the host of a weights URL cannot be reached."""
    reason = unreachable_reason(url)
    if reason:
        raise _fail(what, f"downloading {url}", reason, local_hint)
