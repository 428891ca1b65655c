"""Centroid training and assignment for the PLAID codec.

`train_centroids` runs Lloyd's k-means (faiss when installed, GPU when faiss-gpu and CUDA exist; a torch
implementation otherwise). When a flat k-means would cost too much on CPU (PLAID's K ≈ 16·sqrt(tokens)
centroids are thousands), it trains two levels: ~sqrt(K) coarse clusters, then each coarse cluster's
points are split into its share of the K centroids, then a few Lloyd steps over all K centroids (points
assigned by probing) let centroids trade points across the coarse cells. `CentroidAssigner` finds each
vector's code — exactly (argmax of the inner product) on an accelerator or for small K, and on CPU for
large K by probing the nearest coarse cells of a grouping of the centroids, which costs ~K/probe_fraction
fewer dot products and almost always returns the exact argmax (recall is measured by the benchmark).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["train_centroids", "CentroidAssigner"]

MAX_POINTS_PER_CENTROID = 256
# Above this many multiply-adds a flat k-means on CPU is replaced by the two-level one.
FLAT_KMEANS_BUDGET = 2e10
# Above this many centroids CPU assignment probes coarse cells instead of scoring every centroid.
EXACT_ASSIGN_MAX_K = 4096
ASSIGN_BATCH = 1 << 15
# Coarse cells a vector probes when assigned on CPU (of ~sqrt(K)): on SciFact/MiniLM (K=16,384, 128 cells) 4
# found the best centroid for 96.0 % of held-out tokens, 8 for 98.5 % (at 1.8x the time), 16 for 99.6 % (3.1x).
ASSIGN_PROBE = 8
# Lloyd steps over all K centroids at once after the two-level k-means, points assigned by probing: they let
# centroids trade points across the coarse cells the two levels fixed. SciFact/MiniLM: mean cosine of held-out
# tokens to their nearest centroid 0.818 -> 0.828 with 2 steps (0.831 with 4); of indexed tokens to their
# assigned centroid (benchmarks/peers.py) 0.821 -> 0.835, against 0.837 for a flat k-means with exact
# assignment (a 16x slower build) and 0.840 for fast-plaid's flat k-means on all tokens.
REFINE_NITER = 2

try:  # faiss is a dependency, but the torch path keeps the index usable without it
    import faiss
except ImportError:  # pragma: no cover - exercised only where faiss is missing
    faiss = None  # type: ignore[assignment]


# Below this many multiply-adds a k-means runs on one thread: thread start-up and spinning cost more
# than they save, and much more on a busy machine.
SMALL_WORK = 5e7


@contextmanager
def _one_thread(enabled: bool = True) -> Iterator[None]:
    if not enabled:
        yield
        return
    torch_threads = torch.get_num_threads()
    faiss_threads = faiss.omp_get_max_threads() if faiss is not None else None
    torch.set_num_threads(1)
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        if faiss is not None and faiss_threads is not None:
            faiss.omp_set_num_threads(faiss_threads)


def _faiss_gpus() -> int:
    if faiss is None or not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # pragma: no cover
        return 0


def _lloyd_torch(x: torch.Tensor, k: int, niter: int, seed: int) -> torch.Tensor:
    """Plain (L2) Lloyd iterations in torch; empty clusters are re-seeded with random points."""
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    C = x[torch.randperm(n, generator=gen)[:k].to(x.device)].clone()
    for _ in range(niter):
        assign = _nearest_l2(x, C)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(C).index_add_(0, assign, x)
        nonempty = counts > 0
        C[nonempty] = sums[nonempty] / counts[nonempty, None].to(C.dtype)
        empty = int((~nonempty).sum())
        if empty:
            C[~nonempty] = x[torch.randint(0, n, (empty,), generator=gen).to(x.device)]
    return C


def _batch_rows(k: int) -> int:
    # rows per block so that the [rows, k] score block stays near 2^27 entries (512 MB in float32)
    return max(1024, min(ASSIGN_BATCH, (1 << 27) // max(1, k)))


def _nearest_l2(x: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    half_norms = 0.5 * (C * C).sum(1)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    step = _batch_rows(C.shape[0])
    for s in range(0, x.shape[0], step):
        out[s : s + step] = (x[s : s + step] @ C.T - half_norms).argmax(1)
    return out


def _flat_kmeans(x: np.ndarray, k: int, *, niter: int, seed: int, device: torch.device) -> np.ndarray:
    """k-means of float32 `x [n, d]` into `k <= n` centroids (unnormalised)."""
    n, d = x.shape
    if k >= n:
        return x[:k].copy()
    if n > MAX_POINTS_PER_CENTROID * k:  # the faiss default subsampling, done here for both paths
        x = x[np.random.default_rng(seed).choice(n, MAX_POINTS_PER_CENTROID * k, replace=False)]
    if k == 1:
        return x.mean(0, keepdims=True)
    use_gpu = device.type == "cuda" and _faiss_gpus() > 0
    small = device.type == "cpu" and float(x.shape[0]) * k * d < SMALL_WORK
    with _one_thread(small):
        if faiss is not None and (device.type == "cpu" or use_gpu):
            km = faiss.Kmeans(
                d, k, niter=niter, seed=seed, gpu=use_gpu, verbose=False,
                max_points_per_centroid=MAX_POINTS_PER_CENTROID, min_points_per_centroid=1,
            )
            km.train(np.ascontiguousarray(x, dtype=np.float32))
            return np.asarray(km.centroids, dtype=np.float32)
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        return _lloyd_torch(xt, k, niter, seed).float().cpu().numpy()


def _allocate(counts: np.ndarray, k: int) -> np.ndarray:
    """Split `k` centroids over cells proportionally to their point counts (>= 1 each, <= points)."""
    total = int(counts.sum())
    share = counts * (k / max(total, 1))
    alloc = np.minimum(np.maximum(np.floor(share).astype(np.int64), (counts > 0).astype(np.int64)), counts)
    left = k - int(alloc.sum())
    if left > 0:
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        while left > 0:
            room = order[alloc[order] < counts[order]]
            if room.size == 0:
                break
            take = room[:left]
            alloc[take] += 1
            left -= take.size
    elif left < 0:  # the ">= 1" floor overshot: take back from the largest allocations
        for i in np.argsort(-alloc, kind="stable"):
            while left < 0 and alloc[i] > 1:
                alloc[i] -= 1
                left += 1
    return alloc


def train_centroids(
    x: np.ndarray, k: int, *, niter: int = 10, seed: int = 0, device: torch.device | str = "cpu"
) -> np.ndarray:
    """L2-normalised float32 centroids `[k', d]` (k' <= k, = k unless some data is duplicated away)."""
    device = torch.device(device)
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    k = max(1, min(int(k), n))
    flat_cost = float(min(n, MAX_POINTS_PER_CENTROID * k)) * k * d * niter
    if device.type == "cuda" or flat_cost <= FLAT_KMEANS_BUDGET or k < 64:
        C = _flat_kmeans(x, k, niter=niter, seed=seed, device=device)
    else:
        kc = max(2, int(round(math.sqrt(k))))
        coarse = _flat_kmeans(x, kc, niter=niter, seed=seed, device=device)
        cell = _nearest_l2(torch.from_numpy(x), torch.from_numpy(coarse)).numpy()
        counts = np.bincount(cell, minlength=kc)
        alloc = _allocate(counts, k)
        order = np.argsort(cell, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(counts)])
        parts = []
        for c in range(kc):
            if alloc[c] == 0:
                continue
            pts = x[order[bounds[c] : bounds[c + 1]]]
            parts.append(_flat_kmeans(pts, int(alloc[c]), niter=niter, seed=seed + 1 + c, device=device))
        C = _refine(x, np.concatenate(parts), REFINE_NITER, seed)
        logger.debug("two-level k-means: %d coarse cells, %d centroids", kc, C.shape[0])
    norms = np.linalg.norm(C, axis=1, keepdims=True)
    return (C / np.maximum(norms, 1e-12)).astype(np.float32)


