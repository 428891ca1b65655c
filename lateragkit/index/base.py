"""`PassageIndex`: what every backend shares — segments, passage ids, tombstones, writes of new versions.

An index folder (format 2) holds immutable **segments** plus per-version state::

    metadata.json            IndexMeta: kind, dim, next_pid, the segment list, counters, codec parameters
    tombstones.npy           int64, sorted: deleted pids whose rows are still stored
    segments/seg-NNNNNN/     doclens.npy, pids.npy and the backend's per-token arrays
    codec/                   files shared by every segment (PLAID: centroids and bucket tables)

Rows are numbered globally in segment order; row ``r`` is the passage ``pids[r]`` (ascending across
segments, never reused). A write (`add`, `delete`, `replace`, `compact`) puts a complete new version into
an empty folder: unchanged segment files and codec files are hard-linked (never copied or rewritten), new
rows become a new segment, and the returned index reuses the loaded segment objects of ``self``. `add` and
`replace` then merge a contiguous run of the newest segments when `merge_policy.plan_merge` says it pays;
`compact` merges every segment. Merges drop deleted rows and keep every other pid.
"""
from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..exceptions import CorruptIndexError
from ..merge_policy import plan_merge
from .meta import IndexMeta, SegmentMeta, write_meta
from .packed import Batches, spill_batches
from .segments import Segment, copy_rows
from .storage import link_or_copy, load_npy, save_npy

logger = logging.getLogger(__name__)

SEARCH_PARAMS = ("ncells", "centroid_score_threshold", "ndocs", "max_exact_subset")
# Fraction of passages added or deleted since the build (or compaction) above which the index warns, once.
CHURN_WARNING = 0.10
SEGMENTS_DIR = "segments"
TOMBSTONES_FILE = "tombstones.npy"
SPILL_FILE = ".spill-vectors.npy"
_REBUILD = "the index must be rebuilt"

SearchResult = tuple[np.ndarray, np.ndarray]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available; pass device='cpu'")
    return device


