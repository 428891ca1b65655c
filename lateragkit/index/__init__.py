"""Passage indexes over packed token vectors: `build_index`, `load_index`, `PassageIndex`.

Backends register by kind (`registry`); two ship with lateragkit and share one interface
(see docs/ARCHITECTURE.md):
- ``"exact"``: float16 vectors, exhaustive MaxSim — small collections, or when asked for;
- ``"plaid"``: ColBERTv2 residual compression searched with PLAID's four stages.

An index is a list of immutable segments plus per-version tombstones (`base`); adds and deletes write
O(change) new versions that hard-link the unchanged files.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..exceptions import CorruptIndexError, IndexNotFoundError
from .base import SPILL_FILE, PassageIndex, prepare_dir, resolve_device
from .codec import check_nbits
from .exact import ExactIndex
from .meta import FORMAT_VERSION, META_FILE, read_meta
from .packed import spill_batches
from .plaid import PlaidIndex
from .plaid_build import DEFAULT_NBITS
from .registry import backend_class, kinds
from .storage import VersionedDir

logger = logging.getLogger(__name__)

__all__ = [
    "build_index",
    "load_index",
    "PassageIndex",
    "ExactIndex",
    "PlaidIndex",
    "VersionedDir",
    "FORMAT_VERSION",
    "AUTO_EXACT_BELOW",
    "kinds",
]

# "auto" picks the exact index below this many passages (k-means has too little data, brute force is fast).
AUTO_EXACT_BELOW = 2000


def _auto_kind(num_passages: int) -> str:
    return "exact" if num_passages < AUTO_EXACT_BELOW else "plaid"


def build_index(
    directory: str | os.PathLike[str],
    batches: Iterable[tuple[Any, Any]],
    *,
    dim: int,
    index_type: str = "auto",
    num_passages: int | None = None,
    nbits: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    show_progress: bool = False,
    num_centroids: int | None = None,
) -> PassageIndex:
    """Build an index from packed `(vectors float16 [n, dim], doclens int64 [m])` chunks into ``directory``.

    The chunks are consumed one at a time and spilled to disk, so the collection's vectors are never
    all in memory. ``index_type="auto"`` picks ``"exact"`` below 2,000 passages, else ``"plaid"``
    (``num_passages`` decides when given, else the count of passages actually received).
    ``nbits`` (PLAID only): 1, 2 or 4 bits per dimension, default 2.
    """
    if index_type != "auto" and index_type not in kinds():
        raise ValueError(f"index_type must be 'auto' or one of {list(kinds())}, not {index_type!r}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    dim = int(dim)
    if nbits is not None or index_type == PlaidIndex.kind:
        check_nbits(DEFAULT_NBITS if nbits is None else nbits, dim)
    dev = resolve_device(device)
    directory = prepare_dir(directory)
    kind = _auto_kind(num_passages) if index_type == "auto" and num_passages is not None else index_type
    spill = directory / SPILL_FILE
    try:
        doclens = spill_batches(spill, batches, dim, show_progress=show_progress, total=num_passages)
        if num_passages is not None and num_passages != doclens.size:
            logger.warning("num_passages=%d given but %d passages were received", num_passages, doclens.size)
        if kind == "auto":
            kind = _auto_kind(int(doclens.size))
        return backend_class(kind).build(
            directory, spill, doclens, dim=dim, device=dev, nbits=nbits, seed=seed, num_centroids=num_centroids,
            show_progress=show_progress,
        )
    finally:
        spill.unlink(missing_ok=True)


def load_index(
    directory: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    reuse: PassageIndex | None = None,
) -> PassageIndex:
    """Open an index folder written by `build_index` or an update (its arrays memory-mapped).

    ``reuse``: an index already open (e.g. the one a write returned, whose folder was then renamed into
    place): its loaded segments and codec are reused wherever this folder holds the very same files (hard
    links), so re-opening after a write costs O(new files), not O(index).

    `IndexNotFoundError` when the folder does not exist; `CorruptIndexError` naming the file on any
    missing, truncated, mis-shaped, pickled or other-version file. Folders of format 1 (lateragkit 0.1)
    open as an index of one segment; their next write converts them to format 2 by hard links.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IndexNotFoundError(f"no index at {directory}; build one with build_index() first")
    meta = read_meta(directory)
    cls = backend_class(meta.kind, source=directory / META_FILE)
    try:
        return cls.open(directory, meta, resolve_device(device), reuse=reuse)
    except CorruptIndexError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptIndexError(
            f"{directory / META_FILE} is inconsistent with the index files ({exc!r}); the index must be rebuilt"
        ) from exc
