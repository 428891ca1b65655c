"""The result shapes every search path returns (one shape everywhere; see DESIGN.md's result contract)."""
from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["SearchResult", "RerankResult"]


class _SearchResultFields(TypedDict):
    content: str
    score: float
    rank: int
    document_id: str
    passage_id: str


class SearchResult(_SearchResultFields, total=False):
    """A `search()` hit. ``document_metadata`` is present when the document has metadata;
    ``start_char``/``end_char`` (the passage's offsets in its document) when splitting found them."""

    document_metadata: dict[str, Any]
    start_char: int
    end_char: int


class _RerankResultFields(TypedDict):
    content: str
    score: float
    rank: int
    result_index: int


class RerankResult(_RerankResultFields, total=False):
    """A `rerank()` / `search_encoded_docs()` hit; ``document_metadata`` when metadata were given."""

    document_metadata: dict[str, Any]
