"""The next-purchase pipeline on a tiny synthetic shop: no look-ahead, candidates for customers without
history, an empty generator, save → load → recommend, the horizon protocol and deploy-mode refits."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from mmrec.data import Catalog, Interactions
from mmrec.fusion.candidates import (ContentSimilar, Purchases, Repurchase, Trained, Trending, empty,
                                     generate_all)
from mmrec.fusion.ranker import RankerConfig, features
from mmrec.pipeline import NextPurchase, PipelineConfig, PipelineModel, item_side, train

DAY0 = 18_500  # a Unix day
N_DAYS, N_USERS, N_ITEMS = 8, 120, 40


def shop(seed: int = 0) -> tuple[Interactions, Catalog]:
    """Customers with a favourite product family who re-buy and buy colour variants; a few new articles
    appear late; user 'ghost' never buys (no history)."""
    rng = np.random.default_rng(seed)
    users, items, days = [], [], []
    for u in range(N_USERS - 1):
        family = u % 8
        for d in range(N_DAYS):
            if rng.random() < 0.35:
                for _ in range(rng.integers(1, 3)):
                    users.append(u)
                    items.append(family * 5 + int(rng.integers(0, 5)) if rng.random() < 0.8 else int(rng.integers(0, N_ITEMS)))
                    days.append(DAY0 + d)
    ids = [f"{i:010d}" for i in range(N_ITEMS)]
    catalog = Catalog(ids=ids, titles=[f"item {i}" for i in range(N_ITEMS)], texts=[""] * N_ITEMS,
                      image_paths=[None] * N_ITEMS,
                      attributes={"product_code": np.array([str(i // 2) for i in range(N_ITEMS)], dtype=object),
                                  "product_group_name": np.array([f"g{i // 5}" for i in range(N_ITEMS)], dtype=object),
                                  "index_name": np.array([f"x{i % 3}" for i in range(N_ITEMS)], dtype=object)})
    user_ids = np.array([f"c{u:03d}" for u in range(N_USERS - 1)] + ["ghost"], dtype=object)
    inter = Interactions(np.array(users), np.array(items), user_ids, catalog.ids,
                         timestamps=np.array(days, np.int64) * 86_400)
    return inter, catalog


def vectors(n: int = N_ITEMS, seed: int = 1) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def small_config(**kw) -> PipelineConfig:
    base = dict(candidates={"repurchase": 10, "trending": 10, "copurchase": 10, "colour_variants": 5, "content": 5},
                content="", ranker=RankerConfig(n_estimators=20, min_child_samples=5, early_stopping_rounds=5))
    return PipelineConfig(**{**base, **kw})


def test_features_never_read_the_label_day_or_later():
    inter, catalog = shop()
    purchases = Purchases.from_interactions(inter)
    label_day = DAY0 + 5
    model = NextPurchase(small_config(), item_side(catalog, vectors()))
    users = np.arange(N_USERS)
    before = model.table(purchases, users, label_day)
    # rewrite every purchase on and after the label day: a feature that read one would change
    later = purchases.days >= label_day
    rng = np.random.default_rng(7)
    changed = Purchases(purchases.users.copy(), purchases.items.copy(), purchases.days.copy(), N_USERS, N_ITEMS)
    changed.items[later] = rng.integers(0, N_ITEMS, later.sum())
    changed.users[later] = rng.integers(0, N_USERS, later.sum())
    extra = Purchases(np.r_[changed.users, np.arange(N_USERS)], np.r_[changed.items, np.zeros(N_USERS, np.int64)],
                      np.r_[changed.days, np.full(N_USERS, label_day)], N_USERS, N_ITEMS)
    after = model.table(extra, users, label_day)
    pd.testing.assert_frame_equal(before, after)
    # and handing a feature builder history that reaches the label day is refused
    cands = generate_all([Trending(n=5)], purchases.before(label_day), users, label_day, model.side)
    with pytest.raises(ValueError, match="on or after"):
        features(cands, purchases.before(label_day + 1), label_day, model.side)
    with pytest.raises(ValueError, match="on or after"):
        generate_all([Trending(n=5)], purchases, users, label_day, model.side)


def test_a_customer_without_history_gets_trending_candidates():
    inter, catalog = shop()
    purchases = Purchases.from_interactions(inter)
    ghost = int(np.flatnonzero(inter.user_ids == "ghost")[0])
    day = DAY0 + N_DAYS
    model = NextPurchase(small_config(), item_side(catalog, vectors()))
    cands = model.candidates(purchases, np.array([ghost]), day)
    top, _ = Trending(n=10).top_items(purchases.before(day), day)
    assert len(cands) == 10 and set(cands["item"]) == set(top)
    assert cands["repurchase_rank"].isna().all() and cands["trending_rank"].notna().all()
    table = model.table(purchases, np.array([ghost]), day)
    assert len(table) == 10 and (table["c_rows"] == 0).all()


class Nothing:
    """A generator that proposes nothing."""

    name = "nothing"

    def generate(self, history, users, day, side):
        return empty()


def test_a_generator_that_returns_nothing_does_not_break_the_pipeline():
    inter, catalog = shop()
    purchases = Purchases.from_interactions(inter)
    side = item_side(catalog, None)  # no vectors: the content generator proposes nothing too
    day = DAY0 + 6
    users = np.unique(purchases.on(day).users)
    cands = generate_all([Repurchase(n=5), Nothing(), ContentSimilar(n=5), Trending(n=5)],
                         purchases.before(day), users, day, side)
    assert cands["nothing_rank"].isna().all() and cands["content_rank"].isna().all()
    assert set(cands["user"]) == set(users)
    model = NextPurchase(small_config(), side).fit(purchases, DAY0 + 6, valid_day=DAY0 + 7)
    top = model.recommend(purchases, users, DAY0 + 7, k=12)
    assert top.shape == (len(users), 12) and (top >= 0).all()
    assert all(len(set(row)) == 12 for row in top)


def test_pipeline_beats_trending_on_a_shop_with_habits():
    inter, catalog = shop()
    model, report = train(inter, catalog, small_config(), vectors=vectors())
    for part in ("valid", "test"):
        assert report[part]["pipeline"]["map@12"] > report[part]["trending"]["map@12"]
        assert 0 < report[part]["candidates"]["union"]["recall"] <= 1
    assert report["ranker"]["best_iteration"] >= 1


def test_save_load_recommend_round_trip(tmp_path):
    inter, catalog = shop()
    model, report = train(inter, catalog, small_config(), vectors=vectors(), refit_all=True)
    assert model.next_day == DAY0 + N_DAYS and report["refit"]["rounds"] == report["ranker"]["best_iteration"]
    users = np.arange(0, N_USERS, 7)
    codes, scores = model.recommend(users, k=12)
    model.save_pretrained(tmp_path / "pipe")
    loaded = PipelineModel.from_pretrained(tmp_path / "pipe")
    codes2, scores2 = loaded.recommend(users, k=12)
    assert np.array_equal(codes.numpy(), codes2.numpy())
    np.testing.assert_allclose(scores.numpy(), scores2.numpy(), rtol=1e-6)
    # a customer's own past articles may come back (repurchase) unless asked not to
    bought = [set(inter.items[inter.users == u].tolist()) for u in users]
    assert any(b & set(row) for b, row in zip(bought, codes.tolist()))
    fresh, _ = loaded.recommend(users, k=12, exclude_seen=True)
    assert not any(b & set(row) for b, row in zip(bought, fresh.tolist()))
    fallback = loaded.recommend_for_unknown(k=12)
    assert fallback["fallback"] == "trending" and len(fallback["items"]) == 12


def test_unknown_and_historyless_customers_get_the_same_trending_list(tmp_path):
    inter, catalog = shop()
    model, _ = train(inter, catalog, small_config(candidates={"repurchase": 10, "trending": 12}),
                     refit_all=True)
    ghost = int(np.flatnonzero(inter.user_ids == "ghost")[0])
    fallback = model.recommend_for_unknown(k=12)["items"]
    assert list(fallback) == model.recommend([ghost], k=12)[0][0].tolist()  # the same order, not only the same set


def test_saved_model_fills_after_the_candidates_in_the_evaluated_order():
    """`PipelineModel.recommend` (what `mmrec recommend` answers) lists what the evaluator scores: the ranked
    candidates, then the trending fill in trending order, for every customer and the whole catalogue."""
    inter, catalog = shop()
    model, _ = train(inter, catalog, small_config(), vectors=vectors(), refit_all=True)
    users = np.arange(N_USERS)
    codes, _ = model.recommend(users, k=N_ITEMS)
    expected = model.pipeline.recommend(model.history, users, model.next_day, k=N_ITEMS)
    ranked = model.pipeline.scored(model.history, users, model.next_day).groupby("user").size()
    assert 0 < ranked.min() and ranked.max() < N_ITEMS  # every customer has candidates and a fill
    for user, got, want in zip(users, codes.tolist(), expected.tolist()):
        n = int(ranked.get(user, 0))  # equal ranker scores may swap places: the candidates as a set
        assert set(got[:n]) == set(want[:n]) and got[n:] == want[n:]
    twice = model.recommend(np.array([3, 3, 1, 3]), k=N_ITEMS)[0]  # a customer asked twice gets one answer twice
    assert twice[0].tolist() == twice[1].tolist() == twice[3].tolist() == codes[3].tolist()
    assert twice[2].tolist() == codes[1].tolist()


def test_pipeline_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown generator"):
        PipelineConfig(candidates={"trending": 5, "telepathy": 3})
    with pytest.raises(ValueError, match="trending"):
        PipelineConfig(candidates={"repurchase": 5})
    with pytest.raises(ValueError, match="unknown group"):
        PipelineConfig(features=("customer", "horoscope"))
    with pytest.raises(ValueError, match="copurchase_neighbours"):
        PipelineConfig(copurchase_neighbours=-1)
    with pytest.raises(ValueError, match=r"candidates.trending: expected a count"):
        PipelineConfig(candidates={"trending": 48.7})
    # LightGBM refused these only after loading and candidate generation, as an internal error (or, 0, silently)
    for bad in ({"num_leaves": 1}, {"learning_rate": -1.0}, {"subsample": 2.0}, {"n_estimators": 0},
                {"early_stopping_rounds": 0}, {"n_jobs": 0}):
        with pytest.raises(ValueError, match=rf"RankerConfig\.{next(iter(bad))}"):
            RankerConfig(**bad)
    with pytest.raises(ValueError, match="at least one group"):
        PipelineConfig(features=())
    with pytest.raises(ValueError, match="fallback_decay must be a finite"):  # failed only when saving, as JSON
        PipelineConfig(fallback_decay=float("inf"))
    inter, catalog = shop()
    with pytest.raises(ValueError, match="objective"):
        train(inter, catalog, small_config(candidates={"trending": 5}, ranker=RankerConfig(objective="softmax")))
    with pytest.raises(ValueError, match="content encoder"):
        train(inter, catalog, small_config())  # asks for content candidates with no encoder and no vectors


def test_horizon_split_keeps_days_apart():
    from mmrec.splits import horizon

    inter, _ = shop()
    split = horizon(inter, days=2)
    day = lambda part: part.timestamps // 86_400  # noqa: E731
    assert day(split.test).min() == DAY0 + N_DAYS - 2 and day(split.test).max() == DAY0 + N_DAYS - 1
    assert set(day(split.valid)) == {DAY0 + N_DAYS - 4, DAY0 + N_DAYS - 3}
    assert day(split.train).max() == DAY0 + N_DAYS - 5
    assert len(split.train) + len(split.valid) + len(split.test) == len(inter)


@pytest.mark.parametrize("name", ["most_popular", "bpr"])
def test_refit_all_fits_a_fresh_model_on_every_row(name):
    import torch

    from mmrec.experiment import run
    from mmrec.splits import mmrec_protocol
    from mmrec.train import TrainConfig

    torch.set_num_threads(1)
    inter, _ = shop()
    split, _ = mmrec_protocol(inter, core=1)
    chosen, report = run(split, name, train_config=TrainConfig(epochs=3, batch_size=64, progress=False))
    model, refit = run(split, name, train_config=TrainConfig(epochs=3, batch_size=64, progress=False),
                       refit_all=True)
    everything = split.train.concat(split.valid).concat(split.test).unique_pairs()
    assert refit["refit"]["rows"] == len(split.train) + len(split.valid) + len(split.test)
    assert model.seen_indices.numel() == len(everything) > chosen.seen_indices.numel()
    if report.get("best_epoch") is not None:
        assert refit["refit"]["epochs"] == report["best_epoch"] + 1
    assert refit["test"] == report["test"]  # the reported metrics are those of the chosen point


def test_restrict_equals_a_pipeline_built_without_those_generators_and_features():
    from mmrec.pipeline import restrict

    inter, catalog = shop()
    purchases = Purchases.from_interactions(inter)
    side = item_side(catalog, vectors())
    day = DAY0 + 6
    full = NextPurchase(small_config(), side).labelled(purchases, day)
    fewer = small_config(candidates={"repurchase": 10, "trending": 10, "content": 5},
                         features=("generators", "customer", "affinity"))
    built = NextPurchase(fewer, side).labelled(purchases, day)
    cut = restrict(full, ["repurchase", "trending", "content"], fewer.features)
    pd.testing.assert_frame_equal(cut, built, check_dtype=False)


def write_hm_folder(root, inter: Interactions, catalog: Catalog) -> None:
    """The synthetic shop in H&M's file layout (articles.csv, transactions_train.csv)."""
    import csv

    from conftest import ARTICLE_HEADER

    root.mkdir()
    with open(root / "articles.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ARTICLE_HEADER)
        for i, item_id in enumerate(catalog.ids):
            row = {h: "x" for h in ARTICLE_HEADER}
            row.update(article_id=item_id, product_code=catalog.attributes["product_code"][i],
                       prod_name=catalog.titles[i], product_group_name=catalog.attributes["product_group_name"][i],
                       index_name=catalog.attributes["index_name"][i], detail_desc="")
            w.writerow([row[h] for h in ARTICLE_HEADER])
    with open(root / "transactions_train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_dat", "customer_id", "article_id", "price", "sales_channel_id"])
        for u, i, t in zip(inter.users, inter.items, inter.timestamps):
            w.writerow([str(np.datetime64(int(t), "s").astype("datetime64[D]")), inter.user_ids[u], inter.item_ids[i],
                        "0.01", "2"])


