"""Exact index: the packed float16 token vectors, searched exhaustively with `scoring.maxsim`.

Chosen automatically for small collections (where k-means has too little data and brute force is fast)
and on request. Files: ``vectors.npy`` (float16 [N_tokens, dim]) plus the common row files.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import scoring
from .base import (
    Batches,
    PassageIndex,
    SearchResult,
    as_tensor,
    iter_packed,
    prepare_dir,
    write_common,
)
from .storage import NpyAppender, load_npy

logger = logging.getLogger(__name__)

# Rows copied per step when an index is rewritten (bounded memory).
COPY_TOKENS = 1 << 18


class ExactIndex(PassageIndex):
    kind = "exact"
    _DATA_FILES = ("vectors.npy",)

    def __init__(self, directory: Path, meta: dict[str, Any], device: torch.device) -> None:
        super().__init__(directory, meta, device)
        self.vectors = load_npy(self.directory / "vectors.npy", dtype=np.float16, shape=(self.num_tokens, self.dim))
        # On CPU the memory map is scored in chunks; on an accelerator the vectors live there.
        self._vectors: np.ndarray | torch.Tensor = (
            self.vectors if device.type == "cpu" else as_tensor(self.vectors, device)
        )

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
            scores = scoring.maxsim(Qd[unrestricted], Qm[unrestricted], self._vectors, self.doclens)
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

    def score_rows(self, Q: torch.Tensor, Q_mask: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Exact MaxSim of the queries against the passages at ``rows`` -> `float32 [B, len(rows)]`."""
        if rows.size == 0:
            return torch.zeros(Q.shape[0], 0, device=Q.device)
        lens = self.doclens[rows]
        tok = _ranges(self.tok_offsets[rows], lens)
        if isinstance(self._vectors, torch.Tensor):
            vecs: Any = self._vectors[torch.from_numpy(tok).to(self._vectors.device)]
        else:
            vecs = self.vectors[tok]
        return scoring.maxsim(Q, Q_mask, vecs, lens)

    # ---- updates ----------------------------------------------------------------------------------
    def add(self, directory: str | Path, batches: Batches) -> tuple[ExactIndex, np.ndarray]:
        """Append passages (new pids after the largest ever assigned) into a new index in ``directory``."""
        directory = prepare_dir(directory)
        doclens = [self.doclens]
        with NpyAppender(directory / "vectors.npy", np.float16, (self.dim,)) as out:
            for start in range(0, self.num_tokens, COPY_TOKENS):
                out.append(self.vectors[start : start + COPY_TOKENS])
            for vecs, lens in iter_packed(batches, self.dim):
                out.append(vecs)
                doclens.append(lens)
        all_lens = np.concatenate(doclens)
        n_new = int(all_lens.size - self.doclens.size)
        next_pid = int(self.meta["next_pid"])
        new_pids = np.arange(next_pid, next_pid + n_new, dtype=np.int64)
        meta = dict(self.meta)
        meta["next_pid"] = next_pid + n_new
        meta["added_since_build"] = int(meta.get("added_since_build", 0)) + n_new
        write_common(
            directory,
            doclens=all_lens,
            pids=np.concatenate([self.pids, new_pids]),
            deleted=np.concatenate([self.deleted, np.zeros(n_new, dtype=bool)]),
            meta=meta,
        )
        self._warn_churn(meta)
        return ExactIndex.load(directory, device=self.device), new_pids  # type: ignore[return-value]

    def compact(self, directory: str | Path) -> ExactIndex:
        """Drop deleted rows into a new index in ``directory``; the remaining pids are unchanged."""
        directory = prepare_dir(directory)
        keep = np.flatnonzero(~self.deleted)
        with NpyAppender(directory / "vectors.npy", np.float16, (self.dim,)) as out:
            for block in _row_blocks(keep, self.doclens, COPY_TOKENS):
                out.append(self.vectors[_ranges(self.tok_offsets[block], self.doclens[block])])
        meta = dict(self.meta)  # churn counters keep counting from the build
        write_common(
            directory,
            doclens=self.doclens[keep],
            pids=self.pids[keep],
            deleted=np.zeros(keep.size, dtype=bool),
            meta=meta,
        )
        return ExactIndex.load(directory, device=self.device)  # type: ignore[return-value]


def build_exact(
    directory: Path, batches: Batches, *, dim: int, device: torch.device, spilled: tuple[Path, np.ndarray] | None = None
) -> ExactIndex:
    """Write an exact index. ``spilled`` = (a `.npy` of all vectors already written, doclens) skips the copy."""
    if spilled is None:
        doclens_list = []
        with NpyAppender(directory / "vectors.npy", np.float16, (dim,)) as out:
            for vecs, lens in iter_packed(batches, dim):
                out.append(vecs)
                doclens_list.append(lens)
        doclens = np.concatenate(doclens_list) if doclens_list else np.zeros(0, dtype=np.int64)
    else:
        path, doclens = spilled
        path.rename(directory / "vectors.npy")
    n = int(doclens.size)
    write_common(
        directory,
        doclens=doclens,
        pids=np.arange(n, dtype=np.int64),
        deleted=np.zeros(n, dtype=bool),
        meta={"kind": "exact", "dim": int(dim), "next_pid": n, "built_passages": n,
              "added_since_build": 0, "deleted_since_build": 0},
    )
    logger.info("built an exact index of %d passages (%d tokens) in %s", n, int(doclens.sum()), directory)
    return ExactIndex.load(directory, device=device)  # type: ignore[return-value]


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenated token positions `[starts[i], starts[i] + lens[i])` (numpy)."""
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    doc = np.repeat(np.arange(lens.size), lens)
    first = np.cumsum(lens) - lens
    return np.arange(total, dtype=np.int64) - first[doc] + np.asarray(starts, dtype=np.int64)[doc]


def _row_blocks(rows: np.ndarray, doclens: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Split `rows` into consecutive blocks of at most `max_tokens` tokens (or one longer row) each."""
    return [rows[a:b] for a, b in scoring.document_blocks(doclens[rows], max_tokens)]
