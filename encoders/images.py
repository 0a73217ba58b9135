"""Safe image decoding: every file becomes an 8-bit RGB image or an `ImageDecodeError` naming it and why.

Handled: missing and 0-byte files, data that is not an image, truncated or corrupt data (Pillow's
``LOAD_TRUNCATED_IMAGES`` stays off), CMYK, greyscale, palette and alpha images (alpha is composited
on white, the usual product-photo background), 16- and 32-bit images (scaled, not clipped to white),
EXIF rotation, and images past Pillow's decompression-bomb limit ``Image.MAX_IMAGE_PIXELS`` (the limit
is kept: both its warning and its error become a decode error, i.e. a counted skip upstream).
"""
from __future__ import annotations

import io
import os
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

JPEG_MAGIC = b"\xff\xd8\xff"


class ImageDecodeError(ValueError):
    """One image that cannot be used: ``path`` and a short ``reason``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class ImageHeader(NamedTuple):
    """What an image file says about itself before decoding."""

    format: str | None
    mode: str
    width: int
    height: int
    exif_rotated: bool


def read_bytes(path: str) -> bytes:
    """The file's bytes; a missing or empty file is an `ImageDecodeError`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageDecodeError(path, "file not found") from None
    except OSError as err:
        raise ImageDecodeError(path, f"cannot read file ({err.strerror or err})") from None
    if not data:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    return data


def _open(data: bytes, name: str) -> Image.Image:
    if not data:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(name, f"image too large (decompression-bomb guard): {err}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not a recognised image (corrupt data or not an image file)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(name, f"unreadable image header ({err})") from None


def read_header(data: bytes, name: str = "<bytes>") -> ImageHeader:
    """Format, mode, size and EXIF rotation from the header only (cheap; applies the bomb guard)."""
    with _open(data, name) as img:
        orientation = img.getexif().get(0x0112, 1) if img.format == "JPEG" else 1
        return ImageHeader(img.format, img.mode, img.width, img.height, orientation not in (None, 1))


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if mode in ("I", "F") and arr.max(initial=0) > 65535:
            top = float(arr.max())
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def decode_image(data: bytes, name: str = "<bytes>", draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Bytes -> an upright 8-bit RGB PIL image, or `ImageDecodeError` naming ``name``.

    ``draft_size`` lets JPEG decoding shrink by a power of two while staying at least that large
    (much faster for big photos; no effect on small ones).
    """
    img = _open(data, name)
    try:
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", draft_size)
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(name, f"image too large (decompression-bomb guard): {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        raise ImageDecodeError(name, f"corrupt or truncated image data ({err})") from None


def load_image(path: str | os.PathLike, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """A file -> an 8-bit RGB PIL image, or `ImageDecodeError` naming the file and the problem."""
    path = os.fspath(path)
    return decode_image(read_bytes(path), path, draft_size)


def gpu_decodable(data: bytes, name: str = "<bytes>") -> bool:
    """True for a complete baseline/progressive RGB or greyscale JPEG without EXIF rotation: what
    ``torchvision.io.decode_jpeg`` decodes like Pillow. Anything else takes the Pillow path. Raises
    `ImageDecodeError` for headers that are already bad (including the bomb guard)."""
    if not data.startswith(JPEG_MAGIC):
        return False
    header = read_header(data, name)
    if header.mode not in ("RGB", "L") or header.exif_rotated:
        return False
    return data.rstrip(b"\x00")[-2:] == b"\xff\xd9"  # ends with EOI: not truncated
