"""PLAID search over the segments of an index, in four stages (all vectorised torch, CPU or CUDA).

Per query:
1. score every centroid against the query tokens; the top ``ncells`` per token give IVF lists → candidates
   (every segment's lists, as global rows);
2. approximate score from the centroids of each candidate's tokens, only centroids whose best query
   score reaches ``centroid_score_threshold``; keep ``ndocs``;
3. the same with every centroid; keep ``ndocs // 4`` (at least ``k``);
4. decompress those passages and score them exactly with `scoring.maxsim`.

Rows and tokens are global (segment after segment); codes and residuals are gathered across segments by
`SegmentedArray.take_runs`, inverted lists walked by `SegmentedIVF.lists`. An index of several segments thus
ranks exactly as one segment holding the same rows with the same codec.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import scoring
from .base import PassageIndex, SearchResult
from .codec import ResidualCodec
from .ivf import SegmentedIVF
from .segments import SegmentedArray

__all__ = ["PlaidSearch", "plaid_params", "DEFAULT_MAX_EXACT_SUBSET"]

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


class PlaidSearch(PassageIndex):
    """The search stages of the PLAID backend (storage and updates: `plaid.PlaidIndex`)."""

    codec: ResidualCodec
    num_centroids: int
    _ivf: SegmentedIVF
    _codes: SegmentedArray
    _residuals: SegmentedArray
    _tok_offsets: torch.Tensor
    _doclens: torch.Tensor
    _live: torch.Tensor

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

    def _probe(self, S_q: torch.Tensor, ncells: int, k: int, sub_t: torch.Tensor | None) -> torch.Tensor:
        """Stage 1: live rows in the IVF lists of each query token's ``ncells`` best centroids."""
        K = self.num_centroids
        while True:
            cells = torch.topk(S_q, min(ncells, K), dim=1).indices.reshape(-1).unique()
            rows = self._ivf.lists(cells)[0].unique()
            rows = rows[self._live[rows]]
            if sub_t is not None:
                return rows[torch.isin(rows, sub_t)]  # too few candidates in the subset are handled later
            # fewer candidates than k (a large k, a small collection): probe more cells
            if rows.numel() >= min(k, self.num_passages) or ncells >= K:
                return rows
            ncells = min(K, ncells * 2)

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
        sub_t = None if subset is None else torch.from_numpy(subset).to(self.device)
        if sub_t is not None and sub_t.numel() <= max_exact:
            return sub_t  # a small subset is scored exactly, no approximation at all
        rows = self._probe(S_q, ncells, k, sub_t)
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
            listed, which = self._ivf.lists(kept)
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
            doc = torch.repeat_interleave(torch.arange(end - start, device=self.device), lens[start:end])
            codes = self._codes.take_runs(self._tok_offsets[blk], lens[start:end]).long()
            best = torch.full((end - start, lq), float("-inf"), dtype=S_T.dtype, device=self.device)
            best.scatter_reduce_(0, doc[:, None].expand(-1, lq), S_T[codes], reduce="amax", include_self=True)
            out[start:end] = best.float().sum(1)
        return out

    def decompress_rows(self, rows: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Decompressed vectors of the passages at ``rows`` (packed) and their lengths."""
        rows = torch.as_tensor(rows).to(self.device).long()
        lens = self._doclens[rows]
        starts = self._tok_offsets[rows]
        return self.codec.decompress(self._codes.take_runs(starts, lens), self._residuals.take_runs(starts, lens)), lens

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
