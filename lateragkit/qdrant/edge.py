"""`EdgeEngine`: an embedded Qdrant shard (qdrant-edge-py) in a local folder.

Folder layout::

    <folder>/shard/                    the qdrant-edge shard (edge_config.json, segments/, wal/)
    <folder>/lateragkit-qdrant.json    lateragkit's config of the index; written last, so its presence
                                       marks a completely created index

Durability: every update is appended to the shard's write-ahead log before it is applied, and a shard
reopened after a killed process replays it (tested: an upsert acknowledged just before SIGKILL is there
after reopening). Each write is also followed by ``optimize()`` (segment indexing: HNSW for the pooled
vector) and ``flush()``.

Concurrency: the engine locks its WAL while the shard is open, so a second `EdgeShard` on the same folder —
in another process or this one — is refused; that surfaces as `QdrantLockedError`. One process owns an
embedded index at a time; several processes need a Qdrant server (`remote.ClientEngine`).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..exceptions import CorruptIndexError, IndexExistsError, IndexNotFoundError
from .engine import CONFIG_KEY, MULTI, POOLED, Hit, Match, PointData, QueryData, require
from .errors import QdrantLockedError
from .options import QdrantOptions
from .records import DOCUMENT_FIELD, TERMS_FIELD

__all__ = ["EdgeEngine"]

T = TypeVar("T")
CONFIG_FILE = "lateragkit-qdrant.json"
SHARD_DIR = "shard"
SCROLL_PAGE = 1000
# Full-scan threshold of the HNSW configs, in KB of vectors: below it a (filtered) segment is scanned.
FULL_SCAN_KB = 10_000


def _engine_call(what: str, folder: Path, fn: Callable[[], T]) -> T:
    """Run an engine call that opens or creates a shard, turning its errors into typed ones."""
    try:
        return fn()
    except Exception as exc:  # the engine raises plain Exception with a message
        if "WouldBlock" in str(exc):
            raise QdrantLockedError(
                f"the embedded Qdrant index at {folder} is open in another process (or another open index "
                "object): close that one first, or use a Qdrant server (url=...) for access from several "
                "processes"
            ) from exc
        raise CorruptIndexError(f"cannot {what} the embedded Qdrant index at {folder}: {exc}") from exc


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EdgeEngine:
    name = "edge"

    def __init__(self, qe: Any, shard: Any, folder: Path, config: dict[str, Any]) -> None:
        self._qe = qe
        self._shard = shard
        self.folder = folder
        self._config = config

    # -- lifecycle ----------------------------------------------------------------------------------
    @staticmethod
    def _edge_config(qe: Any, dim: int, options: QdrantOptions) -> Any:
        memory = qe.Memory.Cold if options.on_disk else qe.Memory.Cached
        quant = None
        if options.quantization == "int8":
            quant = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)
        types = qe.VectorStorageDatatype
        datatype = types.Float16 if options.datatype == "float16" else types.Float32
        multi = qe.EdgeVectorParams(
            size=dim,
            distance=qe.Distance.Dot,
            multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
            datatype=datatype,
            hnsw_config=qe.HnswIndexConfig(
                m=0, ef_construct=options.hnsw_ef_construct, full_scan_threshold=FULL_SCAN_KB
            ),
            quantization_config=quant,
            memory=memory,
        )
        pooled = qe.EdgeVectorParams(
            size=dim,
            distance=qe.Distance.Cosine,
            datatype=datatype,
            hnsw_config=qe.HnswIndexConfig(
                m=options.hnsw_m, ef_construct=options.hnsw_ef_construct, full_scan_threshold=FULL_SCAN_KB
            ),
            quantization_config=quant,
            memory=memory,
        )
        optimizers = qe.EdgeOptimizersConfig(indexing_threshold=options.indexing_threshold_kb)
        return qe.EdgeConfig(vectors={MULTI: multi, POOLED: pooled}, optimizers=optimizers)

    @classmethod
    def create(cls, folder: Path, dim: int, options: QdrantOptions, config: dict[str, Any]) -> EdgeEngine:
        qe = require("qdrant_edge")
        folder = Path(folder)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise IndexExistsError(
                f"{folder} already exists and is not an empty folder: open it, or remove it first "
                "(QdrantIndex.drop) to create a new index there"
            )
        folder.mkdir(parents=True, exist_ok=True)
        shard = _engine_call("create", folder, lambda: qe.EdgeShard.create(str(folder / SHARD_DIR),
                                                                           cls._edge_config(qe, dim, options)))
        for field in (DOCUMENT_FIELD, TERMS_FIELD):
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        shard.flush()
        _write_json_atomic(folder / CONFIG_FILE, {CONFIG_KEY: config})
        return cls(qe, shard, folder, config)

    @classmethod
    def open(cls, folder: Path) -> EdgeEngine:
        qe = require("qdrant_edge")
        folder = Path(folder)
        config_path = folder / CONFIG_FILE
        if not config_path.is_file():
            if not (folder / SHARD_DIR).exists():
                raise IndexNotFoundError(f"no embedded Qdrant index at {folder}: create one first")
            raise CorruptIndexError(
                f"{folder} holds a Qdrant shard but not {CONFIG_FILE}: its creation did not finish; remove the "
                "folder (QdrantIndex.drop) and index again"
            )
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))[CONFIG_KEY]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptIndexError(f"{config_path} is unreadable ({exc}); the index must be rebuilt") from exc
        shard = _engine_call("open", folder, lambda: qe.EdgeShard.load(str(folder / SHARD_DIR)))
        return cls(qe, shard, folder, config)

    @staticmethod
    def drop(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        self._shard.close()

    def stored_config(self) -> dict[str, Any]:
        return self._config

    # -- requests -----------------------------------------------------------------------------------
    def _filter(self, conditions: tuple[Match, ...]) -> Any:
        qe = self._qe
        if not conditions:
            return None
        must = [
            qe.FieldCondition(
                c.key, match=qe.MatchValue(c.values[0]) if len(c.values) == 1 else qe.MatchAny(list(c.values))
            )
            for c in conditions
        ]
        return qe.Filter(must=must)

    def _live(self) -> Any:
        return self._qe.Filter(must_not=[self._qe.IsEmptyCondition(DOCUMENT_FIELD)])

    def _request(self, q: QueryData) -> Any:
        qe, plan = self._qe, q.plan
        flt = self._filter(q.conditions)
        final = qe.Query.Nearest(q.tokens, using=MULTI)
        if plan.exact:
            params = qe.SearchParams(exact=True, quantization=qe.QuantizationSearchParams(ignore=True))
            return qe.QueryRequest(limit=plan.k, query=final, filter=flt, params=params, with_payload=True)
        first = qe.Prefetch(
            limit=plan.candidates,
            query=qe.Query.Nearest(q.pooled, using=POOLED),
            filter=flt,
            params=qe.SearchParams(hnsw_ef=plan.hnsw_ef),
        )
        return qe.QueryRequest(limit=plan.k, query=final, prefetches=[first], filter=flt, with_payload=True)

    # -- Engine -------------------------------------------------------------------------------------
    def upsert(self, points: list[PointData]) -> None:
        qe = self._qe
        edge_points = [
            qe.Point(p.id, {} if p.multivector is None else {MULTI: p.multivector, POOLED: p.pooled}, p.payload)
            for p in points
        ]
        self._shard.update(qe.UpdateOperation.upsert_points(edge_points))

    def delete_ids(self, ids: list[str]) -> None:
        if ids:
            self._shard.update(self._qe.UpdateOperation.delete_points(list(ids)))

    def delete_where(self, conditions: tuple[Match, ...]) -> None:
        self._shard.update(self._qe.UpdateOperation.delete_points_by_filter(self._filter(conditions)))

    def delete_tombstones(self) -> None:
        qe = self._qe
        tombstones = qe.Filter(must=[qe.IsEmptyCondition(DOCUMENT_FIELD)])
        if self._shard.count(qe.CountRequest(exact=True, filter=tombstones)):
            self._shard.update(qe.UpdateOperation.delete_points_by_filter(tombstones))

    def ids_where(self, conditions: tuple[Match, ...]) -> list[str]:
        qe, offset = self._qe, None
        out: list[str] = []
        flt = self._filter(conditions)
        while True:
            records, offset = self._shard.scroll(
                qe.ScrollRequest(offset=offset, limit=SCROLL_PAGE, filter=flt, with_payload=False, with_vector=False)
            )
            out.extend(str(r.id) for r in records)
            if offset is None:
                return out

    def query(self, queries: list[QueryData]) -> list[list[Hit]]:
        qe = self._qe
        batch = self._shard.query_batch(qe.QueryBatchRequest([self._request(q) for q in queries]))
        return [[(str(p.id), float(p.score), p.payload or {}) for p in points] for points in batch]

    def count(self) -> int:
        return int(self._shard.count(self._qe.CountRequest(exact=True, filter=self._live())))

    def document_ids(self) -> set[str]:
        n = self.count()
        if n == 0:
            return set()
        response = self._shard.facet(self._qe.FacetRequest(DOCUMENT_FIELD, limit=n, exact=True))
        # count > 0: qdrant-edge-py 0.9's exact facet still lists values whose points were deleted, with count 0
        return {str(hit.value) for hit in response.hits if hit.count > 0}

    def maintain(self) -> None:
        self._shard.optimize()
        self._shard.flush()

    def stats(self) -> dict[str, Any]:
        info = self._shard.info()
        return {
            "engine": self.name,
            "path": str(self.folder),
            "segments": int(info.segments_count),
            "points_stored": int(info.points_count),
            "indexed_vectors": int(info.indexed_vectors_count),
        }
