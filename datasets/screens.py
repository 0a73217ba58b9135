"""App-like phone screens drawn with PIL: product page, product grid/list, home feed, cart, checkout.

Every screen is a pure function of its content and a ``seed``. The seed picks a `Theme` (background
shade, light or dark mode, accent colour, font scale, shop name) and small layout jitter (photo scale
and position), so a model trained on these screens cannot memorise one fixed layout. The same content
and seed give the same pixels.

Scrolling screens (grid, list, home feed) are `ScrollPage` objects: the tall content is drawn once and
`ScrollPage.frame(offset)` crops a viewport under a fixed status bar, app header and tab bar, so a
scrolling animation costs one crop per frame. `ScrollPage.visible(offset)` says which items are on
screen (the ground truth of what a user saw).

Overlays imitate what real screen recordings carry: `add_notification` (a banner sliding over the
top), `add_cursor` (a pointer or a touch mark) and `jpeg_noise` (compression artefacts).

Sizes are ``(width, height)`` in pixels; every measure scales with the width (360 px is the reference).
Text uses Pillow's built-in font (``ImageFont.load_default(size=...)``), so nothing is downloaded.
"""
from __future__ import annotations

import io
import math
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Size = tuple[int, int]
Box = tuple[int, int, int, int]  # left, top, right, bottom (right/bottom exclusive)

SHOP_NAMES = ("SHOP", "Modeo", "atelier", "Wardrobe", "Kladd", "Trendy", "Luma", "Northwear")
_ACCENTS = ((220, 40, 60), (20, 20, 20), (30, 90, 200), (0, 128, 96), (240, 120, 20), (120, 60, 180))
_REFERENCE_WIDTH = 360
_PHOTO_ASPECT = 4 / 3  # height / width of the photo frame (fashion photos are portrait)


# --------------------------------------------------------------------------------------------- theme

@dataclass(frozen=True)
class Theme:
    """The look of one screen, drawn from a seed: colours, text scale and shop name."""

    background: tuple[int, int, int]
    surface: tuple[int, int, int]
    text: tuple[int, int, int]
    muted: tuple[int, int, int]
    accent: tuple[int, int, int]
    on_accent: tuple[int, int, int]
    divider: tuple[int, int, int]
    font_scale: float
    shop: str
    dark: bool


def theme_for(seed: int) -> Theme:
    """The `Theme` of a seed: ~15% dark mode, background shade, accent colour, font scale ±12%."""
    rng = np.random.default_rng([int(seed), 1])
    dark = bool(rng.random() < 0.15)
    tint = rng.integers(-6, 7, size=3)
    if dark:
        base = int(rng.integers(14, 34))
        background = tuple(int(np.clip(base + t, 0, 255)) for t in tint)
        surface = tuple(min(255, c + 18) for c in background)
        text, muted, divider = (236, 236, 236), (160, 160, 165), tuple(min(255, c + 35) for c in background)
    else:
        base = int(rng.integers(236, 256))
        background = tuple(int(np.clip(base + t, 0, 255)) for t in tint)
        surface = (255, 255, 255) if base < 250 else (246, 246, 246)
        text, muted, divider = (20, 20, 24), (110, 110, 118), tuple(max(0, c - 22) for c in background)
    accent = _ACCENTS[int(rng.integers(len(_ACCENTS)))]
    if dark and accent == (20, 20, 20):
        accent = (240, 240, 240)
    on_accent = (20, 20, 20) if sum(accent) > 500 else (255, 255, 255)
    return Theme(background=background, surface=surface, text=text, muted=muted, accent=accent,
                 on_accent=on_accent, divider=divider, font_scale=float(rng.uniform(0.88, 1.12)),
                 shop=SHOP_NAMES[int(rng.integers(len(SHOP_NAMES)))], dark=dark)


@lru_cache(maxsize=64)
def _font_px(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=px)


def _font(theme: Theme, size: Size, base_px: float) -> ImageFont.FreeTypeFont:
    return _font_px(max(8, round(base_px * theme.font_scale * size[0] / _REFERENCE_WIDTH)))


def _u(size: Size, px: float) -> int:
    """A reference-width measure scaled to this screen width."""
    return max(1, round(px * size[0] / _REFERENCE_WIDTH))


def _check_size(size: Size) -> Size:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size)):
        raise ValueError(f"size must be (width, height) in positive integer pixels, got {size!r}")
    width, height = int(size[0]), int(size[1])
    if width < 120 or height < 200:
        raise ValueError(f"size {size!r} is too small for an app screen (at least 120 x 200)")
    return width, height


# ---------------------------------------------------------------------------------------- text tools

def wrap_text(text: str, font: ImageFont.FreeTypeFont, max_width: int) -> list[str]:
    """Greedy word wrap to ``max_width`` pixels; a word longer than a line is cut by characters."""
    lines: list[str] = []
    for paragraph in display_text(text).splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            while font.getlength(word) > max_width:
                cut = max(1, next((k for k in range(len(word), 0, -1) if font.getlength(word[:k]) <= max_width), 1))
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cut])
                word = word[cut:]
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
            else:
                lines.append(line)
                line = word
        if line:
            lines.append(line)
    return lines


_FOLD = str.maketrans({"–": "-", "—": "-", "‒": "-", "’": "'", "‘": "'", "“": '"', "”": '"', "•": "*",
                       "™": "(TM)", "®": "(R)", "½": "1/2", "×": "x"})


def display_text(text: str) -> str:
    """``text`` as the built-in font can draw it: dashes, quotes and symbols folded to ASCII look-alikes,
    accents dropped (``é`` → ``e``); characters with no ASCII form are kept."""
    text = text.translate(_FOLD)
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _ellipsize(text: str, font: ImageFont.FreeTypeFont, max_width: int) -> str:
    text = display_text(text)
    if font.getlength(text) <= max_width:
        return text
    while text and font.getlength(text + "…") > max_width:
        text = text[:-1]
    return text.rstrip() + "…"


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return int(math.ceil((ascent + descent) * 1.2))


