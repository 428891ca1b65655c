"""`ClientEngine`: a collection on a Qdrant server or cluster, through qdrant-client.

Only the client's public collection/point API is used (``create_collection``, ``upsert``, ``delete``,
``query_batch_points``, ``scroll``, ``count``, ``facet``, ``get_collection``) — nothing specific to the
client's local mode, which the tests use in place of a server. The index's config is kept in the
collection's own ``metadata`` (never the API key). Writes wait for completion (``wait=True``) with
``strong`` ordering, so a write that returned is applied, and a delete and a later re-add of a document
cannot be reordered between replicas.
"""
from __future__ import annotations

import warnings
from typing import Any

from ..exceptions import CorruptIndexError, IndexExistsError, IndexNotFoundError
from .engine import CONFIG_KEY, MULTI, POOLED, Hit, Match, PointData, QueryData, require
from .errors import QdrantUnavailableError
from .location import API_KEY_ENV, QdrantLocation
from .options import QdrantOptions
from .records import DOCUMENT_FIELD, TERMS_FIELD

__all__ = ["ClientEngine"]

SCROLL_PAGE = 1000


def _connect(location: QdrantLocation) -> tuple[Any, bool]:
    """The client and whether this engine owns it (and so closes it), after one request that checks the
    server answers (``collection_exists``)."""
    if location.client is not None:
        client, owns = location.client, False
    else:
        qc = require("qdrant_client")
        client, owns = qc.QdrantClient(url=location.url, api_key=location.resolved_api_key()), True
    try:
        client.collection_exists(location.collection_name)
    except Exception as exc:  # connection refused, timeout, 401/403: the client raises several kinds
        if owns:
            client.close()
        raise QdrantUnavailableError(
            f"cannot use {location.describe()}: {type(exc).__name__}: {exc}. Check that the server is running "
            f"and reachable, and the API key (api_key= or the {API_KEY_ENV} environment variable)"
        ) from exc
    return client, owns


