"""Immutable segments and the one gather across them.

A `Segment` is a run of rows (passages) written once into its own folder: ``doclens.npy`` and ``pids.npy``
plus the backend's per-token arrays. Rows are numbered globally in segment order, and so are tokens;
`SegmentedArray` presents the per-segment token arrays as one array and gathers global positions from
them (`take_runs`, `take`): every backend reads tokens across segments through it.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import torch

from ..exceptions import CorruptIndexError
from .meta import IndexMeta, SegmentMeta
from .packed import ranges, row_blocks, take_rows, token_ranges
from .storage import NpyAppender, load_npy, save_npy

logger = logging.getLogger(__name__)

__all__ = ["Segment", "SegmentedArray", "RunPlan", "file_identity", "copy_rows", "save_rows"]

_REBUILD = "the index must be rebuilt"
# Tokens copied per step when segments are merged (bounded memory whatever their size).
COPY_TOKENS = 1 << 18
FileIdentity = tuple[tuple[str, int, int, int], ...]


def file_identity(folder: Path, names: Sequence[str]) -> FileIdentity:
    """`(name, device, inode, size)` of each file: equal identities mean the very same (immutable) files."""
    out = []
    for name in names:
        try:
            st = os.stat(folder / name)
        except OSError:
            return ()
        out.append((name, st.st_dev, st.st_ino, st.st_size))
    return tuple(out)


class Segment:
    """Rows common to every backend: ``doclens`` and ``pids`` (ascending), checked on load."""

    FILES: ClassVar[tuple[str, ...]] = ("doclens.npy", "pids.npy")

    def __init__(self, folder: Path, meta: SegmentMeta, index: IndexMeta, device: torch.device) -> None:
        self.meta = meta
        self.name = meta.name
        self.rows = meta.rows
        self.device = device
        # int32 on disk since issue 14 (int64 from earlier versions); int64 in memory
        self.doclens = load_npy(folder / "doclens.npy", dtype=(np.int32, np.int64), shape=(meta.rows,),
                                mmap=False).astype(np.int64, copy=False)
        self.pids = load_npy(folder / "pids.npy", dtype=(np.int32, np.int64), shape=(meta.rows,),
                             mmap=False).astype(np.int64, copy=False)
        if meta.rows and (int(self.doclens.min()) < 0 or int(self.pids[0]) < 0 or np.any(np.diff(self.pids) <= 0)):
            raise CorruptIndexError(
                f"{folder / 'pids.npy'} or {folder / 'doclens.npy'} holds invalid values; {_REBUILD}"
            )
        self.tok_offsets = np.zeros(meta.rows + 1, dtype=np.int64)
        np.cumsum(self.doclens, out=self.tok_offsets[1:])
        self.num_tokens = int(self.tok_offsets[-1])
        if self.num_tokens != meta.tokens:
            raise CorruptIndexError(
                f"{folder / 'doclens.npy'} sums to {self.num_tokens} tokens, metadata.json says {meta.tokens}; "
                f"{_REBUILD}"
            )
        self.identity: FileIdentity = ()

    def files(self) -> tuple[str, ...]:
        """Every file of the segment's folder."""
        return self.FILES

    def token_arrays(self) -> dict[str, np.ndarray]:
        """The per-token arrays (file name -> memory map), copied row by row when segments are merged."""
        return {}

    def _seal(self, folder: Path) -> None:
        """Record the identity of the files just loaded (called last by each backend's constructor)."""
        self.identity = file_identity(folder, self.files())

    def same_files(self, folder: Path) -> bool:
        """True when ``folder`` holds this segment's very files (hard links of them): it can be reused."""
        return bool(self.identity) and file_identity(folder, self.files()) == self.identity

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, rows={self.rows}, tokens={self.num_tokens})"


