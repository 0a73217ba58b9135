"""``mmrec embed`` under ``accelerate launch`` with two CPU processes (gloo): each embeds a contiguous shard of
the catalog, the main process writes the same files one process writes, and the shards' rows reach the
shared cache."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmrec.cli import main
from mmrec.encoders.embed import EmbedResult, merge_results, shard_bounds
from test_encoders_cli import hm_folder  # noqa: F401 (the fixture: a 5-article H&M folder, tiny CLIP spec)
from test_multiprocess_recommenders import launch

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is unavailable in this torch build")

COUNTS = ("items", "encoded", "from_cache", "missing", "failed", "valid")


def test_shards_are_contiguous_and_cover_the_catalog():
    for n in (0, 1, 5, 7, 100):
        for world in (1, 2, 3, 8):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
    with pytest.raises(ValueError, match="rank 2"):
        shard_bounds(5, 2, 2)


def test_merged_shards_are_one_result():
    def part(ids, valid):
        vectors = np.arange(len(ids) * 2, dtype=np.float32).reshape(-1, 2)
        counts = {"items": len(ids), "encoded": int(sum(valid)), "from_cache": 0, "missing": 0, "failed": 0}
        return EmbedResult(np.asarray(ids, dtype=object), vectors, np.asarray(valid), counts,
                           [(i, "bad") for i, v in zip(ids, valid) if not v], 1.0 + len(ids), "image", "spec")

    merged = merge_results([part(["a", "b"], [True, False]), part(["c", "d", "e"], [True, True, False])])
    assert merged.ids.tolist() == ["a", "b", "c", "d", "e"] and merged.valid.tolist() == [1, 0, 1, 1, 0]
    assert merged.counts == {"items": 5, "encoded": 3, "from_cache": 0, "missing": 0, "failed": 0}
    assert merged.failures == [("b", "bad"), ("e", "bad")] and merged.seconds == 4.0
    assert merged.vectors[2:].tolist() == [[0, 1], [2, 3], [4, 5]]


def _files(out, modality):
    return {name: np.load(out / f"{modality}_{name}.npy") for name in ("vectors", "valid")} | {
        "ids": np.load(out / "item_ids.npy")}


@pytest.mark.parametrize("modality", ["image", "text"])
def test_two_processes_write_what_one_process_writes(hm_folder, tmp_path, capsys, modality):  # noqa: F811
    data, mmrec, spec = hm_folder
    two, one, again = tmp_path / "two", tmp_path / "one", tmp_path / "again"
    common = ["--data", str(data), "--encoder", spec, "--modality", modality, "--mmrec-folder", str(mmrec), "--json"]
    run = launch(tmp_path, "-m", "mmrec", "embed", *common, "--out", str(two), "--cache", str(tmp_path / "cache"))
    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout  # one report, printed by the main process only
    report_two = json.loads(lines[0])
    assert report_two["processes"] == 2

    assert main(["embed", *common, "--out", str(one), "--no-cache"]) == 0
    report_one = json.loads(capsys.readouterr().out)
    assert {k: report_two[k] for k in COUNTS} == {k: report_one[k] for k in COUNTS}
    assert report_two["failure_examples"] == report_one["failure_examples"]
    files_two, files_one = _files(two, modality), _files(one, modality)
    assert files_two["ids"].tolist() == files_one["ids"].tolist()
    assert files_two["valid"].tolist() == files_one["valid"].tolist()
    np.testing.assert_allclose(files_two["vectors"], files_one["vectors"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.load(two / f"{modality}_feat.npy"), np.load(one / f"{modality}_feat.npy"),
                               rtol=0, atol=1e-5)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())

    # Both shards' rows reached the shared cache: one process now encodes nothing.
    assert main(["embed", *common, "--out", str(again), "--cache", str(tmp_path / "cache")]) == 0
    cached = json.loads(capsys.readouterr().out)
    assert cached["encoded"] == 0 and cached["from_cache"] == report_one["valid"]
    np.testing.assert_array_equal(np.load(again / f"{modality}_vectors.npy"), files_two["vectors"])
