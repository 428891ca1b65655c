"""The Qdrant backend: passages as points of an embedded Qdrant shard (qdrant-edge-py, the default) or of a
collection on a Qdrant server or cluster (qdrant-client). Needs the optional extra: ``pip install
"lateragkit[qdrant]"``; importing this package does not import either Qdrant package."""
from __future__ import annotations

from .errors import QdrantLockedError, QdrantUnavailableError
from .index import QdrantIndex, SearchHits
from .location import API_KEY_ENV, QdrantLocation
from .options import SEARCH_PARAMS, QdrantOptions
from .records import PassageRecord, point_id

__all__ = [
    "QdrantIndex",
    "QdrantLocation",
    "QdrantOptions",
    "PassageRecord",
    "QdrantLockedError",
    "QdrantUnavailableError",
    "SearchHits",
    "point_id",
    "SEARCH_PARAMS",
    "API_KEY_ENV",
]
