"""add / delete / replace / compact on both backends: stable pids, consistent results, old index untouched."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from lateragkit.index import PassageIndex, build_index, load_index

from .test_index_codec import (  # noqa: F401  (_one_thread is an autouse fixture)
    _one_thread,
    chunked,
    make_collection,
    make_queries,
    make_topics,
    reference_maxsim,
)

DIM = 32


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (sa, pa), (sb, pb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def coll() -> dict:
    topics = make_topics(120, DIM, seed=31)
    v, lens, own = make_collection(700, DIM, topics=topics, seed=32)
    # the first 600 passages are built, the last 100 added
    split = int(lens[:600].sum())
    return {"topics": topics, "v": v, "lens": lens, "own": own, "split": split}


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_add_delete_compact_keep_pids_and_results(coll: dict, tmp_path: Path, kind: str) -> None:
    v, lens, own, split = coll["v"], coll["lens"], coll["own"], coll["split"]
    base = build_index(tmp_path / "v1", chunked(v[:split], lens[:600], 200), dim=DIM, index_type=kind)
    base_files = _digest(tmp_path / "v1")
    targets = np.array([3, 250, 599, 600, 650, 699])
    Q, M = make_queries(coll["topics"], own, targets, seed=33)
    before = base.search(Q, M, 10)

    # add: new pids continue the sequence; the old index (object and files) is untouched
    added, new_pids = base.add(tmp_path / "v2", chunked(v[split:], lens[600:], 40))
    assert new_pids.tolist() == list(range(600, 700))
    assert added.num_passages == 700 and base.num_passages == 600
    assert _digest(tmp_path / "v1") == base_files
    _same(base.search(Q, M, 10), before)
    after_add = added.search(Q, M, 10)
    for (_, pids), t in zip(after_add, targets, strict=True):
        assert pids[0] == t  # each query's own passage, old or new, is found first
    # passages that existed keep their scores (same vectors / same codec)
    old = np.arange(600)
    _same(added.search(Q, M, 5, pids=old), base.search(Q, M, 5, pids=old))

    # delete: tombstoned pids never come back, whatever the subset
    gone = np.array([3, 650, 123])
    deleted = added.delete(tmp_path / "v3", gone)
    assert deleted.num_passages == 697 and added.num_passages == 700
    assert set(deleted.live_pids().tolist()) == set(range(700)) - set(gone.tolist())
    for _, pids in deleted.search(Q, M, 700):
        assert not set(pids.tolist()) & set(gone.tolist())
        assert pids.size == 697
    for _, pids in deleted.search(Q, M, 10, pids=np.array([3, 650, 5, 6])):
        assert sorted(pids.tolist()) == [5, 6]
    after_delete = deleted.search(Q, M, 10)

    # compact: deleted rows dropped, one segment, pids and results unchanged
    compacted = deleted.compact(tmp_path / "v4")
    assert compacted.num_rows == 697 and deleted.num_rows == 700
    assert compacted.num_segments == 1 and compacted.info()["deleted"] == 0
    np.testing.assert_array_equal(compacted.live_pids(), deleted.live_pids())
    _same(compacted.search(Q, M, 10), after_delete)
    reloaded = load_index(tmp_path / "v4", device="cpu")
    _same(reloaded.search(Q, M, 10), after_delete)

    # pids are never reused: adding after deleting the largest pid continues after it
    last = reloaded.delete(tmp_path / "v5", np.array([699]))
    more, more_pids = last.add(tmp_path / "v6", [(v[:10], lens[:1].copy() * 0 + 10)])
    assert more_pids.tolist() == [700]
    assert 699 not in more.live_pids().tolist() and 700 in more.live_pids().tolist()


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_replace_deletes_and_adds_in_one_version(coll: dict, tmp_path: Path, kind: str) -> None:
    v, lens, own, split = coll["v"], coll["lens"], coll["own"], coll["split"]
    base = build_index(tmp_path / "a", chunked(v[:split], lens[:600]), dim=DIM, index_type=kind)
    n = int(lens[600:620].sum())
    # an upsert: passages 10 and 11 get new content (new pids), one folder, no scratch folder
    out, new_pids = base.replace(tmp_path / "b", [10, 11], [(v[split : split + n], lens[600:620])])
    assert new_pids.tolist() == list(range(600, 620))
    assert out.num_passages == 600 - 2 + 20 and out.num_rows == 620
    assert out.is_live([10, 11, 600, 619, 620, -1]).tolist() == [False, False, True, True, False, False]
    assert out.info()["deleted"] == 2
    # the same as a delete followed by an add
    two, _ = base.delete(tmp_path / "c", [10, 11]).add(tmp_path / "d", [(v[split : split + n], lens[600:620])])
    Q, M = make_queries(coll["topics"], own, np.array([10, 11, 605]), seed=37)
    _same(out.search(Q, M, 10), two.search(Q, M, 10))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(p.name for p in (tmp_path / "d").iterdir())


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_deleting_unknown_pids_is_harmless(coll: dict, tmp_path: Path, kind: str, caplog) -> None:
    v, lens = coll["v"], coll["lens"]
    n = int(lens[:50].sum())
    index = build_index(tmp_path / "a", [(v[:n], lens[:50])], dim=DIM, index_type=kind)
    with caplog.at_level(logging.WARNING, logger="lateragkit.index"):
        out = index.delete(tmp_path / "b", np.array([7, 10_000, -1]))
    assert out.num_passages == 49 and "ignored" in caplog.text
    assert out.delete(tmp_path / "c", [7]).meta.deleted_since_build == 1  # deleting twice counts once


def test_churn_warning_is_given_once_per_build_or_compaction(coll: dict, tmp_path: Path, caplog) -> None:
    v, lens, split = coll["v"], coll["lens"], coll["split"]
    index = build_index(tmp_path / "a", chunked(v[:split], lens[:600]), dim=DIM, index_type="plaid")
    small = int(lens[600:630].sum())
    with caplog.at_level(logging.WARNING, logger="lateragkit.index"):
        index, _ = index.add(tmp_path / "b", [(v[split : split + small], lens[600:630])])  # 5 %
        assert "retrain" not in caplog.text
        index = index.delete(tmp_path / "c", np.arange(40))  # 5 % + 6.7 %: crosses 10 %
        assert caplog.text.count("changed since it was built") == 1
        assert "compact" in caplog.text and "compact(retrain=True)" in caplog.text
        index = index.delete(tmp_path / "d", np.arange(40, 60))  # still above: not repeated
        index, _ = index.add(tmp_path / "e", [(v[:10], np.array([10]))])
        assert caplog.text.count("changed since it was built") == 1
        # compaction starts a new generation: the next crossing warns again
        index = index.compact(tmp_path / "f")
        assert index.meta.built_passages == index.num_passages and not index.meta.churn_warned
        index = index.delete(tmp_path / "g", np.arange(60, 130))
        assert caplog.text.count("changed since it was built") == 2
    assert load_index(tmp_path / "g").meta.churn_warned  # recorded in the metadata


def test_outlier_heavy_additions_get_new_centroids(coll: dict, tmp_path: Path) -> None:
    v, lens, split = coll["v"], coll["lens"], coll["split"]
    index = build_index(tmp_path / "a", chunked(v[:split], lens[:600]), dim=DIM, index_type="plaid")
    K = index.num_centroids
    # in-distribution passages: the existing codebook fits them
    same, _ = index.add(tmp_path / "b", chunked(v[split:], lens[600:]))
    assert same.num_centroids == K and same.shared is index.shared  # the codec object itself is shared
    # passages about topics never seen at build time
    new_topics = make_topics(40, DIM, seed=99)
    nv, nlens, nown = make_collection(60, DIM, topics=new_topics, seed=34)
    grown, new_pids = same.add(tmp_path / "c", [(nv, nlens)])
    assert grown.num_centroids > K
    assert grown.meta.codec is not None and grown.meta.codec.centroids_added_since_build == grown.num_centroids - K
    assert new_pids.tolist() == list(range(700, 760))
    # the new centroids describe the new passages well: small reconstruction error
    dec, _ = grown.decompress_rows(np.arange(700, 760))
    new_err = float(np.mean(1 - (dec.numpy() * nv.astype(np.float32)).sum(1)))
    assert new_err < 0.05
    # without new centroids the new passages would be coded against unrelated ones
    far = 1 - float(np.max(same.codec.centroids.float().numpy() @ nv.astype(np.float32).T, axis=0).mean())
    assert far > 2 * new_err, (far, new_err)
    # and the new passages are found
    targets = np.array([0, 17, 42])
    Q, M = make_queries(new_topics, nown, targets, seed=35)
    best_new = reference_maxsim(Q, M, nv, nlens).argmax(1)
    for (_, pids), b in zip(grown.search(Q, M, 5), best_new, strict=True):
        assert pids[0] == 700 + b
    # the new segment's codes and lists use the new centroids; older segments keep theirs
    newest = grown.segments[-1]
    assert int(np.asarray(newest.codes).max()) >= K
    assert newest.ivf_offsets.size == grown.num_centroids + 1
    assert all(s.ivf_offsets.size == K + 1 for s in grown.segments[:-1])
    # the grown codec survives a reload and a compaction (every segment re-listed over all centroids)
    compacted = load_index(tmp_path / "c").compact(tmp_path / "d")
    assert compacted.num_centroids == grown.num_centroids
    _same(compacted.search(Q, M, 5), grown.search(Q, M, 5))


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_add_accepts_an_empty_batch(coll: dict, tmp_path: Path, kind: str) -> None:
    v, lens = coll["v"], coll["lens"]
    n = int(lens[:20].sum())
    index: PassageIndex = build_index(tmp_path / "a", [(v[:n], lens[:20])], dim=DIM, index_type=kind)
    out, pids = index.add(tmp_path / "b", [])
    assert pids.size == 0 and out.num_passages == 20 and out.num_segments == 1
    Q = torch.from_numpy(v[:4].astype(np.float32))[None]
    M = torch.ones(1, 4, dtype=torch.bool)
    _same(out.search(Q, M, 5), index.search(Q, M, 5))


def test_deleting_everything_then_compacting_leaves_an_empty_index(coll: dict, tmp_path: Path) -> None:
    v, lens = coll["v"], coll["lens"]
    n = int(lens[:30].sum())
    index = build_index(tmp_path / "a", [(v[:n], lens[:30])], dim=DIM, index_type="plaid")
    empty = index.delete(tmp_path / "b", np.arange(30)).compact(tmp_path / "c")
    assert empty.num_passages == 0 and empty.num_segments == 0 and empty.num_rows == 0
    Q = torch.from_numpy(v[:4].astype(np.float32))[None]
    assert empty.search(Q, torch.ones(1, 4, dtype=torch.bool), 5)[0][1].size == 0
    # pids continue after the largest ever assigned, and the codec is still there
    again, pids = load_index(tmp_path / "c").add(tmp_path / "d", [(v[:n], lens[:30])])
    assert pids.tolist() == list(range(30, 60)) and again.num_centroids == index.num_centroids
    assert again.search(Q, torch.ones(1, 4, dtype=torch.bool), 1)[0][1].tolist() == [30]