class ClientEngine:
    name = "client"

    def __init__(self, client: Any, owns_client: bool, location: QdrantLocation, config: dict[str, Any]) -> None:
        self._models = require("qdrant_client").models
        self._client = client
        self._owns = owns_client
        self._name = location.collection_name
        self._location = location
        self._config = config

    # -- lifecycle ----------------------------------------------------------------------------------
    @staticmethod
    def _vectors_config(models: Any, dim: int, options: QdrantOptions) -> dict[str, Any]:
        quant = None
        if options.quantization == "int8":
            quant = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
            )
        datatype = models.Datatype.FLOAT16 if options.datatype == "float16" else models.Datatype.FLOAT32
        multi = models.VectorParams(
            size=dim,
            distance=models.Distance.DOT,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            hnsw_config=models.HnswConfigDiff(m=0),
            datatype=datatype,
            quantization_config=quant,
            on_disk=options.on_disk,
        )
        pooled = models.VectorParams(
            size=dim,
            distance=models.Distance.COSINE,
            hnsw_config=models.HnswConfigDiff(m=options.hnsw_m, ef_construct=options.hnsw_ef_construct),
            datatype=datatype,
            quantization_config=quant,
            on_disk=options.on_disk,
        )
        return {MULTI: multi, POOLED: pooled}

    @classmethod
    def create(cls, location: QdrantLocation, dim: int, options: QdrantOptions, config: dict[str, Any]) -> ClientEngine:
        client, owns = _connect(location)
        models = require("qdrant_client").models
        name = location.collection_name
        if client.collection_exists(name):
            raise IndexExistsError(
                f"Qdrant collection {name!r} already exists: open it, or remove it first (QdrantIndex.drop) to "
                "create a new index there"
            )
        client.create_collection(
            name,
            vectors_config=cls._vectors_config(models, dim, options),
            shard_number=location.shard_number,
            replication_factor=location.replication_factor,
            write_consistency_factor=location.write_consistency_factor,
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=options.indexing_threshold_kb),
            metadata={CONFIG_KEY: config},
        )
        with warnings.catch_warnings():
            # qdrant-client's local mode says payload indexes have no effect there; a server uses them
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field in (DOCUMENT_FIELD, TERMS_FIELD):
                client.create_payload_index(name, field, models.PayloadSchemaType.KEYWORD, wait=True)
        return cls(client, owns, location, config)

    @classmethod
    def open(cls, location: QdrantLocation) -> ClientEngine:
        client, owns = _connect(location)
        name = location.collection_name
        if not client.collection_exists(name):
            raise IndexNotFoundError(f"no Qdrant collection {name!r} at {location.describe()}: create one first")
        metadata = client.get_collection(name).config.metadata or {}
        if CONFIG_KEY not in metadata:
            raise CorruptIndexError(
                f"Qdrant collection {name!r} was not created by lateragkit (its metadata has no {CONFIG_KEY!r} "
                "entry): use another collection_name"
            )
        return cls(client, owns, location, metadata[CONFIG_KEY])

    @staticmethod
    def drop(location: QdrantLocation) -> None:
        client, owns = _connect(location)
        try:
            if client.collection_exists(location.collection_name):
                client.delete_collection(location.collection_name)
        finally:
            if owns:
                client.close()

    def close(self) -> None:
        if self._owns:
            self._client.close()

    def stored_config(self) -> dict[str, Any]:
        return self._config

    # -- requests -----------------------------------------------------------------------------------
    def _filter(self, conditions: tuple[Match, ...]) -> Any:
        models = self._models
        if not conditions:
            return None
        must = [
            models.FieldCondition(
                key=c.key,
                match=(models.MatchValue(value=c.values[0]) if len(c.values) == 1
                       else models.MatchAny(any=list(c.values))),
            )
            for c in conditions
        ]
        return models.Filter(must=must)

    def _is_empty(self) -> Any:
        return self._models.IsEmptyCondition(is_empty=self._models.PayloadField(key=DOCUMENT_FIELD))

    def _request(self, q: QueryData) -> Any:
        models, plan = self._models, q.plan
        flt = self._filter(q.conditions)
        # search params only where they change something (the client's local mode warns about any)
        if plan.exact:
            # the multivector has no HNSW (m=0): it is always scanned; exact also bypasses int8 copies
            params = None
            if self._config.get("options", {}).get("quantization"):
                params = models.SearchParams(exact=True, quantization=models.QuantizationSearchParams(ignore=True))
            return models.QueryRequest(query=q.tokens, using=MULTI, filter=flt, limit=plan.k, params=params,
                                       with_payload=True)
        first = models.Prefetch(
            query=q.pooled, using=POOLED, filter=flt, limit=plan.candidates,
            params=None if plan.hnsw_ef is None else models.SearchParams(hnsw_ef=plan.hnsw_ef),
        )
        return models.QueryRequest(query=q.tokens, using=MULTI, prefetch=[first], filter=flt, limit=plan.k,
                                   with_payload=True)

    def _write(self, method: str, **kwargs: Any) -> None:
        getattr(self._client, method)(self._name, wait=True, ordering=self._models.WriteOrdering.STRONG, **kwargs)

    # -- Engine -------------------------------------------------------------------------------------
    def upsert(self, points: list[PointData]) -> None:
        models = self._models
        structs = [
            models.PointStruct(
                id=p.id,
                vector={} if p.multivector is None else {MULTI: p.multivector, POOLED: p.pooled},
                payload=p.payload,
            )
            for p in points
        ]
        self._write("upsert", points=structs)

    def delete_ids(self, ids: list[str]) -> None:
        if ids:
            self._write("delete", points_selector=self._models.PointIdsList(points=list(ids)))

    def delete_where(self, conditions: tuple[Match, ...]) -> None:
        self._write("delete", points_selector=self._models.FilterSelector(filter=self._filter(conditions)))

    def delete_tombstones(self) -> None:
        tombstones = self._models.Filter(must=[self._is_empty()])
        if self._client.count(self._name, count_filter=tombstones, exact=True).count:
            self._write("delete", points_selector=self._models.FilterSelector(filter=tombstones))

    def ids_where(self, conditions: tuple[Match, ...]) -> list[str]:
        out: list[str] = []
        offset = None
        flt = self._filter(conditions)
        while True:
            records, offset = self._client.scroll(
                self._name, scroll_filter=flt, limit=SCROLL_PAGE, offset=offset, with_payload=False, with_vectors=False
            )
            out.extend(str(r.id) for r in records)
            if offset is None:
                return out

    def query(self, queries: list[QueryData]) -> list[list[Hit]]:
        responses = self._client.query_batch_points(self._name, requests=[self._request(q) for q in queries])
        return [[(str(p.id), float(p.score), p.payload or {}) for p in r.points] for r in responses]

    def count(self) -> int:
        live = self._models.Filter(must_not=[self._is_empty()])
        return int(self._client.count(self._name, count_filter=live, exact=True).count)

    def document_ids(self) -> set[str]:
        n = self.count()
        if n == 0:
            return set()
        response = self._client.facet(self._name, DOCUMENT_FIELD, limit=n, exact=True)
        # count > 0: qdrant-edge-py 0.9's exact facet still lists values whose points were deleted, with count 0
        return {str(hit.value) for hit in response.hits if hit.count > 0}

    def maintain(self) -> None:
        return None  # a server builds its indexes in the background

    def stats(self) -> dict[str, Any]:
        info = self._client.get_collection(self._name)
        return {
            "engine": self.name,
            "location": self._location.to_dict(),
            "segments": int(info.segments_count or 0),
            "points_stored": int(info.points_count or 0),
            "indexed_vectors": int(info.indexed_vectors_count or 0),
            "status": str(info.status),
        }
