"""``mmrec shards``: write a catalog as webdataset shards (one sample per item: photo + json)."""
from __future__ import annotations

import argparse

from mmrec.cli.common import add_data_argument, check_out_folder, emit, load_data, positive_int

NAME = "shards"
HELP = "write a catalog as webdataset tar shards (jpg + json of text and attributes per item)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options."""
    add_data_argument(parser)
    parser.add_argument("--out", required=True, help="output folder for <prefix>-NNNNNN.tar and <prefix>-shards.json")
    parser.add_argument("--items-per-shard", type=positive_int, default=1000)
    parser.add_argument("--prefix", default="catalog")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Write the shards; the json text is the reference text of the data's text tower (H&M: article_texts)."""
    from mmrec.datasets.shards import write_catalog_shards

    check_out_folder(args.out, inputs=(args.data,))
    data = load_data(args.data, photos=True, transactions=False)  # a catalogue's photos and texts only
    if data.catalog is None:
        raise ValueError(f"--data {args.data}: has no catalog to write")
    texts = None
    if data.kind == "hm":
        from mmrec.datasets import hm

        texts = hm.article_texts(data.catalog)
    else:
        texts = [data.catalog.full_text(i) for i in range(len(data.catalog))]
    paths = write_catalog_shards(data.catalog, args.out, items_per_shard=args.items_per_shard, prefix=args.prefix,
                                 texts=texts)
    brace = f"{args.out}/{args.prefix}-{{{0:06d}..{len(paths) - 1:06d}}}.tar"
    emit({"out": args.out, "shards": len(paths), "items": len(data.catalog), "urls": brace}, args.json)
    return 0
