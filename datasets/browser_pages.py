"""A second, independent renderer of shopping sessions: real HTML pages drawn by headless Chromium.

`mmrec.datasets.app_sim` draws its app screens with Pillow. This module takes the same user behaviour (the
states and log events `app_sim.simulate_session` plans from a purchase sequence: feed, grid, product pages,
bag, checkout, with the same timings) and renders it as a *web shop*: HTML pages generated from the
catalog (photos as ``data:`` URIs, names, prices, descriptions) and laid out by Chromium, with looks chosen
unlike the simulator's (serif, condensed and monospace system fonts, paper and dark palettes, square or
tall photo crops, a two-column product page with the photo on the right, a carousel, masonry and list
grids, sticky headers and footers), drawn per session from a seed. Frames are captured on a virtual clock:
each frame ``i`` is the page state at ``t = i / fps`` (the scroll position of that instant, a tap mark, a
toast), screenshotted through the DevTools protocol, so the frame rate is steady and the ground truth exact
however long a screenshot takes; a page change is a short cross-fade (app_sim slides).

Positions are re-staged on the browser's own layouts: a grid scrolls until the card the user taps is in
view (measured in the page), taps land on the measured card or button. Screen kinds, items, state times
and events are app_sim's, so one purchase sequence gives the same session under both renderers.

`record_sequence` writes what `app_sim.record_sequence` writes (``recording.mp4``, frame shards when asked,
``truth.json`` in the same format and version, readable by `app_sim.load_truth`, `mmrec.calibration` and
``mmrec stream calibrate``); truth.json also has a ``renderer`` entry (browser version, looks, and per state
the measured card and photo boxes, which `items_on_screen` reads). Pages are drawn at an integer device pixel
ratio and scaled to the recording's size in PIL, so a recording is reproducible byte for byte. Chromium is
driven over ``--remote-debugging-pipe`` with the standard library only; it must be installed (Debian:
``apt-get install chromium``; `Chromium` says so in one line when it is missing).
"""
from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from mmrec.config import to_dict
from mmrec.data import Catalog
from mmrec.datasets import app_sim, screens
from mmrec.datasets.app_sim import PhotoCache, PurchaseSequence, ScreenState, Session, SimConfig, item_price
from mmrec.io import atomic_write_text

RENDERER = "chromium-html"
DEFAULT_CHROMIUM = "/usr/bin/chromium"

_FONTS = {  # families a Debian machine with chromium has (fonts-liberation, fonts-dejavu); generic fallback last
    "serif": "'Liberation Serif', 'DejaVu Serif', serif",
    "dserif": "'DejaVu Serif', 'Liberation Serif', serif",
    "narrow": "'Liberation Sans Narrow', 'DejaVu Sans Condensed', sans-serif",
    "condensed": "'DejaVu Sans Condensed', 'Liberation Sans Narrow', sans-serif",
    "mono": "'Liberation Mono', 'DejaVu Sans Mono', monospace",
    "sans": "'Liberation Sans', 'DejaVu Sans', sans-serif",
}
_SHOP_NAMES = ("MAISON LUNE", "Atelier Nord", "THREADWORKS", "rue & co", "KVIST", "Porter Lane", "SOLSTICE", "ode.")


