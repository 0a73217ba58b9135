"""Training data of a grounding tower: an item's product page rendered many ways, where its photo sits, and
windows cut from pages (around the photo, off it, and from screens without an item).

A `TrainingPages` says how pages are drawn (size, overlays, JPEG noise); rendering ``r`` of item ``code`` uses
the layout seed `layout_seed` ``(seed, r) + code`` (`mmrec.fusion.alignment.product_pages`), so where its
photo sits (`TrainingPages.photo_box`) is known without drawing it. The training recipe that uses these is
`mmrec.fusion.screen_tower`; the app simulator (`mmrec.datasets.app_sim`) draws the screens without an item.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np
import torch

from mmrec.data import Catalog
from mmrec.screen_windows import ScreenWindows, crop_windows, iou, jittered_windows


def layout_seed(seed: int, r: int) -> int:
    """The `product_pages` seed of rendering ``r`` (item ``code``'s page then uses ``seed + code``)."""
    return seed + 100_003 * r


@dataclass(frozen=True)
class TrainingPages:
    """How training product pages are drawn: at ``page_size`` (width, height); ``overlays``: the share with a
    notification banner and a pointer; ``jpeg_share`` of them JPEG-compressed at a quality drawn from
    ``jpeg_quality``. ``workers``: processes that draw `windows`' renderings side by side (drawing is
    single-threaded Python and PIL, and on a large catalogue it is most of a tower's training time); every
    rendering has its own seeds, so the windows are the same for any number of workers. The workers are
    spawned, so a script that sets ``workers`` needs Python's usual ``if __name__ == "__main__":`` guard."""

    page_size: tuple[int, int] = (180, 320)
    overlays: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 95)
    jpeg_share: float = 1.0
    workers: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"TrainingPages.workers must be at least 1, got {self.workers}")

    def photo_size(self, catalog: Catalog, code: int) -> tuple[int, int] | None:
        """The size `product_pages` decodes an item's photo at (JPEGs in draft mode), from its header only;
        None without a photo or with an unreadable one (the page then shows the placeholder)."""
        from PIL import Image, UnidentifiedImageError

        if catalog.image_paths[code] is None:
            return None
        try:
            with Image.open(catalog.image_paths[code]) as im:
                if im.format == "JPEG":
                    im.draft("RGB", tuple(self.page_size))
                return im.size
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
            return None

    def photo_box(self, catalog: Catalog, seed: int, r: int, code: int) -> Any:
        """Where rendering ``r`` of item ``code``'s product page puts the photo (pixels of ``page_size``)."""
        from mmrec.datasets.screens import product_page_layout

        return product_page_layout(tuple(self.page_size), layout_seed(seed, r) + code,
                                   self.photo_size(catalog, code)).photo

    def photo_boxes(self, catalog: Catalog, seed: int, renderings: int) -> np.ndarray:
        """``[renderings * items, 4]``: where the photo sits on each of ``renderings`` renderings of every item's
        page, rendering-major (e.g. for `ScreenWindows.fit`: windows where the app puts photos)."""
        return np.array([self.photo_box(catalog, seed, r, code)
                         for r in range(renderings) for code in range(len(catalog))], np.float64)

    def rendering(self, catalog: Catalog, seed: int, r: int) -> Iterator[tuple[Any, Any]]:
        """Rendering ``r`` of every item's product page: (page, the photo's box on it), in item order."""
        from mmrec.datasets.screens import add_cursor, add_notification, jpeg_noise
        from mmrec.fusion.alignment import product_pages

        rng = np.random.default_rng([seed, 77, r])
        render = product_pages(catalog, size=tuple(self.page_size), seed=layout_seed(seed, r))
        for code in range(len(catalog)):
            page = render(code)
            if rng.random() < self.overlays:
                w, h = page.size
                page = add_notification(page, catalog.titles[int(rng.integers(len(catalog)))], rng,
                                        progress=float(rng.uniform(0.3, 1.0)))
                page = add_cursor(page, (rng.uniform(0, w), rng.uniform(0, h)),
                                  style=str(rng.choice(["touch", "arrow"])))
            box = self.photo_box(catalog, seed, r, code)
            quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            yield (jpeg_noise(page, quality) if rng.random() < self.jpeg_share else page), box

    def pages(self, catalog: Catalog, seed: int, n: int) -> list[Any]:
        """``n`` renderings per item (seeded layouts, overlays and JPEG noise), rendering-major order."""
        return [page for r in range(n) for page, _ in self.rendering(catalog, seed, r)]

    def windows(self, catalog: Catalog, seed: int, n: int, windows: ScreenWindows, crops: int, off: int,
                size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 windows at ``size`` (height, width) from ``n`` renderings per item: ``crops`` around the photo
        as far off as the ``windows``' grid can be (``[n * crops * items, 3, h, w]``, rendering-major, then
        window, then item) and ``off`` windows of the searched sizes anywhere on the page that hardly overlap
        the photo (IoU < 0.3; same order)."""
        positives = torch.zeros(n, crops, len(catalog), 3, *size, dtype=torch.uint8)
        negatives = torch.zeros(n, off, len(catalog), 3, *size, dtype=torch.uint8)
        jobs = [(self, catalog, seed, r, windows, crops, off, size) for r in range(n)]
        if self.workers > 1 and n > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the caller may hold torch's threads (or a GPU), which a forked child can deadlock on
            with ProcessPoolExecutor(min(self.workers, n), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=torch.set_num_threads, initargs=(1,)) as pool:
                for r, (pos, neg) in enumerate(pool.map(_rendering_windows, *zip(*jobs))):
                    positives[r], negatives[r] = pos, neg
        else:
            for r, job in enumerate(jobs):
                positives[r], negatives[r] = _rendering_windows(*job)
        return positives.view(-1, 3, *size), negatives.view(-1, 3, *size)

    def screens_without_item(self, catalog: Catalog, seed: int, windows: ScreenWindows, n: int,
                             size: tuple[int, int]) -> torch.Tensor:
        """uint8 search windows (``[n * K, 3, h, w]`` at ``size``) of ``n`` frames of screens without an item —
        home feed, grids, bag, checkout — from sessions of random items simulated with training seeds
        (`mmrec.datasets.app_sim`, no codec; JPEG noise as for the product pages)."""
        from mmrec.datasets.app_sim import SimConfig, render_frames, simulate_session
        from mmrec.datasets.screens import jpeg_noise
        from mmrec.encoders.base import pil_to_tensor

        rng = np.random.default_rng([seed, 79])
        base = SimConfig(width=self.page_size[0], height=self.page_size[1], fps=10, cursor="none",
                         notification_prob=0.0, jpeg_quality=None)
        boxes = windows.boxes(*self.page_size)
        crops, session_seed = [], seed + 7_000_000
        while len(crops) < n:
            sim = replace(base, seed=session_seed)
            session_seed += 1
            session = simulate_session(catalog, rng.choice(len(catalog), size=min(3, len(catalog)), replace=False),
                                       sim)
            wanted = [i for st in session.states if st.kind != "product" for i in session.frame_range(st)
                      if i / sim.fps - st.start >= sim.transition_seconds]  # settled screens, no slide between two
            wanted = set(rng.choice(wanted, size=min(len(wanted), 24, n - len(crops)),
                                    replace=False).tolist()) if wanted else set()
            for i, (_, frame) in enumerate(render_frames(session, catalog, sim)):
                if i in wanted:
                    if rng.random() < self.jpeg_share:
                        frame = jpeg_noise(frame, int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1)))
                    crops.append(crop_windows(pil_to_tensor(frame)[None], boxes, size))
        if not crops:
            return torch.zeros(0, 3, *size, dtype=torch.uint8)
        return torch.cat(crops).round_().clamp_(0, 255).to(torch.uint8)


def _rendering_windows(pages: TrainingPages, catalog: Catalog, seed: int, r: int, windows: ScreenWindows,
                       crops: int, off: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """`TrainingPages.windows` of rendering ``r`` alone: ``[crops, items, 3, h, w]`` and ``[off, items, 3, h, w]``
    (module-level, so worker processes can run it)."""
    from mmrec.encoders.base import pil_to_tensor

    positives = torch.zeros(crops, len(catalog), 3, *size, dtype=torch.uint8)
    negatives = torch.zeros(off, len(catalog), 3, *size, dtype=torch.uint8)
    rng = np.random.default_rng([seed, 78, r])
    for code, (page, box) in enumerate(pages.rendering(catalog, seed, r)):
        boxes = np.concatenate([jittered_windows(box, windows, crops, rng),
                                windows_off(box, windows, page.size, off, rng)])
        cut = crop_windows(pil_to_tensor(page)[None], boxes, size).round_().clamp_(0, 255)
        positives[:, code] = cut[:crops].to(torch.uint8)
        negatives[:, code] = cut[crops:].to(torch.uint8)
    return positives, negatives


def windows_off(photo_box: Any, windows: ScreenWindows, size: tuple[int, int], n: int,
                rng: np.random.Generator) -> np.ndarray:
    """``[n, 4]`` windows of the searched sizes at random places on a ``size`` page, each with IoU < 0.3 with
    the photo (the best of 20 draws where none is that far off)."""
    width, height = size
    out = np.zeros((n, 4))
    for k in range(n):
        w = float(rng.choice(windows.widths)) * width
        h = min(w * windows.aspect, height)
        w = h / windows.aspect
        x, y = rng.uniform(0, width - w, 20), rng.uniform(0, height - h, 20)
        candidates = np.stack([x, y, x + w, y + h], axis=1)
        out[k] = candidates[int(np.argmin(iou(candidates, photo_box)))]
    return out
