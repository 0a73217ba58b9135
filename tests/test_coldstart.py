"""The cold-start fusion recommender (vae_fusion) on the synthetic fashion world, whose new items and user
tastes are known: taste-matching new items rank above mismatching ones, items can be added and warmed up
without retraining, save/load round-trips, items without content still get vectors, ablations work."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed

from mmrec.data import Interactions
from mmrec.datasets.synthetic import WorldConfig, make_world
from mmrec.fusion.coldstart import VAEFusion
from mmrec.recommender import Recommender, create_model
from mmrec.train import TrainConfig

ATTRIBUTES = ("category", "colour", "pattern", "season")
N_USERS, N_WARM, N_NEW = 240, 160, 50


def one_hot_content(catalog) -> np.ndarray:
    """Attribute one-hots: the item's content as a text tower would summarise it."""
    cols = []
    for name in ATTRIBUTES:
        values = np.asarray(sorted(set(catalog.attributes[name])), dtype=object)
        cols.append((catalog.attributes[name][:, None] == values[None, :]).astype(np.float32))
    return np.concatenate(cols, 1)


def taste_agreement(world, model: Recommender, items: np.ndarray, margin: float = 1.0) -> float:
    """Share of (user, item pair) where the model orders two items as the user's latent taste does
    (popularity removed), over pairs whose taste differs by more than ``margin``. Chance is 0.5."""
    users = np.arange(world.config.n_users)
    with torch.no_grad():
        scores = model.score(torch.as_tensor(users))[:, torch.as_tensor(items)].numpy()
    taste = world.affinity(users, items) - world.item_popularity[items]
    a, b = np.triu_indices(len(items), 1)
    d_model, d_taste = scores[:, a] - scores[:, b], taste[:, a] - taste[:, b]
    clear = np.abs(d_taste) > margin
    return float(((d_model > 0) == (d_taste > 0))[clear].mean())


def train(interactions: Interactions, content: np.ndarray, epochs: int = 20, **config) -> VAEFusion:
    """Fit vae_fusion on ``interactions`` (whose item vocabulary may include cold items)."""
    set_seed(0)
    model = create_model("vae_fusion", interactions.n_users, interactions.n_items,
                         {"content_dim": content.shape[1], **config})
    model.set_content(content)
    model.fit(interactions, train_config=TrainConfig(epochs=epochs, batch_size=512, lr=5e-3, progress=False))
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world():
    return make_world(WorldConfig(seed=0, n_users=N_USERS, n_items=N_WARM, n_new_items=N_NEW), None)


@pytest.fixture(scope="module")
def content(world) -> np.ndarray:
    return one_hot_content(world.catalog)


@pytest.fixture(scope="module")
def warm_only(world):
    """Training purchases re-coded to the warm items alone, so the new items arrive later by add_items."""
    inter = world.interactions
    return Interactions(inter.users, inter.items, inter.user_ids, inter.item_ids[:N_WARM], inter.timestamps)


@pytest.fixture(scope="module")
def fitted(world, warm_only, content) -> VAEFusion:
    return train(warm_only, content[:N_WARM])


