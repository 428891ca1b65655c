"""PLAID search on a synthetic collection: agreement with exact search, k handling, subsets, batching."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from lateragkit.index import PlaidIndex, build_index, load_index
from lateragkit.index.plaid_search import plaid_params

from .test_index_codec import chunked, make_collection, make_queries, make_topics, one_thread, reference_maxsim

DIM = 64
N = 2400


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    topics = make_topics(300, DIM, seed=21)
    v, lens, own = make_collection(N, DIM, topics=topics, seed=22)
    targets = np.arange(7, N, N // 40)
    Q, M = make_queries(topics, own, targets, seed=23)
    root = tmp_path_factory.mktemp("plaid")
    plaid = build_index(root / "plaid", chunked(v, lens, 500), dim=DIM, index_type="plaid", nbits=2)
    exact = build_index(root / "exact", chunked(v, lens, 500), dim=DIM, index_type="exact")
    return {"v": v, "lens": lens, "Q": Q, "M": M, "targets": targets, "plaid": plaid, "exact": exact}


def test_build_shapes(data: dict) -> None:
    plaid: PlaidIndex = data["plaid"]
    assert plaid.kind == "plaid" and plaid.num_passages == N and plaid.num_tokens == int(data["lens"].sum())
    assert plaid.num_centroids == 2 ** int(np.floor(np.log2(16 * np.sqrt(plaid.num_tokens))))
    (segment,) = plaid.segments
    assert segment.ivf_rows.dtype == np.uint16  # 2,400 rows
    assert segment.codes.dtype == np.int16 and segment.residuals.shape[1] == DIM * 2 // 8
    assert 0 < plaid.cluster_threshold < 2


def test_default_centroid_count(tmp_path) -> None:
    v, lens, _ = make_collection(800, DIM, seed=7)
    index = build_index(tmp_path / "d", chunked(v, lens, 300), dim=DIM, index_type="plaid")
    # colbert-ai's K = 2^floor(log2(16 sqrt(tokens))); every passage is in the k-means sample here
    assert index.num_centroids == 2 ** int(np.floor(np.log2(16 * np.sqrt(index.num_tokens))))


def test_plaid_top_k_agrees_with_exhaustive_search(data: dict) -> None:
    plaid, exact, Q, M = data["plaid"], data["exact"], data["Q"], data["M"]
    hp = plaid.search(Q, M, 10)
    # the same codec scored exhaustively (every passage decompressed): what PLAID's stages approximate
    hd = plaid.search(Q, M, 10, pids=np.arange(N), max_exact_subset=N)
    overlap = [len(set(a[1]) & set(b[1])) / 10 for a, b in zip(hp, hd, strict=True)]
    assert np.mean(overlap) >= 0.9, overlap
    assert np.mean([a[1][0] == b[1][0] for a, b in zip(hp, hd, strict=True)]) >= 0.95
    # against uncompressed exact search: the passage each query was made from comes first, and the true
    # MaxSim of PLAID's top 10 is within 1 % of the best possible top 10
    he = exact.search(Q, M, 10)
    assert np.mean([h[1][0] == t for h, t in zip(hp, data["targets"], strict=True)]) >= 0.9
    assert np.mean([a[1][0] == b[1][0] for a, b in zip(hp, he, strict=True)]) >= 0.9
    ref = reference_maxsim(Q, M, data["v"], data["lens"])
    for b, ((scores, pids), (best, _)) in enumerate(zip(hp, he, strict=True)):
        assert np.all(np.diff(scores) <= 0)
        assert ref[b][pids].sum() >= 0.99 * best.sum()
        # PLAID scores are exact MaxSim over decompressed vectors: close to the uncompressed scores
        np.testing.assert_allclose(scores, ref[b][pids], atol=0.15)


def test_batched_equals_one_by_one(data: dict) -> None:
    plaid = data["plaid"]
    batch = plaid.search(data["Q"][:6], data["M"][:6], 10)
    for i in range(6):
        s, p = plaid.search(data["Q"][i : i + 1], data["M"][i : i + 1], 10)[0]
        np.testing.assert_array_equal(p, batch[i][1])
        np.testing.assert_allclose(s, batch[i][0], rtol=1e-5)


def test_k_above_ndocs_over_4_still_returns_k(data: dict) -> None:
    plaid = data["plaid"]
    scores, pids = plaid.search(data["Q"][:1], data["M"][:1], 50, ndocs=16)[0]
    assert pids.size == 50 and np.unique(pids).size == 50
    # many more than one query token's single probed cell holds
    scores, pids = plaid.search(data["Q"][:1], data["M"][:1], 1500, ncells=1)[0]
    assert pids.size == 1500 and np.unique(pids).size == 1500
    assert np.all(np.diff(scores) <= 0)


def test_parameters_are_derived_per_call(data: dict) -> None:
    plaid, Q, M = data["plaid"], data["Q"][:2], data["M"][:2]
    first = plaid.search(Q, M, 5)
    assert [h[1].size for h in plaid.search(Q, M, 300)] == [300, 300]
    again = plaid.search(Q, M, 5)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a[1], b[1])
    assert plaid_params(10, {}) == (4, 0.5, 128, 1024)
    assert plaid_params(500, {"ncells": 3})[0] == 3 and plaid_params(500, {})[2] == 4096
    assert plaid_params(2000, {})[2] == 8000
    with pytest.raises(ValueError):
        plaid_params(10, {"ndocs": 0})


def test_exact_stage_sees_at_most_ndocs_over_4(data: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    plaid = data["plaid"]
    seen: list[int] = []
    original = PlaidIndex._exact_scores

    def spy(self, Qs, S_all, firsts, cands):  # type: ignore[no-untyped-def]
        seen.extend(int(rows.numel()) for rows in cands if rows is not None)
        return original(self, Qs, S_all, firsts, cands)

    monkeypatch.setattr(PlaidIndex, "_exact_scores", spy)
    plaid.search(data["Q"][:3], data["M"][:3], 10, ndocs=64, ncells=4)
    assert seen and max(seen) <= 16


def test_pids_subset_is_respected(data: dict) -> None:
    plaid, exact, Q, M = data["plaid"], data["exact"], data["Q"][:4], data["M"][:4]
    rng = np.random.default_rng(0)
    big = np.sort(rng.choice(N, 1600, replace=False))  # above max_exact_subset: probed, then filtered
    for _scores, pids in plaid.search(Q, M, 20, pids=big):
        assert pids.size == 20 and set(pids.tolist()) <= set(big.tolist())
    small = np.sort(rng.choice(N, 30, replace=False))  # scored exactly over decompressed vectors
    hits = plaid.search(Q, M, 10, pids=small)
    ref_exact = exact.search(Q, M, 10, pids=small)
    for (_sp, pp), (_se, pe) in zip(hits, ref_exact, strict=True):
        assert set(pp.tolist()) <= set(small.tolist()) and pp.size == 10
        assert len(set(pp.tolist()) & set(pe.tolist())) >= 8
    per_query = [np.array([3, 4, 5]), big, np.array([11]), np.array([], dtype=np.int64)]
    hits = plaid.search(Q, M, 5, pids=per_query)
    assert sorted(hits[0][1].tolist()) == [3, 4, 5]
    assert hits[1][1].size == 5 and set(hits[1][1].tolist()) <= set(big.tolist())
    assert hits[2][1].tolist() == [11] and hits[3][1].size == 0


def test_load_after_build_memory_maps_and_matches(data: dict) -> None:
    plaid = data["plaid"]
    loaded = load_index(plaid.directory, device="cpu")
    assert isinstance(loaded, PlaidIndex) and isinstance(loaded.segments[0].residuals, np.memmap)
    a = plaid.search(data["Q"], data["M"], 10)
    b = loaded.search(data["Q"], data["M"], 10)
    for (sa, pa), (sb, pb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_allclose(sa, sb, rtol=1e-6)


def test_query_with_no_scored_token_returns_nothing(data: dict) -> None:
    Q = data["Q"][:1]
    assert data["plaid"].search(Q, torch.zeros(1, Q.shape[1], dtype=torch.bool), 5)[0][1].size == 0


def test_pruned_interaction_equals_scanning_each_candidates_codes(data: dict) -> None:
    plaid = data["plaid"]
    q = data["Q"][3][data["M"][3]].float()
    S = q @ plaid.codec.centroids.float().T  # [lq, K]
    best = S.amax(0)
    thr = float(best.quantile(0.9))  # about a tenth of the centroids are kept
    keep = best >= thr
    assert 0 < int(keep.sum()) < plaid.num_centroids
    rows = torch.from_numpy(np.random.default_rng(0).choice(N, 700, replace=False))  # not sorted
    got = plaid._pruned_interaction(rows, S.to(plaid.codec.dtype), keep)

    codes, offsets, lens, K = np.asarray(plaid.segments[0].codes), plaid.tok_offsets, plaid.doclens, keep.numpy()
    expected = []
    for r in rows.tolist():
        c = codes[offsets[r] : offsets[r] + lens[r]].astype(np.int64)
        c = c[K[c]]
        expected.append(float(np.maximum(S[:, c].amax(1).numpy(), 0).sum()) if c.size else 0.0)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    assert (got > 0).any() and (got == 0).any()


def test_full_centroid_interaction_over_distinct_codes_equals_scanning_every_token(tmp_path) -> None:
    """Stage 3 reads each passage's distinct codes (the inverted lists turned around); it must score exactly
    as the maximum over all its tokens' codes, across segments, with empty passages at -inf."""
    v, lens, _ = make_collection(500, DIM, seed=31)
    keep = np.repeat(~np.isin(np.arange(500), [3, 250]), lens)
    v, lens = v[keep], np.where(np.isin(np.arange(500), [3, 250]), 0, lens)  # two empty passages
    starts = np.concatenate([[0], np.cumsum(lens)])
    index = build_index(tmp_path / "v0", chunked(v[: starts[300]], lens[:300], 100), dim=DIM, index_type="plaid")
    index, _ = index.add(tmp_path / "v1", chunked(v[starts[300] : starts[500]], lens[300:], 100))
    assert index.num_segments == 2
    q = torch.from_numpy(np.random.default_rng(1).standard_normal((12, DIM)).astype(np.float32))
    S = q @ index.codec.centroids.float().T  # [lq, K]
    rows = torch.from_numpy(np.random.default_rng(2).permutation(500)[:400])  # both segments, unsorted
    got = index._centroid_interaction(rows, S)
    expected = []
    for r in rows.tolist():
        c = index._codes.take_runs(index._tok_offsets[r : r + 1], index._doclens[r : r + 1]).long()
        expected.append(float(S[:, c].amax(1).sum()) if c.numel() else float("-inf"))
    assert torch.equal(got, torch.tensor(expected, dtype=torch.float32))
    assert (got == float("-inf")).sum() == int(np.isin(rows.numpy(), [3, 250]).sum())