def test_cli_train_pipeline_refit_all_then_recommend_answers_everyone(tmp_path):
    import json
    import subprocess
    import sys

    inter, catalog = shop()
    write_hm_folder(tmp_path / "hm", inter, catalog)
    (tmp_path / "run.yaml").write_text(
        "candidates: {repurchase: 10, trending: 12, copurchase: 10, colour_variants: 5, lightgcn: 6}\n"
        "ranker: {n_estimators: 20, min_child_samples: 5, early_stopping_rounds: 5}\n")
    out = tmp_path / "model"
    cmd = [sys.executable, "-m", "mmrec", "train", "pipeline", "--data", str(tmp_path / "hm"), "--refit-all",
           "--no-content", "--config", str(tmp_path / "run.yaml"), "--out", str(out), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["refit"]["rounds"] >= 1 and "map@12" in report["test"]["pipeline"]
    wanted = ["c000", "c007", "ghost", "never-seen-customer"]
    (tmp_path / "users.txt").write_text("\n".join(wanted) + "\n")
    done = subprocess.run([sys.executable, "-m", "mmrec", "recommend", "--model", str(out), "--users",
                           str(tmp_path / "users.txt"), "--k", "12", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer["recommendations"]) == set(wanted)
    assert all(len(items) == 12 for items in answer["recommendations"].values())
    # 'ghost' bought nothing, so it is not in the transactions file either: both are unknown to the model
    assert answer["fallback"]["kind"] == "trending"
    assert answer["fallback"]["users"] == ["ghost", "never-seen-customer"]
    # a pipeline keeps what a customer bought (repurchase is its strongest signal) unless told otherwise
    from mmrec.recommender import Recommender

    model = Recommender.from_pretrained(out)
    code = {u: i for i, u in enumerate(model.user_ids)}["c000"]
    bought = set(model.item_ids[model.seen_indices[model.seen_indptr[code]:model.seen_indptr[code + 1]].numpy()])
    assert bought & set(answer["recommendations"]["c000"])
    done = subprocess.run([sys.executable, "-m", "mmrec", "recommend", "--model", str(out), "--user", "c000",
                           "--k", "12", "--exclude-seen", "--json"], capture_output=True, text=True)
    assert done.returncode == 0 and not bought & set(json.loads(done.stdout)["recommendations"]["c000"])


def tiny_lightgcn(**kw) -> Trained:
    return Trained(**{"n": 6, "epochs": 3, "batch_size": 256, "config": {"dim": 8}, **kw})


def test_a_trained_generator_reads_only_purchases_before_the_day():
    inter, catalog = shop()
    purchases = Purchases.from_interactions(inter)
    day, side = DAY0 + 6, item_side(catalog, None)
    users = np.arange(N_USERS)
    before = tiny_lightgcn().generate(purchases.before(day), users, day, side)
    later = purchases.days >= day
    changed = Purchases(purchases.users.copy(), purchases.items.copy(), purchases.days.copy(), N_USERS, N_ITEMS)
    changed.items[later] = np.random.default_rng(3).integers(0, N_ITEMS, later.sum())
    after = tiny_lightgcn().generate(changed, users, day, side)  # rows on and after the day are not read
    pd.testing.assert_frame_equal(before, after)
    assert (before.groupby("user").size() == 6).all()
    # only customers with a purchase in the window are proposed to; the model's own scores, best first
    window_users = np.unique(purchases.users[(purchases.days >= day - 2) & (purchases.days < day)])
    short = tiny_lightgcn(window=2).generate(purchases.before(day), users, day, side)
    assert set(short["user"]) == set(window_users)
    assert (short.groupby("user")["score"].diff().dropna() <= 0).all()


def test_a_trained_generator_without_purchases_in_its_window_proposes_nothing():
    inter, catalog = shop()
    purchases = Purchases.from_interactions(inter)
    side = item_side(catalog, None)
    ghost = int(np.flatnonzero(inter.user_ids == "ghost")[0])
    assert tiny_lightgcn().generate(purchases.before(DAY0 + 6), np.array([ghost]), DAY0 + 6, side).empty
    assert tiny_lightgcn().generate(purchases.before(DAY0), np.arange(N_USERS), DAY0, side).empty


def test_a_pipeline_with_a_trained_generator_fits_once_per_history_and_recommends():
    inter, catalog = shop()
    purchases = Purchases.from_interactions(inter)
    config = small_config(candidates={"repurchase": 10, "trending": 10, "lightgcn": 6})
    model = NextPurchase(config, item_side(catalog, None))
    (trained,) = [g for g in model.generators if isinstance(g, Trained)]
    model.generators[model.generators.index(trained)] = tiny_lightgcn()
    model.fit(purchases, DAY0 + 6, valid_day=DAY0 + 7)
    users = np.unique(purchases.on(DAY0 + 7).users)
    first = model.candidates(purchases, users, DAY0 + 7)
    fitted = model.generators[-1]._fitted[1]
    assert model.candidates(purchases, users, DAY0 + 7).equals(first)
    assert model.generators[-1]._fitted[1] is fitted  # the day's fit is reused, not redone
    assert first["lightgcn_rank"].notna().any()
    top = model.recommend(purchases, users, DAY0 + 7, k=12)
    assert top.shape == (len(users), 12) and (top >= 0).all()


def test_customers_without_history_are_flagged_and_unknown_ones_are_served(tmp_path):
    """A known customer with nothing in the history gets the trending list, flagged like an unknown one, in
    `mmrec recommend` and `mmrec serve`; an unknown customer is served the same list with its scores."""
    from fastapi.testclient import TestClient

    from mmrec.serve import ServeConfig, create_app

    inter, catalog = shop()
    model, _ = train(inter, catalog, small_config(candidates={"repurchase": 10, "trending": 12}), refit_all=True)
    ghost = int(np.flatnonzero(inter.user_ids == "ghost")[0])
    assert model.answered_by_fallback([0, ghost]).tolist() == [False, True]
    model.save_pretrained(tmp_path / "pipe")
    client = TestClient(create_app(tmp_path / "pipe", ServeConfig()), raise_server_exceptions=True)
    unknown = client.get("/recommend", params={"user": "nobody", "k": 4}).json()
    trending = model.recommend_for_unknown(k=4)
    assert unknown["fallback"] == "trending" and unknown["items"] == [model.item_ids[c] for c in trending["items"]]
    assert unknown["scores"] == sorted(unknown["scores"], reverse=True)
    assert client.get("/recommend", params={"user": "ghost", "k": 4}).json()["fallback"] == "trending"
    assert client.get("/recommend", params={"user": "c000", "k": 4}).json()["fallback"] is None


def test_cli_flags_known_customers_without_history(tmp_path, capsys):
    import json

    from mmrec.cli import main

    inter, catalog = shop()
    model, _ = train(inter, catalog, small_config(candidates={"repurchase": 10, "trending": 12}))
    model.save_pretrained(tmp_path / "pipe")  # trained to the test day: its history ends before it
    (tmp_path / "users.txt").write_text("\ufeffc000\nghost\nnobody\n")  # a spreadsheet's byte-order mark first
    assert main(["recommend", "--model", str(tmp_path / "pipe"), "--users", str(tmp_path / "users.txt"), "--k",
                 "5", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["unknown_users"] == ["nobody"]
    assert answer["fallback"] == {"kind": "trending", "users": ["nobody", "ghost"]}
    assert answer["recommendations"]["ghost"] == answer["recommendations"]["nobody"]


def test_a_test_day_the_data_cannot_serve_is_refused_naming_the_span():
    inter, catalog = shop()
    config = small_config(candidates={"repurchase": 10, "trending": 12})
    with pytest.raises(ValueError, match=r"starts after the data ends .*purchases span"):
        train(inter, catalog, config, test_start=DAY0 + N_DAYS)
    with pytest.raises(ValueError, match=r"no history before it .*earliest test_start is"):
        train(inter, catalog, config, test_start=DAY0 + 4)  # 3 training windows + valid need 4 days before
    two_days = dataclasses.replace(config, horizon_days=2)  # a test window half after the data: refused
    with pytest.raises(ValueError, match=r"runs to .* after the data ends .*the latest test_start is"):
        train(inter, catalog, two_days, test_start=DAY0 + N_DAYS - 1)
    with pytest.raises(ValueError, match="the data is too short for horizon_days"):  # no test_start would do
        train(inter, catalog, dataclasses.replace(config, horizon_days=N_DAYS // 4 + 1), test_start=DAY0 + 4)
    closed = inter.select(inter.timestamps // 86_400 != DAY0 + N_DAYS - 2)  # the shop shut on the valid day
    with pytest.raises(ValueError, match="valid window starting .* nothing to stop early on"):
        train(closed, catalog, config)


def test_refit_all_with_an_earlier_test_day_still_learns_from_every_purchase():
    inter, catalog = shop()
    model, report = train(inter, catalog, small_config(candidates={"repurchase": 10, "trending": 12}),
                          test_start=DAY0 + N_DAYS - 2, refit_all=True)
    assert report["refit"]["last_label_day"] == str(np.datetime64(DAY0 + N_DAYS - 1, "D"))
    assert model.next_day == DAY0 + N_DAYS and len(model.history) == len(inter) == report["refit"]["history_rows"]


def test_cli_pipeline_options_are_checked_before_any_work(tmp_path, capsys):
    """A day not written YYYY-MM-DD, and an --out that would replace the data, are refused (exit 2) before
    training; a run file's ranker seed is kept unless --seed is given."""
    import json

    from mmrec.cli import main

    inter, catalog = shop()
    write_hm_folder(tmp_path / "hm", inter, catalog)
    base = ["train", "pipeline", "--data", str(tmp_path / "hm"), "--no-content"]
    for day in ("2021-01", "20200918", "NaT", "today"):
        assert main([*base, "--test-start", day, "--out", str(tmp_path / "m")]) == 2
        assert "YYYY-MM-DD" in capsys.readouterr().err
    before = sorted(p.name for p in (tmp_path / "hm").iterdir())
    assert main([*base, "--out", str(tmp_path / "hm")]) == 2
    assert "is the input folder" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "hm" / "model")]) == 2
    assert "is the input folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "hm").iterdir()) == before
    (tmp_path / "run.yaml").write_text("candidates: {repurchase: 10, trending: 12}\nranker: {seed: 7, n_estimators: 5}\n")
    assert main([*base, "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "m"), "--json"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "m" / "config.json").read_text())["config"]["ranker"]["seed"] == 7


def test_cli_pipeline_under_a_launcher_runs_in_the_main_process_only(tmp_path, capsys, monkeypatch, caplog):
    """Under `accelerate launch` every rank ran the whole pipeline: two reports on stdout, two writers of --out."""
    from mmrec.cli import main

    inter, catalog = shop()
    write_hm_folder(tmp_path / "hm", inter, catalog)
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "pipeline", "--data", str(tmp_path / "hm"), "--no-content", "--out", str(tmp_path / "m"),
                 "--json"]) == 0
    assert capsys.readouterr().out == "" and "runs in one process" in caplog.text and not (tmp_path / "m").exists()
