"""Shared fixtures: where the real data lives, small deterministic interaction tables, the H&M article
header, a one-thread torch setting for modules of tiny models, and each pytest-xdist worker's share of
the cores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HM_ROOT = SHARED_DATA / "hm"
HM5CORE = HM_ROOT / "mmrec" / "hm5core"
# The column order of H&M's articles.csv, for tests that write small catalogs in its layout.
ARTICLE_HEADER = [
    "article_id", "product_code", "prod_name", "product_type_no", "product_type_name", "product_group_name",
    "graphical_appearance_no", "graphical_appearance_name", "colour_group_code", "colour_group_name",
    "perceived_colour_value_id", "perceived_colour_value_name", "perceived_colour_master_id",
    "perceived_colour_master_name", "department_no", "department_name", "index_code", "index_name",
    "index_group_no", "index_group_name", "section_no", "section_name", "garment_group_no", "garment_group_name",
    "detail_desc",
]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread avoids oversubscribing a shared machine's cores (use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hm_root() -> Path:
    """The real H&M data folder (tests that need it skip when it is absent)."""
    if not (HM_ROOT / "articles.csv").is_file():
        pytest.skip(f"real H&M data not found at {HM_ROOT}")
    return HM_ROOT


@pytest.fixture
def hm5core() -> Path:
    """The shared MMRec-format warm split."""
    if not (HM5CORE / "hm5core.inter").is_file():
        pytest.skip(f"hm5core split not found at {HM5CORE}")
    return HM5CORE


def random_interactions(n_users: int = 60, n_items: int = 40, per_user: int = 8, seed: int = 0):
    """Interactions with a little structure: users prefer one of four item blocks."""
    from mmrec import Interactions

    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        block = u % 4
        pool = np.arange(n_items)[np.arange(n_items) % 4 == block]
        chosen = rng.choice(pool, size=min(per_user, len(pool)), replace=False)
        users += [u] * len(chosen)
        items += list(chosen)
    return Interactions(np.array(users), np.array(items), [f"u{u}" for u in range(n_users)],
                        [f"i{i}" for i in range(n_items)], timestamps=np.arange(len(users)) + 1_600_000_000)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Every test starts with the thread count the session started with: an in-process CLI run or a tower
    test that sets it and fails to restore it would otherwise slow every later test (one thread on two cores)."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def pytest_configure(config):
    """Under pytest-xdist (``-n N``), each worker gets its share of the cores for torch and for the
    processes it starts: N workers each using every core would oversubscribe the machine."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        share = max(1, cores // workers)
        torch.set_num_threads(share)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(share)
