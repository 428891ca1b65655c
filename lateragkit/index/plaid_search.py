"""PLAID search over the segments of an index, in four stages (all vectorised torch, CPU or CUDA).

Per query:
1. score every centroid against the query tokens; the top ``ncells`` per token give IVF lists → candidates
   (every segment's lists, as global rows);
2. approximate score from the centroids of each candidate's tokens, only centroids whose best query
   score reaches ``centroid_score_threshold``; keep ``ndocs``;
3. the same with every centroid (over each candidate's distinct codes); keep ``ndocs // 4`` (at least ``k``);
4. score those passages exactly: MaxSim over their decompressed tokens, computed without decompressing
   (`ResidualCodec.token_scores`: residuals @ query tokens + the stage-1 centroid scores at the codes, times
   each token's stored scale).

A batch of queries shares the centroid-score GEMM, and the exact stage when its queries share passages: the
candidates of all queries are pooled, each distinct passage's tokens are read once (in cache-sized blocks of
``EXACT_TOKENS`` tokens) and scored against the tokens of every query that has it as a candidate: one GEMM per
block against the queries that block concerns when most of their (passage, query) pairs are wanted (always so
for one query), else each passage decompressed and scored by one small GEMM against its own queries.

Rows and tokens are global (segment after segment); codes and residuals are gathered across segments by
`SegmentedArray.take_runs`, inverted lists walked by `SegmentedIVF.lists`. An index of several segments thus
ranks exactly as one segment holding the same rows with the same codec.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import scoring
from .base import PassageIndex, SearchResult
from .blocks import map_blocks
from .codec import ResidualCodec
from .ivf import SegmentedIVF
from .packed import take_rows, token_ranges
from .segments import SegmentedArray

__all__ = ["PlaidSearch", "plaid_params", "DEFAULT_MAX_EXACT_SUBSET"]

# Tokens whose centroid scores are gathered per step in the full centroid interaction (the [tokens, Lq] score
# block stays in the CPU cache: 16,384 x 32 floats = 2 MB).
STAGE_TOKENS = 1 << 14
# Tokens read at once in the exact stage (their expanded residuals, float32 at dim 384: 6 MB; a block that fits
# the cache makes expansion + GEMM 2-2.5x faster than one pass over all candidates).
EXACT_TOKENS = 1 << 12
# Sparse per-passage scoring costs this many (token x query-token) products of overhead per passage: the
# dense block GEMM is chosen when its products are fewer than the sparse ones plus this overhead.
PASSAGE_OVERHEAD = 6_000
# A batch's exact stage is shared (each distinct passage read once) when its queries have on average at least
# this many (query, passage) pairs per distinct passage; else each query is scored alone.
SHARED_PAIRS = 2.0
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
    _norms: SegmentedArray
    _passage_codes: SegmentedArray
    _pc_starts: torch.Tensor
    _pc_lens: torch.Tensor
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
        Qm = Q_mask.to(dev)
        # centroid scores of every scored query token of the batch in one GEMM: [tokens, K]
        Q_scored = Q.to(dev, cdt)[Qm]
        S_all = Q_scored @ self.codec.centroids.T
        counts = Qm.sum(1).tolist()
        firsts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()

        def candidates(i: int) -> torch.Tensor | None:
            sub = allowed[i]
            if counts[i] == 0 or self.num_passages == 0 or (sub is not None and sub.size == 0):
                return None
            return self._candidates(S_all[firsts[i] : firsts[i + 1]], k, ncells, ndocs, thr, sub, max_exact)

        cands = map_blocks(candidates, range(len(counts)))  # the queries of a batch side by side
        scores = self._exact_scores(Q_scored, S_all, firsts, cands)
        empty = (np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))
        return [empty if rows is None else self._results(sc, rows.cpu().numpy(), k)
                for rows, sc in zip(cands, scores, strict=True)]

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
        if rows.numel() > ndocs:  # stage 2: pruned centroid interaction
            approx = self._pruned_interaction(rows, S_q, S_q.amax(0) >= thr)
            rows = rows[torch.topk(approx, ndocs).indices]
        final = max(ndocs // 4, k)
        if rows.numel() > final:  # stage 3: full centroid interaction
            approx = self._centroid_interaction(rows, S_q)
            rows = rows[torch.topk(approx, final).indices]
        return rows

    def _pruned_interaction(self, rows: torch.Tensor, S_q: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Stage 2: Σ_q max(0, max over the kept centroids among each passage's codes of their score).

        Computed from the IVF side: only the kept centroids (those some query token scores at least the
        threshold with, typically a few dozen) contribute, so walking their inverted lists touches a few
        thousand (centroid, passage) pairs instead of every token of every candidate (about a million on
        SciFact). The result is the same as scanning the candidates' codes.
        """
        dev, lq = self.device, S_q.shape[0]
        out = torch.zeros(rows.numel(), lq, dtype=S_q.dtype, device=dev)
        kept = keep.nonzero().squeeze(1)
        if kept.numel():
            listed, which = self._ivf.lists(kept)
            pos, which = self._positions(rows, listed, which)
            kept_T = S_q[:, kept].T.contiguous()  # [kept, lq]
            out.scatter_reduce_(0, pos[:, None].expand(-1, lq), kept_T[which], reduce="amax", include_self=True)
        return out.float().sum(1)

    def _positions(
        self, rows: torch.Tensor, listed: torch.Tensor, which: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Position among ``rows`` (distinct) of each entry of ``listed`` that is one of them, and its ``which``.
        A row -> position map when the index is not much larger than the lists (one gather), else a binary
        search over the sorted rows."""
        if self.num_rows <= 64 * max(int(listed.numel()), 1):
            at = torch.full((self.num_rows,), -1, dtype=torch.long, device=rows.device)
            at[rows] = torch.arange(rows.numel(), device=rows.device)
            pos = at[listed]
            hit = pos >= 0
            return pos[hit], which[hit]
        sorted_rows, order = torch.sort(rows)
        at = torch.searchsorted(sorted_rows, listed).clamp_max(rows.numel() - 1)
        hit = sorted_rows[at] == listed
        return order[at[hit]], which[hit]

    def _centroid_interaction(self, rows: torch.Tensor, S_q: torch.Tensor) -> torch.Tensor:
        """Stage 3: Σ_q max over each passage's codes of their centroid score, in blocks of ``STAGE_TOKENS``
        codes. Each passage's distinct codes are read (`PlaidSegment.passage_codes`, about half as many as its
        tokens: a maximum over repeats is the same). ``S_q [lq, K]``: each query token's row of centroid
        scores gathered at the codes (`[lq, codes]`, one contiguous row per query token: numpy's per-row
        maximum then vectorises; 3x faster on CPU than gathering `[codes, lq]` rows), then a segmented maximum
        per passage (an empty passage scores -inf)."""
        lens = self._pc_lens[rows]
        codes = self._passage_codes.take_runs(self._pc_starts[rows], lens)
        code_at = [0, *torch.cumsum(lens, 0).tolist()]

        def block(run: tuple[int, int]) -> torch.Tensor:
            start, end = run
            scores = _take_columns(S_q, codes[code_at[start] : code_at[end]])  # [lq, codes]
            best = scoring.segment_max(scores, lens[start:end], empty=float("-inf"), axis=1)
            return best.T.contiguous().sum(1)  # summed in query-token order, as MaxSim sums

        parts = map_blocks(block, list(scoring.document_blocks(lens, STAGE_TOKENS)))
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float32, device=self.device)

    def _token_block(self, rows: torch.Tensor) -> TokenBlock:
        """The stored tokens of the passages at ``rows``, gathered across segments."""
        lens = self._doclens[rows]
        plan = self._codes.plan_runs(self._tok_offsets[rows], lens)  # the three arrays share their segments
        return TokenBlock(self._codes.gather(plan), self._residuals.gather(plan), self._norms.gather(plan), lens)

    def decompress_rows(self, rows: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Decompressed vectors of the passages at ``rows`` (packed) and their lengths."""
        block = self._token_block(torch.as_tensor(rows).to(self.device).long())
        return block.decompress(self.codec), block.lens

    def _exact_scores(
        self, Qs: torch.Tensor, S_all: torch.Tensor, firsts: list[int], cands: list[torch.Tensor | None]
    ) -> list[torch.Tensor]:
        """Stage 4 for a batch: exact MaxSim of each query's candidate rows (``cands[i]``, None: no search)
        against its scored tokens ``Qs[firsts[i]:firsts[i + 1]]`` (``S_all``: their centroid scores, `[T, K]`);
        one score tensor per query, aligned with its rows. When the queries share passages (at least
        ``SHARED_PAIRS`` pairs per distinct passage), each distinct passage's tokens are read once, whatever the
        number of queries having it; else each query is scored alone."""
        out = [torch.zeros(0 if c is None else c.numel(), dtype=torch.float32, device=self.device) for c in cands]
        which = [i for i, c in enumerate(cands) if c is not None and c.numel()]
        parts = [c for c in cands if c is not None and c.numel()]
        if not parts:
            return out
        sizes = [int(c.numel()) for c in parts]
        union, inverse = torch.unique(torch.cat(parts), return_inverse=True) if len(parts) > 1 else (parts[0], None)
        if inverse is None or sum(sizes) < SHARED_PAIRS * int(union.numel()):
            # one query, or queries sharing few passages: each alone (the dense path beats per-passage GEMMs),
            # the queries side by side
            def alone(query: tuple[int, torch.Tensor]) -> torch.Tensor:
                i, rows = query
                return self._query_scores(Qs[firsts[i] : firsts[i + 1]], S_all[firsts[i] : firsts[i + 1]], rows)

            for i, sc in zip(which, map_blocks(alone, list(zip(which, parts, strict=True))), strict=True):
                out[i] = sc
            return out
        pair_query = torch.repeat_interleave(torch.tensor(which, device=self.device),
                                             torch.tensor(sizes, device=self.device))
        scores = self._pair_scores(Qs, S_all, torch.tensor(firsts, device=self.device), union, inverse, pair_query)
        for i, sc in zip(which, torch.split(scores, sizes), strict=True):
            out[i] = sc
        return out

    def _query_scores(self, Qs: torch.Tensor, S: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Exact MaxSim of one query (scored tokens ``Qs [lq, dim]``, centroid scores ``S [lq, K]``) against the
        passages at ``rows``, block by block: the dense path of `_block_pair_scores` without a batch's pair
        bookkeeping, to the same values (the same `_dense_scores`)."""
        lq = int(Qs.shape[0])
        query = _Queries(Qs, S, torch.zeros(1, dtype=torch.long, device=self.device),
                         torch.tensor([lq], device=self.device))

        def block(run: tuple[int, int]) -> torch.Tensor:
            tb = self._token_block(rows[run[0] : run[1]])
            return _dense_scores(self.codec, query, tb, slice(None), query.token_query, 1)[:, 0]

        parts = map_blocks(block, list(scoring.document_blocks(self._doclens[rows], EXACT_TOKENS)))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float32, device=self.device)

    def _pair_scores(
        self, Qs: torch.Tensor, S: torch.Tensor, firsts: torch.Tensor, union: torch.Tensor, inverse: torch.Tensor,
        pair_query: torch.Tensor,
    ) -> torch.Tensor:
        """MaxSim of (query, passage) pairs: pair ``p`` is query ``pair_query[p]`` with row ``union[inverse[p]]``.
        The union's passages are read in blocks of at most ~EXACT_TOKENS tokens (a large k sends thousands of
        passages here; all at once would take GBs, and a cache-sized block is faster)."""
        order = torch.argsort(inverse, stable=True)  # pairs grouped by passage
        by_passage = torch.searchsorted(inverse[order], torch.arange(union.numel() + 1, device=self.device))
        bounds = by_passage.tolist()
        q_len = firsts[1:] - firsts[:-1]
        pq = pair_query[order]
        out = torch.zeros(pair_query.numel(), dtype=torch.float32, device=self.device)
        queries = _Queries(Qs, S, firsts, q_len)

        def block(run: tuple[int, int]) -> torch.Tensor:
            s, e = run
            a = bounds[s]
            owners = by_passage[s : e + 1] - a  # this block's pairs of each passage (CSR over pq[a:b])
            return _block_pair_scores(self.codec, queries, self._token_block(union[s:e]), pq[a : bounds[e]], owners)

        runs = list(scoring.document_blocks(self._doclens[union], EXACT_TOKENS))
        for (s, e), scores in zip(runs, map_blocks(block, runs), strict=True):
            out[order[bounds[s] : bounds[e]]] = scores
        return out


class TokenBlock(NamedTuple):
    """The stored tokens of consecutive passages: codes, packed residuals, scale offsets, passage lengths."""

    codes: torch.Tensor
    packed: torch.Tensor
    offsets: torch.Tensor
    lens: torch.Tensor

    def decompress(self, codec: ResidualCodec) -> torch.Tensor:
        return codec.decompress(self.codes, self.packed, self.offsets)


@dataclasses.dataclass
class _Queries:
    """The scored tokens of a batch of queries (query ``i``: rows ``firsts[i]:firsts[i] + q_len[i]`` of ``Qs``)
    and their centroid scores ``S [T, K]``."""

    Qs: torch.Tensor
    S: torch.Tensor
    firsts: torch.Tensor
    q_len: torch.Tensor

    @functools.cached_property
    def token_query(self) -> torch.Tensor:
        """The query of each scored token (`[T]`), made once per batch rather than once per block."""
        return torch.repeat_interleave(torch.arange(int(self.q_len.numel()), device=self.Qs.device), self.q_len)

    @functools.cached_property
    def S_T(self) -> torch.Tensor:
        """``S`` transposed (`[K, T]`, contiguous: a token's centroid scores are one row), made when first
        needed (a batch scored per passage never needs it, and it is as large as ``S``)."""
        return self.S.T.contiguous()


def _take_columns(S_q: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``S_q[:, codes]`` as float32 `[lq, tokens]` (numpy's take on CPU: several times faster there)."""
    if S_q.device.type == "cpu":
        idx = codes.numpy().astype(np.intp, copy=False)
        return torch.from_numpy(np.take(S_q.float().numpy(), idx, axis=1, mode="clip"))
    return S_q.index_select(1, codes.long()).float()


def _dense_scores(
    codec: ResidualCodec, queries: _Queries, block: TokenBlock, cols: torch.Tensor | slice, tok_query: torch.Tensor,
    n_queries: int,
) -> torch.Tensor:
    """`[docs, n_queries]` exact MaxSim of a block's passages against the query tokens ``cols`` of ``queries``
    (``tok_query``: each column's query among ``n_queries``), without decompressing: `ResidualCodec.token_scores`
    (the residual GEMM + the centroid scores read at the codes, times the stored scales), a segmented maximum
    per passage, and each query's sum over its tokens (in token order: `index_add_`)."""
    centroid_part = take_rows(queries.S_T, block.codes)  # [tokens, T]: each token's centroid's scores
    residuals = codec.residuals(block.packed, queries.Qs.dtype)
    sims = codec.token_scores(residuals, centroid_part[:, cols], block.offsets, queries.Qs[cols])
    best = scoring.segment_max(sims, block.lens)  # [docs, query tokens]
    out = torch.zeros(int(block.lens.numel()), n_queries, dtype=torch.float32, device=best.device)
    return out.index_add_(1, tok_query, best)


def _block_pair_scores(
    codec: ResidualCodec, queries_: _Queries, block: TokenBlock, pq: torch.Tensor, owners: torch.Tensor
) -> torch.Tensor:
    """Scores of one block's pairs (grouped by passage: passage ``d`` has the pairs ``owners[d]:owners[d + 1]``
    of ``pq``, their queries). When one GEMM against every query the block concerns wastes little (always
    with one query): `ResidualCodec.token_scores` (no decompression); else each passage is decompressed and
    scored by one GEMM against its own queries."""
    Qs, firsts, q_len = queries_.Qs, queries_.firsts, queries_.q_len
    lens = block.lens
    queries, pair_col = torch.unique(pq, return_inverse=True)
    n_docs = int(lens.numel())
    pair_doc = torch.repeat_interleave(torch.arange(n_docs, device=pq.device), owners[1:] - owners[:-1])
    dense_cost = int(block.codes.numel()) * int(q_len[queries].sum())
    sparse_cost = int((lens[pair_doc] * q_len[pq]).sum()) + PASSAGE_OVERHEAD * n_docs
    if dense_cost <= sparse_cost:
        if queries.numel() == int(q_len.numel()):  # every query of the batch: all columns, in order
            cols: torch.Tensor | slice = slice(None)
            tok_query = queries_.token_query
        else:
            cols, tok_query = token_ranges(firsts[queries], q_len[queries])
        return _dense_scores(codec, queries_, block, cols, tok_query, int(queries.numel()))[pair_doc, pair_col]
    # sparse: each passage decompressed once, then one small GEMM against its own queries' tokens
    vecs = block.decompress(codec)
    idx, tok_pair = token_ranges(firsts[pq], q_len[pq])
    q_tokens = Qs[idx]
    best = torch.zeros(int(idx.numel()), dtype=vecs.dtype, device=pq.device)
    cols_ = torch.cumsum(q_len[pq], 0)
    col_at = torch.cat([cols_.new_zeros(1), cols_])[owners].tolist()  # each passage's columns
    tok_at = [0, *torch.cumsum(lens, 0).tolist()]
    for d in range(n_docs):
        c0, c1, t0, t1 = col_at[d], col_at[d + 1], tok_at[d], tok_at[d + 1]
        if c1 > c0 and t1 > t0:  # else: no pair, or an empty passage (scores 0)
            torch.amax(vecs[t0:t1] @ q_tokens[c0:c1].T, 0, out=best[c0:c1])
    return torch.zeros(int(pq.numel()), dtype=torch.float32, device=pq.device).index_add_(0, tok_pair, best.float())
