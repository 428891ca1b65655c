"""Rank fusion (lateragkit.fusion) on hand-checkable inputs."""
from __future__ import annotations

import numpy as np
import pytest

from lateragkit.fusion import DEFAULT_ALPHA, DEFAULT_METHOD, METHODS, fuse, normalized_fusion, rrf


def pairs(result: tuple[np.ndarray, np.ndarray]) -> list[tuple[int, float]]:
    scores, ids = result
    assert scores.dtype == np.float64 and ids.dtype == np.int64
    return [(int(i), float(s)) for s, i in zip(scores, ids, strict=True)]


def test_rrf_sums_reciprocal_ranks_and_keeps_ids_found_in_one_list() -> None:
    # list A: 1, 2, 3   list B: 3, 4   (ranks are 1-based, k = 60)
    fused = pairs(rrf([[1, 2, 3], np.array([3, 4])]))
    assert [i for i, _ in fused] == [3, 1, 2, 4]  # 2 and 4 tie at 1/62: by id
    expected = {3: 1 / 63 + 1 / 61, 1: 1 / 61, 2: 1 / 62, 4: 1 / 62}
    for i, s in fused:
        assert s == pytest.approx(expected[i], rel=1e-12)


def test_rrf_constant_weights_and_repeats() -> None:
    assert pairs(rrf([[7, 8]], k=0)) == [(7, 1.0), (8, 0.5)]
    weighted = dict(pairs(rrf([[1, 2], [2, 1]], k=0, weights=[3.0, 1.0])))
    assert weighted == {1: pytest.approx(3 + 0.5), 2: pytest.approx(1.5 + 1)}
    # an id repeated within a list keeps its best rank
    assert dict(pairs(rrf([[5, 6, 5]], k=0))) == {5: 1.0, 6: 0.5}
    # a list of weight 0 is left out entirely
    assert [i for i, _ in pairs(rrf([[1, 2], [9]], weights=[1.0, 0.0]))] == [1, 2]


def test_empty_lists() -> None:
    assert pairs(rrf([])) == [] and pairs(rrf([[], []])) == []
    assert [i for i, _ in pairs(rrf([[], [4, 2]]))] == [4, 2]
    assert pairs(normalized_fusion([])) == []
    empty = (np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert pairs(normalized_fusion([empty, (np.array([2.0, 1.0]), np.array([8, 9]))])) == [(8, 1.0), (9, 0.0)]
    for method in METHODS:
        assert pairs(fuse(empty, empty, method=method)) == []


def test_normalized_fusion_min_max_per_list() -> None:
    late = (np.array([30.0, 20.0, 10.0]), np.array([1, 2, 3]))  # -> 1, 0.5, 0
    bm25 = (np.array([8.0, 4.0, 2.0]), np.array([3, 4, 5]))  # -> 1, 1/3, 0
    fused = dict(pairs(normalized_fusion([late, bm25], weights=[0.5, 0.5])))
    assert fused == pytest.approx({1: 0.5, 2: 0.25, 3: 0.5, 4: 1 / 6, 5: 0.0})
    ranked = pairs(normalized_fusion([late, bm25], weights=[0.7, 0.3]))
    assert [i for i, _ in ranked] == [1, 2, 3, 4, 5]
    assert dict(ranked) == pytest.approx({1: 0.7, 2: 0.35, 3: 0.3, 4: 0.1, 5: 0.0})


def test_normalized_fusion_equal_scores_and_repeats() -> None:
    # one item, or all scores equal: every normalised score is 1
    assert pairs(normalized_fusion([(np.array([4.2]), np.array([7]))])) == [(7, 1.0)]
    assert pairs(normalized_fusion([(np.array([2.0, 2.0]), np.array([5, 3]))])) == [(3, 1.0), (5, 1.0)]
    # a repeated id keeps its highest score; order within a list does not matter
    repeated = (np.array([1.0, 3.0, 2.0, 0.0]), np.array([4, 6, 4, 9]))  # 4 -> 2.0: (2 - 0) / (3 - 0)
    assert pairs(normalized_fusion([repeated])) == [(6, 1.0), (4, pytest.approx(2 / 3)), (9, 0.0)]


def test_fuse_alpha_weighs_late_against_bm25() -> None:
    late = (np.array([9.0, 8.0, 1.0]), np.array([10, 11, 12]))
    bm25 = (np.array([5.0, 4.0]), np.array([12, 13]))
    # alpha = 1 / 0 rank exactly as one side alone
    for method in METHODS:
        assert [i for i, _ in pairs(fuse(late, bm25, method=method, alpha=1.0))] == [10, 11, 12]
        assert [i for i, _ in pairs(fuse(late, bm25, method=method, alpha=0.0))] == [12, 13]
    # alpha 0.5 RRF is plain RRF; k keeps the head
    assert pairs(fuse(late, bm25, method="rrf", alpha=0.5)) == pairs(rrf([late[1], bm25[1]]))
    assert [i for i, _ in pairs(fuse(late, bm25, method="rrf", k=2))] == [12, 10]
    normalized = dict(pairs(fuse(late, bm25, method="normalized", alpha=0.25)))
    assert normalized == pytest.approx({10: 0.25, 11: 0.25 * 7 / 8, 12: 0.75, 13: 0.0})
    assert DEFAULT_METHOD in METHODS and 0 <= DEFAULT_ALPHA <= 1


def test_bad_input_is_a_clear_error() -> None:
    ok = (np.array([1.0]), np.array([1]))
    with pytest.raises(ValueError, match="alpha must be a number in"):
        fuse(ok, ok, alpha=1.5)
    with pytest.raises(ValueError, match="method must be one of"):
        fuse(ok, ok, method="borda")
    with pytest.raises(ValueError, match="k must be at least 1"):
        fuse(ok, ok, k=0)
    with pytest.raises(TypeError, match="integer ids"):
        rrf([np.array([0.5, 1.5])])
    with pytest.raises(ValueError, match="one weight per list"):
        rrf([[1], [2]], weights=[1.0])
    with pytest.raises(ValueError, match="weights must be finite"):
        rrf([[1]], weights=[-1.0])
    with pytest.raises(ValueError, match="RRF constant"):
        rrf([[1]], k=-1)
    with pytest.raises(ValueError, match="2 scores for 1 ids"):
        normalized_fusion([(np.array([1.0, 2.0]), np.array([1]))])
    with pytest.raises(ValueError, match="non-finite"):
        normalized_fusion([(np.array([np.nan]), np.array([1]))])