def test_new_items_added_without_retraining_rank_by_taste(world, fitted, content):
    model = copy.deepcopy(fitted)
    before = {k: v.clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        old_scores = model.score(torch.arange(N_USERS)).clone()
    new_ids = world.catalog.ids[N_WARM:]
    codes = model.add_items(new_ids, content[N_WARM:])
    assert list(codes) == list(range(N_WARM, N_WARM + N_NEW))
    assert model.n_items == N_WARM + N_NEW and list(model.item_ids[N_WARM:]) == list(new_ids)
    after = dict(model.named_parameters())
    assert set(after) == set(before)
    for name, value in before.items():  # nothing trained; the ID table only gains zero rows
        np.testing.assert_array_equal(after[name].detach()[tuple(slice(0, n) for n in value.shape)], value.detach())
    assert (after["item_emb"][N_WARM:] == 0).all()
    with torch.no_grad():
        scores = model.score(torch.arange(N_USERS))
    torch.testing.assert_close(scores[:, :N_WARM], old_scores)
    assert torch.isfinite(scores).all() and scores[:, N_WARM:].std() > 0
    top, _ = model.recommend(np.arange(10), k=5, candidates="cold")
    assert set(top.flatten().tolist()) <= set(codes.tolist())
    # The ground truth: taste-matching new items above mismatching ones, clearly more often than chance.
    assert taste_agreement(world, model, codes) > 0.65


def test_cold_items_in_the_training_vocabulary(world, content):
    model = train(world.interactions, content, epochs=10)
    cold = world.new_item_codes
    assert not model.has_id[cold].any() and (model.item_emb[cold] == 0).all()  # never trained
    assert taste_agreement(world, model, cold) > 0.65
    warm_codes, _ = model.recommend(np.arange(5), k=20, candidates="warm")
    assert not np.isin(warm_codes.numpy(), cold).any()


def test_update_warms_items_up_without_training(world, fitted, content):
    model = copy.deepcopy(fitted)
    model.add_items(world.catalog.ids[N_WARM:], content[N_WARM:])
    params = {k: v.clone() for k, v in model.named_parameters()}
    future = world.new_item_interactions
    item = int(np.bincount(future.items).argmax())
    with torch.no_grad():
        g_before = float(model.item_vectors()["g"][item])
        learned_before = model.item_vectors()["learned"][item].clone()
    added = model.update(future)
    assert added == len(future.unique_pairs())
    assert model.counts[item] == np.bincount(future.items)[item]
    with torch.no_grad():
        vectors = model.item_vectors()
    # A folded-in embedding does not move the gate (only training does); it changes the learned vector.
    assert float(vectors["g"][item]) == pytest.approx(g_before)
    assert not torch.allclose(vectors["learned"][item], learned_before)  # its buyers reach it
    folded = torch.zeros(model.n_items, dtype=torch.bool)
    folded[np.unique(future.items)] = True
    assert torch.all(model.item_emb[folded].norm(dim=1) > 0)  # new items with buyers got an embedding
    for name, value in params.items():
        now = dict(model.named_parameters())[name]
        assert torch.equal(now[~folded], value[~folded]) if name == "item_emb" else torch.equal(now, value)
    buyer = int(future.users[future.items == item][0])
    top, values = model.recommend([buyer], k=model.n_items, exclude_seen=True)
    assert item not in top.tolist() and top[values == float("-inf")].eq(-1).all()  # now seen: excluded
    with pytest.raises(KeyError, match="unknown to the model"):
        model.update(Interactions.from_ids(["U00000"], ["NOPE"], user_ids=model.user_ids))


def test_save_load_round_trip_with_added_items(tmp_path, world, fitted, content):
    model = copy.deepcopy(fitted)
    model.add_items(world.catalog.ids[N_WARM:], content[N_WARM:])
    model.update(world.new_item_interactions.select(np.arange(20)))
    model.save_pretrained(tmp_path / "m")
    loaded = Recommender.from_pretrained(tmp_path / "m")
    assert isinstance(loaded, VAEFusion) and loaded.n_items == N_WARM + N_NEW
    assert list(loaded.item_ids) == list(model.item_ids)
    users = torch.arange(N_USERS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.score(users), model.score(users), rtol=0, atol=0)
    for candidates in ("all", "cold", "warm"):
        ours = loaded.recommend(np.arange(30), k=10, candidates=candidates)[0]
        assert torch.equal(ours, model.recommend(np.arange(30), k=10, candidates=candidates)[0])
    more = loaded.add_items(["EXTRA"], content[:1])  # a loaded model keeps growing
    assert more.tolist() == [N_WARM + N_NEW]


def test_item_without_content_still_gets_a_vector(fitted, content):
    model = copy.deepcopy(fitted)
    with pytest.raises(ValueError, match="NaN or infinite"):  # a NaN vector is a bug upstream, never a silent zero
        model.add_items(["NAN"], np.full((1, content.shape[1]), np.nan))
    assert model.n_items == fitted.n_items
    huge = np.full((1, content.shape[1]), 1e38, np.float32)  # finite, but its norm is not in float32
    code = model.add_items(["HUGE"], huge)[0]
    assert torch.equal(model.content[code].sign(), torch.ones(content.shape[1]))  # was zeroed: "no content"
    codes = model.add_items(["BLANK", "BLANK2"], np.zeros((2, content.shape[1])))
    vectors = model.item_vectors()["fused"][torch.as_tensor(codes)]
    assert torch.isfinite(vectors).all() and (vectors.norm(dim=1) > 0).all()
    with torch.no_grad():
        assert torch.isfinite(model.score(torch.arange(5))).all()
    assert model.explain(0, int(codes[0])) and all(e["similarity"] == 0 for e in model.explain(0, int(codes[0])))


def test_explain_and_unknown_user_fallback(world, fitted):
    model = fitted
    codes, _ = model.recommend([3], k=1)
    item = int(codes[0, 0])
    reasons = model.explain(3, item, n=3, catalog=world.catalog)
    history = set(model.seen_indices[model.seen_indptr[3]:model.seen_indptr[4]].tolist())
    assert 1 <= len(reasons) <= 3 and {r["item"] for r in reasons} <= history
    sims = [r["similarity"] for r in reasons]
    assert sims == sorted(sims, reverse=True)
    for r in reasons:
        for name, value in r["shared"].items():
            assert world.catalog.attributes[name][item] == value == world.catalog.attributes[name][r["item"]]
    fallback = model.recommend_for_unknown(k=5)
    assert fallback["fallback"] == "popular_by_content" and len(fallback["items"]) == 5
    assert np.all(np.diff(fallback["scores"]) <= 0)


@pytest.mark.parametrize("flags", [{"vae": False}, {"gate": False}, {"ranking_loss": False}, {"prior_sample": True},
                                   {"posterior_rank": True}])
def test_ablation_flags(world, warm_only, content, flags):
    model = create_model("vae_fusion", N_USERS, N_WARM, flags)  # content_dim taken from set_content
    model.set_content(content[:N_WARM])
    assert model.config.content_dim == content.shape[1]
    result = model.fit(warm_only, train_config=TrainConfig(epochs=2, batch_size=1024, progress=False))
    last = result.history[-1]
    assert ("rank_generated" in last) == flags.get("ranking_loss", True)
    assert ("rank_posterior" in last) == flags.get("posterior_rank", False)
    if flags.get("vae", True) is False:
        assert last["kl"] == 0.0 and "prior" not in dict(model.generator.named_children())
    model.eval()
    codes = model.add_items(["X1"], content[N_WARM:N_WARM + 1])
    vectors = model.item_vectors()
    if flags.get("gate", True) is False:
        torch.testing.assert_close(vectors["fused"][:N_WARM], vectors["learned"][:N_WARM])
        torch.testing.assert_close(vectors["fused"][codes], vectors["generated"][codes])
    assert torch.isfinite(vectors["fused"]).all()


def test_bad_input_is_refused(fitted, content, warm_only):
    model = create_model("vae_fusion", N_USERS, N_WARM, {"content_dim": content.shape[1]})
    with pytest.raises(RuntimeError, match="set_content"):
        model.fit(warm_only, train_config=TrainConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match="content vectors have shape"):
        model.set_content(content[:N_WARM, :5])
    with pytest.raises(ValueError, match="unknown key"):
        create_model("vae_fusion", 2, 2, {"latent": 3})
    clone = copy.deepcopy(fitted)
    with pytest.raises(ValueError, match="'S000001' is already in the model"):
        clone.add_items(["S000001"], content[:1])
    with pytest.raises(ValueError, match="'Z' is given twice"):
        clone.add_items(["Z", "Z"], content[:2])
    with pytest.raises(ValueError, match="candidates must be"):
        clone.recommend([0], k=3, candidates="new")


def test_history_affinity_matrix_and_pairs_agree_and_a_positive_never_explains_itself():
    from mmrec.fusion.cold_vae import history_affinity, history_affinity_pairs

    content = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    indptr, indices = torch.tensor([0, 2, 2, 5]), torch.tensor([0, 1, 3, 4, 5])  # user 1 has no history
    users = torch.tensor([0, 1, 2])
    full = history_affinity(indptr, indices, users, content, 3.0, chunk=2)
    expected = torch.stack([(content[indices[indptr[u]:indptr[u + 1]]] @ content.t()).clamp(min=0).pow(3).mean(0)
                            if indptr[u + 1] > indptr[u] else torch.zeros(6) for u in users.tolist()])
    torch.testing.assert_close(full, expected)
    items = torch.tensor([2, 2, 2])  # not in any history: the pairs equal the matrix
    torch.testing.assert_close(history_affinity_pairs(indptr, indices, users, items, content, 3.0), full[:, 2])
    # Item 3 is in user 2's history: it is left out, so the mean runs over items 4 and 5 only.
    own = history_affinity_pairs(indptr, indices, torch.tensor([2]), torch.tensor([3]), content, 3.0)
    torch.testing.assert_close(own, (content[[4, 5]] @ content[3]).clamp(min=0).pow(3).mean().reshape(1))


def _random_history(n_items: int, n_users: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 6, (n_users,), generator=gen)
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
    indices = torch.cat([torch.randperm(n_items, generator=gen)[:int(length)] for length in lengths])
    return indptr, indices


def test_affinity_graph_is_exact_when_k_covers_every_item_and_close_when_truncated():
    from mmrec.fusion.cold_vae import (AffinityGraph, history_affinity, history_affinity_candidates,
                                       history_affinity_pairs)

    n, power = 40, 6.0
    content = torch.nn.functional.normalize(torch.randn(n, 5, generator=torch.Generator().manual_seed(1)), dim=1)
    indptr, indices = _random_history(n, 12, seed=2)
    users = torch.arange(12)
    exact = history_affinity(indptr, indices, users, content, power)
    graph = AffinityGraph(content, power, k=n, block=7)  # blocks of 7 rows: never n × n at once
    assert graph.neighbours.shape == (n, n) and graph.nnz() == n * n
    torch.testing.assert_close(history_affinity(indptr, indices, users, content, power, graph=graph), exact)
    items = torch.tensor([3, 0, 17])
    torch.testing.assert_close(history_affinity(indptr, indices, users, content, power, items, graph=graph),
                               exact[:, items])
    pair_items = torch.randint(0, n, (12,), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(history_affinity_pairs(indptr, indices, users, pair_items, content, power, graph=graph),
                               history_affinity_pairs(indptr, indices, users, pair_items, content, power))
    torch.manual_seed(0)
    sampled_graph = history_affinity_pairs(indptr, indices, users, pair_items, content, power, sample=2, graph=graph)
    torch.manual_seed(0)
    torch.testing.assert_close(sampled_graph, history_affinity_pairs(indptr, indices, users, pair_items, content,
                                                                     power, sample=2))
    # Truncated: each (history item, item) weight lost is at most the item's k-th neighbour weight.
    k = 8
    small = AffinityGraph(content, power, k=k, block=7)
    assert small.neighbours.shape == (n, k) and small.nnz() == n * k
    torch.testing.assert_close(small.lookup(torch.arange(n), torch.arange(n)), torch.ones(n))  # counts itself
    approx = history_affinity(indptr, indices, users, content, power, graph=small)
    bound = small.weights.min(1).values  # per item: its k-th weight bounds any pair left out
    assert (approx <= exact + 1e-6).all() and (exact - approx <= bound.unsqueeze(0) + 1e-6).all()
    candidates = torch.randint(0, n, (12, 4), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(history_affinity_candidates(indptr, indices, users, candidates, content, power,
                                                           graph=small), torch.gather(approx, 1, candidates))


def test_affinity_graph_grows_like_a_fresh_build():
    from mmrec.fusion.cold_vae import AffinityGraph

    content = torch.nn.functional.normalize(torch.randn(30, 6, generator=torch.Generator().manual_seed(5)), dim=1)
    grown = AffinityGraph(content[:22], 4.0, k=5, block=4)
    grown.extend(content)  # 8 new items: their own lists, and a place in old lists they beat
    fresh = AffinityGraph(content, 4.0, k=5, block=4)
    assert torch.equal(grown.neighbours, fresh.neighbours)
    torch.testing.assert_close(grown.weights, fresh.weights)


def test_vae_fusion_with_affinity_graph(tmp_path, world, warm_only, content):
    model = train(warm_only, content[:N_WARM], epochs=2, affinity_k=12)
    users = torch.arange(N_USERS)
    exact = copy.deepcopy(model)
    exact.config = type(model.config)(**{**vars(model.config), "affinity_k": 0})
    with torch.no_grad():
        scores, reference = model.score(users), exact.score(users)
        assert (scores <= reference + 1e-4).all()  # truncation only drops non-negative terms
        candidates = torch.randint(0, N_WARM, (N_USERS, 7), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(model.score_candidates(users, candidates), torch.gather(scores, 1, candidates))
    codes = torch.as_tensor(model.add_items(world.catalog.ids[N_WARM:], content[N_WARM:]))
    graph = model.affinity_graph()
    assert graph.n == N_WARM + N_NEW and graph.neighbours.shape == (N_WARM + N_NEW, 12)
    assert all(int(c) in graph.neighbours[c].tolist() for c in codes)  # each new item has its own list
    model.update(world.new_item_interactions.select(np.arange(20)))
    model.save_pretrained(tmp_path / "m")
    loaded = Recommender.from_pretrained(tmp_path / "m")
    assert loaded.config.affinity_k == 12
    with torch.no_grad():
        torch.testing.assert_close(loaded.score(users), model.score(users), rtol=0, atol=0)


def test_lightgcn_rows_match_the_full_propagation_in_values_and_gradients():
    from mmrec.fusion.baselines import normalized_adjacency
    from mmrec.fusion.cold_vae import lightgcn_rows

    gen = torch.Generator().manual_seed(6)
    n_users, n_items, dim = 30, 25, 4
    pairs = Interactions(torch.randint(0, n_users, (120,), generator=gen).numpy(),
                         torch.randint(0, n_items, (120,), generator=gen).numpy(),
                         np.arange(n_users).astype(str), np.arange(n_items).astype(str))
    adjacency = normalized_adjacency(pairs, n_users, n_items)
    users, items = torch.tensor([3, 3, 0, 29]), torch.tensor([24, 1, 7])  # repeats allowed
    weights = torch.randn(len(users) + len(items), dim, generator=gen)
    for n_layers in (0, 1, 2, 3):
        tables = [torch.randn(n, dim, generator=gen, requires_grad=True) for n in (n_users, n_items)]
        ego = torch.cat(tables)  # the reference: every layer in full, autograd through each
        layer, final = ego, ego
        for _ in range(n_layers):
            layer = adjacency @ layer
            final = final + layer
        final = final / (n_layers + 1)
        reference = torch.cat([final[users], final[n_users + items]])
        expected = torch.autograd.grad((reference * weights).sum(), tables)
        u, i = lightgcn_rows(adjacency, *tables, n_layers, users, items)
        torch.testing.assert_close(torch.cat([u, i]), reference)
        for got, want in zip(torch.autograd.grad((torch.cat([u, i]) * weights).sum(), tables), expected):
            torch.testing.assert_close(got, want)


def test_generate_with_losses_is_generate_plus_losses():
    from mmrec.fusion.cold_vae import ContentRegressor, ContentVAE

    gen = torch.Generator().manual_seed(7)
    content, target = torch.randn(9, 6, generator=gen), torch.randn(4, 5, generator=gen)
    rows = torch.tensor([0, 2, 5, 8])
    for network in (ContentVAE(6, 5, 3, 8), ContentRegressor(6, 5, 8)):
        torch.manual_seed(0)
        generated, losses = network.generate_with_losses(content, target, rows)
        torch.manual_seed(0)
        reference = network.losses(target, content[rows])
        torch.testing.assert_close(generated, network.generate(content))
        for name in ("recon", "kl"):
            torch.testing.assert_close(losses[name], reference[name])


def test_prior_sample_draws_generated_vectors_from_the_prior():
    from mmrec.fusion.cold_vae import ContentVAE

    gen = torch.Generator().manual_seed(3)
    content, target = torch.randn(9, 6, generator=gen), torch.randn(4, 5, generator=gen)
    rows = torch.tensor([0, 2, 5, 8])
    network = ContentVAE(6, 5, 3, 8)
    logvar_head = network.prior[-1].weight  # rows 3..5 of the prior's output are log-variances
    for sample in (False, True):
        network.zero_grad()
        generated, _ = network.generate_with_losses(content, target, rows, sample=sample)
        generated.sum().backward()
        reaches_variance = bool(logvar_head.grad[3:].abs().sum() > 0)
        assert reaches_variance == sample
        if sample:
            again, _ = network.generate_with_losses(content, target, rows, sample=True)
            assert not torch.allclose(generated, network.generate(content)) and not torch.allclose(generated, again)
        else:
            torch.testing.assert_close(generated, network.generate(content))


def test_posterior_rank_trains_the_decoder_through_posterior_draws():
    from mmrec.fusion.cold_vae import ContentVAE

    gen = torch.Generator().manual_seed(4)
    content, target = torch.randn(6, 4, generator=gen), torch.randn(6, 5, generator=gen)
    network = ContentVAE(4, 5, 3, 8)
    torch.manual_seed(0)
    recon = network.reconstruct(target, content)
    recon.sum().backward()
    assert recon.shape == target.shape
    assert network.encoder[0].weight.grad.abs().sum() > 0 and network.decoder[0].weight.grad.abs().sum() > 0
    assert network.prior[0].weight.grad is None  # the prior is not on this path
    torch.manual_seed(0)
    torch.testing.assert_close(network.reconstruct(target, content), recon)  # draws follow torch's seed
    with pytest.raises(ValueError, match="posterior_rank needs vae"):
        create_model("vae_fusion", 3, 3, {"posterior_rank": True, "vae": False})


def test_affinity_is_added_in_place_with_a_weight_per_column():
    from mmrec.fusion.cold_vae import AffinityGraph, add_history_affinity_, history_affinity

    n, power = 30, 6.0
    content = torch.nn.functional.normalize(torch.randn(n, 5, generator=torch.Generator().manual_seed(8)), dim=1)
    indptr, indices = _random_history(n, 10, seed=9)
    users, items = torch.arange(10), torch.tensor([4, 0, 29, 11])
    base, weight = torch.randn(10, len(items)), torch.rand(len(items)) + 0.5
    expected = base + weight * history_affinity(indptr, indices, users, content, power, items)
    for graph in (None, AffinityGraph(content, power, k=n), AffinityGraph(content, power, k=n + 5, block=4)):
        got = add_history_affinity_(base.clone(), indptr, indices, users, content, power, weight, items, graph=graph)
        torch.testing.assert_close(got, expected)


def test_vae_fusion_scores_equal_with_a_graph_that_keeps_every_pair(warm_only, content):
    model = train(warm_only, content[:N_WARM], epochs=1, affinity_k=N_WARM)
    exact = copy.deepcopy(model)
    exact.config = type(model.config)(**{**vars(model.config), "affinity_k": 0})
    users = torch.arange(N_USERS)
    with torch.no_grad():
        torch.testing.assert_close(model.score(users), exact.score(users))


def test_affinity_graph_follows_the_config(warm_only, content):
    model = train(warm_only, content[:N_WARM], epochs=1, affinity_k=5)
    assert model.affinity_graph().k == 5
    model.config = type(model.config)(**{**vars(model.config), "affinity_k": 9})
    assert model.affinity_graph().k == 9 and model.affinity_graph().neighbours.shape == (N_WARM, 9)


def test_affinity_train_exact_trains_as_exact_and_scores_through_the_graph(warm_only, content):
    exact = train(warm_only, content[:N_WARM], epochs=2)
    served = train(warm_only, content[:N_WARM], epochs=2, affinity_k=12, affinity_train_exact=True)
    for name, value in exact.state_dict().items():
        torch.testing.assert_close(served.state_dict()[name], value, rtol=0, atol=0)
    users = torch.arange(N_USERS)
    with torch.no_grad():
        assert (served.score(users) <= exact.score(users) + 1e-4).all()  # the graph drops non-negative terms
        assert not torch.allclose(served.score(users), exact.score(users))


def test_similarity_dims_keep_the_photo_half_out_of_the_affinity_and_the_content_graph(warm_only):
    rng = np.random.default_rng(0)
    text = rng.normal(size=(N_WARM, 12)).astype(np.float32)  # no ties: neighbours are unique
    photo = rng.normal(size=(N_WARM, 6)).astype(np.float32)
    fused = np.concatenate([text / np.linalg.norm(text, axis=1, keepdims=True),
                            photo / np.linalg.norm(photo, axis=1, keepdims=True)], 1)
    split = train(warm_only, fused, epochs=1, similarity_dims=12, affinity_k=7)
    plain = train(warm_only, text, epochs=1, affinity_k=7)
    whole = train(warm_only, fused, epochs=1, affinity_k=7)
    torch.testing.assert_close(split.similarity_content(), plain.content)
    assert torch.equal(split.knn_indices, plain.knn_indices)
    assert not torch.equal(whole.knn_indices, plain.knn_indices)  # the photo half would move the graph
    assert torch.equal(split.affinity_graph().neighbours, plain.affinity_graph().neighbours)
    assert split.generator.prior[0].in_features == 18  # the generator reads text and photo
    with pytest.raises(ValueError, match="similarity_dims"):
        create_model("vae_fusion", warm_only.n_users, warm_only.n_items, {"content_dim": 18, "similarity_dims": 19})


def _folded_scores(world, fitted, content, off: dict, on: dict):
    """A copy of ``fitted`` with the new items added and their purchases folded in by `update`, and every
    user's scores with the config changes ``off``, then ``on`` (which the returned model keeps)."""
    model = copy.deepcopy(fitted)
    model.add_items(world.catalog.ids[N_WARM:], content[N_WARM:])
    future = world.new_item_interactions
    model.update(future)
    users = torch.arange(N_USERS)
    with torch.no_grad():
        model.config = dataclasses.replace(model.config, **off)
        plain = model.score(users).clone()
        model.config = dataclasses.replace(model.config, **on)
        boosted = model.score(users)
    return model, future, plain, boosted


def test_cobuyer_evidence_is_the_mean_cosine_of_purchase_sets_and_only_on_folded_items(world, fitted, content):
    model, future, plain, boosted = _folded_scores(world, fitted, content, {"cobuyer_weight": 0.0},
                                                   {"cobuyer_weight": 2.0})
    users = torch.arange(N_USERS)
    with torch.no_grad():
        some = torch.tensor([3, N_WARM + 1, 7, N_WARM + 5])
        subset = model.score(users, some)
        candidates = some.repeat(N_USERS, 1)
        per_user = model.score_candidates(users, candidates)
    # by hand: sets of seen items, mean over each folded item's buyers of |H_u ∩ H_b| / sqrt(|H_u| |H_b|)
    ptr, idx = model.seen_indptr.numpy(), model.seen_indices.numpy()
    sets = [set(idx[ptr[u]:ptr[u + 1]].tolist()) for u in range(N_USERS)]
    expected = torch.zeros(N_USERS, model.n_items)
    for item in np.unique(future.items):
        buyers = [u for u in range(N_USERS) if item in sets[u]]
        for u in range(N_USERS):
            expected[u, item] = 2.0 * np.mean([len(sets[u] & sets[b]) / np.sqrt(len(sets[u]) * len(sets[b]))
                                               for b in buyers])
    torch.testing.assert_close(boosted - plain, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(subset, boosted[:, some])
    torch.testing.assert_close(per_user, model.score(users)[:, some], atol=1e-4, rtol=1e-4)
    assert (expected[:, :N_WARM] == 0).all() and (expected > 0).any()  # trained items: no evidence


def test_profile_evidence_compares_the_user_with_the_buyers_through_content(world, fitted, content):
    """A folded item f gains w·max(0, cos(profile(u), P_f))^p: a profile is the unit mean content of the trained
    items a user bought, P_f the unit mean of f's buyers' profiles (the buyers' new purchases do not count)."""
    model, future, plain, boosted = _folded_scores(world, fitted, content, {"profile_weight": 0.0},
                                                   {"profile_weight": 2.0, "profile_power": 3.0})
    users = torch.arange(N_USERS)
    with torch.no_grad():
        some = torch.tensor([3, N_WARM + 1, 7, N_WARM + 5])
        per_user = model.score_candidates(users, some.repeat(N_USERS, 1))
    ptr, idx = model.seen_indptr.numpy(), model.seen_indices.numpy()
    c = model.similarity_content().numpy()
    unit = lambda v: v / max(np.linalg.norm(v), 1e-12)  # noqa: E731
    profile = np.stack([unit(c[[i for i in idx[ptr[u]:ptr[u + 1]] if i < N_WARM]].sum(0)) for u in range(N_USERS)])
    expected = torch.zeros(N_USERS, model.n_items)
    for item in np.unique(future.items):
        buyers = [u for u in range(N_USERS) if item in idx[ptr[u]:ptr[u + 1]]]
        p_f = unit(profile[buyers].mean(0))
        expected[:, item] = torch.as_tensor(2.0 * np.clip(profile @ p_f, 0, None) ** 3.0, dtype=torch.float32)
    torch.testing.assert_close(boosted - plain, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(per_user, boosted[:, some], atol=1e-4, rtol=1e-4)
    assert (expected[:, :N_WARM] == 0).all() and (expected > 0).any()
    with pytest.raises(ValueError, match="profile_power"):
        create_model("vae_fusion", N_USERS, N_WARM, {"profile_power": 0.0})
