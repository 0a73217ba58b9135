"""UnifiedSpace: adapters, LiT-style alignment on the synthetic world, save/load identity."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmrec.fusion.adapters import AdapterConfig, create_adapter
from mmrec.fusion.alignment import CatalogPairs, RetrievalValidator, align, decode_resized, retrieval_metrics
from mmrec.space import SpaceConfig, TowerConfig, UnifiedSpace, space_preset, tiny_vit
from mmrec.train import TrainConfig
from text_memo import memoize_text

TINY_VIT = tiny_vit(32, width=64, depth=2, heads=2)
SMALL = {"dim": 32, "adapter_options": {"hidden": 64}}  # the lit-tiny-vit preset at test size, with TINY_VIT


@pytest.mark.parametrize("kind", ["linear", "mlp", "query"])
def test_adapters_map_to_unit_vectors(kind):
    torch.manual_seed(0)
    adapter = create_adapter(AdapterConfig(kind=kind, in_dim=12, out_dim=8, hidden=16, n_heads=2))
    out = adapter(torch.randn(5, 12))
    assert out.shape == (5, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))
    if kind == "query":
        tokens = adapter(torch.randn(5, 7, 12), mask=torch.zeros(5, 7, dtype=torch.bool))
        assert tokens.shape == (5, 8)


def test_adapters_are_registered_by_name():
    from mmrec.fusion.adapters import ADAPTERS

    assert ADAPTERS.names() == ["linear", "mlp", "query"]
    with pytest.raises(ValueError, match="'mlpp' is not a registered adapter; known: .'linear', 'mlp', 'query'."):
        AdapterConfig(kind="mlpp")
    with pytest.raises(ValueError, match="'mlpp' is not a registered adapter"):
        UnifiedSpace(SpaceConfig(towers={"text": TowerConfig(input_dim=4), "image": TowerConfig(input_dim=4)},
                                 adapter="mlpp"))


def test_space_config_rejects_unknown_pair():
    with pytest.raises(ValueError, match="pairs"):
        SpaceConfig(towers={"text": TowerConfig(spec="minilm")}, pairs=("image-text",))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mmrec.datasets.synthetic import WorldConfig, make_world

    return make_world(WorldConfig(seed=3, n_users=50, n_items=240, n_new_items=0, new_interactions_per_user=(0, 0),
                                  missing_image_fraction=0.0, missing_text_fraction=0.0,
                                  # every item framed alike: what a whole-screen tower learns in 15 epochs
                                  distinct_looks=False),
                      tmp_path_factory.mktemp("world"))


def _space(**overrides) -> UnifiedSpace:
    """The lit-tiny-vit preset at test size; its locked MiniLM encodes each text once per session."""
    torch.manual_seed(0)
    space = UnifiedSpace(space_preset("lit-tiny-vit", **{"towers": {"image": TINY_VIT}, **SMALL, **overrides}))
    memoize_text(space.encoders["text"])
    return space


def test_lit_alignment_on_the_synthetic_world(world, tmp_path):
    space = _space()
    catalog = world.catalog
    data = CatalogPairs.from_catalog(space, catalog)
    texts = [catalog.full_text(i) for i in range(len(catalog))]
    paths = catalog.image_paths
    # Validation on the training items from cached tower inputs (the loop's evaluate_fn hook).
    t2i = RetrievalValidator(data.batches(data.rows), [("text", "image")])

    before = t2i(space)
    result = align(space, data, TrainConfig(epochs=20, batch_size=32, lr=2e-3, seed=0, progress=False,
                                            early_stop_metric="t2i_recall@10", patience=20), evaluate_fn=t2i)
    after = {f"t2i_{k}": v for k, v in retrieval_metrics(space.embed_texts(texts), space.embed_images(paths)).items()}
    chance = 10 / len(catalog)
    # A text about an item ranks that item's image in the top 10 far more often than chance (10/240).
    assert after["t2i_recall@10"] > 4 * chance and after["t2i_recall@10"] > before["t2i_recall@10"] + 0.1, \
        (before, after, result.best_epoch)

    space.save_pretrained(tmp_path / "space")
    loaded = UnifiedSpace.from_pretrained(tmp_path / "space")
    memoize_text(loaded.encoders["text"])  # memoised per tower description: a different tower would miss
    torch.testing.assert_close(loaded.embed_texts(texts[:20]), space.embed_texts(texts[:20]), rtol=0, atol=1e-6)
    torch.testing.assert_close(loaded.embed_images(paths[:20]), space.embed_images(paths[:20]), rtol=0, atol=1e-6)
    items, has = loaded.embed_items(catalog.subset(np.arange(20)))
    assert items.shape == (20, 32) and has.all()
    torch.testing.assert_close(items.norm(dim=-1), torch.ones(20))


def test_content_behaviour_alignment_places_unseen_items_by_their_text():
    """Text of items held out of alignment lands near those items' collaborative (BPR) embeddings."""
    from mmrec.datasets.synthetic import WorldConfig, make_world
    from mmrec.recommender import create_model

    world = make_world(WorldConfig(seed=5, n_users=400, n_items=300, n_new_items=0, new_interactions_per_user=(0, 0),
                                   missing_text_fraction=0.0, missing_image_fraction=0.0), None)
    torch.manual_seed(0)
    bpr = create_model("bpr", world.interactions.n_users, world.interactions.n_items, {"dim": 32, "reg_weight": 1e-3})
    bpr.fit(world.interactions, train_config=TrainConfig(epochs=15, batch_size=512, lr=1e-2, seed=0, progress=False))
    behaviour = bpr.item_emb.detach()[: len(world.catalog)]

    torch.manual_seed(0)
    space = UnifiedSpace(space_preset("text-behaviour", towers={"behaviour": TowerConfig(input_dim=32)}, **SMALL))
    held_out = np.random.default_rng(0).permutation(len(world.catalog))[:60]
    mask = np.ones(len(world.catalog), dtype=bool)
    mask[held_out] = False
    data = CatalogPairs.from_catalog(space, world.catalog, vectors={"behaviour": (behaviour, mask)})
    assert len(data) == len(world.catalog) - 60
    batch = data.collate([int(r) for r in data.rows[:8]])
    assert set(batch) == {"text:features", "behaviour:vectors"}

    def held_out_recall(s: UnifiedSpace) -> dict[str, float]:
        with torch.no_grad():
            text = s.project("text", data.features["text"][0][held_out])
            found = retrieval_metrics(text, s.project("behaviour", behaviour[held_out]))
        return {f"t2b_{k}": v for k, v in found.items()}

    before = held_out_recall(space)
    align(space, data, TrainConfig(epochs=30, batch_size=64, lr=2e-3, seed=0, progress=False,
                                   early_stop_metric="t2b_recall@10", patience=30))
    after = held_out_recall(space)
    chance = 10 / 60
    assert after["t2b_recall@10"] > 2 * chance and after["t2b_recall@10"] > before["t2b_recall@10"] + 0.1, (before, after)


