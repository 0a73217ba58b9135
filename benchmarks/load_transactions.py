"""Load time and peak memory of `mmrec.datasets.hm.load` on a synthetic full-size H&M download.

Writes ``transactions_train.csv`` with the competition's size and schema (31,788,324 lines, 1,371,980
customers as 64-hex ids, 105,542 ten-digit article ids, dates 2018-09-20..2020-09-22, a price and the
sales channel), a matching ``articles.csv`` and a ``customers.csv`` for 95% of the customers, then loads
it with ``hm.load(root, images=False)`` in a child process and reports the child's wall time and peak
RSS (``ru_maxrss``). Baselines measured in the same run, each in its own child: reading the file's bytes
(the I/O floor), and pyarrow parsing the same three dictionary-encoded columns and discarding them,
serially (as `hm.load` parses, for line numbers) and multi-threaded. The JSON line gives the load time
as ratios of each.

    python benchmarks/load_transactions.py                    # full size in a temp dir under /tmp, deleted after
    python benchmarks/load_transactions.py --rows 1000000     # smaller (customers and articles scale down)
    python benchmarks/load_transactions.py --workdir /tmp/hm_synth   # keep and reuse the files
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mmrec.datasets.hm_world import digit_matrix, hex_ids, write_fixed

FULL_ROWS, FULL_CUSTOMERS, FULL_ARTICLES = 31_788_324, 1_371_980, 105_542
FIRST_DAY, LAST_DAY = np.datetime64("2018-09-20"), np.datetime64("2020-09-22")
TARGET_RSS_BYTES = 3_000_000_000
WRITE_ROWS = 1_000_000
# Fixed-width transaction line: date, customer, article, price ("0.0" + 15 digits), channel.
FIELDS = (("date", 10), ("customer", 64), ("article", 10), ("price", 18), ("channel", 1))
LINE_BYTES = sum(w for _, w in FIELDS) + len(FIELDS)  # separators and the newline
# The competition's code column beside each *_name column.
CODE_COLUMNS = {
    "product_type_name": "product_type_no", "product_group_name": None,
    "graphical_appearance_name": "graphical_appearance_no", "colour_group_name": "colour_group_code",
    "perceived_colour_value_name": "perceived_colour_value_id",
    "perceived_colour_master_name": "perceived_colour_master_id", "department_name": "department_no",
    "index_name": "index_code", "index_group_name": "index_group_no", "section_name": "section_no",
    "garment_group_name": "garment_group_no",
}
NAME_VALUES = {
    "product_type_name": ["Trousers", "Dress", "Sweater", "T-shirt", "Top", "Blouse", "Shorts", "Skirt", "Vest top"],
    "product_group_name": ["Garment Upper body", "Garment Lower body", "Garment Full body", "Accessories"],
    "graphical_appearance_name": ["Solid", "All over pattern", "Melange", "Stripe", "Denim", "Check"],
    "colour_group_name": ["Black", "Dark Blue", "White", "Light Pink", "Grey", "Beige", "Blue", "Red"],
    "perceived_colour_value_name": ["Dark", "Dusty Light", "Light", "Medium Dusty", "Bright"],
    "perceived_colour_master_name": ["Black", "Blue", "White", "Pink", "Grey", "Red", "Beige", "Green"],
    "department_name": ["Jersey", "Knitwear", "Trousers", "Blouse", "Dress", "Shorts", "Swimwear"],
    "index_name": ["Ladieswear", "Divided", "Menswear", "Children Sizes 92-140", "Sport"],
    "index_group_name": ["Ladieswear", "Baby/Children", "Divided", "Menswear", "Sport"],
    "section_name": ["Womens Everyday Collection", "Divided Collection", "Mens Tailoring", "Kids Girl"],
    "garment_group_name": ["Jersey Fancy", "Accessories", "Jersey Basic", "Knitwear", "Under-, Nightwear"],
}
WORDS = np.array("soft cotton jersey top with narrow straps a lined dress in woven fabric and pockets".split())


def generate(root: Path, rows: int, customers: int, articles: int, seed: int) -> None:
    """Write articles.csv, customers.csv and transactions_train.csv into ``root``."""
    rng = np.random.default_rng(seed)
    article_numbers = np.sort(rng.choice(900_000_000, articles, replace=False) + 100_000_000)
    article_ids = digit_matrix(article_numbers, 10)  # leading 0 like H&M's ids
    write_articles(root / "articles.csv", article_ids, rng)

    customer_ids = hex_ids(rng, customers)
    with open(root / "customers.csv", "wb") as f:
        f.write(b"customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code\n")
        chosen = np.flatnonzero(rng.random(customers) < 0.95)
        middle = np.frombuffer(b",,ACTIVE,NONE", np.uint8)  # FN and Active empty
        age = digit_matrix(rng.integers(16, 99, len(chosen)), 2)
        write_fixed(f, [customer_ids[chosen], np.broadcast_to(middle, (len(chosen), len(middle))), age,
                        hex_ids(rng, len(chosen))])

    # Every customer buys at least once; the rest of the lines go to customers by a skewed activity.
    activity = rng.lognormal(0.0, 1.2, customers)
    who = np.concatenate([np.arange(customers, dtype=np.int32),
                          rng.choice(customers, rows - customers, p=activity / activity.sum()).astype(np.int32)])
    rng.shuffle(who)
    popularity = 1.0 / (np.arange(articles) + 20.0) ** 0.9
    popularity = rng.permutation(popularity / popularity.sum())
    n_days = int((LAST_DAY - FIRST_DAY).astype(int)) + 1
    day_strings = np.array([str(FIRST_DAY + d) for d in range(n_days)], dtype="S10")
    day_table = np.frombuffer(day_strings.tobytes(), np.uint8).reshape(n_days, 10)
    per_day = rng.multinomial(rows, np.full(n_days, 1.0 / n_days))
    day_of_row = np.repeat(np.arange(n_days, dtype=np.int16), per_day)
    with open(root / "transactions_train.csv", "wb") as f:
        f.write(b"t_dat,customer_id,article_id,price,sales_channel_id\n")
        for start in range(0, rows, WRITE_ROWS):
            stop = min(rows, start + WRITE_ROWS)
            n = stop - start
            price = np.concatenate([np.broadcast_to(np.frombuffer(b"0.0", np.uint8), (n, 3)),
                                    rng.integers(48, 58, (n, 15), dtype=np.uint8)], axis=1)
            channel = (rng.integers(1, 3, (n, 1)) + ord("0")).astype(np.uint8)
            write_fixed(f, [day_table[day_of_row[start:stop]], customer_ids[who[start:stop]],
                            article_ids[rng.choice(articles, n, p=popularity)], price, channel])


def write_articles(path: Path, article_ids: np.ndarray, rng: np.random.Generator) -> None:
    """articles.csv with the competition's 25 columns; codes and names drawn from small vocabularies."""
    n = len(article_ids)
    ids = pd.Series(article_ids.view("S10").ravel()).str.decode("ascii")
    df = pd.DataFrame({"article_id": ids, "product_code": ids.str[1:7], "prod_name": "Item " + ids.str[4:7]})
    for i, (name, values) in enumerate(NAME_VALUES.items()):
        pick = rng.integers(0, len(values), n)
        if CODE_COLUMNS[name]:
            df[CODE_COLUMNS[name]] = pick + 1000 * (i + 1)
        df[name] = np.array(values, dtype=object)[pick]
    words = WORDS[rng.integers(0, len(WORDS), (n, 8))]
    desc = pd.Series([" ".join(w) for w in words]).str.capitalize() + "."
    df["detail_desc"] = desc.where(rng.random(n) > 0.004, "")
    columns = ["article_id", "product_code", "prod_name", "product_type_no", "product_type_name",
               "product_group_name", "graphical_appearance_no", "graphical_appearance_name", "colour_group_code",
               "colour_group_name", "perceived_colour_value_id", "perceived_colour_value_name",
               "perceived_colour_master_id", "perceived_colour_master_name", "department_no", "department_name",
               "index_code", "index_name", "index_group_no", "index_group_name", "section_no", "section_name",
               "garment_group_no", "garment_group_name", "detail_desc"]
    df[columns].to_csv(path, index=False)


