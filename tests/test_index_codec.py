"""Residual codec, bit layout, k-means and IVF of the PLAID backend, on small synthetic arrays.

Also holds the synthetic-collection helpers the other tests/test_index_*.py files import.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from lateragkit.index import build_index, kmeans
from lateragkit.index.codec import ResidualCodec, bucket_tables, check_nbits, quantile_buckets
from lateragkit.index.ivf import build_ivf, passage_codes
from lateragkit.index.kmeans import CentroidAssigner, train_centroids


# --------------------------------------------------------------------------------------------------
# synthetic collections (shared with the other index tests)
# --------------------------------------------------------------------------------------------------
@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch and faiss on one thread: these tensors are tiny, so intra-op threads only add overhead
    (a lot of it on a busy CI machine where the threads spin against other processes)."""
    import faiss

    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        faiss.omp_set_num_threads(faiss_threads)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def make_topics(n_topics: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T = rng.normal(size=(n_topics, dim))
    return (T / np.linalg.norm(T, axis=1, keepdims=True)).astype(np.float32)


def make_collection(
    n_passages: int,
    dim: int = 64,
    *,
    topics: np.ndarray | None = None,
    per_passage: int = 4,
    tokens: tuple[int, int] = (6, 20),
    noise: float = 0.35,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Passages whose tokens are noisy copies of a few 'topic' directions.

    Returns `(vectors float16 [N, dim] unit rows, doclens int64, topic ids of each passage [n, per_passage])`.
    """
    rng = np.random.default_rng(seed)
    if topics is None:
        topics = make_topics(200, dim, seed + 1000)
    lens = rng.integers(tokens[0], tokens[1] + 1, size=n_passages)
    own = np.stack([rng.choice(len(topics), per_passage, replace=False) for _ in range(n_passages)])
    which = np.concatenate([own[i][rng.integers(0, per_passage, size=lens[i])] for i in range(n_passages)])
    v = topics[which] + noise * rng.normal(size=(len(which), dim)) / np.sqrt(dim)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float16), lens.astype(np.int64), own


def chunked(vectors: np.ndarray, doclens: np.ndarray, per: int = 300):
    """The packed collection as a generator of chunks of `per` passages (consumed once)."""
    starts = np.concatenate([[0], np.cumsum(doclens)])
    for s in range(0, len(doclens), per):
        e = min(len(doclens), s + per)
        yield vectors[starts[s] : starts[e]], doclens[s:e]


def make_queries(
    topics: np.ndarray, own: np.ndarray, targets: np.ndarray, *, n_tokens: int = 6, noise: float = 0.35, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries built from the topics of `targets` passages (so each has a clear best passage)."""
    rng = np.random.default_rng(seed)
    dim = topics.shape[1]
    Q = np.zeros((len(targets), n_tokens, dim), dtype=np.float32)
    for i, t in enumerate(targets):
        which = own[t][np.arange(n_tokens) % own.shape[1]]
        q = topics[which] + noise * rng.normal(size=(n_tokens, dim)) / np.sqrt(dim)
        Q[i] = q / np.linalg.norm(q, axis=1, keepdims=True)
    mask = np.ones((len(targets), n_tokens), dtype=bool)
    mask[1::3, -1] = False  # some queries have a padded position
    return torch.from_numpy(Q), torch.from_numpy(mask)


def reference_maxsim(Q: torch.Tensor, Q_mask: torch.Tensor, vectors: np.ndarray, doclens: np.ndarray) -> np.ndarray:
    """Independent numpy MaxSim `[B, n]` (plain loops over passages), for checking the index wiring."""
    V = vectors.astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(doclens)])
    B, Lq, dim = Q.shape
    q = Q.numpy().reshape(B * Lq, dim)
    mask = Q_mask.numpy()
    out = np.zeros((B, len(doclens)), dtype=np.float32)
    for j in range(len(doclens)):
        d = V[starts[j] : starts[j + 1]]
        if d.shape[0]:
            best = (q @ d.T).max(axis=1).reshape(B, Lq)
            out[:, j] = np.where(mask, best, 0.0).sum(axis=1)
    return out


