"""Errors specific to the Qdrant backend (the shared ones are in `lateragkit.exceptions`)."""
from __future__ import annotations

from ..exceptions import LateragkitError

__all__ = ["QdrantLockedError", "QdrantUnavailableError"]


class QdrantLockedError(LateragkitError, RuntimeError):
    """An embedded Qdrant folder is already open in another process (or another object of this one).

    The embedded engine locks its write-ahead log while a shard is open: one process at a time owns the
    folder, for reads as well as writes."""


class QdrantUnavailableError(LateragkitError, ConnectionError):
    """A Qdrant server could not be reached (or refused the request, e.g. a wrong API key)."""