def run_child(args: list[str]) -> tuple[dict, int]:
    """Run this script in a child process; its JSON output and its own peak RSS in bytes."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"child {args} failed with exit code {proc.returncode}")
    return json.loads(out), usage.ru_maxrss * 1024  # Linux reports kilobytes


def child_load(root: str, chunk_rows: int) -> None:
    """Child process: time `hm.load` and print what it loaded as JSON."""
    from mmrec.datasets import hm

    start = time.perf_counter()
    catalog, inter, report = hm.load(root, images=False, chunk_rows=chunk_rows, report=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"load_s": round(seconds, 2), "rows": len(inter), "users": inter.n_users,
                      "items": len(catalog), "customers_without_side_data": report.customers_without_side_data,
                      "skipped": report.skipped}))


def child_read(root: str) -> None:
    """Child process: time reading the transactions file's bytes (the I/O floor) and print JSON."""
    start = time.perf_counter()
    total = 0
    with open(Path(root) / "transactions_train.csv", "rb", buffering=0) as f:
        while chunk := f.read(64 << 20):
            total += len(chunk)
    print(json.dumps({"read_s": round(time.perf_counter() - start, 2), "bytes": total}))


def child_parse(root: str, chunk_rows: int, use_threads: bool) -> None:
    """Child process: time pyarrow's streaming parse of the three columns `hm.load` reads, results discarded."""
    import pyarrow.csv as pa_csv

    from mmrec.datasets import hm

    path = Path(root) / hm.TRANSACTIONS_FILE
    start = time.perf_counter()
    reader = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=hm._block_size(path, chunk_rows),
                                                                   use_threads=use_threads),
                             convert_options=pa_csv.ConvertOptions(
                                 include_columns=list(hm.TRANSACTION_COLUMNS),
                                 column_types={c: hm.DICTIONARY_STRING for c in hm.TRANSACTION_COLUMNS}))
    rows = sum(batch.num_rows for batch in reader)
    print(json.dumps({"parse_s": round(time.perf_counter() - start, 2), "rows": rows}))


