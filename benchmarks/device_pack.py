"""Pack an H&M folder small enough to travel to a lent GPU machine (64 MiB), and unpack it there.

``pack`` writes into an ignored folder (e.g. ``.gpu``, listed in ``.git/info/exclude``): articles and
transactions gzipped (customer ids replaced by their rank, ``c0000000``…, which keeps their order), the
photos resized to the tiny tower's 96×64 and re-encoded as one blob with an index, and the MiniLM text
vectors in float16 (``minilm.safetensors`` + ids, what ``--content`` of the cold-start benchmarks reads).
``unpack`` rebuilds the Kaggle layout from it, so every reader works unchanged. Nothing of it is ever
committed: it is the developers' data.

``pack --stream-items N`` packs instead the sub-catalogue a screen-stream benchmark grounds in: the N articles
``mmrec.datasets.app_sim.catalog_for_sequences`` draws (``--seed``, ``--sessions`` purchase sequences), their
photos as they are (the renderers draw them at page size) and the purchases on them, no text vectors. On the
device, ``benchmarks/stream_targets.py --catalog hm --items N --hm /tmp/hm`` then grounds in exactly those N
articles (its sequences are drawn anew from the purchases packed).

    python benchmarks/device_pack.py pack --hm ../shared/data/hm --cache out/cache/minilm --out .gpu
    python benchmarks/device_pack.py pack --hm ../shared/data/hm --stream-items 1000 --out .gpu
    python3 benchmarks/device_pack.py unpack --packed .gpu --out /tmp/hm          # on the device
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
import sys
from pathlib import Path

PHOTO_SIZE = (64, 96)  # PIL's (width, height): the tiny ViT's input
FILES = ("articles.csv", "transactions_train.csv")


def pack(hm_root: Path, cache: str, out: Path, quality: int) -> None:
    """Write the packed folder (see the module docstring)."""
    import numpy as np
    import pandas as pd
    from PIL import Image
    from safetensors.numpy import save_file

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import coldstart_hm as bench
    from mmrec.datasets import hm

    out.mkdir(parents=True, exist_ok=True)
    with open(hm_root / FILES[0], "rb") as f, gzip.open(out / f"{FILES[0]}.gz", "wb", 6) as g:
        shutil.copyfileobj(f, g)
    rows = pd.read_csv(hm_root / FILES[1], dtype=str)
    rank = {c: f"c{i:07d}" for i, c in enumerate(np.sort(rows.customer_id.unique()))}
    rows["customer_id"] = rows.customer_id.map(rank)
    with gzip.open(out / f"{FILES[1]}.gz", "wt", 6) as g:
        rows.to_csv(g, index=False)
    catalog, _ = hm.load(hm_root, transactions=False, images=True)
    text = bench.load_content(None, catalog, cache)
    save_file({"vectors": text.astype(np.float16)}, str(out / "minilm.safetensors"))
    (out / "minilm.json").write_text(json.dumps([str(i) for i in catalog.ids]))
    blobs, index, offset = [], [], 0
    for item, path in zip(catalog.ids, catalog.image_paths):
        if path is None:
            continue
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize(PHOTO_SIZE, Image.BICUBIC).save(buffer, "JPEG", quality=quality)
        blobs.append(buffer.getvalue())
        index.append([str(item), Path(path).relative_to(hm_root).as_posix(), offset, len(blobs[-1])])
        offset += len(blobs[-1])
    (out / "photos.bin").write_bytes(b"".join(blobs))
    (out / "photos.json.gz").write_bytes(gzip.compress(json.dumps(index).encode()))
    print(f"{len(index)} photos ({offset / 2**20:.1f} MiB), text {text.shape} -> {out}")


def pack_stream(hm_root: Path, out: Path, n_items: int, sessions: int, seed: int) -> None:
    """Write the packed sub-catalogue of a screen-stream benchmark (see the module docstring)."""
    import numpy as np
    import pandas as pd

    from mmrec.datasets import hm
    from mmrec.datasets.app_sim import catalog_for_sequences

    catalog, interactions = hm.load(hm_root)
    sub, _, _ = catalog_for_sequences(catalog, interactions, sessions, n_items, seed=seed)
    keep = set(str(i) for i in sub.ids)
    out.mkdir(parents=True, exist_ok=True)
    articles = pd.read_csv(hm_root / FILES[0], dtype=str, keep_default_na=False)
    with gzip.open(out / f"{FILES[0]}.gz", "wt", 6) as g:
        articles[articles.article_id.isin(keep)].to_csv(g, index=False)
    rows = pd.read_csv(hm_root / FILES[1], dtype=str)
    rows = rows[rows.article_id.isin(keep)]
    rank = {c: f"c{i:07d}" for i, c in enumerate(np.sort(rows.customer_id.unique()))}
    rows["customer_id"] = rows.customer_id.map(rank)
    with gzip.open(out / f"{FILES[1]}.gz", "wt", 6) as g:
        rows.to_csv(g, index=False)
    blobs, index, offset = [], [], 0
    for item, path in zip(sub.ids, sub.image_paths):
        blobs.append(Path(path).read_bytes())
        index.append([str(item), Path(path).relative_to(hm_root).as_posix(), offset, len(blobs[-1])])
        offset += len(blobs[-1])
    (out / "photos.bin").write_bytes(b"".join(blobs))
    (out / "photos.json.gz").write_bytes(gzip.compress(json.dumps(index).encode()))
    print(f"{len(index)} articles and photos ({offset / 2**20:.1f} MiB), {len(rows)} purchases -> {out}")


def unpack(packed: Path, out: Path) -> None:
    """Rebuild the Kaggle layout from a packed folder."""
    out.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        with gzip.open(packed / f"{name}.gz", "rb") as f, open(out / name, "wb") as g:
            shutil.copyfileobj(f, g)
    blob = (packed / "photos.bin").read_bytes()
    for _, relative, offset, length in json.loads(gzip.decompress((packed / "photos.json.gz").read_bytes())):
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob[offset:offset + length])
    print(f"unpacked {packed} -> {out}")


def main() -> None:
    """``pack`` or ``unpack`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--hm", type=Path, default=Path("../shared/data/hm"))
    p.add_argument("--cache", default="out/cache/minilm")
    p.add_argument("--out", type=Path, default=Path(".gpu"))
    p.add_argument("--quality", type=int, default=70, help="JPEG quality of the resized photos")
    p.add_argument("--stream-items", type=int, help="pack a screen-stream benchmark's sub-catalogue of this size")
    p.add_argument("--sessions", type=int, default=6, help="purchase sequences it is drawn for (--stream-items)")
    p.add_argument("--seed", type=int, default=0, help="its seed (--stream-items)")
    u = sub.add_parser("unpack")
    u.add_argument("--packed", type=Path, default=Path(".gpu"))
    u.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pack" and args.stream_items:
        pack_stream(args.hm.resolve(), args.out, args.stream_items, args.sessions, args.seed)
    elif args.command == "pack":
        pack(args.hm.resolve(), args.cache, args.out, args.quality)
    else:
        unpack(args.packed, args.out)


if __name__ == "__main__":
    main()
