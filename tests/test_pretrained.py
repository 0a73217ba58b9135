"""Saved folders are data, never code: a manifest verified on load, atomic replacement, consistency checks
between config, vocabulary and weights, tower options that can run code refused, and the library alone
(no CLI) can save a cold-start model, load it in a fresh process and add items from a non-H&M catalog."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrec.data import Interactions
from mmrec.io import atomic_folder, atomic_save_tensors, atomic_write_json
from mmrec.pretrained import MANIFEST_FILE, FolderError, sha256_file
from mmrec.recommender import Recommender, create_model
from mmrec.space import SpaceConfig, TowerConfig, UnifiedSpace

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_interactions() -> Interactions:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 12, 80), rng.integers(0, 9, 80)
    return Interactions(users, items, np.array([f"u{i}" for i in range(12)], dtype=object),
                        np.array([f"i{i}" for i in range(9)], dtype=object)).unique_pairs()


@pytest.fixture
def saved(tmp_path) -> Path:
    model = create_model("bpr", 12, 9, {"dim": 4})
    model.remember(tiny_interactions())
    return model.save_pretrained(tmp_path / "model")


def relist(folder: Path) -> None:
    """Rewrite the manifest to match the files: a tamperer who 'fixes' the hashes (the folder then lies
    consistently, and the consistency checks must catch it)."""
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"] = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                         for p in folder.iterdir() if p.is_file() and p.name != MANIFEST_FILE}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_round_trip_and_manifest(saved):
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    assert manifest["kind"] == "recommender" and set(manifest["files"]) == {"config.json", "vocab.json", "model.safetensors"}
    model = Recommender.from_pretrained(saved)
    assert model.name == "bpr" and list(model.item_ids) == [f"i{i}" for i in range(9)]


@pytest.mark.parametrize("damage", ["flip_weights", "truncate_vocab_file", "no_manifest", "garble_config"])
def test_damaged_or_half_written_folder_is_refused_naming_the_file(saved, damage):
    if damage == "flip_weights":
        data = bytearray((saved / "model.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (saved / "model.safetensors").write_bytes(bytes(data))
        name = "model.safetensors"
    elif damage == "truncate_vocab_file":
        (saved / "vocab.json").write_text('{"user_ids": [')
        name = "vocab.json"
    elif damage == "no_manifest":
        (saved / MANIFEST_FILE).unlink()
        name = MANIFEST_FILE
    else:
        (saved / "config.json").write_text("{not json")
        name = "config.json"
    with pytest.raises((FolderError, ValueError), match=name.replace(".", r"\.")):
        Recommender.from_pretrained(saved)


def _rewrite_json(folder: Path, name: str, obj) -> None:
    (folder / name).write_text(json.dumps(obj))
    relist(folder)


def _rewrite_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    change(state)
    atomic_save_tensors(state, folder / "model.safetensors")
    relist(folder)


@pytest.mark.parametrize("lie, message", [
    (lambda f: _rewrite_weights(f, lambda s: s.__setitem__("item_emb", torch.zeros(5, 4))), "shape"),
    (lambda f: _rewrite_weights(f, lambda s: s["user_emb"].__setitem__((0, 0), float("nan"))), "NaN"),
    (lambda f: _rewrite_weights(f, lambda s: s.__setitem__("seen_indices", s["seen_indices"] + 100)), "seen pairs"),
    (lambda f: _rewrite_json(f, "vocab.json", {"user_ids": [f"u{i}" for i in range(12)], "item_ids": ["i0"] * 9}),
     "distinct"),
    (lambda f: _rewrite_json(f, "vocab.json", {"user_ids": [f"u{i}" for i in range(11)],
                                               "item_ids": [f"i{i}" for i in range(9)]}), "12"),
    (lambda f: _rewrite_json(f, "config.json", {"model": "bpr", "n_users": 12, "n_items": 9, "config": {"dim": 8}}),
     "shape"),
])
def test_inconsistent_folder_is_refused_even_with_a_matching_manifest(saved, lie, message):
    lie(saved)
    with pytest.raises(FolderError, match=message):
        Recommender.from_pretrained(saved)


@pytest.mark.parametrize("change", [
    lambda s: s["sim_indices"].__setitem__((1, 0), 10**6),  # out of range: a sparse product crashed the process
    lambda s: s["sim_indices"].__setitem__((1, 0), -1),  # negative: silently another item
    lambda s: s.__setitem__("sim_values", s["sim_values"][:3])])
def test_item_edges_that_do_not_fit_the_items_are_refused(tmp_path, change):
    model = create_model("itemknn", 12, 9)
    model.fit(tiny_interactions())
    folder = model.save_pretrained(tmp_path / "knn")
    assert len(Recommender.from_pretrained(folder).sim_values) > 3
    _rewrite_weights(folder, change)
    with pytest.raises(FolderError, match=r"item edges \(sim_indices, sim_values\) do not fit 9 items"):
        Recommender.from_pretrained(folder)


def test_a_count_that_is_a_boolean_is_refused(saved):
    _rewrite_json(saved, "config.json", {"model": "bpr", "n_users": True, "n_items": 9, "config": {"dim": 4}})
    with pytest.raises(FolderError, match="n_users and n_items must be counts"):
        Recommender.from_pretrained(saved)


def test_a_kill_during_save_leaves_the_old_folder(saved):
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(saved) as tmp:
            atomic_write_json(tmp / "config.json", {"model": "lightgcn"})
            raise KeyboardInterrupt  # killed between files
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]
    Recommender.from_pretrained(saved)


def test_saving_never_replaces_a_folder_that_is_not_an_older_save_of_the_same_kind(tmp_path, saved):
    """Saving replaces the whole folder: a data folder, someone's files or another kind of saved folder (a
    split given as --data) is refused and left as it was; an empty folder or an older model is replaced."""
    model = create_model("most_popular", 12, 9)
    model.remember(tiny_interactions())
    data = tmp_path / "data"
    data.mkdir()
    (data / "articles.csv").write_text("article_id\n")
    with pytest.raises(FileExistsError, match="not a saved mmrec folder"):
        model.save_pretrained(data)
    assert [p.name for p in data.iterdir()] == ["articles.csv"]
    space = _space().save_pretrained(tmp_path / "space")
    with pytest.raises(FileExistsError, match="saved mmrec 'space'"):
        model.save_pretrained(space)
    UnifiedSpace.from_pretrained(space)
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", saved):
        model.save_pretrained(folder)
        assert Recommender.from_pretrained(folder).name == "most_popular"
    (saved / "NOTES.md").write_text("mine")  # an older save with a file it did not write keeps it
    (saved / "runs").mkdir()
    with pytest.raises(FileExistsError, match=r"did not write, e.g. \['NOTES.md', 'runs'\]"):
        model.save_pretrained(saved)
    assert (saved / "NOTES.md").read_text() == "mine"


def test_a_model_holding_a_saved_space_can_be_saved_over_again(tmp_path):
    """The outer manifest leaves out the nested space's own manifest.json: it is still the model's file (a served
    model with --state-dir saves over its earlier save at every change)."""
    from mmrec.pretrained import write_folder

    def fill(tmp):
        _space().save_pretrained(tmp / "space")
        atomic_write_json(tmp / "config.json", {"model": "x"})

    for _ in range(3):
        write_folder(tmp_path / "model", "recommender", {"model": "x"}, fill)
    assert (tmp_path / "model" / "space" / "manifest.json").is_file()
    (tmp_path / "model" / "space" / "extra.bin").write_bytes(b"x")
    with pytest.raises(FileExistsError, match=r"did not write, e.g. \['space/extra.bin'\]"):
        write_folder(tmp_path / "model", "recommender", {"model": "x"}, fill)


def test_saving_over_a_file_is_an_error(tmp_path):
    (tmp_path / "taken").write_text("x")
    model = create_model("most_popular", 12, 9)
    with pytest.raises(NotADirectoryError, match="taken"):
        model.save_pretrained(tmp_path / "taken")


def _space() -> UnifiedSpace:
    return UnifiedSpace(SpaceConfig(towers={"behaviour": TowerConfig(input_dim=6), "tag": TowerConfig(input_dim=3)},
                                    dim=8, pairs=("behaviour-tag",)))


def test_space_round_trip(tmp_path):
    space = _space()
    space.save_pretrained(tmp_path / "space")
    loaded = UnifiedSpace.from_pretrained(tmp_path / "space")
    x = torch.randn(2, 6)
    assert torch.allclose(space.project("behaviour", x), loaded.project("behaviour", x))


def test_no_code_from_a_space_folder_runs(tmp_path):
    """A tampered space.json asking an hf tower for trust_remote_code, naming a folder with a Python file
    that would write a marker when imported: refused before any tower is built; the marker never appears."""
    evil = tmp_path / "evil_model"
    evil.mkdir()
    marker = tmp_path / "ran.txt"
    (evil / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (evil / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": {
        "AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}}))
    _space().save_pretrained(tmp_path / "space")
    config = json.loads((tmp_path / "space" / "space.json").read_text())
    config["towers"]["text"] = {"spec": f"hf:{evil}", "options": {"trust_remote_code": True},
                                "trainable": False, "input_dim": 0}
    (tmp_path / "space" / "space.json").write_text(json.dumps(config))
    relist(tmp_path / "space")
    with pytest.raises(FolderError, match=r"space\.json.*trust_remote_code"):
        UnifiedSpace.from_pretrained(tmp_path / "space")
    assert not marker.exists()


def test_a_tower_option_its_builder_does_not_take_is_a_folder_error_not_a_crash(tmp_path):
    from mmrec.space import tiny_vit

    space = UnifiedSpace(SpaceConfig(towers={"image": tiny_vit(16, width=16, depth=1, heads=1),
                                             "tag": TowerConfig(input_dim=3)}, dim=8, pairs=("image-tag",)))
    folder = space.save_pretrained(tmp_path / "space")
    config = json.loads((folder / "space.json").read_text())
    config["towers"]["image"]["options"]["pretrained_cfg_overlay"] = {"file": "x"}
    _rewrite_json(folder, "space.json", config)
    with pytest.raises(FolderError, match=r"space\.json: encoder spec .* take no option 'pretrained_cfg_overlay'"):
        UnifiedSpace.from_pretrained(folder)


def test_content_recipe_cannot_point_outside_the_model(tmp_path):
    from mmrec.content import ContentRecipe

    model = create_model("most_popular", 12, 9)
    model.remember(tiny_interactions())
    model.content_recipe = ContentRecipe()
    folder = model.save_pretrained(tmp_path / "model")
    assert json.loads((folder / "content.json").read_text()) == {"fields": list(ContentRecipe().fields), "encoder": "minilm"}
    _rewrite_json(folder, "content.json", {"space": "../.."})
    with pytest.raises(ValueError, match=r"content\.json"):
        Recommender.from_pretrained(folder)
    outside = str(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    for spec in (f"hf:{outside}", f"openclip:ViT-B-32@{outside}/w.safetensors"):  # a tower from outside the folder
        _rewrite_json(folder, "content.json", {"fields": ["title"], "encoder": spec})
        with pytest.raises(ValueError, match=r"content\.json: the encoder .* is a local path"):
            Recommender.from_pretrained(folder)
    chosen = Recommender.from_pretrained(folder, content_encoder="minilm")  # unless the caller names it
    assert chosen.content_recipe.encoder == "minilm"


LIBRARY_ONLY = textwrap.dedent("""
    import sys
    import numpy as np
    from mmrec.datasets.catalog_csv import read_catalog_csv
    from mmrec.recommender import Recommender

    model = Recommender.from_pretrained(sys.argv[1])
    codes = model.add_items(read_catalog_csv(sys.argv[2]))
    top, _ = model.recommend(np.arange(model.n_users), k=2, candidates=codes)
    assert not any(name.startswith("mmrec.cli") for name in sys.modules), "the library imported the CLI"
    print(",".join(model.item_ids[top[0].numpy()]))
