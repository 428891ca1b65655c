"""Segmented index versions: hard-linked unchanged files, O(change) writes, reuse of loaded segments,
search across segments equal to one segment, automatic merges, and folders of format 1 (lateragkit 0.1)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lateragkit.exceptions import CorruptIndexError
from lateragkit.index import build_index, load_index
from lateragkit.merge_policy import plan_merge

from .test_index_codec import (  # noqa: F401  (_one_thread is an autouse fixture)
    _one_thread,
    chunked,
    make_collection,
    make_queries,
    make_topics,
)

DIM = 32


def _inodes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_ino for p in sorted(folder.rglob("*")) if p.is_file()}


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def _same(a: list, b: list, atol: float = 1e-6) -> None:
    assert len(a) == len(b)
    for (sa, pa), (sb, pb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_allclose(sa, sb, rtol=0, atol=atol)


def _slice(v: np.ndarray, lens: np.ndarray, a: int, b: int) -> list[tuple[np.ndarray, np.ndarray]]:
    starts = np.concatenate([[0], np.cumsum(lens)])
    return [(v[starts[a] : starts[b]], lens[a:b])]


@pytest.fixture(scope="module")
def coll() -> dict:
    topics = make_topics(100, DIM, seed=51)
    v, lens, own = make_collection(700, DIM, topics=topics, seed=52)
    Q, M = make_queries(topics, own, np.array([1, 99, 350, 420, 455, 475, 489, 499]), seed=53)
    return {"v": v, "lens": lens, "Q": Q, "M": M}


# --------------------------------------------------------------------------------------------------
# versions share files
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_new_versions_hard_link_every_unchanged_file(coll: dict, tmp_path: Path, kind: str) -> None:
    v, lens = coll["v"], coll["lens"]
    v1 = build_index(tmp_path / "v1", _slice(v, lens, 0, 600), dim=DIM, index_type=kind)
    inodes1, mtimes1 = _inodes(tmp_path / "v1"), _mtimes(tmp_path / "v1")
    v2, _ = v1.add(tmp_path / "v2", _slice(v, lens, 600, 610))
    inodes2 = _inodes(tmp_path / "v2")
    # every file of the first version's segment (and the codec) is the very same file in the second
    shared = {name for name in inodes1 if name.startswith(("segments/", "codec/"))}
    assert shared and all(inodes2[name] == inodes1[name] for name in shared)
    assert _mtimes(tmp_path / "v1") == mtimes1  # nothing of the old version was rewritten
    # the only new files: the new segment's, the tombstones and the metadata
    new = sorted(name for name, ino in inodes2.items() if ino not in set(inodes1.values()))
    per_segment = ["doclens.npy", "pids.npy", "vectors.npy"] if kind == "exact" else [
        "codes.npy", "doclens.npy", "ivf_offsets.npy", "ivf_rows.npy", "norms.npy", "pids.npy", "residuals.npy"]
    assert new == sorted(["metadata.json", "tombstones.npy"] + [f"segments/seg-000002/{f}" for f in per_segment])
    written = sum((tmp_path / "v2" / name).stat().st_size for name in new)
    assert written < 0.1 * sum(p.stat().st_size for p in (tmp_path / "v1").rglob("*") if p.is_file())
    # a delete writes the tombstones and the metadata, nothing else
    v3 = v2.delete(tmp_path / "v3", [5, 605])
    inodes3 = _inodes(tmp_path / "v3")
    assert sorted(n for n, ino in inodes3.items() if ino not in set(inodes2.values())) == [
        "metadata.json", "tombstones.npy"]
    assert np.load(tmp_path / "v3" / "tombstones.npy").tolist() == [5, 605]
    # the returned indexes reuse the loaded segments of the one they came from
    assert v2.segments[0] is v1.segments[0] and v3.segments == v2.segments
    assert v3.shared is v1.shared


def test_load_index_reuses_segments_whose_files_are_the_same(coll: dict, tmp_path: Path) -> None:
    v, lens, Q, M = coll["v"], coll["lens"], coll["Q"], coll["M"]
    v1 = build_index(tmp_path / "v1", _slice(v, lens, 0, 600), dim=DIM, index_type="plaid")
    staged, _ = v1.add(tmp_path / "stage", _slice(v, lens, 600, 650))
    os.rename(tmp_path / "stage", tmp_path / "v2")  # what a commit does to the staging folder
    again = load_index(tmp_path / "v2", reuse=staged)
    assert again.segments == staged.segments and again.shared is staged.shared
    assert again.directory == tmp_path / "v2"
    _same(again.search(Q, M, 10), staged.search(Q, M, 10))
    # a copy holds other files: nothing is reused, the results are the same
    shutil.copytree(tmp_path / "v2", tmp_path / "copy")
    copy = load_index(tmp_path / "copy", reuse=staged)
    assert all(a is not b for a, b in zip(copy.segments, staged.segments, strict=True))
    assert copy.shared is not staged.shared
    _same(copy.search(Q, M, 10), staged.search(Q, M, 10))
    # the next write from the re-opened index links from its own folder
    v3, _ = again.add(tmp_path / "v3", _slice(v, lens, 650, 660))
    assert _inodes(tmp_path / "v3")["segments/seg-000001/codes.npy"] == _inodes(tmp_path / "v1")[
        "segments/seg-000001/codes.npy"]


# --------------------------------------------------------------------------------------------------
# search across segments
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grown(coll: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A PLAID index built from 400 passages and grown by five adds (one automatic merge on the way)."""
    v, lens = coll["v"], coll["lens"]
    root = tmp_path_factory.mktemp("grown")
    index = build_index(root / "v0", _slice(v, lens, 0, 400), dim=DIM, index_type="plaid")
    bounds = [400, 500, 560, 590, 610, 620]
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        index, _ = index.add(root / f"v{i + 1}", _slice(v, lens, a, b))
    return {"index": index, "root": root}


