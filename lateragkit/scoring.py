"""MaxSim: the one late-interaction scoring implementation of lateragkit.

score(q, d) = sum over the query's masked-in tokens of the maximum, over the document's masked-in tokens,
of the dot product of the two (L2-normalised) vectors. Padded document positions never win the max; a
document without any vector contributes 0 for every query token.

Two entry points:
- `maxsim_padded` scores a padded document batch `D [n, Ld, dim]` with its mask;
- `maxsim` scores packed documents (`vectors [N_tokens, dim]` + `doclens`, rows of one document contiguous)
  in bounded-memory chunks of consecutive documents: one GEMM over the rows as stored, then a segmented
  maximum per document (no gather, no padding).

Compute runs in float32 on CPU and in float16 on CUDA (sums are accumulated in float32).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["maxsim_padded", "maxsim", "document_blocks", "segment_max", "DEFAULT_SIM_BUDGET"]

ArrayLike = torch.Tensor | np.ndarray

# Upper bound on the number of similarity entries (query tokens x document tokens) held at once.
DEFAULT_SIM_BUDGET = 1 << 25  # 32M entries: 128 MB in float32
# Upper bound on the (padded) document tokens gathered per chunk.
DEFAULT_CHUNK_TOKENS = 1 << 16


def _compute_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def maxsim_padded(
    Q: torch.Tensor, Q_mask: torch.Tensor, D: torch.Tensor, D_mask: torch.Tensor
) -> torch.Tensor:
    """MaxSim scores of every query against every padded document.

    Args:
        Q: `[B, Lq, dim]` query vectors.
        Q_mask: `bool [B, Lq]`, True for the query tokens that are scored.
        D: `[n, Ld, dim]` document vectors.
        D_mask: `bool [n, Ld]`, True for real document tokens (padding is never the max).

    Returns:
        `float32 [B, n]` scores on `Q`'s device.
    """
    if Q.dim() != 3 or D.dim() != 3:
        raise ValueError(f"Q must be [B, Lq, dim] and D [n, Ld, dim]; got {tuple(Q.shape)} and {tuple(D.shape)}")
    if Q.shape[-1] != D.shape[-1]:
        raise ValueError(f"dimension mismatch: queries have dim {Q.shape[-1]}, documents {D.shape[-1]}")
    device = Q.device
    dtype = _compute_dtype(device)
    B, n = Q.shape[0], D.shape[0]
    if B == 0 or n == 0 or D.shape[1] == 0:
        return torch.zeros(B, n, dtype=torch.float32, device=device)
    Qc = Q.to(device=device, dtype=dtype)
    Dc = D.to(device=device, dtype=dtype)
    Dm = D_mask.to(device=device, dtype=torch.bool)
    Qm = Q_mask.to(device=device, dtype=torch.bool)
    Lq, Ld, dim = Qc.shape[1], Dc.shape[1], Qc.shape[2]
    # one GEMM: every document token against every query token -> [n, Ld, B * Lq]
    sim = (Dc.reshape(n * Ld, dim) @ Qc.reshape(B * Lq, dim).T).view(n, Ld, B * Lq)
    if not bool(Dm.all()):
        sim.masked_fill_(~Dm[:, :, None], float("-inf"))
    best = sim.amax(dim=1).view(n, B, Lq).float()
    # documents without any real token give -inf: they contribute nothing
    best = torch.where(torch.isfinite(best) & Qm[None, :, :], best, torch.zeros((), device=device))
    return best.sum(dim=-1).T.contiguous()


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    with warnings.catch_warnings():
        # a read-only memory map: torch warns that it cannot write to it; scoring only reads
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.ascontiguousarray(x))


def document_blocks(doclens: ArrayLike, max_rows: int) -> Iterator[tuple[int, int]]:
    """`(start, end)` runs of consecutive documents holding at most `max_rows` rows in all (a longer
    document is a run of its own): the unit in which packed documents are processed with bounded memory."""
    lens = doclens.cpu().numpy() if isinstance(doclens, torch.Tensor) else np.asarray(doclens)
    cum = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])
    n, i = int(lens.size), 0
    while i < n:
        j = int(np.searchsorted(cum, cum[i] + max_rows, side="right")) - 1
        j = min(n, max(j, i + 1))
        yield i, j
        i = j


def segment_max(values: torch.Tensor, lens: torch.Tensor, *, empty: float = 0.0, axis: int = 0) -> torch.Tensor:
    """For each run of ``lens[i]`` consecutive rows of ``values [sum(lens), c]`` (float32), the maximum of each
    column: `[len(lens), c]`; ``empty`` for a run without rows. ``axis=1``: runs of columns of
    ``values [c, sum(lens)]``, result `[c, len(lens)]`.

    On CPU numpy's ``maximum.reduceat`` (3-5x faster than ``torch.segment_reduce`` there); elsewhere
    ``torch.segment_reduce``. The same values either way (a maximum has no rounding).
    """
    lens = lens.reshape(-1)
    n, c = int(lens.numel()), int(values.shape[1 - axis])
    if values.device.type != "cpu":
        dev_lens = lens.to(values.device)
        rows = values if axis == 0 else values.T
        best = torch.segment_reduce(rows, "max", lengths=dev_lens, axis=0, unsafe=True)
        best = best.masked_fill_((dev_lens == 0)[:, None], empty)
        return best if axis == 0 else best.T
    ln = lens.cpu().numpy()
    starts = np.cumsum(ln) - ln
    v = values.numpy()
    if n and bool((ln > 0).all()):
        return torch.from_numpy(np.maximum.reduceat(v, starts, axis=axis))
    out = np.full((n, c) if axis == 0 else (c, n), empty, dtype=v.dtype)
    full = ln > 0
    if full.any():
        found = np.maximum.reduceat(v, starts[full], axis=axis)
        if axis == 0:
            out[full] = found
        else:
            out[:, full] = found
    return torch.from_numpy(out)


def maxsim(
    Q: torch.Tensor,
    Q_mask: torch.Tensor,
    vectors: ArrayLike,
    doclens: ArrayLike,
    *,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """MaxSim scores of every query against packed documents.

    Args:
        Q: `[B, Lq, dim]` query vectors (their device is the compute device).
        Q_mask: `bool [B, Lq]`.
        vectors: `[N_tokens, dim]` document vectors (torch tensor or numpy array/memmap, any device),
            the rows of one document contiguous and in document order.
        doclens: `int [n_docs]`, number of rows of each document (0 is allowed and scores 0).
        chunk_tokens: most padded document tokens scored at once; by default chosen so that the
            similarity block stays near `DEFAULT_SIM_BUDGET` entries (at most 65,536 tokens).

    Returns:
        `float32 [B, n_docs]` scores on `Q`'s device.
    """
    device = Q.device
    dtype = _compute_dtype(device)
    lens = _as_tensor(doclens).to("cpu", torch.int64).reshape(-1)
    n = int(lens.numel())
    B = int(Q.shape[0])
    out = torch.zeros(B, n, dtype=torch.float32, device=device)
    if n == 0 or B == 0:
        return out
    total = int(lens.sum())
    if total != int(vectors.shape[0]):
        raise ValueError(f"doclens sum to {total} rows but vectors has {int(vectors.shape[0])}")
    if int(vectors.shape[1]) != int(Q.shape[-1]):
        raise ValueError(f"dimension mismatch: queries have dim {Q.shape[-1]}, documents {vectors.shape[1]}")

    Qm = Q_mask.to(device=device, dtype=torch.bool)
    Lq, dim = int(Q.shape[1]), int(Q.shape[2])
    # only the scored query tokens take part: [T, dim], and the query each belongs to
    scored = Qm.reshape(-1).nonzero().squeeze(1)
    if scored.numel() == 0:
        return out
    Qs = Q.to(device=device, dtype=dtype).reshape(B * Lq, dim)[scored]
    query_of = scored // Lq
    T = int(scored.numel())
    if chunk_tokens is None:
        chunk_tokens = max(1, min(DEFAULT_CHUNK_TOKENS, DEFAULT_SIM_BUDGET // T))

    # Documents are contiguous rows: score consecutive runs of whole documents (at most chunk_tokens rows,
    # or one longer document) with one GEMM over the rows as stored, then take each document's maximum
    # per query token with a segmented reduction. No gather and no padding of the document vectors.
    starts = (torch.cumsum(lens, 0) - lens).tolist() + [total]
    for i, j in document_blocks(lens, chunk_tokens):
        s, e = starts[i], starts[j]
        if e > s:
            block = _as_tensor(vectors[s:e])
            sim = block.to(device=device, dtype=dtype, non_blocking=True) @ Qs.T  # [rows, T]
            best = segment_max(sim.float(), lens[i:j])  # [docs, T]; 0 for an empty document
            out[:, i:j] = torch.zeros(B, j - i, device=device).index_add_(0, query_of, best.T)
    return out
