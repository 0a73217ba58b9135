"""``mmrec embed``: vectors for every article of an H&M folder from one frozen tower.

Writes to ``--out``: ``item_ids.npy`` (article ids, catalog order), ``<modality>_vectors.npy`` (float32
``[items, dim]``, zero rows where invalid), ``<modality>_valid.npy`` and ``<modality>_embed.json``
(encoder, preprocessing, counts, time). With ``--mmrec-folder`` it also writes ``image_feat.npy`` or
``text_feat.npy`` with one row per itemID of that folder's ``i_id_mapping.csv`` (rows without a vector
get the mean vector; the count is reported). Rerunning resumes from the cache in ``--out/cache``.

Under ``accelerate launch`` (N processes, on one machine or several) each process embeds one contiguous
shard of the catalog, rows ``n·r // N`` to ``n·(r+1) // N`` for rank r (`mmrec.encoders.embed.shard_bounds`),
on its own device (``--device auto`` or ``cuda``: the launcher's ``cuda:<local rank>``); the shards are
gathered in rank order and the main process writes the same files one process writes (vectors equal up to
float rounding: a row's batch companions differ) and prints the one report. Every process adds its new rows
to the shared cache folder (its own shard files, so they never overwrite one another).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.cli.common import check_out_folder, device_arg, emit, non_negative_int, positive_int
from mmrec.io import atomic_save_npy, atomic_write_text

NAME = "embed"
HELP = "Embed an H&M catalog's images or texts with a frozen tower (vectors + optional MMRec features)."

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``mmrec embed``."""
    parser.add_argument("--data", required=True, help="H&M folder (articles.csv, images/<id[:3]>/<id>.jpg)")
    parser.add_argument("--encoder", required=True, metavar="SPEC",
                        help="e.g. minilm, openclip:ViT-B-32@/path/w.safetensors, timm:resnet50@random, hf:/path")
    parser.add_argument("--modality", choices=("image", "text", "screen"),
                        help="default: the encoder's first modality (image for openclip/timm, text for hf)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--mmrec-folder", metavar="FOLDER",
                        help="also write image_feat.npy / text_feat.npy to --out, aligned to FOLDER/i_id_mapping.csv")
    parser.add_argument("--batch-size", type=positive_int, help="default: 64 images or 128 texts")
    parser.add_argument("--device", type=device_arg, default="auto",
                        help="auto (CUDA when present), cpu, cuda, cuda:1, mps (refused if absent)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--num-workers", type=non_negative_int,
                        help="image decoding workers (default: by device and cores)")
    parser.add_argument("--decoder", default="auto", choices=("auto", "pil", "tensor"),
                        help="tensor: batched decode_jpeg on the device (nvJPEG on CUDA); auto picks it on CUDA")
    parser.add_argument("--cache", metavar="DIR", help="embedding cache folder (default: OUT/cache)")
    parser.add_argument("--no-cache", action="store_true", help="encode everything, keep no cache")
    parser.add_argument("--limit", type=positive_int, help="embed only the first N articles (quick checks)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the counts on stdout")


def _mmrec_rows(folder: str, catalog: Any) -> np.ndarray:
    """Catalog rows of the folder's items in itemID order, checked before anything is embedded."""
    from mmrec.datasets.mmrec_format import read_item_mapping

    raw_ids = read_item_mapping(folder)
    missing = [i for i in raw_ids if i not in catalog]
    if missing:
        raise ValueError(f"--mmrec-folder: {len(missing)} item id(s) of {folder}/i_id_mapping.csv are not in the "
                         f"catalog of --data, e.g. {missing[:3]} (is it another data set?)")
    return catalog.index_of(raw_ids)


