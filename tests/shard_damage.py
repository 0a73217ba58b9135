"""Damage inside a written shard: the writer never stores an image that does not decode, so tests of the
readers' skips break one after writing."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path


def damage_image(shard: Path, key: str) -> None:
    """Rewrite ``shard`` with the image of sample ``key`` cut to a broken JPEG."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name == f"{key}.jpg":
                data = b"\xff\xd8\xff" + b"\x00" * 50
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