def _draw_lines(draw: ImageDraw.ImageDraw, lines: Sequence[str], xy: tuple[int, int], font, fill,
                bold: bool = False) -> int:
    """Draw lines top-down from ``xy``; returns the y below the last line."""
    x, y = xy
    step = _line_height(font)
    for line in lines:
        draw.text((x, y), line, font=font, fill=fill, stroke_width=1 if bold else 0, stroke_fill=fill)
        y += step
    return y


def format_price(price: float | None) -> str:
    """A price as a shop shows it (``"$24.99"``); ``None`` gives an empty string."""
    if price is None:
        return ""
    if not math.isfinite(price) or price < 0:
        raise ValueError(f"price must be a finite non-negative number or None, got {price!r}")
    return f"${price:,.2f}"


# ------------------------------------------------------------------------------------------ pictures

def fit_photo(photo: Image.Image | None, box_size: Size, theme: Theme) -> tuple[Image.Image, Box]:
    """The photo scaled to fit inside ``box_size`` (aspect kept) and where it sits inside the box.

    ``None`` gives a placeholder filling the box (a grey card with a picture icon and "No image").
    """
    bw, bh = box_size
    if photo is None:
        return _placeholder(box_size, theme), (0, 0, bw, bh)
    photo = photo.convert("RGB")
    scale = min(bw / photo.width, bh / photo.height)
    w, h = max(1, round(photo.width * scale)), max(1, round(photo.height * scale))
    if (w, h) != photo.size:
        photo = photo.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    left, top = (bw - w) // 2, (bh - h) // 2
    return photo, (left, top, left + w, top + h)


