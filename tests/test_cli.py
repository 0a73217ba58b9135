"""The mmrec command line: help on every command, JSON output, clear errors, train → recommend."""
import json
import subprocess
import sys

import pytest

from mmrec.cli import COMMANDS, build_parser, main
from text_memo import memoize_hf_text


def _mmrec(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "mmrec", *args], capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_every_command_has_help(capsys):
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([name.replace("_", "-"), "--help"])
        assert exit_.value.code == 0
        assert "usage: mmrec" in capsys.readouterr().out


def test_evaluate_most_popular_on_hm5core_prints_one_json_object(hm5core):
    out = _mmrec("evaluate", "--data", str(hm5core), "--model", "most_popular", "--json")
    payload = json.loads(out.stdout)
    assert set(payload["valid"]) >= {"recall@20", "ndcg@20", "recall@10", "map@20", "precision@20"}
    # MostPopular on hm5core: MMRec reports test Recall@20 0.0530 on this split (ties may order differently).
    assert 0.04 < payload["test"]["recall@20"] < 0.07
    assert payload["test"]["users"] == 6949


def test_data_info_and_bad_data_path(hm5core, tmp_path, capsys):
    info = json.loads(_mmrec("data-info", "--data", str(hm5core), "--json").stdout)
    assert info["interactions"]["rows"] == 50738 and info["x_label"]["train"] == 36246
    # the bad paths in process: the exit code and message are main()'s (a new interpreter only adds startup)
    assert main(["data-info", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("hi")
    assert main(["data-info", "--data", str(tmp_path)]) == 2
    assert "expected an MMRec folder" in capsys.readouterr().err


def test_split_train_recommend_round_trip(tmp_path, capsys):
    # The synthetic world through the whole command line: split to MMRec format, train, recommend. Each
    # command reads what the one before wrote; train and recommend run in process (each new interpreter
    # would import torch and the model registry again).
    folder = tmp_path / "synth"
    split = json.loads(_mmrec("split", "--data", "synthetic", "--out", str(folder), "--json").stdout)
    assert split["train"] > split["valid"] > 0
    model_dir = tmp_path / "model"
    assert main(["train", "--data", str(folder), "--model", "itemknn", "--out", str(model_dir), "--json"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["test"]["recall@20"] > 0.1
    users = (folder / "u_id_mapping.csv").read_text().splitlines()[1:3]
    ids = [line.split(",")[0] for line in users]
    assert main(["recommend", "--model", str(model_dir), "--user", ids[0], "--user", ids[1], "--user", "nobody",
                 "--k", "5", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert len(recs["recommendations"][ids[0]]) == 5 and len(recs["recommendations"][ids[1]]) == 5
    assert recs["unknown_users"] == ["nobody"] and recs["fallback"] == {"kind": "most_popular", "users": ["nobody"]}
    assert len(recs["recommendations"]["nobody"]) == 5


def test_unknown_config_key_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {n_layer: 2}\ntrain: {epochs: 1}\n")
    code = main(["evaluate", "--data", "synthetic", "--model", "lightgcn", "--config", str(cfg), "--json"])
    assert code == 2 and "unknown key" in capsys.readouterr().err


def test_run_files_and_flags_are_checked_alike_before_any_work(tmp_path, capsys):
    """A run file's train.seed counts when --seed is not given; its checkpoint_dir, like --checkpoint-dir, is
    never inside --data or --out (evaluate included); --protocol never silently loses to a folder's x_label;
    train sequence only splits in time."""
    folder = tmp_path / "split"
    assert main(["split", "--data", "synthetic", "--out", str(folder)]) == 0
    capsys.readouterr()

    def metrics(*argv: str) -> tuple:
        assert main(["train", "--data", str(folder), "--model", "bpr", "--json", *argv]) == 0, capsys.readouterr().err
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        return report["valid"]["recall@20"], report["test"]["recall@20"]

    (tmp_path / "seed7.yaml").write_text("train: {epochs: 2, seed: 7, progress: false}\n")
    from_file = metrics("--config", str(tmp_path / "seed7.yaml"), "--out", str(tmp_path / "a"))
    assert from_file == metrics("--config", str(tmp_path / "seed7.yaml"), "--seed", "7", "--out", str(tmp_path / "b"))
    assert from_file != metrics("--config", str(tmp_path / "seed7.yaml"), "--seed", "0", "--out", str(tmp_path / "c"))

    (tmp_path / "ck.yaml").write_text(f"train: {{epochs: 1, checkpoint_dir: {folder / 'ck'}}}\n")
    refused = [(["train", "--data", str(folder), "--model", "bpr", "--config", str(tmp_path / "ck.yaml"), "--out",
                 str(tmp_path / "d")], "is the input folder"),
               (["evaluate", "--data", str(folder), "--model", "bpr", "--epochs", "1", "--checkpoint-dir",
                 str(folder / "ck")], "is the input folder"),
               (["train", "--data", str(folder), "--model", "bpr", "--epochs", "1", "--checkpoint-dir",
                 str(tmp_path / "e" / "ck"), "--out", str(tmp_path / "e")], "or inside it: saving the model replaces"),
               (["split", "--data", str(folder), "--protocol", "cold", "--out", str(tmp_path / "f")], "x_label"),
               (["train", "sequence", "--data", "synthetic", "--protocol", "mmrec", "--out", str(tmp_path / "g")],
                "splits in time")]
    for argv, message in refused:
        assert main(argv) == 2 and message in capsys.readouterr().err, argv
    assert sorted(p.name for p in folder.iterdir()) == sorted(["manifest.json", "split.inter", "i_id_mapping.csv",
                                                               "u_id_mapping.csv"])
    assert not (tmp_path / "e").exists()


ALIGN_YAML = ("space:\n  dim: 32\n  towers:\n    image: {spec: 'timm:vit_tiny_patch16_224@random', trainable: true,\n"
              "            options: {model_kwargs: {img_size: 32, patch_size: 8, embed_dim: 64, depth: 1, num_heads: 2}}}\n"
              "    text: {spec: minilm}\ntrain: {epochs: 1, batch_size: 64, early_stop_metric: t2i_recall@10}\n")


def test_train_align_saves_a_space_that_loads(tmp_path, capsys, monkeypatch):
    from mmrec.space import UnifiedSpace

    # In process (``python -m mmrec`` is run by the tests above), MiniLM once per text for the session's
    # alignment tests: the locked text tower is what a CPU spends this command's time on.
    memoize_hf_text(monkeypatch)
    cfg = tmp_path / "align.yaml"
    cfg.write_text(ALIGN_YAML)
    assert main(["train", "align", "--data", "synthetic", "--config", str(cfg), "--out", str(tmp_path / "space"),
                 "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train_items"] > out["valid_items"] > 0 and "t2i_recall@10" in out["valid"]
    space = UnifiedSpace.from_pretrained(tmp_path / "space")
    assert space.embed_texts(["red dress"]).shape == (1, 32)


def test_shards_then_train_align_streams_them(tmp_path, capsys, monkeypatch):
    memoize_hf_text(monkeypatch)
    assert main(["shards", "--data", "synthetic", "--out", str(tmp_path / "shards"), "--items-per-shard", "90",
                 "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["shards"] == 4 and written["items"] == 360
    cfg = tmp_path / "align.yaml"
    cfg.write_text(ALIGN_YAML + "shuffle_buffer: 50\n")
    assert main(["train", "align", "--shards", written["urls"], "--config", str(cfg), "--out", str(tmp_path / "space"),
                 "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid_items"] > 0 and "t2i_recall@10" in out["valid"] and out["best_epoch"] == 0
    assert sum(out["skipped_samples"].values()) == 0
    assert main(["train", "align", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "--shards" in err


def test_train_sequence_with_content_beats_most_popular_and_saves(tmp_path, capsys):
    """``mmrec train sequence``: leave-last-out on the synthetic world, SASRec with MiniLM item content
    predicts each user's last purchase better than MostPopular on the same split; the folder loads."""
    from mmrec.recommender import Recommender

    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {dim: 32, n_layers: 1, n_heads: 2, max_len: 10, use_content: true, adapter_hidden: 64,"
                   " n_negatives: 64}\ntrain: {epochs: 6, batch_size: 64, lr: 0.003, progress: false}\n")
    out = tmp_path / "sasrec"
    assert main(["train", "sequence", "--data", "synthetic", "--config", str(cfg), "--out", str(out), "--json"]) == 0
    sasrec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["train", "--data", "synthetic", "--model", "most_popular", "--protocol", "leave-last-out",
                 "--out", str(tmp_path / "pop"), "--json"]) == 0
    popular = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sasrec["test"]["users"] == popular["test"]["users"]
    assert sasrec["test"]["hr@10"] > popular["test"]["hr@10"] + 0.02
    assert json.loads((out / "content.json").read_text())["encoder"] == "minilm"
    model = Recommender.from_pretrained(out)
    assert model.name == "sasrec" and model.config.use_content


def test_content_models_train_from_the_cli_with_their_recipe(tmp_path, capsys):
    """``mmrec train --model content_knn`` (a content model, once not trainable from the CLI): MiniLM item
    vectors are made from the catalog, the recipe is saved, and the folder recommends."""
    out = tmp_path / "cknn"
    assert main(["train", "--data", "synthetic", "--model", "content_knn", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["model"] == "content_knn" and report["test"]["recall@20"] > 0
    assert json.loads((out / "content.json").read_text())["encoder"] == "minilm"
    user = json.loads((out / "vocab.json").read_text())["user_ids"][0]
    assert main(["recommend", "--model", str(out), "--user", user, "--k", "5", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["recommendations"][user]) == 5


def test_which_models_need_content():
    from mmrec.cli.train import needs_content, registered_models

    names = registered_models()
    assert {"vbpr", "clcrec", "dropoutnet", "content_knn", "vae_fusion"} <= set(names)
    assert all(needs_content(m, {}) for m in ("vbpr", "clcrec", "dropoutnet", "content_knn", "vae_fusion"))
    assert not any(needs_content(m, {}) for m in ("most_popular", "itemknn", "bpr", "lightgcn", "random", "sasrec"))
    assert needs_content("sasrec", {"use_content": True})


def test_train_tasks_are_nested_commands(capsys):
    """``mmrec train TASK``: each task its own sub-parser; ``pipeline`` appears where its module exists;
    ``mmrec train --model X`` (no task) is ``mmrec train recommender --model X``."""
    import importlib.util

    from mmrec.cli import select_task, subcommands

    parser = build_parser()
    tasks = set(subcommands(subcommands(parser)["train"]))
    assert {"recommender", "coldstart", "sequence", "align"} <= tasks
    assert ("pipeline" in tasks) == (importlib.util.find_spec("mmrec.cli.pipeline") is not None)
    assert select_task(parser, ["-v", "train", "--model", "bpr"]) == ["-v", "train", "recommender", "--model", "bpr"]
    assert select_task(parser, ["train", "align", "--out", "x"]) == ["train", "align", "--out", "x"]
    assert main(["train", "--help"]) == 0
    assert "coldstart" in capsys.readouterr().out


def test_refit_all_saves_the_model_refitted_on_every_split(tmp_path, capsys):
    """Deploy mode from the command line: chosen on valid, then refitted on train + valid + test (issue 17)."""
    assert main(["train", "--data", "synthetic", "--model", "bpr", "--epochs", "2", "--refit-all", "--no-progress",
                 "--out", str(tmp_path / "bpr"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["refit"]["epochs"] >= 1 and report["refit"]["rows"] > 0
    from mmrec.recommender import Recommender

    model = Recommender.from_pretrained(tmp_path / "bpr")
    assert len(model.seen_indices) == report["refit"]["rows"]  # every unique pair is now seen