""")


def test_library_only_cold_start_save_load_add_items_from_a_plain_catalog(tmp_path):
    """Train vae_fusion with a content recipe, save, then in a fresh process: load, add items from a
    plain id/title/text CSV (not H&M), recommend them — nothing from mmrec.cli."""
    from mmrec.content import ContentRecipe
    from mmrec.data import Catalog
    from mmrec.train import TrainConfig

    titles = ["red summer dress", "blue denim jeans", "black leather boots", "white cotton shirt",
              "green wool sweater", "red floral skirt", "blue rain jacket", "black silk scarf", "white sneakers"]
    catalog = Catalog(np.array([f"i{i}" for i in range(9)], dtype=object), titles, [""] * 9, [None] * 9)
    recipe = ContentRecipe()
    train = tiny_interactions()
    model = create_model("vae_fusion", train.n_users, train.n_items, {"dim": 8, "latent_dim": 4, "hidden_dim": 16})
    model.set_content(recipe.embed(catalog), recipe=recipe)
    model.fit(train, train_config=TrainConfig(epochs=1, batch_size=64, progress=False))
    model.save_pretrained(tmp_path / "model")
    new = tmp_path / "new_items.csv"
    new.write_text("id,title,text,brand\nn1,red silk dress,a red dress for summer,acme\nn2,grey wool coat,,acme\n")
    out = subprocess.run([sys.executable, "-c", LIBRARY_ONLY, str(tmp_path / "model"), str(new)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.strip().split(",")) == {"n1", "n2"}


def test_saved_files_get_the_modes_a_plain_write_would(tmp_path):
    """Weights and JSON alike follow the umask (a temporary file is made 0600; the rename must not keep it)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        model = create_model("bpr", 12, 9, {"dim": 4})
        model.remember(tiny_interactions())
        folder = model.save_pretrained(tmp_path / "model")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {
        name: 0o644 for name in ("config.json", "vocab.json", "model.safetensors", MANIFEST_FILE)}