def main() -> int:
    """Generate (or reuse) the synthetic download, run the children, print one JSON line; exit 1 over budget."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="transaction lines (default: full size)")
    parser.add_argument("--workdir", type=Path, help="folder for the files; reused when they match (kept)")
    parser.add_argument("--chunk-rows", type=int, default=2_000_000, help="hm.load chunk_rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child-load", help=argparse.SUPPRESS)
    parser.add_argument("--child-read", help=argparse.SUPPRESS)
    parser.add_argument("--child-parse", help=argparse.SUPPRESS)
    parser.add_argument("--threads", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_load:
        child_load(args.child_load, args.chunk_rows)
        return 0
    if args.child_read:
        child_read(args.child_read)
        return 0
    if args.child_parse:
        child_parse(args.child_parse, args.chunk_rows, args.threads)
        return 0

    scale = args.rows / FULL_ROWS
    customers = max(1, min(args.rows, round(FULL_CUSTOMERS * scale)))
    articles = max(1, min(args.rows, FULL_ARTICLES))
    root = args.workdir or Path(tempfile.mkdtemp(prefix="hm_synth_", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    meta = {"rows": args.rows, "customers": customers, "articles": articles, "seed": args.seed,
            "line_bytes": LINE_BYTES}
    meta_path = root / "synthetic.json"
    try:
        start = time.perf_counter()
        reused = meta_path.is_file() and json.loads(meta_path.read_text()) == meta
        if not reused:
            meta_path.unlink(missing_ok=True)
            generate(root, args.rows, customers, articles, args.seed)
            meta_path.write_text(json.dumps(meta))
        generate_s = time.perf_counter() - start
        read, _ = run_child(["--child-read", str(root)])
        chunking = ["--chunk-rows", str(args.chunk_rows)]
        parse_serial, _ = run_child(["--child-parse", str(root), *chunking])
        parse_threads, _ = run_child(["--child-parse", str(root), *chunking, "--threads"])
        loaded, load_rss = run_child(["--child-load", str(root), *chunking])
        result = {
            **meta, "csv_bytes": read["bytes"], "generate_s": round(generate_s, 1), "reused_files": reused,
            "chunk_rows": args.chunk_rows, **loaded, "peak_rss_bytes": load_rss,
            "peak_rss_gib": round(load_rss / 2**30, 3), "baseline_read_s": read["read_s"],
            "baseline_parse_serial_s": parse_serial["parse_s"], "baseline_parse_threads_s": parse_threads["parse_s"],
            "load_over_read": round(loaded["load_s"] / max(read["read_s"], 1e-9), 2),
            "load_over_parse_serial": round(loaded["load_s"] / max(parse_serial["parse_s"], 1e-9), 2),
            "load_over_parse_threads": round(loaded["load_s"] / max(parse_threads["parse_s"], 1e-9), 2),
            "target_rss_bytes": TARGET_RSS_BYTES, "within_target": load_rss <= TARGET_RSS_BYTES,
        }
        print(json.dumps(result))
        verdict = "holds" if result["within_target"] else "FAILS"
        print(f"3 GB peak-RSS target {verdict}: {load_rss / 1e9:.2f} GB for {loaded['rows']:,} rows in "
              f"{loaded['load_s']:.1f} s ({result['load_over_parse_serial']}x pyarrow's bare serial parse, "
              f"{result['load_over_parse_threads']}x its threaded parse)", file=sys.stderr)
        return 0 if result["within_target"] else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
