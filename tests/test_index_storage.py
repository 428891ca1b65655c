"""Crash-safe versioned folders, the .npy helpers and corrupt-index detection."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lateragkit.exceptions import CorruptIndexError, IndexNotFoundError
from lateragkit.index import build_index, load_index
from lateragkit.index.storage import NpyAppender, VersionedDir, load_npy

from .test_index_codec import _one_thread, chunked, make_collection  # noqa: F401  (autouse fixture)


def _commit(vd: VersionedDir, payload: str) -> Path:
    with vd.stage() as staging:
        assert staging.is_dir() and not any(staging.iterdir())
        (staging / "data.txt").write_text(payload)
    return vd.current()


# --------------------------------------------------------------------------------------------------
# VersionedDir
# --------------------------------------------------------------------------------------------------
def test_empty_folder_has_no_index(tmp_path: Path) -> None:
    vd = VersionedDir(tmp_path / "idx")
    assert not vd.exists()
    with pytest.raises(IndexNotFoundError):
        vd.current()
    vd.clean()  # nothing to clean, no error


def test_stage_commits_numbered_versions_and_clean_keeps_only_the_live_one(tmp_path: Path) -> None:
    vd = VersionedDir(tmp_path / "idx")
    v1 = _commit(vd, "one")
    assert v1.name == "v00000001" and vd.exists()
    assert json.loads((tmp_path / "idx" / "CURRENT").read_text()) == {"version": "v00000001"}
    v2 = _commit(vd, "two")
    assert v2.name == "v00000002" and (v2 / "data.txt").read_text() == "two"
    assert v1.is_dir()  # superseded versions stay until clean()
    vd.clean()
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["CURRENT", "v00000002"]


def test_exception_inside_stage_leaves_previous_version(tmp_path: Path) -> None:
    vd = VersionedDir(tmp_path / "idx")
    _commit(vd, "one")
    with pytest.raises(RuntimeError, match="boom"):
        with vd.stage() as staging:
            (staging / "data.txt").write_text("half")
            raise RuntimeError("boom")
    assert vd.current().name == "v00000001"
    assert (vd.current() / "data.txt").read_text() == "one"
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["CURRENT", "v00000001"]


def test_leftovers_of_a_crash_are_cleaned_and_do_not_block_writes(tmp_path: Path) -> None:
    vd = VersionedDir(tmp_path / "idx")
    _commit(vd, "one")
    root = tmp_path / "idx"
    # what a killed writer leaves: a staging folder, a renamed but never committed version, a pointer temp
    (root / ".staging-999-deadbeef").mkdir()
    (root / ".staging-999-deadbeef" / "codes.npy").write_bytes(b"partial")
    (root / "v00000002").mkdir()
    (root / "v00000002" / "data.txt").write_text("uncommitted")
    (root / ".CURRENT-0123").write_text('{"version": "v00000002"}')
    assert vd.current().name == "v00000001"
    v3 = _commit(vd, "three")  # numbering skips the leftover folder
    assert v3.name == "v00000003"
    vd.clean()
    assert sorted(p.name for p in root.iterdir()) == ["CURRENT", "v00000003"]


def test_clean_never_removes_a_staging_folder_in_use(tmp_path: Path) -> None:
    vd = VersionedDir(tmp_path / "idx")
    _commit(vd, "one")
    with vd.stage() as staging:
        (staging / "data.txt").write_text("two")
        vd.clean()
        assert (staging / "data.txt").exists()
    assert (vd.current() / "data.txt").read_text() == "two"


@pytest.mark.parametrize("content", ["not json", '{"version": "../etc"}', '{"version": "v00000007"}'])
def test_unreadable_current_is_corrupt_and_clean_keeps_versions(tmp_path: Path, content: str) -> None:
    vd = VersionedDir(tmp_path / "idx")
    _commit(vd, "one")
    (tmp_path / "idx" / "CURRENT").write_text(content)
    with pytest.raises(CorruptIndexError, match="CURRENT"):
        vd.current()
    vd.clean()
    assert (tmp_path / "idx" / "v00000001" / "data.txt").exists()


def test_reader_of_an_old_version_keeps_working_after_clean(tmp_path: Path) -> None:
    v, lens, own = make_collection(60, dim=32, seed=4)
    vd = VersionedDir(tmp_path / "idx")
    with vd.stage() as staging:
        build_index(staging / "backend", chunked(v, lens), dim=32, index_type="plaid")
    old = load_index(vd.current() / "backend", device="cpu")
    Q = torch.nn.functional.normalize(torch.from_numpy(v[:8].astype(np.float32)), dim=-1)[None]
    M = torch.ones(1, 8, dtype=torch.bool)
    before = old.search(Q, M, 5)[0]
    with vd.stage() as staging:
        old.delete(staging / "backend", np.array([int(before[1][0])]))
    vd.clean()
    assert not (tmp_path / "idx" / "v00000001").exists()
    after = old.search(Q, M, 5)[0]  # memory maps of the removed version still read
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0])
    new = load_index(vd.current() / "backend", device="cpu")
    assert int(before[1][0]) not in new.search(Q, M, 5)[0][1]


# --------------------------------------------------------------------------------------------------
# .npy helpers
# --------------------------------------------------------------------------------------------------
def test_npy_appender_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blocks = [rng.normal(size=(n, 7)).astype(np.float16) for n in (3, 0, 11)]
    with NpyAppender(tmp_path / "a.npy", np.float16, (7,)) as out:
        for b in blocks:
            out.append(b)
    loaded = np.load(tmp_path / "a.npy", mmap_mode="r", allow_pickle=False)
    np.testing.assert_array_equal(loaded, np.concatenate(blocks))
    with NpyAppender(tmp_path / "empty.npy", np.int64) as out:
        pass
    assert np.load(tmp_path / "empty.npy").shape == (0,)
    with pytest.raises(ValueError):
        with NpyAppender(tmp_path / "bad.npy", np.float16, (7,)) as out:
            out.append(np.zeros((2, 6)))
    assert not (tmp_path / "bad.npy").exists()


class _Payload:
    """Unpickling this object would create a marker folder: proof that pickled content was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.marker),))