def test_pairs_with_partial_coverage_use_masks():
    """Rows lacking one modality still train the pairs they have; a batch marks them with masks."""
    text = torch.randn(6, 4)
    behaviour = torch.randn(6, 3)
    data = CatalogPairs({}, {"text": (text, np.array([1, 1, 1, 1, 0, 0], bool))}, {},
                        vectors={"behaviour": (behaviour, np.array([1, 1, 0, 0, 0, 0], bool))},
                        pairs=["text-behaviour"])
    assert data.rows.tolist() == [0, 1]
    data = CatalogPairs({}, {"text": (text, np.ones(6, bool)), "image": (torch.randn(6, 4), np.ones(6, bool))}, {},
                        vectors={"behaviour": (behaviour, np.array([1, 1, 0, 0, 0, 0], bool))},
                        pairs=["image-text", "text-behaviour"])
    batch = data.collate([0, 2, 3])
    assert data.rows.tolist() == list(range(6)) and batch["behaviour:mask"].tolist() == [True, False, False]
    torch.manual_seed(0)
    space = UnifiedSpace(SpaceConfig(towers={"text": TowerConfig(input_dim=4), "behaviour": TowerConfig(input_dim=3)},
                                     dim=8, pairs=("text-behaviour",)))
    only_missing = {"text:vectors": text[2:4], "behaviour:vectors": behaviour[2:4],
                    "behaviour:mask": torch.tensor([False, False])}
    loss = space.training_step(only_missing)["loss"]
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="no item has both"):
        CatalogPairs({}, {"text": (text, np.array([1, 1, 0, 0, 0, 0], bool))}, {},
                     vectors={"behaviour": (behaviour, np.array([0, 0, 1, 1, 0, 0], bool))}, pairs=["text-behaviour"])


