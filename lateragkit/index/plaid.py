"""PLAID index: ColBERTv2 residual compression searched in PLAID's four stages.

Files (besides the common ``metadata.json``, ``doclens.npy``, ``pids.npy``, ``deleted.npy``):
``centroids.npy`` (float16 [K, dim], unit norm), ``bucket_cutoffs.npy`` / ``bucket_weights.npy``
(float32), ``codes.npy`` (int16 when K <= 32,768, else int32, one per token), ``residuals.npy``
(uint8 [N_tokens, dim*nbits/8], colbert-ai bit layout), ``ivf_rows.npy`` (int16 when there are at most
32,768 rows, else int32) + ``ivf_offsets.npy`` (int64 [K+1]): for each centroid the sorted unique rows
having a token with that code (CSR).

The number of centroids K is colbert-ai's 2^floor(log2(16·sqrt(tokens))): see `num_partitions`.

Search per query (all vectorised torch, the same code on CPU and CUDA):
1. score every centroid against the query tokens; the top ``ncells`` per token give IVF lists → candidates;
2. approximate score from the centroids of each candidate's tokens, only centroids whose best query
   score reaches ``centroid_score_threshold``; keep ``ndocs``;
3. the same with every centroid; keep ``ndocs // 4`` (at least ``k``);
4. decompress those passages and score them exactly with `scoring.maxsim`.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import scoring
from ..exceptions import CorruptIndexError
from .base import (
    Batches,
    PassageIndex,
    SearchResult,
    as_tensor,
    iter_packed,
    prepare_dir,
    token_ranges,
    write_common,
)
from .codec import ResidualCodec, check_nbits, quantile_buckets
from .exact import _ranges, _row_blocks
from .kmeans import CentroidAssigner, train_centroids
from .storage import NpyAppender, load_npy, save_npy

logger = logging.getLogger(__name__)

__all__ = ["PlaidIndex", "build_plaid", "plaid_params", "DEFAULT_NBITS", "check_nbits", "build_ivf"]

DEFAULT_NBITS = 2
CENTROIDS_PER_SQRT_TOKEN = 16
KMEANS_NITER = 4
HELDOUT_FRACTION = 0.05
HELDOUT_MAX = 50_000
# k-means training vectors are held as float32: cap their memory.
TRAIN_BYTES = 1 << 30
COMPRESS_TOKENS = 1 << 15
# Tokens whose residual norm exceeds this percentile of the held-out norms count as outliers on add.
CLUSTER_THRESHOLD_PERCENTILE = 75
# add(): new centroids are trained when at least this share of the new tokens are outliers
# (by construction about 25 % of in-distribution tokens are) and there are at least OUTLIER_MIN of them.
OUTLIER_FRACTION = 0.5
OUTLIER_MIN = 32
# Tokens gathered per step in the centroid-interaction stages (bounds the [tokens, Lq] score block).
STAGE_TOKENS = 1 << 18
# Tokens decompressed at once in the exact stage (float32: 65,536 x dim 384 = 100 MB).
EXACT_TOKENS = 1 << 16
DEFAULT_MAX_EXACT_SUBSET = 1024


def plaid_params(k: int, params: dict[str, Any]) -> tuple[int, float, int, int]:
    """`(ncells, centroid_score_threshold, ndocs, max_exact_subset)` for this call (never sticky).

    Starts from colbert-ai's table by k (k<=10: 1, 0.5, 256; k<=100: 2, 0.45, 1024; else 4, 0.4,
    max(4k, 4096)), tuned on SciFact/MiniLM and synthetic data (benchmarks/search.py): probing 4 cells per
    query token is cheap and recovers passages whose tokens fell into a neighbouring centroid (1 cell
    missed ~20 % of the top 10 on clustered data), and for k<=10 exactly scoring 32 passages instead of
    64 halves the latency at the same nDCG@10. Each value is overridable; ``ndocs`` grows so that
    ``ndocs // 4 >= k``.
    """
    if k <= 10:
        ncells, thr, ndocs = 4, 0.5, 128
    elif k <= 100:
        ncells, thr, ndocs = 4, 0.45, 1024
    else:
        ncells, thr, ndocs = 4, 0.4, max(k * 4, 4096)
    ncells = int(params.get("ncells", ncells))
    thr = float(params.get("centroid_score_threshold", thr))
    ndocs = int(params.get("ndocs", ndocs))
    max_exact = int(params.get("max_exact_subset", DEFAULT_MAX_EXACT_SUBSET))
    if ncells < 1 or ndocs < 1:
        raise ValueError(f"ncells and ndocs must be positive (got ncells={ncells}, ndocs={ndocs})")
    return ncells, thr, max(ndocs, 4 * k), max_exact


class PlaidIndex(PassageIndex):
    kind = "plaid"
    _DATA_FILES = (
        "centroids.npy",
        "bucket_cutoffs.npy",
        "bucket_weights.npy",
        "codes.npy",
        "residuals.npy",
        "ivf_rows.npy",
        "ivf_offsets.npy",
    )

    def __init__(self, directory: Path, meta: dict[str, Any], device: torch.device) -> None:
        super().__init__(directory, meta, device)
        d = self.directory
        self.nbits = check_nbits(int(meta["nbits"]), self.dim)
        K = int(meta["num_centroids"])
        self.num_centroids = K
        B = 1 << self.nbits
        self.centroids = load_npy(d / "centroids.npy", dtype=np.float16, shape=(K, self.dim), mmap=False)
        cutoffs = load_npy(d / "bucket_cutoffs.npy", dtype=np.float32, shape=(B - 1,), mmap=False)
        weights = load_npy(d / "bucket_weights.npy", dtype=np.float32, shape=(B,), mmap=False)
        code_dtype = id_dtype(K)
        self.codes = load_npy(d / "codes.npy", dtype=code_dtype, shape=(self.num_tokens,))
        self.residuals = load_npy(
            d / "residuals.npy", dtype=np.uint8, shape=(self.num_tokens, self.dim * self.nbits // 8)
        )
        self.ivf_offsets = load_npy(d / "ivf_offsets.npy", dtype=np.int64, shape=(K + 1,), mmap=False)
        # int32 is always read (indexes written before row ids were narrowed); int16 only where it fits
        rows_dtypes = (np.int16, np.int32) if id_dtype(self.num_rows) == np.int16 else (np.int32,)
        self.ivf_rows = load_npy(d / "ivf_rows.npy", dtype=rows_dtypes, shape=(None,))
        if (
            int(self.ivf_offsets[0]) != 0
            or int(self.ivf_offsets[-1]) != self.ivf_rows.shape[0]
            or np.any(np.diff(self.ivf_offsets) < 0)
        ):
            raise CorruptIndexError(f"{d / 'ivf_offsets.npy'} does not match ivf_rows.npy; the index must be rebuilt")
        if self.num_tokens and (int(self.codes.max()) >= K or int(self.codes.min()) < 0):
            raise CorruptIndexError(f"{d / 'codes.npy'} holds codes outside [0, {K}); the index must be rebuilt")
        if self.ivf_rows.shape[0] and int(self.ivf_rows.max()) >= self.num_rows:
            raise CorruptIndexError(f"{d / 'ivf_rows.npy'} points past the last row; the index must be rebuilt")
        if not np.all(np.isfinite(self.centroids)) or not np.all(np.isfinite(weights)):
            raise CorruptIndexError(f"{d / 'centroids.npy'} or bucket_weights.npy holds non-finite values; rebuild")
        self.codec = ResidualCodec(self.centroids, cutoffs, weights, self.nbits, device)
        dev = device
        # CPU: views over the memory maps (pages load on demand); accelerator: resident copies.
        self._codes = as_tensor(self.codes, dev)
        self._residuals = as_tensor(self.residuals, dev)
        self._ivf_rows = as_tensor(self.ivf_rows, dev)
        self._ivf_offsets = torch.from_numpy(self.ivf_offsets).to(dev)
        self._tok_offsets = torch.from_numpy(self.tok_offsets[:-1].copy()).to(dev)
        self._doclens = torch.from_numpy(self.doclens.copy()).to(dev)
        self._live = torch.from_numpy(~self.deleted).to(dev)

    @property
    def cluster_threshold(self) -> float:
        return float(self.meta["cluster_threshold"])

    # ---- search -----------------------------------------------------------------------------------
    def _search_rows(
        self,
        Q: torch.Tensor,
        Q_mask: torch.Tensor,
        k: int,
        allowed: list[np.ndarray | None],
        params: dict[str, Any],
    ) -> list[SearchResult]:
        ncells, thr, ndocs, max_exact = plaid_params(k, params)
        dev, cdt = self.device, self.codec.dtype
        Qd = Q.to(dev, cdt)
        Qm = Q_mask.to(dev)
        # centroid scores of every scored query token of the batch in one GEMM: [tokens, K]
        Q_scored = Qd[Qm]
        S_all = Q_scored @ self.codec.centroids.T
        counts = Qm.sum(1).tolist()
        out: list[SearchResult] = []
        start = 0
        for i, lq in enumerate(counts):
            S_q = S_all[start : start + lq]  # [lq, K]
            q = Q_scored[start : start + lq][None]
            start += lq
            sub = allowed[i]
            if lq == 0 or self.num_passages == 0 or (sub is not None and sub.size == 0):
                out.append((np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)))
                continue
            rows = self._candidates(S_q, k, ncells, ndocs, thr, sub, max_exact)
            qm = torch.ones(1, lq, dtype=torch.bool, device=dev)
            scores = self._exact_scores(q, qm, rows)
            out.append(self._results(scores[0], rows.cpu().numpy(), k))
        return out

    def _candidates(
        self,
        S_q: torch.Tensor,
        k: int,
        ncells: int,
        ndocs: int,
        thr: float,
        subset: np.ndarray | None,
        max_exact: int,
    ) -> torch.Tensor:
        """Rows that reach the exact stage (stages 1-3)."""
        dev = self.device
        sub_t = None if subset is None else torch.from_numpy(subset).to(dev)
        if sub_t is not None and sub_t.numel() <= max_exact:
            return sub_t  # a small subset is scored exactly, no approximation at all
        K = self.num_centroids
        while True:  # stage 1: union of the IVF lists of each query token's `ncells` best centroids
            cells = torch.topk(S_q, min(ncells, K), dim=1).indices.reshape(-1).unique()
            starts = self._ivf_offsets[cells]
            idx, _ = token_ranges(starts, self._ivf_offsets[cells + 1] - starts)
            rows = self._ivf_rows[idx].long().unique()
            rows = rows[self._live[rows]]
            if sub_t is not None:
                rows = rows[torch.isin(rows, sub_t)]
                break  # too few candidates in the subset are handled below
            # fewer candidates than k (a large k, a small collection): probe more cells
            if rows.numel() >= min(k, self.num_passages) or ncells >= K:
                break
            ncells = min(K, ncells * 2)
        if sub_t is not None and rows.numel() < min(max(ndocs // 4, k), sub_t.numel()):
            # the probed lists hold too little of the subset to fill the exact stage: rank all of it
            rows = sub_t
        S_T = S_q.T.contiguous()  # [K, lq]: one row per centroid for the gathers
        if rows.numel() > ndocs:  # stage 2: pruned centroid interaction
            approx = self._pruned_interaction(rows, S_T, S_q.amax(0) >= thr)
            rows = rows[torch.topk(approx, ndocs).indices]
        final = max(ndocs // 4, k)
        if rows.numel() > final:  # stage 3: full centroid interaction
            approx = self._centroid_interaction(rows, S_T)
            rows = rows[torch.topk(approx, final).indices]
        return rows

    def _pruned_interaction(self, rows: torch.Tensor, S_T: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Stage 2: Σ_q max(0, max over the kept centroids among each passage's codes of their score).

        Computed from the IVF side: only the kept centroids (those some query token scores at least the
        threshold with, typically a few dozen) contribute, so walking their inverted lists touches a few
        thousand (centroid, passage) pairs instead of every token of every candidate (about a million on
        SciFact). The result is the same as scanning the candidates' codes.
        """
        dev, lq = self.device, S_T.shape[1]
        out = torch.zeros(rows.numel(), lq, dtype=S_T.dtype, device=dev)
        kept = keep.nonzero().squeeze(1)
        if kept.numel():
            starts = self._ivf_offsets[kept]
            idx, which = token_ranges(starts, self._ivf_offsets[kept + 1] - starts)
            listed = self._ivf_rows[idx].long()
            # position of each listed row among the candidates (rows need not be sorted)
            sorted_rows, order = torch.sort(rows)
            at = torch.searchsorted(sorted_rows, listed).clamp_max(rows.numel() - 1)
            hit = sorted_rows[at] == listed
            pos, which = order[at[hit]], which[hit]
            out.scatter_reduce_(0, pos[:, None].expand(-1, lq), S_T[kept[which]], reduce="amax", include_self=True)
        return out.float().sum(1)

    def _centroid_interaction(self, rows: torch.Tensor, S_T: torch.Tensor) -> torch.Tensor:
        """Stage 3: Σ_q max over each passage's tokens of the centroid score of the token's code."""
        lq = S_T.shape[1]
        lens = self._doclens[rows]
        out = torch.empty(rows.numel(), dtype=torch.float32, device=self.device)
        for start, end in scoring.document_blocks(lens, STAGE_TOKENS):
            blk = rows[start:end]
            tok, doc = token_ranges(self._tok_offsets[blk], lens[start:end])
            codes = self._codes[tok].long()
            best = torch.full((end - start, lq), float("-inf"), dtype=S_T.dtype, device=self.device)
            best.scatter_reduce_(0, doc[:, None].expand(-1, lq), S_T[codes], reduce="amax", include_self=True)
            out[start:end] = best.float().sum(1)
        return out

    def decompress_rows(self, rows: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Decompressed vectors of the passages at ``rows`` (packed) and their lengths."""
        rows = torch.as_tensor(rows).to(self.device).long()
        lens = self._doclens[rows]
        tok, _ = token_ranges(self._tok_offsets[rows], lens)
        return self.codec.decompress(self._codes[tok], self._residuals[tok]), lens

    def _exact_scores(self, Q: torch.Tensor, Q_mask: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Stage 4: MaxSim over decompressed vectors, decompressing at most ~EXACT_TOKENS tokens at a time
        (a large k sends thousands of passages here; all of them at once would take GBs)."""
        out = torch.zeros(Q.shape[0], rows.numel(), dtype=torch.float32, device=Q.device)
        if rows.numel() == 0:
            return out
        for start, end in scoring.document_blocks(self._doclens[rows], EXACT_TOKENS):
            vecs, lens = self.decompress_rows(rows[start:end])
            out[:, start:end] = scoring.maxsim(Q, Q_mask, vecs, lens.cpu())
        return out

    # ---- updates ----------------------------------------------------------------------------------
    def add(self, directory: str | Path, batches: Batches) -> tuple[PlaidIndex, np.ndarray]:
        """Append passages compressed with this index's codec; outlier-heavy additions get new centroids."""
        directory = prepare_dir(directory)
        spill = directory / ".spill-vectors.npy"
        try:
            lens_list = []
            with NpyAppender(spill, np.float16, (self.dim,)) as out:
                for vecs, lens in iter_packed(batches, self.dim):
                    out.append(vecs)
                    lens_list.append(lens)
            new_lens = np.concatenate(lens_list) if lens_list else np.zeros(0, dtype=np.int64)
            new_vecs = np.load(spill, mmap_mode="r", allow_pickle=False)
            centroids = self.centroids
            assigner = CentroidAssigner(self.codec.centroids.float())
            # which new tokens does the current codebook fit badly?
            outlier_idx = []
            for s in range(0, new_vecs.shape[0], COMPRESS_TOKENS):
                x = torch.from_numpy(np.asarray(new_vecs[s : s + COMPRESS_TOKENS], dtype=np.float32)).to(self.device)
                codes = assigner.assign(x)
                norms = (x - self.codec.centroids[codes].float()).norm(dim=1)
                outlier_idx.append(s + np.flatnonzero((norms > self.cluster_threshold).cpu().numpy()))
            outliers = np.concatenate(outlier_idx) if outlier_idx else np.zeros(0, dtype=np.int64)
            n_tok = int(new_vecs.shape[0])
            expanded = 0
            if outliers.size >= OUTLIER_MIN and outliers.size >= OUTLIER_FRACTION * n_tok:
                # as many centroids per outlier as the index has per token (at least fast-plaid's 1 per 64)
                density = self.num_centroids / max(1, self.num_tokens)
                k_new = min(int(outliers.size), max(4 * math.ceil(outliers.size / 256),
                                                    math.ceil(outliers.size * density)))
                pts = np.asarray(new_vecs[outliers[: 256 * k_new]], dtype=np.float32)
                seed = int(self.meta.get("seed", 0)) + self.num_centroids
                extra = train_centroids(pts, k_new, niter=KMEANS_NITER, seed=seed, device=self.device)
                centroids = np.concatenate([self.centroids, extra.astype(np.float16)])
                expanded = int(extra.shape[0])
                logger.info(
                    "add: %d of %d new tokens (%.0f%%) are far from every centroid; appended %d centroids",
                    outliers.size, n_tok, 100 * outliers.size / max(n_tok, 1), expanded,
                )
            K = int(centroids.shape[0])
            codec = ResidualCodec(centroids, self.codec.cutoffs.cpu().numpy(), self.codec.weights.cpu().numpy(),
                                  self.nbits, self.device)
            if expanded:
                assigner = CentroidAssigner(codec.centroids.float())
            code_dtype = id_dtype(K)
            with NpyAppender(directory / "codes.npy", code_dtype) as c_out, NpyAppender(
                directory / "residuals.npy", np.uint8, (self.residuals.shape[1],)
            ) as r_out:
                for s in range(0, self.num_tokens, 1 << 20):
                    c_out.append(np.asarray(self.codes[s : s + (1 << 20)]).astype(code_dtype))
                    r_out.append(self.residuals[s : s + (1 << 20)])
                for s in range(0, n_tok, COMPRESS_TOKENS):
                    x = torch.from_numpy(np.asarray(new_vecs[s : s + COMPRESS_TOKENS], dtype=np.float32))
                    x = x.to(self.device)
                    codes = assigner.assign(x)
                    c_out.append(codes.cpu().numpy().astype(code_dtype))
                    r_out.append(codec.compress(x, codes).cpu().numpy())
            del new_vecs
        finally:
            spill.unlink(missing_ok=True)
        save_npy(directory / "centroids.npy", centroids)
        for name in ("bucket_cutoffs.npy", "bucket_weights.npy"):
            save_npy(directory / name, np.load(self.directory / name, allow_pickle=False))
        all_lens = np.concatenate([self.doclens, new_lens])
        codes_all = np.load(directory / "codes.npy", mmap_mode="r", allow_pickle=False)
        ivf_rows, ivf_offsets = build_ivf(codes_all, all_lens, K)
        del codes_all
        save_npy(directory / "ivf_rows.npy", ivf_rows)
        save_npy(directory / "ivf_offsets.npy", ivf_offsets)
        n_new = int(new_lens.size)
        next_pid = int(self.meta["next_pid"])
        new_pids = np.arange(next_pid, next_pid + n_new, dtype=np.int64)
        meta = dict(self.meta)
        meta.update(
            next_pid=next_pid + n_new,
            num_centroids=K,
            added_since_build=int(meta.get("added_since_build", 0)) + n_new,
            centroids_added_since_build=int(meta.get("centroids_added_since_build", 0)) + expanded,
        )
        write_common(
            directory,
            doclens=all_lens,
            pids=np.concatenate([self.pids, new_pids]),
            deleted=np.concatenate([self.deleted, np.zeros(n_new, dtype=bool)]),
            meta=meta,
        )
        self._warn_churn(meta)
        return PlaidIndex.load(directory, device=self.device), new_pids  # type: ignore[return-value]

    def compact(self, directory: str | Path) -> PlaidIndex:
        """Drop deleted rows into a new index in ``directory``; the remaining pids are unchanged."""
        directory = prepare_dir(directory)
        keep = np.flatnonzero(~self.deleted)
        with NpyAppender(directory / "codes.npy", self.codes.dtype) as c_out, NpyAppender(
            directory / "residuals.npy", np.uint8, (self.residuals.shape[1],)
        ) as r_out:
            for block in _row_blocks(keep, self.doclens, 1 << 20):
                tok = _ranges(self.tok_offsets[block], self.doclens[block])
                c_out.append(self.codes[tok])
                r_out.append(self.residuals[tok])
        for name in ("centroids.npy", "bucket_cutoffs.npy", "bucket_weights.npy"):
            save_npy(directory / name, np.load(self.directory / name, allow_pickle=False))
        lens = self.doclens[keep]
        codes_all = np.load(directory / "codes.npy", mmap_mode="r", allow_pickle=False)
        ivf_rows, ivf_offsets = build_ivf(codes_all, lens, self.num_centroids)
        del codes_all
        save_npy(directory / "ivf_rows.npy", ivf_rows)
        save_npy(directory / "ivf_offsets.npy", ivf_offsets)
        write_common(directory, doclens=lens, pids=self.pids[keep], deleted=np.zeros(keep.size, dtype=bool),
                     meta=dict(self.meta))
        return PlaidIndex.load(directory, device=self.device)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------------
def _gather_float32(vectors: np.ndarray, rows: np.ndarray, block: int = COMPRESS_TOKENS) -> np.ndarray:
    """`vectors[rows]` as float32, filled block by block: no float16 copy of all the rows beside it."""
    out = np.empty((rows.size, vectors.shape[1]), dtype=np.float32)
    for s in range(0, rows.size, block):
        out[s : s + block] = vectors[rows[s : s + block]]
    return out


def num_partitions(num_embeddings_est: float) -> int:
    """Centroid count: the power of two at or below ``CENTROIDS_PER_SQRT_TOKEN``·sqrt(estimated tokens).

    colbert-ai's 16·sqrt. Fewer centroids shrink the fp16 centroid table (10 bytes per token at dim 384 and
    1.2 M tokens, SciFact; a fixed cost that falls as 1/sqrt(tokens)) but cost quality or speed: on SciFact
    with MiniLM vectors 4·sqrt loses 0.014 nDCG@10 at the default search parameters, and needs ndocs=512
    (2.5x the latency of 16·sqrt) to get most of it back (benchmarks/RESULTS.md). ``build_index(
    num_centroids=...)`` overrides the count.
    """
    return int(2 ** math.floor(math.log2(CENTROIDS_PER_SQRT_TOKEN * math.sqrt(max(num_embeddings_est, 1.0)))))


def id_dtype(count: int) -> type:
    """Dtype of ids in [0, count) on disk (centroid codes, IVF row ids): 2 bytes while they fit, else 4."""
    return np.int16 if count <= 1 << 15 else np.int32


def build_ivf(codes: np.ndarray, doclens: np.ndarray, num_centroids: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR inverted lists: centroid -> sorted unique rows. Returns `(rows [id_dtype], int64 offsets [K + 1])`."""
    R = int(doclens.size)
    starts = np.zeros(R + 1, dtype=np.int64)
    np.cumsum(doclens, out=starts[1:])
    E = int(starts[-1])
    keys = []
    step = 1 << 20
    for s in range(0, E, step):
        e = min(E, s + step)
        c = np.asarray(codes[s:e], dtype=np.int64)
        # row of each token: the last row starting at or before it (empty rows share the next start)
        rows = np.searchsorted(starts, np.arange(s, e, dtype=np.int64), side="right") - 1
        keys.append(np.unique(c * R + rows))
    keys_all = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
    cells = keys_all // max(R, 1)
    offsets = np.zeros(num_centroids + 1, dtype=np.int64)
    np.cumsum(np.bincount(cells, minlength=num_centroids), out=offsets[1:])
    return (keys_all % max(R, 1)).astype(id_dtype(R)), offsets


def build_plaid(
    directory: Path,
    spill: Path,
    doclens: np.ndarray,
    *,
    dim: int,
    nbits: int = DEFAULT_NBITS,
    device: torch.device,
    seed: int = 0,
    show_progress: bool = False,
    kmeans_niter: int = KMEANS_NITER,
    num_centroids: int | None = None,
) -> PlaidIndex:
    """Train the codec on a sample of the spilled vectors, then compress them all chunk by chunk."""
    nbits = check_nbits(nbits, dim)
    t0 = time.perf_counter()
    vectors = np.load(spill, mmap_mode="r", allow_pickle=False)
    N = int(doclens.size)
    E = int(vectors.shape[0])
    if N == 0 or E == 0:
        raise ValueError("cannot build a PLAID index without token vectors: pass at least one non-empty passage")
    rng = np.random.default_rng(seed)
    starts = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(doclens, out=starts[1:])

    # passage sample as colbert-ai: min(1 + 16·sqrt(120·N), N) passages
    n_sample = min(1 + int(16 * math.sqrt(120 * N)), N)
    sample = np.sort(rng.choice(N, n_sample, replace=False))
    sample_tok = _ranges(starts[sample], doclens[sample])
    if sample_tok.size == 0:  # only empty passages sampled
        sample_tok = np.arange(E, dtype=np.int64)
    K = num_partitions(N * sample_tok.size / n_sample) if num_centroids is None else int(num_centroids)
    cap = min(MAX_POINTS_PER_CENTROID_TRAIN * K, max(TRAIN_BYTES // (4 * dim), 39 * K))
    n_held_target = min(int(HELDOUT_FRACTION * sample_tok.size), HELDOUT_MAX)
    if sample_tok.size > cap + n_held_target:
        sample_tok = rng.choice(sample_tok, cap + n_held_target, replace=False)
    perm = rng.permutation(sample_tok)
    n = perm.size
    n_held = min(int(HELDOUT_FRACTION * n), HELDOUT_MAX)
    if n_held < 1 or n - n_held < 1:  # tiny collections: calibrate on the training tokens themselves
        held, train = perm, perm
    else:
        held, train = perm[:n_held], perm[n_held:]
    K = max(1, min(K, train.size))
    X = _gather_float32(vectors, np.sort(train))
    logger.info("PLAID: %d passages, %d tokens; k-means of %d vectors into %d centroids", N, E, X.shape[0], K)
    C = train_centroids(X, K, niter=kmeans_niter, seed=seed, device=device)
    del X
    t_kmeans = time.perf_counter() - t0
    logger.info("PLAID: k-means done in %.1f s", t_kmeans)
    C16 = C.astype(np.float16)
    K = int(C16.shape[0])
    Cf = torch.from_numpy(C16.astype(np.float32)).to(device)
    assigner = CentroidAssigner(Cf, seed=seed)

    Xh = torch.from_numpy(_gather_float32(vectors, np.sort(held))).to(device)
    resid = (Xh - Cf[assigner.assign(Xh)]).cpu().numpy()
    del Xh
    cutoffs, weights = quantile_buckets(resid, nbits)
    norms = np.linalg.norm(resid, axis=1)
    cluster_threshold = float(np.percentile(norms, CLUSTER_THRESHOLD_PERCENTILE))
    avg_residual = float(np.abs(resid).mean())
    del resid
    codec = ResidualCodec(C16, cutoffs, weights, nbits, device)
    logger.info("PLAID: codec calibrated on %d held-out vectors at %.1f s", held.size, time.perf_counter() - t0)

    code_dtype = id_dtype(K)
    bar = tqdm(total=E, desc="indexing: compressing", unit="token", disable=not show_progress)
    with NpyAppender(directory / "codes.npy", code_dtype) as c_out, NpyAppender(
        directory / "residuals.npy", np.uint8, (dim * nbits // 8,)
    ) as r_out:
        for s in range(0, E, COMPRESS_TOKENS):
            x = torch.from_numpy(np.asarray(vectors[s : s + COMPRESS_TOKENS], dtype=np.float32)).to(device)
            codes = assigner.assign(x)
            c_out.append(codes.cpu().numpy().astype(code_dtype))
            r_out.append(codec.compress(x, codes).cpu().numpy())
            bar.update(x.shape[0])
    bar.close()
    logger.info("PLAID: %d vectors compressed at %.1f s", E, time.perf_counter() - t0)
    del vectors
    codes_all = np.load(directory / "codes.npy", mmap_mode="r", allow_pickle=False)
    ivf_rows, ivf_offsets = build_ivf(codes_all, doclens, K)
    del codes_all
    save_npy(directory / "centroids.npy", C16)
    save_npy(directory / "bucket_cutoffs.npy", cutoffs)
    save_npy(directory / "bucket_weights.npy", weights)
    save_npy(directory / "ivf_rows.npy", ivf_rows)
    save_npy(directory / "ivf_offsets.npy", ivf_offsets)
    meta = {
        "kind": "plaid",
        "dim": int(dim),
        "nbits": nbits,
        "num_centroids": K,
        "cluster_threshold": cluster_threshold,
        "avg_residual": avg_residual,
        "next_pid": N,
        "built_passages": N,
        "added_since_build": 0,
        "deleted_since_build": 0,
        "centroids_added_since_build": 0,
        "seed": int(seed),
        "kmeans": {"niter": kmeans_niter, "train_vectors": int(train.size), "heldout_vectors": int(held.size),
                   "sampled_passages": int(n_sample), "seconds": round(t_kmeans, 2)},
    }
    write_common(directory, doclens=doclens, pids=np.arange(N, dtype=np.int64), deleted=np.zeros(N, dtype=bool),
                 meta=meta)
    logger.info("built a PLAID index (nbits=%d, %d centroids) of %d passages in %.1f s", nbits, K, N,
                time.perf_counter() - t0)
    return PlaidIndex.load(directory, device=device)  # type: ignore[return-value]


MAX_POINTS_PER_CENTROID_TRAIN = 256