def test_pickled_files_are_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    raw = tmp_path / "raw.npy"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CorruptIndexError, match="raw.npy"):
        load_npy(raw)
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptIndexError, match="obj.npy"):
        load_npy(obj)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# corrupt index files
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each backend: three segments (a build and two adds) and tombstones in the second segment."""
    root = tmp_path_factory.mktemp("corrupt")
    v, lens, _ = make_collection(140, dim=32, seed=6)
    starts = np.concatenate([[0], np.cumsum(lens)])
    out = {}
    for kind in ("exact", "plaid"):
        index = build_index(root / f"{kind}-1", chunked(v[: starts[100]], lens[:100]), dim=32, index_type=kind)
        index, _ = index.add(root / f"{kind}-2", [(v[starts[100] : starts[130]], lens[100:130])])
        index, _ = index.add(root / f"{kind}-3", [(v[starts[130] :], lens[130:])])
        index.delete(root / kind, [105, 110, 111])
        out[kind] = root / kind
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_built_fixture_has_every_kind_of_file(built: dict[str, Path]) -> None:
    segment = ["doclens.npy", "pids.npy"]
    expected = {
        "exact": segment + ["vectors.npy"],
        "plaid": segment + ["codes.npy", "residuals.npy", "norms.npy", "ivf_rows.npy", "ivf_offsets.npy"],
    }
    for kind, folder in built.items():
        index = load_index(folder)
        assert [s.rows for s in index.segments] == [100, 30, 10] and index.tombstones.tolist() == [105, 110, 111]
        want = ["metadata.json", "tombstones.npy"] + [
            f"segments/seg-00000{i}/{f}" for i in (1, 2, 3) for f in expected[kind]]
        if kind == "plaid":
            want += [f"codec/{f}" for f in ("centroids.npy", "bucket_cutoffs.npy", "bucket_weights.npy")]
        assert _files(folder) == sorted(want)


def test_missing_index_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError):
        load_index(tmp_path / "nothing")


def _damage_each(built: Path, tmp_path: Path, label: str, damage) -> list[str]:  # type: ignore[no-untyped-def]
    """Damage each file of a fresh copy in turn; describe every case that did not raise a
    `CorruptIndexError` naming the file (its segment folder included) and asking for a rebuild."""
    problems = []
    for n, rel in enumerate(_files(built)):
        d = _copy(built, tmp_path / f"{label}-{n}")
        if damage(d / rel) is False:
            continue
        try:
            load_index(d, device="cpu")
            problems.append(f"{label} {rel}: no error")
        except CorruptIndexError as exc:
            if rel not in str(exc) or "rebuil" not in str(exc):
                problems.append(f"{label} {rel}: message does not name it or ask for a rebuild: {exc}")
        except Exception as exc:  # noqa: BLE001 - the type is what is checked
            problems.append(f"{label} {rel}: {type(exc).__name__}: {exc}")
    return problems


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_every_file_of_every_segment_is_checked(built: dict[str, Path], tmp_path: Path, kind: str) -> None:
    def missing(p: Path) -> None:
        p.unlink()

    def truncated(p: Path) -> None:
        data = p.read_bytes()
        p.write_bytes(data[: max(1, len(data) - 9)])

    def fewer_rows(p: Path) -> bool:
        if p.suffix != ".npy":
            return False
        arr = np.load(p)
        np.save(p, arr[:-1])
        return True

    def wrong_dtype(p: Path) -> bool:
        if p.suffix != ".npy":
            return False
        arr = np.load(p)
        np.save(p, arr.astype(np.float64 if arr.dtype != np.float64 else np.int8))
        return True

    problems: list[str] = []
    for label, damage in (("missing", missing), ("truncated", truncated), ("fewer-rows", fewer_rows),
                          ("dtype", wrong_dtype)):
        problems += _damage_each(built[kind], tmp_path, label, damage)
    assert problems == []


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_wrong_format_version_is_corrupt(built: dict[str, Path], tmp_path: Path, kind: str) -> None:
    d = _copy(built[kind], tmp_path / "v")
    meta = json.loads((d / "metadata.json").read_text())
    meta["format_version"] = 999
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptIndexError, match=r"metadata\.json.*format_version"):
        load_index(d)


def _with_meta(folder: Path, change) -> None:  # type: ignore[no-untyped-def]
    meta = json.loads((folder / "metadata.json").read_text())
    change(meta)
    (folder / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("name", ["../../elsewhere", "seg-1", "", 7])
def test_segment_names_outside_the_layout_are_corrupt(built: dict[str, Path], tmp_path: Path, name: object) -> None:
    d = _copy(built["exact"], tmp_path / "n")
    _with_meta(d, lambda m: m["segments"][1].update(name=name))
    with pytest.raises(CorruptIndexError, match=r"metadata\.json.*segment"):
        load_index(d)


def test_inconsistent_values_are_corrupt(built: dict[str, Path], tmp_path: Path) -> None:
    seg2 = Path("segments") / "seg-000002"
    d = _copy(built["plaid"], tmp_path / "codes")
    codes = np.load(d / seg2 / "codes.npy")
    np.save(d / seg2 / "codes.npy", np.full_like(codes, 30000))
    with pytest.raises(CorruptIndexError, match=r"seg-000002/codes\.npy holds codes outside"):
        load_index(d)
    d = _copy(built["plaid"], tmp_path / "ivf")
    rows = np.load(d / seg2 / "ivf_rows.npy")
    np.save(d / seg2 / "ivf_rows.npy", rows + 30)  # the segment has 30 rows
    with pytest.raises(CorruptIndexError, match=r"seg-000002/ivf_rows\.npy points outside"):
        load_index(d)
    d = _copy(built["exact"], tmp_path / "pids")
    np.save(d / seg2 / "pids.npy", np.arange(90, 120, dtype=np.int64))  # overlaps the first segment's pids
    with pytest.raises(CorruptIndexError, match="overlap"):
        load_index(d)
    d = _copy(built["exact"], tmp_path / "tomb")
    np.save(d / "tombstones.npy", np.array([105, 110, 500], dtype=np.int64))
    with pytest.raises(CorruptIndexError, match=r"tombstones\.npy names pids that are not stored"):
        load_index(d)
    d = _copy(built["exact"], tmp_path / "tokens")
    _with_meta(d, lambda m: m["segments"][2].update(tokens=m["segments"][2]["tokens"] + 1))
    with pytest.raises(CorruptIndexError, match=r"seg-000003/doclens\.npy sums to"):
        load_index(d)
    d = _copy(built["plaid"], tmp_path / "centroids")
    _with_meta(d, lambda m: m["segments"][2].update(num_centroids=m["codec"]["num_centroids"] + 1))
    with pytest.raises(CorruptIndexError, match="seg-000003"):
        load_index(d)


@pytest.mark.parametrize("kind,name", [("plaid", "seg-000003/codes.npy"), ("exact", "seg-000002/vectors.npy"),
                                       ("plaid", "../codec/centroids.npy")])
def test_planted_pickle_is_corrupt_and_not_executed(
    built: dict[str, Path], tmp_path: Path, kind: str, name: str
) -> None:
    marker = tmp_path / "PWNED"
    d = _copy(built[kind], tmp_path / "pickle")
    target = d / "segments" / name
    target.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CorruptIndexError, match=target.name.replace(".", r"\.")):
        load_index(d)
    assert not marker.exists()


def test_loaded_arrays_are_memory_mapped(built: dict[str, Path]) -> None:
    plaid = load_index(built["plaid"], device="cpu")
    for segment in plaid.segments:
        assert isinstance(segment.codes, np.memmap) and isinstance(segment.residuals, np.memmap)
        assert isinstance(segment.ivf_rows, np.memmap)
    exact = load_index(built["exact"], device="cpu")
    assert all(isinstance(s.vectors, np.memmap) for s in exact.segments)
    meta = json.loads((built["plaid"] / "metadata.json").read_text())
    assert meta["format_version"] == 2 and meta["kind"] == "plaid"
    # paths inside an index are relative: the folder can be moved
    names = [s["name"] for s in meta["segments"]]
    assert all(not os.path.isabs(n) and "/" not in n for n in names)