def test_grown_index_searches_exactly_like_one_segment_with_the_same_rows(coll: dict, grown: dict) -> None:
    index, Q, M = grown["index"], coll["Q"], coll["M"]
    assert [s.rows for s in index.segments] == [400, 210, 10]  # sizes 100, 60, 30, 20 were merged
    single = index.compact(grown["root"] / "single")
    assert single.num_segments == 1 and single.num_rows == index.num_rows == 620
    for k in (1, 10, 100, 700):
        _same(index.search(Q, M, k), single.search(Q, M, k))
    subset = np.arange(0, 620, 3)
    _same(index.search(Q, M, 10, pids=subset), single.search(Q, M, 10, pids=subset))
    _same(index.search(Q, M, 10, ncells=1, ndocs=64), single.search(Q, M, 10, ncells=1, ndocs=64))
    rows = np.arange(620)
    for (va, la), (vb, lb) in [(index.decompress_rows(rows), single.decompress_rows(rows))]:
        torch.testing.assert_close(va, vb, atol=0, rtol=0)
        assert la.tolist() == lb.tolist()


def test_grown_index_agrees_with_exhaustive_maxsim_over_its_decompressed_vectors(
    coll: dict, grown: dict
) -> None:
    index, Q, M = grown["index"], coll["Q"], coll["M"]
    vecs, lens = index.decompress_rows(np.arange(index.num_rows))
    exhaustive = build_index(grown["root"] / "decompressed", [(vecs.to(torch.float16).numpy(), lens.numpy())],
                             dim=DIM, index_type="exact")
    everything = np.arange(index.num_rows)
    # the exact stage over every row of every segment is exhaustive MaxSim over the decompressed vectors
    _same(index.search(Q, M, 10, pids=everything, max_exact_subset=index.num_rows), exhaustive.search(Q, M, 10),
          atol=2e-3)
    # and PLAID's stages find (nearly) the same top 10
    overlap = [len(set(a[1].tolist()) & set(b[1].tolist())) / 10
               for a, b in zip(index.search(Q, M, 10), exhaustive.search(Q, M, 10), strict=True)]
    assert np.mean(overlap) >= 0.9, overlap


