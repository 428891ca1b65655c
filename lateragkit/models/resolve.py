"""Turn a model name or path into a local checkpoint folder (local folder, Hugging Face cache, or download)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..exceptions import ModelNotFoundError

logger = logging.getLogger(__name__)

DEFAULT_ENGLISH_MODEL = "colbert-ir/colbertv2.0"
DEFAULT_MULTILINGUAL_MODEL = "jinaai/jina-colbert-v2"

# Files never needed to run a checkpoint with PyTorch (jina-colbert-v2 ships a multi-GB ONNX export).
_IGNORE_PATTERNS = [
    "*.onnx", "*.onnx_data", "onnx/*", "*.msgpack", "*.h5", "*.ot", "*.tflite", "openvino/*", "coreml/*",
]

_TRUE = {"1", "on", "yes", "true"}


def default_model_name(language: str = "en") -> str:
    """The default checkpoint for a language: colbertv2.0 for English, jina-colbert-v2 for any other."""
    lang = (language or "en").strip().lower()
    english = lang in {"en", "eng", "english"} or lang.startswith("en-")
    return DEFAULT_ENGLISH_MODEL if english else DEFAULT_MULTILINGUAL_MODEL


def hub_offline() -> bool:
    """True when `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) asks not to reach the hub (read at call time)."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> str | None:
    """The huggingface_hub cache folder as set in the environment now (None: the library default)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _how_to_get(name: str) -> str:
    return (
        f"Download it once with `huggingface-cli download {name}` (or `hf download {name}`) on a machine "
        f"with network access, or pass the path of a local checkpoint folder."
    )


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "~", "/", "\\"))
        or os.path.isabs(name)
        or name.count("/") > 1
        or "\\" in name
    )


def _no_folder(name: str, path: Path) -> ModelNotFoundError:
    """The error for a local path with nothing there (never a download hint: a path is not a hub repo)."""
    where = path.absolute()
    parent = next((p for p in where.parents if p.is_dir()), None)
    hint = f" (the nearest existing folder is {parent})" if parent is not None and parent != where.parent else ""
    return ModelNotFoundError(
        f"No folder at {where}{hint}: {name!r} reads as a local path, so it is not looked up on the Hugging Face "
        f"hub. Pass the folder that holds the checkpoint's config.json, or a hub repo id such as "
        f"{DEFAULT_ENGLISH_MODEL!r}."
    )


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """Local folder of a checkpoint: a local directory as is, else a hub repo from the cache or downloaded.

    Raises:
        ModelNotFoundError: not a folder, not in the cache, and not downloadable (offline or unknown name).
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ModelNotFoundError(
            f"{name!r} is a file, not a checkpoint folder: pass the folder that holds config.json."
        )
    if _looks_like_path(name):
        raise _no_folder(name, path)

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    cache_dir = hub_cache_dir()
    try:
        return Path(snapshot_download(name, cache_dir=cache_dir, local_files_only=True))
    except HFValidationError as exc:
        raise ModelNotFoundError(
            f"{name!r} is neither a local folder nor a valid Hugging Face repo id ({exc})."
        ) from exc
    except Exception as exc:  # LocalEntryNotFoundError and friends: not in the cache
        cached_error: Exception = exc
    if hub_offline():
        raise ModelNotFoundError(
            f"Model {name!r} is not in the Hugging Face cache ({cache_dir or 'default cache'}) and the hub is "
            f"offline (HF_HUB_OFFLINE is set). " + _how_to_get(name)
        ) from cached_error
    logger.info("downloading %s from the Hugging Face hub", name)
    try:
        return Path(snapshot_download(name, cache_dir=cache_dir, ignore_patterns=_IGNORE_PATTERNS))
    except Exception as exc:
        raise ModelNotFoundError(
            f"Model {name!r} is not in the Hugging Face cache and could not be downloaded ({type(exc).__name__}: "
            f"{exc}). " + _how_to_get(name)
        ) from exc
