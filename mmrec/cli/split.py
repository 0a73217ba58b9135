"""``mmrec split``: split a data set by a protocol and write it in MMRec's format."""
from __future__ import annotations

import argparse

from mmrec.cli.common import add_data_argument, add_split_arguments, check_out_folder, emit, load_data, make_split
from mmrec.io import atomic_write_json
from mmrec.pretrained import relist_files

NAME = "split"
HELP = "split interactions (mmrec 8:1:1, temporal, leave-last-out, cold items) and write an MMRec folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options."""
    add_data_argument(parser)
    add_split_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (MMRec format: <name>.inter + id mappings)")
    parser.add_argument("--name", default=None, help="data set name (default: the output folder's name)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Split and write; cold splits also write cold_items.json with the valid and test item ids."""
    from mmrec.datasets import mmrec_format

    out = check_out_folder(args.out, inputs=(args.data,))
    data = load_data(args.data)
    split, _ = make_split(data, args)
    name = args.name or out.name
    raw_columns = {"raw_item_column": "article_id", "raw_user_column": "customer_id"} if data.kind == "hm" else {}
    mmrec_format.save(out, name, split, **raw_columns)
    payload = {"out": str(out), "train": len(split.train), "valid": len(split.valid), "test": len(split.test)}
    if split.cold_test_items is not None:
        ids = split.train.item_ids
        cold = {"valid": list(ids[split.cold_valid_items]), "test": list(ids[split.cold_test_items])}
        atomic_write_json(out / "cold_items.json", cold, indent=None)
        relist_files(out, ["cold_items.json"])  # covered by the folder's manifest like the rest
        payload["cold_items"] = {"valid": len(cold["valid"]), "test": len(cold["test"])}
    emit(payload, args.json)
    return 0
