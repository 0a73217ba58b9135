"""The retrieval index (`mmrec.index`): FAISS search against brute force, a recommender answering through the
index as it answers without one (seen items excluded, non-factorised terms re-ranked), persistence, refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed

from mmrec.data import Interactions
from mmrec.index import Index, IndexConfig, index_for
from mmrec.recommender import create_model
from mmrec.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
N_USERS, N_ITEMS = 200, 300


def brute_force(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ items.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    # Item norms spread over a factor of 4, as popularity stretches trained item vectors.
    items = rng.standard_normal((N_ITEMS, 8)).astype(np.float32) * rng.uniform(0.5, 2.0, (N_ITEMS, 1)).astype(np.float32)
    return items, rng.standard_normal((50, 8)).astype(np.float32)


@pytest.mark.parametrize("config", [IndexConfig(kind="flat"), IndexConfig(kind="flat", mips_to_l2=True),
                                    IndexConfig(kind="ivf", nlist=4, nprobe=4),
                                    IndexConfig(kind="hnsw", ef_search=400)])
def test_search_returns_the_exact_top_k_by_inner_product(vectors, config):
    # IVF probing every list and HNSW with a beam wider than the catalogue are exhaustive: the answer is exact,
    # so any mistake in the inner-product <-> L2 transform or the returned scores shows.
    items, queries = vectors
    index = Index.build(items, config)
    codes, scores = index.search(queries, 10)
    np.testing.assert_array_equal(codes, brute_force(items, queries, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ items.T, codes, 1), rtol=1e-4, atol=1e-4)


def test_fewer_items_than_k_end_in_minus_one(vectors):
    items, queries = vectors
    codes, scores = Index.build(items[:3], "flat").search(queries[:2], 5)
    assert (codes[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all() and (codes[:, :3] >= 0).all()


def test_save_load_round_trip_and_damaged_files_are_refused(vectors, tmp_path):
    items, queries = vectors
    index = Index.build(items, IndexConfig(kind="hnsw"))
    index.save(tmp_path / "idx")
    again = Index.load(tmp_path / "idx")
    for a, b in zip(index.search(queries, 5), again.search(queries, 5)):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "idx" / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="index.faiss"):
        Index.load(tmp_path / "idx")


def test_add_appends_codes_and_refuses_what_the_transform_cannot_hold(vectors):
    items, queries = vectors
    index = Index.build(items[:-5], IndexConfig(kind="hnsw", ef_search=400))
    assert list(index.add(items[-5:] * 0.1)) == list(range(N_ITEMS - 5, N_ITEMS))
    with pytest.raises(ValueError, match="rebuild"):
        index.add(items[:1] * 100)
    with pytest.raises(ValueError, match="dimensions"):
        index.search(queries[:, :4], 3)
    with pytest.raises(ValueError, match="kind"):
        IndexConfig(kind="annoy")


def _interactions() -> Interactions:
    rng = np.random.default_rng(1)
    users = rng.integers(0, N_USERS, 5000)
    items = (users * 7 + rng.integers(0, 40, 5000)) % N_ITEMS
    # User 0 has bought more items than the index proposes: excluding them must widen the search.
    users = np.concatenate([users, np.zeros(150, np.int64)])
    items = np.concatenate([items, np.arange(150)])
    return Interactions(users, items, np.arange(N_USERS).astype(str), np.arange(N_ITEMS).astype(str))


@pytest.fixture(scope="module")
def lightgcn():
    set_seed(0)
    model = create_model("lightgcn", N_USERS, N_ITEMS, {"dim": 16})
    model.fit(_interactions(), train_config=TrainConfig(epochs=2, batch_size=1024, lr=1e-2, progress=False))
    return model.eval()


def test_recommend_through_an_exact_index_equals_dense_scoring(lightgcn):
    users = np.arange(N_USERS)
    dense_codes, dense_scores = lightgcn.recommend(users, 12)
    codes, scores = lightgcn.recommend(users, 12, index=index_for(lightgcn, "flat"), index_candidates=50)
    np.testing.assert_array_equal(codes.numpy(), dense_codes.numpy())
    torch.testing.assert_close(scores, dense_scores, rtol=1e-4, atol=1e-4)
    seen = set(lightgcn.seen_indices[: lightgcn.seen_indptr[1]].tolist())
    assert len(seen) > 50 and not seen & set(codes[0].tolist())
    huge = lightgcn.recommend(users[:2], 10**9, index=index_for(lightgcn, "flat"))[0]  # was a 7 GiB allocation
    assert huge.shape == lightgcn.recommend(users[:2], 10**9)[0].shape == (2, lightgcn.n_items)


def test_approximate_indexes_recall_the_exact_top_12(lightgcn):
    users = np.arange(N_USERS)
    exact = lightgcn.recommend(users, 12)[0].numpy()
    for config in (IndexConfig(kind="hnsw"), IndexConfig(kind="ivf", nlist=8, nprobe=4)):
        got = lightgcn.recommend(users, 12, index=index_for(lightgcn, config))[0].numpy()
        recall = np.mean([len(set(a) & set(b)) / 12 for a, b in zip(exact, got)])
        assert recall > 0.9, (config.kind, recall)


def test_index_refuses_a_catalogue_it_does_not_hold_and_candidates(lightgcn, vectors):
    with pytest.raises(ValueError, match="rebuild"):
        lightgcn.recommend([0], 5, index=Index.build(vectors[0][:10], "flat"))
    with pytest.raises(ValueError, match="candidates"):
        lightgcn.recommend([0], 5, index=index_for(lightgcn, "flat"), candidates=[1, 2, 3])
    itemknn = create_model("itemknn", N_USERS, N_ITEMS)
    with pytest.raises(NotImplementedError):
        index_for(itemknn, "flat")


def test_vae_fusion_reranks_index_candidates_with_its_history_affinity():
    set_seed(0)
    content = np.random.default_rng(2).standard_normal((N_ITEMS, 12)).astype(np.float32)
    model = create_model("vae_fusion", N_USERS, N_ITEMS, {"content_dim": 12, "dim": 16, "affinity_init": 5.0})
    model.set_content(content)
    model.fit(_interactions(), train_config=TrainConfig(epochs=1, batch_size=1024, lr=1e-2, progress=False))
    model.eval()
    users = torch.arange(N_USERS)
    candidates = torch.as_tensor(np.random.default_rng(3).integers(0, N_ITEMS, (N_USERS, 30)))
    with torch.no_grad():
        full = model.score(users)
        torch.testing.assert_close(model.score_candidates(users, candidates), full.gather(1, candidates),
                                   rtol=1e-4, atol=1e-4)
        # The affinity is not a dot product of the factors: without the re-rank the order would differ.
        factor_only = model.factors()[0] @ model.factors()[1].t()
    assert not torch.equal(full.topk(12).indices, factor_only.topk(12).indices)
    dense = model.recommend(users.numpy(), 12)[0]
    through = model.recommend(users.numpy(), 12, index=index_for(model, "flat"), index_candidates=N_ITEMS)[0]
    np.testing.assert_array_equal(through.numpy(), dense.numpy())


def test_sampled_history_affinity_estimates_the_full_mean_without_bias():
    from mmrec.fusion.cold_vae import history_affinity_pairs

    gen = torch.Generator().manual_seed(0)
    content = torch.nn.functional.normalize(torch.randn(40, 6, generator=gen), dim=1)
    indptr, indices = torch.tensor([0, 3, 38]), torch.cat([torch.tensor([0, 1, 2]), torch.arange(3, 38)])
    users, items = torch.tensor([0, 1]), torch.tensor([39, 39])
    exact = history_affinity_pairs(indptr, indices, users, items, content, 2.0)
    torch.manual_seed(0)
    draws = torch.stack([history_affinity_pairs(indptr, indices, users, items, content, 2.0, sample=5)
                         for _ in range(400)])
    assert torch.equal(draws[:, 0], exact[0].expand(400))      # a history of 3 ≤ 5 is used whole
    assert draws[:, 1].std() > 0                               # 35 items: 5 sampled, so the value varies ...
    assert abs(draws[:, 1].mean() - exact[1]) < 3 * draws[:, 1].std() / 20  # ... around the exact mean


def test_a_copy_grows_without_touching_the_original(vectors):
    items, queries = vectors
    index = Index.build(items[:-5], IndexConfig(kind="hnsw", ef_search=400))
    before = index.search(queries, 5)
    grown = index.copy()
    grown.add(items[-5:] * 0.1)
    assert (len(index), len(grown)) == (N_ITEMS - 5, N_ITEMS)
    for a, b in zip(before, index.search(queries, 5)):
        np.testing.assert_array_equal(a, b)


def test_an_index_faiss_cannot_train_is_a_clear_error(vectors):
    items, _ = vectors
    with pytest.raises(ValueError, match="needs items to train on"):  # was a raw FAISS RuntimeError
        Index.build(items[:0], "ivf")
    with pytest.raises(ValueError, match="nlist 50 exceeds the 10 items"):
        Index.build(items[:10], {"kind": "ivf", "nlist": 50})
    assert len(Index.build(items[:0], "flat")) == 0
