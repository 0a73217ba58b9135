"""Screenshots: overlapping tiles at the tower's input size covering the whole capture, pooled per screen."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mmrec.data import Catalog
from mmrec.encoders import ScreenshotEncoder, TilePool, create_encoder, embed, tile_grid

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}


@pytest.mark.parametrize("height,width,rows,cols", [(2400, 1080, 8, 3), (1080, 1920, 3, 6)])
def test_tiles_cover_phone_and_desktop_captures_with_overlap(height, width, rows, cols):
    h, w, tops, lefts = tile_grid(height, width, tile=224, tiles_across=3, overlap=0.25)
    assert (len(tops), len(lefts)) == (rows, cols)
    assert min(h, w) == 560 and abs(max(h, w) / min(h, w) - max(height, width) / min(height, width)) < 0.01
    for offsets, length in ((tops, h), (lefts, w)):
        assert offsets[0] == 0 and offsets[-1] == length - 224  # edge to edge
        assert max(np.diff(offsets)) <= 224 * 0.75 + 1  # neighbours overlap by at least a quarter
    # text keeps ~5x more pixels per glyph than squashing the whole phone screen into one 224 px input
    assert (560 / 1080) / (224 / 2400) > 5


@pytest.fixture(scope="module")
def screen_encoder(tmp_path_factory):
    config = tmp_path_factory.mktemp("screen") / "mmrec-screen-tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    return create_encoder(f"openclip:{config}@random", "screen", tiles_across=2)


def screenshot(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for y in range(20, height - 20, 40):  # lines of "text"
        draw.rectangle([20, y, int(rng.integers(100, width - 20)), y + 12], fill=tuple(rng.integers(0, 120, 3).tolist()))
    draw.rectangle([width - 30, height - 30, width - 1, height - 1], fill=(255, 0, 0))  # corner marker
    return img


def test_screens_encode_as_one_batch_of_tiles(screen_encoder):
    assert isinstance(screen_encoder, ScreenshotEncoder) and screen_encoder.modality == "screen"
    phone, desktop = screenshot(270, 600, 0), screenshot(480, 270, 1)
    tiles = screen_encoder.tiles(phone)
    h, w, tops, lefts = tile_grid(600, 270, 32, 2, 0.25)
    assert tiles.shape == (len(tops) * len(lefts) + 1, 3, 32, 32)  # + the overview
    red = torch.tensor([1.0, 0, 0]).sub(torch.tensor(screen_encoder.preprocess.mean)).div(
        torch.tensor(screen_encoder.preprocess.std))
    corner = tiles[len(tops) * len(lefts) - 1, :, -1, -1]  # bottom-right pixel of the last grid tile
    torch.testing.assert_close(corner, red, atol=0.05, rtol=0)
    out = screen_encoder.encode([phone, desktop])
    assert out.shape == (2, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    singles = torch.cat([screen_encoder.encode([phone]), screen_encoder.encode([desktop])])
    torch.testing.assert_close(out, singles, atol=1e-5, rtol=1e-4)


def test_attention_pooling_starts_from_the_overview_and_is_trainable():
    tiles = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    tiles[-1] = tiles[2]  # the overview looks like tile 2
    mean = TilePool(8, "mean")
    torch.testing.assert_close(mean(tiles), tiles.mean(0))
    attention = TilePool(8, "attention")
    weights = attention.weights(tiles)
    assert weights.sum().item() == pytest.approx(1.0) and weights[:4].argmax().item() == 2
    attention(tiles).sum().backward()
    assert attention.query.grad is not None and attention.query.grad.abs().sum() > 0


def test_embed_reads_screenshot_files(screen_encoder, tmp_path):
    paths = []
    for k, size in enumerate([(270, 600), (480, 270)]):
        paths.append(str(tmp_path / f"screen{k}.png"))
        screenshot(*size, seed=k).save(paths[-1])
    catalog = Catalog(ids=["a", "b", "c"], titles=[""] * 3, texts=[""] * 3, image_paths=paths + [None])
    result = embed(catalog, screen_encoder, num_workers=0, progress=False)
    assert result.counts["encoded"] == 2 and result.counts["missing"] == 1
    expected = screen_encoder.encode([Image.open(p).convert("RGB") for p in paths]).numpy()
    np.testing.assert_allclose(result.vectors[:2], expected, atol=1e-5)
    with pytest.raises(TypeError, match="screen"):
        create_encoder("timm:resnet18@random", tiles_across=2)
