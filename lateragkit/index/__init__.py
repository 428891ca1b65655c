"""Passage indexes over packed token vectors: `build_index`, `load_index`, `PassageIndex`.

Two backends share one interface (see docs/ARCHITECTURE.md):
- ``"exact"``: float16 vectors, exhaustive MaxSim — small collections, or when asked for;
- ``"plaid"``: ColBERTv2 residual compression searched with PLAID's four stages.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..exceptions import CorruptIndexError, IndexNotFoundError
from .base import FORMAT_VERSION, META_FILE, PassageIndex, iter_packed, prepare_dir, read_meta, resolve_device
from .exact import ExactIndex, build_exact
from .plaid import DEFAULT_NBITS, PlaidIndex, build_plaid, check_nbits
from .storage import NpyAppender, VersionedDir

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
]

# "auto" picks the exact index below this many passages (k-means has too little data, brute force is fast).
AUTO_EXACT_BELOW = 2000
_SPILL = ".spill-vectors.npy"


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
    if index_type not in ("auto", "exact", "plaid"):
        raise ValueError(f"index_type must be 'auto', 'exact' or 'plaid', not {index_type!r}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    dim = int(dim)
    if nbits is not None or index_type == "plaid":
        check_nbits(DEFAULT_NBITS if nbits is None else nbits, dim)
    dev = resolve_device(device)
    directory = prepare_dir(directory)

    kind = index_type
    if kind == "auto" and num_passages is not None:
        kind = "exact" if num_passages < AUTO_EXACT_BELOW else "plaid"
    if kind == "exact":
        return build_exact(directory, batches, dim=dim, device=dev)

    # Spill every chunk to one .npy under the staging folder; PLAID then samples and compresses from it.
    spill = directory / _SPILL
    doclens_list = []
    try:
        with NpyAppender(spill, np.float16, (dim,)) as out:
            bar = tqdm(desc="indexing: reading vectors", unit="passage", disable=not show_progress, total=num_passages)
            for vecs, lens in iter_packed(batches, dim):
                out.append(vecs)
                doclens_list.append(lens)
                bar.update(int(lens.size))
            bar.close()
        doclens = np.concatenate(doclens_list) if doclens_list else np.zeros(0, dtype=np.int64)
        if num_passages is not None and num_passages != doclens.size:
            logger.warning("num_passages=%d given but %d passages were received", num_passages, doclens.size)
        if kind == "auto":
            kind = "exact" if doclens.size < AUTO_EXACT_BELOW else "plaid"
        if kind == "exact":
            return build_exact(directory, (), dim=dim, device=dev, spilled=(spill, doclens))
        return build_plaid(
            directory,
            spill,
            doclens,
            dim=dim,
            nbits=DEFAULT_NBITS if nbits is None else int(nbits),
            device=dev,
            seed=seed,
            show_progress=show_progress,
            num_centroids=num_centroids,
        )
    finally:
        spill.unlink(missing_ok=True)


def load_index(directory: str | os.PathLike[str], *, device: str | torch.device | None = None) -> PassageIndex:
    """Open an index folder written by `build_index` (its arrays memory-mapped).

    `IndexNotFoundError` when the folder does not exist; `CorruptIndexError` naming the file on any
    missing, truncated, mis-shaped, pickled or other-version file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IndexNotFoundError(f"no index at {directory}; build one with build_index() first")
    meta = read_meta(directory)
    dev = resolve_device(device)
    cls: type[PassageIndex] = ExactIndex if meta["kind"] == "exact" else PlaidIndex
    try:
        return cls(directory, meta, dev)
    except CorruptIndexError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptIndexError(
            f"{directory / META_FILE} is inconsistent with the index files ({exc!r}); the index must be rebuilt"
        ) from exc
