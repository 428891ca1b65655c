"""Exact index, build_index/load_index contract and input checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lateragkit.index import AUTO_EXACT_BELOW, ExactIndex, PlaidIndex, build_index, load_index

from .test_index_codec import (  # noqa: F401  (_one_thread is an autouse fixture)
    _one_thread,
    chunked,
    make_collection,
    make_queries,
    make_topics,
    reference_maxsim,
)

DIM = 32


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    topics = make_topics(50, DIM, seed=11)
    v, lens, own = make_collection(150, DIM, topics=topics, seed=12)
    Q, M = make_queries(topics, own, np.arange(0, 150, 15), seed=13)
    return {"v": v, "lens": lens, "Q": Q, "M": M, "ref": reference_maxsim(Q, M, v, lens)}


@pytest.fixture(scope="module")
def exact(data: dict, tmp_path_factory: pytest.TempPathFactory) -> ExactIndex:
    index = build_index(tmp_path_factory.mktemp("exact") / "i", chunked(data["v"], data["lens"], 40), dim=DIM)
    assert isinstance(index, ExactIndex)  # auto: 150 passages < 2,000
    return index


def test_search_equals_reference_maxsim(exact: ExactIndex, data: dict) -> None:
    ref = data["ref"]
    hits = exact.search(data["Q"], data["M"], 10)
    assert len(hits) == ref.shape[0]
    for b, (scores, pids) in enumerate(hits):
        assert scores.dtype == np.float32 and pids.dtype == np.int64
        order = np.argsort(-ref[b], kind="stable")[:10]
        np.testing.assert_allclose(scores, ref[b][order], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ref[b][pids], scores, rtol=1e-4, atol=1e-4)
        assert np.all(np.diff(scores) <= 0)


def test_k_larger_than_collection_returns_all_sorted(exact: ExactIndex, data: dict) -> None:
    scores, pids = exact.search(data["Q"][:1], data["M"][:1], 10_000)[0]
    assert sorted(pids.tolist()) == list(range(150))
    assert np.all(np.diff(scores) <= 0)


def test_pids_subset_shared_and_per_query(exact: ExactIndex, data: dict) -> None:
    Q, M, ref = data["Q"][:3], data["M"][:3], data["ref"][:3]
    subset = np.array([5, 17, 99, 140, 3000])  # 3000 does not exist: ignored
    for _scores, pids in exact.search(Q, M, 10, pids=subset):
        assert set(pids.tolist()) == {5, 17, 99, 140}
    per_query = [np.array([1, 2]), np.array([7]), np.array([], dtype=np.int64)]
    hits = exact.search(Q, M, 10, pids=per_query)
    assert sorted(hits[0][1].tolist()) == [1, 2] and hits[1][1].tolist() == [7] and hits[2][1].size == 0
    np.testing.assert_allclose(hits[1][0], ref[1][[7]], rtol=1e-4)


def test_load_gives_the_same_results(exact: ExactIndex, data: dict) -> None:
    loaded = load_index(exact.directory, device="cpu")
    assert loaded.kind == "exact" and loaded.dim == DIM and loaded.num_passages == 150
    a = exact.search(data["Q"], data["M"], 7)
    b = loaded.search(data["Q"], data["M"], 7)
    for (sa, pa), (sb, pb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_allclose(sa, sb)
    np.testing.assert_array_equal(loaded.live_pids(), np.arange(150))


def test_single_query_2d_input(exact: ExactIndex, data: dict) -> None:
    scores, pids = exact.search(data["Q"][0], data["M"][0], 3)[0]
    assert pids.tolist() == exact.search(data["Q"][:1], data["M"][:1], 3)[0][1].tolist()


def test_search_input_errors(exact: ExactIndex, data: dict) -> None:
    Q, M = data["Q"], data["M"]
    with pytest.raises(ValueError, match="at least 1"):
        exact.search(Q, M, 0)
    with pytest.raises(TypeError):
        exact.search(Q, M, 2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown search parameter"):
        exact.search(Q, M, 3, ncell=2)
    with pytest.raises(ValueError, match="shape"):
        exact.search(torch.zeros(1, 4, DIM + 1), torch.ones(1, 4, dtype=torch.bool), 3)
    with pytest.raises(ValueError, match="Q_mask"):
        exact.search(Q, M[:, :2], 3)


def test_build_input_errors(tmp_path: Path) -> None:
    v, lens, _ = make_collection(5, DIM)
    with pytest.raises(ValueError, match="shape"):
        build_index(tmp_path / "a", [(v[:, :10], lens)], dim=DIM)
    with pytest.raises(ValueError, match="doclens sum"):
        build_index(tmp_path / "b", [(v, lens + 1)], dim=DIM)
    with pytest.raises(ValueError, match="index_type"):
        build_index(tmp_path / "c", [(v, lens)], dim=DIM, index_type="hnsw")
    with pytest.raises(ValueError, match="nbits"):
        build_index(tmp_path / "d", [(v, lens)], dim=DIM, nbits=3)
    bad = v.astype(np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        build_index(tmp_path / "e", [(bad, lens)], dim=DIM)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "x").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        build_index(tmp_path / "f", [(v, lens)], dim=DIM)


def test_torch_chunks_and_lazy_generator_are_accepted(tmp_path: Path) -> None:
    v, lens, _ = make_collection(30, DIM, seed=2)
    consumed = []

    def gen():
        for i, chunk in enumerate(chunked(v, lens, 7)):
            consumed.append(i)
            yield torch.from_numpy(chunk[0].astype(np.float32)), torch.from_numpy(chunk[1])

    index = build_index(tmp_path / "t", gen(), dim=DIM, index_type="exact")
    assert consumed == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(np.asarray(index.vectors), v)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("index_type", ["auto", "exact", "plaid"])
def test_tiny_collections(tmp_path: Path, n: int, index_type: str) -> None:
    v, lens, own = make_collection(n, DIM, tokens=(1, 3), seed=n)
    index = build_index(tmp_path / "t", [(v, lens)], dim=DIM, index_type=index_type)
    assert index.kind == ("plaid" if index_type == "plaid" else "exact")
    if index.kind == "plaid":
        assert 1 <= index.num_centroids <= int(lens.sum())
    Q = torch.from_numpy(v[:2].astype(np.float32))[None]
    M = torch.ones(1, Q.shape[1], dtype=torch.bool)
    scores, pids = index.search(Q, M, 10)[0]
    assert sorted(pids.tolist()) == list(range(n))
    ref = reference_maxsim(Q, M, v, lens)[0]
    np.testing.assert_allclose(np.sort(scores)[::-1], np.sort(ref)[::-1], atol=0.05 if index.kind == "plaid" else 1e-4)


def test_auto_picks_plaid_from_the_threshold(tmp_path: Path) -> None:
    v, lens, _ = make_collection(AUTO_EXACT_BELOW, 16, tokens=(1, 2), seed=9)
    # counted while streaming when num_passages is not given
    assert isinstance(build_index(tmp_path / "a", chunked(v, lens, 500), dim=16), PlaidIndex)
    few = int(lens[: AUTO_EXACT_BELOW - 1].sum())
    assert isinstance(build_index(tmp_path / "b", [(v[:few], lens[: AUTO_EXACT_BELOW - 1])], dim=16), ExactIndex)
    # the facade's hint decides before any vector is read
    assert isinstance(build_index(tmp_path / "c", chunked(v, lens, 500), dim=16, num_passages=10), ExactIndex)


def test_empty_collection_builds_an_empty_exact_index(tmp_path: Path) -> None:
    index = build_index(tmp_path / "e", [], dim=DIM)
    assert index.kind == "exact" and index.num_passages == 0
    assert index.search(torch.ones(1, 2, DIM), torch.ones(1, 2, dtype=torch.bool), 5)[0][1].size == 0
    with pytest.raises(ValueError, match="token vectors"):
        build_index(tmp_path / "p", [], dim=DIM, index_type="plaid")


@pytest.mark.parametrize("index_type", ["exact", "plaid"])
def test_build_streams_chunks_without_keeping_them(tmp_path: Path, index_type: str) -> None:
    import gc
    import weakref

    v, lens, _ = make_collection(200, DIM, seed=5)
    refs: list[weakref.ref] = []

    def gen():
        for vecs, dl in chunked(v, lens, 20):
            if len(refs) >= 2:
                gc.collect()
                # the chunk before the previous one is gone: chunks are spilled, not accumulated
                assert refs[-2]() is None
            chunk = np.array(vecs)  # a fresh array per chunk, as an encoder would produce
            refs.append(weakref.ref(chunk))
            yield chunk, dl

    index = build_index(tmp_path / "s", gen(), dim=DIM, index_type=index_type)
    assert len(refs) == 10 and index.num_passages == 200
