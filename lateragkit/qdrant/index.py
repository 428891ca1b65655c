"""`QdrantIndex`: passages as Qdrant points — the backend behind ``index_type="qdrant"``.

One point per passage (id: UUIDv5 of the passage id): its token vectors as a ``MAX_SIM`` multivector, their
mean as an HNSW-indexed single vector, and the passage record as payload (see `records`). A search is one
Qdrant query per query: a ``prefetch`` of ``candidates`` points by HNSW over the pooled vector, then exact
MaxSim on the multivector of those candidates, with ``doc_ids`` / ``filter`` as payload conditions on both
stages (inside the engine). ``exact=True`` skips the first stage and scores every matching point.

Scores are the raw MaxSim sums of `lateragkit.scoring.maxsim` over the masked-in query tokens (the
multivector is compared with ``Dot``, not ``Cosine``, so nothing is renormalised); with
``quantization="int8"`` Qdrant scores the candidates with its int8 copies, so scores are approximate.

Writes. ``upsert_documents`` replaces every earlier passage of each given document: for a group of whole
documents it writes, in ONE engine operation, the new points and a tombstone (a point without vectors or
payload, invisible to search and counts) over every stale point of those documents, then deletes the
tombstones. One operation is one WAL entry, applied whole or not at all after a crash, so a killed writer
leaves each document either fully old or fully new — never half-indexed, never lost. A document is never
split across operations; a group holds at most ``batch_tokens`` token vectors unless one document alone is
larger. Leftover tombstones (writer killed between the two steps) are removed by the next write.
``delete_documents`` is one delete-by-``document_id``-filter operation. Readers in the same process may see
a write's points appear one by one while it is applied (Qdrant has no multi-point isolation); a multi-shard
cluster applies an operation per shard.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..exceptions import CorruptIndexError
from ..validation import check_k, check_positive_int
from .engine import FORMAT_VERSION, Engine, Match, PointData, QueryData
from .location import QdrantLocation
from .options import QdrantOptions, SearchPlan
from .records import (
    DOCUMENT_FIELD,
    TERMS_FIELD,
    PassageRecord,
    check_record,
    filter_terms,
    passage_payload,
    point_id,
    record_from_payload,
)

__all__ = ["QdrantIndex", "SearchHits"]

logger = logging.getLogger(__name__)

SearchHits = list[list[tuple[float, PassageRecord]]]
# Token vectors per write operation: bounds the Python lists handed to the engine (and, for a server, the
# request size: JSON of 2,048 x 384 floats is ~15 MB, under Qdrant's 32 MB default limit).
BATCH_TOKENS = {"edge": 8192, "client": 2048}


def _open_engine(location: QdrantLocation) -> Engine:
    if location.is_embedded:
        from .edge import EdgeEngine

        return EdgeEngine.open(Path(str(location.path)))
    from .remote import ClientEngine

    return ClientEngine.open(location)


def _pooled(tokens: np.ndarray) -> list[float]:
    """The first-stage vector: the normalised mean of the token vectors (the first token if they cancel)."""
    mean = tokens.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm < 1e-6:
        mean, norm = tokens[0], float(np.linalg.norm(tokens[0])) or 1.0
    return (mean / norm).tolist()


def _check_vectors(vectors: Any, i: int, dim: int) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().float().numpy()
    if not isinstance(vectors, np.ndarray):
        raise TypeError(f"vectors[{i}] must be a numpy array or torch tensor [n_tokens, {dim}]")
    if vectors.ndim != 2 or vectors.shape[1] != dim or vectors.shape[0] < 1:
        raise ValueError(f"vectors[{i}] must have shape [n_tokens >= 1, {dim}], got {tuple(vectors.shape)}")
    out = np.asarray(vectors, dtype=np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"vectors[{i}] contains NaN or infinite values")
    return out


def _check_ids(document_ids: Any) -> list[str]:
    if isinstance(document_ids, str) or not isinstance(document_ids, Sequence):
        raise TypeError("document_ids must be a list of str")
    ids = list(document_ids)
    for doc_id in ids:
        if not isinstance(doc_id, str) or not doc_id:
            raise ValueError(f"document ids must be non-empty strings, got {doc_id!r}")
    if len(set(ids)) != len(ids):
        raise ValueError("document_ids contains duplicates; give each document once")
    return ids


class QdrantIndex:
    kind = "qdrant"

    def __init__(self, engine: Engine, location: QdrantLocation, dim: int, options: QdrantOptions) -> None:
        self._engine = engine
        self.location = location
        self.dim = dim
        self.options = options
        self.batch_tokens = BATCH_TOKENS.get(engine.name, 2048)
        self._write_lock = threading.Lock()
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, location: QdrantLocation, *, dim: int, options: QdrantOptions | None = None) -> QdrantIndex:
        """Create an empty index at ``location`` (`IndexExistsError` if something is there already)."""
        dim = check_positive_int(dim, "dim")
        options = QdrantOptions() if options is None else options
        if not isinstance(options, QdrantOptions):
            raise TypeError(f"options must be a QdrantOptions, not {type(options).__name__}")
        config = {
            "format_version": FORMAT_VERSION,
            "dim": dim,
            "options": options.to_dict(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        engine: Engine
        if location.is_embedded:
            from .edge import EdgeEngine

            engine = EdgeEngine.create(Path(str(location.path)), dim, options, config)
        else:
            from .remote import ClientEngine

            engine = ClientEngine.create(location, dim, options, config)
        logger.info("created Qdrant index (%s, dim %d, %s)", location.describe(), dim, options)
        return cls(engine, location, dim, options)

    @classmethod
    def open(cls, location: QdrantLocation) -> QdrantIndex:
        """Open an existing index; its dimension and options are read from what `create` stored."""
        engine = _open_engine(location)
        config = engine.stored_config()
        try:
            if config.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {config.get('format_version')!r}, expected {FORMAT_VERSION}")
            dim = int(config["dim"])
            options = QdrantOptions.from_dict(dict(config["options"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            engine.close()
            raise CorruptIndexError(
                f"the stored config of {location.describe()} is unusable ({exc}); rebuild the index"
            ) from exc
        return cls(engine, location, dim, options)

    @staticmethod
    def drop(location: QdrantLocation) -> None:
        """Remove the index at ``location`` (the embedded folder or the server collection), if any."""
        if location.is_embedded:
            from .edge import EdgeEngine

            EdgeEngine.drop(Path(str(location.path)))
        else:
            from .remote import ClientEngine

            ClientEngine.drop(location)

    def close(self) -> None:
        """Release the engine (for an embedded index: its folder lock). Idempotent."""
        if not self._closed:
            self._closed = True
            self._engine.close()

    def __enter__(self) -> QdrantIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"QdrantIndex({self.location.describe()}, dim={self.dim}, {state})"

    def _check_open(self) -> Engine:
        if self._closed:
            raise ValueError("this QdrantIndex is closed; open it again with QdrantIndex.open(location)")
        return self._engine

    # -- writes -------------------------------------------------------------------------------------
    def upsert_documents(
        self, document_ids: list[str], passages: list[PassageRecord], vectors: list[np.ndarray]
    ) -> None:
        """Make ``passages`` the complete passages of ``document_ids`` (earlier passages of those documents
        are replaced; a listed document without passages ends up with none). ``vectors[i]`` are the token
        vectors ``[n_tokens, dim]`` of ``passages[i]``."""
        engine = self._check_open()
        groups = self._group(document_ids, passages, vectors)
        with self._write_lock:
            engine.delete_tombstones()
            batch: list[str] = []
            tokens = 0
            for doc_id, items in groups.items():
                n = sum(v.shape[0] for _, v in items)
                if batch and tokens + n > self.batch_tokens:
                    self._replace(engine, batch, groups)
                    batch, tokens = [], 0
                batch.append(doc_id)
                tokens += n
            if batch:
                self._replace(engine, batch, groups)
            engine.maintain()

    def _group(
        self, document_ids: Any, passages: Any, vectors: Any
    ) -> dict[str, list[tuple[PassageRecord, np.ndarray]]]:
        ids = _check_ids(document_ids)
        if isinstance(passages, Mapping) or not isinstance(passages, Sequence):
            raise TypeError("passages must be a list of passage records (dicts)")
        if isinstance(vectors, (np.ndarray, torch.Tensor)) or not isinstance(vectors, Sequence):
            raise TypeError("vectors must be a list with one [n_tokens, dim] array per passage")
        if len(passages) != len(vectors):
            raise ValueError(f"{len(passages)} passages but {len(vectors)} vector arrays; give one per passage")
        groups: dict[str, list[tuple[PassageRecord, np.ndarray]]] = {doc_id: [] for doc_id in ids}
        seen: set[str] = set()
        for i, (raw, vecs) in enumerate(zip(passages, vectors, strict=True)):
            record = check_record(raw, i)
            if record["document_id"] not in groups:
                raise ValueError(
                    f"passages[{i}] belongs to document {record['document_id']!r}, which is not in document_ids"
                )
            if record["passage_id"] in seen:
                raise ValueError(f"passage id {record['passage_id']!r} occurs twice; passage ids must be unique")
            seen.add(record["passage_id"])
            groups[record["document_id"]].append((record, _check_vectors(vecs, i, self.dim)))
        return groups

    @staticmethod
    def _replace(engine: Engine, doc_ids: list[str], groups: dict[str, list[tuple[PassageRecord, np.ndarray]]]) -> None:
        existing = set(engine.ids_where((Match(DOCUMENT_FIELD, tuple(doc_ids)),)))
        points = [
            PointData(point_id(rec["passage_id"]), vecs.tolist(), _pooled(vecs), passage_payload(rec))
            for doc_id in doc_ids
            for rec, vecs in groups[doc_id]
        ]
        stale = sorted(existing - {p.id for p in points})
        engine.upsert(points + [PointData(pid) for pid in stale])  # one operation: new passages, stale hidden
        engine.delete_ids(stale)

    def delete_documents(self, document_ids: list[str]) -> None:
        """Delete every passage of these documents (one delete-by-filter operation; unknown ids are ignored)."""
        engine = self._check_open()
        ids = _check_ids(document_ids)
        if not ids:
            return
        with self._write_lock:
            engine.delete_where((Match(DOCUMENT_FIELD, tuple(ids)),))
            engine.maintain()

    # -- reads --------------------------------------------------------------------------------------
    def search(
        self,
        Q: torch.Tensor,
        Q_mask: torch.Tensor,
        k: int,
        *,
        doc_ids: list[str] | None = None,
        filter: dict[str, Any] | None = None,
        **params: Any,
    ) -> SearchHits:
        """One list per query of ``(score, passage record)``, best first, at most ``k`` (fewer when fewer
        passages match). ``params``: ``candidates`` (first-stage size, default ``options.candidates``),
        ``hnsw_ef`` (HNSW ef of the first stage), ``exact`` (True: score every matching passage)."""
        engine = self._check_open()
        k = check_k(k)
        plan = SearchPlan.resolve(self.options, k, params)
        queries = self._query_tokens(Q, Q_mask)
        conditions: list[Match] = []
        if doc_ids is not None:
            wanted = [doc_ids] if isinstance(doc_ids, str) else list(_check_ids(list(dict.fromkeys(doc_ids))))
            if not wanted:
                return [[] for _ in queries]
            conditions.append(Match(DOCUMENT_FIELD, tuple(wanted)))
        if filter is not None:
            conditions.extend(Match(TERMS_FIELD, (term,)) for term in filter_terms(filter))
        requests = [QueryData(t.tolist(), _pooled(t), tuple(conditions), plan) for t in queries]
        hits = engine.query(requests) if requests else []
        # a point caught mid-replacement by a concurrent write can come back without its payload: skip it
        return [
            [(score, record_from_payload(payload)) for _, score, payload in row if DOCUMENT_FIELD in payload]
            for row in hits
        ]

    def _query_tokens(self, Q: Any, Q_mask: Any) -> list[np.ndarray]:
        """The scored token vectors of each query (float32 ``[n_scored, dim]``)."""
        q = Q.detach().cpu().float().numpy() if isinstance(Q, torch.Tensor) else np.asarray(Q, dtype=np.float32)
        m = Q_mask.detach().cpu().numpy() if isinstance(Q_mask, torch.Tensor) else np.asarray(Q_mask)
        if q.ndim != 3 or q.shape[2] != self.dim:
            raise ValueError(f"Q must have shape [B, Lq, {self.dim}], got {tuple(q.shape)}")
        if m.shape != q.shape[:2]:
            raise ValueError(f"Q_mask must have shape {tuple(q.shape[:2])}, got {tuple(m.shape)}")
        m = m.astype(bool)
        out = []
        for b in range(q.shape[0]):
            tokens = q[b][m[b]]
            if tokens.shape[0] == 0:
                raise ValueError(f"query {b} has no scored token (Q_mask is all False): nothing to search with")
            if not np.isfinite(tokens).all():
                raise ValueError(f"query {b} contains NaN or infinite values")
            out.append(tokens)
        return out

    def document_ids(self) -> set[str]:
        return self._check_open().document_ids()

    def count_passages(self) -> int:
        return self._check_open().count()

    def info(self) -> dict[str, Any]:
        engine = self._check_open()
        return {
            "kind": self.kind,
            "dim": self.dim,
            "options": self.options.to_dict(),
            "location": self.location.to_dict(),
            "passages": engine.count(),
            **engine.stats(),
        }
