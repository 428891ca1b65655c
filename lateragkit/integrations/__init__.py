"""Framework adapters (LangChain, LlamaIndex), each behind an optional extra.

Nothing here imports a framework at import time: ``import lateragkit`` and
``import lateragkit.integrations`` stay free of ``langchain_core`` and ``llama_index``.
The classes are resolved lazily on first attribute access, so

    from lateragkit.integrations import LateragkitRetriever

imports ``lateragkit.integrations.langchain`` (and LangChain) only then. When the
framework is missing, the import raises :class:`lateragkit.exceptions.MissingExtraError`
(an ``ImportError``) that names the extra to install.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..exceptions import MissingExtraError

# public name -> submodule that defines it
_LAZY = {
    "LateragkitRetriever": "langchain",
    "LateragkitCompressor": "langchain",
    "LateragkitTextSplitter": "langchain",
    "LateragkitLlamaRetriever": "llama_index",
    "LateragkitRerank": "llama_index",
    "LateragkitNodeParser": "llama_index",
}

# extra name -> (importable module that proves it is installed, pip spec)
EXTRAS = {
    "langchain": ("langchain_core", 'pip install "lateragkit[langchain]"'),
    "llamaindex": ("llama_index.core", 'pip install "lateragkit[llamaindex]"'),
}

__all__ = [*_LAZY, "EXTRAS", "missing_extra"]

if TYPE_CHECKING:
    from .langchain import LateragkitCompressor as LateragkitCompressor
    from .langchain import LateragkitRetriever as LateragkitRetriever
    from .langchain import LateragkitTextSplitter as LateragkitTextSplitter
    from .llama_index import LateragkitLlamaRetriever as LateragkitLlamaRetriever
    from .llama_index import LateragkitNodeParser as LateragkitNodeParser
    from .llama_index import LateragkitRerank as LateragkitRerank


def missing_extra(extra: str, error: ImportError) -> MissingExtraError:
    """Build the error raised when an adapter is used without its optional extra."""
    module, pip_spec = EXTRAS[extra]
    missing = getattr(error, "name", None) or module
    return MissingExtraError(
        f"The lateragkit {extra!r} integration needs the optional extra {extra!r} "
        f"(could not import {missing!r}). Install it with: {pip_spec}"
    )


def __getattr__(name: str) -> Any:
    submodule = _LAZY.get(name)
    if submodule is None:
        raise AttributeError(f"module 'lateragkit.integrations' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{submodule}")
    return getattr(module, name)
