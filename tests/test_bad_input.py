"""A bad-input corpus for the command line (issue 16), generated at test time: each case gives its exit
code and a fragment of its one-line message; no case prints a traceback without ``-v``; every ``--json``
output parses with a strict JSON parser (NaN and infinity refused).

Most cases run in-process through `mmrec.cli.main` on a tiny MMRec folder written to ``tmp_path``; a
few run as ``python -m mmrec`` to show what a user sees on stderr.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mmrec.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
N_USERS, N_ITEMS, PER_USER = 40, 30, 10
DAY = 86_400
START = 1_577_836_800  # 2020-01-01


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str):
    """The one JSON object of a ``--json`` run, parsed strictly."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return json.loads(lines[0], parse_constant=_no_constant)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: exit code, stdout, stderr; stderr never holds a traceback."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def fails(capsys, code: int, fragments: tuple[str, ...], *argv: str) -> str:
    """Run ``argv``; assert the exit code, one error line naming the command, and each fragment in it."""
    got, out, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if "error" in line]
    assert got == code and len(lines) == 1, (got, err)
    assert lines[0].startswith("mmrec"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An MMRec folder without x_label: 40 users x 10 items of 30, one event a day from 2020-01-01; user 0's
    raw id is '_unknown_users' (the key the old JSON output reserved)."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    rows = []
    for u in range(N_USERS):
        for j, i in enumerate(rng.choice(N_ITEMS, PER_USER, replace=False)):
            rows.append(f"{u}\t{i}\t{START + (u + j * 3) * DAY}")
    (root / "tiny.inter").write_text("userID\titemID\ttimestamp\n" + "\n".join(rows) + "\n")
    users = ["_unknown_users"] + [f"u{u}" for u in range(1, N_USERS)]
    (root / "u_id_mapping.csv").write_text("user_id,userID\n" + "".join(f"{r},{u}\n" for u, r in enumerate(users)))
    (root / "i_id_mapping.csv").write_text("item_id,itemID\n" + "".join(f"i{i},{i}\n" for i in range(N_ITEMS)))
    return root


@pytest.fixture(scope="module")
def model_dir(tiny, tmp_path_factory):
    """An itemknn model trained on the tiny folder through the CLI."""
    out = tmp_path_factory.mktemp("model") / "itemknn"
    assert main(["train", "--data", str(tiny), "--model", "itemknn", "--out", str(out), "--json"]) == 0
    return out


# -- arguments refused before any work ----------------------------------------------------------------------

@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_epochs_below_one_is_refused(capsys, tiny, tmp_path, epochs):
    # Before: 0 trained the default 100 epochs, -1 trained none and reported success.
    fails(capsys, 2, ("--epochs", "at least 1"), "train", "--data", str(tiny), "--model", "bpr",
          "--epochs", epochs, "--out", str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("k", ["-3", "0"])
def test_k_below_one_is_refused(capsys, model_dir, k):
    # Before: -3 was a traceback from topk, 0 answered empty lists with exit 0.
    fails(capsys, 2, ("--k", "at least 1"), "recommend", "--model", str(model_dir), "--user", "u1", "--k", k)


def test_embed_batch_size_zero_is_refused(capsys, tmp_path):
    # Before: 0 silently meant the default batch size.
    fails(capsys, 2, ("--batch-size", "at least 1"), "embed", "--data", str(tmp_path), "--encoder", "minilm",
          "--out", str(tmp_path / "o"), "--batch-size", "0")


def test_devices_that_do_not_exist_are_refused(capsys, tmp_path):
    import torch

    base = ("embed", "--data", str(tmp_path), "--encoder", "minilm", "--out", str(tmp_path / "o"))
    fails(capsys, 2, ("--device", "tpu9"), *base, "--device", "tpu9")
    missing = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    fails(capsys, 2, ("--device", missing, "CUDA"), *base, "--device", missing)


def test_stream_threshold_nan_is_refused(capsys, tmp_path):
    # Before: NaN was taken as the threshold (every similarity compares false) and the run reported success.
    fails(capsys, 2, ("--threshold", "nan"), "stream", str(tmp_path / "rec.mp4"), "--space", str(tmp_path / "s"),
          "--catalog", "synthetic", "--out", str(tmp_path / "e.parquet"), "--threshold", "nan")


def test_out_that_is_a_file_is_refused_naming_it(capsys, tiny, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    fails(capsys, 2, ("--out", str(target), "is a file"), "train", "--data", str(tiny), "--model",
          "most_popular", "--out", str(target))
    fails(capsys, 2, ("--out", str(target)), "split", "--data", str(tiny), "--out", str(target))
    fails(capsys, 2, ("--checkpoint-dir", str(target)), "train", "--data", str(tiny), "--model", "bpr",
          "--checkpoint-dir", str(target), "--out", str(tmp_path / "m"))
    assert target.read_text() == "not a folder"
    before = sorted(p.name for p in tiny.iterdir())  # outputs are never written into the data folder
    fails(capsys, 2, ("--out", "input folder"), "train", "--data", str(tiny), "--model", "most_popular",
          "--out", str(tiny / "model"))
    fails(capsys, 2, ("--checkpoint-dir", "input folder"), "train", "--data", str(tiny), "--model", "bpr",
          "--checkpoint-dir", str(tiny / "ckpt"), "--out", str(tmp_path / "m"))
    fails(capsys, 2, ("--out", "input folder"), "split", "--data", str(tiny), "--out", str(tiny))
    assert sorted(p.name for p in tiny.iterdir()) == before


def test_bad_dates_and_fractions_are_refused(capsys, tiny, tmp_path):
    fails(capsys, 2, ("--test-start", "YYYY-MM-DD"), "split", "--data", str(tiny), "--protocol", "temporal",
          "--test-start", "next week", "--out", str(tmp_path / "s"))
    fails(capsys, 2, ("--cold-fraction",), "split", "--data", str(tiny), "--protocol", "cold",
          "--cold-fraction", "1.5", "--out", str(tmp_path / "s"))


# -- run files ------------------------------------------------------------------------------------------------

def test_config_that_is_not_yaml_names_file_and_line(capsys, tiny, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("train:\n  epochs: [1, 2\nmodel: {}\n")
    fails(capsys, 2, (str(cfg), "line 3"), "train", "--data", str(tiny), "--model", "bpr", "--config", str(cfg),
          "--out", str(tmp_path / "m"))


def test_config_that_is_not_utf8_is_named(capsys, tiny, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes("train: {epochs: 1}\n# café\n".encode("latin-1"))
    fails(capsys, 2, (str(cfg), "UTF-8"), "train", "--data", str(tiny), "--model", "bpr", "--config", str(cfg),
          "--out", str(tmp_path / "m"))


def test_a_missing_or_folder_input_file_says_which_and_a_pipe_is_read(capsys, tiny, tmp_path, model_dir):
    fails(capsys, 2, (f"--config {tmp_path / 'nope.yaml'} does not exist",), "train", "--data", str(tiny), "--model",
          "bpr", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "m"))
    fails(capsys, 2, (f"--config {tmp_path} is a folder, not a file",), "train", "--data", str(tiny), "--model", "bpr",
          "--config", str(tmp_path), "--out", str(tmp_path / "m"))
    fails(capsys, 2, (f"--users {tmp_path} is a folder",), "recommend", "--model", str(model_dir), "--users",
          str(tmp_path))
    import os

    fifo = tmp_path / "users.fifo"  # what a shell's <(...) gives: not a regular file, read as it comes
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"printf 'nobody\\n' > {fifo}"])
    assert main(["recommend", "--model", str(model_dir), "--users", str(fifo), "--k", "2", "--json"]) == 0
    writer.wait(timeout=30)
    assert json.loads(capsys.readouterr().out)["unknown_users"] == ["nobody"]


def test_config_with_a_python_tag_is_refused_and_runs_nothing(capsys, tiny, tmp_path):
    flag = tmp_path / "ran"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: !!python/object/apply:os.system ['touch {flag}']\n")
    fails(capsys, 2, (str(cfg), "python/object", "not allowed"), "train", "--data", str(tiny), "--model", "bpr",
          "--config", str(cfg), "--out", str(tmp_path / "m"))
    assert not flag.exists()


@pytest.mark.parametrize("train, fragment", [("{epochs: 0}", "epochs"),
                                             ("{early_stop_metric: recal@20}", "did you mean recall@20")])
def test_config_errors_come_before_training(capsys, tiny, tmp_path, train, fragment):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"train: {train}\n")
    fails(capsys, 2, (str(cfg), fragment), "train", "--data", str(tiny), "--model", "bpr", "--config", str(cfg),
          "--out", str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


# -- splits and outputs ----------------------------------------------------------------------------------

def test_temporal_split_after_the_data_is_an_error_naming_the_dates(capsys, tiny):
    # Before: exit 0 with empty valid/test parts and NaN metrics in the --json output.
    line = fails(capsys, 2, ("--test-start 2030-01-01", "valid and test", "2029-12-25..2030-01-01", "2020-01-01"),
                 "evaluate", "--data", str(tiny), "--model", "most_popular", "--protocol", "temporal",
                 "--test-start", "2030-01-01", "--json")
    assert "the data spans" in line


def test_large_k_never_returns_training_items(capsys, tiny, model_dir):
    from mmrec.recommender import Recommender

    model = Recommender.from_pretrained(model_dir)
    code, out, _ = run_cli(capsys, "recommend", "--model", str(model_dir), "--user", "u1", "--user", "u2",
                           "--k", "100000", "--json")
    assert code == 0
    recs = strict_json(out)["recommendations"]
    ptr, idx = model.seen_indptr.numpy(), model.seen_indices.numpy()
    for user in ("u1", "u2"):
        u = list(model.user_ids).index(user)
        seen = {str(model.item_ids[i]) for i in idx[ptr[u]:ptr[u + 1]]}
        assert seen and not seen & set(recs[user])
        assert len(recs[user]) == N_ITEMS - len(seen)  # every other item, none twice
        assert len(set(recs[user])) == len(recs[user])
    code, out, _ = run_cli(capsys, "recommend", "--model", str(model_dir), "--user", "u1", "--k", "100000",
                           "--include-seen", "--json")
    assert code == 0 and len(strict_json(out)["recommendations"]["u1"]) == N_ITEMS


def test_a_user_named_like_metadata_gets_their_answer(capsys, model_dir):
    code, out, _ = run_cli(capsys, "recommend", "--model", str(model_dir), "--user", "_unknown_users",
                           "--user", "nobody", "--k", "3", "--json")
    answer = strict_json(out)
    assert code == 0 and len(answer["recommendations"]["_unknown_users"]) == 3
    assert answer["unknown_users"] == ["nobody"] and answer["fallback"]["users"] == ["nobody"]
    assert len(answer["recommendations"]["nobody"]) == 3  # the model's fallback, under its own key


def test_users_file_that_is_empty_or_not_utf8_is_named(capsys, model_dir, tmp_path):
    empty = tmp_path / "users.txt"
    empty.write_text("\n\n")
    fails(capsys, 2, (str(empty), "no user ids"), "recommend", "--model", str(model_dir), "--users", str(empty))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Zoë\n".encode("latin-1"))
    fails(capsys, 2, (str(latin), "UTF-8"), "recommend", "--model", str(model_dir), "--users", str(latin))


def test_every_json_output_is_strict_json(capsys, tiny, tmp_path):
    for argv in (("data-info", "--data", str(tiny), "--json"),
                 ("split", "--data", str(tiny), "--protocol", "cold", "--out", str(tmp_path / "s"), "--json"),
                 ("evaluate", "--data", str(tiny), "--model", "most_popular", "--json")):
        code, out, _ = run_cli(capsys, *argv)
        assert code == 0
        strict_json(out)


def test_undefined_values_are_null_with_their_path(capsys, caplog):
    from mmrec.cli.common import emit

    emit({"valid": {"recall@20": float("nan"), "users": 0}, "curve": np.array([1.0, np.inf])}, True)
    payload = strict_json(capsys.readouterr().out)
    assert payload["valid"]["recall@20"] is None and payload["curve"] == [1.0, None]
    assert set(payload["undefined"]) == {"valid.recall@20", "curve[1]"}
    assert "valid.recall@20" in caplog.text


# -- damaged model folders ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, content", [("config.json", b"{not json"), ("vocab.json", b"\xff\xfe"),
                                           ("model.safetensors", b"\x00" * 16), ("config.json", None)])
