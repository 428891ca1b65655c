"""Lookup-table scoring of residual-compressed tokens (lateragkit/index/lut.py): the scores must be exactly
MaxSim over `ResidualCodec.decompress`, for every nbits, several dims, ragged passages and masked queries."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lateragkit import scoring
from lateragkit.index import lut
from lateragkit.index.codec import ResidualCodec, quantile_buckets

TOL = 2e-5  # float32 rounding of sums of ~32 terms of magnitude <= 1


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def compressed(dim: int, nbits: int, n_tokens: int = 600, K: int = 24, seed: int = 0):
    """A codec trained as the index trains it (nearest unit centroid, quantile buckets of the residuals) on
    clustered unit vectors, and those vectors compressed: `(codec, codes int16, residuals uint8)`."""
    g = torch.Generator().manual_seed(seed)
    C = F.normalize(torch.randn(K, dim, generator=g), dim=1)
    X = F.normalize(C[torch.randint(0, K, (n_tokens,), generator=g)] + 0.4 * torch.randn(n_tokens, dim, generator=g)
                    / dim**0.5, dim=1)
    C16 = C.half()
    codes = (X @ C16.float().T).argmax(1)
    cutoffs, weights = quantile_buckets((X - C16.float()[codes]).numpy(), nbits)
    codec = ResidualCodec(C16.numpy(), cutoffs, weights, nbits)
    return codec, codes.to(torch.int16), codec.compress(X, codes)


def queries(dim: int, B: int = 3, Lq: int = 9, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    Q = F.normalize(torch.randn(B, Lq, dim, generator=g), dim=-1)
    mask = torch.rand(B, Lq, generator=g) > 0.3
    mask[:, 0] = True
    return Q, mask


def reference(codec: ResidualCodec, Q, mask, codes, residuals, lens) -> torch.Tensor:
    return scoring.maxsim(Q, mask, codec.decompress(codes.long(), residuals), lens)


# ragged passages: empty ones, one-token ones, one longer than the small chunks used below
LENS = torch.tensor([0, 3, 150, 1, 0, 57, 200, 189])

CASES = [(nbits, dim) for nbits in (1, 2, 4) for dim in (32, 64, 128, 384) if dim % (8 * nbits) == 0]


# --------------------------------------------------------------------------------------------------
# tables, by hand
# --------------------------------------------------------------------------------------------------
def hand_buckets(value: int, nbits: int) -> list[int]:
    """The documented layout: groups of nbits bits from the most significant, each stored bit-reversed."""
    per = 8 // nbits
    out = []
    for p in range(per):
        group = (value >> (8 - nbits * (p + 1))) & ((1 << nbits) - 1)
        out.append(int(f"{group:0{nbits}b}"[::-1], 2))
    return out


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_table_entries_match_the_bit_layout_by_hand(nbits: int) -> None:
    dim = 32
    codec, _, _ = compressed(dim, nbits)
    w = codec.weights.tolist()
    q = torch.arange(1, dim + 1, dtype=torch.float32)[None] / dim
    table = lut.query_tables(codec, q)
    per, P = 8 // nbits, codec.packed_dim
    for j, value in [(0, 0), (1, 0b01101100), (P - 1, 255), (P // 2, 0b10000001)]:
        want = sum(float(q[0, j * per + p]) * w[b] for p, b in enumerate(hand_buckets(value, nbits)))
        assert float(table[j * 256 + value, 0]) == pytest.approx(want, abs=1e-6)
    # the centroid rows: the query's score with each centroid
    assert torch.allclose(table[P * 256 :, 0], codec.centroids.float() @ q[0], atol=1e-6)
    assert table.shape == (P * 256 + codec.centroids.shape[0], 1)


def test_token_rows_point_at_byte_and_centroid_rows() -> None:
    codes = torch.tensor([5, 0], dtype=torch.int16)
    residuals = torch.tensor([[0, 255, 7], [1, 2, 3]], dtype=torch.uint8)
    rows = lut.token_rows(codes, residuals)
    assert rows.tolist() == [[0, 256 + 255, 512 + 7, 768 + 5], [1, 258, 515, 768]]


@pytest.mark.parametrize("nbits,dim", [(1, 64), (2, 128), (4, 384)])
def test_inverse_norms_are_those_decompress_divides_by(nbits: int, dim: int) -> None:
    codec, codes, residuals = compressed(dim, nbits)
    inv = lut.token_inv_norms(codec, codes, residuals)
    # independent float64 decode from the documented layout
    w = codec.weights.double()
    buckets = torch.tensor([hand_buckets(v, nbits) for v in range(256)])
    r = w[buckets[residuals.long()]].reshape(len(codes), dim)
    norms = (codec.centroids.double()[codes.long()] + r).norm(dim=1)
    assert torch.allclose(inv.double() * norms, torch.ones_like(norms), atol=1e-6)
    assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)  # the norms do matter here


# --------------------------------------------------------------------------------------------------
# exactness against decompression
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nbits,dim", CASES)
def test_lut_maxsim_equals_maxsim_of_decompressed(nbits: int, dim: int) -> None:
    codec, codes, residuals = compressed(dim, nbits, n_tokens=int(LENS.sum()))
    Q, mask = queries(dim)
    want = reference(codec, Q, mask, codes, residuals, LENS)
    got = lut.lut_maxsim(codec, Q, mask, codes, residuals, LENS)
    assert got.shape == (3, len(LENS)) and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=TOL, rtol=0), (got - want).abs().max()
    assert torch.all(got[:, LENS == 0] == 0)
    assert torch.all(got[:, LENS > 0] != 0)
    # one query at a time, at its own length: the same scores
    for b in range(Q.shape[0]):
        lq = int(mask[b].sum())
        one = lut.lut_maxsim(codec, Q[b : b + 1, mask[b]], torch.ones(1, lq, dtype=torch.bool), codes, residuals, LENS)
        assert torch.allclose(one[0], want[b], atol=TOL, rtol=0)


def test_blocks_precomputed_inputs_and_numpy_doclens_give_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    codec, codes, residuals = compressed(128, 2, n_tokens=int(LENS.sum()))
    Q, mask = queries(128)
    want = reference(codec, Q, mask, codes, residuals, LENS)
    S = Q[mask] @ codec.centroids.float().T
    inv = lut.token_inv_norms(codec, codes, residuals)
    for kwargs in ({"chunk_tokens": 7}, {"chunk_tokens": 1}, {"centroid_scores": S}, {"inv_norms": inv}):
        got = lut.lut_maxsim(codec, Q, mask, codes, residuals, LENS.numpy(), **kwargs)
        assert torch.allclose(got, want, atol=TOL, rtol=0), kwargs
    # tables of one query token at a time (a batch too large for TABLE_BUDGET), with and without given scores
    monkeypatch.setattr(lut, "TABLE_BUDGET", 1)
    for kwargs in ({}, {"centroid_scores": S, "chunk_tokens": 50}):
        got = lut.lut_maxsim(codec, Q, mask, codes, residuals, LENS, **kwargs)
        assert torch.allclose(got, want, atol=TOL, rtol=0), kwargs
    monkeypatch.undo()
    # masking a query token changes its query's scores (masked tokens are not scored)
    fewer = mask.clone()
    fewer[0, mask[0].nonzero()[-1]] = False
    changed = lut.lut_maxsim(codec, Q, fewer, codes, residuals, LENS)
    assert torch.allclose(changed, reference(codec, Q, fewer, codes, residuals, LENS), atol=TOL, rtol=0)
    assert not torch.allclose(changed[0], want[0]) and torch.allclose(changed[1:], want[1:])


def test_renormalisation_is_part_of_the_score() -> None:
    """Leaving out the per-token norm gives other scores: the test data exercise it."""
    codec, codes, residuals = compressed(64, 2, n_tokens=int(LENS.sum()))
    Q, mask = queries(64)
    ones = torch.ones(len(codes))
    unnormalised = lut.lut_maxsim(codec, Q, mask, codes, residuals, LENS, inv_norms=ones)
    assert not torch.allclose(unnormalised, reference(codec, Q, mask, codes, residuals, LENS), atol=1e-3)


# --------------------------------------------------------------------------------------------------
# pairs: each query with its own candidates
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nbits,dim", [(1, 64), (2, 128), (4, 32), (2, 384)])
def test_pairs_equal_the_full_matrix(nbits: int, dim: int) -> None:
    codec, codes, residuals = compressed(dim, nbits, n_tokens=int(LENS.sum()))
    Q, mask = queries(dim, B=4)
    mask[2] = False  # a query without scored tokens scores 0
    full = reference(codec, Q, mask, codes, residuals, LENS)
    # unsorted, repeated, query 3 without pairs
    pq = torch.tensor([1, 0, 2, 0, 1, 0, 1, 0, 2])
    pd = torch.tensor([6, 2, 6, 0, 3, 7, 6, 6, 1])
    got = lut.lut_maxsim_pairs(codec, Q, mask, codes, residuals, LENS, pq, pd)
    assert torch.allclose(got, full[pq, pd], atol=TOL, rtol=0)
    assert torch.all(got[pq == 2] == 0) and got[3] == 0  # masked-out query; empty passage
    # passages one at a time
    small = lut.lut_maxsim_pairs(codec, Q, mask, codes, residuals, LENS, pq, pd, chunk_tokens=1)
    assert torch.allclose(small, full[pq, pd], atol=TOL, rtol=0)


def test_pairs_share_given_centroid_scores_and_norms() -> None:
    codec, codes, residuals = compressed(128, 2, n_tokens=int(LENS.sum()))
    Q, mask = queries(128, B=3)
    full = reference(codec, Q, mask, codes, residuals, LENS)
    pq, pd = torch.tensor([2, 2, 0]), torch.tensor([5, 6, 2])
    S = Q[mask] @ codec.centroids.float().T
    inv = lut.token_inv_norms(codec, codes, residuals)
    got = lut.lut_maxsim_pairs(codec, Q, mask, codes, residuals, LENS, pq, pd, centroid_scores=S, inv_norms=inv)
    assert torch.allclose(got, full[pq, pd], atol=TOL, rtol=0)


# --------------------------------------------------------------------------------------------------
# edges and bad input
# --------------------------------------------------------------------------------------------------
def test_empty_inputs_give_zero_scores_of_the_right_shape() -> None:
    codec, codes, residuals = compressed(32, 2)
    Q, mask = queries(32, B=2)
    none = lut.lut_maxsim(codec, Q, mask, codes[:0], residuals[:0], torch.zeros(0, dtype=torch.int64))
    assert none.shape == (2, 0)
    lens = torch.tensor([len(codes)])
    unscored = lut.lut_maxsim(codec, Q, torch.zeros_like(mask), codes, residuals, lens)
    assert unscored.shape == (2, 1) and torch.all(unscored == 0)
    no_pairs = lut.lut_maxsim_pairs(codec, Q, mask, codes, residuals, lens, torch.zeros(0), torch.zeros(0))
    assert no_pairs.shape == (0,)


def test_bad_input_is_refused_with_what_to_pass() -> None:
    codec, codes, residuals = compressed(64, 2)
    Q, mask = queries(64)
    lens = torch.tensor([len(codes)])
    with pytest.raises(ValueError, match=r"residuals \[n, 16\]"):
        lut.lut_maxsim(codec, Q, mask, codes, residuals[:, :8], lens)
    with pytest.raises(ValueError, match="doclens sum to"):
        lut.lut_maxsim(codec, Q, mask, codes, residuals, lens + 1)
    with pytest.raises(ValueError, match="uint8"):
        lut.lut_maxsim(codec, Q, mask, codes, residuals.to(torch.int16), lens)
    with pytest.raises(ValueError, match=r"Q must be \[B, Lq, 64\]"):
        lut.lut_maxsim(codec, Q[..., :32], mask, codes, residuals, lens)
    with pytest.raises(ValueError, match="centroid_scores must be"):
        lut.lut_maxsim(codec, Q, mask, codes, residuals, lens, centroid_scores=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="passages in"):
        lut.lut_maxsim_pairs(codec, Q, mask, codes, residuals, lens, torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="one of each per pair"):
        lut.lut_maxsim_pairs(codec, Q, mask, codes, residuals, lens, torch.tensor([0, 1]), torch.tensor([0]))


def test_memory_mapped_index_arrays_are_scored_in_place(tmp_path: Path) -> None:
    """The index holds codes/residuals as read-only numpy memory maps seen through torch: they score the same."""
    codec, codes, residuals = compressed(64, 1, n_tokens=int(LENS.sum()))
    Q, mask = queries(64)
    np.save(tmp_path / "codes.npy", codes.numpy())
    np.save(tmp_path / "residuals.npy", residuals.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: the memory map is not writable
        c_map = torch.from_numpy(np.load(tmp_path / "codes.npy", mmap_mode="r"))
        r_map = torch.from_numpy(np.load(tmp_path / "residuals.npy", mmap_mode="r"))
    want = reference(codec, Q, mask, codes, residuals, LENS)
    got = lut.lut_maxsim(codec, Q, mask, c_map, r_map, LENS)
    assert torch.allclose(got, want, atol=TOL, rtol=0)
    pairs = lut.lut_maxsim_pairs(codec, Q, mask, c_map, r_map, LENS, torch.tensor([0, 2]), torch.tensor([6, 2]))
    assert torch.allclose(pairs, want[[0, 2], [6, 2]], atol=TOL, rtol=0)
