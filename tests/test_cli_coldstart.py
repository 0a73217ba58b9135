"""``mmrec train coldstart`` then ``mmrec recommend --add-items … --candidates new``: articles the model
never saw (one without a photo) become recommendable with no retraining; bad input gets clear answers.
With a cold protocol the command chooses the epoch on cold valid (the benchmark's validation) with the
benchmark's schedule as defaults, and reports the time it took."""
import csv
import json
import shutil
import subprocess
import sys

import pytest
from conftest import ARTICLE_HEADER


def _mmrec(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "mmrec", *args], capture_output=True, text=True, timeout=900)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def _write_articles(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ARTICLE_HEADER)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in ARTICLE_HEADER})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("coldstart") / "model"
    cfg = out.parent / "run.yaml"
    cfg.write_text("model: {dim: 16, hidden_dim: 32, latent_dim: 8}\n"
                   "train: {epochs: 3, batch_size: 1024, lr: 0.005}\n")
    report = json.loads(_mmrec("train", "coldstart", "--data", "synthetic", "--config", str(cfg), "--out", str(out),
                               "--no-progress", "--json").stdout)
    return out, report


def test_added_articles_are_recommended_without_retraining(trained, tmp_path):
    model_dir, report = trained
    assert report["model"] == "vae_fusion" and (model_dir / "content.json").is_file()
    from mmrec.datasets.synthetic import WorldConfig, make_world

    world = make_world(WorldConfig(n_users=5, n_items=8, n_new_items=0, interactions_per_user=(1, 3), new_interactions_per_user=(0, 0),
                                   missing_image_fraction=0.0), tmp_path / "photos")
    images = tmp_path / "images"
    rows = []
    for n, (name, colour, kind) in enumerate([("Floral summer dress", "Red", "Dress"), ("Slim jeans", "Blue", "Trousers"),
                                              ("Wool jumper", "Grey", "Sweater"), ("Linen shirt", "White", "Shirt")]):
        article_id = f"09{n:08d}"
        rows.append({"article_id": article_id, "product_code": article_id[:7], "prod_name": name,
                     "product_type_name": kind, "colour_group_name": colour, "detail_desc": f"A {colour.lower()} {name.lower()}."})
        if n < 3:  # the last article has no photo
            (images / article_id[:3]).mkdir(parents=True, exist_ok=True)
            shutil.copy(world.catalog.image_paths[n], images / article_id[:3] / f"{article_id}.jpg")
    articles = tmp_path / "new_articles.csv"
    _write_articles(articles, rows)
    users = tmp_path / "users.txt"
    vocab = json.loads((model_dir / "vocab.json").read_text())
    users.write_text("\n".join(vocab["user_ids"][:3] + ["someone-new"]) + "\n")

    answer = json.loads(_mmrec("recommend", "--model", str(model_dir), "--add-items", str(articles), "--images",
                               str(images), "--users", str(users), "--candidates", "new", "--k", "4", "--json").stdout)
    recs = answer["recommendations"]
    new_ids = {r["article_id"] for r in rows}
    for user in vocab["user_ids"][:3]:
        assert len(recs[user]) == 4 and set(recs[user]) == new_ids
    assert answer["fallback"] == {"kind": "popular_by_content", "users": ["someone-new"]}
    assert answer["unknown_users"] == ["someone-new"]
    assert set(recs["someone-new"]) == new_ids
    # Different users get different orders: the ranking is personal, not one list for all.
    assert len({tuple(recs[u]) for u in vocab["user_ids"][:3]}) > 1
    # The saved model is unchanged on disk: adding items never retrains or rewrites it.
    assert json.loads((model_dir / "vocab.json").read_text()) == vocab


