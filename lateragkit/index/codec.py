"""ColBERTv2 residual codec: a centroid code plus a per-dimension residual quantised to `nbits` bits.

Layout (the one colbert-ai writes, so indexes convert losslessly): each vector takes `dim * nbits / 8`
bytes; each byte holds `8 / nbits` consecutive dimensions, the first dimension in the most significant
group, and within a group the bucket index is stored bit-reversed (least significant bit first).
Decoding: `x = normalize(centroid[code] + bucket_weights[bucket])`.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["ResidualCodec", "check_nbits", "bucket_tables", "quantile_buckets"]

VALID_NBITS = (1, 2, 4)


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
        self._lookup = self.weights[idx].to(self.dtype)  # [256, 8 // nbits] decoded weights per byte
        self._bitpos = torch.arange(self.nbits, device=self.device)
        self._bytepow = (1 << torch.arange(7, -1, -1, device=self.device)).to(torch.int32)

    @property
    def packed_dim(self) -> int:
        return self.dim * self.nbits // 8

    def set_centroids(self, centroids: np.ndarray | torch.Tensor) -> None:
        C = torch.as_tensor(np.asarray(centroids)) if not isinstance(centroids, torch.Tensor) else centroids
        self.centroids = C.to(self.device, self.dtype)

    # ---- bit packing --------------------------------------------------------------------------------
    def quantize(self, residuals: torch.Tensor) -> torch.Tensor:
        """Bucket index per dimension (`right=False`: a value equal to a cutoff goes to the lower bucket)."""
        return torch.bucketize(residuals.float(), self.cutoffs)

    def pack(self, buckets: torch.Tensor) -> torch.Tensor:
        """`[n, dim]` bucket indices -> `uint8 [n, dim * nbits / 8]` in the colbert-ai layout."""
        n = buckets.shape[0]
        bits = (buckets.to(torch.int32)[..., None] >> self._bitpos) & 1  # [n, dim, nbits], LSB first
        bits = bits.reshape(n, self.packed_dim, 8)
        return (bits * self._bytepow).sum(-1).to(torch.uint8)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """Inverse of `pack`: `uint8 [n, dim * nbits / 8]` -> bucket indices `[n, dim]`."""
        table = torch.from_numpy(bucket_tables(self.nbits).astype(np.int64)).to(packed.device)
        return table[packed.long()].reshape(packed.shape[0], self.dim)

    # ---- codec ---------------------------------------------------------------------------------------
    def compress(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Packed residuals of `x` (`[n, dim]`) against the centroids `codes` (`[n]`)."""
        residual = x.to(self.device, torch.float32) - self.centroids[codes.long()].float()
        return self.pack(self.quantize(residual))

    def decompress(self, codes: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """`[n, dim]` L2-normalised vectors (float32 on CPU, float16 on CUDA)."""
        n = int(codes.shape[0])
        if n == 0:
            return torch.zeros(0, self.dim, dtype=self.dtype, device=self.device)
        resid = self._lookup[packed.to(self.device).long()].reshape(n, self.dim)
        x = self.centroids[codes.to(self.device).long()] + resid
        # renormalise: the exact stage scores must use unit vectors, as the stored ones were
        return torch.nn.functional.normalize(x.float(), dim=-1).to(self.dtype)
