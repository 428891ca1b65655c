"""PLAID index: ColBERTv2 residual compression in immutable segments sharing one codec.

Files of a version (besides `metadata.json` and `tombstones.npy`, see `base`):

- ``codec/centroids.npy`` (float16 [K, dim], unit rows), ``codec/bucket_cutoffs.npy`` /
  ``codec/bucket_weights.npy`` (float32 [2^nbits - 1] / [2^nbits]);
- per segment ``segments/seg-NNNNNN/``: ``doclens.npy``, ``pids.npy``, ``codes.npy`` (int16 while
  K <= 32,768, else int32, one per token), ``residuals.npy`` (uint8 [tokens, dim*nbits/8], colbert-ai bit
  layout), ``ivf_rows.npy`` (local row ids, uint16 up to 65,536 rows, else int32) + ``ivf_offsets.npy``
  (int64 [K_seg + 1]): for each centroid the sorted unique rows having a token with that code (CSR),
  ``norms.npy`` (float16 [tokens]: each token's decompression scale minus one,
  `ResidualCodec.scale_offsets`; segments written before it existed get it computed when the index opens).

An add compresses the new passages with the existing codec into a new segment; when most new tokens are
far from every centroid, centroids are appended for them first (old codes stay valid; older segments simply
have empty lists for the new centroids). Building: `plaid_build`; searching: `plaid_search`.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..exceptions import CorruptIndexError
from .base import PassageIndex, as_tensor
from .codec import COARSE_FILE, CODEC_DIR, CODEC_FILES, NORMS_FILE, ResidualCodec, StoredCodec, check_nbits
from .ivf import SegmentedIVF, passage_codes, row_dtype
from .meta import IndexMeta, SegmentMeta
from .plaid_build import DEFAULT_NBITS, compress_into, grow_codec, train_codec, write_ivf
from .plaid_search import PlaidSearch, plaid_params
from .registry import register
from .segments import Segment, SegmentedArray, file_identity, save_rows
from .storage import link_or_copy, load_npy

logger = logging.getLogger(__name__)

__all__ = ["PlaidIndex", "PlaidSegment", "plaid_params", "DEFAULT_NBITS", "check_nbits"]

_REBUILD = "the index must be rebuilt"
# Tokens whose scales are computed per step for a segment that predates `norms.npy`.
NORM_TOKENS = 1 << 15


class PlaidSegment(Segment):
    """Codes, residuals and inverted lists of one segment (memory-mapped; resident copies on an accelerator)."""

    FILES = ("doclens.npy", "pids.npy", "codes.npy", "residuals.npy", "ivf_rows.npy", "ivf_offsets.npy")

    def __init__(self, folder: Path, meta: SegmentMeta, index: IndexMeta, device: torch.device) -> None:
        super().__init__(folder, meta, index, device)
        if index.codec is None or not 0 < meta.num_centroids <= index.codec.num_centroids:
            raise CorruptIndexError(f"{folder} is a PLAID segment of an index without a matching codec; {_REBUILD}")
        nbits, K = index.codec.nbits, meta.num_centroids
        self.codes = load_npy(folder / "codes.npy", dtype=(np.int16, np.int32), shape=(self.num_tokens,))
        self.residuals = load_npy(
            folder / "residuals.npy", dtype=np.uint8, shape=(self.num_tokens, index.dim * nbits // 8)
        )
        self.ivf_offsets = load_npy(folder / "ivf_offsets.npy", dtype=np.int64, shape=(K + 1,), mmap=False)
        # int32 is always read; 2-byte ids only where they fit (uint16 since issue 14, int16 before)
        rows_dtypes = (np.uint16, np.int16, np.int32) if row_dtype(self.rows) == np.uint16 else (np.int32,)
        self.ivf_rows = load_npy(folder / "ivf_rows.npy", dtype=rows_dtypes, shape=(None,))
        off = self.ivf_offsets
        if int(off[0]) != 0 or int(off[-1]) != self.ivf_rows.shape[0] or np.any(np.diff(off) < 0):
            raise CorruptIndexError(
                f"{folder / 'ivf_offsets.npy'} does not match {folder / 'ivf_rows.npy'}; {_REBUILD}"
            )
        if self.num_tokens and (int(self.codes.max()) >= K or int(self.codes.min()) < 0):
            raise CorruptIndexError(f"{folder / 'codes.npy'} holds codes outside [0, {K}); {_REBUILD}")
        if self.ivf_rows.shape[0] and (int(self.ivf_rows.max()) >= self.rows or int(self.ivf_rows.min()) < 0):
            raise CorruptIndexError(f"{folder / 'ivf_rows.npy'} points outside the segment's rows; {_REBUILD}")
        self.norms: np.ndarray | None = None  # computed by `ensure_norms` when the segment predates the file
        if meta.scales:
            self.norms = load_npy(folder / NORMS_FILE, dtype=np.float16, shape=(self.num_tokens,))
            if not np.all(np.isfinite(self.norms)) or (self.num_tokens and float(self.norms.min()) <= -1):
                raise CorruptIndexError(f"{folder / NORMS_FILE} holds non-finite or non-positive scales; {_REBUILD}")
        # CPU: views over the memory maps (pages load on demand); accelerator: resident copies.
        self._codes = as_tensor(self.codes, device)
        self._residuals = as_tensor(self.residuals, device)
        # accelerators: int32 (torch's uint16 support there is partial)
        self._ivf_rows = as_tensor(self.ivf_rows if device.type == "cpu" else self.ivf_rows.astype(np.int32), device)
        self._offsets: dict[int, torch.Tensor] = {}
        self._norm_tensor: torch.Tensor | None = None
        self._passage_codes: tuple[torch.Tensor, np.ndarray] | None = None
        self._seal(folder)

    def files(self) -> tuple[str, ...]:
        return self.FILES + ((NORMS_FILE,) if self.meta.scales else ())

    def token_arrays(self) -> dict[str, np.ndarray]:
        if self.norms is None:
            raise RuntimeError(f"segment {self.name}: ensure_norms() must run before its rows are copied")
        return {"codes.npy": self.codes, "residuals.npy": self.residuals, NORMS_FILE: self.norms}

    def ensure_norms(self, codec: ResidualCodec) -> torch.Tensor:
        """The tokens' decompression scale offsets: read from ``norms.npy``, or (a segment written before that
        file existed) computed once from the codes and residuals, as `compress_into` would have stored them."""
        if self.norms is None:
            logger.info("segment %s predates %s: computing the scales of its %d tokens (rebuilding the "
                        "index, or compact(retrain=True), stores them)", self.name, NORMS_FILE, self.num_tokens)
            out = np.empty(self.num_tokens, dtype=np.float16)
            for s in range(0, self.num_tokens, NORM_TOKENS):
                e = min(self.num_tokens, s + NORM_TOKENS)
                out[s:e] = codec.scale_offsets(self._codes[s:e], self._residuals[s:e]).cpu().numpy()
            self.norms = out
        if self._norm_tensor is None:
            self._norm_tensor = as_tensor(self.norms, self.device)
        return self._norm_tensor

    def passage_codes(self) -> tuple[torch.Tensor, np.ndarray]:
        """Each row's distinct codes (`ivf.passage_codes`: the inverted lists turned around, in memory only),
        as `(codes on the device, int64 row offsets [rows + 1])`; made once per segment object (a reopened
        index that reuses this segment reuses them)."""
        if self._passage_codes is None:
            codes, offsets = passage_codes(self.ivf_rows, self.ivf_offsets, self.rows)
            self._passage_codes = as_tensor(codes, self.device), offsets
        return self._passage_codes

    def ivf_offsets_for(self, num_centroids: int) -> torch.Tensor:
        """The segment's list offsets for an index of ``num_centroids`` (later centroids: empty lists)."""
        if num_centroids not in self._offsets:
            off = self.ivf_offsets
            pad = np.full(num_centroids + 1 - off.size, off[-1], dtype=np.int64)
            self._offsets[num_centroids] = torch.from_numpy(np.concatenate([off, pad])).to(self.device)
        return self._offsets[num_centroids]


