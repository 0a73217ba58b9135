"""One distribution, `mmrec`: encoders/fusion/datasets install as mmrec.* and never as top-level modules."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _probe(code: str, **env) -> str:
    # Run outside the repo so the working directory cannot put encoders/ etc. on sys.path.
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_installed_subpackages_and_no_top_level_names():
    code = ("import importlib.util as u, mmrec.encoders, mmrec.fusion, mmrec.datasets, mmrec;"
            "print(mmrec.encoders.__file__, mmrec.fusion.__file__, mmrec.datasets.__file__);"
            "print([n for n in ('encoders', 'fusion', 'datasets') if u.find_spec(n) is not None and "
            f"str(u.find_spec(n).origin).startswith({str(REPO)!r})])")
    files, leaked = _probe(code).splitlines()
    assert "encoders/__init__.py" in files and "fusion/__init__.py" in files and "datasets/__init__.py" in files
    assert leaked == "[]"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy of the sources so no build/ folder is left in (or reused from) the checkout.
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("mmrec", "encoders", "fusion", "datasets"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    if built.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{built.stdout}\n{built.stderr}")
    return next(out.glob("mmrec-*.whl"))


def test_wheel_holds_only_the_mmrec_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top <= {"mmrec", next(t for t in top if t.endswith(".dist-info"))}, top
    for sub in ("encoders", "fusion", "datasets"):
        assert f"mmrec/{sub}/__init__.py" in names
    assert not any(n.endswith((".jpg", ".csv", ".inter", ".npy")) for n in names)


def test_regular_install_imports_subpackages(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    code = ("import mmrec, mmrec.encoders, mmrec.fusion, mmrec.datasets, mmrec.fusion.baselines, mmrec.cli;"
            "print(mmrec.__file__); print(mmrec.datasets.__file__)")
    lines = _probe(code, PYTHONPATH=str(target)).splitlines()
    assert all(line.startswith(str(target)) for line in lines), lines
