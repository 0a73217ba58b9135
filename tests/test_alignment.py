"""The alignment objective, hold-out, validator and presets: pinned values, so a refactor cannot change them."""
import numpy as np
import pytest
import torch

from mmrec.fusion.alignment import CatalogPairs, RetrievalValidator, retrieval_metrics, space_vectors, split_by_group
from mmrec.fusion.clip_losses import MaskedClipLoss
from mmrec.space import SpaceConfig, TowerConfig, UnifiedSpace, space_preset, tiny_vit
from mmrec.train import TrainConfig, fit

# Computed with the loss as it was in mmrec/space.py (UnifiedSpace.clip_loss) before it moved to
# mmrec.fusion.clip_losses: one training step on the fixed batch below, then 3 epochs of fit from there.
PINNED = {
    False: {"loss": 4.678060531616211, "a-b": 3.800267457962036, "b-c": 1.7555865049362183,
            "epochs": [4.678061008453369, 1.7575806379318237, 0.7676092386245728], "weights": 212.99838791135699},
    True: {"loss": 5.999475479125977, "a-b": 5.078741073608398, "b-c": 1.8414685726165771,
           "epochs": [4.070712566375732, 0.9211449064314365, 0.36132529377937317], "weights": 212.82229627296329},
}


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(6, d, generator=generator) for d in (5, 4, 3))
    return {"a:vectors": a, "b:vectors": b, "c:vectors": c,
            "b:mask": torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.bool),
            "c:mask": torch.tensor([0, 1, 1, 1, 1, 1], dtype=torch.bool)}


def _space(unpaired: bool) -> UnifiedSpace:
    torch.manual_seed(0)
    return UnifiedSpace(SpaceConfig(towers={"a": TowerConfig(input_dim=5), "b": TowerConfig(input_dim=4),
                                            "c": TowerConfig(input_dim=3)}, dim=8, adapter="mlp",
                                    adapter_options={"hidden": 16}, pairs=("a-b", "b-c"), pair_weights=(1.0, 0.5),
                                    unpaired_negatives=unpaired))


@pytest.mark.parametrize("unpaired", [False, True])
def test_losses_and_trained_weights_are_the_pinned_values(unpaired):
    """Two weighted pairs with masks, with and without unpaired negatives: the same losses, and the same
    weights after training through the one loop, as before the loss moved."""
    expected = PINNED[unpaired]
    space = _space(unpaired)
    with torch.no_grad():
        out = space.training_step(_batch())
    for key in ("loss", "a-b", "b-c"):
        assert float(out[key]) == pytest.approx(expected[key], rel=1e-6, abs=1e-6), key
    assert float(out["temperature"]) == pytest.approx(0.07)

    batch = _batch()
    ones = np.ones(6, dtype=bool)
    data = CatalogPairs({}, {}, {}, vectors={"a": (batch["a:vectors"], ones),
                                             "b": (batch["b:vectors"], batch["b:mask"].numpy()),
                                             "c": (batch["c:vectors"], batch["c:mask"].numpy())},
                        pairs=["a-b", "b-c"], unpaired=unpaired)
    result = fit(space, data, TrainConfig(epochs=3, batch_size=4, lr=0.01, seed=0, progress=False, cpu=True))
    assert [h["loss"] for h in result.history] == pytest.approx(expected["epochs"], rel=1e-6)
    weights = float(sum(p.double().abs().sum() for p in space.state_dict().values()))
    assert weights == pytest.approx(expected["weights"], rel=1e-7)


def test_masked_clip_loss_is_open_clips_loss_on_the_kept_rows():
    from open_clip.loss import ClipLoss

    generator = torch.Generator().manual_seed(1)
    a, b = (torch.nn.functional.normalize(torch.randn(7, 4, generator=generator), dim=1) for _ in range(2))
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    scale = torch.tensor(10.0)
    loss = MaskedClipLoss()
    assert isinstance(loss, ClipLoss)
    assert float(loss(a, b, scale, keep)) == float(ClipLoss()(a[keep], b[keep], scale))
    assert float(loss(a, b, scale)) == float(ClipLoss()(a, b, scale))
    # Rows with only ``a`` become negatives of every kept ``b`` row: a copy of a positive raises the loss.
    only_a = ~keep
    a_lookalike = a.clone()
    a_lookalike[1] = b[0]
    assert float(loss(a_lookalike, b, scale, keep, only_a=only_a)) > float(loss(a, b, scale, keep, only_a=only_a))
    assert float(loss(a, b, scale, torch.zeros(7, dtype=torch.bool))) == 0.0


def test_split_by_group_deals_whole_groups_in_a_seeded_order():
    groups = np.array(["a", "b", "a", "c", "d", "b", "e", "c", "f", "a", "g", "h"])
    eligible = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1], dtype=bool)
    # Item counts: test takes groups until it has at least 3 items, then valid 2; item 8 is not eligible.
    held = split_by_group(groups, {"test": 3, "valid": 2}, seed=0, eligible=eligible)
    assert {k: v.tolist() for k, v in held.items()} == {"test": [3, 7, 6], "valid": [4, 11],
                                                         "train": [10, 0, 2, 9, 1, 5]}
    # Shares of the groups (8 groups: 2 each), valid dealt first.
    held = split_by_group(groups, {"valid": 0.25, "test": 0.25}, seed=1)
    assert {k: v.tolist() for k, v in held.items()} == {"valid": [8, 0, 2, 9], "test": [1, 5, 6],
                                                         "train": [3, 7, 10, 4, 11]}
    assert list(held) == ["valid", "test", "train"]
    for name in held:  # no group in two sets
        others = np.concatenate([held[o] for o in held if o != name])
        assert not set(groups[held[name]]) & set(groups[others])
    with pytest.raises(ValueError, match=r"sizes\['valid'\] = 1.5"):
        split_by_group(groups, {"valid": 1.5}, seed=0)
    with pytest.raises(ValueError, match="eligible has 3 entries"):
        split_by_group(groups, {"valid": 2}, seed=0, eligible=[True, False, True])


