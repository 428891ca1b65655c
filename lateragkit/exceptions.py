"""Typed errors shared by every layer. Each message says what the user can do about it."""
from __future__ import annotations


class LateragkitError(Exception):
    """Base class of every error lateragkit raises on purpose."""


class ModelNotFoundError(LateragkitError, FileNotFoundError):
    """A model name is neither a local folder nor in the Hugging Face cache, and cannot be downloaded."""


class CheckpointFormatError(LateragkitError, ValueError):
    """A checkpoint folder exists but its files do not form a supported ColBERT format."""


class IndexNotFoundError(LateragkitError, FileNotFoundError):
    """No index exists at the given name or path."""


class IndexExistsError(LateragkitError, FileExistsError):
    """An index already exists and the call was asked not to overwrite it."""


class CorruptIndexError(LateragkitError, ValueError):
    """An index file is missing, truncated, of the wrong shape or of another format version."""


class MissingExtraError(LateragkitError, ImportError):
    """An optional integration was used without its extra installed."""


class ModelMismatchError(LateragkitError, ValueError):
    """An index was opened with a model whose vectors do not fit it (another width)."""
