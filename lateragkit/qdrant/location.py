"""`QdrantLocation`: where a Qdrant-backed index lives — an embedded folder or a collection on a server.

Embedded (the default): a folder on this machine, opened in-process by qdrant-edge-py (Qdrant's own
storage engine: segments, WAL, HNSW, quantization, payload indexes). Remote: a collection on a Qdrant server
or cluster reached through qdrant-client, given by ``url=`` (+ ``api_key=``) or by a ready
``qdrant_client.QdrantClient``. ``shard_number``, ``replication_factor`` and ``write_consistency_factor``
are passed to ``create_collection`` unchanged.

`to_dict()` is what may be written to disk beside an index: it never contains the API key (nor the client
object). `from_dict()` rebuilds the location, taking the key from its argument or ``QDRANT_API_KEY``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..validation import check_positive_int

__all__ = ["QdrantLocation", "API_KEY_ENV"]

API_KEY_ENV = "QDRANT_API_KEY"
DEFAULT_COLLECTION = "lateragkit"


def _positive_or_none(value: Any, name: str) -> int | None:
    return None if value is None else check_positive_int(value, name)


@dataclass(frozen=True)
class QdrantLocation:
    """Exactly one of ``path`` (embedded), ``url`` or ``client`` (remote)."""

    path: str | Path | None = None
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    client: Any = field(default=None, repr=False)
    collection_name: str = DEFAULT_COLLECTION
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("path", "url", "client") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "a QdrantLocation needs exactly one of path= (embedded folder), url= (Qdrant server) or "
                f"client= (a qdrant_client.QdrantClient); got {given or 'none'}"
            )
        if self.path is not None:
            if not isinstance(self.path, (str, Path)) or not str(self.path).strip():
                raise TypeError(f"path must be a folder path (str or Path), not {self.path!r}")
            if self.api_key is not None:
                raise ValueError("api_key= applies to a Qdrant server (url=); an embedded folder has no key")
        if self.url is not None and (not isinstance(self.url, str) or "://" not in self.url):
            raise ValueError(f"url must look like 'http://localhost:6333', got {self.url!r}")
        name = self.collection_name
        if not isinstance(name, str) or not name.strip() or "/" in name or len(name) > 255:
            raise ValueError(
                f"collection_name must be a non-empty string without '/' (at most 255 characters), got {name!r}"
            )
        for key in ("shard_number", "replication_factor", "write_consistency_factor"):
            _positive_or_none(getattr(self, key), key)

    # -- kinds ----------------------------------------------------------------------------------------
    @classmethod
    def embedded(cls, path: str | Path) -> QdrantLocation:
        return cls(path=path)

    @classmethod
    def remote(
        cls,
        url: str | None = None,
        *,
        api_key: str | None = None,
        client: Any = None,
        collection_name: str = DEFAULT_COLLECTION,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
    ) -> QdrantLocation:
        return cls(
            url=url,
            api_key=api_key,
            client=client,
            collection_name=collection_name,
            shard_number=shard_number,
            replication_factor=replication_factor,
            write_consistency_factor=write_consistency_factor,
        )

    @property
    def is_embedded(self) -> bool:
        return self.path is not None

    def resolved_api_key(self) -> str | None:
        """The key given, else ``QDRANT_API_KEY`` from the environment (remote URLs only)."""
        if self.url is None:
            return None
        return self.api_key if self.api_key is not None else os.environ.get(API_KEY_ENV)

    def describe(self) -> str:
        if self.path is not None:
            return f"embedded Qdrant folder {self.path}"
        where = self.url if self.url is not None else "the given QdrantClient"
        return f"Qdrant collection {self.collection_name!r} on {where}"

    # -- what may be stored on disk -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description without secrets: never the API key, never the client object."""
        if self.path is not None:
            return {"kind": "embedded", "path": str(self.path)}
        out: dict[str, Any] = {"kind": "remote", "collection_name": self.collection_name}
        if self.url is not None:
            out["url"] = self.url
        for key in ("shard_number", "replication_factor", "write_consistency_factor"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        *,
        api_key: str | None = None,
        client: Any = None,
        base: str | Path | None = None,
    ) -> QdrantLocation:
        """Inverse of `to_dict`. ``base`` resolves a relative embedded path; ``client`` replaces a stored
        URL (or is required when the index was created from a client object)."""
        if not isinstance(data, dict) or data.get("kind") not in {"embedded", "remote"}:
            raise ValueError(f"not a stored QdrantLocation: {data!r}")
        if data["kind"] == "embedded":
            path = Path(data["path"])
            if base is not None and not path.is_absolute():
                path = Path(base) / path
            return cls(path=path)
        if client is None and "url" not in data:
            raise ValueError(
                f"this index lives in Qdrant collection {data.get('collection_name')!r} reached through a "
                "QdrantClient object, which is not stored on disk: pass qdrant_client=<your QdrantClient>"
            )
        return cls(
            url=None if client is not None else data["url"],
            api_key=None if client is not None else api_key,
            client=client,
            collection_name=data.get("collection_name", DEFAULT_COLLECTION),
            shard_number=data.get("shard_number"),
            replication_factor=data.get("replication_factor"),
            write_consistency_factor=data.get("write_consistency_factor"),
        )