def test_damaged_model_folder_is_one_line_naming_the_file(capsys, model_dir, tmp_path, name, content):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    if content is None:
        (broken / name).unlink()
    else:
        (broken / name).write_bytes(content)
    fails(capsys, 2, (str(broken), name), "recommend", "--model", str(broken), "--user", "u1")


# -- the boundary itself -----------------------------------------------------------------------------------

def test_a_bug_is_one_line_with_a_hint_and_the_traceback_only_with_v(capsys, monkeypatch, tiny):
    import mmrec.cli.data_info as data_info

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(data_info, "run", broken)
    line = fails(capsys, 1, ("internal error", "ZeroDivisionError", "-v"), "data-info", "--data", str(tiny))
    assert line.startswith("mmrec data-info:")
    assert main(["-v", "data-info", "--data", str(tiny)]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["data-info", "--data", str(tiny), "-v"]) == 1  # -v after the command works too
    assert "Traceback" in capsys.readouterr().err


def test_nested_tasks_take_only_their_own_options(capsys, tmp_path):
    # Before: align accepted and silently ignored --model and --protocol.
    fails(capsys, 2, ("unrecognized arguments", "--model"), "train", "align", "--data", "synthetic", "--model",
          "bpr", "--out", str(tmp_path / "s"))
    fails(capsys, 2, ("--model", "unknown model 'nope'", "vbpr"), "train", "--data", "synthetic", "--model", "nope",
          "--out", str(tmp_path / "m"))


