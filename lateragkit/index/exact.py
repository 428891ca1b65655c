"""Exact index: the packed float16 token vectors, searched exhaustively with `scoring.maxsim`.

Chosen automatically for small collections (where k-means has too little data and brute force is fast)
and on request. Each segment holds ``vectors.npy`` (float16 [tokens, dim]) beside its ``doclens.npy``
and ``pids.npy``; there is no shared state.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import scoring
from .base import PassageIndex, SearchResult, as_tensor
from .meta import IndexMeta, SegmentMeta
from .registry import register
from .segments import Segment, SegmentedArray, save_rows
from .storage import load_npy

logger = logging.getLogger(__name__)

__all__ = ["ExactIndex", "ExactSegment"]


class ExactSegment(Segment):
    FILES = ("doclens.npy", "pids.npy", "vectors.npy")

    def __init__(self, folder: Path, meta: SegmentMeta, index: IndexMeta, device: torch.device) -> None:
        super().__init__(folder, meta, index, device)
        self.vectors = load_npy(folder / "vectors.npy", dtype=np.float16, shape=(self.num_tokens, index.dim))
        # On CPU a view over the memory map (scored in chunks); on an accelerator the vectors live there.
        self._vectors = as_tensor(self.vectors, device)
        self._seal(folder)

    def token_arrays(self) -> dict[str, np.ndarray]:
        return {"vectors.npy": self.vectors}


@register
class ExactIndex(PassageIndex):
    kind = "exact"
    segment_class = ExactSegment

    def _prepare_search(self) -> None:
        segments = [s for s in self.segments if isinstance(s, ExactSegment)]
        self._parts = segments
        self._vectors = SegmentedArray([s._vectors for s in segments], row_shape=(self.dim,), dtype=torch.float16,
                                       device=self.device)

    @property
    def vectors(self) -> np.ndarray:
        """Every stored vector, in row order (a memory map when there is one segment, else a copy)."""
        parts = [s.vectors for s in self._parts]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float16)

    @classmethod
    def _write_segment(
        cls, folder: Path, meta: IndexMeta, spill: Path, doclens: np.ndarray, pids: np.ndarray, shared: Any,
        device: torch.device, *, grow: bool, show_progress: bool = False,
    ) -> tuple[Segment, Any, IndexMeta]:
        os.replace(spill, folder / "vectors.npy")  # the spilled vectors are the segment's vectors
        save_rows(folder, doclens, pids)
        seg_meta = SegmentMeta(folder.name, int(doclens.size), int(doclens.sum()))
        return ExactSegment(folder, seg_meta, meta, device), shared, meta

    # ---- search -----------------------------------------------------------------------------------
    def _search_rows(
        self,
        Q: torch.Tensor,
        Q_mask: torch.Tensor,
        k: int,
        allowed: list[np.ndarray | None],
        params: dict[str, Any],
    ) -> list[SearchResult]:
        Qd, Qm = Q.to(self.device, torch.float32), Q_mask.to(self.device)
        results: list[SearchResult | None] = [None] * Q.shape[0]
        unrestricted = [i for i, a in enumerate(allowed) if a is None]
        if unrestricted:
            live = np.flatnonzero(~self.deleted)
            scores = self._score_all(Qd[unrestricted], Qm[unrestricted])
            live_t = torch.from_numpy(live).to(scores.device)
            for j, i in enumerate(unrestricted):
                results[i] = self._results(scores[j, live_t], live, k)
        # queries restricted to a subset: score only those rows (one pass per distinct subset)
        groups: dict[int, list[int]] = {}
        for i, a in enumerate(allowed):
            if a is not None:
                groups.setdefault(id(a), []).append(i)
        for idxs in groups.values():
            rows = allowed[idxs[0]]
            assert rows is not None
            scores = self.score_rows(Qd[idxs], Qm[idxs], rows)
            for j, i in enumerate(idxs):
                results[i] = self._results(scores[j], rows, k)
        return [r for r in results if r is not None]

    def _score_all(self, Q: torch.Tensor, Q_mask: torch.Tensor) -> torch.Tensor:
        """MaxSim of the queries against every stored row, segment by segment -> `float32 [B, rows]`."""
        parts = [scoring.maxsim(Q, Q_mask, s._vectors, s.doclens) for s in self._parts]
        return torch.cat(parts, dim=1) if parts else torch.zeros(Q.shape[0], 0, device=Q.device)

    def score_rows(self, Q: torch.Tensor, Q_mask: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Exact MaxSim of the queries against the passages at ``rows`` -> `float32 [B, len(rows)]`."""
        if rows.size == 0:
            return torch.zeros(Q.shape[0], 0, device=Q.device)
        lens = self.doclens[rows]
        vecs = self._vectors.take_runs(torch.from_numpy(self.tok_offsets[rows]), torch.from_numpy(lens))
        return scoring.maxsim(Q, Q_mask, vecs, lens)
