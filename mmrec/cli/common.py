"""What several commands share: reading ``--data``, building a split, checking arguments, printing results.

Arguments are checked when they are parsed (the ``*_arg`` types below), so a bad value is refused before
any data is read or any model is built; `check_out_folder` and `prepare_checkpoint_dir` check paths
before the work that would write there.
"""
from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmrec.data import Catalog, Interactions
from mmrec.io import dumps_json
from mmrec.splits import Split, cold_groups, cold_items, from_labels, leave_last_out, mmrec_protocol, temporal

PROTOCOLS = ("mmrec", "temporal", "leave-last-out", "cold", "new-products")
DAY = 86_400
log = logging.getLogger(__name__)


# -- argument types: a bad value is an argparse error (exit 2) before any work ---------------------------

def positive_int(text: str) -> int:
    """An integer ≥ 1 (counts, sizes, epochs, k)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer ≥ 0 (seeds, worker counts)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def finite_float(text: str) -> float:
    """A float that is neither NaN nor infinite (thresholds, rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def fraction_arg(text: str) -> float:
    """A float strictly between 0 and 1."""
    value = finite_float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def warm_fraction_arg(text: str) -> float:
    """A float in [0, 0.5): the share of warm pairs held out into valid, and again into test."""
    value = finite_float(text)
    if not 0.0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 0.5, got {value}")
    return value


def date_arg(text: str) -> str:
    """A calendar day ``YYYY-MM-DD`` (kept as text; `make_split` converts it). Only that form: numpy would
    also read ``2021-01`` as a month's first day, ``20200918`` as a year and ``NaT`` or ``today``."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        np.datetime64(text, "D")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, got {text!r}") from None
    return text


def device_arg(text: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, refused unless this machine has that device."""
    if text in ("auto", "cpu"):
        return text
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device is available on this machine")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {count} CUDA device(s), "
                                             f"cuda:0..cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"{text!r}: {device.type} devices are not supported; "
                                         f"use auto, cpu, cuda, cuda:N or mps")
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def check_out_folder(path: str | Path, flag: str = "--out", kind: str | None = None,
                     inputs: tuple[str | Path | None, ...] = ()) -> Path:
    """``path`` as a folder to write: refused when it exists and is not a folder, or is one of ``inputs`` (the
    command's input folders) or inside one; with ``kind`` (a saved folder's kind, which replaces the whole
    folder) also when it holds anything but an older ``kind`` (`mmrec.pretrained.check_replaceable`);
    checked before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{flag} {path} is a file; it must be a folder (created if missing)")
    resolved = path.resolve()
    for given in inputs:
        if given is None or not Path(given).is_dir():
            continue
        source = Path(given).resolve()
        if resolved == source or source in resolved.parents:
            raise ValueError(f"{flag} {path} is the input folder {given} or inside it: write the output elsewhere")
    if kind is not None:
        from mmrec.pretrained import check_replaceable

        check_replaceable(path, kind, f"{flag} {path}")
    return path


def prepare_checkpoint_dir(path: str | None, inputs: tuple[str | Path | None, ...] = (),
                           out: str | Path | None = None) -> str | None:
    """Create ``--checkpoint-dir`` (or a run file's ``train.checkpoint_dir``) if missing (the first checkpoint
    is written after an epoch of work); never one of ``inputs`` (the command's input folders) or inside one,
    nor ``out`` or inside it (saving the model replaces ``--out`` whole, after the run)."""
    if path is None:
        return None
    folder = check_out_folder(path, "--checkpoint-dir", inputs=inputs)
    if out is not None and (folder.resolve() == Path(out).resolve() or Path(out).resolve() in folder.resolve().parents):
        raise ValueError(f"--checkpoint-dir {path} is --out {out} or inside it: saving the model replaces --out "
                         f"whole, so keep the checkpoints elsewhere")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"--checkpoint-dir {folder}: cannot create it ({err.strerror or err})") from None
    return str(folder)


def load_run_file(cls: type, path: str | Path) -> Any:
    """``--config``: a YAML run file read into dataclass ``cls`` (`mmrec.config.load_yaml`), every error
    naming the file (YAML syntax errors name it already, see `mmrec.cli.error_message`)."""
    from mmrec.config import load_yaml

    try:
        return load_yaml(cls, path)
    except ValueError as err:
        raise ValueError(f"--config {err}") from None
    except OSError as err:  # missing, a folder: the message names the path; say which option gave it
        raise type(err)(f"--config {err}") from None


# -- data and splits ---------------------------------------------------------------------------------------

@dataclass
class Data:
    """A data set as read from ``--data``: interactions, the catalog if there is one, MMRec labels if given."""

    interactions: Interactions
    catalog: Catalog | None
    labels: np.ndarray | None
    kind: str


def add_data_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--data``: an MMRec folder (``*.inter``), an H&M folder (``articles.csv``) or ``synthetic``."""
    parser.add_argument("--data", required=required,
                        help="MMRec-format folder (<name>.inter), H&M Kaggle-layout folder, or 'synthetic'")


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """Options choosing the split protocol (ignored when the data carries MMRec ``x_label``s)."""
    parser.add_argument("--protocol", choices=PROTOCOLS, default=None,
                        help="split protocol when the data has no x_label column (default: mmrec 8:1:1; "
                             "leave-last-out for 'train sequence', which ignores x_label)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="seed of the split and of training (default: the run file's train.seed, else 0)")
    parser.add_argument("--test-start", type=date_arg,
                        help="temporal protocol: first day of the test period (YYYY-MM-DD)")
    parser.add_argument("--cold-fraction", type=fraction_arg, default=0.2,
                        help="cold protocol: fraction of items withheld (new-products: of products, every "
                             "colour variant of a product_code together)")
    parser.add_argument("--warm-targets", type=warm_fraction_arg, default=0.0, metavar="FRACTION",
                        help="cold protocols: also hold out this share of the warm pairs into valid and into "
                             "test, so a ranking of every item is judged on warm and cold purchases together")


def load_data(spec: str, *, photos: bool = False, transactions: bool = True) -> Data:
    """Read ``--data`` into `Data`, naming the path and what was expected when it fits no known layout. An
    H&M folder without ``images/`` (the CSVs alone) loads without photos, with a warning, unless ``photos``
    (a command that reads the photos) makes that an error; ``transactions=False`` reads an H&M folder's
    catalogue alone (a command that needs no purchases)."""
    if spec == "synthetic":
        import tempfile

        from mmrec.datasets.synthetic import WorldConfig, make_world

        world = make_world(WorldConfig(), Path(tempfile.gettempdir()) / "mmrec-synthetic")
        return Data(world.interactions, world.catalog, None, "synthetic")
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--data {path} does not exist")
    if path.is_dir() and any(path.glob("*.inter")):
        from mmrec.datasets import mmrec_format

        data = mmrec_format.load(path)
        return Data(data.interactions, None, data.labels, "mmrec")
    if path.is_dir() and (path / "articles.csv").is_file():
        from mmrec.datasets import hm

        with_photos = photos or (path / hm.IMAGES_DIR).is_dir()
        if not with_photos:
            log.warning("--data %s has no %s/ folder: loading the articles without photos", path, hm.IMAGES_DIR)
        catalog, interactions = hm.load(path, images=with_photos, transactions=transactions)
        return Data(interactions, catalog, None, "hm")
    raise ValueError(f"--data {path}: expected an MMRec folder with a <name>.inter file, an H&M folder with "
                     f"articles.csv, or 'synthetic'")


def make_split(data: Data, args: argparse.Namespace, *, default_protocol: str = "mmrec",
               use_labels: bool = True) -> tuple[Split, np.ndarray | None]:
    """The split the command works on, and MMRec ``x_label``s for warm protocols (None otherwise).
    ``--protocol`` wins over ``default_protocol``; the data's own ``x_label`` split (MMRec's) wins over both
    unless ``use_labels`` is false (sequence models need a split in time, which ``x_label`` is not), and asking
    for another protocol on such data is an error rather than silently the warm split.
    A split with an empty valid or test part is an error: there would be nothing to evaluate."""
    protocol = getattr(args, "protocol", None) or default_protocol
    seed = 0 if getattr(args, "seed", None) is None else args.seed
    if use_labels and data.labels is not None and getattr(args, "protocol", None) not in (None, "mmrec"):
        raise ValueError(f"--data {args.data} carries its own split (an x_label column), so --protocol "
                         f"{args.protocol} cannot apply; drop --protocol, or split the data without x_label")
    if getattr(args, "warm_targets", 0.0) and protocol not in ("cold", "new-products"):
        raise ValueError(f"--warm-targets {args.warm_targets} needs --protocol cold or new-products, got {protocol}")
    labels = None
    if use_labels and data.labels is not None:
        split, labels, protocol = from_labels(data.interactions, data.labels), data.labels, "x_label"
    elif protocol == "mmrec":
        split, labels = mmrec_protocol(data.interactions, seed=seed)
    elif protocol == "temporal":
        if not args.test_start:
            raise ValueError("--protocol temporal needs --test-start YYYY-MM-DD")
        split = temporal(data.interactions, test_start=_unix_day(args.test_start))
    elif protocol == "leave-last-out":
        split = leave_last_out(data.interactions)
    elif protocol == "new-products":
        if data.catalog is None or "product_code" not in data.catalog.attributes:
            raise ValueError(f"--data {args.data}: --protocol new-products needs a catalog with product_code")
        groups = data.catalog.attributes["product_code"][data.catalog.index_of(data.interactions.item_ids)]
        split = cold_groups(data.interactions, groups, fraction=args.cold_fraction, seed=seed,
                            warm_fraction=getattr(args, "warm_targets", 0.0))
    else:
        split = cold_items(data.interactions, fraction=args.cold_fraction, seed=seed,
                           warm_fraction=getattr(args, "warm_targets", 0.0))
    _check_evaluable(split, data, args, protocol)
    return split, labels


def _unix_day(day: str) -> int:
    return int(np.datetime64(day, "s").astype(np.int64))


def _day(seconds: int) -> str:
    return str(np.datetime64(int(seconds), "s").astype("datetime64[D]"))


def _check_evaluable(split: Split, data: Data, args: argparse.Namespace, protocol: str) -> None:
    """Refuse a split whose valid or test part is empty, saying which, and for a temporal split which dates
    it covered and which dates the data spans."""
    empty = [part for part in ("valid", "test") if len(getattr(split, part)) == 0]
    if not empty:
        return
    where = f"--data {getattr(args, 'data', None) or getattr(args, 'catalog', '?')}"
    if protocol == "temporal":
        start = _unix_day(args.test_start)
        periods = {"valid": (start - 7 * DAY, start), "test": (start, start + 7 * DAY)}
        spans = ", ".join(f"{p} {_day(periods[p][0])}..{_day(periods[p][1])}" for p in empty)
        ts = data.interactions.timestamps
        raise ValueError(f"{where}: --protocol temporal --test-start {args.test_start} leaves the "
                         f"{' and '.join(empty)} part(s) empty ({spans}, end exclusive); the data spans "
                         f"{_day(ts.min())}..{_day(ts.max())}: choose a --test-start within it")
    raise ValueError(f"{where}: the {protocol} split leaves the {' and '.join(empty)} part(s) empty "
                     f"({len(split.train)} training rows): nothing to evaluate")


# -- output -------------------------------------------------------------------------------------------------

def emit(payload: dict[str, Any], as_json: bool) -> None:
    """Print one JSON object (``--json``; strict JSON, see `mmrec.io.dumps_json`) or an indented readable
    form. A value that is not a finite number (an undefined metric) is printed as null and listed, with
    its path, under ``"undefined"``, and a warning says so."""
    payload, undefined = _finite(payload, "")
    if undefined:
        log.warning("undefined values (printed as null): %s", ", ".join(undefined))
        payload["undefined"] = {path: "not a finite number" for path in undefined}
    if as_json:
        sys.stdout.write(dumps_json(payload) + "\n")
        return
    for key, value in payload.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<16} {_fmt(v)}")
        else:
            print(f"{key:<18} {_fmt(value)}")


def _finite(value: Any, path: str) -> tuple[Any, list[str]]:
    """``value`` with non-finite floats replaced by None, and the dotted paths where that happened."""
    if isinstance(value, dict):
        out, bad = {}, []
        for key, item in value.items():
            out[key], found = _finite(item, f"{path}.{key}" if path else str(key))
            bad += found
        return out, bad
    if isinstance(value, np.ndarray):
        return _finite(value.tolist(), path)
    if isinstance(value, (list, tuple)):
        pairs = [_finite(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return [p[0] for p in pairs], [b for p in pairs for b in p[1]]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None, [path]
    return value, []


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