# --------------------------------------------------------------------------------------------------
# automatic merges
# --------------------------------------------------------------------------------------------------
def test_merge_policy_bounds_segments_and_rewrites() -> None:
    sizes: list[int] = []
    rewritten = 0
    for step in range(1, 2001):
        sizes.append(1 + step % 3)
        run = plan_merge(sizes)
        if run is not None:
            start, end = run
            assert end == len(sizes) and end - start >= 2
            rewritten += sum(sizes[start:end])
            sizes[start:end] = [sum(sizes[start:end])]
        assert plan_merge(sizes) is None  # one merge per write suffices
        assert len(sizes) <= 1 + np.log2(sum(sizes))
    total = sum(sizes)
    assert rewritten <= total * (2 + np.log2(total))  # amortised O(log n) rewrites per passage
    assert plan_merge([1000, 10]) is None and plan_merge([1000, 10, 10]) == (1, 3)
    assert plan_merge([5, 0]) is None and plan_merge([100, 0, 3]) == (1, 3)
    with pytest.raises(ValueError):
        plan_merge([1, -1])


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_automatic_merges_keep_pids_and_results_and_drop_deleted_rows(
    coll: dict, tmp_path: Path, kind: str
) -> None:
    v, lens, Q, M = coll["v"], coll["lens"], coll["Q"], coll["M"]
    index = build_index(tmp_path / "v0", _slice(v, lens, 0, 300), dim=DIM, index_type=kind)
    index, _ = index.add(tmp_path / "a1", _slice(v, lens, 300, 308))
    index = index.delete(tmp_path / "d1", [2, 303])  # one row of the base, one of the new segment
    assert [s.rows for s in index.segments] == [300, 8]
    index, _ = index.add(tmp_path / "a2", _slice(v, lens, 308, 316))  # live sizes [299, 7, 8]: merge the last two
    assert [s.name for s in index.segments] == ["seg-000001", "seg-000004"]
    assert [s.rows for s in index.segments] == [300, 15]  # pid 303's row is gone, pid 2's stays tombstoned
    assert index.tombstones.tolist() == [2] and index.num_passages == 314
    assert index.is_live([2, 303, 302, 315]).tolist() == [False, False, True, True]
    expected = sorted(set(range(316)) - {2, 303})
    assert index.live_pids().tolist() == expected
    # many more small adds: the segment count stays logarithmic, every pid and result survives
    for i in range(30):
        a = 316 + 6 * i
        index, pids = index.add(tmp_path / f"m{i}", _slice(v, lens, a, a + 6))
        assert pids.tolist() == list(range(a, a + 6))
        assert index.num_segments <= 1 + np.log2(index.num_passages)
    assert index.live_pids().tolist() == expected + list(range(316, 496))
    reopened = load_index(index.directory)
    single = reopened.compact(tmp_path / "single")
    _same(index.search(Q, M, 10), single.search(Q, M, 10), atol=1e-5)
    names = [s.name for s in index.segments]
    assert int(names[-1].split("-")[1]) > 35  # merged segments got new names: 32 adds, at least 4 merges


# --------------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------------
def test_info_describes_segments_and_is_json(coll: dict, tmp_path: Path) -> None:
    v, lens = coll["v"], coll["lens"]
    index = build_index(tmp_path / "a", _slice(v, lens, 0, 300), dim=DIM, index_type="plaid", nbits=2)
    index, _ = index.add(tmp_path / "b", _slice(v, lens, 300, 320))
    index = index.delete(tmp_path / "c", [0, 1, 310])
    info = json.loads(json.dumps(index.info()))
    assert info["kind"] == "plaid" and info["dim"] == DIM and info["nbits"] == 2
    assert info["num_centroids"] == index.num_centroids
    assert (info["passages"], info["deleted"], info["rows"]) == (317, 3, 320)
    assert info["tokens"] == int(lens[:320].sum())
    assert info["segments"] == [
        {"name": "seg-000001", "rows": 300, "tokens": int(lens[:300].sum()), "deleted": 2},
        {"name": "seg-000002", "rows": 20, "tokens": int(lens[300:320].sum()), "deleted": 1},
    ]
    assert info["bytes_on_disk"] == sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# format 1 (lateragkit 0.1): the flat layout opens as one segment