# --------------------------------------------------------------------------------------------------
# bit layout
# --------------------------------------------------------------------------------------------------
def _codec(nbits: int, dim: int, weights: list[float] | None = None) -> ResidualCodec:
    B = 1 << nbits
    C = np.zeros((1, dim), dtype=np.float32)
    C[0, 0] = 1.0
    cutoffs = np.linspace(-0.5, 0.5, B - 1).astype(np.float32) if B > 2 else np.zeros(1, dtype=np.float32)
    w = np.asarray(weights if weights is not None else np.linspace(-1, 1, B), dtype=np.float32)
    return ResidualCodec(C, cutoffs, w, nbits)


# Hand-derived from the colbert-ai layout: each dimension's bucket index written least significant bit
# first, the bit stream packed most significant bit first, 8/nbits dimensions per byte.
HAND_PACKED = [
    # nbits=1: bits 1,0,1,1,0,0,0,1 -> 0b10110001
    (1, [1, 0, 1, 1, 0, 0, 0, 1], [0b10110001]),
    # nbits=2: buckets 1,2,3,0 -> bit pairs (1,0) (0,1) (1,1) (0,0) -> 0b10011100; then 0,1,2,3 -> 0b00100111;
    # 3,3,0,0 -> 0b11110000; 1,1,1,1 -> 0b10101010
    (2, [1, 2, 3, 0, 0, 1, 2, 3, 3, 3, 0, 0, 1, 1, 1, 1], [0b10011100, 0b00100111, 0b11110000, 0b10101010]),
    # nbits=4: 1 -> 1000, 8 -> 0001 => 0b10000001; 15 -> 1111, 6 -> 0110 => 0b11110110; zeros after
    (4, [1, 8, 15, 6] + [0] * 28, [0b10000001, 0b11110110] + [0] * 14),
]


@pytest.mark.parametrize("nbits,buckets,expected", HAND_PACKED)
def test_pack_matches_hand_written_colbert_layout(nbits: int, buckets: list[int], expected: list[int]) -> None:
    codec = _codec(nbits, len(buckets))
    idx = torch.tensor([buckets])
    packed = codec.pack(idx)
    assert packed.dtype == torch.uint8
    assert packed[0].tolist() == expected
    assert codec.unpack(packed)[0].tolist() == buckets


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_bucket_table_inverts_pack_for_every_byte_value(nbits: int) -> None:
    per = 8 // nbits
    table = bucket_tables(nbits)
    dim = 8 * nbits  # the smallest valid dim: one vector is nbits bytes
    codec = _codec(nbits, dim)
    # every possible first byte: decode with the table, re-pack, get the byte back
    for value in range(256):
        buckets = [int(b) for b in table[value]] + [0] * (dim - per)
        assert int(codec.pack(torch.tensor([buckets]))[0, 0]) == value


def test_decompress_adds_bucket_weights_and_renormalises() -> None:
    weights = [-0.3, -0.1, 0.1, 0.3]
    codec = _codec(2, 16, weights)
    buckets = torch.tensor([[3, 0, 1, 2] * 4])
    out = codec.decompress(torch.tensor([0]), codec.pack(buckets))[0].numpy()
    expected = np.array([weights[b] for b in buckets[0].tolist()], dtype=np.float32)
    expected[0] += 1.0  # the centroid
    # the scale: 1 / norm, stored as its offset from 1 in float16
    scale = 1.0 + float(np.float16(1.0 / np.linalg.norm(expected) - 1.0))
    np.testing.assert_allclose(out, expected * np.float32(scale), rtol=1e-6, atol=1e-7)
    assert abs(float(np.linalg.norm(out)) - 1.0) < 3e-5  # unit length to the stored scale's rounding
    # scales computed on the fly are the ones a segment stores: the same vectors either way
    rng = np.random.default_rng(4)
    codes = torch.from_numpy(rng.integers(0, 1, 50))
    packed = codec.pack(torch.from_numpy(rng.integers(0, 4, (50, 16))))
    stored = codec.scale_offsets(codes, packed)
    assert torch.equal(codec.decompress(codes, packed), codec.decompress(codes, packed, stored))


