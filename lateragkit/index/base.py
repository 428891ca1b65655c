"""`PassageIndex`: what every backend (exact, plaid) shares — passage ids, tombstones, input checks.

Row layout common to all backends: row ``r`` of the index is one passage with id ``pids[r]`` (ascending,
never reused), ``doclens[r]`` token vectors and a tombstone ``deleted[r]``. Rows of deleted passages stay
until an explicit ``compact()``, which drops them but keeps every other passage's id.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..exceptions import CorruptIndexError
from .storage import link_or_copy, load_npy, read_json, save_npy, write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "metadata.json"
SEARCH_PARAMS = ("ncells", "centroid_score_threshold", "ndocs", "max_exact_subset")
# Fraction of passages added or deleted since the build above which a rebuild is recommended.
CHURN_WARNING = 0.10

SearchResult = tuple[np.ndarray, np.ndarray]
Batches = Iterable[tuple[Any, Any]]


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


def iter_packed(batches: Batches, dim: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Check and normalise each packed chunk to `(float16 [n, dim], int64 [m])`, one at a time."""
    if isinstance(batches, tuple) and len(batches) == 2 and not isinstance(batches[0], tuple):
        raise TypeError("batches must be an iterable of (vectors, doclens) chunks; wrap a single chunk in a list")
    for i, item in enumerate(batches):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"chunk {i} must be a (vectors, doclens) pair, got {type(item).__name__}")
        vectors, doclens = item
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().to("cpu", torch.float16).numpy()
        if isinstance(doclens, torch.Tensor):
            doclens = doclens.detach().cpu().numpy()
        vectors = np.asarray(vectors)
        doclens = np.asarray(doclens)
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise ValueError(f"chunk {i}: vectors must have shape [n_tokens, {dim}], got {vectors.shape}")
        if doclens.ndim != 1 or (doclens.size and not np.issubdtype(doclens.dtype, np.integer)):
            raise ValueError(f"chunk {i}: doclens must be a 1-D integer array, got {doclens.dtype} {doclens.shape}")
        doclens = doclens.astype(np.int64, copy=False)
        if doclens.size and int(doclens.min()) < 0:
            raise ValueError(f"chunk {i}: doclens contains a negative length")
        if int(doclens.sum()) != vectors.shape[0]:
            raise ValueError(f"chunk {i}: doclens sum to {int(doclens.sum())} but there are {vectors.shape[0]} vectors")
        vectors = np.ascontiguousarray(vectors, dtype=np.float16)
        if vectors.size and not np.isfinite(vectors).all():
            raise ValueError(f"chunk {i}: vectors contain NaN or infinite values (overflow in float16?)")
        yield vectors, doclens