# --------------------------------------------------------------------------------------------------
def _write_format_1(source: Path, target: Path, deleted_pids: list[int]) -> None:
    """What lateragkit 0.1 wrote for a one-segment index: every file in one folder, a per-row deleted flag
    and that release's metadata keys (checked against indexes written by the release itself)."""
    meta = json.loads((source / "metadata.json").read_text())
    segment = source / "segments" / "seg-000001"
    target.mkdir()
    for f in segment.iterdir():
        if f.name != "norms.npy":  # the scales file came later (format 2)
            shutil.copyfile(f, target / f.name)
    pids = np.load(segment / "pids.npy")
    np.save(target / "deleted.npy", np.isin(pids, deleted_pids).astype(np.uint8))
    old = {
        "format_version": 1, "kind": meta["kind"], "dim": meta["dim"], "next_pid": meta["next_pid"],
        "num_rows": int(pids.size), "num_tokens": int(np.load(segment / "doclens.npy").sum()),
        "built_passages": meta["built_passages"], "added_since_build": 0, "deleted_since_build": len(deleted_pids),
    }
    if meta["kind"] == "plaid":
        for f in (source / "codec").iterdir():
            shutil.copyfile(f, target / f.name)
        codec = meta["codec"]
        old.update({key: codec[key] for key in ("nbits", "num_centroids", "cluster_threshold", "avg_residual",
                                                "seed", "centroids_added_since_build")})
        old["kmeans"] = {"niter": 4, "train_vectors": 1000, "heldout_vectors": 50, "sampled_passages": 80,
                         "seconds": 0.04}
    (target / "metadata.json").write_text(json.dumps(old, indent=1, sort_keys=True))


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_format_1_folders_open_as_one_segment_and_convert_on_write(coll: dict, tmp_path: Path, kind: str) -> None:
    v, lens, Q, M = coll["v"], coll["lens"], coll["Q"], coll["M"]
    built = build_index(tmp_path / "built", _slice(v, lens, 0, 300), dim=DIM, index_type=kind)
    _write_format_1(tmp_path / "built", tmp_path / "v1", deleted_pids=[7, 99])
    old = load_index(tmp_path / "v1")
    assert old.meta.flat_layout and old.num_segments == 1 and old.num_passages == 298
    assert old.tombstones.tolist() == [7, 99] and old.info()["deleted"] == 2
    _same(old.search(Q, M, 10), built.delete(tmp_path / "ref", [7, 99]).search(Q, M, 10))
    # the first write is format 2 and hard-links the old files into a segment folder (and the codec)
    new, pids = old.add(tmp_path / "v2", _slice(v, lens, 300, 310))
    assert pids.tolist() == list(range(300, 310))
    meta = json.loads((tmp_path / "v2" / "metadata.json").read_text())
    assert meta["format_version"] == 2 and [s["name"] for s in meta["segments"]] == ["seg-000000", "seg-000001"]
    old_inodes, new_inodes = _inodes(tmp_path / "v1"), _inodes(tmp_path / "v2")
    assert new_inodes["segments/seg-000000/doclens.npy"] == old_inodes["doclens.npy"]
    if kind == "plaid":
        assert new_inodes["segments/seg-000000/codes.npy"] == old_inodes["codes.npy"]
        assert new_inodes["codec/centroids.npy"] == old_inodes["centroids.npy"]
    assert "deleted.npy" not in {Path(n).name for n in new_inodes}
    reopened = load_index(tmp_path / "v2")
    assert not reopened.meta.flat_layout and reopened.tombstones.tolist() == [7, 99]
    _same(reopened.search(Q, M, 10), new.search(Q, M, 10))
    # other format versions are refused with a rebuild message
    meta1 = json.loads((tmp_path / "v1" / "metadata.json").read_text())
    meta1["format_version"] = 3
    (tmp_path / "v1" / "metadata.json").write_text(json.dumps(meta1))
    with pytest.raises(CorruptIndexError, match=r"metadata\.json has format_version 3.*rebuilt"):
        load_index(tmp_path / "v1")