def _placeholder(box_size: Size, theme: Theme) -> Image.Image:
    bw, bh = box_size
    shade = (58, 58, 62) if theme.dark else (222, 222, 226)
    img = Image.new("RGB", (bw, bh), shade)
    d = ImageDraw.Draw(img)
    s = min(bw, bh)
    cx, cy, r = bw // 2, bh // 2 - s // 12, s // 6
    line = theme.muted
    d.rounded_rectangle((cx - r, cy - r * 3 // 4, cx + r, cy + r * 3 // 4), radius=max(1, r // 6),
                        outline=line, width=max(1, s // 80))
    d.polygon([(cx - r * 3 // 4, cy + r // 2), (cx - r // 6, cy - r // 4), (cx + r // 4, cy + r // 3),
               (cx + r // 2, cy + r // 8), (cx + r * 3 // 4, cy + r // 2)], fill=line)
    d.ellipse((cx + r // 4, cy - r // 2, cx + r // 2, cy - r // 4), fill=line)
    font = _font_px(max(8, s // 12))
    label = "No image"
    d.text((cx - font.getlength(label) / 2, cy + r), label, font=font, fill=line)
    return img


# ------------------------------------------------------------------------------------------- chrome

def status_bar_height(size: Size) -> int:
    """Height of the phone status bar (clock, signal, battery)."""
    return _u(size, 24)


def header_height(size: Size) -> int:
    """Height of the app header under the status bar."""
    return _u(size, 48)


def tab_bar_height(size: Size) -> int:
    """Height of the bottom tab bar of browsing screens."""
    return _u(size, 54)


def _status_bar(draw: ImageDraw.ImageDraw, size: Size, theme: Theme, rng: np.random.Generator) -> None:
    w, h = size[0], status_bar_height(size)
    draw.rectangle((0, 0, w, h), fill=theme.background)
    font = _font(theme, size, 12)
    clock = f"{int(rng.integers(7, 23))}:{int(rng.integers(0, 60)):02d}"
    draw.text((_u(size, 14), (h - _line_height(font) / 1.2) / 2), clock, font=font, fill=theme.text)
    # battery
    bx1, by0 = w - _u(size, 12), _u(size, 7)
    bx0, by1 = bx1 - _u(size, 22), h - _u(size, 7)
    draw.rectangle((bx0, by0, bx1, by1), outline=theme.text, width=1)
    level = float(rng.uniform(0.2, 1.0))
    draw.rectangle((bx0 + 2, by0 + 2, bx0 + 2 + int((bx1 - bx0 - 4) * level), by1 - 2), fill=theme.text)
    # signal bars
    x = bx0 - _u(size, 26)
    for k in range(4):
        bar_h = _u(size, 3 + 2 * k)
        draw.rectangle((x + k * _u(size, 5), by1 - bar_h, x + k * _u(size, 5) + _u(size, 3), by1), fill=theme.text)


def _header(draw: ImageDraw.ImageDraw, size: Size, theme: Theme, title: str, back: bool, cart_count: int) -> None:
    w, top, h = size[0], status_bar_height(size), header_height(size)
    draw.rectangle((0, top, w, top + h), fill=theme.background)
    draw.line((0, top + h - 1, w, top + h - 1), fill=theme.divider)
    mid, lw = top + h // 2, max(1, _u(size, 2))
    if back:
        x = _u(size, 16)
        draw.line([(x + _u(size, 9), mid - _u(size, 9)), (x, mid), (x + _u(size, 9), mid + _u(size, 9))],
                  fill=theme.text, width=lw)
    else:  # menu
        for k in (-1, 0, 1):
            y = mid + k * _u(size, 6)
            draw.line((_u(size, 14), y, _u(size, 32), y), fill=theme.text, width=lw)
    font = _font(theme, size, 18)
    title = _ellipsize(title, font, w - _u(size, 120))
    draw.text(((w - font.getlength(title)) / 2, mid - _line_height(font) / 2.4), title, font=font,
              fill=theme.text, stroke_width=1, stroke_fill=theme.text)
    # bag icon with a badge
    bx, by = w - _u(size, 36), mid - _u(size, 8)
    draw.rectangle((bx, by, bx + _u(size, 18), by + _u(size, 16)), outline=theme.text, width=lw)
    draw.arc((bx + _u(size, 4), by - _u(size, 7), bx + _u(size, 14), by + _u(size, 5)), 180, 360,
             fill=theme.text, width=lw)
    if cart_count > 0:
        r = _u(size, 8)
        cx, cy = bx + _u(size, 19), by - _u(size, 2)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=theme.accent)
        badge = _font(theme, size, 10)
        label = str(min(cart_count, 99))
        draw.text((cx - badge.getlength(label) / 2, cy - _line_height(badge) / 2.4), label, font=badge,
                  fill=theme.on_accent)


def _tab_bar(draw: ImageDraw.ImageDraw, size: Size, theme: Theme, active: int) -> None:
    w, h = size
    th = tab_bar_height(size)
    draw.rectangle((0, h - th, w, h), fill=theme.surface)
    draw.line((0, h - th, w, h - th), fill=theme.divider)
    font = _font(theme, size, 10)
    labels = ("Home", "Search", "Bag", "Profile")
    for k, label in enumerate(labels):
        cx = int((k + 0.5) * w / len(labels))
        colour = theme.accent if k == active else theme.muted
        r = _u(size, 8)
        cy = h - th + _u(size, 18)
        if k == 0:
            draw.polygon([(cx - r, cy + r // 2), (cx, cy - r), (cx + r, cy + r // 2)], outline=colour)
            draw.rectangle((cx - r * 2 // 3, cy + r // 2, cx + r * 2 // 3, cy + r), outline=colour)
        elif k == 1:
            draw.ellipse((cx - r, cy - r, cx + r // 2, cy + r // 2), outline=colour, width=2)
            draw.line((cx + r // 3, cy + r // 3, cx + r, cy + r), fill=colour, width=2)
        elif k == 2:
            draw.rectangle((cx - r, cy - r // 2, cx + r, cy + r), outline=colour, width=2)
        else:
            draw.ellipse((cx - r // 2, cy - r, cx + r // 2, cy), outline=colour, width=2)
            draw.arc((cx - r, cy + r // 4, cx + r, cy + 2 * r), 180, 360, fill=colour, width=2)
        draw.text((cx - font.getlength(label) / 2, cy + r + _u(size, 4)), label, font=font, fill=colour)


def _button(draw: ImageDraw.ImageDraw, box: Box, label: str, theme: Theme, size: Size, radius_px: float) -> None:
    draw.rounded_rectangle(box, radius=_u(size, radius_px), fill=theme.accent)
    font = _font(theme, size, 16)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    draw.text((cx - font.getlength(label) / 2, cy - _line_height(font) / 2.4), label, font=font,
              fill=theme.on_accent, stroke_width=1, stroke_fill=theme.on_accent)


def _chrome_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 2])


def _bottom_button_box(size: Size, margin_px: float) -> Box:
    m = _u(size, margin_px)
    return (m, size[1] - m - _u(size, 50), size[0] - m, size[1] - m)


_TABS = ("home", "search", "bag", "profile")
ACTIONS = ("back", "add_to_cart", "checkout", "place_order", "continue_shopping", *(f"tab:{t}" for t in _TABS))


def action_box(action: str, size: Size = (360, 640), seed: int = 0) -> Box:
    """Screen box of a tappable control, for tap positions: ``"back"`` (header arrow), ``"add_to_cart"``
    (product page), ``"checkout"`` (cart), ``"place_order"`` (checkout), ``"continue_shopping"`` (order
    confirmation) or ``"tab:<home|search|bag|profile>"`` (tab bar of browsing screens)."""
    size = _check_size(size)
    w, h = size
    if action == "back":
        mid = status_bar_height(size) + header_height(size) // 2
        return (_u(size, 8), mid - _u(size, 16), _u(size, 40), mid + _u(size, 16))
    if action == "add_to_cart":
        return product_page_layout(size, seed).button
    if action == "checkout":
        return _bottom_button_box(size, 12)
    if action in ("place_order", "continue_shopping"):
        return _bottom_button_box(size, 14)
    if action.startswith("tab:") and action[4:] in _TABS:
        k = _TABS.index(action[4:])
        return (round(k * w / len(_TABS)), h - tab_bar_height(size), round((k + 1) * w / len(_TABS)), h)
    raise ValueError(f"unknown action {action!r}; known: {list(ACTIONS)}")


# -------------------------------------------------------------------------------------- product page

@dataclass(frozen=True)
class ProductLayout:
    """Where a product page puts things (pixels, ``(left, top, right, bottom)``): the photo frame, the
    photo itself inside it (``photo`` depends on the photo's aspect), text column and button."""

    frame: Box
    photo: Box
    text: Box
    button: Box


def product_page_layout(size: Size = (360, 640), seed: int = 0,
                        photo_size: Size | None = None) -> ProductLayout:
    """The layout `render_product_page` uses for ``size`` and ``seed`` (``photo_size=None``: placeholder).

    Photo frame width is 74–96% of the screen, shifted up to ±5% sideways and 0–20 px down, capped at
    52% of the screen height; the photo is fitted inside the frame with its aspect kept.
    """
    size = _check_size(size)
    w, h = size
    rng = np.random.default_rng([int(seed), 3])
    scale = float(rng.uniform(0.74, 0.96))
    frame_w = round(w * scale)
    frame_h = min(round(frame_w * _PHOTO_ASPECT), round(h * 0.52))
    slack = w - frame_w
    left = int(np.clip(slack // 2 + round(rng.uniform(-0.05, 0.05) * w), 0, slack))
    top = status_bar_height(size) + header_height(size) + _u(size, float(rng.uniform(0, 20)))
    frame = (left, top, left + frame_w, top + frame_h)
    if photo_size is None:
        photo = frame
    else:
        s = min(frame_w / photo_size[0], frame_h / photo_size[1])
        pw, ph = max(1, round(photo_size[0] * s)), max(1, round(photo_size[1] * s))
        px, py = left + (frame_w - pw) // 2, top + (frame_h - ph) // 2
        photo = (px, py, px + pw, py + ph)
    margin = _u(size, float(rng.uniform(14, 22)))
    button_h = _u(size, 48)
    button = (margin, h - _u(size, 16) - button_h, w - margin, h - _u(size, 16))
    text = (margin, frame[3] + _u(size, 12), w - margin, button[1] - _u(size, 10))
    return ProductLayout(frame=frame, photo=photo, text=text, button=button)


def render_product_page(photo: Image.Image | None, title: str, price: float | None, description: str, *,
                        size: tuple[int, int] = (360, 640), seed: int = 0,
                        style_seed: int | None = None) -> Image.Image:
    """A shop app's product page: status bar, header, the product photo large, name, price, wrapped
    description and an "Add to cart" button. ``photo=None`` draws a placeholder; ``price=None`` leaves
    the price out. The seed varies theme, photo position/scale and font size (`product_page_layout`
    gives the boxes) and small details (rating, gallery dots, bag count). ``style_seed``, when given,
    picks the look, layout and status-bar clock instead, so one app's pages share a look while details
    vary by ``seed``. Returns an RGB image of ``size`` (width, height).
    """
    size = _check_size(size)
    look = seed if style_seed is None else style_seed
    theme = theme_for(look)
    layout = product_page_layout(size, look, None if photo is None else photo.size)
    img = Image.new("RGB", size, theme.background)
    draw = ImageDraw.Draw(img)
    _status_bar(draw, size, theme, _chrome_rng(look))
    rng = np.random.default_rng([int(seed), 12])
    _header(draw, size, theme, theme.shop, back=True, cart_count=int(rng.integers(0, 4)))

    frame_w, frame_h = layout.frame[2] - layout.frame[0], layout.frame[3] - layout.frame[1]
    draw.rectangle(layout.frame, fill=theme.surface)
    fitted, inner = fit_photo(photo, (frame_w, frame_h), theme)
    img.paste(fitted, (layout.frame[0] + inner[0], layout.frame[1] + inner[1]))
    # pager dots under the photo, as gallery pages show
    n_dots = int(rng.integers(1, 5))
    cy = layout.frame[3] + _u(size, 6)
    for k in range(n_dots):
        cx = (layout.frame[0] + layout.frame[2]) // 2 + (k - (n_dots - 1) / 2) * _u(size, 10)
        r = _u(size, 2)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=theme.text if k == 0 else theme.muted)

    x0, y, x1, y_end = layout.text
    width = x1 - x0
    title_font, body_font = _font(theme, size, 18), _font(theme, size, 13)
    title_lines = wrap_text(title.strip() or "Untitled item", title_font, width)[:2]
    y = _draw_lines(draw, title_lines, (x0, y), title_font, theme.text, bold=True)
    price_text = format_price(price)
    if price_text:
        price_font = _font(theme, size, 17)
        y = _draw_lines(draw, [price_text], (x0, y + _u(size, 2)), price_font, theme.accent, bold=True)
    if rng.random() < 0.6:  # a rating line some shops show
        y = _stars(draw, (x0, y + _u(size, 2)), int(rng.integers(3, 6)), int(rng.integers(2, 900)), body_font,
                   theme, size)
    y += _u(size, 4)
    lines = wrap_text(description.strip(), body_font, width)
    room = max(0, (y_end - y) // _line_height(body_font))
    if len(lines) > room:
        lines = lines[:room]
        if lines:
            lines[-1] = _ellipsize(lines[-1] + " …", body_font, width)
    _draw_lines(draw, lines, (x0, y), body_font, theme.muted)
    radius = 10 + 14 * float(np.random.default_rng([int(look), 10]).random())
    _button(draw, layout.button, "Add to cart", theme, size, radius)
    return img


def _stars(draw: ImageDraw.ImageDraw, xy: tuple[int, int], stars: int, reviews: int, font, theme: Theme,
           size: Size) -> int:
    """Five drawn stars (``stars`` filled) and a review count; returns the y below them."""
    x, y = xy
    r = _line_height(font) * 0.38
    for k in range(5):
        cx, cy = x + r + k * 2.3 * r, y + r
        pts = [(cx + (r if j % 2 == 0 else r * 0.45) * math.sin(j * math.pi / 5),
                cy - (r if j % 2 == 0 else r * 0.45) * math.cos(j * math.pi / 5)) for j in range(10)]
        if k < stars:
            draw.polygon(pts, fill=theme.text)
        else:
            draw.polygon(pts, outline=theme.muted)
    draw.text((x + 5 * 2.3 * r + _u(size, 4), y - r * 0.25), f"({reviews})", font=font, fill=theme.muted)
    return y + _line_height(font)


# -------------------------------------------------------------------------------------- scroll pages

@dataclass(frozen=True)
class Card:
    """One item tile of a scroll page: index into the page's items and its box in content pixels."""

    index: int
    box: Box


@dataclass(frozen=True)
class ScrollLayout:
    """Geometry of a scrolling screen, known without drawing it: the cards in content pixels, the content
    height and the viewport (screen rows between the header and the tab bar).

    ``offset`` below is how far the content is scrolled down, clipped to ``[0, max_offset]``.
    """

    size: Size
    cards: tuple[Card, ...]
    content_height: int
    columns: int

    @property
    def top(self) -> int:
        """Screen row where the viewport starts (under status bar and header)."""
        return status_bar_height(self.size) + header_height(self.size)

    @property
    def viewport_height(self) -> int:
        """Rows of content visible at once."""
        return self.size[1] - self.top - tab_bar_height(self.size)

    @property
    def max_offset(self) -> int:
        """The largest scroll offset (content height minus viewport, at least 0)."""
        return max(0, self.content_height - self.viewport_height)

    def clip(self, offset: float) -> int:
        """``offset`` rounded and clipped to the scrollable range."""
        return int(np.clip(round(offset), 0, self.max_offset))

    def visible(self, offset: float, min_fraction: float = 0.0) -> list[tuple[int, float]]:
        """``(item index, visible share of its height)`` of cards showing more than ``min_fraction``."""
        offset = self.clip(offset)
        lo, hi = offset, offset + self.viewport_height
        out = []
        for card in self.cards:
            t, b = card.box[1], card.box[3]
            share = max(0, min(b, hi) - max(t, lo)) / max(1, b - t)
            if share > min_fraction:
                out.append((card.index, round(share, 4)))
        return out

    def screen_box(self, index: int, offset: float) -> Box | None:
        """Where card ``index`` is on screen at ``offset`` (clipped to the viewport); None when hidden."""
        offset = self.clip(offset)
        for card in self.cards:
            if card.index == index:
                l, t, r, b = card.box
                t2, b2 = max(t - offset, 0), min(b - offset, self.viewport_height)
                return None if b2 <= t2 else (l, t2 + self.top, r, b2 + self.top)
        return None

    def offset_showing(self, index: int, position: float) -> int:
        """An offset at which card ``index`` is fully on screen, ``position`` in [0, 1] choosing where
        (0: as low in the viewport as possible, 1: as high), within the scrollable range."""
        card = next((c for c in self.cards if c.index == index), None)
        if card is None:
            raise IndexError(f"no card with index {index} on this page ({len(self.cards)} cards)")
        low = max(0, card.box[3] - self.viewport_height)
        high = max(low, card.box[1])
        return self.clip(low + position * (high - low))


def grid_layout(n_items: int, *, size: Size = (360, 640), seed: int = 0, columns: int | None = None) -> ScrollLayout:
    """Layout of `grid_page`: a heading, then cards row by row (2–3 columns) or list rows (1 column);
    ``columns=None`` lets the seed choose (mostly 2)."""
    size = _check_size(size)
    rng = np.random.default_rng([int(seed), 4])
    choice = int(rng.choice([1, 2, 2, 2, 3]))
    gap = _u(size, float(rng.uniform(6, 12)))
    columns = choice if columns is None else columns
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    w = size[0]
    head_h = _grid_head_height(size, seed)
    if columns == 1:
        row_h = _u(size, 128)
        boxes = [(gap, head_h + i * (row_h + gap), w - gap, head_h + i * (row_h + gap) + row_h) for i in range(n_items)]
    else:
        card_w = (w - gap * (columns + 1)) // columns
        card_h = round(card_w * _PHOTO_ASPECT) + _u(size, 64)
        boxes = []
        for i in range(n_items):
            x0, y0 = gap + (i % columns) * (card_w + gap), head_h + (i // columns) * (card_h + gap)
            boxes.append((x0, y0, x0 + card_w, y0 + card_h))
    height = max((b[3] for b in boxes), default=head_h) + gap
    return ScrollLayout(size, tuple(Card(i, b) for i, b in enumerate(boxes)), height, columns)


def _grid_head_height(size: Size, seed: int) -> int:
    return _line_height(_font(theme_for(seed), size, 20)) + _u(size, 30)


def home_layout(n_items: int, *, size: Size = (360, 640), seed: int = 0) -> ScrollLayout:
    """Layout of `home_page`: item 0 as a hero banner, items 1–3 as a "Trending now" strip, the rest as a
    two-column "For you" grid."""
    size = _check_size(size)
    rng = np.random.default_rng([int(seed), 5])
    head = _line_height(_font(theme_for(seed), size, 17)) + _u(size, 4)
    w, gap = size[0], _u(size, 10)
    boxes: list[Box] = []
    y = gap
    if n_items:
        hero_h = _u(size, float(rng.uniform(200, 260)))
        boxes.append((gap, y, w - gap, y + hero_h))
        y += hero_h + gap
    strip = range(1, min(4, n_items))
    if len(strip):
        y += head
        tw = (w - gap * 4) // 3
        th = round(tw * _PHOTO_ASPECT) + _u(size, 64)
        boxes += [(gap + k * (tw + gap), y, gap + k * (tw + gap) + tw, y + th) for k in range(len(strip))]
        y += th + gap
    rest = range(4, n_items)
    if len(rest):
        y += head
        cw = (w - gap * 3) // 2
        ch = round(cw * _PHOTO_ASPECT) + _u(size, 64)
        for k in range(len(rest)):
            x0, y0 = gap + (k % 2) * (cw + gap), y + (k // 2) * (ch + gap)
            boxes.append((x0, y0, x0 + cw, y0 + ch))
        y += ((len(rest) + 1) // 2) * (ch + gap)
    return ScrollLayout(size, tuple(Card(i, b) for i, b in enumerate(boxes)), max(y, 1), 2)


class ScrollPage:
    """A scrolling screen drawn once: tall ``content`` behind fixed chrome (status bar, header, tab bar).

    ``frame(offset)`` is the screen scrolled ``offset`` pixels down; ``layout`` answers which items are
    where (see `ScrollLayout`).
    """

    def __init__(self, content: Image.Image, layout: ScrollLayout, theme: Theme, seed: int, title: str,
                 tab: int, cart_count: int = 0) -> None:
        self.content, self.layout, self.theme = content, layout, theme
        size = layout.size
        self.chrome = Image.new("RGB", size, theme.background)
        draw = ImageDraw.Draw(self.chrome)
        _status_bar(draw, size, theme, _chrome_rng(seed))
        _header(draw, size, theme, title, back=False, cart_count=cart_count)
        _tab_bar(draw, size, theme, tab)

    def frame(self, offset: float) -> Image.Image:
        """The screen scrolled ``offset`` pixels down (clipped to the scrollable range)."""
        lay = self.layout
        offset = lay.clip(offset)
        img = self.chrome.copy()
        img.paste(self.content.crop((0, offset, lay.size[0], offset + lay.viewport_height)), (0, lay.top))
        return img


def _check_items(photos: Sequence, titles: Sequence, prices: Sequence) -> None:
    if not (len(photos) == len(titles) == len(prices)):
        raise ValueError(f"photos, titles and prices must have equal lengths, got "
                         f"{len(photos)}, {len(titles)}, {len(prices)}")


def _item_card(content: Image.Image, box: Box, photo: Image.Image | None, title: str, price: float | None,
               theme: Theme, size: Size, rng: np.random.Generator) -> None:
    draw = ImageDraw.Draw(content)
    l, t, r, b = box
    photo_h = round((r - l) * _PHOTO_ASPECT)
    draw.rounded_rectangle(box, radius=_u(size, 8), fill=theme.surface)
    fitted, inner = fit_photo(photo, (r - l, photo_h), theme)
    content.paste(fitted, (l + inner[0], t + inner[1]))
    if rng.random() < 0.5:  # a wishlist heart in the photo corner
        hx, hy, hr = r - _u(size, 18), t + _u(size, 14), _u(size, 6)
        draw.ellipse((hx - hr, hy - hr, hx + hr, hy + hr), outline=theme.muted, width=max(1, _u(size, 1.5)))
    font, pfont = _font(theme, size, 12), _font(theme, size, 13)
    lines = wrap_text(title.strip() or "Untitled item", font, r - l - _u(size, 12))[:2]
    y = _draw_lines(draw, lines, (l + _u(size, 6), t + photo_h + _u(size, 6)), font, theme.text)
    _draw_lines(draw, [format_price(price)], (l + _u(size, 6), y + _u(size, 2)), pfont, theme.text, bold=True)


def _list_row(content: Image.Image, box: Box, photo: Image.Image | None, title: str, price: float | None,
              theme: Theme, size: Size) -> None:
    draw = ImageDraw.Draw(content)
    l, t, r, b = box
    draw.rounded_rectangle(box, radius=_u(size, 8), fill=theme.surface)
    thumb_w = round((b - t) / _PHOTO_ASPECT)
    fitted, inner = fit_photo(photo, (thumb_w, b - t), theme)
    content.paste(fitted, (l + inner[0], t + inner[1]))
    x = l + thumb_w + _u(size, 12)
    font = _font(theme, size, 14)
    lines = wrap_text(title.strip() or "Untitled item", font, r - x - _u(size, 8))[:3]
    y = _draw_lines(draw, lines, (x, t + _u(size, 10)), font, theme.text)
    _draw_lines(draw, [format_price(price)], (x, y + _u(size, 4)), font, theme.accent, bold=True)


def grid_page(photos: Sequence[Image.Image | None], titles: Sequence[str], prices: Sequence[float | None], *,
              heading: str = "New arrivals", size: Size = (360, 640), seed: int = 0,
              columns: int | None = None) -> ScrollPage:
    """A product grid (2–3 columns) or list (1 column) as a `ScrollPage` (layout: `grid_layout`).
    Items appear in the given order, row by row."""
    _check_items(photos, titles, prices)
    layout = grid_layout(len(photos), size=size, seed=seed, columns=columns)
    size, theme = layout.size, theme_for(seed)
    rng = np.random.default_rng([int(seed), 8])
    w = size[0]
    content = Image.new("RGB", (w, layout.content_height), theme.background)
    draw = ImageDraw.Draw(content)
    head_font, sort_font = _font(theme, size, 20), _font(theme, size, 11)
    margin = _u(size, 12)
    draw.text((margin, _u(size, 10)), _ellipsize(heading, head_font, w * 0.6), font=head_font, fill=theme.text,
              stroke_width=1, stroke_fill=theme.text)
    label = f"{len(photos)} items · Sort"
    draw.text((w - margin - sort_font.getlength(label), _u(size, 16)), label, font=sort_font, fill=theme.muted)
    for card in layout.cards:
        i = card.index
        if layout.columns == 1:
            _list_row(content, card.box, photos[i], titles[i], prices[i], theme, size)
        else:
            _item_card(content, card.box, photos[i], titles[i], prices[i], theme, size, rng)
    return ScrollPage(content, layout, theme, seed, theme.shop, tab=1)


def home_page(photos: Sequence[Image.Image | None], titles: Sequence[str], prices: Sequence[float | None], *,
              size: Size = (360, 640), seed: int = 0) -> ScrollPage:
    """A shop's home feed as a `ScrollPage` (layout: `home_layout`)."""
    _check_items(photos, titles, prices)
    layout = home_layout(len(photos), size=size, seed=seed)
    size, theme = layout.size, theme_for(seed)
    rng = np.random.default_rng([int(seed), 9])
    w, gap = size[0], _u(size, 10)
    content = Image.new("RGB", (w, layout.content_height), theme.background)
    draw = ImageDraw.Draw(content)
    head_font = _font(theme, size, 17)
    for k, heading in ((1, "Trending now"), (4, "For you")):
        if k < len(layout.cards):
            draw.text((gap, layout.cards[k].box[1] - _line_height(head_font) - _u(size, 2)), heading,
                      font=head_font, fill=theme.text, stroke_width=1, stroke_fill=theme.text)
    for card in layout.cards:
        i = card.index
        if i == 0:
            _hero(content, card.box, photos[i], titles[i], theme, size, rng)
        else:
            _item_card(content, card.box, photos[i], titles[i], prices[i], theme, size, rng)
    return ScrollPage(content, layout, theme, seed, theme.shop, tab=0)


def _hero(content: Image.Image, box: Box, photo: Image.Image | None, title: str, theme: Theme, size: Size,
          rng: np.random.Generator) -> None:
    draw = ImageDraw.Draw(content)
    l, t, r, b = box
    tone = tuple(int(c) for c in rng.integers(150, 235, size=3))
    draw.rounded_rectangle(box, radius=_u(size, 12), fill=tone)
    ph = b - t
    fitted, inner = fit_photo(photo, (round(ph / _PHOTO_ASPECT), ph), theme)
    px = r - fitted.width - _u(size, 8)
    content.paste(fitted, (px, t + inner[1]))
    big, small = _font(theme, size, 24), _font(theme, size, 13)
    headline = str(rng.choice(["New season", "Summer sale", "Just in", "Up to 50% off", "Weekend edit"]))
    lines = wrap_text(headline, big, px - l - _u(size, 24))
    y = _draw_lines(draw, lines, (l + _u(size, 14), t + _u(size, 24)), big, (20, 20, 20), bold=True)
    lines = wrap_text(title, small, px - l - _u(size, 24))[:2]
    y = _draw_lines(draw, lines, (l + _u(size, 14), y + _u(size, 6)), small, (40, 40, 40))
    bw = small.getlength("Shop now") + _u(size, 24)
    bbox = (l + _u(size, 14), y + _u(size, 10), l + _u(size, 14) + int(bw), y + _u(size, 38))
    draw.rounded_rectangle(bbox, radius=_u(size, 14), fill=(20, 20, 20))
    draw.text((bbox[0] + _u(size, 12), bbox[1] + _u(size, 6)), "Shop now", font=small, fill=(255, 255, 255))


# -------------------------------------------------------------------------------- cart and checkout

def render_cart(photos: Sequence[Image.Image | None], titles: Sequence[str], prices: Sequence[float | None], *,
                quantities: Sequence[int] | None = None, size: Size = (360, 640), seed: int = 0) -> Image.Image:
    """The shopping bag: one row per item (thumbnail, name, size and quantity, price), the subtotal and a
    "Checkout" button. Rows that do not fit are summarised as "+ n more"."""
    size = _check_size(size)
    _check_items(photos, titles, prices)
    quantities = [1] * len(photos) if quantities is None else list(quantities)
    if len(quantities) != len(photos) or any(q < 1 for q in quantities):
        raise ValueError(f"quantities must be one positive count per item, got {quantities!r}")
    theme = theme_for(seed)
    rng = np.random.default_rng([int(seed), 6])
    img = Image.new("RGB", size, theme.background)
    draw = ImageDraw.Draw(img)
    _status_bar(draw, size, theme, _chrome_rng(seed))
    _header(draw, size, theme, "Shopping bag", back=True, cart_count=sum(quantities))
    w, h = size
    gap = _u(size, 12)
    bottom_h = _u(size, 130)
    row_h = _u(size, float(rng.uniform(100, 122)))
    y = status_bar_height(size) + header_height(size) + gap
    font, small = _font(theme, size, 14), _font(theme, size, 12)
    fit_rows = max(0, (h - bottom_h - y) // (row_h + gap))
    shown = len(photos) if len(photos) <= fit_rows else max(0, fit_rows - 1)
    for i in range(shown):
        box = (gap, y, w - gap, y + row_h)
        draw.rounded_rectangle(box, radius=_u(size, 8), fill=theme.surface)
        tw = round(row_h / _PHOTO_ASPECT)
        fitted, inner = fit_photo(photos[i], (tw, row_h), theme)
        img.paste(fitted, (gap + inner[0], y + inner[1]))
        x = gap + tw + _u(size, 10)
        lines = wrap_text(titles[i].strip() or "Untitled item", font, w - gap - x - _u(size, 8))[:2]
        ty = _draw_lines(draw, lines, (x, y + _u(size, 8)), font, theme.text)
        variant = f"Size {rng.choice(['XS', 'S', 'M', 'L', 'XL'])} · Qty {quantities[i]}"
        ty = _draw_lines(draw, [variant], (x, ty + _u(size, 2)), small, theme.muted)
        _draw_lines(draw, [format_price(None if prices[i] is None else prices[i] * quantities[i])],
                    (x, ty + _u(size, 4)), font, theme.text, bold=True)
        y += row_h + gap
    if shown < len(photos):
        _draw_lines(draw, [f"+ {len(photos) - shown} more item(s)"], (gap, y), font, theme.muted)
    total = sum((p or 0.0) * q for p, q in zip(prices, quantities))
    top = h - bottom_h
    draw.rectangle((0, top, w, h), fill=theme.surface)
    draw.line((0, top, w, top), fill=theme.divider)
    _draw_lines(draw, ["Subtotal"], (gap, top + gap), font, theme.muted)
    amount = format_price(total)
    draw.text((w - gap - font.getlength(amount), top + gap), amount, font=font, fill=theme.text, stroke_width=1,
              stroke_fill=theme.text)
    _button(draw, action_box("checkout", size), "Checkout", theme, size, 12)
    return img


def render_checkout(n_items: int, total: float, *, size: Size = (360, 640), seed: int = 0,
                    placed: bool = False) -> Image.Image:
    """The checkout form (delivery address, delivery option, payment card, order summary and a
    "Place order" button); ``placed=True`` draws the order confirmation instead."""
    size = _check_size(size)
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    total_text = format_price(total)
    theme = theme_for(seed)
    rng = np.random.default_rng([int(seed), 7])
    img = Image.new("RGB", size, theme.background)
    draw = ImageDraw.Draw(img)
    _status_bar(draw, size, theme, _chrome_rng(seed))
    _header(draw, size, theme, "Order placed" if placed else "Checkout", back=not placed, cart_count=0)
    w, h = size
    gap = _u(size, 14)
    font, small, big = _font(theme, size, 14), _font(theme, size, 12), _font(theme, size, 22)
    y = status_bar_height(size) + header_height(size) + gap
    if placed:
        cx, cy, r = w // 2, y + _u(size, 90), _u(size, 44)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=theme.accent)
        draw.line([(cx - r // 2, cy), (cx - r // 8, cy + r // 3), (cx + r // 2, cy - r // 3)],
                  fill=theme.on_accent, width=_u(size, 5))
        y = cy + r + gap * 2
        for text, f, c in (("Thank you!", big, theme.text),
                           (f"Order #{int(rng.integers(10**6, 10**7))}", font, theme.muted),
                           (f"{n_items} item(s) · {total_text}", font, theme.text)):
            draw.text(((w - f.getlength(text)) / 2, y), text, font=f, fill=c)
            y += _line_height(f) + _u(size, 6)
        _button(draw, action_box("continue_shopping", size), "Continue shopping", theme, size, 12)
        return img
    name = f"{rng.choice(['A.', 'J.', 'M.', 'S.', 'K.'])} {rng.choice(['Berg', 'Lind', 'Novak', 'Smith', 'Rossi'])}"
    street = f"{int(rng.integers(1, 200))} {rng.choice(['Main St', 'Oak Ave', 'Harbour Rd', 'Elm Way'])}"
    city = rng.choice(["Stockholm", "Berlin", "Leeds", "Lyon"])
    sections = [
        ("Delivery address", [name, street, f"{int(rng.integers(10000, 99999))} {city}"]),
        ("Delivery", ["(x) Standard, 3-5 days: free", "( ) Express, 1 day: $9.99"]),
        ("Payment", [f"{rng.choice(['Visa', 'Mastercard', 'Amex'])} **** {int(rng.integers(1000, 9999))}"]),
    ]
    for heading, lines in sections:
        y = _draw_lines(draw, [heading], (gap, y), font, theme.text, bold=True)
        box_h = len(lines) * _line_height(small) + _u(size, 16)
        draw.rounded_rectangle((gap, y, w - gap, y + box_h), radius=_u(size, 8), fill=theme.surface)
        _draw_lines(draw, lines, (gap + _u(size, 10), y + _u(size, 8)), small, theme.muted)
        y += box_h + gap
    y = _draw_lines(draw, ["Order summary"], (gap, y), font, theme.text, bold=True)
    for label, value in ((f"{n_items} item(s)", total_text), ("Shipping", "Free"), ("Total", total_text)):
        draw.text((gap, y), label, font=small, fill=theme.muted)
        draw.text((w - gap - small.getlength(value), y), value, font=small, fill=theme.text)
        y += _line_height(small)
    _button(draw, action_box("place_order", size), "Place order", theme, size, 12)
    return img


# --------------------------------------------------------------------------------------------- overlays

def add_notification(img: Image.Image, text: str, rng: np.random.Generator, *, progress: float = 1.0) -> Image.Image:
    """A copy of ``img`` with a notification banner (app icon, app name, ``text``) over the top.

    ``progress`` in [0, 1] is how far the banner has slid in (1: fully shown), for animations. Colours
    and app name come from ``rng``.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    out = img.convert("RGB").copy()
    size = out.size
    w = size[0]
    dark = bool(rng.random() < 0.5)
    if dark:
        bg, fg, muted = (44, 44, 48), (240, 240, 240), (170, 170, 175)
    else:
        bg, fg, muted = (250, 250, 250), (20, 20, 20), (100, 100, 105)
    app = str(rng.choice(["Messages", "Mail", "News", "Calendar", "Bank", "Weather"]))
    icon = tuple(int(c) for c in rng.integers(30, 230, size=3))
    margin, bh = _u(size, 8), _u(size, 72)
    top = round(-bh + progress * (bh + _u(size, 8)))
    layer = Image.new("RGB", size, (0, 0, 0))
    mask = Image.new("L", size, 0)
    d, m = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    box = (margin, top, w - margin, top + bh)
    d.rounded_rectangle(box, radius=_u(size, 14), fill=bg)
    m.rounded_rectangle(box, radius=_u(size, 14), fill=240)
    s = _u(size, 30)
    d.rounded_rectangle((margin + _u(size, 10), top + _u(size, 10), margin + _u(size, 10) + s, top + _u(size, 10) + s),
                        radius=_u(size, 7), fill=icon)
    f_small, f_text = _font_px(_u(size, 11)), _font_px(_u(size, 13))
    x = margin + _u(size, 10) + s + _u(size, 10)
    d.text((x, top + _u(size, 8)), f"{app} · now", font=f_small, fill=muted)
    lines = wrap_text(text, f_text, w - margin - x - _u(size, 10))[:2]
    _draw_lines(d, lines, (x, top + _u(size, 26)), f_text, fg)
    out.paste(layer, (0, 0), mask)
    return out


def add_cursor(img: Image.Image, xy: tuple[float, float], *, style: str = "touch",
               pressed: bool = False) -> Image.Image:
    """A copy of ``img`` with a pointer at ``xy``: ``"touch"`` (a translucent finger mark, larger when
    ``pressed``) as phone recordings with "show touches" draw, or ``"arrow"`` (a desktop mouse pointer)."""
    out = img.convert("RGB").copy()
    x, y = float(xy[0]), float(xy[1])
    size = out.size
    if style == "touch":
        r = _u(size, 22 if pressed else 16)
        layer = Image.new("RGB", size, (255, 255, 255))
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(layer).ellipse((x - r, y - r, x + r, y + r), fill=(200, 200, 200), outline=(90, 90, 90),
                                      width=_u(size, 2))
        ImageDraw.Draw(mask).ellipse((x - r, y - r, x + r, y + r), fill=150 if pressed else 110)
        out.paste(layer, (0, 0), mask)
    elif style == "arrow":
        s = _u(size, 1.2)
        shape = [(0, 0), (0, 17), (4, 13), (7, 20), (10, 19), (7, 12), (12, 12)]
        pts = [(x + px * s, y + py * s) for px, py in shape]
        d = ImageDraw.Draw(out)
        d.polygon(pts, fill=(255, 255, 255) if not pressed else (220, 220, 220), outline=(0, 0, 0))
    else:
        raise ValueError(f"cursor style must be 'touch' or 'arrow', got {style!r}")
    return out


def jpeg_noise(img: Image.Image, quality: int) -> Image.Image:
    """``img`` after a JPEG round trip at ``quality`` (1–95): blocking and ringing as in compressed
    captures. Deterministic for the same input."""
    if not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 95:
        raise ValueError(f"jpeg quality must be an integer in [1, 95], got {quality!r}")
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out.convert("RGB")