# --------------------------------------------------------------------------------------------------
# the exact stage: blocked decompression, shared by a batch, equal to MaxSim over decompressed vectors
# --------------------------------------------------------------------------------------------------
def _decompressed_by_hand(index: PlaidIndex, pid: int) -> np.ndarray:
    """The normalised vectors of passage ``pid``, decoded from its segment's files with numpy only:
    centroid + bucket weight of each dimension (`ResidualCodec.unpack`), divided by the norm."""
    for seg in index.segments:
        hit = np.flatnonzero(seg.pids == pid)
        if hit.size:
            r = int(hit[0])
            a, b = int(seg.tok_offsets[r]), int(seg.tok_offsets[r + 1])
            codes = np.asarray(seg.codes[a:b], dtype=np.int64)
            buckets = index.codec.unpack(torch.from_numpy(np.asarray(seg.residuals[a:b]))).numpy()
            x = index.centroids[codes].astype(np.float64) + index.codec.weights.numpy().astype(np.float64)[buckets]
            return x / np.linalg.norm(x, axis=1, keepdims=True)
    raise AssertionError(f"pid {pid} is not stored")


def _check_exact_scores(index: PlaidIndex, Q: torch.Tensor, M: torch.Tensor, k: int) -> list:
    """Batch results == one-at-a-time results == MaxSim over the hand-decoded vectors of the returned pids,
    for the sparse (one GEMM per passage) and the dense (one GEMM per block) paths of the shared stage."""
    from lateragkit.index import plaid_search

    first = None
    for overhead in (0, 10**9):  # 0: per-passage GEMMs where the pairs are sparse; 10**9: block GEMMs always
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(plaid_search, "PASSAGE_OVERHEAD", overhead)
            batch = index.search(Q, M, k)
            single = [index.search(Q[i : i + 1], M[i : i + 1], k)[0] for i in range(Q.shape[0])]
        for i, ((sb, pb), (ss, ps)) in enumerate(zip(batch, single, strict=True)):
            np.testing.assert_array_equal(pb, ps)
            np.testing.assert_allclose(sb, ss, rtol=0, atol=1e-5)
            assert pb.size == min(k, index.num_passages) and np.all(index.is_live(pb))
            vecs = [_decompressed_by_hand(index, int(p)) for p in pb]
            lens = np.array([v.shape[0] for v in vecs])
            ref = reference_maxsim(Q[i : i + 1].double(), M[i : i + 1], np.concatenate(vecs), lens)[0]
            np.testing.assert_allclose(sb, ref, rtol=0, atol=1e-4)
            assert np.all(np.diff(sb) <= 0)
        if first is not None:  # both paths give the same results
            for (sa, pa), (sb, pb) in zip(first, batch, strict=True):
                np.testing.assert_array_equal(pa, pb)
                np.testing.assert_allclose(sa, sb, rtol=0, atol=1e-5)
        first = batch
    return first or []


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_exact_stage_is_maxsim_of_decompressed_vectors_across_segments(tmp_path, nbits: int) -> None:
    topics = make_topics(60, 32, seed=31)
    v, lens, own = make_collection(500, 32, topics=topics, seed=32 + nbits)
    starts = np.concatenate([[0], np.cumsum(lens)])
    index = build_index(tmp_path / "a", [(v[: starts[320]], lens[:320])], dim=32, index_type="plaid", nbits=nbits)
    index, _ = index.add(tmp_path / "b", [(v[starts[320] :], lens[320:])])
    index = index.delete(tmp_path / "c", [3, 50, 321, 400, 499])
    assert index.num_segments == 2 and index.num_passages == 495
    Q, M = make_queries(topics, own, np.array([3, 10, 50, 200, 330, 400, 450]), seed=33)
    for k in (5, 60):
        hits = _check_exact_scores(index, Q, M, k)
        assert not {3, 50, 321, 400, 499} & {int(p) for _, pids in hits for p in pids}
    # compaction (one merged segment, the same rows) ranks the same
    compacted = index.compact(tmp_path / "d")
    assert compacted.num_segments == 1
    for (sa, pa), (sb, pb) in zip(index.search(Q, M, 20), compacted.search(Q, M, 20), strict=True):
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_allclose(sa, sb, rtol=0, atol=1e-5)


