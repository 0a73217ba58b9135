"""``mmrec serve`` (mmrec.serve): every endpoint with good and bad input, changes without retraining,
concurrent writes and reads against a real uvicorn, and a state folder that leaves the model folder as it was."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

TITLES = ["red summer dress", "blue denim jeans", "black leather boots", "white cotton shirt", "green wool sweater",
          "red floral skirt", "blue rain jacket", "black silk scarf", "white sneakers"]


def _interactions():
    from mmrec.data import Interactions

    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 12, 80), rng.integers(0, 9, 80)
    return Interactions(users, items, np.array([f"u{i}" for i in range(12)], dtype=object),
                        np.array([f"i{i}" for i in range(9)], dtype=object)).unique_pairs()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A small trained vae_fusion folder with a MiniLM content recipe, and a bpr folder (no add_items/update)."""
    import torch

    from mmrec.content import ContentRecipe
    from mmrec.data import Catalog
    from mmrec.recommender import create_model
    from mmrec.train import TrainConfig

    root = tmp_path_factory.mktemp("serve")
    train = _interactions()
    torch.manual_seed(0)
    catalog = Catalog(train.item_ids, TITLES, [""] * 9, [None] * 9)
    recipe = ContentRecipe()
    vae = create_model("vae_fusion", train.n_users, train.n_items, {"dim": 8, "latent_dim": 4, "hidden_dim": 16})
    vae.set_content(recipe.embed(catalog), recipe=recipe)
    vae.fit(train, train_config=TrainConfig(epochs=1, batch_size=64, progress=False))
    vae.save_pretrained(root / "vae")
    bpr = create_model("bpr", train.n_users, train.n_items, {"dim": 4})
    bpr.remember(train)
    bpr.save_pretrained(root / "bpr")
    return {"vae": root / "vae", "bpr": root / "bpr"}


@pytest.fixture(scope="module")
def encoder():
    """One MiniLM for every service of the module (loading it is the slow part of adding items)."""
    from mmrec.encoders import create_encoder

    return create_encoder("minilm")


def _client(folder, encoder=None, **config):
    from fastapi.testclient import TestClient

    from mmrec.serve import ServeConfig, create_app

    app = create_app(folder, ServeConfig(**config))
    if encoder is not None:
        app.state.service._encoder = encoder
    return TestClient(app, raise_server_exceptions=True)


def _png(size=(4, 4), colour=(200, 30, 30), fmt="PNG") -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def _folder_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]
    return body["error"]


# -- reading ------------------------------------------------------------------------------------------------------

def test_health_and_recommend_for_a_known_user(folders):
    client = _client(folders["vae"])
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "vae_fusion"
    assert (health["n_users"], health["n_items"], health["index"]) == (12, 9, None)
    assert health["state"] == {"saved_to": None, "in_memory_only": True}
    assert health["can_add_items"] and health["can_update"]
    answer = client.get("/recommend", params={"user": "u3", "k": 3}).json()
    assert answer["user"] == "u3" and answer["fallback"] is None
    assert len(answer["items"]) == 3 == len(answer["scores"])
    assert answer["scores"] == sorted(answer["scores"], reverse=True)
    # The same as the model's own answer, seen items excluded.
    from mmrec.recommender import Recommender

    model = Recommender.from_pretrained(folders["vae"])
    codes, _ = model.recommend(np.array([3]), 3)
    assert answer["items"] == [str(model.item_ids[c]) for c in codes[0].numpy()]
    default = client.get("/recommend", params={"user": "u3"}).json()
    assert len(default["items"]) <= 12 and not set(default["items"]) & set(_seen(model, 3))
    assert client.get("/health").json()["counters"]["recommend"] == 2


def _seen(model, user: int) -> list[str]:
    ptr, idx = model.seen_indptr.numpy(), model.seen_indices.numpy()
    return [str(model.item_ids[i]) for i in idx[ptr[user]:ptr[user + 1]]]