# ------------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class BrowserConfig:
    """How the browser is run; `mmrec.config.from_dict` builds it from a mapping, rejecting unknown keys.

    ``chromium``: the browser binary; ``css_width`` ``(low, high)``: the page's layout width in CSS pixels
    drawn per session (phones are 360–430 wide; the capture is scaled to the recording's size);
    ``timeout_s``: how long one DevTools command may take before the recording fails.
    """

    chromium: str = DEFAULT_CHROMIUM
    css_width: tuple[int, int] = (360, 430)
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        low, high = self.css_width
        if not 200 <= low <= high <= 1200:
            raise ValueError(f"BrowserConfig.css_width: must be a (low, high) range within [200, 1200] CSS px, "
                             f"got {self.css_width!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"BrowserConfig.timeout_s: must be > 0 seconds, got {self.timeout_s!r}")


def chromium_available(path: str = DEFAULT_CHROMIUM) -> bool:
    """Whether ``path`` is an executable Chromium (tests skip without one)."""
    return os.path.isfile(path) and os.access(path, os.X_OK)


# ------------------------------------------------------------------------------------ the browser

class Chromium:
    """A headless Chromium with one page, driven over ``--remote-debugging-pipe`` (JSON messages ending in NUL
    on file descriptors 3 and 4): no network port, no client library, no browser download.

    Use as a context manager; `close` ends the browser and removes its profile folder.
    """

    def __init__(self, path: str = DEFAULT_CHROMIUM, *, timeout_s: float = 60.0) -> None:
        if not chromium_available(path):
            raise FileNotFoundError(f"chromium not found at {path}: apt-get install chromium")
        self.timeout_s, self._next_id, self._buffer = timeout_s, 0, b""
        self._profile = tempfile.mkdtemp(prefix="mmrec-chromium-")
        self._log = open(os.path.join(self._profile, "stderr.log"), "wb")
        args = [path, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--hide-scrollbars",
                "--no-first-run", "--no-default-browser-check", "--mute-audio", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--force-color-profile=srgb",
                "--disable-lcd-text", "--font-render-hinting=none", f"--user-data-dir={self._profile}",
                # every screenshot fully drawn: no low-resolution tiles or images decoded later while scrolling
                "--disable-checker-imaging", "--disable-threaded-scrolling",
                "--disable-threaded-animation", "--disable-partial-raster", "--disable-new-content-rendering-timeout",
                "about:blank"]
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()
        try:  # /bin/sh moves the pipe ends onto fds 3 and 4, where Chromium expects them
            self._process = subprocess.Popen(
                ["/bin/sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null', *args],
                stdin=to_browser, stdout=from_browser, stderr=self._log)
        except BaseException:
            for fd in (self._commands, self._replies):
                os.close(fd)
            self._cleanup()
            raise
        finally:
            os.close(to_browser)
            os.close(from_browser)
        try:
            self.version = self.send("Browser.getVersion")["product"]
            target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self._frame = self.send("Page.getFrameTree", session=True)["frameTree"]["frame"]["id"]
        except BaseException:
            self.close()
            raise

    def send(self, method: str, params: dict | None = None, *, session: bool = False) -> dict:
        """Run one DevTools command (on the page when ``session``) and return its result; events are dropped."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._commands, data):]
        deadline = time.monotonic() + self.timeout_s
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                    raise TimeoutError(f"chromium: no reply to {method} within {self.timeout_s} s")
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited (code {self._process.poll()}) during {method}: "
                                       f"{self._stderr_tail()}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"chromium: {method} failed: {reply['error'].get('message')}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"chromium: script failed: {details.get('exception', {}).get('description', details)}")
        return result.get("result", {}).get("value")

    def set_viewport(self, css_size: tuple[int, int], scale: float) -> None:
        """A phone-like viewport of ``css_size`` CSS pixels, drawn ``scale`` device pixels per CSS pixel."""
        self.send("Emulation.setDeviceMetricsOverride", {"width": css_size[0], "height": css_size[1],
                                                         "deviceScaleFactor": scale, "mobile": True}, session=True)

    def set_content(self, document: str) -> None:
        """Replace the page's document with ``document`` (HTML)."""
        self.send("Page.setDocumentContent", {"frameId": self._frame, "html": document}, session=True)

    def screenshot(self) -> Image.Image:
        """The viewport as an RGB image (PNG, lossless)."""
        data = self.send("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            return im.convert("RGB")

    def _stderr_tail(self) -> str:
        try:
            self._log.flush()
            with open(self._log.name, "rb") as f:
                return f.read()[-400:].decode(errors="replace").strip()
        except OSError:
            return ""

    def _cleanup(self) -> None:
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def close(self) -> None:
        """End the browser (politely, then by force) and remove its profile."""
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            try:
                os.write(self._commands, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        for fd in (self._commands, self._replies):
            try:
                os.close(fd)
            except OSError:
                pass
        self._cleanup()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------------------- looks

@dataclass(frozen=True)
class Look:
    """A web shop's look, drawn from a seed (`look_for`): fonts, colours, crops and which layout each page
    uses. Recorded in truth.json, so a recording says how it was drawn."""

    seed: int
    css_width: int
    shop: str
    heading_font: str
    body_font: str
    price_font: str
    background: str
    surface: str
    text: str
    muted: str
    accent: str
    on_accent: str
    radius: int
    grid: str        # "columns3" | "masonry2" | "list_right"
    product: str     # "split_right" | "square_top" | "carousel" | "float_left"
    feed: str        # "editorial" | "strip"
    photo_ratio: str  # CSS aspect-ratio of grid photos (square or tall crops)
    header: str      # "centered" | "left"
    uppercase: bool


def look_for(seed: int, css_width: tuple[int, int] = (360, 430)) -> Look:
    """The `Look` of a seed: a dark or paper palette with an accent hue, font pairing, photo crops, page layouts."""
    rng = np.random.default_rng([int(seed), 77])
    dark = rng.random() < 0.25
    hue = int(rng.integers(360))
    if dark:
        background, surface = f"hsl({hue}, 12%, 9%)", f"hsl({hue}, 10%, 15%)"
        text, muted = "hsl(40, 30%, 92%)", "hsl(40, 8%, 62%)"
        accent = f"hsl({(hue + 180) % 360}, 70%, 62%)"
        on_accent = "#111"
    else:
        background = f"hsl({int(rng.integers(20, 60))}, {int(rng.integers(20, 50))}%, {int(rng.integers(92, 97))}%)"
        surface = f"hsl({hue}, 25%, 88%)"
        text, muted = f"hsl({hue}, 30%, 12%)", f"hsl({hue}, 10%, 40%)"
        accent = f"hsl({hue}, {int(rng.integers(45, 85))}%, {int(rng.integers(28, 42))}%)"
        on_accent = "#fffdf7"
    heading, body = [("serif", "narrow"), ("dserif", "condensed"), ("mono", "serif"), ("narrow", "serif"),
                     ("condensed", "mono")][int(rng.integers(5))]
    return Look(
        seed=int(seed), css_width=int(rng.integers(css_width[0], css_width[1] + 1)),
        shop=str(rng.choice(_SHOP_NAMES)), heading_font=_FONTS[heading], body_font=_FONTS[body],
        price_font=_FONTS[str(rng.choice(["mono", "serif", heading]))], background=background, surface=surface,
        text=text, muted=muted, accent=accent, on_accent=on_accent, radius=int(rng.choice([0, 2, 18])),
        grid=str(rng.choice(["columns3", "masonry2", "list_right"])),
        product=str(rng.choice(["split_right", "square_top", "carousel", "float_left"])),
        feed=str(rng.choice(["editorial", "strip"])), photo_ratio=str(rng.choice(["1 / 1", "3 / 4", "2 / 3"])),
        header=str(rng.choice(["centered", "left"])), uppercase=bool(rng.random() < 0.5))


# ------------------------------------------------------------------------------------------- pages

@dataclass
class _Entry:
    """One item as a page shows it."""

    index: int
    title: str
    price: str
    text: str
    photo: str | None  # data URI


def _price_text(price: float | None) -> str:
    return "" if price is None else f"{price:,.2f} USD"


def _css(look: Look) -> str:
    up = "text-transform: uppercase; letter-spacing: .12em;" if look.uppercase else "letter-spacing: .02em;"
    return f"""
* {{ box-sizing: border-box; }}
html, body {{ margin: 0; background: {look.background}; color: {look.text}; font: 15px/1.35 {look.body_font}; }}
img {{ display: block; width: 100%; height: 100%; object-fit: cover; object-position: 50% 50%; }}
.noimg {{ width: 100%; height: 100%; background: repeating-linear-gradient(45deg, {look.surface} 0 8px,
         {look.background} 8px 16px); }}
header {{ position: sticky; top: 0; z-index: 5; background: {look.background}; border-bottom: 1px solid {look.muted};
         display: flex; align-items: center;
         justify-content: {'center' if look.header == 'centered' else 'space-between'};
         height: 52px; padding: 0 {'14px' if look.header == 'centered' else '76px 0 14px'}; gap: 12px; }}
header .logo {{ font: 600 20px {look.heading_font}; {up} }}
header .nav {{ font-size: 12px; color: {look.muted}; }}
header .bag {{ position: absolute; right: 12px; top: 14px; border: 1.5px solid {look.text}; border-radius: 4px;
              padding: 1px 6px; font: 12px {look.price_font}; }}
header .menu {{ position: absolute; left: 12px; top: 16px; width: 18px; height: 14px;
               border-top: 2px solid {look.text}; border-bottom: 2px solid {look.text}; }}
h1, h2 {{ font-family: {look.heading_font}; font-weight: 600; margin: 14px 14px 10px; {up} }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 16px; color: {look.muted}; }}
.price {{ font-family: {look.price_font}; color: {look.accent}; font-weight: 700; }}
.title {{ font-size: 13px; overflow: hidden; display: -webkit-box; -webkit-line-clamp: 2;
          -webkit-box-orient: vertical; }}
.btn {{ display: block; margin: 12px 14px; padding: 13px; text-align: center; background: {look.accent};
        color: {look.on_accent}; border-radius: {look.radius}px; font: 700 15px {look.heading_font}; {up} }}
.btn.ghost {{ background: transparent; color: {look.text}; border: 1.5px solid {look.text}; }}
footer {{ margin-top: 24px; padding: 18px 14px 40px; background: {look.surface}; color: {look.muted};
          font-size: 12px; }}
.grid3 {{ display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px 6px; padding: 0 8px; }}
.grid3 .ph {{ aspect-ratio: {look.photo_ratio}; border-radius: {look.radius // 2}px; overflow: hidden; }}
.masonry {{ columns: 2; column-gap: 10px; padding: 0 10px; }}
.masonry .card {{ break-inside: avoid; margin-bottom: 12px; background: {look.surface}; padding: 6px;
                  border-radius: {look.radius}px; }}
.masonry .ph {{ overflow: hidden; }}
.list .card {{ display: flex; gap: 12px; padding: 10px 14px; border-bottom: 1px solid {look.surface}; }}
.list .card .info {{ flex: 1; }} .list .ph {{ width: 38%; aspect-ratio: {look.photo_ratio}; overflow: hidden;
                     border-radius: {look.radius}px; }}
.hero {{ margin: 0 0 12px; position: relative; }} .hero .ph {{ aspect-ratio: 16 / 10; overflow: hidden; }}
.hero .cap {{ position: absolute; left: 0; right: 0; bottom: 0; padding: 10px 14px; color: #fff;
              background: linear-gradient(transparent, rgba(0,0,0,.6)); font: 600 20px {look.heading_font}; }}
.strip {{ display: flex; gap: 10px; overflow: hidden; padding: 0 14px 12px; }}
.strip .card {{ flex: 0 0 42%; }}
.strip .ph {{ aspect-ratio: 3 / 4; overflow: hidden; border-radius: {look.radius}px; }}
.rows .card {{ display: flex; gap: 10px; align-items: center; padding: 8px 14px; }}
.rows .ph {{ width: 64px; height: 64px; overflow: hidden; border-radius: 50%; }}
.split {{ display: grid; grid-template-columns: 44% 56%; align-items: start; }}
.split .info {{ padding: 14px 10px 0 14px; }} .split .ph {{ aspect-ratio: 2 / 3; overflow: hidden; }}
.square .ph {{ aspect-ratio: 1 / 1; overflow: hidden; margin: 10px 14px 0; border-radius: {look.radius}px; }}
.carousel {{ display: flex; gap: 8px; padding: 12px 0 0 10%; overflow: hidden; }}
.carousel .ph {{ flex: 0 0 80%; aspect-ratio: 3 / 4; overflow: hidden; border-radius: {look.radius}px; }}
.carousel .peek {{ flex: 0 0 30%; background: {look.surface}; border-radius: {look.radius}px; }}
.dots {{ text-align: center; color: {look.muted}; letter-spacing: 4px; margin-top: 4px; }}
.float .ph {{ float: right; width: 48%; aspect-ratio: 3 / 4; overflow: hidden; margin: 0 14px 8px 12px; }}
.desc {{ padding: 0 14px; color: {look.muted}; font-size: 13px; }}
.bagrow {{ display: grid; grid-template-columns: 1fr 70px; gap: 10px; padding: 10px 14px;
           border-bottom: 1px dashed {look.muted}; }} .bagrow .ph {{ height: 90px; overflow: hidden; }}
.sum {{ display: flex; justify-content: space-between; padding: 4px 14px; font-family: {look.price_font}; }}
.field {{ margin: 8px 14px; padding: 10px; border: 1px solid {look.muted}; border-radius: {look.radius // 2}px;
          color: {look.muted}; font-size: 13px; }}
.check {{ width: 86px; height: 86px; margin: 60px auto 10px; border-radius: 50%; background: {look.accent};
          color: {look.on_accent}; font: 52px/86px {look.heading_font}; text-align: center; }}
.fixedbar {{ position: fixed; left: 0; right: 0; bottom: 0; background: {look.background};
             border-top: 1px solid {look.muted}; z-index: 5; }}
#__touch {{ position: fixed; z-index: 9; width: 30px; height: 30px; margin: -15px 0 0 -15px; border-radius: 50%;
            border: 3px solid rgba(30, 120, 255, .85); background: rgba(30, 120, 255, .25); display: none; }}
#__arrow {{ position: fixed; z-index: 9; display: none; width: 0; height: 0; border-left: 7px solid transparent;
            border-right: 7px solid transparent; border-bottom: 18px solid #111; transform: rotate(-25deg);
            transform-origin: 0 0; filter: drop-shadow(0 0 1px #fff); }}
#__toast {{ position: fixed; z-index: 8; left: 12px; right: 12px; bottom: 14px; display: none; padding: 10px 14px;
            background: rgba(24, 24, 28, .93); color: #f4f4f4; border-radius: 10px; font: 13px {_FONTS['sans']}; }}
"""


def _photo(entry: _Entry) -> str:
    inner = f'<img src="{entry.photo}" alt="">' if entry.photo else '<div class="noimg"></div>'
    return f'<div class="ph" data-photo="{entry.index}">{inner}</div>'


def _card(entry: _Entry, photo_first: bool = True) -> str:
    info = f'<div class="info"><div class="title">{html.escape(entry.title)}</div>' \
           f'<div class="price">{entry.price}</div></div>'
    body = _photo(entry) + info if photo_first else info + _photo(entry)
    return f'<div class="card" data-index="{entry.index}">{body}</div>'


def _header(look: Look, bag: int, back: bool) -> str:
    left = ('<span class="nav" data-action="back">&larr; Back</span>' if back
            else '<span class="menu" data-action="shop"></span>')
    if look.header == "centered":
        inner = f'{left}<span class="logo">{html.escape(look.shop)}</span>'
    else:
        nav = left if back else '<span class="nav" data-action="shop">Shop &middot; New</span>'
        inner = f'<span class="logo">{html.escape(look.shop)}</span>{nav}'
    return f'<header>{inner}<span class="bag">BAG {bag}</span></header>'


def _footer(look: Look) -> str:
    return (f'<footer>{html.escape(look.shop)} &middot; Free returns within 30 days<br>Customer service &middot; '
            f'Stores &middot; Newsletter<br>&copy; 2026</footer>')


def page_html(look: Look, kind: str, entries: Sequence[_Entry], *, heading: str = "", variant: str = "",
              bag: int = 0, total: str = "") -> str:
    """The HTML document of one screen ``kind`` (`app_sim.SCREEN_KINDS`) in ``look``: cards carry
    ``data-index`` (their position in ``entries``), photo boxes ``data-photo``, buttons ``data-action``."""
    parts: list[str] = []
    if kind == "home":
        head, rest = entries[:1], entries[1:]
        if look.feed == "editorial":
            parts += [f'<div class="hero card" data-index="{e.index}">{_photo(e)}<div class="cap">'
                      f'{html.escape(e.title)}</div></div>' for e in head]
            parts.append("<h2>Just in</h2><div class='strip'>" + "".join(_card(e) for e in rest[:4]) + "</div>")
            parts.append("<h2>Edited for you</h2><div class='list'>"
                         + "".join(_card(e, photo_first=False) for e in rest[4:]) + "</div>")
        else:
            parts.append("<h1>This week</h1><div class='strip'>" + "".join(_card(e) for e in entries[:3]) + "</div>")
            parts.append("<h2>Trending</h2><div class='rows'>" + "".join(_card(e) for e in entries[3:]) + "</div>")
        parts.append(_footer(look))
        header = _header(look, bag, back=False)
    elif kind == "grid":
        parts.append(f"<h1>{html.escape(heading or 'New in')}</h1><h2>{len(entries)} styles</h2>")
        if look.grid == "columns3":
            parts.append("<div class='grid3'>" + "".join(_card(e) for e in entries) + "</div>")
        elif look.grid == "masonry2":
            ratios = ("3 / 4", "1 / 1", "2 / 3", "4 / 5")
            parts.append("<div class='masonry'>" + "".join(
                _card(e).replace('class="ph"', f'class="ph" style="aspect-ratio: {ratios[e.index % 4]}"', 1)
                for e in entries) + "</div>")
        else:
            parts.append("<div class='list'>" + "".join(_card(e, photo_first=False) for e in entries) + "</div>")
        parts.append(_footer(look))
        header = _header(look, bag, back=True)
    elif kind == "product":
        e = entries[0]
        info = (f'<h1>{html.escape(e.title)}</h1><div class="price" style="margin: 0 14px; font-size: 20px">'
                f'{e.price}</div>')
        desc = f'<p class="desc">{html.escape(e.text[:420])}</p>'
        button = '<div class="btn" data-action="add_to_cart">Add to bag</div>'
        if look.product == "split_right":
            parts.append(f'<div class="split"><div class="info">{info}<div class="dots">S M L XL</div></div>'
                         f'{_photo(e)}</div>{button}{desc}')
        elif look.product == "square_top":
            parts.append(f'<div class="square">{_photo(e)}</div>{info}{desc}'
                         f'<div class="fixedbar">{button}</div>')
        elif look.product == "carousel":
            parts.append(f'<div class="carousel">{_photo(e)}<div class="peek"></div></div>'
                         f'<div class="dots">&#9679; &#9675; &#9675;</div>{info}'
                         f'<div class="fixedbar">{button}</div>{desc}')
        else:
            parts.append(f'<div class="float">{info}<div style="height: 10px"></div>{_photo(e)}{desc}</div>'
                         f'<div style="clear: both"></div>{button}')
        header = _header(look, bag, back=True)
    elif kind == "cart":
        parts.append(f"<h1>Shopping bag</h1><h2>{len(entries)} article(s)</h2>")
        for e in entries:
            parts.append(f'<div class="bagrow card" data-index="{e.index}"><div><div class="title">'
                         f'{html.escape(e.title)}</div><div class="price">{e.price}</div><div class="desc" '
                         f'style="padding: 0">Qty 1 &middot; Size M</div></div>{_photo(e)}</div>')
        parts.append(f'<div class="sum"><span>Total</span><span>{total}</span></div>'
                     '<div class="btn" data-action="checkout">Continue to checkout</div>')
        header = _header(look, bag, back=True)
    elif kind == "checkout" and variant == "placed":
        parts.append(f'<div class="check">&#10003;</div><h1 style="text-align: center">Thank you</h1>'
                     f'<p class="desc" style="text-align: center">Order confirmed &middot; {len(entries)} '
                     f'article(s) &middot; {total}</p><div class="btn ghost" data-action="continue_shopping">'
                     f'Back to the shop</div>')
        header = _header(look, bag, back=False)
    elif kind == "checkout":
        parts.append("<h1>Checkout</h1><h2>Delivery</h2>" + "".join(
            f'<div class="field">{label}</div>' for label in ("Full name", "Street and number", "Postcode, city")))
        parts.append("<h2>Payment</h2><div class='field'>Card &middot;&middot;&middot;&middot; 4242</div>")
        parts.append(f'<div class="sum"><span>{len(entries)} article(s)</span><span>{total}</span></div>'
                     f'<div class="sum"><span>Delivery</span><span>0.00</span></div>'
                     f'<div class="btn" data-action="place_order">Pay {total}</div>')
        header = _header(look, bag, back=True)
    else:
        raise ValueError(f"screen state of unknown kind {kind!r}; known: {app_sim.SCREEN_KINDS}")
    return (f'<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, '
            f'initial-scale=1"><style>{_css(look)}</style></head><body>{header}{"".join(parts)}'
            f'<div id="__touch"></div><div id="__arrow"></div><div id="__toast"></div></body></html>')


_MEASURE = """(async () => {
  await document.fonts.ready;
  await Promise.all([...document.images].map(i => i.decode().catch(() => null)));
  window.scrollTo(0, 0);
  const box = e => { const b = e.getBoundingClientRect();
                     return [b.left, b.top + scrollY, b.right, b.bottom + scrollY]; };
  const bar = document.querySelector('.fixedbar');
  return {height: document.documentElement.scrollHeight, view: innerHeight,
          top: document.querySelector('header').getBoundingClientRect().bottom,
          bottom: bar ? innerHeight - bar.getBoundingClientRect().top : 0,
          cards: Object.fromEntries([...document.querySelectorAll('[data-index]')].map(
            e => [e.dataset.index, box(e)])),
          photos: Object.fromEntries([...document.querySelectorAll('[data-photo]')].map(
            e => [e.dataset.photo, box(e)])),
          actions: Object.fromEntries([...document.querySelectorAll('[data-action]')].map(
            e => [e.dataset.action, [...box(e), e.closest('header, .fixedbar') ? 1 : 0]]))};
})()"""

_SET_STATE = """((y, touch, arrow, toast) => {
  window.scrollTo(0, y);
  const t = document.getElementById('__touch'), a = document.getElementById('__arrow');
  const n = document.getElementById('__toast');
  t.style.display = touch ? 'block' : 'none';
  if (touch) {
    t.style.left = touch[0] + 'px'; t.style.top = touch[1] + 'px'; t.style.transform = `scale(${touch[2]})`;
  }
  a.style.display = arrow ? 'block' : 'none';
  if (arrow) { a.style.left = arrow[0] + 'px'; a.style.top = arrow[1] + 'px'; }
  n.style.display = toast ? 'block' : 'none';
  if (toast) { n.textContent = toast[0]; n.style.transform = `translateY(${toast[1]}px)`; n.style.opacity = toast[2]; }
  return scrollY;
})"""


# ---------------------------------------------------------------------------------------- rendering

@dataclass
class _Layout:
    """A loaded page's measurements, in CSS pixels of the page (not the screen)."""

    height: float
    view: float
    top: float
    bottom: float
    cards: dict[int, list[float]]
    photos: dict[int, list[float]]
    actions: dict[str, list[float]]  # l, t, r, b, and 1 when fixed to the viewport (header, bottom bar)

    @property
    def max_offset(self) -> float:
        return max(0.0, math.floor(self.height - self.view))

    def offset_showing(self, index: int, where: float) -> float:
        """A scroll offset at which card ``index`` is wholly in the free viewport (between the sticky header
        and any bottom bar), ``where`` in [0, 1] from its top to its bottom end."""
        l, t, r, b = self.cards[index]
        free_top, free_bottom = self.top, self.view - self.bottom
        low, high = b - free_bottom, t - free_top  # offsets that keep the whole card in view
        if low > high:  # taller than the free viewport: show its top
            low = high
        return float(min(self.max_offset, max(0.0, round(low + (1 - where) * (high - low)))))


class _Stage:
    """Renders an app_sim session in the browser, re-staging scroll offsets and taps on measured layouts."""

    def __init__(self, browser: Chromium, session: Session, catalog: Catalog, config: SimConfig,
                 browser_config: BrowserConfig, photos: PhotoCache) -> None:
        self.browser, self.session, self.catalog, self.config = browser, session, catalog, config
        self.photos, self.rng = photos, np.random.default_rng([config.seed, 91, session.seed])
        self.size = tuple(session.size)
        self.browser_config = browser_config
        self.states: list[ScreenState] = []
        self.layouts: list[dict[str, Any]] = []
        self.looks: dict[int, Look] = {}
        self._data_uris: dict[int, str | None] = {}

    def look(self, style: int) -> Look:
        if style not in self.looks:
            self.looks[style] = look_for(style, self.browser_config.css_width)
        return self.looks[style]

    def data_uri(self, code: int) -> str | None:
        if code not in self._data_uris:
            photo = self.photos(code)
            if photo is None:
                self._data_uris[code] = None
            else:
                buf = io.BytesIO()
                photo.save(buf, format="JPEG", quality=92)
                self._data_uris[code] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        return self._data_uris[code]

    def load(self, state: ScreenState, bag: int) -> tuple[Look, float, _Layout]:
        """Load ``state``'s page; returns its look, screen pixels per CSS pixel, and layout."""
        look = self.look(state.style)
        scale = self.size[0] / look.css_width
        # an integer device pixel ratio: at fractional ones Chromium re-rasters some layers after a screenshot
        # (hairlines, sticky headers), so captures would depend on timing; PIL scales the capture instead
        self.browser.set_viewport((look.css_width, round(self.size[1] / scale)), max(1, round(scale)))
        codes = [int(state.item)] if state.kind == "product" else [int(i) for i in state.items]
        entries = [_Entry(k, self.catalog.titles[c], _price_text(item_price(self.catalog, c)), self.catalog.texts[c],
                          self.data_uri(c)) for k, c in enumerate(codes)]
        total = (_price_text(sum(item_price(self.catalog, c) for c in codes))
                 if state.kind in ("cart", "checkout") else "")
        self.browser.set_content(page_html(look, state.kind, entries, heading=state.heading, variant=state.variant,
                                           bag=bag, total=total))
        m = self.browser.evaluate(_MEASURE)
        layout = _Layout(m["height"], m["view"], m["top"], m["bottom"], {int(k): v for k, v in m["cards"].items()},
                         {int(k): v for k, v in m["photos"].items()}, m["actions"])
        return look, scale, layout

    def restage(self, k: int, state: ScreenState, layout: _Layout, scale: float, offset: float) -> ScreenState:
        """``state`` with scroll and tap measured on ``layout`` (screen pixels), starting at ``offset`` (CSS)."""
        states = self.session.states
        following = states[k + 1] if k + 1 < len(states) else None
        end, tap_box = offset, None
        if state.kind in ("home", "grid"):
            tapped = None
            if following is not None and following.kind == "product" and following.item in state.items:
                tapped = list(state.items).index(following.item)
            if tapped is not None and tapped in layout.cards:
                end = layout.offset_showing(tapped, float(self.rng.random()))
                tap_box = layout.cards[tapped]
            elif state.scroll[0] != state.scroll[1] or state.scroll_seconds > 0:
                end = float(round(self.rng.uniform(0.0, 0.6) * layout.max_offset))
            if tap_box is None and state.tap is not None:
                tap_box = layout.actions.get("shop") or layout.actions.get("back")
        elif state.tap is not None:
            action = {"cart": "checkout",
                      "checkout": "continue_shopping" if state.variant == "placed" else "place_order",
                      "product": "back" if following is not None and following.kind == "grid" else "add_to_cart"}
            tap_box = layout.actions.get(action.get(state.kind, ""))
            if tap_box is not None and not tap_box[4] and tap_box[3] > layout.view - layout.bottom:
                end = float(min(layout.max_offset, math.ceil(tap_box[3] - layout.view + layout.bottom + 12)))
        seconds = 0.0
        if end != offset:  # at a speed drawn from config.scroll_speed (screen px/s), leaving time to look
            speed = float(self.rng.uniform(*self.config.scroll_speed)) / scale  # CSS px per second
            seconds = min(abs(end - offset) / speed, 0.6 * (state.end - state.start))
        tap = None
        if tap_box is not None:
            l, t, r, b = tap_box[:4]
            fixed = len(tap_box) > 4 and tap_box[4]
            x = (l + r) / 2 + self.rng.uniform(-0.2, 0.2) * (r - l)
            y = (t + b) / 2 + self.rng.uniform(-0.2, 0.2) * (b - t) - (0 if fixed else end)
            tap = (int(round(x * scale)), int(round(y * scale)))
        return dataclasses.replace(state, scroll=(round(offset * scale, 3), round(end * scale, 3)),
                                   scroll_seconds=seconds, tap=tap)

    def frames(self) -> Iterator[tuple[float, Image.Image]]:
        """Every frame ``i / fps`` of the session, re-staged states appended to ``self.states`` as they start."""
        session, config, fps = self.session, self.config, self.session.fps
        notes = app_sim.plan_notifications(session, config)
        quality_rng = np.random.default_rng([config.seed, 92, len(session.states)])
        last_clean: Image.Image | None = None
        prev_tap: tuple[float, float] | None = None
        grid_offset, bag, prev_kind, last_grid = 0.0, 0, None, ()
        for k, app_state in enumerate(session.states):
            back = app_state.kind == "grid" and prev_kind == "product" and app_state.items == last_grid
            offset = grid_offset if back else 0.0  # a new page starts at the top; back on a grid, where it was
            look, scale, layout = self.load(app_state, bag)
            state = self.restage(k, app_state, layout, scale, offset)
            self.states.append(state)
            self.layouts.append({"scale": scale, "css_width": look.css_width, "max_offset": layout.max_offset * scale,
                                 "top": round(layout.top * scale, 2), "bottom": round(layout.bottom * scale, 2),
                                 "photos": {str(i): [round(v * scale, 2) for v in box]
                                            for i, box in layout.photos.items()},
                                 "cards": {str(i): [round(v * scale, 2) for v in box]
                                           for i, box in layout.cards.items()}})
            quality = (int(quality_rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
                       if config.jpeg_quality is not None else None)
            cached_key, cached = None, None
            for i in session.frame_range(state):
                t = i / fps
                y = round(state.offset_at(t) / scale)
                key = (y, *self._overlays(state, prev_tap, notes, t, scale, layout))
                if key != cached_key:
                    self.browser.evaluate(f"{_SET_STATE}({key[0]}, {key[1]}, {key[2]}, {key[3]})")
                    cached_key, cached = key, self._sized(self.browser.screenshot())
                img = cached
                if last_clean is not None and t - state.start < config.transition_seconds:
                    progress = min(1.0, (t - state.start + 1 / fps) / config.transition_seconds)
                    img = Image.blend(last_clean, img, progress * progress * (3 - 2 * progress))
                if quality is not None:
                    img = screens.jpeg_noise(img, quality)
                yield t, img
            last_clean = cached
            if state.kind == "grid":
                grid_offset = state.scroll[1] / scale
            prev_tap, prev_kind = (state.tap or prev_tap), state.kind
            last_grid = state.items if state.kind == "grid" else last_grid
            if state.kind == "product" and k + 1 < len(session.states) and session.states[k + 1].kind != "grid":
                bag += 1
            if state.kind == "checkout" and state.variant == "placed":
                bag = 0

    def _sized(self, img: Image.Image) -> Image.Image:
        return img if img.size == self.size else img.resize(self.size, Image.Resampling.LANCZOS)

    def _overlays(self, state: ScreenState, prev_tap: tuple[float, float] | None, notes: list, t: float,
                  scale: float, layout: _Layout) -> tuple:
        """(touch, arrow, toast) as `_SET_STATE` takes them, in CSS pixels; rounded so unchanged overlays
        compare equal and the cached screenshot is reused."""
        config = self.config
        touch = arrow = toast = None
        if config.cursor == "touch":
            if state.tap is not None and t >= state.end - config.tap_seconds:
                touch = [round(state.tap[0] / scale), round(state.tap[1] / scale), 1.2]
            elif state.scroll_seconds > 0 and t < state.start + state.scroll_seconds:
                moved = abs(state.offset_at(t) - state.scroll[0]) / scale
                stroke = 0.5 * layout.view
                touch = [round(0.65 * self.size[0] / scale),
                         round(0.8 * layout.view - moved % stroke), 0.8]
        elif config.cursor == "arrow":
            w, h = self.size
            start = prev_tap or (w / 2, h / 2)
            goal = state.tap or start
            x = min(1.0, (t - state.start) / max(1e-6, 0.5 * (state.end - state.start)))
            x = x * x * (3 - 2 * x)
            arrow = [round((start[0] + (goal[0] - start[0]) * x) / scale),
                     round((start[1] + (goal[1] - start[1]) * x) / scale)]
        for note in notes:
            if note.start <= t < note.end:
                p = max(0.0, min(1.0, (t - note.start) / 0.25, (note.end - t) / 0.25))
                toast = [note.text, round(40 * (1 - p)), round(p, 2)]
        return json.dumps(touch), json.dumps(arrow), json.dumps(toast)


def items_on_screen(truth: Mapping[str, Any], k: int, t: float, min_fraction: float = 0.5) -> list[tuple[int, float]]:
    """``(item code, visible share)`` on screen at time ``t`` in state ``k`` of a browser recording's truth.json
    (the parsed document): the product of a product page; feed and grid cards showing more than
    ``min_fraction`` of their area between the sticky header and any bottom bar, at the scroll offset of
    ``t``; the items in the bag or order. From the layouts measured in the browser (``renderer.layouts``);
    `app_sim.items_on_screen` computes app_sim's layouts and does not apply to these recordings."""
    if (truth.get("renderer") or {}).get("name") != RENDERER:
        raise ValueError(f"truth.json was not written by {RENDERER!r} (renderer "
                         f"{(truth.get('renderer') or {}).get('name')!r}); use app_sim.items_on_screen")
    state = Session.from_dict(truth).states[k]
    if state.kind == "product":
        return [(int(state.item), 1.0)]
    if state.kind not in ("home", "grid"):
        return [(int(i), 1.0) for i in state.items]
    layout, offset = truth["renderer"]["layouts"][k], state.offset_at(t)
    width, height = int(truth["width"]), int(truth["height"])
    free_top, free_bottom = layout["top"], height - layout["bottom"]
    out = []
    for index, (l, top, r, b) in sorted(layout["cards"].items(), key=lambda kv: int(kv[0])):
        area = (r - l) * (b - top)
        seen_w = max(0.0, min(r, width) - max(l, 0.0))
        seen_h = max(0.0, min(b - offset, free_bottom) - max(top - offset, free_top))
        share = seen_w * seen_h / area if area > 0 else 0.0
        if share > min_fraction:
            out.append((int(state.items[int(index)]), round(share, 3)))
    return out


# ------------------------------------------------------------------------------------------ writing

@dataclass(frozen=True)
class BrowserRecording:
    """What `write_recording` wrote: paths, the re-staged session, frame count and rate, photos that failed
    to load, and the browser's version."""

    video: Path
    truth: Path
    shards: tuple[Path, ...]
    session: Session
    n_frames: int
    fps: int
    duration: float
    browser: str
    skipped_photos: dict[str, int] = field(default_factory=dict)


def write_recording(session: Session, catalog: Catalog, config: SimConfig, out_dir: str | os.PathLike, *,
                    browser: BrowserConfig | None = None) -> BrowserRecording:
    """Render an app_sim ``session`` in headless Chromium and write ``out_dir/recording.mp4`` and
    ``truth.json`` in app_sim's format (the re-staged states: same kinds, items and times; scroll offsets
    and taps measured in the browser's pages). ``config`` is the one the session was simulated with; its
    noise settings (cursor, notifications, JPEG, transition length, codec) apply here, drawn this renderer's
    way; with ``config.frame_shards`` the frames also go to webdataset shards, as app_sim writes them."""
    browser = browser or BrowserConfig()
    if (config.fps, config.size) != (session.fps, tuple(session.size)):
        raise ValueError(f"config renders {config.fps} fps at {config.size} but the session was simulated at "
                         f"{session.fps} fps and {tuple(session.size)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(session.size)
    photos = PhotoCache(catalog, (size[0], round(size[0] * 4 / 3)))
    with Chromium(browser.chromium, timeout_s=browser.timeout_s) as chromium:
        stage = _Stage(chromium, session, catalog, config, browser, photos)
        frames, shards = app_sim.encode_video(stage.frames(), out / "recording.mp4", session.fps, size, config)
        version = chromium.version
    staged = dataclasses.replace(session, states=stage.states)
    if frames != session.n_frames:
        raise RuntimeError(f"rendered {frames} frames but the session has {session.n_frames}")
    truth = {
        "format": app_sim.TRUTH_FORMAT, "version": app_sim.TRUTH_VERSION, "video": "recording.mp4",
        "time_base": f"1/{session.fps}", **staged.to_dict(catalog),
        "notifications": [dataclasses.asdict(x) for x in app_sim.plan_notifications(session, config)],
        "shards": [p.name for p in shards], "skipped_photos": dict(photos.skipped), "config": to_dict(config),
        "renderer": {"name": RENDERER, "browser": version, "browser_config": to_dict(browser),
                     "looks": {str(s): dataclasses.asdict(look) for s, look in stage.looks.items()},
                     "layouts": stage.layouts},
    }
    truth_path = atomic_write_text(out / "truth.json", json.dumps(truth, indent=1))
    return BrowserRecording(out / "recording.mp4", truth_path, shards, staged, frames, session.fps, session.duration,
                            version, dict(photos.skipped))


def record_sequence(catalog: Catalog, sequence: PurchaseSequence, out_dir: str | os.PathLike, *, seed: int,
                    size: tuple[int, int] = (180, 320), fps: int = 30, dwell_scale: float = 1.0,
                    browser: BrowserConfig | None = None, **settings: Any) -> tuple[Session, Path]:
    """`app_sim.record_sequence` with the browser as renderer: the same arguments plan the same session
    (``settings`` are `SimConfig` fields), which is drawn as web pages and written as a labelled recording
    (video + truth.json) in ``out_dir``. Returns the re-staged session (as truth.json has it) and the video."""
    if not dwell_scale > 0:
        raise ValueError(f"record_sequence: dwell_scale must be > 0, got {dwell_scale!r}")
    binary = (browser or BrowserConfig()).chromium
    if not chromium_available(binary):
        raise FileNotFoundError(f"chromium not found at {binary}: apt-get install chromium")
    dwell = {f.name: tuple(x * dwell_scale for x in f.default) for f in dataclasses.fields(SimConfig)
             if f.name.startswith("dwell_") and f.name not in settings}
    config = SimConfig(seed=seed, width=size[0], height=size[1], fps=fps, **dwell, **settings)
    session = app_sim.simulate_session(catalog, sequence.items, config, timestamps=sequence.timestamps,
                                       user_id=sequence.user_id)
    recording = write_recording(session, catalog, config, out_dir, browser=browser)
    return recording.session, recording.video
