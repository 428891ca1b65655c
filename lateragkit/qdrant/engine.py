"""What `QdrantIndex` needs from a Qdrant engine, in engine-neutral terms, and the import of the extras.

Two engines implement `Engine`: `edge.EdgeEngine` (qdrant-edge-py, in-process) and `remote.ClientEngine`
(qdrant-client: a server or cluster, or the client's local mode). Both store the same points (see
`options` for the two named vectors and `records` for the payload) and translate the same neutral
requests into their own API's request objects.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from ..exceptions import MissingExtraError
from .options import SearchPlan

__all__ = [
    "Engine",
    "PointData",
    "Match",
    "QueryData",
    "Hit",
    "require",
    "MULTI",
    "POOLED",
    "CONFIG_KEY",
    "FORMAT_VERSION",
    "EXTRA_HINT",
]

MULTI = "colbert"  # the token vectors (multivector, MAX_SIM, no HNSW)
POOLED = "pooled"  # the first-stage vector (mean of the tokens, HNSW)
CONFIG_KEY = "lateragkit"  # where the index's own config lives (collection metadata / JSON file)
FORMAT_VERSION = 1
EXTRA_HINT = 'pip install "lateragkit[qdrant]"'


def require(module: str) -> ModuleType:
    """Import an optional Qdrant package, or raise `MissingExtraError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"the Qdrant backend needs the package {module!r}, which is not installed: {EXTRA_HINT}"
        ) from exc


@dataclass(frozen=True)
class PointData:
    """One point to write. ``multivector is None`` writes a tombstone: no vectors and an empty payload, which
    no search can return and no count includes (used to hide stale passages in the same operation)."""

    id: str
    multivector: list[list[float]] | None = None
    pooled: list[float] | None = None
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Match:
    """The keyword payload field ``key`` holds one of ``values`` (conditions in a list must all hold)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class QueryData:
    """One query: its scored token vectors, their normalised mean, the conditions and the plan."""

    tokens: list[list[float]]
    pooled: list[float]
    conditions: tuple[Match, ...]
    plan: SearchPlan


# (point id, score, payload)
Hit = tuple[str, float, dict[str, Any]]


class Engine(Protocol):
    name: str

    def upsert(self, points: list[PointData]) -> None:
        """Write the points in one engine operation (one WAL entry: applied whole or not at all)."""

    def delete_ids(self, ids: list[str]) -> None: ...

    def delete_where(self, conditions: tuple[Match, ...]) -> None:
        """Delete every point matching all conditions, in one operation."""

    def delete_tombstones(self) -> None: ...

    def ids_where(self, conditions: tuple[Match, ...]) -> list[str]: ...

    def query(self, queries: list[QueryData]) -> list[list[Hit]]: ...

    def count(self) -> int:
        """Live passages (tombstones excluded)."""

    def document_ids(self) -> set[str]: ...

    def maintain(self) -> None:
        """After a write: let the engine build its indexes (the server does this in the background)."""

    def stats(self) -> dict[str, Any]: ...

    def stored_config(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
