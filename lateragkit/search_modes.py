"""Search modes of the facade: late interaction, BM25, and the two fused (hybrid).

Hybrid search asks each side for its ``hybrid_depth(k)`` best passages and fuses the two rankings with
:func:`lateragkit.fusion.fuse`: min-max normalised score fusion by default (``fusion="normalized"``,
``alpha=0.7``: ``0.7·late + 0.3·bm25``, chosen once for all collections in ``benchmarks/hybrid.py``) or
reciprocal-rank fusion (``fusion="rrf"``); ``alpha`` weighs late interaction against BM25 (1 is late
interaction only, 0 BM25 only). A fused result's ``score`` is the fused value (comparable within one
query), not a MaxSim sum.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from .fusion import DEFAULT_ALPHA, DEFAULT_METHOD, fuse

__all__ = ["SearchMode", "hybrid_depth", "fuse_hits", "HYBRID_MIN_DEPTH"]

SearchMode = Literal["late", "bm25", "hybrid"]
# Candidates taken from each side before fusing (at least this many, or k when larger).
HYBRID_MIN_DEPTH = 100

Hits = list[tuple[np.ndarray, np.ndarray]]


def hybrid_depth(k: int) -> int:
    return max(int(k), HYBRID_MIN_DEPTH)


def fuse_hits(late: Hits, bm25: Hits, k: int, *, alpha: float | None = None, fusion: str | None = None) -> Hits:
    """Fuse per-query `(scores, pids)` rankings of both sides into the top ``k`` per query."""
    method = DEFAULT_METHOD if fusion is None else fusion
    weight = DEFAULT_ALPHA if alpha is None else alpha
    out: Hits = []
    for late_q, bm25_q in zip(late, bm25, strict=True):
        scores, pids = fuse(late_q, bm25_q, method=method, alpha=weight, k=k)
        out.append((scores.astype(np.float32), pids.astype(np.int64)))
    return out
