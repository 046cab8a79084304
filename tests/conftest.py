"""Shared fixtures: an isolated cache root per test session, and the shared Beauty data path."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BEAUTY = REPO.parent / "shared" / "data" / "amazon-beauty"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test session gets its own cache root (unless QBERT4REC_CACHE is set by the caller), one for all the
    pytest-xdist workers of the session: what two test files need (the default catalog, its features, semantic IDs)
    is built once -- a worker that needs an artifact another is building waits on the cache's build lock, then loads
    it. Tests that count builds use a ``tmp_path`` cache of their own."""
    if "QBERT4REC_TEST_KEEP_CACHE" in os.environ:
        yield
        return
    old = os.environ.get("QBERT4REC_CACHE")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # workers' base temps are <session temp>/popen-gwN
        root = tmp_path_factory.getbasetemp().parent / "qbert4rec_cache"
        root.mkdir(exist_ok=True)
    else:
        root = tmp_path_factory.mktemp("qbert4rec_cache")
    os.environ["QBERT4REC_CACHE"] = str(root)
    yield
    if old is None:
        os.environ.pop("QBERT4REC_CACHE", None)
    else:
        os.environ["QBERT4REC_CACHE"] = old


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests train tiny models: one thread is faster and steadier on a shared 2-core machine; restored after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def beauty_path() -> Path:
    if not (BEAUTY / "user_sequence.txt").is_file():
        pytest.skip(f"Amazon Beauty data not found at {BEAUTY}")
    return BEAUTY
