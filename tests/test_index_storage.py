"""Crash-safe versioned folders, the .npy helpers and corrupt-index detection."""
from __future__ import annotations

import json
import os
import pickle
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
    root = tmp_path_factory.mktemp("corrupt")
    v, lens, _ = make_collection(120, dim=32, seed=6)
    out = {}
    for kind in ("exact", "plaid"):
        build_index(root / kind, chunked(v, lens), dim=32, index_type=kind)
        out[kind] = root / kind
    return out


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_missing_index_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError):
        load_index(tmp_path / "nothing")


PLAID_FILES = ["codes.npy", "residuals.npy", "centroids.npy", "ivf_rows.npy", "ivf_offsets.npy", "doclens.npy",
               "pids.npy", "deleted.npy", "bucket_weights.npy", "metadata.json"]


@pytest.mark.parametrize("kind,name", [("exact", n) for n in ["vectors.npy", "doclens.npy", "metadata.json"]]
                         + [("plaid", n) for n in PLAID_FILES])
def test_missing_or_truncated_file_is_corrupt_naming_it(
    built: dict[str, Path], tmp_path: Path, kind: str, name: str
) -> None:
    d = _copy(built[kind], tmp_path / "missing")
    (d / name).unlink()
    with pytest.raises(CorruptIndexError, match=name.replace(".", r"\.")) as err:
        load_index(d)
    assert "rebuilt" in str(err.value)
    d = _copy(built[kind], tmp_path / "truncated")
    data = (d / name).read_bytes()
    (d / name).write_bytes(data[: max(1, len(data) - 9)])
    with pytest.raises(CorruptIndexError, match=name.replace(".", r"\.")):
        load_index(d)


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_wrong_format_version_is_corrupt(built: dict[str, Path], tmp_path: Path, kind: str) -> None:
    d = _copy(built[kind], tmp_path / "v")
    meta = json.loads((d / "metadata.json").read_text())
    meta["format_version"] = 999
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptIndexError, match=r"metadata\.json.*format_version"):
        load_index(d)


def test_wrong_shape_or_dtype_is_corrupt(built: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(built["plaid"], tmp_path / "shape")
    codes = np.load(d / "codes.npy")
    np.save(d / "codes.npy", codes[:-1])
    with pytest.raises(CorruptIndexError, match=r"codes\.npy.*shape"):
        load_index(d)
    np.save(d / "codes.npy", codes.astype(np.float32))
    with pytest.raises(CorruptIndexError, match=r"codes\.npy.*dtype"):
        load_index(d)
    np.save(d / "codes.npy", np.full_like(codes, 30000))
    with pytest.raises(CorruptIndexError, match=r"codes\.npy"):
        load_index(d)


@pytest.mark.parametrize("kind,name", [("plaid", "codes.npy"), ("exact", "vectors.npy")])
def test_planted_pickle_is_corrupt_and_not_executed(
    built: dict[str, Path], tmp_path: Path, kind: str, name: str
) -> None:
    marker = tmp_path / "PWNED"
    d = _copy(built[kind], tmp_path / "pickle")
    (d / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CorruptIndexError, match=name.replace(".", r"\.")):
        load_index(d)
    assert not marker.exists()


def test_loaded_arrays_are_memory_mapped(built: dict[str, Path]) -> None:
    plaid = load_index(built["plaid"], device="cpu")
    assert isinstance(plaid.codes, np.memmap) and isinstance(plaid.residuals, np.memmap)
    exact = load_index(built["exact"], device="cpu")
    assert isinstance(exact.vectors, np.memmap)
    meta = json.loads((built["plaid"] / "metadata.json").read_text())
    assert meta["format_version"] == 1 and meta["kind"] == "plaid"
    # paths inside an index are relative: the folder can be moved
    assert all(not os.path.isabs(str(v)) for v in meta.values() if isinstance(v, str))
