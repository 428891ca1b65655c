"""Exact MaxSim of residual-compressed tokens without decompressing them: lookup tables of partial dot products.

A token stored as a centroid code ``c`` and ``P = dim * nbits / 8`` residual bytes ``b_0 .. b_{P-1}`` (the
colbert-ai layout of `codec.py`: byte ``j`` holds the buckets of dimensions ``j*g .. j*g + g - 1``,
``g = 8 / nbits``) decompresses to ``x = (C[c] + r) / ||C[c] + r||`` with ``r[j*g + p] = w(b_j, p)``, the
bucket weight that byte value ``b_j`` gives its ``p``-th dimension. For a query token ``q``::

    q . x = (S[q, c] + sum_j LUT_q[j, b_j]) / ||C[c] + r||

where ``S = Q C^T`` are the query-centroid scores (PLAID's first stage computes them anyway) and
``LUT_q[j, v] = sum_p q[j*g + p] * w(v, p)`` holds, for every byte position and byte value, the partial dot
product that byte contributes: ``P x 256`` entries per query token (``dim / 4`` positions at nbits=2). A
token's score is then ``P + 1`` table reads and one scale, for every query token at once: the tables of all
query tokens are the columns of one ``[P * 256 + K, T]`` matrix, whose rows each token reads with one
``embedding_bag`` (rows ``j * 256 + b_j`` and ``P * 256 + c``; summed). No ``[tokens, dim]`` float tensor is
built for the scores.

The norm ``||C[c] + r||`` does not factor over bytes (it depends on the centroid and the residual together),
so it is computed once per token (`token_inv_norms`, exactly as `ResidualCodec.decompress` normalises) and is
query independent: pass it in when it is known (stored at build time, or shared by a batch of queries).
Computing it costs about as much as decompressing the token, so the tables pay only with the norms known:
on SciFact/MiniLM (dim 384, nbits=2, `benchmarks/profile_plaid.py`) the exact stage of a k=100 search took
2.9x less time than decompression + `scoring.maxsim` with the norms given, and the same time without.

Entry points:
- `lut_maxsim`: every query of a batch against every packed passage (`[B, n_docs]`, as `scoring.maxsim`);
- `lut_maxsim_pairs`: (query, passage) pairs, each query with its own candidates (PLAID's exact stage for a
  batch of queries); each token's norm is computed once for the batch.

All arithmetic is float32 on every device. Memory is bounded: passages are scored in blocks of at most
``chunk_tokens`` tokens, and the ``(P * 256 + K) x T`` tables of a large batch in column groups of at most
``TABLE_BUDGET`` bytes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import scoring
from .codec import ResidualCodec, bucket_tables

__all__ = [
    "byte_weights",
    "query_tables",
    "token_rows",
    "token_inv_norms",
    "lut_maxsim",
    "lut_maxsim_pairs",
    "LUT_CHUNK_TOKENS",
    "TABLE_BUDGET",
]

# Most passage tokens read at once: bounds the [tokens, P + 1] row indices and the [tokens, T] scores.
LUT_CHUNK_TOKENS = 1 << 15
# Most bytes of query tables held at once by `lut_maxsim` (the columns of a large batch are done in groups).
TABLE_BUDGET = 1 << 27
# Tokens whose norms are computed at once (a [tokens, dim] float32 block).
NORM_TOKENS = 1 << 15


def byte_weights(codec: ResidualCodec) -> torch.Tensor:
    """`float32 [256, 8 // nbits]`: the residual value each byte value gives each of its dimensions."""
    idx = torch.from_numpy(bucket_tables(codec.nbits).astype(np.int64)).to(codec.device)
    return codec.weights.float()[idx]


def query_tables(
    codec: ResidualCodec, Qs: torch.Tensor, centroid_scores: torch.Tensor | None = None
) -> torch.Tensor:
    """`float32 [P * 256 + K, T]`: for each of the ``T`` query token vectors ``Qs [T, dim]`` (a column), the
    partial dot product of every (byte position, byte value) pair (rows ``j * 256 + v``), then its score with
    every centroid (rows ``P * 256 + c``). ``centroid_scores [T, K]`` reuses scores computed already."""
    dim, P, K = codec.dim, codec.packed_dim, int(codec.centroids.shape[0])
    if Qs.dim() != 2 or int(Qs.shape[1]) != dim:
        raise ValueError(f"query tokens must be [T, {dim}] (the codec's dim); got {tuple(Qs.shape)}")
    Qf = Qs.to(codec.device, torch.float32)
    T = int(Qf.shape[0])
    table = torch.empty(P * 256 + K, T, dtype=torch.float32, device=codec.device)
    group = 8 // codec.nbits
    partial = Qf.reshape(T * P, group) @ byte_weights(codec).T  # [T * P, 256]
    table[: P * 256].view(P, 256, T).copy_(partial.view(T, P, 256).permute(1, 2, 0))
    if centroid_scores is None:
        torch.matmul(codec.centroids.float(), Qf.T, out=table[P * 256 :])
    else:
        if tuple(centroid_scores.shape) != (T, K):
            raise ValueError(
                f"centroid_scores must be [T, K] = [{T}, {K}] (one row per scored query token); "
                f"got {tuple(centroid_scores.shape)}"
            )
        table[P * 256 :].copy_(centroid_scores.T)
    return table


def token_rows(codes: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
    """`int32 [n, P + 1]`: the table rows each token reads (``j * 256 + b_j`` for its P residual bytes, then
    ``P * 256 + code``)."""
    n, P = int(residuals.shape[0]), int(residuals.shape[1])
    rows = torch.empty(n, P + 1, dtype=torch.int32, device=residuals.device)
    offsets = torch.arange(0, P * 256, 256, dtype=torch.int32, device=residuals.device)
    torch.add(residuals.to(torch.int32), offsets, out=rows[:, :P])
    rows[:, P] = codes.to(device=residuals.device, dtype=torch.int32) + P * 256
    return rows


def token_inv_norms(codec: ResidualCodec, codes: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
    """`float32 [n]`: ``1 / ||C[code] + r||`` of each token, as `ResidualCodec.decompress` normalises (float32
    on every device). Query independent: compute once per token and share."""
    n, dim = int(codes.shape[0]), codec.dim
    out = torch.empty(n, dtype=torch.float32, device=codec.device)
    centroids, weights = codec.centroids.float(), byte_weights(codec)
    for s in range(0, n, NORM_TOKENS):
        c = codes[s : s + NORM_TOKENS].to(codec.device).long()
        x = _gather(centroids, c)
        x += _gather(weights, residuals[s : s + NORM_TOKENS].to(codec.device).reshape(-1).long()).view(-1, dim)
        norms = torch.linalg.vector_norm(x, dim=1).clamp_min_(1e-12)
        out[s : s + c.numel()] = norms.reciprocal_()
    return out


def _gather(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """`table[idx]` for a 1-D index: numpy's take on CPU (several times faster than torch's indexing for short
    rows), index_select elsewhere."""
    if table.device.type == "cpu":
        return torch.from_numpy(np.take(table.numpy(), idx.cpu().numpy(), axis=0))
    return table.index_select(0, idx.to(table.device))


def _check_tokens(codec: ResidualCodec, codes: torch.Tensor, residuals: torch.Tensor, lens: torch.Tensor) -> None:
    n = int(codes.shape[0])
    if codes.dim() != 1 or tuple(residuals.shape) != (n, codec.packed_dim):
        raise ValueError(
            f"codes must be [n] and residuals [n, {codec.packed_dim}] (dim * nbits / 8 bytes per token); "
            f"got {tuple(codes.shape)} and {tuple(residuals.shape)}"
        )
    if residuals.dtype != torch.uint8:
        raise ValueError(f"residuals must be uint8 packed bytes, got {residuals.dtype}")
    if int(lens.sum()) != n:
        raise ValueError(f"doclens sum to {int(lens.sum())} tokens but {n} codes were given")


def _scored_tokens(codec: ResidualCodec, Q: torch.Tensor, Q_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The scored query token vectors `[T, dim]` (row order of ``Q[Q_mask]``) and the query of each."""
    if Q.dim() != 3 or int(Q.shape[-1]) != codec.dim:
        raise ValueError(f"Q must be [B, Lq, {codec.dim}] (the codec's dim); got {tuple(Q.shape)}")
    if tuple(Q_mask.shape) != tuple(Q.shape[:2]):
        raise ValueError(f"Q_mask must be [B, Lq] = {tuple(Q.shape[:2])}; got {tuple(Q_mask.shape)}")
    mask = Q_mask.to(device=Q.device, dtype=torch.bool)
    scored = mask.reshape(-1).nonzero().squeeze(1)
    Lq = int(Q.shape[1])
    return Q.reshape(-1, codec.dim)[scored].to(codec.device, torch.float32), (scored // Lq).to(codec.device)


def _segment_max(sims: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Per passage (``lens`` consecutive rows each) and column, the maximum; 0 for a passage without tokens."""
    best = torch.segment_reduce(sims, "max", lengths=lens.to(sims.device), axis=0, unsafe=True)
    return torch.where(torch.isfinite(best), best, torch.zeros((), device=sims.device))


def _score_block(
    table: torch.Tensor, codes: torch.Tensor, residuals: torch.Tensor, inv: torch.Tensor, lens: torch.Tensor
) -> torch.Tensor:
    """`[passages, T]`: each passage's maximum over its tokens of each table column's score."""
    rows = token_rows(codes, residuals).to(table.device)
    sims = F.embedding_bag(rows, table, mode="sum")
    sims *= inv.to(sims.device)[:, None]
    return _segment_max(sims, lens)


def _lens_tensor(doclens: torch.Tensor | np.ndarray) -> torch.Tensor:
    lens = doclens if isinstance(doclens, torch.Tensor) else torch.from_numpy(np.asarray(doclens))
    return lens.to("cpu", torch.int64).reshape(-1)


def lut_maxsim(
    codec: ResidualCodec,
    Q: torch.Tensor,
    Q_mask: torch.Tensor,
    codes: torch.Tensor,
    residuals: torch.Tensor,
    doclens: torch.Tensor | np.ndarray,
    *,
    centroid_scores: torch.Tensor | None = None,
    inv_norms: torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """MaxSim of every query against every packed compressed passage, equal to
    ``scoring.maxsim(Q, Q_mask, codec.decompress(codes, residuals), doclens)`` (within float32 rounding).

    Args:
        codec: the index's codec (centroids, bucket weights, nbits).
        Q: `[B, Lq, dim]` query vectors; Q_mask: `bool [B, Lq]`.
        codes: `[N_tokens]` centroid codes; residuals: `uint8 [N_tokens, dim * nbits / 8]`; the tokens of one
            passage contiguous, passages in order.
        doclens: `int [n_docs]` tokens per passage (0 scores 0).
        centroid_scores: `[T, K]` scores of the scored query tokens (``Q[Q_mask]`` order) with every centroid,
            when already computed.
        inv_norms: `float32 [N_tokens]` from `token_inv_norms`, when already known.
        chunk_tokens: most passage tokens scored at once.

    Returns:
        `float32 [B, n_docs]` on the codec's device.
    """
    lens = _lens_tensor(doclens)
    _check_tokens(codec, codes, residuals, lens)
    B, n = int(Q.shape[0]), int(lens.numel())
    Qs, query_of = _scored_tokens(codec, Q, Q_mask)
    out = torch.zeros(B, n, dtype=torch.float32, device=codec.device)
    T = int(Qs.shape[0])
    if n == 0 or T == 0:
        return out
    inv = token_inv_norms(codec, codes, residuals) if inv_norms is None else inv_norms
    # query tokens (table columns) in groups whose tables fit TABLE_BUDGET: a large batch of queries
    # would otherwise need (P * 256 + K) x T floats at once
    rows_per_column = codec.packed_dim * 256 + int(codec.centroids.shape[0])
    width = max(1, min(T, TABLE_BUDGET // (4 * rows_per_column)))
    if chunk_tokens is None:
        chunk_tokens = max(1, min(LUT_CHUNK_TOKENS, scoring.DEFAULT_SIM_BUDGET // width))
    starts = (torch.cumsum(lens, 0) - lens).tolist() + [int(lens.sum())]
    for c0 in range(0, T, width):
        c1 = min(T, c0 + width)
        table = query_tables(codec, Qs[c0:c1], None if centroid_scores is None else centroid_scores[c0:c1])
        for i, j in scoring.document_blocks(lens, chunk_tokens):
            s, e = starts[i], starts[j]
            best = _score_block(table, codes[s:e], residuals[s:e], inv[s:e], lens[i:j])  # [j - i, c1 - c0]
            out[:, i:j].index_add_(0, query_of[c0:c1], best.T)
    return out


def lut_maxsim_pairs(
    codec: ResidualCodec,
    Q: torch.Tensor,
    Q_mask: torch.Tensor,
    codes: torch.Tensor,
    residuals: torch.Tensor,
    doclens: torch.Tensor | np.ndarray,
    pair_query: torch.Tensor,
    pair_doc: torch.Tensor,
    *,
    centroid_scores: torch.Tensor | None = None,
    inv_norms: torch.Tensor | None = None,
    chunk_tokens: int = LUT_CHUNK_TOKENS,
) -> torch.Tensor:
    """MaxSim of (query, passage) pairs: ``out[i]`` is the score of passage ``pair_doc[i]`` for query
    ``pair_query[i]``, equal to `lut_maxsim`'s entry for that pair. For a batch of queries with their own
    candidates: the packed passages are the union of the candidates (each once), so each token's norm is
    computed once however many queries score it; each query then reads only its own passages' tokens.

    Args: as `lut_maxsim`, plus ``pair_query`` / ``pair_doc``: `int [n_pairs]` query (row of ``Q``) and
    passage (position in ``doclens``) of each pair.

    Returns:
        `float32 [n_pairs]` on the codec's device.
    """
    lens = _lens_tensor(doclens)
    _check_tokens(codec, codes, residuals, lens)
    B, n = int(Q.shape[0]), int(lens.numel())
    pq = torch.as_tensor(pair_query).to("cpu", torch.int64).reshape(-1)
    pd = torch.as_tensor(pair_doc).to("cpu", torch.int64).reshape(-1)
    if pq.numel() != pd.numel():
        raise ValueError(f"pair_query has {pq.numel()} entries but pair_doc {pd.numel()}: give one of each per pair")
    if pq.numel() and (int(pq.min()) < 0 or int(pq.max()) >= B or int(pd.min()) < 0 or int(pd.max()) >= n):
        raise ValueError(f"pairs must name queries in [0, {B}) and passages in [0, {n}) of the packed input")
    Qs, query_of = _scored_tokens(codec, Q, Q_mask)
    out = torch.zeros(pq.numel(), dtype=torch.float32, device=codec.device)
    if pq.numel() == 0 or Qs.shape[0] == 0:
        return out
    inv = token_inv_norms(codec, codes, residuals) if inv_norms is None else inv_norms
    first = torch.cumsum(torch.bincount(query_of.cpu(), minlength=B), 0).tolist()
    token_start = torch.cumsum(lens, 0) - lens
    order = torch.argsort(pq, stable=True)
    bounds = torch.searchsorted(pq[order], torch.arange(B + 1)).tolist()
    for b in range(B):
        t0, t1 = (first[b - 1] if b else 0), first[b]
        pairs = order[bounds[b] : bounds[b + 1]]
        if t1 == t0 or pairs.numel() == 0:
            continue  # no scored tokens (its pairs score 0), or no pairs
        table = query_tables(codec, Qs[t0:t1], None if centroid_scores is None else centroid_scores[t0:t1])
        for i, j in scoring.document_blocks(lens[pd[pairs]], chunk_tokens):
            blk = pairs[i:j]
            tok = _ranges(token_start[pd[blk]], lens[pd[blk]])
            best = _score_block(table, _gather(codes, tok), _gather(residuals, tok), _gather(inv, tok), lens[pd[blk]])
            out[blk.to(out.device)] = best.sum(1)
    return out


def _ranges(starts: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Token positions of several passages (``starts``, ``lens``), concatenated."""
    seg = torch.repeat_interleave(torch.arange(lens.numel()), lens)
    return torch.arange(seg.numel()) - (torch.cumsum(lens, 0) - lens)[seg] + starts[seg]
