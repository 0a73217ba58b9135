"""``mmrec embed`` on a small H&M-layout folder: vectors, counts, MMRec features, resume, clear errors."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from mmrec.cli import main

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1}}
COLUMNS = ["article_id", "product_code", "prod_name", "product_type_name", "product_group_name",
           "graphical_appearance_name", "colour_group_name", "perceived_colour_value_name",
           "perceived_colour_master_name", "department_name", "index_name", "index_group_name", "section_name",
           "garment_group_name", "detail_desc"]
IDS = ["0100000001", "0100000002", "0200000001", "0300000001", "0400000001"]


@pytest.fixture
def hm_folder(tmp_path):
    root = tmp_path / "hm"
    (root / "images").mkdir(parents=True)
    with open(root / "articles.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for k, article in enumerate(IDS):
            row = {c: f"{c} {k}" for c in COLUMNS}
            row.update(article_id=article, product_code=article[:7], prod_name=f"Garment {k}",
                       detail_desc="" if k == 4 else f"Soft cotton garment number {k}.")
            writer.writerow([row[c] for c in COLUMNS])
    rng = np.random.default_rng(0)
    for article in IDS[:3]:
        (root / "images" / article[:3]).mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (60, 40, 3), dtype=np.uint8)).save(root / "images" / article[:3] / f"{article}.jpg")
    (root / "images" / "030").mkdir()
    (root / "images" / "030" / "0300000001.jpg").write_bytes(b"\xff\xd8\xff broken")  # corrupt; 0400000001 has none
    mmrec = tmp_path / "mmrec"
    mmrec.mkdir()
    (mmrec / "i_id_mapping.csv").write_text("article_id,itemID\n" + "".join(
        f"{a},{i}\n" for i, a in enumerate([IDS[3], IDS[0], IDS[2], IDS[1]])))
    config = tmp_path / "mmrec-cli-tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    return root, mmrec, f"openclip:{config}@random"


def run_json(capsys, *argv: str) -> dict:
    assert main(["embed", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_embed_images_and_texts_with_mmrec_features(hm_folder, tmp_path, capsys):
    data, mmrec, spec = hm_folder
    out = tmp_path / "out"
    report = run_json(capsys, "--data", str(data), "--encoder", spec, "--out", str(out), "--mmrec-folder", str(mmrec))
    assert {k: report[k] for k in ("items", "encoded", "missing", "failed", "valid")} == \
        {"items": 5, "encoded": 3, "missing": 1, "failed": 1, "valid": 3}
    assert report["failure_examples"][0][0] == "0300000001"
    ids = np.load(out / "item_ids.npy")
    vectors, valid = np.load(out / "image_vectors.npy"), np.load(out / "image_valid.npy")
    assert ids.tolist() == IDS and vectors.shape == (5, 16) and valid.tolist() == [True, True, True, False, False]
    features = np.load(out / "image_feat.npy")
    assert features.shape == (4, 16) and report["mmrec"]["filled_with_mean"] == 1
    np.testing.assert_allclose(features[1:], vectors[[0, 2, 1]])  # itemID order of the mapping
    np.testing.assert_allclose(features[0], vectors[:3].mean(0), atol=1e-6)  # no image: the mean vector
    assert json.loads((out / "image_embed.json").read_text())["encoder_description"]["preprocess"]["size"] == [32, 32]

    again = run_json(capsys, "--data", str(data), "--encoder", spec, "--out", str(out))
    assert again["encoded"] == 0 and again["from_cache"] == 3  # resumed from out/cache

    text = run_json(capsys, "--data", str(data), "--encoder", spec, "--modality", "text", "--out", str(out),
                    "--mmrec-folder", str(mmrec))
    assert text["valid"] == 5 and text["mmrec"]["filled_with_mean"] == 0
    assert np.load(out / "text_feat.npy").shape == (4, 16)
    # the two modalities share item_ids.npy: a run over other articles must not rewrite it under the other's vectors
    assert main(["embed", "--data", str(data), "--encoder", spec, "--modality", "text", "--out", str(out),
                 "--limit", "2"]) == 2
    assert "holds image_vectors.npy for 5 other article ids" in capsys.readouterr().err
    assert np.load(out / "item_ids.npy").tolist() == IDS and np.load(out / "text_vectors.npy").shape == (5, 16)


def test_errors_are_reported_with_exit_code_2(hm_folder, tmp_path, capsys, monkeypatch):
    data, _, _ = hm_folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["embed", "--data", str(data), "--encoder", "openclip:ViT-B-32@laion2b_s34b_b79k",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in err and "openclip:ViT-B-32@/path/" in err
    assert main(["embed", "--data", str(tmp_path / "nowhere"), "--encoder", "timm:resnet18@random",
                 "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["embed", "--data", str(data), "--encoder", "timm:resnet18@random", "--out", str(data / "vectors")]) == 2
    assert "input folder" in capsys.readouterr().err  # never written into the data folder
    for photo in (data / "images").rglob("*.jpg"):  # no article left with a usable photo: an error, not "valid: 0"
        photo.write_bytes(b"broken")
    assert main(["embed", "--data", str(data), "--encoder", "timm:resnet18@random", "--out", str(tmp_path / "o")]) == 2
    assert "no article has a usable image" in capsys.readouterr().err


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo should-never-run",))


def test_weights_the_weights_only_loader_blocks_are_one_line_exit_2(hm_folder, tmp_path, capsys):
    """A checkpoint holding a pickled callable: the weights-only loader refuses it, the CLI says so in one
    line naming the file (no traceback), and nothing runs."""
    import torch

    data, _, spec = hm_folder
    evil = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(1), "payload": _Evil()}, evil)
    config = spec.removeprefix("openclip:").removesuffix("@random")
    assert main(["embed", "--data", str(data), "--encoder", f"openclip:{config}@{evil}", "--modality", "image",
                 "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmrec embed: error:") and "Traceback" not in captured.err
    assert str(evil) in lines[0] and "weights-only loader refused" in lines[0]
    assert "should-never-run" not in captured.out + captured.err