def test_unknown_user_gets_the_flagged_fallback(folders):
    vae, bpr = _client(folders["vae"]), _client(folders["bpr"])
    answer = vae.get("/recommend", params={"user": "nobody", "k": 4}).json()
    assert answer["fallback"] == "popular_by_content" and len(answer["items"]) == 4
    answer = bpr.get("/recommend", params={"user": "nobody", "k": 4}).json()
    assert answer["fallback"] == "most_popular" and len(answer["items"]) == 4
    counts = np.bincount(_interactions().items, minlength=9)
    assert answer["scores"] == sorted(answer["scores"], reverse=True) == [float(c) for c in np.sort(counts)[::-1][:4]]
    assert vae.get("/health").json()["counters"]["fallback"] == 1


@pytest.mark.parametrize("params, words", [
    ({"user": "u1", "k": 0}, ("query k", "positive")),
    ({"user": "u1", "k": -3}, ("query k",)),
    ({"user": "u1", "k": "x"}, ("query k", "integer", "'x'")),
    ({"user": "u1", "k": "2.5"}, ("query k",)),
    ({"k": 3}, ("query user",)),
    ({"user": "", "k": 3}, ("query user",)),
    ({"user": "u1", "candidates": "new"}, ("query candidates",)),
])
def test_bad_queries_are_one_line_422s(folders, params, words):
    _assert_error(_client(folders["bpr"]).get("/recommend", params=params), 422, *words)


def test_k_is_capped(folders):
    client = _client(folders["bpr"], max_k=5, default_k=5)
    assert len(client.get("/recommend", params={"user": "nobody", "k": 1000}).json()["items"]) == 5
    unknown_route = client.get("/nothing-here")
    _assert_error(unknown_route, 404, "/nothing-here")


# -- adding items ---------------------------------------------------------------------------------------------

def test_new_items_are_recommended_at_once(folders, encoder):
    client = _client(folders["vae"], encoder)
    body = {"items": [{"id": "n1", "title": "red silk dress", "text": "a red dress for summer"},
                      {"id": "n2", "title": "grey wool coat", "image": _png()},
                      {"id": "n3", "title": "black boots", "attributes": {"colour_group_name": "Black"},
                       "image": _png(fmt="JPEG")}]}
    response = client.post("/items", json=body)
    assert response.status_code == 200, response.text
    # The model's recipe is MiniLM on text: the photos are checked, but not what the vectors are made from.
    assert response.json() == {"added": ["n1", "n2", "n3"], "n_items": 12, "version": 1, "images_used": False}
    assert client.get("/health").json()["n_items"] == 12
    cold = client.get("/recommend", params={"user": "u0", "k": 20, "candidates": "cold"}).json()
    assert {"n1", "n2", "n3"} <= set(cold["items"])
    everything = client.get("/recommend", params={"user": "u0", "k": 20}).json()
    assert {"n1", "n2", "n3"} <= set(everything["items"])
    fallback = client.get("/recommend", params={"user": "nobody", "k": 20, "candidates": "cold"}).json()
    assert {"n1", "n2", "n3"} <= set(fallback["items"]) and fallback["fallback"] == "popular_by_content"