def _mmrec_features(folder: str, rows: np.ndarray, vectors: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows of ``vectors`` in the folder's itemID order; rows without a vector get the mean of the valid ones."""
    features = vectors[rows].copy()
    ok = valid[rows]
    if not ok.any():
        raise ValueError(f"no item of {folder}/i_id_mapping.csv has a vector")
    features[~ok] = features[ok].mean(axis=0)
    return features, int((~ok).sum())


def _processes(device: str) -> tuple[int, int, str]:
    """``(rank, process count, device)`` of this process: ``(0, 1, device)`` alone; under ``accelerate
    launch`` (``WORLD_SIZE`` > 1) the processes join a torch.distributed group and ``auto`` / ``cuda`` become
    this process's own device (``cuda:<local rank>``, or the CPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, device
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # On the CPU (asked for, forced by ACCELERATE_USE_CPU, or no GPU) the group is gloo, on CUDA NCCL.
    cpu = device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if device == "auto" or (device == "cuda" and state.device.type == "cuda"):
        device = str(state.device)
    return state.process_index, state.num_processes, device


def _check_shared_ids(out: Path, ids: Any, modality: str) -> None:
    """Modalities embedded into one ``--out`` share its ``item_ids.npy``: refuse to rewrite it for other articles
    while another modality's vectors there still follow the old ids (they would silently stop matching)."""
    path = out / "item_ids.npy"
    others = sorted(p.name for p in out.glob("*_vectors.npy") if p.name != f"{modality}_vectors.npy")
    if not path.is_file() or not others:
        return
    old = np.load(path, allow_pickle=False)
    new = np.asarray(ids, dtype=str)
    if old.shape != new.shape or not (old == new).all():
        raise ValueError(f"--out {out} holds {', '.join(others)} for {len(old)} other article ids (item_ids.npy); "
                         f"these {len(new)} articles would leave them matching the wrong rows: give another --out")


def run(args: argparse.Namespace) -> int:
    """Embed, write the files, report counts."""
    from mmrec.datasets import hm
    from mmrec.encoders import create_encoder, embed
    from mmrec.encoders.cache import EmbeddingCache

    out = check_out_folder(args.out, inputs=(args.data,))
    if args.cache:
        check_out_folder(args.cache, "--cache")
    if args.limit is not None and args.mmrec_folder:
        raise ValueError("--limit and --mmrec-folder cannot be combined: the features must cover every mapped item")
    rank, world, device = _processes(args.device)
    encoder = create_encoder(args.encoder, args.modality, device=device, precision=args.precision)
    modality = encoder.modality
    if args.mmrec_folder and modality == "screen":
        raise ValueError("--mmrec-folder writes image_feat.npy or text_feat.npy; use --modality image or text")
    catalog, _ = hm.load(args.data, transactions=False, images=modality != "text")
    if args.limit is not None:
        catalog = catalog.subset(np.arange(min(args.limit, len(catalog))))
    mmrec_rows = _mmrec_rows(args.mmrec_folder, catalog) if args.mmrec_folder else None
    _check_shared_ids(out, catalog.ids, modality)
    out.mkdir(parents=True, exist_ok=True)
    cache = None if args.no_cache else EmbeddingCache.for_encoder(args.cache or out / "cache", encoder)
    progress = (sys.stderr.isatty() if args.progress is None else args.progress) and rank == 0
    texts = hm.article_texts(catalog) if modality == "text" else None
    if world > 1:
        from mmrec.encoders.embed import gather_result, shard_bounds

        start, stop = shard_bounds(len(catalog), rank, world)
        part = embed(catalog.subset(np.arange(start, stop)), encoder, texts=None if texts is None else texts[start:stop],
                     batch_size=args.batch_size, num_workers=args.num_workers, decoder=args.decoder, cache=cache,
                     progress=progress)
        result = gather_result(part, device=encoder.device if encoder.device.type == "cuda" else "cpu")
        if rank != 0:  # the main process writes the files and reports
            return 0
    else:
        result = embed(catalog, encoder, texts=texts, batch_size=args.batch_size, num_workers=args.num_workers,
                       decoder=args.decoder, cache=cache, progress=progress)
    if len(catalog) and not result.valid.any():  # every article skipped: no vectors to write
        raise ValueError(f"--data {args.data}: no article has a usable {modality} (all {len(catalog)} skipped, "
                         f"e.g. {[list(f) for f in result.failures[:2]]}); nothing to embed")

    atomic_save_npy(out / "item_ids.npy", np.asarray(catalog.ids, dtype=str))
    atomic_save_npy(out / f"{modality}_vectors.npy", result.vectors)
    atomic_save_npy(out / f"{modality}_valid.npy", result.valid)
    report: dict[str, Any] = {**result.summary(), "processes": world, "device": str(encoder.device),
                              "dtype": str(encoder.dtype).replace("torch.", ""),
                              "data": str(Path(args.data).resolve()), "out": str(out.resolve())}
    if args.mmrec_folder:
        from mmrec.datasets.mmrec_format import save_features

        features, filled = _mmrec_features(args.mmrec_folder, mmrec_rows, result.vectors, result.valid)
        path = save_features(out, f"{modality}_feat.npy", features)
        report["mmrec"] = {"folder": str(Path(args.mmrec_folder).resolve()), "file": str(path),
                           "rows": int(len(features)), "filled_with_mean": filled}
    record = {**report, "encoder_description": encoder.describe()}
    atomic_write_text(out / f"{modality}_embed.json", json.dumps(record, indent=2, default=str, allow_nan=False))
    emit(report, args.json)
    return 0
