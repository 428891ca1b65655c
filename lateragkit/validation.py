"""Input checks at the library's boundary: one place, used by every entry point.

Each check returns the normalised value or raises ``TypeError`` / ``ValueError`` with a message that
says what to pass instead. Nothing here imports the rest of lateragkit, so every layer may use it.
"""
from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "check_positive_int",
    "check_bsize",
    "check_k",
    "check_index_name",
    "check_unicode",
    "check_texts",
    "check_document_ids",
    "check_metadatas",
    "check_queries",
    "check_str_list",
    "check_id_list",
]

DEFAULT_BSIZE = 32


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``: ``TypeError`` for a non-int (bools included), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) and not _is_numpy_int(value):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r})")
    if int(value) < minimum:
        raise ValueError(f"{name} must be at least {minimum} (got {value})")
    return int(value)


def _is_numpy_int(value: Any) -> bool:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return False
    return isinstance(value, np.integer)


def check_k(k: Any) -> int:
    """A result count: a positive int (``k <= 0`` is a ``ValueError``)."""
    return check_positive_int(k, "k")


def check_bsize(bsize: Any) -> int:
    """A batch size: a positive int, or ``"auto"`` (32)."""
    if bsize == "auto":
        return DEFAULT_BSIZE
    if isinstance(bsize, str):
        raise ValueError(f"bsize must be a positive int or 'auto', not {bsize!r}")
    return check_positive_int(bsize, "bsize")


def check_index_name(index_name: Any) -> str:
    """A single folder name: no separators, no ``..``, not absolute, no NUL."""
    if not isinstance(index_name, str) or not index_name.strip():
        raise ValueError("index_name must be a non-empty string such as 'my_docs'")
    if (
        "/" in index_name
        or "\\" in index_name
        or "\x00" in index_name
        or index_name in {".", ".."}
        or Path(index_name).is_absolute()
    ):
        raise ValueError(
            f"index_name {index_name!r} must be a single folder name (no '/', '\\', '..' or absolute path); "
            "use index_root= to choose where indexes are stored"
        )
    return index_name


def check_unicode(value: str, what: str) -> None:
    """Lone surrogates (e.g. from a bad decode) cannot be tokenized or stored as UTF-8: say so up front."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} holds invalid Unicode ({exc.reason} at character {exc.start}); clean it first, e.g. "
            "text.encode('utf-8', 'replace').decode('utf-8')"
        ) from None


def check_texts(texts: Any, what: str) -> list[str]:
    """A non-empty list of valid-Unicode strings."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{what} must be a list of strings, not {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{what} is empty: pass at least one document")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] is a {type(text).__name__}; every document must be a str")
        check_unicode(text, f"{what}[{i}]")
    return texts


def check_str_list(texts: Any, what: str) -> list[str]:
    """A list of strings, possibly empty (no other check: tokenisers take any text)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{what} must be a list of strings (got {type(texts).__name__}); wrap one text in a list")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{what}[{bad}] is {type(texts[bad]).__name__}, expected str")
    return list(texts)


def check_id_list(ids: Any, what: str) -> list[str]:
    """Document ids to look up: a bare str is one id (never a substring match); each must be a non-empty str."""
    if isinstance(ids, str):
        ids = [ids]
    if isinstance(ids, (bytes, bytearray)) or not isinstance(ids, Iterable):
        raise TypeError(f"{what} must be a document id (str) or a list of them, not {type(ids).__name__}")
    out = list(ids)
    for doc_id in out:
        if not isinstance(doc_id, str):
            raise TypeError(f"{what}: document ids are strings, got {type(doc_id).__name__} ({doc_id!r})")
        if not doc_id:
            raise ValueError(f"{what}: document ids are non-empty strings, got ''")
    return out


def check_document_ids(ids: Any, n: int, what: str) -> list[str]:
    """One unique non-empty string per document (uuid4 strings when ``ids`` is None)."""
    if ids is None:
        return [str(uuid.uuid4()) for _ in range(n)]
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise TypeError(f"{what} must be a list of strings, one per document")
    ids = list(ids)
    if len(ids) != n:
        raise ValueError(f"{what} has {len(ids)} entries for {n} documents; give exactly one id per document")
    for i, doc_id in enumerate(ids):
        if not isinstance(doc_id, str) or not doc_id.strip():
            raise ValueError(f"{what}[{i}] = {doc_id!r}: document ids must be non-empty strings")
        check_unicode(doc_id, f"{what}[{i}]")
    if len(set(ids)) != n:
        dups = sorted(d for d, count in Counter(ids).items() if count > 1)[:5]
        raise ValueError(f"{what} contains duplicates (e.g. {dups}); document ids must be unique")
    return ids


def check_metadatas(metas: Any, n: int, what: str) -> list[dict[str, Any] | None]:
    """One JSON-storable dict (or None) per document, returned as it will come back from storage."""
    if metas is None:
        return [None] * n
    if isinstance(metas, Mapping) or not isinstance(metas, Sequence):
        raise TypeError(f"{what} must be a list of dicts, one per document")
    metas = list(metas)
    if len(metas) != n:
        raise ValueError(f"{what} has {len(metas)} entries for {n} documents; give one dict per document")
    for i, meta in enumerate(metas):
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"{what}[{i}] is a {type(meta).__name__}; metadata must be a dict or None")
        try:
            json.dumps(meta, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{what}[{i}] is not JSON-serialisable ({exc}); metadata is stored as JSON, so use "
                "str/int/float/bool/None/list/dict values"
            ) from exc
    return [None if m is None else json.loads(json.dumps(m)) for m in metas]


def check_queries(query: Any) -> tuple[list[str], bool]:
    """The queries as a list, and whether a single str was given."""
    if isinstance(query, str):
        queries, single = [query], True
    elif isinstance(query, Sequence) and not isinstance(query, (bytes, bytearray)):
        queries, single = list(query), False
        if not queries:
            raise ValueError("the list of queries is empty: pass a string or a non-empty list of strings")
    else:
        raise TypeError(f"query must be a str or a list of str, not {type(query).__name__}")
    for q in queries:
        if not isinstance(q, str):
            raise TypeError(f"every query must be a str, got {type(q).__name__}")
        if not q.strip():
            raise ValueError("a query is empty or whitespace only: there is nothing to search for")
        check_unicode(q, "a query")
    return queries, single
