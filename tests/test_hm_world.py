"""The synthetic H&M-shaped world (`mmrec.datasets.hm_world`): read back by the H&M reader with the sizes
asked for, deterministic, and with the shape it promises (colour variants, baskets, long tail, photos)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmrec.cli import main
from mmrec.datasets import hm
from mmrec.datasets.hm_world import FULL_SIZE, HMWorldConfig, write_world

SMALL = dict(users=600, items=400, purchases=12_000, days=60)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "shop"
    summary = write_world(HMWorldConfig(**SMALL), root)
    return root, summary


def test_the_hm_reader_loads_it_with_the_sizes_asked_for(world):
    root, summary = world
    catalog, inter, report = hm.load(root, report=True)
    assert (len(catalog), inter.n_users, len(inter)) == (400, 600, 12_000)
    assert np.bincount(inter.users, minlength=600).min() >= 1  # every customer bought
    assert sum(report.skipped.values()) == 0
    assert summary["photos"] == sum(p is not None for p in catalog.image_paths)
    assert 0.7 < summary["photos"] / 400 < 0.88  # photo_share 0.79: about a fifth without a photo
    assert json.loads((root / "world.json").read_text())["purchases"] == 12_000


def test_articles_are_colour_variants_of_products(world):
    root, _ = world
    articles = pd.read_csv(root / "articles.csv", dtype=str)
    assert (articles.article_id.str.len() == 10).all()
    assert (articles.article_id.str[:7] == articles.product_code).all()
    by_product = articles.groupby("product_code")
    assert by_product.size().max() > 1 and by_product.size().mean() > 1.5
    assert (by_product.colour_group_name.nunique() == by_product.size()).all()  # one colour per variant
    assert (by_product.detail_desc.nunique() == 1).all()                         # variants share their text


def test_purchases_come_in_baskets_with_a_long_tail(world):
    root, _ = world
    tx = pd.read_csv(root / "transactions_train.csv", dtype={"article_id": str})
    same_visit = (tx.customer_id == tx.customer_id.shift()) & (tx.t_dat == tx.t_dat.shift())
    assert same_visit.mean() > 0.4                                      # most lines follow one of the same visit
    variant = same_visit & (tx.article_id.str[:7] == tx.article_id.shift().str[:7]) & (tx.article_id != tx.article_id.shift())
    assert variant.mean() > 0.03                                         # a next line is often another colour
    counts = tx.article_id.value_counts().to_numpy()
    assert counts[: len(counts) // 10].sum() > 0.4 * counts.sum()        # top 10% of articles: > 40% of lines
    assert tx.price.between(0, 1).all() and set(tx.sales_channel_id) <= {1, 2}


def test_photos_are_readable_images_where_the_catalogue_says(world):
    root, _ = world
    catalog, _ = hm.load(root, transactions=False)
    paths = [p for p in catalog.image_paths if p is not None]
    with Image.open(paths[0]) as image:
        assert image.size == (64, 80) and image.mode == "RGB"


def test_same_config_same_bytes_and_the_folder_is_never_overwritten(world, tmp_path):
    root, _ = world
    again = tmp_path / "again"
    write_world(HMWorldConfig(**SMALL, photos=False), again)
    for name in ("articles.csv", "customers.csv", "transactions_train.csv"):
        assert (again / name).read_bytes() == (root / name).read_bytes(), name
    with pytest.raises(FileExistsError):
        write_world(HMWorldConfig(**SMALL), again)


def test_config_checks_and_full_size():
    full = HMWorldConfig.at_fraction(1.0)
    assert (full.users, full.items, full.purchases) == tuple(FULL_SIZE.values())
    with pytest.raises(ValueError, match="purchases"):
        HMWorldConfig(users=10, items=5, purchases=9)
    with pytest.raises(ValueError, match="variant_share"):
        HMWorldConfig(variant_share=1.5)


def test_cli_writes_a_world_and_refuses_an_existing_folder(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["world", "--out", str(out), "--users", "50", "--items", "40", "--purchases", "300",
                 "--days", "10", "--no-photos", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["purchases"] == 300 and not (out / "images").exists()
    assert main(["world", "--out", str(out), "--users", "50"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_sigterm_mid_world_removes_the_half_written_folder(tmp_path):
    """`kill` (SIGTERM) while a world is being written: exit 143, one line, and no temporary sibling left
    (Python's default SIGTERM dies without running the ``finally`` that removes it)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "mmrec", "world", "--fraction", "0.05", "--out",
                             str(tmp_path / "w")], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".w.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the world was written before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "mmrec world: terminated"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
