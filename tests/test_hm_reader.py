"""Tests of the H&M reader: the real development copy (skipped when absent) and tiny hand-written layouts."""
from __future__ import annotations

import csv
import io
import logging
import os
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ARTICLE_HEADER
from mmrec.datasets import hm

HM_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hm"
needs_real_data = pytest.mark.skipif(not (HM_ROOT / "articles.csv").is_file(),
                                     reason=f"real H&M data not found at {HM_ROOT}")

TRANSACTION_HEADER = "t_dat,customer_id,article_id,price,sales_channel_id"


def unix_day(text: str) -> int:
    return int(datetime.combine(date.fromisoformat(text), datetime.min.time(), timezone.utc).timestamp())


def article_line(article_id: str, name: str = "Tee", desc: str = "Soft cotton top.", **fields: str) -> str:
    values = {c: f"{c}-{article_id}" for c in ARTICLE_HEADER}
    values.update(article_id=article_id, product_code=article_id[:7], prod_name=name, detail_desc=desc, **fields)
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([values[c] for c in ARTICLE_HEADER])
    return out.getvalue()


def write_layout(root: Path, articles: list[str], transactions: list[str], images: tuple[str, ...] = (),
                 article_header: list[str] = ARTICLE_HEADER, transaction_header: str = TRANSACTION_HEADER) -> Path:
    """A tiny H&M folder: the given CSV lines under the given headers, and empty jpg files for ``images``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "articles.csv").write_text("\n".join([",".join(article_header), *articles]) + "\n")
    (root / "transactions_train.csv").write_text("\n".join([transaction_header, *transactions]) + "\n")
    for article_id in images:
        folder = root / "images" / article_id[:3]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{article_id}.jpg").write_bytes(b"")
    (root / "images").mkdir(exist_ok=True)
    return root


def tx(day: str, customer: str, article: str) -> str:
    return f"{day},{customer},{article},0.0169,2"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    articles = [article_line("0108775015", "Strap top", "Jersey top.", product_type_name="Vest top",
                             colour_group_name="Black", graphical_appearance_name="Solid",
                             section_name="Womens Basics"),
                article_line("0110065001", "OP bra", ""),
                article_line("1234567001", "Jeans", "Denim, five pockets.")]
    transactions = [tx("2020-09-20", "cust_b", "0110065001"),
                    tx("2020-09-20", "cust_b", "0110065001"),
                    tx("2020-09-21", "cust_a", "0108775015"),
                    tx("2020-09-22", "cust_c", "1234567001")]
    return write_layout(tmp_path / "hm", articles, transactions, images=("0108775015", "1234567001"))


# ----------------------------------------------------------------------------------- tiny layouts

def test_tiny_layout_reads_every_field(tiny: Path) -> None:
    catalog, inter, report = hm.load(tiny, report=True)
    assert list(catalog.ids) == ["0108775015", "0110065001", "1234567001"]
    assert catalog.titles == ["Strap top", "OP bra", "Jeans"]
    assert catalog.texts == ["Jersey top.", "", "Denim, five pockets."]
    assert catalog.image_paths[1] is None
    assert catalog.image_paths[0] == str(tiny / "images" / "010" / "0108775015.jpg")
    assert os.path.isabs(catalog.image_paths[2])
    assert set(catalog.attributes) == set(hm.ATTRIBUTE_COLUMNS)
    assert catalog.attributes["product_code"][0] == "0108775"
    assert catalog.attributes["garment_group_name"][2] == "garment_group_name-1234567001"
    assert hm.article_texts(catalog)[0] == "Strap top. Vest top. Black. Solid. Womens Basics. Jersey top."
    assert not hm.article_texts(catalog)[1].endswith(". ")

    assert list(inter.user_ids) == ["cust_a", "cust_b", "cust_c"]
    assert inter.item_ids is catalog.ids
    assert list(inter.user_ids[inter.users]) == ["cust_b", "cust_b", "cust_a", "cust_c"]
    assert list(inter.item_ids[inter.items]) == ["0110065001", "0110065001", "0108775015", "1234567001"]
    assert list(inter.timestamps) == [unix_day("2020-09-20")] * 2 + [unix_day("2020-09-21"), unix_day("2020-09-22")]
    assert (inter.kinds == 0).all() and (inter.weights == 1.0).all()
    assert len(inter.unique_pairs()) == 3

    assert report.articles == 3 and report.items_without_image == 1 and report.empty_texts == 1
    assert report.transaction_lines_read == 4 and report.transaction_rows_kept == 4 and report.skipped == {}
    assert report.customers == 3 and report.customers_without_side_data is None


def test_flags_leave_out_transactions_and_images(tiny: Path) -> None:
    catalog, inter = hm.load(tiny, transactions=False, images=False)
    assert catalog.image_paths == [None, None, None]
    assert len(inter) == 0 and inter.n_users == 0 and list(inter.item_ids) == list(catalog.ids)


@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
def test_damaged_lines_are_skipped_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      chunk_rows: int) -> None:
    articles = [article_line("0108775015"), article_line("0110065001")]
    transactions = [tx("2020-09-20", "cust_a", "0108775015"),    # line 2
                    "2020-09-20,cust_a,0108775015",              # line 3: two fields missing
                    "",                                          # line 4: blank
                    tx("2020-09-21", "", "0110065001"),          # line 5: no customer
                    tx("2020-09-21", "cust_b", "0999999999"),    # line 6: not in articles.csv
                    tx("2020-09-22", "cust_c", "0110065001")]    # line 7
    root = write_layout(tmp_path / "hm", articles, transactions)
    (root / "customers.csv").write_text("customer_id,age\ncust_a,30\nsomeone_else,40\n")
    with caplog.at_level(logging.WARNING, logger="mmrec.datasets.hm"):
        _, inter, report = hm.load(root, images=False, chunk_rows=chunk_rows, report=True)
    assert list(inter.user_ids) == ["cust_a", "cust_c"]  # cust_b's only line was skipped
    assert list(inter.user_ids[inter.users]) == ["cust_a", "cust_c"]
    assert report.skipped == {"malformed_line": 1, "blank_line": 1, "missing_customer_id": 1, "unknown_article_id": 1}
    assert report.skipped_examples["malformed_line"][0].startswith("line 3:")
    assert report.skipped_examples["blank_line"] == ["line 4"]
    assert report.skipped_examples["missing_customer_id"] == ["line 5"]
    assert report.skipped_examples["unknown_article_id"] == ["line 6: '0999999999'"]
    assert report.transaction_lines_read == 6 and report.transaction_rows_kept == 2
    assert report.customers_without_side_data == 1  # cust_c has no customers.csv row
    warned = caplog.text
    assert "unknown_article_id" not in warned and "article_id not in articles.csv" in warned and "line 6" in warned
    assert "wrong number of fields" in warned


@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
def test_unparsable_date_names_file_line_and_value(tmp_path: Path, chunk_rows: int) -> None:
    transactions = [tx("2020-09-20", "a", "0108775015"), "2020-09-20,a", "",
                    tx("2020-09-21", "b", "0108775015"), tx("21/09/2020", "c", "0108775015")]
    root = write_layout(tmp_path / "hm", [article_line("0108775015")], transactions)
    with pytest.raises(hm.HMDataError, match=r"transactions_train\.csv, line 6: t_dat '21/09/2020'") as err:
        hm.load(root, images=False, chunk_rows=chunk_rows)
    assert err.value.line == 6 and err.value.column == "t_dat"


def test_missing_files_say_what_the_layout_expects(tmp_path: Path, tiny: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hm.load(tmp_path / "nowhere")
    (tiny / "transactions_train.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"transactions_train\.csv does not exist.*layout expects"):
        hm.load(tiny)
    hm.load(tiny, transactions=False)  # articles alone are enough without transactions
    (tiny / "articles.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"articles\.csv does not exist"):
        hm.load(tiny, transactions=False)


def test_missing_images_folder_suggests_images_false(tiny: Path) -> None:
    for jpg in (tiny / "images").rglob("*.jpg"):
        jpg.unlink()
    for folder in sorted((tiny / "images").rglob("*"), reverse=True):
        folder.rmdir()
    (tiny / "images").rmdir()
    with pytest.raises(FileNotFoundError, match="images=False"):
        hm.load(tiny)
    assert len(hm.load(tiny, images=False)[0]) == 3
    # the command line reads the CSVs alone, saying so, unless the command needs the photos
    from mmrec.cli.common import load_data

    assert load_data(str(tiny)).catalog.image_paths == [None, None, None]
    with pytest.raises(FileNotFoundError, match="images"):
        load_data(str(tiny), photos=True)


@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
def test_a_transaction_line_that_is_not_utf8_is_skipped_counted_and_named(tmp_path: Path, chunk_rows: int) -> None:
    transactions = [tx("2020-09-20", "a", "0108775015"), "2020-09-20,a",  # line 3: two fields
                    tx("2020-09-21", "b\udce9", "0108775015"),  # line 4: a Latin-1 byte in the customer id
                    tx("2020-09-22", "c", "0108775015")]
    root = write_layout(tmp_path / "hm", [article_line("0108775015")], [])
    (root / "transactions_train.csv").write_bytes(
        "\n".join([TRANSACTION_HEADER, *transactions, ""]).encode("utf-8", "surrogateescape"))
    _, inter, report = hm.load(root, images=False, chunk_rows=chunk_rows, report=True)
    assert list(inter.user_ids) == ["a", "c"]
    assert report.skipped == {"malformed_line": 1, "not_utf8": 1}
    assert report.skipped_examples["not_utf8"] == ["line 4"]
    assert report.skipped_examples["malformed_line"][0].startswith("line 3:")


def test_side_files_that_cannot_be_read_are_named_with_the_line(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "hm", [article_line("0108775015"), article_line("0110065001", "CafX")],
                        [tx("2020-09-20", "a", "0108775015")])
    raw = (root / "articles.csv").read_bytes()
    (root / "articles.csv").write_bytes(raw.replace(b"CafX", b"Caf\xe9"))  # a Latin-1 byte on line 3
    with pytest.raises(hm.HMDataError, match=r"articles.csv, line 3: not UTF-8"):
        hm.load(root, images=False)
    (root / "customers.csv").write_text("customer_id,age\nc1,25\nc2,26,extra,fields\n")
    with pytest.raises(hm.HMDataError, match=r"customers.csv: not a readable CSV .*line 3"):
        hm.load_customers(root)


def test_missing_columns_are_named_with_the_columns_found(tmp_path: Path) -> None:
    header = [c for c in ARTICLE_HEADER if c != "colour_group_name"]
    line = ",".join(f"v{i}" if c != "article_id" else "0108775015" for i, c in enumerate(header))
    root = write_layout(tmp_path / "a", [line], [], article_header=header)
    with pytest.raises(hm.HMDataError, match=r"articles\.csv, line 1: missing column\(s\) \['colour_group_name'\]; "
                                             r"found \['article_id'"):
        hm.load(root, images=False)
    root = write_layout(tmp_path / "t", [article_line("0108775015")], ["2020-09-20,a,1,1"],
                        transaction_header="t_dat,customer,article_id,price")
    with pytest.raises(hm.HMDataError, match=r"missing column\(s\) \['customer_id'\]; found \['t_dat', 'customer'"):
        hm.load(root, images=False)


def test_article_ids_read_as_numbers_are_refused_with_a_fix(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "a", [article_line("1234567001"), article_line("108775015")], [])
    with pytest.raises(hm.HMDataError, match=r"line 3: article_id '108775015' looks like a number that lost its "
                                             r"leading zero.*as a string.*zfill\(10\)"):
        hm.load(root, images=False)
    root = write_layout(tmp_path / "t", [article_line("0108775015")],
                        [tx("2020-09-20", "a", "0108775015"), tx("2020-09-20", "a", "108775015")])
    with pytest.raises(hm.HMDataError, match=r"transactions_train\.csv, line 3: article_id '108775015' looks like"):
        hm.load(root, images=False)


def test_duplicate_article_ids_name_both_lines_even_after_quoted_newlines(tmp_path: Path) -> None:
    articles = [article_line("0108775015", desc="Two\nlines, quoted."), article_line("0110065001"),
                article_line("0108775015")]
    root = write_layout(tmp_path / "hm", articles, [])
    with pytest.raises(hm.HMDataError, match=r"line 5: article_id '0108775015' appears twice \(lines 2 and 5\)"):
        hm.load(root, images=False, transactions=False)


def test_a_line_cut_short_or_a_quote_left_open_in_articles_is_an_error(tmp_path: Path) -> None:
    """Both read without a word by pandas: missing fields as empty, an open quote as one long text that swallows
    the articles after it (here until a later line's own quote closes it)."""
    short = article_line("0110065001").rsplit(",", 3)[0]
    root = write_layout(tmp_path / "short", [article_line("0108775015"), short], [])
    with pytest.raises(hm.HMDataError, match=rf"articles\.csv, line 3: {len(ARTICLE_HEADER) - 3} fields where the "
                                             rf"header has {len(ARTICLE_HEADER)}: the line is cut short"):
        hm.load(root, images=False, transactions=False)
    opened = article_line("0108775015").rsplit(",", 1)[0] + ',"Size 38'
    closed = article_line("0110065002").rsplit(",", 1)[0] + ',"Waist 32"" fit"'
    root = write_layout(tmp_path / "quote", [opened, article_line("0110065001"), closed, article_line("0110065003")],
                        [])
    with pytest.raises(hm.HMDataError, match=r"articles\.csv, line 2: a quote .* not closed before the next"):
        hm.load(root, images=False, transactions=False)
    fine = article_line("0108775015", desc="Two\nlines, quoted.")  # a text over lines, quoted properly
    assert len(hm.load(write_layout(tmp_path / "fine", [fine], []), images=False, transactions=False)[0]) == 1


def test_empty_or_unusable_transactions_are_errors(tmp_path: Path) -> None:
    root = write_layout(tmp_path / "empty", [article_line("0108775015")], [])
    with pytest.raises(hm.HMDataError, match="header but no transactions"):
        hm.load(root, images=False)
    root = write_layout(tmp_path / "unknown", [article_line("0108775015")], [tx("2020-09-20", "a", "0999999999")])
    with pytest.raises(hm.HMDataError, match="no usable transactions.*1 article_id not in articles.csv"):
        hm.load(root, images=False)


def test_load_customers_keys_by_customer_id(tmp_path: Path) -> None:
    (tmp_path / "customers.csv").write_text("customer_id,FN,age,postal_code\nc1,1.0,25,0042\nc2,,,007\n")
    customers = hm.load_customers(tmp_path)
    assert list(customers.index) == ["c1", "c2"] and customers.loc["c1", "postal_code"] == "0042"
    assert np.isnan(customers.loc["c2", "age"])
    (tmp_path / "customers.csv").write_text("customer_id,age\nc1,25\nc1,26\n")
    with pytest.raises(hm.HMDataError, match=r"line 3: customer_id 'c1' appears twice"):
        hm.load_customers(tmp_path)
    with pytest.raises(FileNotFoundError, match="customers.csv"):
        hm.load_customers(tmp_path / "nowhere")


# -------------------------------------------------------------------------------------- real data

@needs_real_data
def test_real_catalog_matches_articles_csv_and_images() -> None:
    catalog, inter, report = hm.load(HM_ROOT, transactions=False, report=True)
    articles = pd.read_csv(HM_ROOT / "articles.csv", dtype=str, keep_default_na=False)
    assert list(catalog.ids) == articles["article_id"].tolist()
    assert all(len(i) == 10 and i.isdigit() for i in catalog.ids)
    assert catalog.titles == articles["prod_name"].tolist()
    assert catalog.texts == articles["detail_desc"].tolist()
    for name in hm.ATTRIBUTE_COLUMNS:
        assert catalog.attributes[name].dtype == object
        assert catalog.attributes[name].tolist() == articles[name].tolist()
    jpgs = {p.stem: p for p in (HM_ROOT / "images").glob("*/*.jpg")}
    with_image = [i for i, p in enumerate(catalog.image_paths) if p is not None]
    assert len(with_image) == len(set(jpgs) & set(catalog.ids)) > 0
    for i in with_image[:: max(1, len(with_image) // 50)]:
        assert Path(catalog.image_paths[i]) == jpgs[catalog.ids[i]].resolve() and os.path.isabs(catalog.image_paths[i])
    assert report.items_without_image == len(catalog) - len(with_image)
    assert report.empty_texts == int((articles["detail_desc"].str.strip() == "").sum())
    texts = hm.article_texts(catalog)
    assert all(t.startswith(catalog.titles[i].strip().rstrip(".").strip()) for i, t in enumerate(texts))
    assert all(t.endswith(catalog.texts[i].strip()) for i, t in enumerate(texts))
    assert not any(".." in t and ".." not in catalog.texts[i] + catalog.titles[i] for i, t in enumerate(texts))


@needs_real_data
def test_real_transactions_match_an_independent_read_at_any_chunk_size() -> None:
    catalog, inter, report = hm.load(HM_ROOT, images=False, chunk_rows=20_000, report=True)
    df = pd.read_csv(HM_ROOT / "transactions_train.csv", dtype={"customer_id": str, "article_id": str})
    assert len(inter) == len(df) == report.transaction_rows_kept and report.skipped == {}
    assert list(inter.user_ids) == sorted(df["customer_id"].unique())
    assert (inter.user_ids[inter.users] == df["customer_id"].to_numpy(dtype=object)).all()
    assert (inter.item_ids[inter.items] == df["article_id"].to_numpy(dtype=object)).all()
    expected_ts = (pd.to_datetime(df["t_dat"]) - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    np.testing.assert_array_equal(inter.timestamps, expected_ts.to_numpy())
    customers = pd.read_csv(HM_ROOT / "customers.csv", usecols=["customer_id"], dtype=str)
    assert report.customers_without_side_data == int((~pd.Index(inter.user_ids).isin(customers["customer_id"])).sum())

    _, one_block = hm.load(HM_ROOT, images=False)
    for name in ("users", "items", "timestamps", "user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(one_block, name), getattr(inter, name))


@needs_real_data
def test_real_customers_are_keyed_by_id() -> None:
    customers = hm.load_customers(HM_ROOT)
    raw = pd.read_csv(HM_ROOT / "customers.csv", usecols=["customer_id"], dtype=str)
    assert customers.index.is_unique and list(customers.index) == raw["customer_id"].tolist()


def test_read_articles_takes_any_csv_and_image_folder(tiny: Path, tmp_path: Path) -> None:
    catalog = hm.read_articles(tiny / "articles.csv", tiny / "images")
    assert list(catalog.ids) == ["0108775015", "0110065001", "1234567001"] and catalog.image_paths[1] is None
    assert hm.read_articles(tiny / "articles.csv").image_paths == [None, None, None]
    dupes = tmp_path / "new.csv"
    dupes.write_text("\n".join([",".join(ARTICLE_HEADER), article_line("0999999001"), article_line("0999999001")]) + "\n")
    with pytest.raises(hm.HMDataError, match="'0999999001' appears twice"):
        hm.read_articles(dupes)
    with pytest.raises(FileNotFoundError, match="layout of H&M"):
        hm.read_articles(tmp_path / "nope.csv")


def test_catalog_files_saved_with_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    """Spreadsheets write a UTF-8 byte-order mark first; `--add-items` files are read the same with or without."""
    from mmrec.datasets.catalog_csv import read_catalog

    lines = [",".join(ARTICLE_HEADER), article_line("0108775015", "Strap top")]
    (tmp_path / "hm.csv").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "plain.csv").write_text("\ufeffid,title,text\nn1,red dress,for summer\n", encoding="utf-8")
    assert list(read_catalog(tmp_path / "hm.csv").ids) == ["0108775015"]
    plain = read_catalog(tmp_path / "plain.csv")
    assert list(plain.ids) == ["n1"] and plain.titles == ["red dress"]


def test_a_plain_catalog_line_with_too_few_or_too_many_fields_is_an_error_naming_its_line(tmp_path: Path) -> None:
    from mmrec.datasets.catalog_csv import read_catalog_csv

    head = 'id,title,text\nn1,"red\ndress",summer\n'  # a quoted title over two lines: the next record is line 4
    for name, row, fields in (("short", "n2,blue dress", 2), ("long", "n2,blue dress,summer,x", 4)):
        (tmp_path / f"{name}.csv").write_text(head + row + "\n")
        with pytest.raises(ValueError, match=rf"{name}\.csv line 4: {fields} fields where the header has 3"):
            read_catalog_csv(tmp_path / f"{name}.csv")
    (tmp_path / "empty.csv").write_text("id,title,text\n")
    with pytest.raises(ValueError, match=r"empty\.csv: has a header but no items"):
        read_catalog_csv(tmp_path / "empty.csv")
    (tmp_path / "dupe.csv").write_text(head + "n1,again,x\n")
    with pytest.raises(ValueError, match=r"dupe\.csv line 4: repeated id 'n1'"):
        read_catalog_csv(tmp_path / "dupe.csv")


def test_a_catalogue_command_reads_an_h_and_m_folder_without_transactions(tiny: Path) -> None:
    from mmrec.cli.common import load_data

    (tiny / "transactions_train.csv").unlink()  # e.g. the articles and photos alone, for `mmrec shards`
    data = load_data(str(tiny), photos=True, transactions=False)
    assert len(data.catalog) == 3 and len(data.interactions) == 0
    with pytest.raises(FileNotFoundError, match="transactions_train.csv"):
        load_data(str(tiny))