def test_unpaired_rows_are_negatives_only_when_asked():
    """With ``unpaired_negatives`` a row with one side of a pair joins the other side's softmax as a negative
    (the loss rises when that negative looks like a positive); without, it is left out as before."""
    from open_clip.loss import ClipLoss

    text, behaviour = torch.randn(5, 4), torch.randn(5, 3)
    mask = np.array([1, 1, 1, 0, 0], bool)  # rows 3 and 4: text only ("no item")
    data = CatalogPairs({}, {}, {}, vectors={"text": (text, np.ones(5, bool)), "behaviour": (behaviour, mask)},
                        pairs=["text-behaviour"], unpaired=True)
    assert data.rows.tolist() == list(range(5))
    batch = data.collate(list(range(5)))
    losses = {}
    for unpaired in (False, True):
        torch.manual_seed(0)
        space = UnifiedSpace(SpaceConfig(towers={"text": TowerConfig(input_dim=4),
                                                 "behaviour": TowerConfig(input_dim=3)},
                                         dim=8, pairs=("text-behaviour",), unpaired_negatives=unpaired))
        losses[unpaired] = float(space.training_step(batch)["loss"].detach())
        with torch.no_grad():  # the values, not their gradients
            vectors = space.encode_batch(batch)
            t, b = vectors["text"][0], vectors["behaviour"][0]
            scale = space.logit_scale.exp()
            if not unpaired:
                assert losses[False] == pytest.approx(float(ClipLoss()(t[:3], b[:3], scale)), rel=1e-5)
            else:
                labels = torch.arange(3)
                by_hand = (F.cross_entropy(scale * t[:3] @ b[:3].t(), labels)
                           + F.cross_entropy(scale * b[:3] @ t.t(), labels)) / 2
                assert losses[True] == pytest.approx(float(by_hand), rel=1e-5)
                close = space.objective.loss(t[:3], b[:3], scale, only_a=None, only_b=None)
                lookalike = space.objective.loss(torch.cat([t[:3], t[:1]]), torch.cat([b[:3], b[:1]]), scale,
                                            keep=torch.tensor([True, True, True, False]),
                                            only_a=torch.tensor([False, False, False, True]))
                assert float(lookalike) > float(close)
    assert losses[True] > losses[False]


