"""SASRec on synthetic sequence worlds with a known next-item law.

The Markov world: items carry random unit content vectors ``z``; after item ``i`` the next item is drawn
with probability ∝ exp(β·(A z_i)·z_j) for a fixed rotation ``A`` — the content encodes who follows whom.
Training sequences walk over the warm items only; a cold target per user is drawn from the same law among
items that never appear in training. The oracle (the true law) bounds what any model can reach.
"""
import copy

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed

from mmrec.data import KINDS, Interactions
from mmrec.evaluate import evaluate
from mmrec.fusion.sequence import SASRec, SequenceDataset, Sequences
from mmrec.recommender import Recommender, create_model
from mmrec.splits import Split, leave_last_out
from mmrec.train import TrainConfig

SMALL = dict(dim=32, n_layers=1, n_heads=2, dropout=0.1, content_dim=16)
TRAIN = dict(epochs=25, batch_size=64, lr=5e-3, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def markov_world(n_items=120, n_cold=20, n_users=300, length=12, dim=16, beta=10.0, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_items, dim))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    law = beta * (z @ rotation) @ z.T
    np.fill_diagonal(law, -np.inf)
    warm, cold = np.arange(n_items - n_cold), np.arange(n_items - n_cold, n_items)

    def step(i, pool):
        p = np.exp(law[i, pool] - law[i, pool].max())
        return pool[rng.choice(len(pool), p=p / p.sum())]

    users, items, cold_targets = [], [], []
    for u in range(n_users):
        i = rng.integers(len(warm))
        for _ in range(length):
            users.append(u)
            items.append(i)
            i = step(i, warm)
        cold_targets.append(step(items[-3], cold))  # follows the last *training* item
    inter = Interactions(np.array(users), np.array(items), [f"u{u}" for u in range(n_users)],
                         [f"i{i}" for i in range(n_items)], timestamps=np.arange(len(users)))
    split = leave_last_out(inter)
    cold_events = Interactions(np.arange(n_users), np.array(cold_targets), inter.user_ids, inter.item_ids)
    return z.astype(np.float32), law, split, Split(split.train, cold_events, cold_events, cold, cold)


def fit(split, config, content=None, train=TRAIN, seed=0):
    set_seed(seed)
    model = create_model("sasrec", split.train.n_users, split.train.n_items, config)
    if content is not None:
        model.set_content(content)
    model.fit(split.train, train_config=TrainConfig(seed=seed, **train))
    return model


@pytest.fixture(scope="module")
def world():
    return markov_world()


@pytest.fixture(scope="module")
def id_only(world):
    return fit(world[2], SMALL)


@pytest.fixture(scope="module")
def with_content(world):
    z, _, split, _ = world
    return fit(split, {**SMALL, "use_content": True, "adapter": "linear"}, content=z)


def test_windows_bos_truncation_and_targets():
    inter = Interactions(np.array([0, 0, 0, 0, 0, 1]), np.array([3, 1, 4, 1, 5, 2]), ["a", "b", "c"],
                         [str(i) for i in range(6)], timestamps=np.array([5, 1, 2, 3, 4, 9]))
    batch = SequenceDataset(inter, max_len=3).collate([0, 1])
    bos, pad = 6, 7
    # user a in time order: 1 4 1 5 3 -> the last 4 tokens of [BOS 1 4 1 5 3]; user b: [BOS 2]
    assert batch["tokens"].tolist() == [[4, 1, 5], [bos, 2, pad]]  # (the last input has no target)
    assert batch["targets"].tolist() == [[1, 5, 3], [2, -1, -1]]
    assert batch["kinds"][1].tolist() == [len(KINDS), KINDS.index("purchase"), len(KINDS)]
    model = create_model("sasrec", 3, 6, {"max_len": 3})
    model.prepare(inter)
    scores = model.eval().score(torch.arange(3))  # user c has no history: scored from BOS alone
    assert scores.shape == (3, 6) and torch.isfinite(scores).all()
    assert (scores[:, 1:] != 0).all() and (scores[:, 0] == 0).all()  # item 0 never seen, no content


def test_learns_next_item_far_above_chance(world, id_only, with_content):
    _, law, split, _ = world
    history = split.train.concat(split.valid)
    last = np.zeros(split.train.n_users, dtype=np.int64)
    order = np.lexsort((history.timestamps, history.users))
    last[history.users[order]] = history.items[order]
    law_t = torch.as_tensor(law, dtype=torch.float32)
    oracle = evaluate(lambda users: law_t[torch.as_tensor(last)[users]], split, on="test", ks=(10,),
                      mask_train=False)["hr@10"]
    chance = 10 / (law.shape[0] - 20)
    for model in (id_only, with_content):
        model.set_history(history)
        hr = evaluate(model, split, on="test", ks=(10,), mask_train=False)["hr@10"]
        model.set_history(split.train)
        assert hr > 5 * chance and hr > 0.8 * oracle, (hr, oracle, chance)


def test_content_beats_ids_on_items_never_seen_in_training(world, id_only, with_content):
    cold_split = world[3]
    content = evaluate(with_content, cold_split, on="test", ks=(5,), candidates="cold")["hr@5"]
    ids = evaluate(id_only, cold_split, on="test", ks=(5,), candidates="cold")["hr@5"]
    # 5 of 20 cold items: chance 0.25; ID-only scores every cold item 0
    assert content > 0.45 and content > ids + 0.2, (content, ids)