def test_exact_stage_of_a_format_1_folder(tmp_path) -> None:
    from .test_index_segments import _write_format_1

    topics = make_topics(60, 32, seed=41)
    v, lens, own = make_collection(300, 32, topics=topics, seed=42)
    build_index(tmp_path / "built", chunked(v, lens, 100), dim=32, index_type="plaid", nbits=2)
    _write_format_1(tmp_path / "built", tmp_path / "v1", deleted_pids=[7, 99])
    old = load_index(tmp_path / "v1")
    assert old.meta.flat_layout
    Q, M = make_queries(topics, own, np.array([7, 20, 99, 150, 299]), seed=43)
    hits = _check_exact_scores(old, Q, M, 30)
    assert not {7, 99} & {int(p) for _, pids in hits for p in pids}


def test_batch_with_empty_and_restricted_queries_matches_one_at_a_time(data: dict) -> None:
    plaid, Q, M = data["plaid"], data["Q"][:5].clone(), data["M"][:5].clone()
    M[2] = False  # a query without any scored token
    subsets = [np.arange(0, N, 3), np.array([5, 6, 7]), np.arange(N), np.array([], dtype=np.int64), np.arange(N)]
    batch = plaid.search(Q, M, 10, pids=subsets)
    for i in range(5):
        (s1, p1), = plaid.search(Q[i : i + 1], M[i : i + 1], 10, pids=[subsets[i]])
        np.testing.assert_array_equal(batch[i][1], p1)
        np.testing.assert_allclose(batch[i][0], s1, rtol=0, atol=1e-5)
    assert batch[2][1].size == 0 and batch[3][1].size == 0 and sorted(batch[1][1].tolist()) == [5, 6, 7]