def test_a_photo_only_item_is_embedded_by_a_space_recipe(tmp_path):
    """A model whose content came from a UnifiedSpace (photo and text towers) embeds a posted photo: an item
    with only a photo is accepted and gets a content vector of its own."""
    import torch

    from mmrec.content import ContentRecipe
    from mmrec.data import Catalog
    from mmrec.recommender import create_model
    from mmrec.serve import ServeConfig, create_app
    from mmrec.space import UnifiedSpace, space_preset, tiny_vit
    from mmrec.train import TrainConfig

    torch.manual_seed(0)
    space = UnifiedSpace(space_preset("lit-tiny-vit", towers={"image": tiny_vit(32, width=32, depth=1, heads=2)},
                                      dim=16, adapter_options={"hidden": 32}))
    recipe = ContentRecipe(space=space)
    train = _interactions()
    model = create_model("vae_fusion", train.n_users, train.n_items, {"dim": 8, "latent_dim": 4, "hidden_dim": 16})
    model.set_content(recipe.embed(Catalog(train.item_ids, TITLES, [""] * 9, [None] * 9)), recipe=recipe)
    model.fit(train, train_config=TrainConfig(epochs=1, batch_size=64, progress=False))
    model.save_pretrained(tmp_path / "model")
    from fastapi.testclient import TestClient

    client = TestClient(create_app(tmp_path / "model", ServeConfig()))
    body = {"items": [{"id": "p1", "image": _png(size=(40, 40), colour=(10, 200, 10))},
                      {"id": "p2", "title": "red silk dress", "image": _png(size=(40, 40), fmt="JPEG")}]}
    response = client.post("/items", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["images_used"] is True
    served = client.app.state.service.snapshot.model
    content = served.content[-2:]
    assert bool((content.norm(dim=1) > 0.99).all()) and not torch.allclose(content[0], content[1])
    cold = client.get("/recommend", params={"user": "u0", "k": 20, "candidates": "cold"}).json()
    assert {"p1", "p2"} <= set(cold["items"])


def test_bad_items_are_refused_and_change_nothing(folders, encoder, monkeypatch):
    client = _client(folders["vae"], encoder)
    post = client.post
    _assert_error(post("/items", json={"items": [{"id": "i0", "title": "x"}]}), 409, "'i0'", "already in the model")
    _assert_error(post("/items", json={"items": [{"id": "z", "title": "x"}, {"id": "z", "title": "y"}]}), 409,
                  "items[1].id", "'z'", "twice")
    _assert_error(post("/items", content=b'{"items": [', headers={"content-type": "application/json"}), 422,
                  "not valid JSON")
    _assert_error(post("/items", json={"items": [{"title": "no id"}]}), 422, "body items[0].id")
    _assert_error(post("/items", json={"items": [{"id": 7, "title": "x"}]}), 422, "items[0].id")
    _assert_error(post("/items", json={"items": [{"id": "a", "title": "x", "price": 3}]}), 422, "items[0].price")
    _assert_error(post("/items", json={"items": [{"id": "  ", "title": "x"}]}), 422, "items[0].id", "blank")
    for odd in ("a\u0000b", "a\u0085b", "a\u200bb", "a\u2028b", "a\u202eb"):  # C0, C1, zero-width, line sep., bidi
        _assert_error(post("/items", json={"items": [{"id": odd, "title": "x"}]}), 422, "items[0].id", "control")
    lone = b'{"items": [{"id": "a", "title": "\\ud800"}]}'  # JSON may carry a lone surrogate; no encoder takes one
    _assert_error(post("/items", content=lone, headers={"content-type": "application/json"}), 422,
                  "items[0].title", "surrogate")
    _assert_error(post("/items", json={"stuff": []}), 422, "body")
    _assert_error(post("/items", json={"items": []}), 422, "empty")
    _assert_error(post("/items", json={"items": [{"id": "a"}]}), 422, "items[0]", "nothing")
    _assert_error(post("/items", json={"items": [{"id": "a", "title": "x", "image": "@@not base64@@"}]}), 422,
                  "items[0].image", "base64")
    not_image = base64.b64encode(b"hello, not a picture").decode()
    _assert_error(post("/items", json={"items": [{"id": "a", "title": "x", "image": not_image}]}), 422,
                  "items[0].image")
    _assert_error(post("/items", json={"items": [{"id": "a", "title": "x", "image": _png(fmt="GIF")}]}), 422,
                  "GIF", "JPEG or PNG")
    # Pillow's decompression-bomb guard stays on: an image over its limit is refused, not decoded.
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    _assert_error(post("/items", json={"items": [{"id": "a", "title": "x", "image": _png(size=(20, 20))}]}), 422,
                  "decompression-bomb")
    monkeypatch.undo()
    _assert_error(_client(folders["vae"], encoder, max_items_per_request=2).post(
        "/items", json={"items": [{"id": f"m{i}", "title": "x"} for i in range(3)]}), 413, "at most 2")
    _assert_error(_client(folders["vae"], max_body_bytes=100).post(
        "/items", json={"items": [{"id": "a", "title": "x" * 200}]}), 413, "request body")
    health = client.get("/health").json()
    assert health["n_items"] == 9 and health["version"] == 0 and health["counters"]["errors"] >= 12


def test_a_model_without_add_items_or_update_says_so(folders):
    client = _client(folders["bpr"])
    _assert_error(client.post("/items", json={"items": [{"id": "n1", "title": "x"}]}), 409, "'bpr'",
                  "cannot take new items")
    _assert_error(client.post("/events", json={"events": [{"user": "u0", "item": "i0"}]}), 409, "'bpr'", "update")
    health = client.get("/health").json()
    assert not health["can_add_items"] and not health["can_update"]


def test_a_bug_is_a_json_500_and_the_model_is_unchanged(folders, encoder, monkeypatch):
    """Not bad input: an error inside add_items is answered in JSON with a 500, and the change is not applied."""
    from fastapi.testclient import TestClient

    from mmrec.serve import ServeConfig, create_app

    app = create_app(folders["vae"], ServeConfig())
    app.state.service._encoder = encoder
    client = TestClient(app, raise_server_exceptions=False)
    from mmrec.fusion.coldstart import VAEFusion

    def broken(self, *args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(VAEFusion, "add_items", broken)
    _assert_error(client.post("/items", json={"items": [{"id": "n1", "title": "x"}]}), 500, "internal error",
                  "RuntimeError: boom")
    assert client.get("/health").json()["n_items"] == 9


# -- events ---------------------------------------------------------------------------------------------------

def test_events_fold_in_and_bought_items_are_then_excluded(folders, encoder):
    client = _client(folders["vae"], encoder)
    assert client.post("/items", json={"items": [{"id": "n1", "title": "red silk dress"}]}).status_code == 200
    before = client.get("/recommend", params={"user": "u2", "k": 20}).json()
    assert "n1" in before["items"]
    response = client.post("/events", json={"events": [{"user": "u2", "item": "n1"}, {"user": "u5", "item": "n1"},
                                                       {"user": "u2", "item": "n1"}]})
    assert response.status_code == 200, response.text
    assert response.json() == {"events": 3, "new_pairs": 2, "version": 2}
    again = client.post("/events", json={"events": [{"user": "u5", "item": "n1"}]})  # a pair it already has
    assert again.json() == {"events": 1, "new_pairs": 0, "version": 2}
    after = client.get("/recommend", params={"user": "u2", "k": 20}).json()
    assert "n1" not in after["items"]
    assert "n1" in client.get("/recommend", params={"user": "u0", "k": 20, "candidates": "warm"}).json()["items"]
    _assert_error(client.post("/events", json={"events": [{"user": "ghost", "item": "n1"}]}), 422, "'ghost'", "user")
    _assert_error(client.post("/events", json={"events": [{"user": "u1", "item": "nope"}]}), 422, "'nope'",
                  "POST /items")
    _assert_error(client.post("/events", json={"events": [{"user": "u1"}]}), 422, "events[0].item")
    _assert_error(client.post("/events", json={"events": []}), 422, "empty")
    _assert_error(client.post("/events", content=b"not json", headers={"content-type": "application/json"}), 422,
                  "not valid JSON")
    assert client.get("/health").json()["version"] == 2


# -- concurrency --------------------------------------------------------------------------------------------

def test_concurrent_item_posts_and_recommends_all_succeed_and_agree(folders, encoder):
    """Writers add items while readers ask, over a real uvicorn (its thread pool): every request succeeds,
    every answer is one version's complete answer, and versions only move forward."""
    import httpx

    from mmrec.serve import ServeConfig, create_app, running

    app = create_app(folders["vae"], ServeConfig())
    service = app.state.service
    service._encoder = encoder
    n_writers, posts_each, n_readers, reads_each = 3, 3, 4, 15
    answers: dict[int, list[dict]] = {r: [] for r in range(n_readers)}
    failures: list[str] = []

    with running(app) as url:
        def writer(w: int) -> None:
            with httpx.Client(base_url=url, timeout=120) as http:
                for p in range(posts_each):
                    item = {"id": f"w{w}p{p}", "title": f"{TITLES[(w + p) % 9]} {w}{p}"}
                    r = http.post("/items", json={"items": [item]})
                    if r.status_code != 200:
                        failures.append(r.text)

        def reader(r: int) -> None:
            with httpx.Client(base_url=url, timeout=120) as http:
                for n in range(reads_each):
                    response = http.get("/recommend", params={"user": "u4", "k": 30, "candidates": "all"})
                    if response.status_code != 200:
                        failures.append(response.text)
                    else:
                        answers[r].append(response.json())

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
        threads += [threading.Thread(target=reader, args=(r,)) for r in range(n_readers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        final = httpx.get(f"{url}/health").json()

    assert not failures
    assert final["n_items"] == 9 + n_writers * posts_each and final["version"] == n_writers * posts_each
    by_version: dict[int, dict] = {}
    for r, seen in answers.items():
        assert len(seen) == reads_each
        versions = [a["version"] for a in seen]
        assert versions == sorted(versions)  # one reader never goes back to an older model
        for answer in seen:
            assert len(answer["items"]) == len(set(answer["items"])) == len(answer["scores"])
            # A version's model is complete: every item it returns exists in it (9 + its items added so far).
            assert len(answer["items"]) == min(30, 9 + answer["version"] - len(_seen_ids(service, 4)))
            first = by_version.setdefault(answer["version"], answer)
            assert answer["items"] == first["items"] and answer["scores"] == first["scores"]
    # The final model gives the answer a fresh sequential request gives.
    last = service.recommend("u4", 30)
    assert last["version"] == final["version"]
    assert len(last["items"]) == min(30, final["n_items"] - len(_seen_ids(service, 4)))


def _seen_ids(service, user: int) -> list[str]:
    return _seen(service.snapshot.model, user)


# -- retrieval index ----------------------------------------------------------------------------------------

def test_an_index_gives_the_exact_answers_and_follows_new_items(folders, encoder):
    """``index="flat"`` (exact search, re-ranked by the model) answers as scoring every item does, also after
    POST /items (the index grows by the new items; other changes rebuild it)."""
    pytest.importorskip("faiss")
    pytest.importorskip("mmrec.index")
    indexed, plain = _client(folders["vae"], encoder, index="flat"), _client(folders["vae"], encoder)
    assert indexed.get("/health").json()["index"] == "flat"
    users = [f"u{i}" for i in range(12)]

    def answers(client):
        return [client.get("/recommend", params={"user": u, "k": 5}).json()["items"] for u in users]

    assert answers(indexed) == answers(plain)
    body = {"items": [{"id": "n1", "title": "red silk dress"}, {"id": "n2", "title": "black leather boots"}]}
    assert indexed.post("/items", json=body).status_code == plain.post("/items", json=body).status_code == 200
    after = answers(indexed)
    assert after == answers(plain)
    big = indexed.get("/recommend", params={"user": "u0", "k": 20}).json()["items"]
    assert {"n1", "n2"} <= set(big)


def test_an_index_needs_a_factorised_model(tmp_path):
    from mmrec.recommender import create_model
    from mmrec.serve import ServeConfig, create_app

    pytest.importorskip("mmrec.index")
    model = create_model("most_popular", 12, 9)
    model.remember(_interactions())
    with pytest.raises(ValueError, match="--index flat.*--index none"):
        create_app(model, ServeConfig(index="flat"))


# -- state folder ---------------------------------------------------------------------------------------------

def test_state_dir_gets_the_changes_and_the_model_folder_stays_byte_identical(folders, encoder, tmp_path):
    from mmrec.recommender import Recommender

    before = _folder_digest(folders["vae"])
    state = tmp_path / "served"
    client = _client(folders["vae"], encoder, state_dir=str(state))
    assert client.get("/health").json()["state"] == {"saved_to": str(state), "in_memory_only": False}
    assert not state.exists()  # nothing is written before a change
    assert client.post("/items", json={"items": [{"id": "n1", "title": "red silk dress"}]}).status_code == 200
    assert client.post("/events", json={"events": [{"user": "u1", "item": "n1"}]}).status_code == 200
    assert _folder_digest(folders["vae"]) == before
    saved = Recommender.from_pretrained(state)
    assert saved.n_items == 10 and "n1" in _seen(saved, 1)
    # Serving the state folder resumes from it, with a further state folder.
    resumed = _client(state, encoder, state_dir=str(tmp_path / "served2"))
    assert resumed.get("/health").json()["n_items"] == 10
    assert "n1" not in resumed.get("/recommend", params={"user": "u1", "k": 20}).json()["items"]


def test_state_dir_must_not_be_the_model_folder_or_foreign_data(folders, tmp_path):
    from mmrec.serve import ServeConfig, create_app

    with pytest.raises(ValueError, match="--state-dir.*model folder"):
        create_app(folders["vae"], ServeConfig(state_dir=str(folders["vae"])))
    with pytest.raises(ValueError, match="--state-dir.*model folder"):
        create_app(folders["vae"], ServeConfig(state_dir=str(folders["vae"] / "sub")))
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="--state-dir.*not a saved model"):
        create_app(folders["vae"], ServeConfig(state_dir=str(foreign)))
    # a restart with the same state dir would answer from the original model and overwrite the saved changes
    with pytest.raises(ValueError, match="--state-dir.*already holds a saved model.*serve it with --model"):
        create_app(folders["vae"], ServeConfig(state_dir=str(folders["bpr"])))


# -- command line -------------------------------------------------------------------------------------------

def _refusal(capsys, *args: str) -> str:
    """Run ``mmrec serve`` in this process (it stops before serving); its exit code must be 2, its stderr one line."""
    from mmrec.cli import main

    code = main(["serve", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("mmrec serve"), err
    return err


def test_cli_refuses_a_bad_folder_or_state_dir_in_one_line(tmp_path, folders, capsys):
    assert "--model" in _refusal(capsys, "--model", str(tmp_path / "missing"), "--port", "0")
    (tmp_path / "empty").mkdir()
    assert "manifest.json" in _refusal(capsys, "--model", str(tmp_path / "empty"), "--port", "0")
    assert "--state-dir" in _refusal(capsys, "--model", str(folders["bpr"]), "--state-dir", str(folders["bpr"]),
                                     "--port", "0")
    assert "--port" in _refusal(capsys, "--model", str(folders["bpr"]), "--port", "70000")
    assert "--index" in _refusal(capsys, "--model", str(folders["bpr"]), "--index", "annoy")


def test_cli_serves_until_stopped(folders):
    """``mmrec serve`` on a free port answers /health and /recommend, then stops on SIGINT."""
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "mmrec", "serve", "--model", str(folders["bpr"]), "--port",
                                str(port)], stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=5).json()
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
                time.sleep(0.2)
        assert health["model"] == "bpr" and health["n_users"] == 12
        answer = httpx.get(f"{url}/recommend", params={"user": "u0", "k": 2}).json()
        assert len(answer["items"]) == 2 and answer["fallback"] is None
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert f"127.0.0.1:{port}" in process.stderr.read()


def test_the_listening_socket_is_tcp_so_answers_are_not_held_by_nagle():
    """asyncio sets TCP_NODELAY only on accepted sockets whose proto is TCP; a socket made with proto 0 made
    every answer wait for the client's delayed ACK (~40 ms)."""
    import socket

    from mmrec.serve import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockname()[1] > 0
        with pytest.raises(OSError, match="--port"):
            bind("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()
