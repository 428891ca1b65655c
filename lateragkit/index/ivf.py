"""Inverted lists of the PLAID backend: centroid -> rows having a token with that code.

Each segment stores its own lists (CSR: ``ivf_rows.npy`` of local row ids, ``ivf_offsets.npy`` of
``K_seg + 1`` offsets, where ``K_seg`` is the number of centroids when the segment was written — centroids
appended later have empty lists there). `SegmentedIVF.lists` walks the lists of several centroids in every
segment and returns global rows: the one loop over segments for stage 1 and the pruned stage of search.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .packed import take_rows, token_ranges

__all__ = ["id_dtype", "row_dtype", "build_ivf", "passage_codes", "SegmentedIVF"]

# tokens whose (code, row) keys are sorted per step while building lists
_BUILD_STEP = 1 << 20


def id_dtype(count: int) -> type:
    """Dtype of centroid codes in [0, count) on disk: int16 while they fit, else int32."""
    return np.int16 if count <= 1 << 15 else np.int32


def row_dtype(count: int) -> type:
    """Dtype of IVF row ids in [0, count) on disk: uint16 while they fit, else int32 (only read through numpy
    and torch indexing, which handle uint16; codes stay signed: torch does not promote int16 with uint16)."""
    return np.uint16 if count <= 1 << 16 else np.int32


def build_ivf(codes: np.ndarray, doclens: np.ndarray, num_centroids: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR inverted lists: centroid -> sorted unique rows. Returns `(rows [row_dtype], int64 offsets [K + 1])`."""
    R = int(doclens.size)
    starts = np.zeros(R + 1, dtype=np.int64)
    np.cumsum(doclens, out=starts[1:])
    E = int(starts[-1])
    keys = []
    for s in range(0, E, _BUILD_STEP):
        e = min(E, s + _BUILD_STEP)
        c = np.asarray(codes[s:e], dtype=np.int64)
        # row of each token: the last row starting at or before it (empty rows share the next start)
        rows = np.searchsorted(starts, np.arange(s, e, dtype=np.int64), side="right") - 1
        keys.append(np.unique(c * R + rows))
    keys_all = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
    cells = keys_all // max(R, 1)
    offsets = np.zeros(num_centroids + 1, dtype=np.int64)
    np.cumsum(np.bincount(cells, minlength=num_centroids), out=offsets[1:])
    return (keys_all % max(R, 1)).astype(row_dtype(R)), offsets


def passage_codes(rows: np.ndarray, offsets: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The lists turned around: each row's distinct codes, ascending (CSR: `(codes [id_dtype], int64 offsets
    [num_rows + 1])`). The lists hold each (code, row) pair once, so these are exactly the distinct codes of the
    row's tokens: the full centroid interaction of search reads them instead of every token's code (about
    half as many values, the rest being repeats of a code within a passage)."""
    counts = np.diff(offsets)
    codes: np.ndarray = np.repeat(np.arange(counts.size, dtype=id_dtype(max(counts.size, 1))), counts)
    order = np.argsort(rows, kind="stable")  # stable: ascending codes within a row (the lists are in code order)
    row_offsets = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=row_offsets[1:])
    return codes[order], row_offsets


class SegmentedIVF:
    """The inverted lists of several segments, searched as one index of global rows."""

    def __init__(self, lists: Sequence[tuple[torch.Tensor, torch.Tensor]], row_starts: Sequence[int]) -> None:
        """``lists``: per segment `(rows, offsets)` with offsets padded to the index's K + 1."""
        self.lists_ = list(lists)
        self.row_starts = [int(r) for r in row_starts]

    def lists(self, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global rows listed under ``cells`` (int64) and, for each, its cell's position in ``cells``."""
        rows, which = [], []
        for (ivf_rows, offsets), first in zip(self.lists_, self.row_starts, strict=True):
            starts = offsets[cells]
            idx, pos = token_ranges(starts, offsets[cells + 1] - starts)
            rows.append(take_rows(ivf_rows, idx).long() + first)
            which.append(pos)
        if not rows:
            empty = torch.zeros(0, dtype=torch.long, device=cells.device)
            return empty, empty
        if len(rows) == 1:
            return rows[0], which[0]
        return torch.cat(rows), torch.cat(which)
