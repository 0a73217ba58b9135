"""Tests of the MMRec folder reader/writer: round trips, the shared hm5core split, and bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmrec.data import Interactions
from mmrec.datasets import mmrec_format as mf
from mmrec.splits import Split

HM_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hm"
HM5CORE = HM_ROOT / "mmrec" / "hm5core"
needs_hm5core = pytest.mark.skipif(not (HM5CORE / "hm5core.inter").is_file(),
                                   reason=f"shared MMRec split not found at {HM5CORE}")


def small_split() -> Split:
    """Users and items with string ids (leading zeros, a comma), one unused item, times and three parts."""
    rng = np.random.default_rng(0)
    user_ids = np.array(["u0", "u1", "u,2"], dtype=object)
    item_ids = np.array(["0100", "0200", "0300", "never_bought"], dtype=object)
    n = 30
    full = Interactions(rng.integers(0, 3, n), rng.integers(0, 3, n), user_ids, item_ids,
                        timestamps=rng.integers(1_500_000_000, 1_600_000_000, n))
    part = np.arange(n) % 5
    return Split(full.select(part < 3), full.select(part == 3), full.select(part == 4))


def assert_same_rows(a: Interactions, b: Interactions) -> None:
    for name in ("users", "items", "timestamps", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def write_inter(folder: Path, text: str, name: str = "toy") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.inter"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------ round trips

def test_split_round_trips_exactly(tmp_path: Path) -> None:
    split = small_split()
    feats = {"image_feat.npy": np.arange(8, dtype=np.float32).reshape(4, 2),
             "text_feat.npy": np.ones((4, 3), np.float32)}
    inter_path = mf.save(tmp_path, "toy", split, features=feats, raw_item_column="article_id")
    assert inter_path == tmp_path / "toy.inter"
    assert inter_path.read_text().splitlines()[0] == "userID\titemID\ttimestamp\tx_label"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["toy.inter", "i_id_mapping.csv", "u_id_mapping.csv", "image_feat.npy", "text_feat.npy",
         "manifest.json"])  # no temp files
    assert (tmp_path / "i_id_mapping.csv").read_text().splitlines()[:2] == ["article_id,itemID", "0100,0"]

    data = mf.load(tmp_path)
    assert data.name == "toy"
    back = mf.to_split(data)
    for before, after in zip((split.train, split.valid, split.test), (back.train, back.valid, back.test)):
        assert_same_rows(before, after)
    assert list(data.interactions.item_ids) == ["0100", "0200", "0300", "never_bought"]
    for name, array in feats.items():
        np.testing.assert_array_equal(data.features[name], array)
    np.testing.assert_array_equal(mf.read_item_mapping(tmp_path), split.train.item_ids)


def test_interactions_round_trip_with_and_without_labels(tmp_path: Path) -> None:
    split = small_split()
    inter = split.train.concat(split.test)
    labels = np.r_[np.zeros(len(split.train), int), np.full(len(split.test), 2)]
    mf.save(tmp_path / "a", "toy", inter, labels=labels)
    data = mf.load(tmp_path / "a", name="toy")
    assert_same_rows(data.interactions, inter)
    np.testing.assert_array_equal(data.labels, labels)
    assert len(mf.to_split(data).valid) == 0

    mf.save(tmp_path / "b", "toy", inter)
    data = mf.load(tmp_path / "b")
    assert data.labels is None
    assert_same_rows(data.interactions, inter)
    with pytest.raises(ValueError, match="no x_label column"):
        mf.to_split(data)
    with pytest.raises(ValueError, match="0, 1 or 2"):
        mf.save(tmp_path / "c", "toy", inter, labels=np.full(len(inter), 3))


def test_without_mappings_dense_ids_are_the_ids(tmp_path: Path) -> None:
    write_inter(tmp_path, "userID\titemID\trating\ttimestamp\tx_label\n0\t2\t5\t100\t0\n1\t0\t4\t200\t2\n")
    data = mf.load(tmp_path)
    assert list(data.interactions.item_ids) == ["0", "1", "2"] and list(data.interactions.user_ids) == ["0", "1"]
    assert list(data.interactions.timestamps) == [100, 200] and list(data.labels) == [0, 2]


def test_save_features_checks_rows_against_the_mapping(tmp_path: Path) -> None:
    (tmp_path / "i_id_mapping.csv").write_text("asin\titemID\nB2\t1\nB1\t0\n")  # MMRec's own files use tabs
    assert list(mf.read_item_mapping(tmp_path)) == ["B1", "B2"]
    path = mf.save_features(tmp_path, "image_feat.npy", np.ones((2, 5), np.float64))
    saved = np.load(path, allow_pickle=False)
    assert saved.dtype == np.float32 and saved.shape == (2, 5)
    with pytest.raises(mf.MMRecFormatError, match=r"image_feat\.npy: has 3 feature rows but the data set has 2 items"):
        mf.save_features(tmp_path, "image_feat.npy", np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="plain"):
        mf.save_features(tmp_path, "../x.npy", np.ones((2, 5), np.float32))
    with pytest.raises(FileNotFoundError, match="i_id_mapping.csv"):
        mf.read_item_mapping(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------- bad input

def test_missing_required_column_is_named(tmp_path: Path) -> None:
    path = write_inter(tmp_path, "userID\titem\ttimestamp\tx_label\n0\t0\t1\t0\n")
    with pytest.raises(mf.MMRecFormatError, match=r"toy\.inter, line 1: missing column\(s\) \['itemID'\]; "
                                                  r"found \['userID', 'item', 'timestamp', 'x_label'\]"):
        mf.load(path.parent)


def test_bad_x_label_names_line_and_value(tmp_path: Path) -> None:
    write_inter(tmp_path, "userID\titemID\ttimestamp\tx_label\n0\t0\t1\t0\n\n1\t0\t1\t3\n")
    with pytest.raises(mf.MMRecFormatError, match=r"line 4: x_label is '3', expected 0 \(train\), 1 \(valid\) or 2"):
        mf.load(tmp_path)
    write_inter(tmp_path, "userID\titemID\ttimestamp\tx_label\n0\tB07\t1\t0\n")
    with pytest.raises(mf.MMRecFormatError, match=r"line 2: itemID is 'B07', expected a non-negative integer"):
        mf.load(tmp_path)


def test_an_id_or_timestamp_no_vocabulary_or_int64_can_hold_is_named(tmp_path: Path) -> None:
    """One typo in a file without a mapping used to build a vocabulary up to that id (billions of strings, out of
    memory); a timestamp past 2**63 wrapped to a negative one, and past 2**53 lost digits, silently."""
    head = "userID\titemID\ttimestamp\n" + "".join(f"{u}\t{u % 4}\t100\n" for u in range(30))
    write_inter(tmp_path, head + "99999999999\t1\t100\n")
    with pytest.raises(mf.MMRecFormatError, match=r"line 32: userID 99999999999 is far beyond the 31 distinct ids"):
        mf.load(tmp_path)
    write_inter(tmp_path, head + "3\t1\t99999999999999999999\n")
    with pytest.raises(mf.MMRecFormatError, match=r"line 32: timestamp is '99999999999999999999', expected an integer"):
        mf.load(tmp_path)
    write_inter(tmp_path, head + "1030\t1\t100\n")  # a gap is fine: ids 0..1030 for 31 users
    assert mf.load(tmp_path).interactions.n_users == 1031


def test_feature_files_with_nan_or_no_width_are_refused(tmp_path: Path) -> None:
    mf.save(tmp_path, "toy", small_split())
    bad = np.ones((4, 8), np.float32)
    bad[2, 5] = np.nan
    np.save(tmp_path / "text_feat.npy", bad)
    with pytest.raises(mf.MMRecFormatError, match=r"text_feat\.npy: feature row 2 is not finite"):
        mf.load(tmp_path)
    np.save(tmp_path / "text_feat.npy", np.ones((4, 0), np.float32))
    with pytest.raises(mf.MMRecFormatError, match="width 0"):
        mf.load(tmp_path)


def test_feature_row_mismatch_names_file_and_counts(tmp_path: Path) -> None:
    mf.save(tmp_path, "toy", small_split())
    np.save(tmp_path / "text_feat.npy", np.ones((3, 8), np.float32))
    with pytest.raises(mf.MMRecFormatError, match=r"text_feat\.npy: has 3 feature rows but the data set has 4 items"):
        mf.load(tmp_path)
    with pytest.raises(mf.MMRecFormatError, match="has 5 feature rows but the data set has 4"):
        mf.save(tmp_path / "other", "toy", small_split(), features={"image_feat.npy": np.ones((5, 2), np.float32)})
    assert not (tmp_path / "other" / "toy.inter").exists()


def test_inter_file_must_be_unique_or_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no .inter file"):
        mf.load(tmp_path)
    write_inter(tmp_path, "userID\titemID\n0\t0\n", name="a")
    write_inter(tmp_path, "userID\titemID\n0\t0\n", name="b")
    with pytest.raises(FileNotFoundError, match=r"several .inter files \['a.inter', 'b.inter'\]"):
        mf.load(tmp_path)
    assert mf.load(tmp_path, name="b").name == "b"


def test_mapping_must_be_a_permutation_and_cover_every_id(tmp_path: Path) -> None:
    write_inter(tmp_path, "userID\titemID\ttimestamp\tx_label\n0\t0\t1\t0\n0\t2\t1\t0\n")
    (tmp_path / "i_id_mapping.csv").write_text("article_id,itemID\n0100,0\n0200,2\n")
    with pytest.raises(mf.MMRecFormatError, match=r"i_id_mapping\.csv: itemID must be a permutation of 0\.\.1"):
        mf.load(tmp_path)
    (tmp_path / "i_id_mapping.csv").write_text("article_id,itemID\n0100,0\n0200,1\n")
    with pytest.raises(mf.MMRecFormatError, match=r"toy\.inter, line 3: itemID 2 is outside i_id_mapping\.csv"):
        mf.load(tmp_path)


# -------------------------------------------------------------------------------------- real data

@needs_hm5core
def test_hm5core_matches_its_files_and_the_hm_catalog() -> None:
    data = mf.load(HM5CORE)
    inter = data.interactions
    raw = pd.read_csv(HM5CORE / "hm5core.inter", sep="\t")
    items = pd.read_csv(HM5CORE / "i_id_mapping.csv", dtype={"article_id": str})
    users = pd.read_csv(HM5CORE / "u_id_mapping.csv", dtype={"customer_id": str})
    assert (len(inter), inter.n_users, inter.n_items) == (len(raw), len(users), len(items))
    np.testing.assert_array_equal(inter.users, raw["userID"])
    np.testing.assert_array_equal(inter.items, raw["itemID"])
    assert dict(zip(items["itemID"], items["article_id"])) == dict(enumerate(inter.item_ids))
    assert dict(zip(users["userID"], users["customer_id"])) == dict(enumerate(inter.user_ids))

    if (HM_ROOT / "articles.csv").is_file():
        articles = set(pd.read_csv(HM_ROOT / "articles.csv", usecols=["article_id"], dtype=str)["article_id"])
        assert set(inter.item_ids) <= articles

    # MMRec's rule per user: 1 valid + 1 test under 10 interactions, else round(10%) each; 5-core, unique pairs.
    split = mf.to_split(data)
    n = inter.user_counts()
    assert n.min() >= 5 and inter.item_counts().min() >= 5 and len(inter.unique_pairs()) == len(inter)
    expected = np.where(n < 10, 1, np.maximum(1, np.rint(0.1 * n)))
    np.testing.assert_array_equal(split.valid.user_counts(), expected)
    np.testing.assert_array_equal(split.test.user_counts(), expected)
    heavy = np.isin(inter.users, np.flatnonzero(n >= 10))
    assert abs((data.labels[heavy] == 0).mean() - 0.8) < 0.02


def test_saving_over_a_split_is_atomic_and_a_damaged_one_is_refused(tmp_path: Path, monkeypatch) -> None:
    """A save killed half-way (features and mappings written, the .inter not) leaves the old split whole;
    a file changed after saving is refused by name; features added later join the manifest."""
    mf.save(tmp_path / "s", "toy", small_split())
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()}

    def killed(path, *args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(mf, "atomic_write", killed)
        with pytest.raises(KeyboardInterrupt):
            mf.save(tmp_path / "s", "toy", small_split(), features={"a.npy": np.ones((4, 2), np.float32)})
    assert {p.name: p.read_bytes() for p in (tmp_path / "s").iterdir()} == before
    mf.save_features(tmp_path / "s", "extra_feat.npy", np.ones((4, 2), np.float32))
    assert "extra_feat.npy" in mf.load(tmp_path / "s").features
    (tmp_path / "s" / "toy.inter").write_text("userID\titemID\ttimestamp\tx_label\n0\t0\t0\t0\n")
    with pytest.raises(ValueError, match=r"toy\.inter"):
        mf.load(tmp_path / "s")


@pytest.mark.parametrize("content", [b"", b"garbage", None])
def test_a_damaged_feature_file_is_named(tmp_path: Path, content) -> None:
    mf.save(tmp_path / "s", "toy", small_split())
    path = tmp_path / "s" / "image_feat.npy"
    if content is None:  # a pickled object array: never loaded
        np.save(path, np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=r"image_feat\.npy: not a readable \.npy"):
        mf.load(tmp_path / "s")
