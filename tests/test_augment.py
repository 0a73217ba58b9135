"""ScreenAugment: per-sample pixel changes for screen towers in training, and how CatalogPairs applies them."""
import numpy as np
import pytest
import torch

from mmrec.config import from_dict
from mmrec.fusion.alignment import CatalogPairs
from mmrec.fusion.augment import ScreenAugment

IDENTITY = dict(scale=(1.0, 1.0), shift=0.0, brightness=(1.0, 1.0), contrast=(1.0, 1.0), saturation=(1.0, 1.0),
                blur_prob=0.0, lowres_prob=0.0, noise=0.0, occlude_prob=0.0)


def _screens(n: int = 6) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 48, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_augment_without_changes_returns_the_pixels_scaled():
    x = _screens()
    torch.testing.assert_close(ScreenAugment(**IDENTITY)(x), x.float() / 255, atol=1e-5, rtol=0)


def test_augment_draws_per_sample_and_is_seeded():
    x = _screens(1).expand(8, -1, -1, -1)  # one screen eight times
    augment = ScreenAugment(noise=0.0)  # noise alone would make copies differ
    out = augment(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    differences = [float((out[0] - out[k]).abs().mean()) for k in range(1, 8)]
    assert min(differences) > 0.01  # every copy got its own change
    torch.testing.assert_close(augment(x, torch.Generator().manual_seed(3)), out)


@pytest.mark.parametrize("change", [dict(brightness=(1.5, 1.5)), dict(contrast=(0.5, 0.5)),
                                    dict(saturation=(0.0, 0.0)), dict(scale=(1.3, 1.3)), dict(shift=0.2),
                                    dict(blur_prob=1.0), dict(lowres_prob=1.0), dict(noise=0.2),
                                    dict(occlude_prob=1.0)])
def test_each_change_does_something(change):
    x = _screens()
    out = ScreenAugment(**{**IDENTITY, **change})(x, torch.Generator().manual_seed(0))
    assert float((out - x.float() / 255).abs().mean()) > 1e-3


def test_shift_moves_content_by_at_most_its_share_of_the_side():
    x = torch.zeros(64, 3, 40, 100, dtype=torch.uint8)
    x[:, :, :, 50] = 255  # a white column in the middle
    out = ScreenAugment(**{**IDENTITY, "shift": 0.1})(x, torch.Generator().manual_seed(0))
    column = out[:, 0].mean(dim=1).argmax(dim=1).float()  # where the column went, per sample
    moved = (column - 50).abs()
    assert float(moved.max()) <= 10 + 1 and float(moved.max()) >= 5  # up to 10 % of 100 px, and it does move


def test_augment_needs_trained_towers():
    from mmrec.fusion.screen_tower import ScreenSpaceConfig

    with pytest.raises(ValueError, match="train_towers=True or augment=None"):
        ScreenSpaceConfig(augment=ScreenAugment())
    assert ScreenSpaceConfig(augment=ScreenAugment(), train_towers=True).augment is not None


def test_augment_rejects_bad_input_and_unknown_keys():
    with pytest.raises(ValueError, match="batch, 3, height, width"):
        ScreenAugment()(torch.zeros(3, 48, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="ScreenAugment: unknown key\\(s\\) \\['blur'\\]"):
        from_dict(ScreenAugment, {"blur": 1.0})
    assert from_dict(ScreenAugment, {"scale": [0.8, 1.2]}).scale == (0.8, 1.2)


def test_catalog_pairs_augment_only_pixel_modalities_and_only_in_batches():
    pixels = _screens(4)
    mask = np.ones(4, bool)
    identity = lambda t: t  # noqa: E731  (normalisation left out to see the pixels)
    data = CatalogPairs({"screen": (pixels, mask)}, {"image": (torch.zeros(4, 5), mask)}, {"screen": identity},
                        pairs=("screen-image",), augment={"screen": ScreenAugment(**{**IDENTITY, "noise": 0.5})})
    batch = data.collate([0, 1])
    assert not torch.allclose(batch["screen:pixels"], pixels[:2].float() / 255)
    assert torch.equal(data.pixels["screen"][0], pixels)  # the stored pixels stay as they were
    with pytest.raises(ValueError, match="augment names \\['image'\\], which have no pixels"):
        CatalogPairs({"screen": (pixels, mask)}, {"image": (torch.zeros(4, 5), mask)}, {"screen": identity},
                     pairs=("screen-image",), augment={"image": ScreenAugment()})