@pytest.mark.parametrize("shared", [0.0, float("inf")])
@pytest.mark.parametrize("k", [10, 100])
def test_batch_exact_stage_shared_or_per_query_gives_one_at_a_time_results(
    data: dict, monkeypatch: pytest.MonkeyPatch, shared: float, k: int
) -> None:
    """Both ways of a batch's exact stage (pooled passages read once, dense or per-passage GEMMs; or each query
    alone) give each query's one-at-a-time results."""
    from lateragkit.index import plaid_search

    plaid, Q, M = data["plaid"], data["Q"][:8], data["M"][:8]
    alone = [plaid.search(Q[i : i + 1], M[i : i + 1], k)[0] for i in range(8)]
    for overhead in (0, 10**9):  # the block's dense GEMM, or one small GEMM per passage
        monkeypatch.setattr(plaid_search, "SHARED_PAIRS", shared)
        monkeypatch.setattr(plaid_search, "PASSAGE_OVERHEAD", overhead)
        for (s1, p1), (s2, p2) in zip(plaid.search(Q, M, k), alone, strict=True):
            np.testing.assert_array_equal(p1, p2)
            np.testing.assert_allclose(s1, s2, rtol=0, atol=1e-5)


def test_stage_blocks_on_several_threads_give_the_same_results(data: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """With torch on two threads the blocks of stages 3 and 4, and a batch's queries (their stages 1-3, and their
    exact stages when scored one by one), run on a pool (`index/blocks.py`); results are those of the plain loop,
    one query or a batch."""
    from lateragkit.index import blocks, plaid_search

    plaid, Q, M = data["plaid"], data["Q"][:6], data["M"][:6]
    monkeypatch.setattr(plaid_search, "EXACT_TOKENS", 256)  # many blocks
    monkeypatch.setattr(plaid_search, "STAGE_TOKENS", 256)
    loop = [plaid.search(Q, M, 100), plaid.search(Q[:1], M[:1], 100)]
    pooled: list[int] = []
    original = blocks._executor

    def spy(workers: int):  # type: ignore[no-untyped-def]
        pooled.append(workers)
        return original(workers)

    monkeypatch.setattr(blocks, "_executor", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pool = [plaid.search(Q, M, 100), plaid.search(Q[:1], M[:1], 100)]
    finally:
        torch.set_num_threads(threads)
    assert pooled and set(pooled) == {2}
    for a, b in zip(loop, pool, strict=True):
        for (s1, p1), (s2, p2) in zip(a, b, strict=True):
            np.testing.assert_array_equal(p1, p2)
            np.testing.assert_allclose(s1, s2, rtol=0, atol=1e-6)  # a GEMM may split its work otherwise


def test_positions_of_listed_rows_by_map_and_by_binary_search(data: dict) -> None:
    plaid = data["plaid"]
    rng = np.random.default_rng(5)
    rows = torch.from_numpy(rng.choice(N, 300, replace=False))  # distinct, not sorted
    where = {int(r): i for i, r in enumerate(rows.tolist())}
    for n_listed in (10, 2000):  # few listed rows: binary search; many: a row -> position map
        listed = torch.from_numpy(rng.integers(0, N, n_listed))
        which = torch.arange(n_listed)
        pos, got_which = plaid._positions(rows, listed, which)
        expected = [(where[int(r)], i) for i, r in enumerate(listed.tolist()) if int(r) in where]
        assert list(zip(pos.tolist(), got_which.tolist(), strict=True)) == expected


@pytest.mark.parametrize("axis", [0, 1])
def test_segment_max_over_runs_with_empty_ones(axis: int) -> None:
    from lateragkit import scoring

    rng = np.random.default_rng(6)
    lens = np.array([3, 0, 1, 5, 0])
    values = rng.normal(size=(int(lens.sum()), 4)).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(lens)])
    runs = zip(starts[:-1], starts[1:], strict=True)
    expected = np.array([values[a:b].max(0) if b > a else np.full(4, -7.0) for a, b in runs])
    v = torch.from_numpy(values if axis == 0 else values.T.copy())
    got = scoring.segment_max(v, torch.from_numpy(lens), empty=-7.0, axis=axis).numpy()
    np.testing.assert_array_equal(got if axis == 0 else got.T, expected)
    full = scoring.segment_max(torch.from_numpy(values[:3]), torch.tensor([2, 1])).numpy()
    np.testing.assert_array_equal(full, np.stack([values[:2].max(0), values[2]]))