def test_unseen_item_score_is_finite_and_content_driven(world, with_content, id_only):
    cold = world[3].cold_test_items
    users = torch.arange(8)
    before = with_content.score(users)
    assert torch.isfinite(before).all()
    assert (id_only.score(users)[:, cold] == 0).all()
    clone = copy.deepcopy(with_content)  # mutate a copy, not the shared fixture
    with torch.no_grad():
        clone.item_emb.weight[cold] = 100.0  # an unseen item's ID embedding is never read
    assert torch.equal(clone.score(users), before)
    vectors = clone.content.clone()
    vectors[cold[0]] = -vectors[cold[0]]
    clone.set_content(vectors)
    after = clone.score(users)
    changed = (after != before).any(0)
    assert changed[cold[0]] and changed.sum() == 1


def test_save_load_round_trip_gives_identical_scores(with_content, tmp_path):
    with_content.save_pretrained(tmp_path / "sasrec")
    loaded = Recommender.from_pretrained(tmp_path / "sasrec")
    assert isinstance(loaded, SASRec) and loaded.config.use_content
    users = torch.arange(with_content.n_users)
    assert torch.equal(with_content.score(users), loaded.score(users))
    codes, _ = loaded.recommend(users[:5], k=3)
    assert codes.shape == (5, 3)


@pytest.mark.parametrize("loss", ["softmax", "sampled_softmax"])
def test_training_is_deterministic_for_a_seed(world, loss):
    z, _, split, _ = world
    config = {**SMALL, "use_content": True, "loss": loss, "n_negatives": 32}
    short = {**TRAIN, "epochs": 2}
    users = torch.arange(50)
    first = fit(split, config, z, short, seed=3).score(users)
    assert torch.equal(first, fit(split, config, z, short, seed=3).score(users))
    assert not torch.equal(first, fit(split, config, z, short, seed=4).score(users))


def test_dwell_feature_is_used():
    """After a long view of item i the next item is i+1, after a short one i+7: only dwell tells them apart."""
    rng = np.random.default_rng(1)
    n_items, n_users, length = 30, 200, 10
    users, items, dwell = [], [], []
    for u in range(n_users):
        i = rng.integers(n_items)
        for _ in range(length):
            seconds = rng.choice([2.0, 60.0])
            users.append(u), items.append(i), dwell.append(seconds)
            i = (i + 1) % n_items if seconds > 10 else (i + 7) % n_items
    inter = Interactions(np.array(users), np.array(items), [f"u{u}" for u in range(n_users)],
                         [f"i{i}" for i in range(n_items)], timestamps=np.arange(len(users)),
                         kinds=np.full(len(users), KINDS.index("view")), weights=np.array(dwell))
    split = leave_last_out(inter)
    history = split.train.concat(split.valid)
    hr = {}
    for use_dwell in (False, True):
        model = fit(split, {**SMALL, "use_dwell": use_dwell}, train={**TRAIN, "epochs": 20, "batch_size": 32})
        model.set_history(history)
        hr[use_dwell] = evaluate(model, split, on="test", ks=(1,), mask_train=False)["hr@1"]
    assert hr[True] > 0.85 and hr[False] < 0.7, hr


def test_bad_inputs_are_named():
    model = create_model("sasrec", 2, 4, {"use_content": True, "content_dim": 3})
    with pytest.raises(ValueError, match="expected \\(4, 3\\)"):
        model.set_content(np.zeros((4, 5)))
    bad = np.zeros((4, 3), dtype=np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.set_content(bad)
    inter = Interactions(np.array([0, 1]), np.array([0, 1]), ["a", "b"], ["0", "1", "2", "3"])
    with pytest.raises(ValueError, match="set_content"):
        model.fit(inter, train_config=TrainConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match="divisible"):
        create_model("sasrec", 2, 4, {"dim": 10, "n_heads": 3})
    with pytest.raises(ValueError, match="infinite"):
        Sequences.from_interactions(Interactions(np.array([0]), np.array([0]), ["a"], ["0"], weights=np.array([np.inf])))
    with pytest.raises(ValueError, match="use_content=True"):
        create_model("sasrec", 2, 4).set_content(np.zeros((4, 384)))


def test_cli_train_sequence_adds_events_files_with_their_users_and_dwell(tmp_path, capsys):
    """``mmrec train sequence --events``: a stream's events file joins the data; its user is a new user of
    the saved model, and a file naming items the data lacks is refused naming the file."""
    import json
    import math

    from mmrec.cli import main
    from mmrec.cli.common import load_data
    from mmrec.stream import Event, write_events

    ids = load_data("synthetic").catalog.ids
    views = [Event("view", 10.0 * k, k, str(ids[k]), end=10.0 * k + 4, dwell=4.0 + k) for k in range(4)]
    write_events(iter(views + [Event("purchase", 45.0, 3, str(ids[3]))]), tmp_path / "events.parquet", user="viewer")
    (tmp_path / "run.yaml").write_text("model: {dim: 16, n_layers: 1, n_heads: 1, max_len: 10, use_dwell: true}\n"
                                       "train: {batch_size: 256}\n")
    out = tmp_path / "model"
    code = main(["train", "sequence", "--data", "synthetic", "--events", str(tmp_path / "events.parquet"),
                 "--config", str(tmp_path / "run.yaml"), "--epochs", "1", "--out", str(out), "--json",
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert all(math.isfinite(v) for v in report["test"].values())
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["user_ids"][-1] == "viewer" and len(vocab["user_ids"]) == len(load_data("synthetic").interactions.user_ids) + 1
    write_events(iter([Event("view", 1.0, 0, "no-such-item", end=2.0, dwell=1.0)]), tmp_path / "bad.parquet")
    assert main(["train", "sequence", "--data", "synthetic", "--events", str(tmp_path / "bad.parquet"),
                 "--out", str(tmp_path / "m2"), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no-such-item" in err and "bad.parquet" in err
