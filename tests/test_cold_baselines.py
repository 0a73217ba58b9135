"""Cold-start baselines on the synthetic world: they rank never-bought items from content better than
random, give every cold item a finite score, round-trip through save/load, and warm up via update().
The training-free heuristics (history content affinity, + content-neighbour popularity) equal a brute-force
computation, and the benchmark chooses the affinity's power on cold valid."""
import copy

import numpy as np
import pytest
import torch

from mmrec.data import Interactions
from mmrec.datasets.synthetic import CATEGORIES, COLOURS, PATTERNS, SEASONS, WorldConfig, make_world
from mmrec.evaluate import evaluate
from mmrec.recommender import Recommender, create_model
from mmrec.splits import Split
from mmrec.train import TrainConfig

CONTENT_MODELS = ["content_knn", "dropoutnet", "vbpr", "clcrec"]
SMALL = {"dropoutnet": {"bpr_epochs": 15, "hidden": 64, "out_dim": 32, "dim": 32},
         "vbpr": {"dim": 32, "content_factors": 32}, "clcrec": {"dim": 32, "hidden": 64}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world_split():
    """The world's new items are the cold items; their future purchases (by users with history) are test."""
    world = make_world(WorldConfig(seed=1, n_users=300, n_items=200, n_new_items=60,
                                   interactions_per_user=(8, 20), new_interactions_per_user=(2, 5)), None)
    attrs = world.catalog.attributes
    # Content = one-hot of the true attributes plus noise: what a good encoder would recover.
    values = {"category": CATEGORIES, "colour": list(COLOURS), "pattern": PATTERNS, "season": SEASONS}
    onehot = np.concatenate([(attrs[name][:, None] == np.asarray(vals)[None, :]).astype(np.float32)
                             for name, vals in values.items()], 1)
    rng = np.random.default_rng(0)
    content = onehot + 0.3 * rng.standard_normal(onehot.shape).astype(np.float32)
    empty = world.new_item_interactions.select(np.zeros(len(world.new_item_interactions), bool))
    split = Split(world.interactions, empty, world.new_item_interactions,
                  np.zeros(0, np.int64), np.asarray(world.new_item_codes))
    return split, content


def fitted(name, split, content):
    torch.manual_seed(0)
    model = create_model(name, split.train.n_users, split.train.n_items, SMALL.get(name))
    model.set_content(content)
    model.fit(split.train, train_config=TrainConfig(epochs=20, batch_size=256, lr=5e-3, progress=False))
    return model


@pytest.fixture(scope="module")
def models(world_split):
    split, content = world_split
    return {name: fitted(name, split, content) for name in ["random", *CONTENT_MODELS]}


@pytest.mark.parametrize("name", CONTENT_MODELS)
def test_beats_random_on_cold_items(name, models, world_split):
    split, _ = world_split
    random_ndcg = evaluate(models["random"], split, on="test", ks=(10,), candidates="cold")["ndcg@10"]
    ndcg = evaluate(models[name], split, on="test", ks=(10,), candidates="cold")["ndcg@10"]
    assert ndcg > 2.0 * random_ndcg, (name, ndcg, random_ndcg)


@pytest.mark.parametrize("name", ["random", *CONTENT_MODELS])
def test_cold_scores_finite_and_save_load(name, models, world_split, tmp_path):
    split, _ = world_split
    model = models[name]
    users = torch.arange(20)
    scores = model.score(users)
    assert scores.shape == (20, split.train.n_items)
    assert torch.isfinite(scores[:, torch.as_tensor(split.cold_test_items)]).all()
    model.save_pretrained(tmp_path / name)
    loaded = Recommender.from_pretrained(tmp_path / name)
    assert torch.allclose(scores, loaded.score(users), atol=1e-5)
    codes, _ = loaded.recommend(users, k=5, candidates=split.cold_test_items)
    assert set(codes.flatten().tolist()) <= set(split.cold_test_items.tolist())


def test_random_is_seeded():
    a, b, c = (create_model("random", 5, 7, {"seed": s}) for s in (0, 0, 1))
    users = torch.arange(5)
    assert torch.equal(a.score(users), b.score(users)) and not torch.equal(a.score(users), c.score(users))


@pytest.mark.parametrize("name", ["dropoutnet", "vbpr", "clcrec"])
def test_update_folds_in_buyers(name, models, world_split):
    """After update() a cold item's buyers are seen, and the item's scores change for other users."""
    split, _ = world_split
    model = copy.deepcopy(models[name])
    item = int(split.cold_test_items[0])
    buyers = split.test.users[split.test.items == item][:2]
    before = model.score(torch.arange(split.train.n_users))[:, item].clone()
    model.update(Interactions(buyers, np.full(len(buyers), item), split.train.user_ids, split.train.item_ids))
    after = model.score(torch.arange(split.train.n_users))[:, item]
    assert not torch.allclose(before, after) and torch.isfinite(after).all()
    seen = model.seen_indices[model.seen_indptr[buyers[0]]:model.seen_indptr[buyers[0] + 1]]
    assert item in seen.tolist()


def test_content_errors():
    model = create_model("vbpr", 4, 3)
    with pytest.raises(ValueError, match="n_items=3"):
        model.set_content(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="not finite"):
        model.set_content(np.full((3, 5), np.nan))
    train = Interactions(np.array([0, 1]), np.array([0, 1]), ["a", "b", "c", "d"], ["x", "y", "z"])
    with pytest.raises(RuntimeError, match="set_content"):
        model.fit(train, train_config=TrainConfig(epochs=1, progress=False))


# ------------------------------------------------------------------ training-free heuristics (issue 20)

def _tiny():
    """4 users × 6 items with 3-d content (item 5 has none); items 4 and 5 are cold."""
    rng = np.random.default_rng(3)
    content = rng.standard_normal((6, 3)).astype(np.float32)
    content[5] = 0.0
    train = Interactions(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 2, 0, 3, 1]),
                         np.array(list("abcd"), dtype=object), np.array([f"i{i}" for i in range(6)], dtype=object))
    return train, content