def test_token_scores_equal_decompressed_dot_products_without_decompressing() -> None:
    """`token_scores` (residual GEMM + the centroid part read from query-centroid scores, then the stored
    scale) gives the dot products of the decompressed tokens with the query tokens."""
    gen = torch.Generator().manual_seed(3)
    dim, K, n, T = 32, 8, 50, 5
    C = torch.nn.functional.normalize(torch.randn(K, dim, generator=gen), dim=1)
    codec = ResidualCodec(C.numpy(), np.array([-0.05, 0.0, 0.05], dtype=np.float32),
                          np.array([-0.08, -0.02, 0.02, 0.08], dtype=np.float32), 2)
    x = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)
    codes = torch.randint(0, K, (n,), generator=gen)
    packed = codec.compress(x, codes)
    offsets = codec.scale_offsets(codes, packed)
    # building compresses and scales with one gather of the centroid rows: the same bytes and scales
    both = codec.compress_scaled(x, codes)
    assert torch.equal(both[0], packed) and torch.equal(both[1], offsets)
    Q = torch.nn.functional.normalize(torch.randn(T, dim, generator=gen), dim=1)
    got = codec.token_scores(codec.residuals(packed), (Q @ C.T).T[codes], offsets, Q)
    want = codec.decompress(codes, packed, offsets) @ Q.T
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # and the offsets given are the ones computed when they are not
    torch.testing.assert_close(codec.decompress(codes, packed), codec.decompress(codes, packed, offsets))


def test_quantize_puts_a_value_equal_to_a_cutoff_in_the_lower_bucket() -> None:
    codec = _codec(2, 16)  # cutoffs -0.5, 0, 0.5
    r = torch.tensor([[-0.6, -0.5, -0.2, 0.0, 0.2, 0.5, 0.7, 9.0] * 2])
    assert codec.quantize(r)[0, :8].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_quantile_buckets_are_global_quantiles() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(size=(500, 32)).astype(np.float32)
    cut, w = quantile_buckets(r, 2)
    flat = np.sort(r.reshape(-1))
    np.testing.assert_allclose(cut, np.quantile(flat, [0.25, 0.5, 0.75]), rtol=1e-6)
    np.testing.assert_allclose(w, np.quantile(flat, [0.125, 0.375, 0.625, 0.875]), rtol=1e-6)
    assert np.all(np.diff(cut) > 0) and np.all(np.diff(w) > 0)


@pytest.mark.parametrize("nbits,dim", [(3, 64), (0, 64), (2, 40), (4, 48), (True, 64)])
def test_invalid_nbits_is_a_clear_value_error(nbits: int, dim: int) -> None:
    with pytest.raises(ValueError, match="nbits"):
        check_nbits(nbits, dim)


def test_build_rejects_nbits_that_do_not_divide_dim(tmp_path: Path) -> None:
    v, lens, _ = make_collection(20, dim=40)
    with pytest.raises(ValueError, match="multiple of 8\\*nbits"):
        build_index(tmp_path / "x", [(v, lens)], dim=40, index_type="plaid", nbits=2)


# --------------------------------------------------------------------------------------------------
# codec round trip on a built index
# --------------------------------------------------------------------------------------------------
def test_round_trip_error_is_small_and_shrinks_with_nbits(tmp_path: Path) -> None:
    v, lens, _ = make_collection(400, dim=64, seed=3)
    errors = {}
    for nbits in (1, 2, 4):
        index = build_index(tmp_path / f"n{nbits}", chunked(v, lens), dim=64, index_type="plaid", nbits=nbits)
        assert index.kind == "plaid" and index.nbits == nbits
        (segment,) = index.segments
        assert segment.residuals.shape == (v.shape[0], 64 * nbits // 8)
        assert segment.codes.dtype == np.int16
        rows = np.arange(len(lens))
        dec, dlens = index.decompress_rows(rows)
        assert dlens.tolist() == lens.tolist()
        cos = (dec.numpy() * v.astype(np.float32)).sum(1)
        np.testing.assert_allclose(np.linalg.norm(dec.numpy(), axis=1), 1.0, atol=1e-4)
        errors[nbits] = float(np.mean(1.0 - cos))
    assert errors[4] < errors[2] < errors[1]
    assert errors[4] < 0.01 and errors[2] < 0.03 and errors[1] < 0.08, errors


# --------------------------------------------------------------------------------------------------
# k-means and assignment
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,k", [(1, 4), (3, 2), (5, 16), (40, 40)])
def test_kmeans_with_few_points_does_not_crash(n: int, k: int) -> None:
    x = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)
    C = train_centroids(x, k)
    assert C.shape == (min(n, k), 16)
    np.testing.assert_allclose(np.linalg.norm(C, axis=1), 1.0, atol=1e-5)