def token_ranges(
    starts: torch.Tensor, lens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token positions of several documents (`starts`, `lens`), concatenated, and each token's document index."""
    n = lens.numel()
    doc = torch.repeat_interleave(torch.arange(n, device=lens.device), lens)
    first = torch.cumsum(lens, 0) - lens
    tok = torch.arange(doc.numel(), device=lens.device) - first[doc] + starts[doc]
    return tok, doc


class PassageIndex:
    """Base class of the index backends. Subclasses implement `_search_rows`, `add`, `compact`."""

    kind: str = ""
    # files a backend does not rewrite on delete (hard-linked into the new version)
    _DATA_FILES: tuple[str, ...] = ()

    def __init__(self, directory: Path, meta: dict[str, Any], device: torch.device) -> None:
        self.directory = Path(directory)
        self.meta = meta
        self.device = device
        self.dim = int(meta["dim"])
        n_rows = int(meta["num_rows"])
        self.doclens = load_npy(self.directory / "doclens.npy", dtype=np.int64, shape=(n_rows,), mmap=False)
        self.pids = load_npy(self.directory / "pids.npy", dtype=np.int64, shape=(n_rows,), mmap=False)
        deleted = load_npy(self.directory / "deleted.npy", dtype=[np.uint8, np.bool_], shape=(n_rows,), mmap=False)
        self.deleted = deleted.astype(bool)
        if n_rows and (int(self.doclens.min()) < 0 or np.any(np.diff(self.pids) <= 0) or int(self.pids[0]) < 0):
            raise CorruptIndexError(
                f"{self.directory / 'pids.npy'} or doclens.npy holds invalid values; the index must be rebuilt"
            )
        if n_rows and int(self.pids[-1]) >= int(meta["next_pid"]):
            raise CorruptIndexError(
                f"{self.directory / META_FILE} has a next_pid below a stored pid; the index must be rebuilt"
            )
        self.tok_offsets = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(self.doclens, out=self.tok_offsets[1:])
        self.num_tokens = int(self.tok_offsets[-1])
        if self.num_tokens != int(meta["num_tokens"]):
            raise CorruptIndexError(
                f"{self.directory / 'doclens.npy'} sums to {self.num_tokens} tokens, metadata says "
                f"{meta['num_tokens']}; the index must be rebuilt"
            )

    # ---- public API ----------------------------------------------------------------------------
    @property
    def num_passages(self) -> int:
        """Number of live (not deleted) passages."""
        return int(self.pids.size - int(self.deleted.sum()))

    @property
    def num_rows(self) -> int:
        return int(self.pids.size)

    def live_pids(self) -> np.ndarray:
        return self.pids[~self.deleted].copy()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(passages={self.num_passages}, tokens={self.num_tokens}, dim={self.dim}, "
            f"directory={str(self.directory)!r})"
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

    def delete(self, directory: str | Path, pids: np.ndarray | Sequence[int]) -> PassageIndex:
        """Tombstone ``pids`` in a new index written to ``directory``; ``self`` is left untouched."""
        directory = prepare_dir(directory)
        pids = np.unique(np.asarray(pids, dtype=np.int64).reshape(-1))
        rows = self._rows_of(pids)
        deleted = self.deleted.copy()
        newly = int((~deleted[rows]).sum())
        deleted[rows] = True
        if rows.size < pids.size:
            logger.warning(
                "delete: %d of %d pids are not in the index and were ignored", pids.size - rows.size, pids.size
            )
        for name in self._DATA_FILES + ("doclens.npy", "pids.npy"):
            link_or_copy(self.directory / name, directory / name)
        save_npy(directory / "deleted.npy", deleted.astype(np.uint8))
        meta = dict(self.meta)
        meta["deleted_since_build"] = int(meta.get("deleted_since_build", 0)) + newly
        write_json(directory / META_FILE, meta)
        self._warn_churn(meta)
        return type(self).load(directory, device=self.device)

    def add(self, directory: str | Path, batches: Batches) -> tuple[PassageIndex, np.ndarray]:
        raise NotImplementedError

    def compact(self, directory: str | Path) -> PassageIndex:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path, *, device: torch.device) -> PassageIndex:
        meta = read_meta(Path(directory), expect_kind=cls.kind)
        return cls(Path(directory), meta, device)

    # ---- helpers for subclasses ------------------------------------------------------------------
    def _search_rows(
        self,
        Q: torch.Tensor,
        Q_mask: torch.Tensor,
        k: int,
        allowed: list[np.ndarray | None],
        params: dict[str, Any],
    ) -> list[SearchResult]:
        raise NotImplementedError

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

    def _warn_churn(self, meta: dict[str, Any]) -> None:
        built = max(1, int(meta.get("built_passages", 1)))
        churn = (int(meta.get("added_since_build", 0)) + int(meta.get("deleted_since_build", 0))) / built
        if churn > CHURN_WARNING:
            logger.warning(
                "%.0f%% of this index changed since it was built (added + deleted passages); "
                "rebuild it for best search quality and size%s",
                100 * churn,
                " (compression centroids were trained on the original passages)" if self.kind == "plaid" else "",
            )


def prepare_dir(directory: str | Path) -> Path:
    """Create ``directory`` if needed and check that it is empty."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise ValueError(f"{directory} is not empty; an index is written into an empty (staging) folder")
    return directory


def read_meta(directory: Path, *, expect_kind: str | None = None) -> dict[str, Any]:
    path = directory / META_FILE
    meta = read_json(path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise CorruptIndexError(
            f"{path} has format_version {meta.get('format_version')!r}, this lateragkit reads "
            f"{FORMAT_VERSION}; the index must be rebuilt"
        )
    kind = meta.get("kind")
    if kind not in ("exact", "plaid") or (expect_kind is not None and kind != expect_kind):
        raise CorruptIndexError(f"{path} names an unknown index kind {kind!r}; the index must be rebuilt")
    for key in ("dim", "num_rows", "num_tokens", "next_pid"):
        if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool) or meta[key] < 0:
            raise CorruptIndexError(f"{path} lacks a valid {key!r}; the index must be rebuilt")
    return meta


def write_common(
    directory: Path, *, doclens: np.ndarray, pids: np.ndarray, deleted: np.ndarray, meta: dict[str, Any]
) -> None:
    save_npy(directory / "doclens.npy", doclens.astype(np.int64))
    save_npy(directory / "pids.npy", pids.astype(np.int64))
    save_npy(directory / "deleted.npy", deleted.astype(np.uint8))
    meta = {**meta, "format_version": FORMAT_VERSION, "num_rows": int(pids.size), "num_tokens": int(doclens.sum())}
    write_json(directory / META_FILE, meta)
