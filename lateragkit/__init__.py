"""lateragkit: late-interaction (ColBERT) retrieval for RAG pipelines."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .exceptions import (
    CheckpointFormatError,
    CorruptIndexError,
    IndexExistsError,
    IndexNotFoundError,
    LateragkitError,
    MissingExtraError,
    ModelMismatchError,
    ModelNotFoundError,
)

__version__ = "0.2.0.dev0"

__all__ = [
    "RAGPretrainedModel",
    "LateragkitError",
    "ModelNotFoundError",
    "CheckpointFormatError",
    "IndexNotFoundError",
    "IndexExistsError",
    "CorruptIndexError",
    "MissingExtraError",
    "ModelMismatchError",
    "__version__",
]

if TYPE_CHECKING:
    from .pretrained import RAGPretrainedModel


def __getattr__(name: str) -> Any:
    # Lazy so that `import lateragkit` stays cheap (torch/transformers load on first use).
    if name == "RAGPretrainedModel":
        from .pretrained import RAGPretrainedModel

        return RAGPretrainedModel
    raise AttributeError(f"module 'lateragkit' has no attribute {name!r}")
