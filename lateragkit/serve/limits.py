"""Request limits of the HTTP service: how much one request may ask for."""
from __future__ import annotations

from dataclasses import dataclass, fields

from ..validation import check_positive_int


@dataclass(frozen=True)
class Limits:
    """Upper bounds checked on every request before any work is done (4xx with a message otherwise).

    ``max_body_bytes`` is enforced on the raw body (413); the others by the request models (422).
    """

    max_body_bytes: int = 8 * 1024 * 1024
    max_query_chars: int = 4096
    max_queries: int = 64
    max_k: int = 1000
    max_documents: int = 512
    max_document_chars: int = 200_000
    max_rerank_documents: int = 1000
    max_ids: int = 10_000
    max_id_chars: int = 512

    def __post_init__(self) -> None:
        for f in fields(self):
            check_positive_int(getattr(self, f.name), f"Limits.{f.name}")