def _refine(x: np.ndarray, C: np.ndarray, niter: int, seed: int) -> np.ndarray:
    """``niter`` Lloyd steps of the centroids ``C`` (normalised first) over all of ``x``, by the rule codes are
    assigned with (the largest inner product, found by probing `CentroidAssigner`): each centroid moves to the
    normalised mean of its points (one without points stays). The coarse grouping is found once and reused."""
    xt = torch.from_numpy(x)
    Ct = torch.nn.functional.normalize(torch.from_numpy(C), dim=1)
    coarse: np.ndarray | None = None
    for _ in range(niter):
        assigner = CentroidAssigner(Ct, exact=False, seed=seed, coarse=coarse)
        coarse = assigner.coarse
        codes = assigner.assign(xt)
        sums = torch.zeros_like(Ct).index_add_(0, codes, xt)
        has = torch.bincount(codes, minlength=Ct.shape[0]) > 0
        Ct[has] = torch.nn.functional.normalize(sums[has], dim=1)
    return Ct.numpy()


class CentroidAssigner:
    """Nearest centroid (max inner product) of each vector: `assign(x) -> int64 codes`."""

    def __init__(
        self,
        centroids: torch.Tensor,
        *,
        probe: int = ASSIGN_PROBE,
        exact: bool | None = None,
        seed: int = 0,
        coarse: np.ndarray | None = None,
    ) -> None:
        """``coarse``: the grouping's cell centres (float32 [G, dim]) from an earlier assigner of the same
        centroids (`self.coarse`), which skips the k-means that finds them; ignored when ``exact``."""
        self.centroids = centroids.float()
        self.device = centroids.device
        K = int(centroids.shape[0])
        if exact is None:
            exact = self.device.type == "cuda" or K <= EXACT_ASSIGN_MAX_K
        self.exact = exact
        self.coarse: np.ndarray | None = None
        if not exact:
            # Group the centroids into ~sqrt(K) cells; a vector scores only the centroids of the `probe`
            # cells whose means are closest to it.
            if coarse is None:
                kc = max(2, int(round(math.sqrt(K))))
                coarse = _flat_kmeans(self.centroids.cpu().numpy(), kc, niter=10, seed=seed, device=torch.device("cpu"))
            self.coarse = np.ascontiguousarray(coarse, dtype=np.float32)
            kc = int(self.coarse.shape[0])
            coarse_t = torch.from_numpy(self.coarse).to(self.device)
            cell = _nearest_l2(self.centroids, coarse_t)
            order = torch.argsort(cell, stable=True)
            counts = torch.bincount(cell, minlength=kc)
            self._coarse = torch.nn.functional.normalize(coarse_t, dim=-1)
            self._perm = order
            self._sorted = self.centroids[order].contiguous()
            self._bounds = [0] + torch.cumsum(counts, 0).tolist()
            self._probe = min(probe, kc)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.centroids.dtype)
        out = torch.empty(x.shape[0], dtype=torch.int64, device=self.device)
        step = _batch_rows(self.centroids.shape[0]) if self.exact else ASSIGN_BATCH
        for s in range(0, x.shape[0], step):
            block = x[s : s + step]
            out[s : s + block.shape[0]] = self._assign_exact(block) if self.exact else self._assign_probe(block)
        return out

    def _assign_exact(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.centroids.T).argmax(1)

    def _assign_probe(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        cells = (x @ self._coarse.T).topk(self._probe, dim=1).indices.reshape(-1)
        order = torch.argsort(cells, stable=True)
        tok = order // self._probe
        counts = torch.bincount(cells, minlength=len(self._bounds) - 1).tolist()
        best = torch.full((n,), float("-inf"), device=self.device)
        code = torch.zeros(n, dtype=torch.int64, device=self.device)
        per_cell = n * self._probe / max(1, len(counts)) * (self.centroids.shape[0] / max(1, len(counts)))
        small = self.device.type == "cpu" and per_cell * x.shape[1] < SMALL_WORK
        pos = 0
        with _one_thread(small):
            for c, cnt in enumerate(counts):
                if cnt == 0:
                    continue
                t = tok[pos : pos + cnt]
                pos += cnt
                lo, hi = self._bounds[c], self._bounds[c + 1]
                if hi == lo:
                    continue
                vals, arg = (x[t] @ self._sorted[lo:hi].T).max(1)
                better = vals > best[t]
                tb = t[better]
                best[tb] = vals[better]
                code[tb] = self._perm[lo + arg[better]]
        return code