def test_screen_image_alignment_finds_the_item_on_a_new_rendering_of_its_page(world):
    """A trainable screen tower aligned to item photos (pair screen-image) grounds product pages drawn
    with layouts it never saw in training."""
    from mmrec.fusion.alignment import product_pages

    space = _space(towers={"image": TINY_VIT, "screen": tiny_vit((64, 40), width=64, depth=2, heads=2)},
                   pairs=("image-text", "screen-image"))
    catalog = world.catalog
    data = CatalogPairs.from_catalog(space, catalog, renderers={"screen": product_pages(catalog, size=(120, 200))})
    assert data.pixels["screen"][0].shape[-2:] == (64, 40)
    # Layouts and themes not used in training: one rendering picks the epoch, another is the test.
    valid_pages, test_pages = ([product_pages(catalog, size=(120, 200), seed=seed)(code) for code in range(len(catalog))]
                               for seed in (5_000, 10_000))

    def s2i(s: UnifiedSpace, pages) -> dict[str, float]:
        found = retrieval_metrics(s.embed_screens(pages), s.embed_images(catalog.image_paths))
        return {f"s2i_{k}": v for k, v in found.items()}

    # Per-epoch validation from the valid pages and photos decoded once (the loop's evaluate_fn hook).
    screen, image = (space.encoders[m].preprocess for m in ("screen", "image"))
    validate = RetrievalValidator([{"screen:pixels": screen.normalize(decode_resized(valid_pages, screen)[0] / 255),
                                    "image:pixels": image.normalize(data.pixels["image"][0] / 255)}],
                                  [("screen", "image")])
    before = s2i(space, test_pages)
    align(space, data, TrainConfig(epochs=15, batch_size=32, lr=2e-3, seed=0, progress=False, patience=15,
                                   early_stop_metric="s2i_recall@10"), evaluate_fn=validate)
    after = s2i(space, test_pages)
    assert validate(space) == pytest.approx(s2i(space, valid_pages), abs=0.05), "validation tracks embed_screens"
    chance = 10 / len(catalog)
    assert after["s2i_recall@10"] > 4 * chance and after["s2i_recall@10"] > before["s2i_recall@10"] + 0.1, (before, after)


def test_locked_screen_tower_tiles_screens_of_any_size_into_the_space():
    from PIL import Image

    torch.manual_seed(0)
    locked = tiny_vit(32, width=64, depth=2, heads=2, trainable=False)
    space = UnifiedSpace(SpaceConfig(towers={"screen": locked, "text": TowerConfig(input_dim=4)}, dim=16,
                                     pairs=("screen-text",)))
    screens = [Image.new("RGB", (90, 200), (200, 30, 30)), Image.new("RGB", (120, 260), (20, 20, 220))]
    out = space.embed_screens(screens)
    assert out.shape == (2, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    assert not torch.allclose(out[0], out[1])


def test_moving_the_space_moves_what_its_trained_towers_are_fed():
    """``.to()`` (what accelerate's prepare calls) keeps each trained tower's encoder pointed at the tower's
    weights, so embedding after training on a GPU feeds the GPU; adapters and temperature move too."""
    space = UnifiedSpace(space_preset("lit-tiny-vit", towers={"image": TINY_VIT, "text": TowerConfig(input_dim=4)},
                                      dim=8))
    assert space.encoders["image"].device.type == "cpu"
    space.to("meta")
    assert space.encoders["image"].device.type == "meta" and space.device.type == "meta"
    assert all(p.device.type == "meta" for p in space.adapters.parameters())
    assert UnifiedSpace(space.config, device="meta").device.type == "meta"


def test_embed_texts_refuses_a_bare_string_and_a_batch_size_below_one():
    from mmrec.space import SpaceConfig, TowerConfig, UnifiedSpace

    space = UnifiedSpace(SpaceConfig(towers={"text": TowerConfig(spec="minilm"), "tag": TowerConfig(input_dim=3)},
                                     dim=8, pairs=("text-tag",)))
    with pytest.raises(TypeError, match=r"wrap one text as \[text\]"):  # was one vector per character
        space.embed_texts("red floral summer dress")
    for size in (0, -1):  # -1 gave no vectors for two texts, 0 a range() error
        with pytest.raises(ValueError, match="batch_size must be an integer ≥ 1"):
            space.embed_texts(["a", "b"], batch_size=size)
    assert space.embed_texts(["red dress"]).shape == (1, 8)
