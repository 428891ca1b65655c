"""Fusion of ranked result lists (hybrid search: late interaction + BM25).

Two methods, both over lists of integer ids (passage ids), each list best first:

* :func:`rrf`, reciprocal-rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009):
  ``score(d) = Σ_i w_i / (k + rank_i(d))`` with 1-based ranks; a list that does not hold ``d`` adds nothing.
  Only ranks matter, so lists of scores on different scales (MaxSim sums, BM25) combine without tuning.
* :func:`normalized_fusion`: each list's scores are min-max normalised to [0, 1] per query
  (``(s - min) / (max - min)``; every score 1.0 when all are equal, e.g. a one-item list), then
  ``score(d) = Σ_i w_i * norm_i(d)``; a list that does not hold ``d`` adds 0 (as if ``d`` were at that
  list's minimum).

:func:`fuse` is the hybrid entry point: ``alpha`` weighs late interaction against BM25 (``alpha`` for late,
``1 - alpha`` for BM25; RRF uses the weights ``2 * alpha`` and ``2 * (1 - alpha)``, so ``alpha = 0.5`` is
plain RRF). A list whose weight is 0 is left out entirely, so ``alpha=1`` ranks exactly as late
interaction and ``alpha=0`` exactly as BM25.

The defaults (:data:`DEFAULT_METHOD`, :data:`DEFAULT_ALPHA`) were chosen once for all collections from the
measurements of ``benchmarks/hybrid.py`` (``## Hybrid`` in ``benchmarks/RESULTS.md``), not tuned per
collection.

Common rules: an id repeated within one list counts once (its best rank, or its highest score); ties in
the fused score are broken by id ascending; fused scores are float64, ids int64; empty lists are fine
(all empty: empty result).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .validation import check_k

__all__ = ["rrf", "normalized_fusion", "fuse", "METHODS", "DEFAULT_METHOD", "DEFAULT_ALPHA", "RRF_K"]

METHODS = ("rrf", "normalized")
# From benchmarks/hybrid.py over SciFact, NPL, Cranfield and MEDLINE (MiniLM late interaction): normalised
# fusion at alpha 0.7 has the best mean nDCG@10 and beats the better of BM25 / late interaction on all four.
DEFAULT_METHOD = "normalized"
DEFAULT_ALPHA = 0.7
RRF_K = 60

Ranked = tuple[np.ndarray, np.ndarray]  # (scores, ids), one result list


def _ids(ids: np.ndarray | Sequence[int], what: str) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of ids (got shape {array.shape})")
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"{what} must hold integer ids (got dtype {array.dtype})")
    return array.astype(np.int64)


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    values = list(weights)
    if len(values) != n:
        raise ValueError(f"{len(values)} weights for {n} lists: give one weight per list")
    for w in values:
        if isinstance(w, bool) or not isinstance(w, (int, float, np.floating, np.integer)) or not 0 <= w < np.inf:
            raise ValueError(f"weights must be finite numbers >= 0 (got {w!r})")
    return [float(w) for w in values]


def _accumulate(ids_parts: list[np.ndarray], score_parts: list[np.ndarray]) -> Ranked:
    """Sum the scores of equal ids; sort by fused score descending, ties by id ascending."""
    if not ids_parts or not sum(len(p) for p in ids_parts):
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
    ids, inverse = np.unique(np.concatenate(ids_parts), return_inverse=True)
    scores = np.bincount(inverse.ravel(), weights=np.concatenate(score_parts), minlength=len(ids))
    order = np.lexsort((ids, -scores))
    return scores[order], ids[order]


def rrf(rankings: Sequence[np.ndarray | Sequence[int]], k: int = RRF_K, *,
        weights: Sequence[float] | None = None) -> Ranked:
    """Reciprocal-rank fusion of ranked id lists (each best first).

    Args:
        rankings: the lists to fuse; each a sequence of integer ids, best first.
        k: the RRF constant (60 in the original paper); larger values flatten the weight of top ranks.
        weights: one non-negative weight per list (default 1 each); a list of weight 0 is left out.

    Returns:
        ``(scores float64, ids int64)`` over every id of the lists with non-zero weight, best first.
    """
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)) or not 0 <= k < np.inf:
        raise ValueError(f"the RRF constant k must be a finite number >= 0 (got {k!r})")
    lists = [_ids(r, f"rankings[{i}]") for i, r in enumerate(rankings)]
    ids_parts, score_parts = [], []
    for ids, w in zip(lists, _weights(weights, len(lists)), strict=True):
        if w == 0 or not len(ids):
            continue
        unique, first = np.unique(ids, return_index=True)  # a repeated id keeps its best rank
        ids_parts.append(unique)
        score_parts.append(w / (k + first.astype(np.float64) + 1.0))
    return _accumulate(ids_parts, score_parts)


def normalized_fusion(results: Sequence[Ranked], weights: Sequence[float] | None = None) -> Ranked:
    """Min-max normalised score fusion of ``(scores, ids)`` lists (any order within a list).

    Args:
        results: the lists to fuse; each ``(scores, ids)`` of equal length, scores finite.
        weights: one non-negative weight per list (default 1 each); a list of weight 0 is left out.

    Returns:
        ``(scores float64, ids int64)`` over every id of the lists with non-zero weight, best first.
    """
    ids_parts, score_parts = [], []
    for i, (item, w) in enumerate(zip(results, _weights(weights, len(results)), strict=True)):
        scores, ids = _scored_list(item, i)
        if w == 0 or not len(ids):
            continue
        order = np.lexsort((-scores, ids))  # per id, its highest score first
        unique, first = np.unique(ids[order], return_index=True)
        best = scores[order][first]
        low, high = best.min(), best.max()
        norm = (best - low) / (high - low) if high > low else np.ones_like(best)
        ids_parts.append(unique)
        score_parts.append(w * norm)
    return _accumulate(ids_parts, score_parts)


def _scored_list(item: Ranked, i: int) -> Ranked:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise TypeError(f"results[{i}] must be a (scores, ids) pair")
    ids = _ids(item[1], f"results[{i}] ids")
    scores = np.asarray(item[0], dtype=np.float64)
    if scores.shape != ids.shape:
        raise ValueError(f"results[{i}]: {scores.shape[0] if scores.ndim else 0} scores for {len(ids)} ids")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"results[{i}] holds a non-finite score: scores must be finite numbers")
    return scores, ids


def fuse(late: Ranked, bm25: Ranked, *, method: str = DEFAULT_METHOD, alpha: float = DEFAULT_ALPHA,
         k: int | None = None, rrf_k: int = RRF_K) -> Ranked:
    """Hybrid fusion of one query's late-interaction and BM25 results.

    Args:
        late: ``(scores, pids)`` of late interaction, best first.
        bm25: ``(scores, pids)`` of BM25, best first.
        method: ``"rrf"`` (reciprocal-rank fusion) or ``"normalized"`` (min-max score fusion).
        alpha: weight of late interaction in [0, 1]; BM25 gets ``1 - alpha``.
        k: keep the best ``k`` (None: all fused ids).
        rrf_k: the RRF constant.

    Returns:
        ``(scores float64, pids int64)``, best first (ties by pid).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)} (got {method!r})")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1]: 1 is late interaction only, 0 BM25 only (got {alpha!r})")
    if k is not None:
        k = check_k(k)
    if method == "rrf":
        scores, ids = rrf([late[1], bm25[1]], rrf_k, weights=(2.0 * alpha, 2.0 * (1.0 - alpha)))
    else:
        scores, ids = normalized_fusion([late, bm25], weights=(alpha, 1.0 - alpha))
    return (scores, ids) if k is None else (scores[:k], ids[:k])