def as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A torch view of a (read-only, memory-mapped) array on CPU, or a copy on an accelerator."""
    with warnings.catch_warnings():
        # torch warns that the memory map is read-only; the index never writes through these tensors
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(np.asarray(array))
    return tensor if device.type == "cpu" else tensor.to(device)


def deleted_counts(segments: Sequence[Segment], tombstones: np.ndarray) -> list[int]:
    """Tombstones falling in each segment (segments cover disjoint, increasing pid ranges)."""
    out = []
    for s in segments:
        if s.rows == 0:
            out.append(0)
            continue
        lo = np.searchsorted(tombstones, s.pids[0], side="left")
        hi = np.searchsorted(tombstones, s.pids[-1], side="right")
        out.append(int(hi - lo))
    return out


def prepare_dir(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` if needed and check that it is empty."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise ValueError(f"{directory} is not empty; an index is written into an empty (staging) folder")
    return directory


class PassageIndex:
    """Base class of the backends (registered by `kind`). Subclasses set `segment_class` and implement
    `_write_segment` (new rows from spilled vectors), `_search_rows`, and optionally the shared-state hooks."""

    kind: ClassVar[str] = ""
    segment_class: ClassVar[type[Segment]] = Segment

    def __init__(
        self,
        directory: Path,
        meta: IndexMeta,
        segments: Sequence[Segment],
        tombstones: np.ndarray,
        device: torch.device,
        shared: Any = None,
    ) -> None:
        self.directory = Path(directory)
        self.meta = meta
        self.device = device
        self.dim = meta.dim
        self.shared = shared
        self.segments = list(segments)
        empty = np.zeros(0, dtype=np.int64)
        self.pids = np.concatenate([s.pids for s in self.segments] or [empty])
        self.doclens = np.concatenate([s.doclens for s in self.segments] or [empty])
        self.row_starts = np.concatenate([[0], np.cumsum([s.rows for s in self.segments], dtype=np.int64)])
        self.row_starts = self.row_starts.astype(np.int64)
        self.tok_offsets = np.zeros(self.pids.size + 1, dtype=np.int64)
        np.cumsum(self.doclens, out=self.tok_offsets[1:])
        self.num_tokens = int(self.tok_offsets[-1])
        self.tombstones = tombstones
        self._check_rows()
        self.deleted = np.zeros(self.pids.size, dtype=bool)
        self.deleted[self._rows_of(tombstones)] = True
        self._prepare_search()

    def _check_rows(self) -> None:
        where = self.directory / "metadata.json"
        if self.pids.size and (np.any(np.diff(self.pids) <= 0) or int(self.pids[-1]) >= self.meta.next_pid):
            raise CorruptIndexError(
                f"{where}: the segments' pids overlap, are out of order or reach next_pid; {_REBUILD}"
            )
        t = self.tombstones
        if t.size and (np.any(np.diff(t) <= 0) or not np.all(np.isin(t, self.pids))):
            raise CorruptIndexError(f"{self.directory / TOMBSTONES_FILE} names pids that are not stored; {_REBUILD}")

    # ---- building and opening ------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        directory: Path,
        spill: Path,
        doclens: np.ndarray,
        *,
        dim: int,
        device: torch.device,
        nbits: int | None = None,
        seed: int = 0,
        num_centroids: int | None = None,
        show_progress: bool = False,
    ) -> PassageIndex:
        """A new index of one segment in the empty ``directory`` from vectors spilled to ``spill``."""
        shared = cls._train_shared(spill, doclens, dim=dim, device=device, nbits=nbits, seed=seed,
                                   num_centroids=num_centroids)
        n = int(doclens.size)
        meta = IndexMeta(kind=cls.kind, dim=dim, next_pid=n, segments=(), next_segment=1, built_passages=n,
                         codec=getattr(shared, "meta", None))
        segments: list[Segment] = []
        if n:
            target = directory / SEGMENTS_DIR / meta.segment_name(1)
            target.mkdir(parents=True)
            seg, shared, meta = cls._write_segment(target, meta, spill, doclens, np.arange(n, dtype=np.int64), shared,
                                                   device, grow=False, show_progress=show_progress)
            segments.append(seg)
        meta = meta.replace(segments=tuple(s.meta for s in segments), next_segment=len(segments) + 1)
        if shared is not None:
            cls._write_shared(directory, shared, None)
        tombstones = np.zeros(0, dtype=np.int64)
        save_npy(directory / TOMBSTONES_FILE, tombstones)
        write_meta(directory, meta)
        logger.info("built a %s index of %d passages (%d tokens) in %s", cls.kind, n, meta.num_tokens, directory)
        return cls(directory, meta, segments, tombstones, device, shared)

    @classmethod
    def open(
        cls, directory: Path, meta: IndexMeta, device: torch.device, reuse: PassageIndex | None = None
    ) -> PassageIndex:
        """Load the folder's segments (memory-mapped), reusing those of ``reuse`` whose files are the same."""
        if reuse is not None and (type(reuse) is not cls or reuse.device != device):
            reuse = None
        shared = cls._open_shared(directory, meta, device, reuse)
        known = {s.name: s for s in reuse.segments} if reuse is not None else {}
        segments: list[Segment] = []
        for sm in meta.segments:
            folder = cls._folder_of(directory, meta, sm.name)
            old = known.get(sm.name)
            if old is not None and old.meta == sm and old.same_files(folder):
                segments.append(old)
            else:
                segments.append(cls.segment_class(folder, sm, meta, device))
        tombstones = cls._load_tombstones(directory, meta, segments)
        if meta.flat_layout:
            meta = meta.replace(deleted=int(tombstones.size))
        return cls(directory, meta, segments, tombstones, device, shared)

    @staticmethod
    def _folder_of(directory: Path, meta: IndexMeta, name: str) -> Path:
        return directory if meta.flat_layout else directory / SEGMENTS_DIR / name

    def _segment_folder(self, name: str) -> Path:
        return self._folder_of(self.directory, self.meta, name)

    @staticmethod
    def _load_tombstones(directory: Path, meta: IndexMeta, segments: Sequence[Segment]) -> np.ndarray:
        if meta.flat_layout:  # format 1: a per-row flag
            rows = meta.num_rows
            flags = load_npy(directory / "deleted.npy", dtype=[np.uint8, np.bool_], shape=(rows,), mmap=False)
            pids = np.concatenate([s.pids for s in segments] or [np.zeros(0, dtype=np.int64)])
            return pids[flags.astype(bool)]
        return load_npy(directory / TOMBSTONES_FILE, dtype=np.int64, shape=(meta.deleted,), mmap=False)

    # ---- backend hooks -----------------------------------------------------------------------------
    @classmethod
    def _open_shared(cls, directory: Path, meta: IndexMeta, device: torch.device, reuse: PassageIndex | None) -> Any:
        """State shared by every segment (PLAID: the codec); None for backends without any."""
        return None

    @classmethod
    def _write_shared(cls, directory: Path, shared: Any, link_from: Path | None) -> None:
        """Write the shared state's files into a new version (hard links from ``link_from`` when unchanged)."""

    def _shared_folder(self) -> Path:
        return self.directory

    @classmethod
    def _train_shared(
        cls, spill: Path, doclens: np.ndarray, *, dim: int, device: torch.device, nbits: int | None, seed: int,
        num_centroids: int | None,
    ) -> Any:
        """The shared state of a new index, learnt from its spilled vectors (None for most backends)."""
        return None

    @classmethod
    def _write_segment(
        cls, folder: Path, meta: IndexMeta, spill: Path, doclens: np.ndarray, pids: np.ndarray, shared: Any,
        device: torch.device, *, grow: bool, show_progress: bool = False,
    ) -> tuple[Segment, Any, IndexMeta]:
        """Turn spilled vectors into a new segment in ``folder``; returns it, the (possibly grown) shared
        state and the index metadata updated for it (``grow``: an update may extend the shared state)."""
        raise NotImplementedError

    @classmethod
    def _finish_merged(cls, folder: Path, seg_meta: SegmentMeta, meta: IndexMeta, shared: Any,
                       device: torch.device) -> Segment:
        """Complete and load a merged segment whose rows `copy_rows` has written into ``folder``."""
        return cls.segment_class(folder, seg_meta, meta, device)

    def _prepare_search(self) -> None:
        """Build the search-time views over the segments."""

    def _search_rows(
        self, Q: torch.Tensor, Q_mask: torch.Tensor, k: int, allowed: list[np.ndarray | None], params: dict[str, Any]
    ) -> list[SearchResult]:
        raise NotImplementedError

    # ---- public API ----------------------------------------------------------------------------
    @property
    def num_passages(self) -> int:
        """Number of live (not deleted) passages."""
        return int(self.pids.size - self.tombstones.size)

    @property
    def num_rows(self) -> int:
        return int(self.pids.size)

    @property
    def num_segments(self) -> int:
        return len(self.segments)

    def live_pids(self) -> np.ndarray:
        return self.pids[~self.deleted].copy()

    def is_live(self, pids: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Boolean array (the shape of ``pids``): stored and not deleted. Unknown pids are False."""
        p = np.asarray(pids, dtype=np.int64)
        flat = p.reshape(-1)
        out = np.zeros(flat.size, dtype=bool)
        if flat.size and self.pids.size:
            pos = np.clip(np.searchsorted(self.pids, flat), 0, self.pids.size - 1)
            out = (self.pids[pos] == flat) & ~self.deleted[pos]
        return out.reshape(p.shape)

    def info(self) -> dict[str, Any]:
        """JSON-able summary: kind, sizes, segments, bytes on disk (the CLI and `collection.info()` show it)."""
        per_segment = deleted_counts(self.segments, self.tombstones)
        codec = self.meta.codec
        size = 0
        for dirpath, _dirs, files in os.walk(self.directory):
            size += sum(os.stat(os.path.join(dirpath, f)).st_size for f in files)
        return {
            "kind": self.kind,
            "dim": self.dim,
            "nbits": None if codec is None else codec.nbits,
            "num_centroids": None if codec is None else codec.num_centroids,
            "passages": self.num_passages,
            "deleted": int(self.tombstones.size),
            "rows": self.num_rows,
            "tokens": self.num_tokens,
            "segments": [
                {"name": s.name, "rows": s.rows, "tokens": s.num_tokens, "deleted": int(d)}
                for s, d in zip(self.segments, per_segment, strict=True)
            ],
            "bytes_on_disk": size,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(passages={self.num_passages}, tokens={self.num_tokens}, dim={self.dim}, "
            f"segments={self.num_segments}, directory={str(self.directory)!r})"
        )

    def search(
        self,
        Q: torch.Tensor,
        Q_mask: torch.Tensor,
        k: int,
        *,
        pids: np.ndarray | Sequence[np.ndarray] | None = None,
        **params: Any,
    ) -> list[SearchResult]:
        """Top-`k` passages per query: a list of `(scores float32 [k'], pids int64 [k'])`, best first.

        ``pids`` restricts the candidates: one array for the whole batch or one array per query.
        Extra keyword arguments tune PLAID (``ncells``, ``centroid_score_threshold``, ``ndocs``,
        ``max_exact_subset``); they are derived from ``k`` on every call when not given.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, not {type(k).__name__}")
        if k <= 0:
            raise ValueError(f"k must be at least 1 (got {k})")
        unknown = sorted(set(params) - set(SEARCH_PARAMS))
        if unknown:
            raise TypeError(f"unknown search parameter(s) {unknown}; valid ones are {list(SEARCH_PARAMS)}")
        Q = torch.as_tensor(Q)
        Q_mask = torch.as_tensor(Q_mask)
        if Q.dim() == 2:  # one query given as [Lq, dim]
            Q, Q_mask = Q[None], Q_mask.reshape(1, -1)
        if Q.dim() != 3 or Q.shape[-1] != self.dim:
            raise ValueError(f"Q must have shape [B, Lq, {self.dim}], got {tuple(Q.shape)}")
        if tuple(Q_mask.shape) != tuple(Q.shape[:2]):
            raise ValueError(f"Q_mask must have shape {tuple(Q.shape[:2])}, got {tuple(Q_mask.shape)}")
        allowed = self._allowed_rows(pids, int(Q.shape[0]))
        with torch.inference_mode():
            return self._search_rows(Q, Q_mask.to(torch.bool), int(k), allowed, params)

    # ---- writes ----------------------------------------------------------------------------------------
    def add(self, directory: str | os.PathLike[str], batches: Batches) -> tuple[PassageIndex, np.ndarray]:
        """Append passages as a new segment of a new version in ``directory``; returns it and the new pids
        (continuing after the largest pid ever assigned). ``self`` is left untouched and usable."""
        return self._write(directory, (), batches)

    def delete(self, directory: str | os.PathLike[str], pids: np.ndarray | Sequence[int]) -> PassageIndex:
        """Tombstone ``pids`` in a new version in ``directory`` (unknown pids are ignored with a warning)."""
        return self._write(directory, pids, None)[0]

    def replace(
        self, directory: str | os.PathLike[str], delete_pids: np.ndarray | Sequence[int], batches: Batches
    ) -> tuple[PassageIndex, np.ndarray]:
        """Delete ``delete_pids`` and add ``batches`` in ONE new version (an upsert): no scratch folder."""
        return self._write(directory, delete_pids, batches)

    def compact(self, directory: str | os.PathLike[str]) -> PassageIndex:
        """Merge every segment into one without the deleted rows; the remaining pids are unchanged."""
        return self._write(directory, (), None, compact=True)[0]

    def _write(
        self, directory: str | os.PathLike[str], delete_pids: Any, batches: Batches | None, *, compact: bool = False
    ) -> tuple[PassageIndex, np.ndarray]:
        folder = prepare_dir(directory)
        tombstones, newly = self._tombstones_with(delete_pids)
        meta = self.meta.replace(deleted_since_build=self.meta.deleted_since_build + newly)
        segments, shared = list(self.segments), self.shared
        new_pids = np.zeros(0, dtype=np.int64)
        if batches is not None:
            new_pids, segments, shared, meta = self._append(folder, batches, segments, shared, meta)
        run = (0, len(segments)) if compact and (len(segments) > 1 or tombstones.size) else None
        if batches is not None and not compact:
            run = plan_merge([s.rows - d for s, d in zip(segments, deleted_counts(segments, tombstones), strict=True)])
        if run is not None:
            segments, tombstones, meta = self._merge(folder, segments, run, tombstones, shared, meta)
        own = {s.name for s in self.meta.segments}
        for seg in segments:
            if seg.name in own:  # unchanged: hard links, never copies
                target = folder / SEGMENTS_DIR / seg.name
                target.mkdir(parents=True)
                for name in seg.files():
                    link_or_copy(self._segment_folder(seg.name) / name, target / name)
        if shared is not None:
            self._write_shared(folder, shared, self._shared_folder() if shared is self.shared else None)
        if compact:
            meta = meta.replace(built_passages=self.num_passages, added_since_build=0, deleted_since_build=0,
                                churn_warned=False)
        meta = self._churn_checked(meta.replace(
            segments=tuple(s.meta for s in segments), deleted=int(tombstones.size), flat_layout=False))
        save_npy(folder / TOMBSTONES_FILE, tombstones)
        write_meta(folder, meta)
        return type(self)(folder, meta, segments, tombstones, self.device, shared), new_pids

    def _tombstones_with(self, delete_pids: Any) -> tuple[np.ndarray, int]:
        """This version's tombstones plus the stored ones of ``delete_pids``; and how many are new."""
        pids = np.unique(np.asarray(delete_pids, dtype=np.int64).reshape(-1))
        rows = self._rows_of(pids)
        if rows.size < pids.size:
            logger.warning("delete: %d of %d pids are not in the index and were ignored", pids.size - rows.size,
                           pids.size)
        newly = int((~self.deleted[rows]).sum())
        return np.union1d(self.tombstones, self.pids[rows]).astype(np.int64), newly

    def _append(
        self, folder: Path, batches: Batches, segments: list[Segment], shared: Any, meta: IndexMeta
    ) -> tuple[np.ndarray, list[Segment], Any, IndexMeta]:
        """Spill the new passages and write them as a new segment."""
        spill = folder / SPILL_FILE
        try:
            doclens = spill_batches(spill, batches, self.dim)
            n = int(doclens.size)
            if n == 0:
                return np.zeros(0, dtype=np.int64), segments, shared, meta
            pids = np.arange(meta.next_pid, meta.next_pid + n, dtype=np.int64)
            target = folder / SEGMENTS_DIR / meta.segment_name(meta.next_segment)
            target.mkdir(parents=True)
            seg, shared, meta = self._write_segment(target, meta, spill, doclens, pids, shared, self.device, grow=True)
        finally:
            spill.unlink(missing_ok=True)
        meta = meta.replace(next_pid=meta.next_pid + n, next_segment=meta.next_segment + 1,
                            added_since_build=meta.added_since_build + n)
        return pids, [*segments, seg], shared, meta

    def _merge(
        self, folder: Path, segments: list[Segment], run: tuple[int, int], tombstones: np.ndarray, shared: Any,
        meta: IndexMeta,
    ) -> tuple[list[Segment], np.ndarray, IndexMeta]:
        """Merge ``segments[start:end]`` into one new segment without their deleted rows."""
        start, end = run
        merging = segments[start:end]
        keeps = [np.flatnonzero(~np.isin(s.pids, tombstones)) for s in merging]
        dropped = np.concatenate([s.pids[np.isin(s.pids, tombstones)] for s in merging])
        merged: list[Segment] = []
        if sum(k.size for k in keeps):
            name = meta.segment_name(meta.next_segment)
            target = folder / SEGMENTS_DIR / name
            target.mkdir(parents=True)
            doclens, _ = copy_rows(target, merging, keeps)
            seg_meta = SegmentMeta(name, int(doclens.size), int(doclens.sum()),
                                   meta.codec.num_centroids if meta.codec is not None else 0)
            merged = [self._finish_merged(target, seg_meta, meta, shared, self.device)]
            meta = meta.replace(next_segment=meta.next_segment + 1)
        own = {s.name for s in self.meta.segments}
        for seg in merging:
            if seg.name not in own:  # written by this very update: not part of the new version after all
                shutil.rmtree(folder / SEGMENTS_DIR / seg.name)
        logger.info("merged %d segments (%d rows) into %d rows", len(merging), sum(s.rows for s in merging),
                    sum(k.size for k in keeps))
        return [*segments[:start], *merged, *segments[end:]], np.setdiff1d(tombstones, dropped), meta

    def _churn_checked(self, meta: IndexMeta) -> IndexMeta:
        """Warn once per build/compaction generation when the index changed by more than CHURN_WARNING."""
        churn = (meta.added_since_build + meta.deleted_since_build) / max(1, meta.built_passages)
        if churn <= CHURN_WARNING or meta.churn_warned:
            return meta
        logger.warning(
            "%.0f%% of this index changed since it was built or compacted (added + deleted passages); "
            "compact it (RAG.compact() / `lateragkit compact`) to drop deleted rows%s. "
            "This warning is given once until the next compaction.",
            100 * churn,
            ", and retrain it for best search quality (RAG.compact(retrain=True) / `lateragkit compact "
            "--retrain`): the compression centroids were trained on the original passages"
            if meta.codec is not None else " or rebuild it",
        )
        return meta.replace(churn_warned=True)

    # ---- rows ------------------------------------------------------------------------------------------
    def _rows_of(self, pids: np.ndarray) -> np.ndarray:
        """Rows (ascending) of the given pids that exist in this index (deleted or not)."""
        pids = np.asarray(pids, dtype=np.int64).reshape(-1)
        if pids.size == 0 or self.pids.size == 0:
            return np.zeros(0, dtype=np.int64)
        rows = np.searchsorted(self.pids, pids)
        rows = np.clip(rows, 0, self.pids.size - 1)
        found = self.pids[rows] == pids
        return np.unique(rows[found])

    def _allowed_rows(self, pids: Any, batch: int) -> list[np.ndarray | None]:
        if pids is None:
            return [None] * batch
        if isinstance(pids, (list, tuple)) and len(pids) and not np.isscalar(pids[0]):
            if len(pids) != batch:
                raise ValueError(f"pids has {len(pids)} arrays for {batch} queries; give one per query or one for all")
            per_query = [np.asarray(p, dtype=np.int64) for p in pids]
        else:
            shared = np.asarray(pids, dtype=np.int64)
            per_query = [shared] * batch
        out: list[np.ndarray | None] = []
        cache: dict[int, np.ndarray] = {}
        for p in per_query:
            key = id(p)
            if key not in cache:
                rows = self._rows_of(p)
                cache[key] = rows[~self.deleted[rows]]
            out.append(cache[key])
        return out

    def _results(self, scores: torch.Tensor, rows: np.ndarray, k: int) -> SearchResult:
        """Top-k of `scores` (aligned with `rows`) as `(float32 scores, int64 pids)`, best first."""
        n = int(rows.size)
        if n == 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        kk = min(k, n)
        top = torch.topk(scores.float(), kk, sorted=True)
        order = top.indices.cpu().numpy()
        return top.values.cpu().numpy().astype(np.float32), self.pids[rows[order]].astype(np.int64)