@pytest.mark.parametrize("dense_mb", [0, 1])  # scored from the content, or from the item × item matrix
def test_affinity_equals_brute_force(dense_mb):
    train, content = _tiny()
    model = create_model("affinity", 4, 6, {"power": 3.0, "dense_mb": dense_mb})
    model.set_content(content)
    model.fit(train)
    assert (model.pair_affinity() is None) == (dense_mb == 0)
    unit = content / np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-12)
    expected = np.zeros((4, 6))
    for u in range(4):
        history = sorted(set(train.items[train.users == u].tolist()))
        for i in range(6):
            if history:
                expected[u, i] = np.mean([max(0.0, float(unit[j] @ unit[i])) ** 3 for j in history])
    scores = model.score(torch.arange(4)).numpy()
    assert np.allclose(scores, expected, atol=1e-5)
    assert np.allclose(model.score(torch.arange(4), torch.tensor([4, 1])).numpy(), expected[:, [4, 1]], atol=1e-5)


def test_affinity_pop_adds_content_neighbour_popularity():
    train, content = _tiny()
    model = create_model("affinity_pop", 4, 6, {"power": 2.0, "weight": 0.5, "neighbours": 2})
    model.set_content(content)
    model.fit(train)
    counts = np.bincount(train.items, minlength=6)
    unit = content / np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-12)
    pop = np.zeros(6)
    for i in range(5):  # item 5 has no content: no neighbours
        warm = [j for j in range(6) if counts[j] > 0 and j != i]
        nearest = sorted(warm, key=lambda j: -float(unit[i] @ unit[j]))[:2]
        pop[i] = np.mean([np.log1p(counts[j]) for j in nearest])
    pop /= pop.max()
    assert np.allclose(model.popularity.numpy(), pop, atol=1e-5) and pop[4] > 0  # a cold item has a value
    plain = create_model("affinity", 4, 6, {"power": 2.0})
    plain.set_content(content)
    plain.fit(train)
    users = torch.arange(4)
    assert torch.allclose(model.score(users), plain.score(users) + 0.5 * torch.as_tensor(pop, dtype=torch.float32),
                          atol=1e-5)


@pytest.mark.parametrize("name", ["affinity", "affinity_pop"])
def test_heuristics_rank_cold_items_and_save_load(name, world_split, tmp_path):
    split, content = world_split
    model = create_model(name, split.train.n_users, split.train.n_items)
    model.set_content(content)
    model.fit(split.train)
    random_model = create_model("random", split.train.n_users, split.train.n_items)
    random_model.fit(split.train)
    random_ndcg = evaluate(random_model, split, on="test", ks=(10,), candidates="cold")["ndcg@10"]
    assert evaluate(model, split, on="test", ks=(10,), candidates="cold")["ndcg@10"] > 2.0 * random_ndcg
    model.save_pretrained(tmp_path / name)
    users = torch.arange(10)
    assert torch.allclose(model.score(users), Recommender.from_pretrained(tmp_path / name).score(users), atol=1e-6)
    with pytest.raises(ValueError, match="power"):
        create_model(name, 4, 6, {"power": 0.0})


def test_power_is_chosen_on_cold_valid(world_split):
    """The benchmark's grid search picks the power with the best cold *valid* Recall@20 (never test)."""
    import argparse
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "coldstart_hm.py"
    spec = importlib.util.spec_from_file_location("coldstart_hm_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.VARIANTS["affinity"][2]["power"] == [1, 2, 4, 6, 8, 12]
    split, content = world_split
    cold = split.cold_test_items
    half = len(cold) // 2  # the world's new items: half as cold valid, half as cold test
    is_valid = np.isin(split.test.items, cold[:half])
    view = Split(split.train, split.test.select(is_valid), split.test.select(~is_valid), cold[:half], cold[half:])
    args = argparse.Namespace(epochs=1, eval_every=1, patience=0, batch_size=256, lr=5e-3)
    chosen, searched = bench.search_grid("affinity", view, content, 0, args, [{"power": p} for p in (1, 4, 12)])
    values = {g["config"]["power"]: g["valid_cold_recall@20"] for g in searched}
    assert chosen["power"] == max(values, key=values.get) and len(values) == 3
    for power, value in values.items():
        model = create_model("affinity", view.train.n_users, view.train.n_items, {"power": power})
        model.set_content(content)
        model.fit(view.train)
        assert value == pytest.approx(evaluate(model, view, on="valid", ks=(20,), candidates="cold")["recall@20"])