class SegmentedArray:
    """Per-segment arrays (torch tensors, first axis = tokens) seen as one array of global positions."""

    def __init__(
        self, parts: Sequence[torch.Tensor], *, row_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> None:
        self.parts = list(parts)
        self.row_shape = row_shape
        self.device = device
        for p in self.parts:
            dtype = torch.promote_types(dtype, p.dtype)
        self.dtype = dtype
        lengths = [int(p.shape[0]) for p in self.parts]
        self.starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
        self._bounds = torch.from_numpy(self.starts[1:-1].copy()).to(device)

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]), *self.row_shape)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows at the global positions ``idx`` (any order, repeats allowed), in that order."""
        idx = idx.to(self.device).long()
        return self.take_runs(idx, torch.ones_like(idx))

    def take_runs(self, starts: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """The rows of the runs ``[starts[i], starts[i] + lens[i])``, concatenated in the given order.

        A run lies within one segment (a passage's tokens always do). Runs are grouped by segment, each
        segment gathers its runs' rows at once, and one final gather restores the order asked for.
        """
        return self.gather(self.plan_runs(starts, lens))

    def plan_runs(self, starts: torch.Tensor, lens: torch.Tensor) -> RunPlan:
        """The positions `take_runs` reads, worked out once: any array split into the same parts (another
        per-token array of the same segments) can `gather` with it."""
        starts, lens = starts.to(self.device).long(), lens.to(self.device).long()
        if len(self.parts) == 1:
            return RunPlan([(0, token_ranges(starts, lens)[0])], None, self.starts)
        part = torch.searchsorted(self._bounds, starts, right=True)
        order = torch.argsort(part, stable=True)
        counts = torch.bincount(part, minlength=len(self.parts)).tolist()
        pieces, pos = [], 0
        for p, count in enumerate(counts):
            if count:
                sel = order[pos : pos + count]
                pieces.append((p, token_ranges(starts[sel] - int(self.starts[p]), lens[sel])[0]))
                pos += count
        if len(pieces) <= 1 or bool((order[1:] > order[:-1]).all()):
            return RunPlan(pieces, None, self.starts)  # the runs were in segment order already
        glens = lens[order]
        first = torch.empty_like(starts)
        first[order] = torch.cumsum(glens, 0) - glens  # where each run starts in the grouped rows
        return RunPlan(pieces, token_ranges(first, lens)[0], self.starts)

    def gather(self, plan: RunPlan) -> torch.Tensor:
        """The rows `plan_runs` planned (the plan of an array split into the same parts, else ValueError)."""
        if plan.starts is not self.starts and not np.array_equal(plan.starts, self.starts):
            raise ValueError(f"a RunPlan of an array split at {plan.starts.tolist()} cannot gather from one split at "
                             f"{self.starts.tolist()}: plan with this array's own plan_runs")
        pieces = [take_rows(self.parts[p], idx) for p, idx in plan.pieces]
        if not pieces:
            return torch.empty((0, *self.row_shape), dtype=self.dtype, device=self.device)
        grouped = pieces[0].to(self.dtype) if len(pieces) == 1 else torch.cat([x.to(self.dtype) for x in pieces])
        return grouped if plan.reorder is None else take_rows(grouped, plan.reorder)


class RunPlan(NamedTuple):
    """Where `SegmentedArray.take_runs` reads: `(part, local positions)` per segment having runs, and the
    gather that puts the grouped rows back in the order asked for (None: already in order), and the segment
    starts of the array planned on (an array gathering with the plan must be split the same way)."""

    pieces: list[tuple[int, torch.Tensor]]
    reorder: torch.Tensor | None
    starts: np.ndarray


def copy_rows(
    folder: Path, segments: Sequence[Segment], keeps: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Write rows ``keeps[i]`` of each of ``segments`` (in order) as one new segment's files into ``folder``:
    every per-token array, ``doclens.npy`` and ``pids.npy``. Returns the new `(doclens, pids)`.

    The one loop that copies stored rows (merges and compaction), in bounded blocks of tokens.
    """
    arrays = [seg.token_arrays() for seg in segments]
    names = list(arrays[0]) if arrays else []
    with ExitStack() as stack:
        outs: dict[str, NpyAppender] = {}
        for name in names:
            parts = [a[name] for a in arrays]
            dtype = np.result_type(*[p.dtype for p in parts])
            outs[name] = stack.enter_context(NpyAppender(folder / name, dtype, parts[0].shape[1:]))
        for seg, arr, keep in zip(segments, arrays, keeps, strict=True):
            for block in row_blocks(keep, seg.doclens, COPY_TOKENS):
                tok = ranges(seg.tok_offsets[block], seg.doclens[block])
                for name, out in outs.items():
                    out.append(arr[name][tok])
    empty = np.zeros(0, dtype=np.int64)
    doclens = np.concatenate([seg.doclens[k] for seg, k in zip(segments, keeps, strict=True)] or [empty])
    pids = np.concatenate([seg.pids[k] for seg, k in zip(segments, keeps, strict=True)] or [empty])
    save_rows(folder, doclens, pids)
    return doclens, pids


def save_rows(folder: Path, doclens: np.ndarray, pids: np.ndarray) -> None:
    """Write a segment's ``doclens.npy`` and ``pids.npy``: int32 (int64 for pids beyond its range)."""
    save_npy(folder / "doclens.npy", doclens.astype(np.int32))
    wide = pids.size and int(pids.max()) > np.iinfo(np.int32).max
    save_npy(folder / "pids.npy", pids.astype(np.int64 if wide else np.int32))