@register
class PlaidIndex(PlaidSearch):
    kind = "plaid"
    segment_class = PlaidSegment
    shared: StoredCodec

    def _prepare_search(self) -> None:
        codec = self.shared
        self.codec = codec.codec
        self.centroids = codec.centroids
        self.nbits = codec.meta.nbits
        self.num_centroids = K = codec.num_centroids
        segments: list[PlaidSegment] = [s for s in self.segments if isinstance(s, PlaidSegment)]
        for seg in segments:
            if seg.meta.num_centroids > K:
                raise CorruptIndexError(f"{self.directory / 'metadata.json'}: segment {seg.name} has more "
                                        f"centroids than the codec; {_REBUILD}")
        dev = self.device
        self._ivf = SegmentedIVF([(s._ivf_rows, s.ivf_offsets_for(K)) for s in segments], self.row_starts[:-1].tolist())
        self._codes = SegmentedArray([s._codes for s in segments], row_shape=(), dtype=torch.int16, device=dev)
        packed = self.dim * self.nbits // 8
        self._residuals = SegmentedArray([s._residuals for s in segments], row_shape=(packed,), dtype=torch.uint8,
                                         device=dev)
        self._norms = SegmentedArray([s.ensure_norms(self.codec) for s in segments], row_shape=(),
                                     dtype=torch.float16, device=dev)
        pcodes = [s.passage_codes() for s in segments]
        self._passage_codes = SegmentedArray([c for c, _ in pcodes], row_shape=(), dtype=torch.int16, device=dev)
        # each row's count of distinct codes; the segments' code arrays follow one another like their rows
        pc_lens = np.concatenate([np.diff(off) for _, off in pcodes] or [np.zeros(0, dtype=np.int64)])
        self._pc_lens = torch.from_numpy(pc_lens).to(dev)
        self._pc_starts = torch.cumsum(self._pc_lens, 0) - self._pc_lens
        self._tok_offsets = torch.from_numpy(self.tok_offsets[:-1].copy()).to(dev)
        self._doclens = torch.from_numpy(self.doclens.copy()).to(dev)
        self._live = torch.from_numpy(~self.deleted).to(dev)

    @property
    def cluster_threshold(self) -> float:
        return self.shared.meta.cluster_threshold

    # ---- shared codec --------------------------------------------------------------------------------
    @classmethod
    def _open_shared(
        cls, directory: Path, meta: IndexMeta, device: torch.device, reuse: PassageIndex | None
    ) -> StoredCodec:
        if meta.codec is None:
            raise CorruptIndexError(f"{directory / 'metadata.json'} lacks the PLAID codec entry; {_REBUILD}")
        folder = directory if meta.flat_layout else directory / CODEC_DIR
        old = reuse.shared if reuse is not None else None
        if isinstance(old, StoredCodec) and old.meta == meta.codec and old.same_files(folder):
            return old
        return StoredCodec.load(folder, meta.codec, meta.dim, device)

    def _shared_folder(self) -> Path:
        return self.directory if self.meta.flat_layout else self.directory / CODEC_DIR

    @classmethod
    def _write_shared(cls, directory: Path, shared: Any, link_from: Path | None) -> None:
        target = directory / CODEC_DIR
        if link_from is None:
            shared.save(target)
            shared.identity = file_identity(target, CODEC_FILES)
            return
        target.mkdir()
        optional = (COARSE_FILE,) if (link_from / COARSE_FILE).exists() else ()
        for name in CODEC_FILES + optional:
            link_or_copy(link_from / name, target / name)

    @classmethod
    def _train_shared(
        cls, spill: Path, doclens: np.ndarray, *, dim: int, device: torch.device, nbits: int | None, seed: int,
        num_centroids: int | None,
    ) -> StoredCodec:
        vectors = np.load(spill, mmap_mode="r", allow_pickle=False)
        return train_codec(vectors, doclens, nbits=DEFAULT_NBITS if nbits is None else nbits, device=device,
                           seed=seed, num_centroids=num_centroids)

    # ---- segments ------------------------------------------------------------------------------------
    @classmethod
    def _write_segment(
        cls, folder: Path, meta: IndexMeta, spill: Path, doclens: np.ndarray, pids: np.ndarray, shared: Any,
        device: torch.device, *, grow: bool, show_progress: bool = False,
    ) -> tuple[Segment, Any, IndexMeta]:
        vectors = np.load(spill, mmap_mode="r", allow_pickle=False)
        codes = None
        if grow:
            shared, codes = grow_codec(vectors, shared, meta.num_tokens)
        compress_into(folder, vectors, shared, codes=codes, show_progress=show_progress)
        del vectors
        K = shared.num_centroids
        write_ivf(folder, doclens, K)
        save_rows(folder, doclens, pids)
        meta = meta.replace(codec=shared.meta)
        seg_meta = SegmentMeta(folder.name, int(doclens.size), int(doclens.sum()), K, scales=True)
        return PlaidSegment(folder, seg_meta, meta, device), shared, meta

    @classmethod
    def _finish_merged(
        cls, folder: Path, seg_meta: SegmentMeta, meta: IndexMeta, shared: Any, device: torch.device
    ) -> Segment:
        doclens = np.load(folder / "doclens.npy", allow_pickle=False)
        write_ivf(folder, doclens, seg_meta.num_centroids)
        # `copy_rows` copied the scales with the other per-token arrays (`token_arrays`)
        return PlaidSegment(folder, dataclasses.replace(seg_meta, scales=True), meta, device)