def _pairs() -> CatalogPairs:
    """Eight items: tower-less image vectors and text features, item 3 without a text."""
    generator = torch.Generator().manual_seed(2)
    text = torch.randn(8, 6, generator=generator)
    image = torch.randn(8, 5, generator=generator)
    has_text = np.ones(8, dtype=bool)
    has_text[3] = False
    return CatalogPairs({}, {"text": (text, has_text)}, {}, vectors={"image": (image, np.ones(8, dtype=bool))},
                        pairs=["image-text"])


def test_retrieval_validator_scores_the_held_out_rows_that_have_both_sides():
    data = _pairs()
    torch.manual_seed(0)
    space = UnifiedSpace(SpaceConfig(towers={"image": TowerConfig(input_dim=5), "text": TowerConfig(input_dim=6)},
                                     dim=4))
    held_out = [0, 2, 3, 5, 6, 7]
    batches = list(data.batches(held_out, batch_size=4))
    assert [len(b["text:features"]) for b in batches] == [4, 2]
    assert batches[0]["text:mask"].tolist() == [True, True, False, True] and "image:mask" in batches[0]
    validator = RetrievalValidator(batches, [("text", "image"), ("image", "text")], ks=(1, 2))
    assert validator.n_rows == 5
    got = validator(space)
    with torch.no_grad():
        rows = [0, 2, 5, 6, 7]  # item 3 has no text
        text = space.project("text", data.features["text"][0][rows])
        image = space.project("image", torch.as_tensor(data.vectors["image"][0])[rows])
    expected = {**{f"t2i_{k}": v for k, v in retrieval_metrics(text, image, ks=(1, 2)).items()},
                **{f"i2t_{k}": v for k, v in retrieval_metrics(image, text, ks=(1, 2)).items()}}
    assert got == expected
    vectors, has = space_vectors(space, data.batches(held_out), "text")
    assert vectors.shape == (6, 4) and has.tolist() == [True, True, False, True, True, True]
    with pytest.raises(ValueError, match="distinct first letters"):
        RetrievalValidator(batches, [("text", "image"), ("title", "image")])


def test_presets_are_the_configs_the_toolkit_wrote_out():
    vit = {"model_kwargs": {"img_size": [96, 64], "patch_size": 8, "embed_dim": 192, "depth": 4, "num_heads": 3}}
    lit = SpaceConfig(towers={"image": TowerConfig("timm:vit_tiny_patch16_224@random", vit, True),
                              "text": TowerConfig("minilm")}, dim=256, adapter="mlp")
    assert space_preset("lit-tiny-vit") == lit
    small = space_preset("lit-tiny-vit", towers={"image": tiny_vit(32, width=64, depth=2, heads=2)}, dim=32)
    assert list(small.towers) == ["image", "text"] and small.dim == 32 and small.towers["text"].spec == "minilm"
    assert small.towers["image"].options == {"model_kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 64,
                                                              "depth": 2, "num_heads": 2}}
    behaviour = space_preset("text-behaviour", towers={"text": TowerConfig(input_dim=384)})
    assert behaviour == SpaceConfig(towers={"text": TowerConfig(input_dim=384), "behaviour": TowerConfig(input_dim=64)},
                                    dim=256, adapter="mlp", pairs=("text-behaviour",))
    with pytest.raises(ValueError, match="space preset 'lit' is unknown"):
        space_preset("lit")
    with pytest.raises(ValueError, match="unknown key"):
        space_preset("lit-tiny-vit", dimension=3)
    with pytest.raises(ValueError, match="pairs"):
        space_preset("lit-tiny-vit", pairs=("image-screen",))


def test_align_run_file_is_a_preset_with_settings_over_it(tmp_path):
    from mmrec.cli.align import AlignRunConfig
    from mmrec.config import load_yaml

    run_file = tmp_path / "align.yaml"
    run_file.write_text("space:\n  dim: 32\n  towers:\n    image: {spec: 'timm:vit_tiny_patch16_224@random', "
                        "trainable: true, options: {model_kwargs: {img_size: 32}}}\n")
    config = load_yaml(AlignRunConfig, run_file).space_config()
    assert config == space_preset("lit-tiny-vit", dim=32, towers={"image": TowerConfig(
        "timm:vit_tiny_patch16_224@random", {"model_kwargs": {"img_size": 32}}, True)})
    assert AlignRunConfig().space_config() == space_preset("lit-tiny-vit")
    run_file.write_text("preset: null\nspace: {towers: {a: {input_dim: 3}, b: {input_dim: 2}}, pairs: [a-b]}\n")
    assert load_yaml(AlignRunConfig, run_file).space_config().pairs == ("a-b",)
    for text, error in (("space: {dimm: 3}\n", "unknown key"), ("preset: lit\n", "space preset 'lit' is unknown"),
                        ("valid_fraction: 1.5\n", "valid_fraction")):
        run_file.write_text(text)
        with pytest.raises(ValueError, match=error):
            load_yaml(AlignRunConfig, run_file)


def test_train_align_refuses_pairs_a_catalog_cannot_give(tmp_path, capsys):
    from mmrec.cli import main

    code = main(["train", "align", "--preset", "text-behaviour", "--data", "synthetic", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "['behaviour']" in err and "vectors=" in err and len(err.strip().splitlines()) == 1