def test_duplicate_or_known_article_ids_are_errors_naming_them(trained, tmp_path):
    model_dir, _ = trained
    articles = tmp_path / "dupes.csv"
    _write_articles(articles, [{"article_id": "0912345678", "prod_name": "A"}, {"article_id": "0912345678", "prod_name": "B"}])
    bad = _mmrec("recommend", "--model", str(model_dir), "--add-items", str(articles), "--user", "x",
                 "--candidates", "new", "--json", check=False)
    assert bad.returncode == 2 and "0912345678" in bad.stderr and "twice" in bad.stderr
    vocab = json.loads((model_dir / "vocab.json").read_text())
    known = tmp_path / "known.csv"
    _write_articles(known, [{"article_id": vocab["item_ids"][0], "prod_name": "A"}])
    bad = _mmrec("recommend", "--model", str(model_dir), "--add-items", str(known), "--user", "x", "--json", check=False)
    assert bad.returncode == 2 and vocab["item_ids"][0] in bad.stderr
    no_items = _mmrec("recommend", "--model", str(model_dir), "--user", "x", "--candidates", "new", check=False)
    assert no_items.returncode == 2 and "--add-items" in no_items.stderr
    blank = tmp_path / "blank.csv"  # ids and nothing else: added, but nothing tells them apart; say so
    _write_articles(blank, [{"article_id": "0912345678"}, {"article_id": "0912345679", "prod_name": "Red dress"}])
    warned = _mmrec("recommend", "--model", str(model_dir), "--add-items", str(blank), "--user", "x", "--json")
    assert "1 of 2 new articles have no text or photo the model can read" in warned.stderr


