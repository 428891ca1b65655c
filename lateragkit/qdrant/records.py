"""Passage records as Qdrant points: stable point ids, the payload layout and metadata filter terms.

Payload of a passage point::

    passage_id, document_id, content, start_char, end_char, document_metadata   (what search returns)
    metadata_terms                                                               (what filters match)

``metadata_terms`` holds one keyword per top-level metadata key, ``["key", value]`` as canonical JSON, so
that ``filter={"lang": "en", "year": 2024}`` becomes one indexed keyword condition per key (all must
match) inside the engine — for any JSON value, lists and dicts included, with no per-key index to create.
Equality is JSON equality with integral floats folded into ints (``2024 == 2024.0``); ``True`` does not
equal ``1`` (Python's ``==`` would say it does).
"""
from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any, TypedDict

__all__ = [
    "PassageRecord",
    "point_id",
    "metadata_terms",
    "filter_terms",
    "passage_payload",
    "record_from_payload",
    "check_record",
    "POINT_NAMESPACE",
    "DOCUMENT_FIELD",
    "TERMS_FIELD",
]

# Namespace of the UUIDv5 point ids (a fixed, arbitrary UUID: changing it would change every point id).
POINT_NAMESPACE = uuid.UUID("6f1c3e4a-2b7d-5c1e-9a40-3d2f8b6e0c11")
DOCUMENT_FIELD = "document_id"
TERMS_FIELD = "metadata_terms"


class PassageRecord(TypedDict):
    passage_id: str
    document_id: str
    content: str
    start_char: int | None
    end_char: int | None
    document_metadata: dict[str, Any] | None


def point_id(passage_id: str) -> str:
    """The Qdrant point id of a passage: UUIDv5 of its passage id (stable across processes and runs)."""
    return str(uuid.uuid5(POINT_NAMESPACE, passage_id))


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _term(key: str, value: Any) -> str:
    try:
        return json.dumps([key, _canonical(value)], sort_keys=True, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"metadata value of {key!r} is not JSON-serialisable ({exc}); use str/int/float/bool/None/list/dict"
        ) from None


def metadata_terms(metadata: Mapping[str, Any] | None) -> list[str]:
    """The filter keywords stored with every passage of a document with this metadata."""
    if not metadata:
        return []
    return [_term(str(key), value) for key, value in metadata.items()]


def filter_terms(metadata_filter: Any) -> list[str]:
    """Keywords that a passage must all carry to match a dict filter (equality on every key)."""
    if callable(metadata_filter):
        raise TypeError(
            "a callable filter cannot run inside Qdrant: with the Qdrant backend pass a dict of metadata "
            "values, e.g. filter={'lang': 'en'} (every key must equal its value)"
        )
    if not isinstance(metadata_filter, Mapping):
        raise TypeError(
            f"filter must be a dict of metadata values (e.g. {{'lang': 'en'}}), not {type(metadata_filter).__name__}"
        )
    for key in metadata_filter:
        if not isinstance(key, str):
            raise TypeError(f"filter keys must be metadata key strings, got {key!r}")
    return metadata_terms(metadata_filter)


def check_record(record: Any, i: int) -> PassageRecord:
    """Validate one passage record (a mapping with the `PassageRecord` keys) and return it as a dict."""
    if not isinstance(record, Mapping):
        raise TypeError(f"passages[{i}] must be a dict with passage_id, document_id and content")
    for key in ("passage_id", "document_id", "content"):
        if not isinstance(record.get(key), str):
            raise TypeError(f"passages[{i}][{key!r}] must be a str, got {record.get(key)!r}")
    if not record["passage_id"] or not record["document_id"]:
        raise ValueError(f"passages[{i}]: passage_id and document_id must be non-empty")
    for key in ("start_char", "end_char"):
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"passages[{i}][{key!r}] must be an int or None, got {value!r}")
    meta = record.get("document_metadata")
    if meta is not None and not isinstance(meta, Mapping):
        raise TypeError(f"passages[{i}]['document_metadata'] must be a dict or None, got {type(meta).__name__}")
    return PassageRecord(
        passage_id=record["passage_id"],
        document_id=record["document_id"],
        content=record["content"],
        start_char=record.get("start_char"),
        end_char=record.get("end_char"),
        document_metadata=None if meta is None else dict(meta),
    )


def passage_payload(record: PassageRecord) -> dict[str, Any]:
    payload: dict[str, Any] = dict(record)
    payload[TERMS_FIELD] = metadata_terms(record["document_metadata"])
    return payload


def record_from_payload(payload: Mapping[str, Any]) -> PassageRecord:
    return PassageRecord(
        passage_id=payload["passage_id"],
        document_id=payload[DOCUMENT_FIELD],
        content=payload["content"],
        start_char=payload.get("start_char"),
        end_char=payload.get("end_char"),
        document_metadata=payload.get("document_metadata"),
    )
