"""Corrupt and foreign files, at the facade level.

Every file of a committed index version is damaged in turn (missing, truncated, garbage, wrong shape,
wrong format version, a pickle payload where a .npy is expected). Opening the index — through
``RAGPretrainedModel.from_index`` and through ``search(index_name=...)`` on a fresh instance — must raise
``CorruptIndexError`` naming the damaged file and saying the index must be rebuilt, never another
exception, never results computed from damaged data, and never run pickled code. Checkpoints load through
safetensors or ``torch.load(weights_only=True)`` only: a malicious ``pytorch_model.bin`` is refused without
running its payload, and code shipped in a checkpoint folder (``auto_map``) is never imported.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import lateragkit.pretrained as pretrained
from lateragkit import RAGPretrainedModel
from lateragkit.exceptions import CheckpointFormatError, CorruptIndexError, LateragkitError

from .conftest import data_dir, minilm_path

QUERY = "computer systems for information retrieval"


class _Payload:
    """Unpickling this object creates ``marker``: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> RAGPretrainedModel:
    return RAGPretrainedModel.from_pretrained(
        minilm_path(), index_root=tmp_path_factory.mktemp("corrupt-base"), verbose=0, device="cpu"
    )


@pytest.fixture(scope="module", params=["exact", "plaid"])
def base(request, rag: RAGPretrainedModel) -> tuple[Path, list[dict]]:
    folder = data_dir("adi")
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines()][:30]
    path = Path(rag.index([d["title"] + ". " + d["text"] for d in docs], document_ids=[d["_id"] for d in docs],
                          document_metadatas=[{"n": i} for i in range(len(docs))],
                          index_name=f"base-{request.param}", index_type=request.param))
    return path, rag.search(QUERY, index_name=path.name, k=5)


