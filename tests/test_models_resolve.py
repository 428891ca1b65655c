"""Model name resolution: local folders, the Hugging Face cache layout, missing names, default models."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lateragkit.exceptions import ModelNotFoundError
from lateragkit.models import DEFAULT_ENGLISH_MODEL, DEFAULT_MULTILINGUAL_MODEL, default_model_name, load_encoder
from lateragkit.models.resolve import resolve_model_dir

from .fixtures_models import write_stanford_bert

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_stanford_bert(tmp_path_factory.mktemp("resolve") / "ckpt")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _populate(cache, repo_id, src):
    """The huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<hash>/...}."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(src, root / "snapshots" / SNAPSHOT)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(SNAPSHOT)
    (root / "blobs").mkdir()
    return root / "snapshots" / SNAPSHOT


def test_default_model_names():
    assert default_model_name("en") == DEFAULT_ENGLISH_MODEL == "colbert-ir/colbertv2.0"
    for lang in ("de", "fr", "zh", "ar", "multilingual"):
        assert default_model_name(lang) == DEFAULT_MULTILINGUAL_MODEL == "jinaai/jina-colbert-v2"


def test_loads_from_hub_cache(hub_cache, ckpt):
    snap = _populate(hub_cache, "someorg/tiny-colbert", ckpt)
    assert resolve_model_dir("someorg/tiny-colbert") == snap
    enc = load_encoder("someorg/tiny-colbert", device="cpu")
    assert enc.name_or_path == "someorg/tiny-colbert" and enc.format == "stanford"


@pytest.mark.parametrize("name", ["./nonexistent", "../nonexistent", "~/nonexistent-lateragkit-model", "a/b/c"])
def test_local_paths_get_no_download_hint(tmp_path, monkeypatch, name):
    """A local path is never looked up on the hub: the message names the folder, not `huggingface-cli download`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as info:
        load_encoder(name)
    message = str(info.value)
    where = (Path(name).expanduser() if name.startswith("~") else tmp_path / name).absolute()
    assert message.startswith(f"No folder at {where}") and "huggingface-cli" not in message
    assert "config.json" in message and "colbert-ir/colbertv2.0" in message


def test_local_folder_is_stored_as_absolute_path(ckpt, monkeypatch):
    monkeypatch.chdir(ckpt.parent)
    enc = load_encoder(ckpt.name, device="cpu")
    assert enc.name_or_path == str(ckpt.resolve())


def test_missing_names_raise_model_not_found(hub_cache, tmp_path):
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download someorg/missing-model"):
        load_encoder("someorg/missing-model")
    with pytest.raises(FileNotFoundError):  # ModelNotFoundError is a FileNotFoundError too
        load_encoder("someorg/missing-model")
    with pytest.raises(ModelNotFoundError, match="colbert-ir/colbertv2.0"):
        load_encoder(None, language="en")
    with pytest.raises(ModelNotFoundError, match="jinaai/jina-colbert-v2"):
        load_encoder(language="de")
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(ModelNotFoundError, match=f"No folder at {missing}") as info:
        load_encoder(str(missing))
    assert f"nearest existing folder is {tmp_path}" in str(info.value) and "huggingface-cli" not in str(info.value)
    afile = tmp_path / "weights.bin"
    afile.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="not a checkpoint folder"):
        load_encoder(afile)
    with pytest.raises(ModelNotFoundError):
        load_encoder("not a valid//repo id")
