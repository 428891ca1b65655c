"""Building PLAID data: training the codec, compressing vectors into a segment, growing the codec on add.

- `train_codec`: colbert-ai's recipe — a passage sample, k-means into K = 2^floor(log2(16·sqrt(tokens)))
  centroids, bucket cutoffs/weights from the residuals of held-out tokens;
- `compress_into`: the one assign → compress → append loop (build, add, replace);
- `grow_codec`: on add, the new tokens' codes and, when most of them are far from every centroid, new
  centroids appended for them (existing codes stay valid);
- `write_ivf`: a segment's inverted lists from its codes.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .codec import NORMS_FILE, StoredCodec, check_nbits, quantile_buckets
from .ivf import build_ivf, id_dtype
from .kmeans import train_centroids
from .meta import CodecMeta
from .packed import ranges
from .storage import NpyAppender, save_npy

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_NBITS", "train_codec", "compress_into", "grow_codec", "write_ivf", "num_partitions"]

DEFAULT_NBITS = 2
CENTROIDS_PER_SQRT_TOKEN = 16
KMEANS_NITER = 4
HELDOUT_FRACTION = 0.05
HELDOUT_MAX = 50_000
# k-means training vectors are held as float32: cap their memory.
TRAIN_BYTES = 1 << 30
MAX_POINTS_PER_CENTROID_TRAIN = 256
COMPRESS_TOKENS = 1 << 15
# Tokens whose residual norm exceeds this percentile of the held-out norms count as outliers on add.
CLUSTER_THRESHOLD_PERCENTILE = 75
# add(): new centroids are trained when at least this share of the new tokens are outliers
# (by construction about 25 % of in-distribution tokens are) and there are at least OUTLIER_MIN of them.
OUTLIER_FRACTION = 0.5
OUTLIER_MIN = 32


def gather_float32(vectors: np.ndarray, rows: np.ndarray, block: int = COMPRESS_TOKENS) -> np.ndarray:
    """`vectors[rows]` as float32, filled block by block: no float16 copy of all the rows beside it."""
    out = np.empty((rows.size, vectors.shape[1]), dtype=np.float32)
    for s in range(0, rows.size, block):
        out[s : s + block] = vectors[rows[s : s + block]]
    return out


def num_partitions(num_embeddings_est: float) -> int:
    """Centroid count: the power of two at or below ``CENTROIDS_PER_SQRT_TOKEN``·sqrt(estimated tokens).

    colbert-ai's 16·sqrt. Fewer centroids shrink the fp16 centroid table (10 bytes per token at dim 384 and
    1.2 M tokens, SciFact; a fixed cost that falls as 1/sqrt(tokens)) but cost quality or speed: on SciFact
    with MiniLM vectors 4·sqrt loses 0.014 nDCG@10 at the default search parameters, and needs ndocs=512
    (2.5x the latency of 16·sqrt) to get most of it back (benchmarks/RESULTS.md). ``build_index(
    num_centroids=...)`` overrides the count.
    """
    return int(2 ** math.floor(math.log2(CENTROIDS_PER_SQRT_TOKEN * math.sqrt(max(num_embeddings_est, 1.0)))))


def _training_split(
    doclens: np.ndarray, E: int, dim: int, rng: np.random.Generator, num_centroids: int | None
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Token positions for k-means and for calibration (held out), K, and the number of sampled passages."""
    N = int(doclens.size)
    starts = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(doclens, out=starts[1:])
    # passage sample as colbert-ai: min(1 + 16·sqrt(120·N), N) passages
    n_sample = min(1 + int(16 * math.sqrt(120 * N)), N)
    sample = np.sort(rng.choice(N, n_sample, replace=False))
    sample_tok = ranges(starts[sample], doclens[sample])
    if sample_tok.size == 0:  # only empty passages sampled
        sample_tok = np.arange(E, dtype=np.int64)
    K = num_partitions(N * sample_tok.size / n_sample) if num_centroids is None else int(num_centroids)
    cap = min(MAX_POINTS_PER_CENTROID_TRAIN * K, max(TRAIN_BYTES // (4 * dim), 39 * K))
    n_held_target = min(int(HELDOUT_FRACTION * sample_tok.size), HELDOUT_MAX)
    if sample_tok.size > cap + n_held_target:
        sample_tok = rng.choice(sample_tok, cap + n_held_target, replace=False)
    perm = rng.permutation(sample_tok)
    n_held = min(int(HELDOUT_FRACTION * perm.size), HELDOUT_MAX)
    if n_held < 1 or perm.size - n_held < 1:  # tiny collections: calibrate on the training tokens themselves
        return perm, perm, max(1, min(K, perm.size)), n_sample
    return perm[n_held:], perm[:n_held], max(1, min(K, perm.size - n_held)), n_sample


def train_codec(
    vectors: np.ndarray,
    doclens: np.ndarray,
    *,
    nbits: int,
    device: torch.device,
    seed: int = 0,
    kmeans_niter: int = KMEANS_NITER,
    num_centroids: int | None = None,
) -> StoredCodec:
    """Train the centroids on a sample of ``vectors`` (float16 [E, dim], memory-mapped) and calibrate the
    residual buckets on held-out tokens."""
    dim = int(vectors.shape[1])
    nbits = check_nbits(nbits, dim)
    t0 = time.perf_counter()
    E = int(vectors.shape[0])
    if doclens.size == 0 or E == 0:
        raise ValueError("cannot build a PLAID index without token vectors: pass at least one non-empty passage")
    train, held, K, n_sample = _training_split(doclens, E, dim, np.random.default_rng(seed), num_centroids)
    X = gather_float32(vectors, np.sort(train))
    logger.info("PLAID: %d passages, %d tokens; k-means of %d vectors into %d centroids", doclens.size, E,
                X.shape[0], K)
    C = train_centroids(X, K, niter=kmeans_niter, seed=seed, device=device).astype(np.float16)
    del X
    t_kmeans = time.perf_counter() - t0
    logger.info("PLAID: k-means done in %.1f s", t_kmeans)
    dummy = np.zeros((1 << nbits) - 1, dtype=np.float32), np.zeros(1 << nbits, dtype=np.float32)
    meta = CodecMeta(nbits=nbits, num_centroids=int(C.shape[0]), cluster_threshold=0.0, avg_residual=0.0, seed=seed)
    codec = StoredCodec(C, *dummy, meta, device)  # centroids only: assign the held-out tokens
    Cf = codec.codec.centroids.float()
    Xh = torch.from_numpy(gather_float32(vectors, np.sort(held))).to(device)
    resid = (Xh - Cf[codec.assigner().assign(Xh)]).cpu().numpy()
    del Xh
    cutoffs, weights = quantile_buckets(resid, nbits)
    norms = np.linalg.norm(resid, axis=1)
    meta = CodecMeta(
        nbits=nbits,
        num_centroids=int(C.shape[0]),
        cluster_threshold=float(np.percentile(norms, CLUSTER_THRESHOLD_PERCENTILE)),
        avg_residual=float(np.abs(resid).mean()),
        seed=int(seed),
        training={"kmeans_niter": kmeans_niter, "train_vectors": int(train.size), "heldout_vectors": int(held.size),
                  "sampled_passages": int(n_sample), "kmeans_seconds": round(t_kmeans, 2)},
    )
    out = codec.calibrated(cutoffs, weights, meta)
    logger.info("PLAID: codec calibrated on %d held-out vectors at %.1f s", held.size, time.perf_counter() - t0)
    return out


def compress_into(
    folder: Path,
    vectors: np.ndarray,
    codec: StoredCodec,
    *,
    codes: np.ndarray | None = None,
    show_progress: bool = False,
) -> None:
    """Write ``codes.npy``, ``residuals.npy`` and ``norms.npy`` (each token's decompression scale offset,
    `ResidualCodec.scale_offsets`) of ``vectors`` (float16 [E, dim]) into ``folder``.

    ``codes``: the tokens' centroids when already known (else each block is assigned here).
    """
    E, dim = int(vectors.shape[0]), int(vectors.shape[1])
    code_dtype = id_dtype(codec.num_centroids)
    assign: Callable[[torch.Tensor, int], torch.Tensor]
    if codes is None:
        assigner = codec.assigner()
        assign = lambda x, s: assigner.assign(x)  # noqa: E731
    else:
        assign = lambda x, s: torch.from_numpy(codes[s : s + x.shape[0]]).to(x.device)  # noqa: E731
    bar = tqdm(total=E, desc="indexing: compressing", unit="token", disable=not show_progress)
    with NpyAppender(folder / "codes.npy", code_dtype) as c_out, NpyAppender(
        folder / "residuals.npy", np.uint8, (dim * codec.meta.nbits // 8,)
    ) as r_out, NpyAppender(folder / NORMS_FILE, np.float16) as n_out:
        for s in range(0, E, COMPRESS_TOKENS):
            x = torch.from_numpy(np.asarray(vectors[s : s + COMPRESS_TOKENS], dtype=np.float32)).to(codec.device)
            c = assign(x, s)
            packed, offsets = codec.codec.compress_scaled(x, c)
            c_out.append(c.cpu().numpy().astype(code_dtype))
            r_out.append(packed.cpu().numpy())
            n_out.append(offsets.cpu().numpy())
            bar.update(x.shape[0])
    bar.close()


def grow_codec(
    vectors: np.ndarray, codec: StoredCodec, indexed_tokens: int
) -> tuple[StoredCodec, np.ndarray | None]:
    """Codes of new ``vectors`` under ``codec``; when outliers dominate, a codec with centroids appended
    for them (then the codes are None: assign again under the new codec). ``indexed_tokens``: tokens the
    index holds, which sets how many centroids the outliers get."""
    assigner = codec.assigner()
    C = codec.codec.centroids
    n_tok = int(vectors.shape[0])
    codes = np.empty(n_tok, dtype=np.int64)
    outlier: list[np.ndarray] = []
    for s in range(0, n_tok, COMPRESS_TOKENS):
        x = torch.from_numpy(np.asarray(vectors[s : s + COMPRESS_TOKENS], dtype=np.float32)).to(codec.device)
        c = assigner.assign(x)
        codes[s : s + x.shape[0]] = c.cpu().numpy()
        norms = (x - C[c].float()).norm(dim=1)
        outlier.append(s + np.flatnonzero((norms > codec.meta.cluster_threshold).cpu().numpy()))
    outliers = np.concatenate(outlier) if outlier else np.zeros(0, dtype=np.int64)
    if outliers.size < OUTLIER_MIN or outliers.size < OUTLIER_FRACTION * n_tok:
        return codec, codes
    # as many centroids per outlier as the collection has per token (at least fast-plaid's 1 per 64)
    density = codec.num_centroids / max(1, indexed_tokens)
    k_new = min(int(outliers.size), max(4 * math.ceil(outliers.size / 256), math.ceil(outliers.size * density)))
    pts = np.asarray(vectors[outliers[: 256 * k_new]], dtype=np.float32)
    extra = train_centroids(pts, k_new, niter=KMEANS_NITER, seed=codec.meta.seed + codec.num_centroids,
                            device=codec.device)
    logger.info("add: %d of %d new tokens (%.0f%%) are far from every centroid; appended %d centroids",
                outliers.size, n_tok, 100 * outliers.size / max(n_tok, 1), extra.shape[0])
    return codec.extended(extra), None


def write_ivf(folder: Path, doclens: np.ndarray, num_centroids: int) -> None:
    """Build the segment's inverted lists from its ``codes.npy`` and write them beside it."""
    codes = np.load(folder / "codes.npy", mmap_mode="r", allow_pickle=False)
    rows, offsets = build_ivf(codes, doclens, num_centroids)
    del codes
    save_npy(folder / "ivf_rows.npy", rows)
    save_npy(folder / "ivf_offsets.npy", offsets)
