"""Index backends by kind: each backend class registers itself; callers look classes up by the kind name.

`build_index`, `load_index` and every other caller go through `backend_class`, never through a
conditional on the kind, so a new backend is one module with a ``@register``-ed `PassageIndex` subclass.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..exceptions import CorruptIndexError

if TYPE_CHECKING:
    from .base import PassageIndex

__all__ = ["register", "backend_class", "kinds"]

_BACKENDS: dict[str, type[PassageIndex]] = {}
T = TypeVar("T", bound="type[PassageIndex]")


def register(cls: T) -> T:
    """Class decorator: make ``cls`` the backend of ``cls.kind``."""
    kind = cls.kind
    if not kind or (kind in _BACKENDS and _BACKENDS[kind] is not cls):
        raise ValueError(f"backend kind {kind!r} is empty or already registered by {_BACKENDS.get(kind)}")
    _BACKENDS[kind] = cls
    return cls


def kinds() -> tuple[str, ...]:
    """Registered backend kinds, in registration order."""
    return tuple(_BACKENDS)


def backend_class(kind: str, *, source: Path | None = None) -> type[PassageIndex]:
    """The backend class of ``kind``. An unknown kind read from ``source`` (an index file) is a
    `CorruptIndexError` naming it; an unknown kind asked for by a caller is a `ValueError`."""
    try:
        return _BACKENDS[kind]
    except KeyError:
        if source is not None:
            raise CorruptIndexError(
                f"{source} names an unknown index kind {kind!r}; the index must be rebuilt"
            ) from None
        raise ValueError(f"unknown index kind {kind!r}; choose one of {list(_BACKENDS)}") from None