def test_every_registered_model_is_a_choice_and_content_models_need_a_catalog(capsys, tiny, tmp_path):
    from mmrec.cli.train import registered_models

    assert {"vbpr", "clcrec", "dropoutnet", "content_knn", "vae_fusion", "sasrec"} <= set(registered_models())
    fails(capsys, 2, ("content_knn", "no catalog"), "train", "--data", str(tiny), "--model", "content_knn",
          "--out", str(tmp_path / "m"))


def test_missing_checkpoint_dir_is_created(capsys, tiny, tmp_path):
    ckpt = tmp_path / "new" / "ckpt"
    code, out, _ = run_cli(capsys, "train", "--data", str(tiny), "--model", "bpr", "--epochs", "1",
                           "--checkpoint-dir", str(ckpt), "--no-progress", "--out", str(tmp_path / "m"), "--json")
    assert code == 0 and ckpt.is_dir() and strict_json(out)["epochs"] == 1


# -- what a user sees: one line on stderr, no traceback --------------------------------------------------

def test_from_a_shell_errors_are_one_line_without_traceback(tiny, model_dir, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train: {epochs: [1}\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"")
    cases = [(("train", "--data", str(tiny), "--model", "bpr", "--config", str(cfg), "--out", str(tmp_path / "m")),
              str(cfg)),
             (("recommend", "--model", str(model_dir), "--user", "u1", "--k", "-3"), "--k"),
             (("recommend", "--model", str(broken), "--user", "u1"), "model.safetensors")]
    for argv, fragment in cases:
        done = subprocess.run([sys.executable, "-m", "mmrec", *argv], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mmrec ") and fragment in lines[0], done.stderr
