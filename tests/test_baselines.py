"""Warm baselines: behaviour on structured toy data, save/load round trip, recommend()."""
import pytest
import torch

from conftest import random_interactions
from mmrec.evaluate import evaluate
from mmrec.recommender import Recommender, create_model
from mmrec.splits import leave_last_out
from mmrec.train import TrainConfig


@pytest.fixture(scope="module")
def split():
    return leave_last_out(random_interactions(n_users=120, n_items=40, per_user=9, seed=5))


@pytest.mark.parametrize("name", ["most_popular", "itemknn", "bpr", "lightgcn"])
def test_fit_save_load_recommend(name, split, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, split.train.n_users, split.train.n_items)
    model.fit(split.train, train_config=TrainConfig(epochs=15, batch_size=64, lr=0.02, progress=False))
    result = evaluate(model, split, on="test", ks=(5,))
    if name != "most_popular":
        # users buy within one of four blocks of 10 items: collaborative models find the block
        assert result["recall@5"] > 0.3, result.metrics
    model.save_pretrained(tmp_path / name)
    loaded = Recommender.from_pretrained(tmp_path / name)
    users = torch.arange(10)
    assert torch.allclose(model.score(users), loaded.score(users), atol=1e-6)
    codes, scores = loaded.recommend(users, k=5)
    assert codes.shape == (10, 5) and (scores[:, :-1] >= scores[:, 1:]).all()
    for u in range(10):
        seen = set(split.train.items[split.train.users == u])
        assert not seen & set(codes[u].tolist())
    assert list(loaded.item_ids) == list(split.train.item_ids)
    only = loaded.recommend(users, k=3, candidates=[0, 1, 2, 3])[0]
    assert set(only.flatten().tolist()) <= {0, 1, 2, 3}


def test_unknown_model_and_config_key():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("sasrec2", 2, 2)
    with pytest.raises(ValueError, match="unknown key"):
        create_model("lightgcn", 2, 2, {"layers": 3})


def test_from_pretrained_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="manifest.json is missing"):
        Recommender.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Recommender.from_pretrained(tmp_path / "nothing")


def test_graph_propagation_matches_a_dense_graph_and_its_gradient():
    """LightGCN's CSR graph equals D^-1/2 A D^-1/2 built densely, and the symmetric spmm's gradient (A @ grad,
    no transpose built) equals autograd's through the dense matrix."""
    from mmrec.fusion.baselines import normalized_adjacency, propagate

    train = random_interactions(n_users=30, n_items=20, per_user=5, seed=3)
    graph = normalized_adjacency(train, 30, 20)
    pairs = train.unique_pairs()
    dense = torch.zeros(50, 50)
    dense[pairs.users, pairs.items + 30] = 1.0
    dense[pairs.items + 30, pairs.users] = 1.0
    inv = dense.sum(1).pow(-0.5).nan_to_num(posinf=0.0)
    dense = inv[:, None] * dense * inv[None, :]
    assert torch.allclose(graph.to_dense(), dense, atol=1e-6)

    x = torch.randn(50, 4, requires_grad=True)
    weights = torch.randn(50, 4)
    (propagate(graph, propagate(graph, x)) * weights).sum().backward()
    sparse_grad, x.grad = x.grad.clone(), None
    ((dense @ (dense @ x)) * weights).sum().backward()
    assert torch.allclose(sparse_grad, x.grad, atol=1e-5)