@pytest.fixture
def reuse_encoder(rag: RAGPretrainedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    # from_index would load MiniLM again for every damaged copy; the encoder is not what is tested here.
    monkeypatch.setattr(pretrained, "load_encoder", lambda *a, **kw: rag.encoder)


def _version_files(index_path: Path) -> list[Path]:
    from lateragkit.index.storage import VersionedDir

    live = VersionedDir(index_path).current()
    return sorted(p for p in live.rglob("*") if p.is_file())


def _open_both_ways(rag: RAGPretrainedModel, path: Path) -> list[BaseException | None]:
    """Open ``path`` via from_index and via search(index_name=...) on a fresh instance; return the errors."""
    errors: list[BaseException | None] = []
    for opener in ("from_index", "search"):
        try:
            if opener == "from_index":
                RAGPretrainedModel.from_index(path, verbose=0).search(QUERY, k=5)
            else:
                RAGPretrainedModel(rag.encoder, index_root=path.parent, verbose=0).search(
                    QUERY, index_name=path.name, k=5
                )
            errors.append(None)
        except Exception as exc:  # noqa: BLE001 - the type is what is checked
            errors.append(exc)
    return errors


def _check_damage(
    rag: RAGPretrainedModel, base_path: Path, tmp: Path, label: str,
    damage: Callable[[Path], str | None], files: list[Path] | None = None,
) -> list[str]:
    """Apply ``damage`` to each file of a fresh copy; returns a description of every case that misbehaved.
    ``damage`` returns the file name the error must mention (or None to skip the file)."""
    problems = []
    for n, original in enumerate(files if files is not None else _version_files(base_path)):
        rel = original.relative_to(base_path)
        copy_root = tmp / f"{label}-{n}-{original.name}"  # several segments hold files of the same name
        shutil.copytree(base_path, copy_root / base_path.name)
        target = copy_root / base_path.name / rel
        must_name = damage(target)
        if must_name is None:
            continue
        errors = _open_both_ways(rag, copy_root / base_path.name)
        for how, err in zip(("from_index", "search(index_name=)"), errors, strict=True):
            case = f"{label} {rel} via {how}"
            if err is None:
                problems.append(f"{case}: no error, the damaged index was used")
            elif not isinstance(err, CorruptIndexError):
                problems.append(f"{case}: {type(err).__name__}: {err}")
            elif must_name not in str(err) or "rebuil" not in str(err).lower():
                problems.append(f"{case}: message does not name {must_name!r} or ask for a rebuild: {err}")
    return problems


# --------------------------------------------------------------------------------------------------
def test_intact_copy_opens_with_identical_results(rag, base, tmp_path, reuse_encoder):
    path, want = base
    shutil.copytree(path, tmp_path / "copy")
    got = RAGPretrainedModel.from_index(tmp_path / "copy", verbose=0).search(QUERY, k=5)
    assert got == want
    # every file kind of the layout is covered by the damage tests below
    suffixes = {p.suffix for p in _version_files(path)}
    assert {".npy", ".json", ".sqlite"} <= suffixes


def test_missing_files(rag, base, tmp_path, reuse_encoder):
    def damage(p: Path) -> str:
        p.unlink()
        return p.name

    assert _check_damage(rag, base[0], tmp_path, "missing", damage) == []


def test_truncated_files(rag, base, tmp_path, reuse_encoder):
    def damage(p: Path) -> str | None:
        data = p.read_bytes()
        if not data:
            return None
        p.write_bytes(data[: len(data) // 2])
        return p.name

    assert _check_damage(rag, base[0], tmp_path, "truncated", damage) == []


def test_garbage_files(rag, base, tmp_path, reuse_encoder):
    def damage(p: Path) -> str:
        size = max(p.stat().st_size, 64)
        p.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
        return p.name

    assert _check_damage(rag, base[0], tmp_path, "garbage", damage) == []


def test_npy_of_the_wrong_shape(rag, base, tmp_path, reuse_encoder):
    npys = [p for p in _version_files(base[0]) if p.suffix == ".npy"]
    assert npys

    def fewer_rows(p: Path) -> str | None:
        arr = np.load(p, allow_pickle=False)
        if arr.ndim == 0 or arr.shape[0] < 2:
            return None
        np.save(p, np.ascontiguousarray(arr[:-1]), allow_pickle=False)
        return p.name

    def extra_axis(p: Path) -> str:
        arr = np.load(p, allow_pickle=False)
        np.save(p, arr.reshape((1, *arr.shape)), allow_pickle=False)
        return p.name

    def wrong_dtype(p: Path) -> str:
        arr = np.load(p, allow_pickle=False)
        np.save(p, arr.astype(np.float64 if arr.dtype != np.float64 else np.int8), allow_pickle=False)
        return p.name

    problems = []
    for label, damage in (("fewer-rows", fewer_rows), ("extra-axis", extra_axis), ("dtype", wrong_dtype)):
        problems += _check_damage(rag, base[0], tmp_path, label, damage, npys)
    assert problems == []


def test_wrong_format_versions(rag, base, tmp_path, reuse_encoder):
    def damage(p: Path) -> str | None:
        if p.suffix != ".json":
            return None
        meta = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or "format_version" not in meta:
            return None
        meta["format_version"] = 999
        p.write_text(json.dumps(meta), encoding="utf-8")
        return p.name

    versioned = [p for p in _version_files(base[0]) if p.suffix == ".json"
                 and "format_version" in json.loads(p.read_text(encoding="utf-8"))]
    assert any(p.name == "lateragkit.json" for p in versioned)
    assert _check_damage(rag, base[0], tmp_path, "version", damage) == []


def test_json_of_the_wrong_type(rag, base, tmp_path, reuse_encoder):
    def damage(p: Path) -> str | None:
        if p.suffix != ".json":
            return None
        p.write_text("[1, 2, 3]", encoding="utf-8")
        return p.name

    assert _check_damage(rag, base[0], tmp_path, "json-type", damage) == []


def test_sqlite_with_a_foreign_schema(rag, base, tmp_path, reuse_encoder):
    import sqlite3

    def damage(p: Path) -> str | None:
        if p.suffix != ".sqlite":
            return None
        p.unlink()
        con = sqlite3.connect(p)
        con.execute("CREATE TABLE something_else (x INTEGER)")
        con.commit()
        con.close()
        return p.name

    assert _check_damage(rag, base[0], tmp_path, "schema", damage) == []


@pytest.mark.parametrize("current", ["garbage\x00", '{"version": "v99999999"}', ""])
def test_damaged_current_pointer(rag, base, tmp_path, reuse_encoder, current):
    copy = tmp_path / "idx"
    shutil.copytree(base[0], copy)
    (copy / "CURRENT").write_text(current, encoding="utf-8")
    for err in _open_both_ways(rag, copy):
        assert isinstance(err, CorruptIndexError), repr(err)
        assert "CURRENT" in str(err) or "v99999999" in str(err), str(err)


def test_pickle_payload_where_npy_is_expected_never_runs(rag, base, tmp_path, reuse_encoder):
    marker = tmp_path / "PWNED"
    # positive control: the payload is live, unpickling it really creates the marker
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()

    def raw_pickle(p: Path) -> str:
        p.write_bytes(pickle.dumps(_Payload(marker)))
        return p.name

    def object_npy(p: Path) -> str:
        arr = np.empty(1, dtype=object)
        arr[0] = _Payload(marker)
        with open(p, "wb") as fh:
            np.save(fh, arr, allow_pickle=True)
        return p.name

    npys = [p for p in _version_files(base[0]) if p.suffix == ".npy"]
    problems = _check_damage(rag, base[0], tmp_path, "pickle", raw_pickle, npys)
    problems += _check_damage(rag, base[0], tmp_path, "object-npy", object_npy, npys)
    assert not marker.exists(), "a pickle payload planted in an index file was executed"
    assert problems == []


def test_loading_an_index_uses_no_pickle(rag, base, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used while loading an index")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    shutil.copytree(base[0], tmp_path / "idx")
    got = RAGPretrainedModel.from_index(tmp_path / "idx", verbose=0).search(QUERY, k=5)
    assert got == base[1]


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
def _checkpoint_without_weights(dest: Path) -> Path:
    """The real MiniLM folder minus its weights (config, tokenizer, sentence-transformers files)."""
    src = Path(minilm_path())
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt", "*.onnx"))
    return dest


def test_malicious_pytorch_model_bin_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    folder = _checkpoint_without_weights(tmp_path / "evil-ckpt")
    torch.save({"embeddings.word_embeddings.weight": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointFormatError) as info:
        RAGPretrainedModel.from_pretrained(folder, verbose=0, device="cpu")
    assert "pytorch_model.bin" in str(info.value)
    assert not marker.exists(), "loading a checkpoint ran a pickled payload"
    # positive control: a plain (unsafe) torch.load of the same file would have run it
    control = tmp_path / "control"
    torch.save({"w": _Payload(control)}, tmp_path / "control.bin")
    torch.load(tmp_path / "control.bin", weights_only=False)
    assert control.exists()


def test_malicious_bin_beside_safetensors_is_never_read(tmp_path):
    # safetensors is preferred: a pickle file lying beside it is not even opened.
    marker = tmp_path / "PWNED"
    folder = _checkpoint_without_weights(tmp_path / "ckpt")
    os.symlink(Path(minilm_path()) / "model.safetensors", folder / "model.safetensors")
    torch.save({"embeddings.word_embeddings.weight": _Payload(marker)}, folder / "pytorch_model.bin")
    rag = RAGPretrainedModel.from_pretrained(folder, verbose=0, device="cpu")
    assert rag.rerank("tape", ["magnetic tape storage", "a recipe for soup"], k=1)[0]["content"].startswith("magnetic")
    assert not marker.exists()


def test_remote_code_in_a_checkpoint_is_never_imported(tmp_path):
    marker = tmp_path / "PWNED"
    folder = _checkpoint_without_weights(tmp_path / "remote-code")
    os.symlink(Path(minilm_path()) / "model.safetensors", folder / "model.safetensors")
    code = f"open({str(marker)!r}, 'w').close()\n"
    for module in ("configuration_evil", "modeling_evil", "tokenization_evil"):
        (folder / f"{module}.py").write_text(code, encoding="utf-8")
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg), encoding="utf-8")
    try:
        RAGPretrainedModel.from_pretrained(folder, verbose=0, device="cpu")
    except LateragkitError:
        pass  # refusing the folder is fine; running its code is not
    assert not marker.exists(), "code shipped inside a checkpoint folder was imported"


@pytest.mark.parametrize("fmt", ["stanford", "pylate-dense"])
def test_malicious_bin_in_tiny_checkpoints_is_refused(tmp_path, fmt):
    from .fixtures_models import write_pylate_bert, write_stanford_bert

    # control: a plain pickled state dict of tensors is a supported weights file
    sane = write_stanford_bert(tmp_path / "sane", how="bin")
    assert (sane / "pytorch_model.bin").exists()
    RAGPretrainedModel.from_pretrained(sane, verbose=0, device="cpu")

    marker = tmp_path / "PWNED"
    if fmt == "stanford":
        folder = write_stanford_bert(tmp_path / "ckpt")
        weights_dir, key = folder, "linear.weight"
    else:  # the payload hides in the projection module, not in the backbone
        folder = write_pylate_bert(tmp_path / "ckpt")
        weights_dir, key = folder / "1_Dense", "linear.weight"
    (weights_dir / "model.safetensors").unlink()
    torch.save({key: _Payload(marker)}, weights_dir / "pytorch_model.bin")
    with pytest.raises(CheckpointFormatError):
        RAGPretrainedModel.from_pretrained(folder, verbose=0, device="cpu")
    assert not marker.exists(), "loading a checkpoint ran a pickled payload"