def test_segmented_array_gathers_like_one_array() -> None:
    from lateragkit.index.segments import SegmentedArray

    rng = np.random.default_rng(3)
    sizes = [7, 0, 5, 12]
    parts = [torch.from_numpy(rng.integers(0, 100, (n, 3)).astype(np.uint8)) for n in sizes]
    whole = torch.cat(parts)
    arr = SegmentedArray(parts, row_shape=(3,), dtype=torch.uint8, device=torch.device("cpu"))
    assert arr.shape == (24, 3) and len(arr) == 24
    idx = torch.from_numpy(rng.integers(0, 24, 50))  # any order, repeats
    assert torch.equal(arr.take(idx), whole[idx])
    # runs (each inside one part) in an order that is not the parts' order
    starts, lens = torch.tensor([12, 0, 19, 7, 3, 23]), torch.tensor([4, 3, 5, 2, 0, 1])
    expected = torch.cat([whole[s : s + n] for s, n in zip(starts.tolist(), lens.tolist(), strict=True)])
    assert torch.equal(arr.take_runs(starts, lens), expected)
    assert torch.equal(arr.take_runs(torch.tensor([0, 12]), torch.tensor([7, 5])), torch.cat([whole[:7], whole[12:17]]))
    # a plan is worked out once and gathers any array split into the same parts
    floats = [torch.arange(n, dtype=torch.float32) + 100 * i for i, n in enumerate(sizes)]
    other = SegmentedArray(floats, row_shape=(), dtype=torch.float32, device=torch.device("cpu"))
    plan = arr.plan_runs(starts, lens)
    assert torch.equal(arr.gather(plan), expected)
    assert torch.equal(other.gather(plan), other.take_runs(starts, lens))
    assert torch.equal(other.gather(plan)[:4], torch.tensor([300.0, 301, 302, 303]))  # run [12, 16): part 3
    # an array split otherwise (the same 24 rows in two parts) refuses the plan instead of reading wrong rows
    resplit = SegmentedArray([whole[:12], whole[12:]], row_shape=(3,), dtype=torch.uint8, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="plan with this array's own plan_runs"):
        resplit.gather(plan)
    assert arr.take(torch.zeros(0, dtype=torch.long)).shape == (0, 3)
    # codes of segments written before and after the codebook passed 32,768 centroids: the wider dtype
    mixed = SegmentedArray([torch.tensor([1, 2], dtype=torch.int16), torch.tensor([40_000], dtype=torch.int32)],
                           row_shape=(), dtype=torch.int16, device=torch.device("cpu"))
    assert mixed.take(torch.tensor([2, 0])).tolist() == [40_000, 1] and mixed.dtype == torch.int32


def test_plaid_segments_without_stored_scales_open_and_rank_the_same(coll: dict, tmp_path: Path) -> None:
    """Segments written before ``norms.npy`` existed (no ``scales`` in their metadata) get their tokens'
    decompression scales computed on open, to the very values a new build stores; a merge then stores them."""
    v, lens, Q, M = coll["v"], coll["lens"], coll["Q"], coll["M"]
    built = build_index(tmp_path / "built", _slice(v, lens, 0, 300), dim=DIM, index_type="plaid")
    built, _ = built.add(tmp_path / "grown", _slice(v, lens, 300, 330))
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "grown", old)
    meta = json.loads((old / "metadata.json").read_text())
    for seg in meta["segments"]:
        assert seg.pop("scales") is True
        (old / "segments" / seg["name"] / "norms.npy").unlink()
    (old / "metadata.json").write_text(json.dumps(meta))
    reopened = load_index(old)
    assert [s.files() for s in reopened.segments] == [s.files()[:-1] for s in built.segments]  # no norms.npy
    for seg_old, seg_new in zip(reopened.segments, built.segments, strict=True):
        np.testing.assert_array_equal(seg_old.norms, seg_new.norms)
    _same(reopened.search(Q, M, 10), built.search(Q, M, 10), atol=0)
    merged = reopened.compact(tmp_path / "merged")
    seg = merged.segments[0]
    assert seg.meta.scales and (tmp_path / "merged" / "segments" / seg.name / "norms.npy").is_file()
    _same(load_index(tmp_path / "merged").search(Q, M, 10), built.search(Q, M, 10), atol=1e-6)


def test_segments_with_the_wider_dtypes_of_earlier_versions_open_and_rank_the_same(coll: dict, tmp_path: Path) -> None:
    """Earlier versions wrote int64 ``doclens.npy``/``pids.npy`` and int16 IVF row ids; they still open, to the
    same results, and new segments are written narrow (int32, uint16)."""
    v, lens, Q, M = coll["v"], coll["lens"], coll["Q"], coll["M"]
    built = build_index(tmp_path / "built", _slice(v, lens, 0, 300), dim=DIM, index_type="plaid")
    seg = tmp_path / "built" / "segments" / "seg-000001"
    assert np.load(seg / "doclens.npy").dtype == np.int32 and np.load(seg / "pids.npy").dtype == np.int32
    assert np.load(seg / "ivf_rows.npy").dtype == np.uint16
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "built", old)
    for name, dtype in (("doclens.npy", np.int64), ("pids.npy", np.int64), ("ivf_rows.npy", np.int16)):
        path = old / "segments" / "seg-000001" / name
        np.save(path, np.load(path).astype(dtype))
    _same(load_index(old).search(Q, M, 10), built.search(Q, M, 10), atol=0)
