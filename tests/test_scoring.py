"""MaxSim (lateragkit.scoring) against a naive loop, with masking, empty documents and chunking."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lateragkit import scoring


def naive_maxsim(Q: torch.Tensor, Q_mask: torch.Tensor, vectors: torch.Tensor, doclens: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(Q.shape[0], len(doclens))
    start = 0
    for j, n in enumerate(doclens.tolist()):
        D = vectors[start:start + n].float()
        start += n
        for b in range(Q.shape[0]):
            total = 0.0
            for i in range(Q.shape[1]):
                if Q_mask[b, i] and n > 0:
                    total += max(float(D[t] @ Q[b, i].float()) for t in range(n))
            out[b, j] = total
    return out


def _random(seed: int, B: int = 3, Lq: int = 6, dim: int = 8, doclens: list[int] | None = None):
    g = torch.Generator().manual_seed(seed)
    Q = F.normalize(torch.randn(B, Lq, dim, generator=g), dim=-1)
    Q_mask = torch.rand(B, Lq, generator=g) > 0.3
    Q_mask[:, 0] = True
    dl = torch.tensor(doclens if doclens is not None else [3, 0, 5, 1, 9, 2, 0, 4, 7])
    vectors = F.normalize(torch.randn(int(dl.sum()), dim, generator=g), dim=-1).half()
    return Q, Q_mask, vectors, dl


@pytest.mark.parametrize("chunk_tokens", [None, 1, 4, 9, 10, 1000])
def test_maxsim_matches_naive_loop(chunk_tokens):
    Q, Q_mask, vectors, dl = _random(0)
    ref = naive_maxsim(Q, Q_mask, vectors, dl)
    got = scoring.maxsim(Q, Q_mask, vectors, dl, chunk_tokens=chunk_tokens)
    assert got.dtype == torch.float32 and got.shape == (3, len(dl))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert torch.all(got[:, dl == 0] == 0)  # empty documents score 0


def test_maxsim_accepts_numpy_memmap_like_input():
    Q, Q_mask, vectors, dl = _random(1)
    ref = naive_maxsim(Q, Q_mask, vectors, dl)
    got = scoring.maxsim(Q, Q_mask, vectors.numpy(), dl.numpy().astype(np.int64), chunk_tokens=5)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_padding_never_wins_the_max():
    # every real document vector is anti-aligned with the query: a zero padding row would win if unmasked
    Q = torch.tensor([[[1.0, 0.0]]])
    Q_mask = torch.ones(1, 1, dtype=torch.bool)
    D = torch.tensor([[[-1.0, 0.0], [0.0, 0.0]], [[-0.6, -0.8], [-1.0, 0.0]]])
    D_mask = torch.tensor([[True, False], [True, True]])
    got = scoring.maxsim_padded(Q, Q_mask, D, D_mask)
    torch.testing.assert_close(got, torch.tensor([[-1.0, -0.6]]))
    # packed: a short document next to a long one in the same chunk
    vectors = torch.tensor([[-1.0, 0.0], [-0.6, -0.8], [-1.0, 0.0]]).half()
    got = scoring.maxsim(Q, Q_mask, vectors, torch.tensor([1, 2]))
    torch.testing.assert_close(got, torch.tensor([[-1.0, -0.6]]), atol=1e-3, rtol=0)  # fp16 storage


def test_masked_query_tokens_do_not_count():
    Q, _, vectors, dl = _random(2)
    all_on = torch.ones(Q.shape[:2], dtype=torch.bool)
    half = all_on.clone()
    half[:, 3:] = False
    full = scoring.maxsim(Q, all_on, vectors, dl)
    part = scoring.maxsim(Q, half, vectors, dl)
    ref = scoring.maxsim(Q[:, :3].contiguous(), all_on[:, :3], vectors, dl)
    torch.testing.assert_close(part, ref)
    assert not torch.allclose(full, part)


def test_maxsim_padded_matches_packed():
    Q, Q_mask, vectors, dl = _random(3)
    L = int(dl.max())
    D = torch.zeros(len(dl), L, vectors.shape[1], dtype=vectors.dtype)
    D_mask = torch.zeros(len(dl), L, dtype=torch.bool)
    start = 0
    for j, n in enumerate(dl.tolist()):
        D[j, :n] = vectors[start:start + n]
        D_mask[j, :n] = True
        start += n
    torch.testing.assert_close(scoring.maxsim_padded(Q, Q_mask, D, D_mask), scoring.maxsim(Q, Q_mask, vectors, dl))


def test_edge_cases_and_errors():
    Q, Q_mask, vectors, dl = _random(4)
    assert scoring.maxsim(Q, Q_mask, vectors[:0], torch.zeros(0, dtype=torch.int64)).shape == (3, 0)
    assert scoring.maxsim(Q[:0], Q_mask[:0], vectors, dl).shape == (0, len(dl))
    with pytest.raises(ValueError, match="rows"):
        scoring.maxsim(Q, Q_mask, vectors[:-1], dl)
    with pytest.raises(ValueError, match="dimension"):
        scoring.maxsim(Q[..., :4], Q_mask, vectors, dl)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_half_compute_close_to_cpu():  # pragma: no cover - CPU CI
    Q, Q_mask, vectors, dl = _random(5, B=4, Lq=16, dim=64, doclens=list(range(0, 40)))
    cpu = scoring.maxsim(Q, Q_mask, vectors, dl)
    gpu = scoring.maxsim(Q.cuda(), Q_mask.cuda(), vectors.cuda(), dl, chunk_tokens=64).cpu()
    torch.testing.assert_close(gpu, cpu, atol=2e-2, rtol=0)
