"""Pixel augmentation for screenshots in training, drawn per sample and applied to a whole batch at once.

Screens in recordings differ from the product pages a screen tower trains on in ways no fixed set of
renderings covers: the app's look (colours, contrast), the layout (where and how large the photo sits),
lossy video codecs (blur, lost resolution, noise) and things drawn over the page (banners, pointers).
`ScreenAugment` draws generic versions of each per sample — an affine jitter, colour jitter, blur,
down-and-up sampling, sensor noise and filled rectangles — without imitating any one codec or overlay, so
recordings made with other settings stay a fair test. Every sample gets its own parameters, but each op
runs once on the batch (``affine_grid``/``grid_sample``, one box blur, one resample), so augmenting costs a
small share of a training step on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ScreenAugment:
    """Per-sample screenshot augmentation; called on uint8 ``[B, 3, H, W]``, returns float in ``[0, 1]``.

    ``scale``/``shift``: zoom range and the largest shift (share of each side); ``brightness``,
    ``contrast``, ``saturation``: multiplier ranges (hue is kept: a colour names an article);
    ``blur_prob``: how often a 3x3 box blur is blended in (by a random weight); ``lowres_prob`` and
    ``lowres_factor``: down-then-up sampling to that share of the size; ``noise``: the largest Gaussian noise
    std; ``occlude_prob``: chance of one filled rectangle, from 10 % of the width and 5 % of the height up
    to ``occlude_size`` ``(width share, height share)`` (a second one with the same chance again). Runs on
    the CPU, where the loader's ``collate`` calls it; ``generator`` (a CPU ``torch.Generator``) seeds it.
    From a dict with `mmrec.config.from_dict` (unknown keys are errors, lists become tuples).
    """

    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.04
    brightness: tuple[float, float] = (0.85, 1.15)
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    blur_prob: float = 0.4
    lowres_prob: float = 0.2
    lowres_factor: float = 0.6
    noise: float = 0.02
    occlude_prob: float = 0.3
    occlude_size: tuple[float, float] = (0.5, 0.12)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"ScreenAugment takes [batch, 3, height, width] images, got {tuple(images.shape)}")
        x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
        b, _, h, w = x.shape

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return low + (high - low) * torch.rand(b, *shape, generator=generator)

        # affine: zoom about the centre and shift, edge pixels repeated where the view leaves the screen
        zoom = uniform(*self.scale)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 1, 1] = 1 / zoom, 1 / zoom
        theta[:, :, 2] = uniform(-2 * self.shift, 2 * self.shift, 2)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

        # colour: brightness, contrast about each image's mean, saturation about its grey
        x = x * uniform(*self.brightness, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = mean + (x - mean) * uniform(*self.contrast, 1, 1, 1)
        grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:])
        x = grey + (x - grey) * uniform(*self.saturation, 1, 1, 1)

        # resolution: blend in a blurred copy by a random weight; swap in a down-up sampled one now and then
        if self.blur_prob > 0:
            blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            weight = uniform(0, 1, 1, 1, 1) * (torch.rand(b, 1, 1, 1, generator=generator) < self.blur_prob)
            x = torch.lerp(x, blurred, weight)
        if self.lowres_prob > 0 and self.lowres_factor < 1:
            small = F.interpolate(x, scale_factor=self.lowres_factor, mode="area")
            coarse = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
            pick = (torch.rand(b, 1, 1, 1, generator=generator) < self.lowres_prob).float()
            x = torch.lerp(x, coarse, pick)
        if self.noise > 0:
            x = x + torch.randn(x.shape, generator=generator) * uniform(0, self.noise, 1, 1, 1)

        # occlusion: up to two rectangles per image, each filled with one random colour
        ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
        for _ in range(2):
            on = torch.rand(b, generator=generator) < self.occlude_prob
            rw = (uniform(0.1, self.occlude_size[0]) * w).clamp(min=1)
            rh = (uniform(0.05, self.occlude_size[1]) * h).clamp(min=1)
            x0, y0 = uniform(0, 1) * (w - rw), uniform(0, 1) * (h - rh)
            inside = ((xs >= x0.view(b, 1, 1)) & (xs < (x0 + rw).view(b, 1, 1))
                      & (ys >= y0.view(b, 1, 1)) & (ys < (y0 + rh).view(b, 1, 1)) & on.view(b, 1, 1))
            fill = torch.rand(b, 3, 1, 1, generator=generator)
            x = torch.where(inside.unsqueeze(1), fill, x)
        return x.clamp_(0, 1)