def test_two_level_kmeans_and_probing_assignment_agree_with_exact() -> None:
    # 8,192 centroids force the two-level k-means and the probing assigner on CPU
    topics = make_topics(64, 32, seed=5)
    rng = np.random.default_rng(5)
    x = topics[rng.integers(0, 64, size=40_000)] + 0.5 * rng.normal(size=(40_000, 32)) / np.sqrt(32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    C = train_centroids(x, 8192, niter=4)
    assert C.shape[0] >= 8000  # two-level allocation may leave a few centroids unused, never more than K
    Ct = torch.from_numpy(C)
    probe = CentroidAssigner(Ct)
    assert not probe.exact
    exact = CentroidAssigner(Ct, exact=True)
    xt = torch.from_numpy(x[:5000])
    a, b = probe.assign(xt), exact.assign(xt)
    agree = float((a == b).float().mean())
    assert agree > 0.9, agree
    # where they differ, the probed centroid is nearly as close as the best one
    sa = (xt * Ct[a]).sum(1)
    sb = (xt * Ct[b]).sum(1)
    assert float((sb - sa).max()) < 0.1


def test_refine_moves_each_centroid_to_the_normalised_mean_of_its_points() -> None:
    # 4 unit centroids over 2 cells (probing both: exact); points near e0 and near e1, none near e2 or -e0
    e = np.eye(3, dtype=np.float32)
    C = np.stack([e[0], e[1], e[2], -e[0]]).astype(np.float32)
    x = np.array([[1, 0.2, 0], [1, -0.1, 0.1], [0.1, 1, 0], [0, 1, 0.3]], dtype=np.float32)
    out = kmeans._refine(x, C, 1, seed=0)
    means = np.stack([x[:2].mean(0), x[2:].mean(0)])
    np.testing.assert_allclose(out[:2], means / np.linalg.norm(means, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(out[2:], C[2:])  # no points: unchanged


def test_two_level_kmeans_refinement_fits_held_out_points_better(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2,048 topics spread over 1,024 centroids: the coarse cells cut through them, and the refinement steps let
    # centroids take points across those cuts
    rng = np.random.default_rng(7)
    topics = rng.normal(size=(2048, 32))
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    x = topics[rng.integers(0, 2048, size=24_000)] + 0.5 * rng.normal(size=(24_000, 32)) / np.sqrt(32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    train, held = x[:20_000], torch.from_numpy(x[20_000:])

    def fit() -> float:  # mean cosine of a held-out point to its nearest centroid
        return float((held @ torch.from_numpy(train_centroids(train, 1024, niter=4)).T).amax(1).mean())

    monkeypatch.setattr(kmeans, "FLAT_KMEANS_BUDGET", 0.0)  # the two-level k-means at this size
    refined = fit()
    monkeypatch.setattr(kmeans, "REFINE_NITER", 0)
    plain = fit()
    monkeypatch.setattr(kmeans, "FLAT_KMEANS_BUDGET", float("inf"))
    flat = fit()
    assert refined > plain + 0.01, (refined, plain)
    assert flat - refined < 0.5 * (flat - plain), (flat, refined, plain)  # at least half the way to a flat k-means


# --------------------------------------------------------------------------------------------------
# IVF
# --------------------------------------------------------------------------------------------------
def test_build_ivf_is_csr_of_sorted_unique_rows() -> None:
    codes = np.array([2, 0, 2, 1, 1, 1, 0, 2, 3], dtype=np.int16)
    doclens = np.array([3, 0, 3, 2, 1])  # row 1 is empty
    rows, offsets = build_ivf(codes, doclens, 5)
    assert rows.dtype == np.uint16 and offsets.dtype == np.int64  # 5 rows: 2-byte row ids
    lists = [rows[offsets[c] : offsets[c + 1]].tolist() for c in range(5)]
    # tokens: row0 = [2,0,2], row2 = [1,1,1], row3 = [0,2], row4 = [3]
    assert lists == [[0, 3], [2], [0, 3], [4], []]


def test_passage_codes_turn_the_lists_around_into_each_rows_distinct_codes() -> None:
    codes = np.array([2, 0, 2, 1, 1, 1, 0, 2, 3], dtype=np.int16)
    doclens = np.array([3, 0, 3, 2, 1])  # row 1 is empty
    pcodes, offsets = passage_codes(*build_ivf(codes, doclens, 5), num_rows=5)
    assert offsets.tolist() == [0, 2, 2, 3, 5, 6]
    # tokens: row0 = [2,0,2], row2 = [1,1,1], row3 = [0,2], row4 = [3]: distinct and ascending
    assert [pcodes[offsets[r] : offsets[r + 1]].tolist() for r in range(5)] == [[0, 2], [], [1], [0, 2], [3]]
    rng = np.random.default_rng(5)
    doclens = rng.integers(0, 40, 300)
    codes = rng.integers(0, 700, int(doclens.sum())).astype(np.int16)
    pcodes, offsets = passage_codes(*build_ivf(codes, doclens, 700), num_rows=300)
    starts = np.concatenate([[0], np.cumsum(doclens)])
    for r in range(300):
        assert pcodes[offsets[r] : offsets[r + 1]].tolist() == np.unique(codes[starts[r] : starts[r + 1]]).tolist()
    # a segment past 65,536 rows has int32 row ids in its lists: the same turn-around
    n = (1 << 16) + 3
    rows, list_offsets = build_ivf((np.arange(n) % 5).astype(np.int16), np.ones(n, dtype=np.int64), 5)
    assert rows.dtype == np.int32
    pcodes, offsets = passage_codes(rows, list_offsets, num_rows=n)
    assert np.array_equal(offsets, np.arange(n + 1)) and np.array_equal(pcodes, np.arange(n) % 5)


def test_build_ivf_row_ids_stay_two_bytes_to_65536_rows_then_widen() -> None:
    for n, dtype in ((40_000, np.uint16), (1 << 16, np.uint16), ((1 << 16) + 1, np.int32)):
        doclens = np.ones(n, dtype=np.int64)
        codes = (np.arange(n) % 3).astype(np.int16)
        rows, offsets = build_ivf(codes, doclens, 3)
        assert rows.dtype == dtype  # row ids never wrap
        assert rows[offsets[1] : offsets[2]].tolist() == list(range(1, n, 3))
        assert int(rows.max()) == n - 1


def test_index_ivf_matches_codes(tmp_path: Path) -> None:
    v, lens, _ = make_collection(300, dim=32, seed=2)
    index = build_index(tmp_path / "i", chunked(v, lens), dim=32, index_type="plaid")
    (segment,) = index.segments
    row_of_token = np.repeat(np.arange(len(lens)), lens)
    expected: dict[int, set[int]] = {}
    for c, r in zip(np.asarray(segment.codes).tolist(), row_of_token.tolist(), strict=True):
        expected.setdefault(c, set()).add(r)
    for c in range(index.num_centroids):
        got = segment.ivf_rows[segment.ivf_offsets[c] : segment.ivf_offsets[c + 1]].tolist()
        assert got == sorted(expected.get(c, ()))


def test_probing_assigner_cells_are_stored_with_the_codec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lateragkit.exceptions import CorruptIndexError
    from lateragkit.index import kmeans, load_index

    monkeypatch.setattr(kmeans, "EXACT_ASSIGN_MAX_K", 64)  # a small index gets the probing assigner of large K
    v, lens, _ = make_collection(300, dim=32, seed=8)
    built = build_index(tmp_path / "a", chunked(v, lens), dim=32, index_type="plaid")
    assert not built.shared.assigner().exact and built.num_centroids > 64
    stored = np.load(tmp_path / "a" / "codec" / "coarse_centroids.npy")
    np.testing.assert_array_equal(stored, built.shared.assigner().coarse)
    # another process rebuilds the same assigner from the file (no k-means): the same codes
    loaded = load_index(tmp_path / "a")
    monkeypatch.setattr(kmeans, "_flat_kmeans", lambda *a, **kw: pytest.fail("k-means of the centroids rerun"))
    x = torch.from_numpy(v[:500].astype(np.float32))
    assert torch.equal(loaded.shared.assigner().assign(x), built.shared.assigner().assign(x))
    # later versions keep it: hard-linked while the codec is unchanged
    loaded.add(tmp_path / "b", [(v[: int(lens[:20].sum())], lens[:20])])
    assert (tmp_path / "b" / "codec" / "coarse_centroids.npy").stat().st_ino == (
        tmp_path / "a" / "codec" / "coarse_centroids.npy").stat().st_ino
    np.save(tmp_path / "b" / "codec" / "coarse_centroids.npy", stored[:1])
    with pytest.raises(CorruptIndexError, match=r"coarse_centroids\.npy"):
        load_index(tmp_path / "b")
