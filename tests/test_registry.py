"""One registry shape: a decorator fills the table, names are discovered by importing the packages'
modules (no hand-kept list), unknown and doubly registered names are errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mmrec.registry import Registry


def test_register_get_and_errors():
    reg: Registry[type] = Registry("widget")

    @reg.register("a")
    class A:
        pass

    assert reg.get("a") is A and "a" in reg and reg.names() == ["a"]
    with pytest.raises(ValueError, match=r"unknown widget 'b'; known: \['a'\]"):
        reg.get("b")

    class B:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", B)


def test_every_model_is_discovered_in_a_fresh_process():
    """In a fresh interpreter nothing has imported the model modules: the registry finds them itself."""
    code = ("from mmrec.recommender import registered_models, create_model\n"
            "names = registered_models()\n"
            "create_model('lightgcn', 3, 4)\n"
            "print(' '.join(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    names = out.stdout.split()
    for name in ("most_popular", "itemknn", "bpr", "lightgcn", "vae_fusion", "vbpr", "clcrec", "dropoutnet",
                 "content_knn", "sasrec"):
        assert name in names


def test_encoder_families_share_the_shape():
    from mmrec.encoders.registry import FAMILIES

    assert {"openclip", "timm", "hf"} <= set(FAMILIES.names())