def test_cold_protocol_selects_on_cold_valid_with_the_benchmark_schedule(tmp_path):
    """``--protocol cold``: the epoch is chosen on valid Recall@20 ranking the cold items (the benchmark's
    validation), the benchmark's schedule fills what the run file leaves out, and the time is reported."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {dim: 16, hidden_dim: 32, latent_dim: 8}\ntrain: {epochs: 2, batch_size: 1024}\n")
    report = json.loads(_mmrec("train", "coldstart", "--data", "synthetic", "--protocol", "cold", "--config", str(cfg),
                               "--out", str(tmp_path / "model"), "--no-progress", "--threads", "1", "--json").stdout)
    assert report["selected_on"] == "valid recall@20, ranking cold items"
    assert report["train"] == {"epochs": 2, "eval_every": 2, "patience": 1, "batch_size": 1024, "lr": 0.005}
    assert report["best_epoch"] == 1 and report["seconds"] > 0  # validated after epoch 2 (every 2)
    assert {"valid", "test", "test_all"} <= set(report) and report["protocol"] == "cold"


def test_chosen_epoch_follows_the_cold_valid_metric(monkeypatch):
    """`mmrec.experiment.run` with ``candidates="cold"`` validates every epoch on the cold items only and
    keeps the epoch with the best of those values."""
    import numpy as np

    import mmrec.experiment as experiment
    from mmrec.datasets.synthetic import WorldConfig, make_world
    from mmrec.splits import cold_items
    from mmrec.train import TrainConfig

    world = make_world(WorldConfig(seed=2, n_users=60, n_items=40, n_new_items=10), None)
    split = cold_items(world.interactions.unique_pairs(), fraction=0.25, seed=0)
    rng = np.random.default_rng(0)
    content = rng.standard_normal((split.train.n_items, 8)).astype(np.float32)
    seen = []
    real = experiment.evaluate

    def spy(model, split_, **kwargs):
        result = real(model, split_, **kwargs)
        seen.append((kwargs["on"], kwargs.get("candidates", "all"), result["recall@20"]))
        return result

    monkeypatch.setattr(experiment, "evaluate", spy)
    model, report = experiment.run(split, "vae_fusion", model_config={"dim": 8, "hidden_dim": 16, "latent_dim": 4},
                                   train_config=TrainConfig(epochs=4, batch_size=256, lr=5e-3, patience=10,
                                                            progress=False),
                                   setup=lambda m: m.set_content(content), candidates="cold")
    valid = [(c, value) for on, c, value in seen if on == "valid"]
    assert [c for c, _ in valid] == ["cold"] * 5  # 4 epochs, then the chosen point
    per_epoch = [value for _, value in valid[:4]]
    assert report["best_epoch"] == int(np.argmax(per_epoch)) and report["epochs"] == 4
    assert valid[4][1] == pytest.approx(max(per_epoch))  # the best epoch's weights were kept
    assert [(on, c) for on, c, _ in seen if on == "test"] == [("test", "cold"), ("test", "all")]
    assert report["selected_on"] == "valid recall@20, ranking cold items"


def test_warm_targets_choose_a_cold_offset_the_saved_model_applies(tmp_path):
    """``--warm-targets``: the offset for never-trained items is chosen on valid hybrid Recall, reported with
    the test hybrid figure it gives, saved in the model's config, and added to exactly those items' scores."""
    import dataclasses

    import torch

    from mmrec.recommender import Recommender

    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {dim: 16, hidden_dim: 32, latent_dim: 8}\ntrain: {epochs: 2, batch_size: 1024}\n")
    out = tmp_path / "model"
    report = json.loads(_mmrec("train", "coldstart", "--data", "synthetic", "--protocol", "cold", "--warm-targets",
                               "0.1", "--config", str(cfg), "--out", str(out), "--no-progress", "--threads", "1",
                               "--json").stdout)
    offset = report["cold_offset"]
    assert len(report["cold_offset_grid"]) > 10 and "recall@20" in report["test_all_calibrated"]
    best = max(report["cold_offset_grid"], key=lambda t: t["valid_hybrid_recall@20"])
    assert best["offset"] == offset
    model = Recommender.from_pretrained(out)
    assert model.config.cold_offset == offset
    users = torch.arange(5)
    with torch.no_grad():
        shifted = model.score(users)
        model.config = dataclasses.replace(model.config, cold_offset=0.0)
        plain = model.score(users)
    untrained = ~model.has_id
    assert untrained.any() and not untrained.all()
    torch.testing.assert_close(shifted - plain, offset * untrained.float().expand_as(plain))
    bad = _mmrec("train", "coldstart", "--data", "synthetic", "--protocol", "cold", "--warm-targets", "0.7",
                 "--out", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "--warm-targets" in bad.stderr
    warm_split = _mmrec("train", "coldstart", "--data", "synthetic", "--protocol", "mmrec", "--warm-targets", "0.1",
                        "--out", str(tmp_path / "y"), check=False)
    assert warm_split.returncode == 2 and "needs --protocol cold or new-products" in warm_split.stderr


def test_photo_half_content_feeds_the_photo_to_the_generator_only(tmp_path):
    """``--space DIR --photo-half``: content is [MiniLM text, the space's photo vector]; the saved model compares
    the text half (similarity_dims) and its recipe embeds added items the same way."""
    import torch

    from mmrec.content import ContentRecipe
    from mmrec.recommender import Recommender
    from mmrec.space import UnifiedSpace, space_preset, tiny_vit

    torch.manual_seed(0)
    space = UnifiedSpace(space_preset("lit-tiny-vit", towers={"image": tiny_vit(32, width=32, depth=1, heads=2)},
                                      dim=16, adapter_options={"hidden": 32}))
    space.save_pretrained(tmp_path / "space")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {dim: 16, hidden_dim: 32, latent_dim: 8}\ntrain: {epochs: 1, batch_size: 1024}\n")
    out = tmp_path / "model"
    _mmrec("train", "coldstart", "--data", "synthetic", "--space", str(tmp_path / "space"), "--photo-half",
           "--config", str(cfg), "--out", str(out), "--no-progress", "--json")
    model = Recommender.from_pretrained(out)
    assert model.config.content_dim == 384 + 16 and model.config.similarity_dims == 384
    text, photo = model.content[:, :384], model.content[:, 384:]
    has_photo = photo.norm(dim=1) > 0
    assert has_photo.any() and not has_photo.all()  # the synthetic world leaves some articles without a photo
    assert torch.allclose(text.norm(dim=1)[has_photo], photo.norm(dim=1)[has_photo], atol=1e-5)  # two unit halves
    assert torch.allclose(text.norm(dim=1)[~has_photo], torch.ones(1))  # no photo: the text alone
    recipe = ContentRecipe.load(out)
    assert recipe.photo_half and recipe.encoder == "minilm" and recipe.space is not None
    bad = _mmrec("train", "coldstart", "--data", "synthetic", "--photo-half", "--out", str(tmp_path / "x"), check=False)
    assert bad.returncode == 2 and "--photo-half needs --space" in bad.stderr
