"""ColBERTv2 residual codec: a centroid code plus a per-dimension residual quantised to `nbits` bits.

Layout (the one colbert-ai writes, so indexes convert losslessly): each vector takes `dim * nbits / 8`
bytes; each byte holds `8 / nbits` consecutive dimensions, the first dimension in the most significant
group, and within a group the bucket index is stored bit-reversed (least significant bit first).
Decoding: `x = (centroid[code] + bucket_weights[bucket]) * scale`, where ``scale`` is the inverse norm of
that sum, stored per token beside the codes as ``scale - 1`` in float16 (`ResidualCodec.scale_offsets`): the
exact stage of search then never gathers centroid rows (`ResidualCodec.token_scores`), and the decompressed
vector is unit length to within the stored scale's rounding (~3e-5).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..exceptions import CorruptIndexError
from .kmeans import CentroidAssigner
from .meta import CodecMeta
from .packed import take_rows
from .segments import FileIdentity, file_identity
from .storage import load_npy, save_npy

__all__ = ["ResidualCodec", "StoredCodec", "check_nbits", "bucket_tables", "quantile_buckets", "CODEC_DIR",
           "CODEC_FILES", "COARSE_FILE", "NORMS_FILE"]

VALID_NBITS = (1, 2, 4)
# Smallest norm of a decoded token before it is scaled (a zero vector would make its scale infinite).
MIN_NORM = 1e-4


def check_nbits(nbits: int, dim: int) -> int:
    if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)) or int(nbits) not in VALID_NBITS:
        raise ValueError(f"nbits must be 1, 2 or 4 (bits per dimension of the residual), got {nbits!r}")
    nbits = int(nbits)
    if dim % (8 * nbits) != 0:
        raise ValueError(
            f"dim={dim} is not a multiple of 8*nbits={8 * nbits}: residuals are packed into whole bytes; "
            f"choose nbits in {[b for b in VALID_NBITS if dim % (8 * b) == 0] or 'none'} or use index_type='exact'"
        )
    return nbits


def quantile_buckets(residuals: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """Global bucket cutoffs (`2^nbits - 1`) and weights (`2^nbits`) from held-out residuals.

    numpy's quantile has no input-size limit (torch.quantile refuses more than 2^24 values).
    """
    flat = np.asarray(residuals, dtype=np.float32).reshape(-1)
    B = 1 << nbits
    cutoffs = np.quantile(flat, np.arange(1, B) / B).astype(np.float32)
    weights = np.quantile(flat, (np.arange(B) + 0.5) / B).astype(np.float32)
    return cutoffs, weights


def bucket_tables(nbits: int) -> np.ndarray:
    """`uint8 [256, 8 // nbits]`: the bucket index of each dimension stored in a given byte value."""
    per = 8 // nbits
    mask = (1 << nbits) - 1
    values = np.arange(256, dtype=np.int64)[:, None]
    shifts = 8 - nbits * (np.arange(per) + 1)
    groups = (values >> shifts[None, :]) & mask  # groups in byte order, most significant first
    # undo the bit reversal inside each group
    out = np.zeros_like(groups)
    for b in range(nbits):
        out |= ((groups >> (nbits - 1 - b)) & 1) << b
    return out.astype(np.uint8)


class ResidualCodec:
    """Compress and decompress vectors against fixed centroids and bucket tables."""

    def __init__(
        self,
        centroids: np.ndarray | torch.Tensor,
        cutoffs: np.ndarray,
        weights: np.ndarray,
        nbits: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.nbits = int(nbits)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        C = torch.as_tensor(np.asarray(centroids)) if not isinstance(centroids, torch.Tensor) else centroids
        self.dim = int(C.shape[1])
        check_nbits(self.nbits, self.dim)
        self.centroids = C.to(self.device, self.dtype)
        self.cutoffs = torch.as_tensor(np.asarray(cutoffs, dtype=np.float32), device=self.device)
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float32), device=self.device)
        if self.cutoffs.numel() != (1 << nbits) - 1 or self.weights.numel() != 1 << nbits:
            raise ValueError(f"bucket tables do not match nbits={nbits}")
        idx = torch.from_numpy(bucket_tables(self.nbits).astype(np.int64)).to(self.device)
        self._lookup32 = self.weights[idx]  # [256, 8 // nbits] decoded weights per byte, float32
        self._lookup = self._lookup32.to(self.dtype)
        self._shifts = [8 - self.nbits * (j + 1) for j in range(8 // self.nbits)]

    @property
    def packed_dim(self) -> int:
        return self.dim * self.nbits // 8

    def set_centroids(self, centroids: np.ndarray | torch.Tensor) -> None:
        C = torch.as_tensor(np.asarray(centroids)) if not isinstance(centroids, torch.Tensor) else centroids
        self.centroids = C.to(self.device, self.dtype)

    # ---- bit packing --------------------------------------------------------------------------------
    def quantize(self, residuals: torch.Tensor) -> torch.Tensor:
        """Bucket index per dimension (`right=False`: a value equal to a cutoff goes to the lower bucket)."""
        r = residuals.float()
        # the count of cutoffs strictly below each value (= bucketize(right=False)); a few compare
        # passes in uint8 beat a binary search per element for at most 15 cutoffs
        out = torch.zeros(r.shape, dtype=torch.uint8, device=r.device)
        for c in self.cutoffs.tolist():
            out += r > c
        return out

    def pack(self, buckets: torch.Tensor) -> torch.Tensor:
        """`[n, dim]` bucket indices -> `uint8 [n, dim * nbits / 8]` in the colbert-ai layout."""
        n = buckets.shape[0]
        b = buckets.to(self.device, torch.uint8)
        rev = (b & 1) << (self.nbits - 1)  # reverse the nbits bits of each index, in uint8 arithmetic
        for i in range(1, self.nbits):
            rev |= ((b >> i) & 1) << (self.nbits - 1 - i)
        groups = rev.reshape(n, self.packed_dim, 8 // self.nbits)
        out = groups[..., 0] << self._shifts[0]
        for j in range(1, len(self._shifts)):
            out |= groups[..., j] << self._shifts[j]
        return out

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """Inverse of `pack`: `uint8 [n, dim * nbits / 8]` -> bucket indices `[n, dim]`."""
        table = torch.from_numpy(bucket_tables(self.nbits).astype(np.int64)).to(packed.device)
        return table[packed.long()].reshape(packed.shape[0], self.dim)

    # ---- codec ---------------------------------------------------------------------------------------
    def compress(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Packed residuals of `x` (`[n, dim]`) against the centroids `codes` (`[n]`)."""
        return self._pack_against(x, self._centroid_rows(codes))

    def compress_scaled(self, x: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`compress` and the `scale_offsets` of the result, gathering the centroid rows once."""
        centroid = self._centroid_rows(codes)
        packed = self._pack_against(x, centroid)
        return packed, self._offsets_against(centroid, packed)

    def _centroid_rows(self, codes: torch.Tensor) -> torch.Tensor:
        return take_rows(self.centroids, codes.to(self.device)).float()

    def _pack_against(self, x: torch.Tensor, centroid: torch.Tensor) -> torch.Tensor:
        return self.pack(self.quantize(x.to(self.device, torch.float32) - centroid))

    def residuals(self, packed: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """`[n, dim]` decoded residuals of packed rows (one gather of each byte's ``8 / nbits`` weights)."""
        n = int(packed.shape[0])
        table = self._lookup if dtype is None or dtype == self._lookup.dtype else self._lookup32.to(dtype)
        return take_rows(table, packed.to(self.device).reshape(-1)).view(n, self.dim)

    def scale_offsets(self, codes: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """`float16 [n]`: each token's decompression scale minus one, ``1 / ||centroid + residual|| - 1``
        (computed in float32 on every device, then rounded): what ``norms.npy`` stores beside the codes. The
        scales lie near 1, so storing their offset from 1 keeps float16's 11 significant bits for the
        deviation: a scale is exact to ~3e-5 relative, where float16 of the scale itself would give 5e-4."""
        return self._offsets_against(self._centroid_rows(codes), packed)

    def _offsets_against(self, centroid: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """`scale_offsets` from the tokens' float32 centroid rows (the decoded residuals are added in place)."""
        if int(centroid.shape[0]) == 0:
            return torch.zeros(0, dtype=torch.float16, device=self.device)
        centroid += self.residuals(packed, torch.float32)  # the decoded token, before scaling
        return self._offsets_of(centroid)

    @staticmethod
    def _offsets_of(x: torch.Tensor) -> torch.Tensor:
        """`scale_offsets` of float32 sums ``centroid + residual`` already made."""
        norms = torch.linalg.vector_norm(x, dim=1).clamp_min_(MIN_NORM)
        return (torch.reciprocal_(norms) - 1.0).to(torch.float16)

    def scales(self, offsets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`[n, 1]` decompression scales from their stored offsets (`scale_offsets`)."""
        return (offsets.to(self.device, torch.float32) + 1.0).to(dtype)[:, None]

    def decompress(
        self, codes: torch.Tensor, packed: torch.Tensor, offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`[n, dim]` vectors of unit length (to the stored scale's rounding, ~3e-5; float32 on CPU, float16
        on CUDA): ``(centroid + residual) * scale``. ``offsets``: the stored scale offsets of these tokens
        (`scale_offsets`; computed here, to the same values, when not given).

        Two table gathers (the centroid rows; each residual byte's `8 / nbits` decoded weights), one add and
        one scale. Callers decompress in blocks of a few thousand tokens (`plaid_search.EXACT_TOKENS`): the
        passes then stay in the CPU cache, several times faster than one pass over a large block.
        """
        n = int(codes.shape[0])
        if n == 0:
            return torch.zeros(0, self.dim, dtype=self.dtype, device=self.device)
        x = take_rows(self.centroids, codes.to(self.device))
        x += self.residuals(packed)
        if offsets is None:  # float32 (CPU): these very sums give the scales; float16: summed again in float32
            offsets = self._offsets_of(x) if x.dtype == torch.float32 else self.scale_offsets(codes, packed)
        x *= self.scales(offsets, x.dtype)
        return x

    def token_scores(
        self, residuals: torch.Tensor, centroid_scores: torch.Tensor, offsets: torch.Tensor, Q: torch.Tensor
    ) -> torch.Tensor:
        """`float32 [n, T]`: the dot product of each of ``n`` stored tokens with each query token ``Q [T, dim]``
        without decompressing: ``(residual . q + centroid . q) * scale``. ``residuals``: the tokens' decoded
        residuals (`residuals`, in ``Q``'s dtype); ``centroid_scores [n, T]``: the centroid parts (rows of the
        query-centroid scores at the tokens' codes); ``offsets``: their stored scale offsets. Equal to
        ``decompress(...) @ Q.T`` up to float rounding, and no centroid row is gathered (on CPU those random
        reads of a [K, dim] table cost more than the rest of the exact stage together)."""
        scores = residuals @ Q.T
        scores += centroid_scores
        scores *= self.scales(offsets, scores.dtype)
        return scores.float()


# --------------------------------------------------------------------------------------------------
# the codec of an index: its files, its device copy and its centroid assigner
# --------------------------------------------------------------------------------------------------
CODEC_DIR = "codec"
CODEC_FILES = ("centroids.npy", "bucket_cutoffs.npy", "bucket_weights.npy")
# Optional: the cell centres grouping the centroids for CPU assignment (`CentroidAssigner.coarse`), written when
# the codec's assigner probes cells, so that no later process repeats the k-means that finds them.
COARSE_FILE = "coarse_centroids.npy"
# Per segment: each token's decompression scale minus one (float16 [tokens], `ResidualCodec.scale_offsets`).
NORMS_FILE = "norms.npy"


class StoredCodec:
    """The codec an index shares across its segments: `centroids` (float16 [K, dim], unit rows), bucket
    `cutoffs`/`weights` (float32), the `CodecMeta` describing them, a `ResidualCodec` on the device and a
    centroid assigner built on first use (kept for every later version that shares this codec; its cell
    centres `coarse` are stored beside the codec so that other processes need not find them again)."""

    def __init__(
        self,
        centroids: np.ndarray,
        cutoffs: np.ndarray,
        weights: np.ndarray,
        meta: CodecMeta,
        device: torch.device,
        coarse: np.ndarray | None = None,
    ) -> None:
        self.centroids = centroids
        self.cutoffs = cutoffs
        self.weights = weights
        self.meta = meta
        self.device = device
        self.coarse = coarse
        self.codec = ResidualCodec(centroids, cutoffs, weights, meta.nbits, device)
        self.identity: FileIdentity = ()
        self._assigner: CentroidAssigner | None = None

    @property
    def num_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @classmethod
    def load(cls, folder: Path, meta: CodecMeta, dim: int, device: torch.device) -> StoredCodec:
        """Read and check the codec files of ``folder``; any problem is a `CorruptIndexError` naming the file."""
        nbits, K, B = meta.nbits, meta.num_centroids, 1 << meta.nbits
        if nbits not in VALID_NBITS or dim % (8 * nbits):
            raise CorruptIndexError(f"{folder} has a codec of nbits={nbits} for dim {dim}; the index must be rebuilt")
        centroids = load_npy(folder / "centroids.npy", dtype=np.float16, shape=(K, dim), mmap=False)
        cutoffs = load_npy(folder / "bucket_cutoffs.npy", dtype=np.float32, shape=(B - 1,), mmap=False)
        weights = load_npy(folder / "bucket_weights.npy", dtype=np.float32, shape=(B,), mmap=False)
        for name, array in (("centroids.npy", centroids), ("bucket_cutoffs.npy", cutoffs),
                            ("bucket_weights.npy", weights)):
            if not np.all(np.isfinite(array)):
                raise CorruptIndexError(f"{folder / name} holds non-finite values; the index must be rebuilt")
        coarse = None
        if (folder / COARSE_FILE).exists():
            coarse = load_npy(folder / COARSE_FILE, dtype=np.float32, shape=(None, dim), mmap=False)
            if not 2 <= coarse.shape[0] <= K or not np.all(np.isfinite(coarse)):
                raise CorruptIndexError(
                    f"{folder / COARSE_FILE} does not group {K} centroids; the index must be rebuilt"
                )
        out = cls(centroids, cutoffs, weights, meta, device, coarse)
        out.identity = file_identity(folder, CODEC_FILES)
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.assigner_groups()
        save_npy(folder / "centroids.npy", self.centroids)
        save_npy(folder / "bucket_cutoffs.npy", self.cutoffs)
        save_npy(folder / "bucket_weights.npy", self.weights)
        if self.coarse is not None:
            save_npy(folder / COARSE_FILE, self.coarse)

    def assigner_groups(self) -> None:
        """Take over the cell centres of an assigner already built (they are saved with the codec)."""
        if self.coarse is None and self._assigner is not None:
            self.coarse = self._assigner.coarse

    def same_files(self, folder: Path) -> bool:
        return bool(self.identity) and file_identity(folder, CODEC_FILES) == self.identity

    def assigner(self) -> CentroidAssigner:
        """The nearest-centroid assigner (built once per codec: on CPU with many centroids it groups them)."""
        if self._assigner is None:
            self._assigner = CentroidAssigner(self.codec.centroids.float(), seed=self.meta.seed, coarse=self.coarse)
        return self._assigner

    def calibrated(self, cutoffs: np.ndarray, weights: np.ndarray, meta: CodecMeta) -> StoredCodec:
        """The same centroids with these bucket tables (the assigner built so far is kept)."""
        out = StoredCodec(self.centroids, cutoffs, weights, meta, self.device, self.coarse)
        out._assigner = self._assigner
        return out

    def extended(self, extra: np.ndarray) -> StoredCodec:
        """A new codec with the centroids ``extra`` appended (existing codes stay valid)."""
        centroids = np.concatenate([self.centroids, extra.astype(np.float16)])
        meta = dataclasses.replace(
            self.meta,
            num_centroids=int(centroids.shape[0]),
            centroids_added_since_build=self.meta.centroids_added_since_build + int(extra.shape[0]),
        )
        self.assigner_groups()  # the same cells group the appended centroids (each joins its nearest cell)
        return StoredCodec(centroids, self.cutoffs, self.weights, meta, self.device, self.coarse)

