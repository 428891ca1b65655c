"""`RAGPretrainedModel`: the facade. It wires encoder, splitter, index folders and results together and
owns no algorithm and no file name of its own (index folders are :mod:`lateragkit.collection`'s).

Concurrency model: a committed index version is immutable. A search takes the snapshot of the live
version (checking ``CURRENT`` first, so a version committed by another instance or process is picked up)
and reads only from it. A write runs inside :meth:`Collection.write`: it holds the index's writer lock
(across threads and processes), starts from the newest committed version (a stale instance reloads
first), stages the next version and commits it atomically. No write is lost, and a search always sees
one complete version.

A Qdrant-backed index (``index_type="qdrant"``) keeps its passages in a live Qdrant engine instead: its
writes hold the same writer lock and change the engine in place, each document in one engine operation, and
searches see them at once (see :mod:`lateragkit.qdrant_collection`).
"""
from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, overload

import numpy as np
import torch
from tqdm.auto import tqdm

from . import qdrant_collection, scoring
from .bm25 import Bm25Config
from .collection import Collection, IndexMeta, ModelRecord, Snapshot, Transaction, check_model_matches
from .exceptions import IndexExistsError, IndexNotFoundError, LateragkitError, ModelMismatchError
from .index import PassageIndex
from .models import ColBERTEncoder, load_encoder
from .qdrant import QdrantOptions
from .qdrant_collection import QdrantSnapshot
from .results import RerankResult, SearchResult
from .search_modes import SearchMode, fuse_hits, hybrid_depth
from .splitting import Passage, TokenSplitter, split_documents
from .store import MetadataFilter
from .validation import (
    check_bsize,
    check_document_ids,
    check_id_list,
    check_index_name,
    check_k,
    check_metadatas,
    check_positive_int,
    check_queries,
    check_texts,
)

logger = logging.getLogger(__name__)

DEFAULT_INDEX_ROOT = Path(".lateragkit") / "indexes"
# Passages encoded per streamed chunk handed to the index builder: bounds the vectors held in memory.
ENCODE_CHUNK_PASSAGES = 1024
INDEX_TYPES = ("auto", "plaid", "exact", "qdrant")
# RAGatouille's force_fast=True: its fastest PLAID parameters.
FORCE_FAST_PARAMS = {"ncells": 1, "centroid_score_threshold": 0.5, "ndocs": 256}
# The query from_index searches once (results unused) so that the first real search does no one-time work.
WARM_UP_QUERY = "warm up the search path"

Query = str | Sequence[str]
Hits = list[tuple[np.ndarray, np.ndarray]]
State = Snapshot | QdrantSnapshot


class _Passage(Protocol):
    """What a result row is made of (a stored passage of either backend)."""

    @property
    def passage_id(self) -> str: ...
    @property
    def document_id(self) -> str: ...
    @property
    def content(self) -> str: ...
    @property
    def start_char(self) -> int | None: ...
    @property
    def end_char(self) -> int | None: ...
    @property
    def document_metadata(self) -> dict[str, Any] | None: ...


Scored = Sequence[Sequence[tuple[float, _Passage]]]


def _default_index_name(model_name: str) -> str:
    base = Path(str(model_name).rstrip("/\\")).name or "lateragkit"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") + "_index"


def _ignored(method: str, **kwargs: Any) -> None:
    """RAGatouille keywords that mean nothing here: accepted, and said so once in the log."""
    for key, value in kwargs.items():
        if value not in (None, False):
            logger.info("%s(%s=%r) is accepted for RAGatouille compatibility and has no effect", method, key, value)


# --------------------------------------------------------------------------------------------------
class RAGPretrainedModel:
    """Late-interaction retrieval in three lines: ``from_pretrained`` → ``index`` → ``search``.

    Scores are raw MaxSim sums (Σ over query tokens of the best cosine over the passage's tokens):
    comparable within one query and model, not calibrated, never thresholded by default.
    """

    def __init__(self, encoder: ColBERTEncoder, *, index_root: str | Path | None = None, verbose: int = 1) -> None:
        self.encoder = encoder
        self.model = encoder  # RAGatouille users reach for RAG.model
        self.model_name = encoder.name_or_path
        self.index_root = Path(index_root) if index_root is not None else DEFAULT_INDEX_ROOT
        self.verbose = verbose
        self._states: dict[str, State] = {}
        self._collections: dict[str, Collection] = {}
        self._qdrant: dict[str, Any] = {}  # index name -> how to reach its Qdrant server (qdrant= of index/from_index)
        self._current: str | None = None
        self._write_lock = threading.RLock()
        self._load_lock = threading.Lock()
        # in-memory collection for encode() / search_encoded_docs()
        self._mem_lock = threading.Lock()
        self._mem_vectors: list[torch.Tensor] = []
        self._mem_doclens: list[torch.Tensor] = []
        self._mem_texts: list[str] = []
        self._mem_metadata: list[dict[str, Any] | None] = []

    # ---------------------------------------------------------------------------------------------
    # construction
    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path | None = None,
        *,
        language: str = "en",
        dim: int | None = None,
        device: str | torch.device | None = None,
        index_root: str | Path | None = None,
        verbose: int = 1,
        n_gpu: int | None = None,
    ) -> RAGPretrainedModel:
        """Load a ColBERT checkpoint (Stanford, JinaBERT, jina-colbert-v2, PyLate) or a bare encoder.

        With no name, ``language="en"`` picks colbert-ir/colbertv2.0 and any other language
        jinaai/jina-colbert-v2. ``n_gpu`` is accepted for RAGatouille compatibility; use ``device``.
        """
        if n_gpu is not None and device is None and n_gpu == 0:
            device = "cpu"
        name = None if pretrained_model_name_or_path is None else str(pretrained_model_name_or_path)
        encoder = load_encoder(name, language=language, dim=dim, device=device)
        return cls(encoder, index_root=index_root, verbose=verbose)

    @classmethod
    def from_index(
        cls,
        index_path: str | Path,
        *,
        model: str | Path | None = None,
        device: str | torch.device | None = None,
        verbose: int = 1,
        n_gpu: int | None = None,
        qdrant: Any = None,
    ) -> RAGPretrainedModel:
        """Reopen an index folder written by :meth:`index`: model, passages, ids and metadata.

        ``model`` overrides the model path recorded in the index (for example when the model folder
        moved); it must produce vectors of the index's width. ``qdrant`` reaches the server of a Qdrant-backed
        index when the stored URL is not enough: a ``qdrant_client.QdrantClient`` (required when the index
        was built from one), another URL, or a ``QdrantLocation`` (with its ``api_key``; else the key comes
        from ``QDRANT_API_KEY``).
        """
        if n_gpu is not None and device is None and n_gpu == 0:
            device = "cpu"
        qdrant_collection.check_access(qdrant)
        path = Path(index_path)
        collection = Collection(path)
        if not collection.exists():
            raise IndexNotFoundError(f"no lateragkit index at {path}; build one with RAGPretrainedModel.index()")
        recorded = collection.live().meta.model
        name = str(model) if model is not None else recorded.name_or_path
        try:
            encoder = load_encoder(name, dim=recorded.dim if model is None else None, device=device)
        except LateragkitError as exc:
            if model is not None:
                raise
            raise type(exc)(
                f"{exc}\nThe index at {path} was built with {recorded.name_or_path!r}; if that model moved, "
                f"reopen with RAGPretrainedModel.from_index({str(path)!r}, model='/new/path/to/model')"
            ) from exc
        if model is not None and encoder.dim != recorded.dim and encoder.native_dim >= recorded.dim:
            encoder = load_encoder(name, dim=recorded.dim, device=device)  # a Matryoshka model at the index's width
        rag = cls(encoder, index_root=path.parent, verbose=verbose)
        if qdrant is not None:
            rag._qdrant[path.name] = qdrant
        state = rag._snapshot(path.name)
        if not isinstance(state, QdrantSnapshot) and qdrant is not None:
            raise ValueError(f"qdrant= applies to Qdrant-backed indexes; the index at {path} is stored locally")
        rag._current = path.name
        rag._warm_up(state)
        return rag

    # ---------------------------------------------------------------------------------------------
    # index lifecycle
    # ---------------------------------------------------------------------------------------------
    def index(
        self,
        collection: Sequence[str],
        document_ids: Sequence[str] | None = None,
        document_metadatas: Sequence[dict[str, Any] | None] | None = None,
        index_name: str | None = None,
        overwrite_index: bool | str = True,
        max_document_length: int = 256,
        split_documents: bool = True,
        document_splitter_fn: Callable[..., Any] | None = None,
        preprocessing_fn: Callable[[list[str]], list[str]] | None = None,
        bsize: int | Literal["auto"] = 32,
        nbits: int | None = None,
        index_type: Literal["auto", "plaid", "exact", "qdrant"] = "auto",
        use_faiss: bool = False,
        bm25_language: str = "english",
        qdrant: Any = None,
        qdrant_options: QdrantOptions | None = None,
    ) -> str:
        """Split, encode and index a collection; returns the index folder's path.

        ``max_document_length`` counts the model's own tokens (specials and marker included) and is
        both the chunk size for splitting and the encoder's document length. ``use_faiss`` is accepted
        for RAGatouille compatibility (k-means always uses faiss). A BM25 index of the passages is kept
        beside the vectors for ``search(mode="bm25" | "hybrid")``, stemmed in ``bm25_language``.

        ``index_type="qdrant"`` (or ``qdrant=`` given with ``"auto"``) stores the passages as Qdrant points:
        in an embedded engine inside the index folder (``qdrant=None``), or on a Qdrant server or cluster
        (``qdrant="http://host:6333"`` with the API key in ``QDRANT_API_KEY``, a ``qdrant_client.QdrantClient``,
        or a ``lateragkit.qdrant.QdrantLocation``), with ``qdrant_options=QdrantOptions(...)`` (quantization,
        first-stage size). See :mod:`lateragkit.qdrant_collection`.
        """
        _ignored("index", use_faiss=use_faiss)
        texts = check_texts(collection, "collection")
        ids = check_document_ids(document_ids, len(texts), "document_ids")
        metas = check_metadatas(document_metadatas, len(texts), "document_metadatas")
        name = check_index_name(index_name) if index_name is not None else _default_index_name(self.model_name)
        backend = _resolve_index_type(index_type, qdrant, qdrant_options, nbits)
        batch = check_bsize(bsize)
        bm25 = Bm25Config.for_language(bm25_language)
        doc_maxlen = self._doc_maxlen(max_document_length)
        passages = self._make_passages(texts, ids, metas, doc_maxlen, split_documents, document_splitter_fn,
                                       preprocessing_fn)
        meta = IndexMeta(ModelRecord(self.model_name, self.encoder.dim, self.encoder.settings()), backend,
                         doc_maxlen, bool(split_documents))

        def build(txn: Transaction) -> str:
            if txn.replaces and overwrite_index is False:
                raise IndexExistsError(
                    f"an index named {name!r} already exists at {txn.collection.path}; pass overwrite_index=True to "
                    "replace it, or use add_to_index() to update it"
                )
            if backend == "qdrant":
                return qdrant_collection.build(txn, passages, lambda ps: self._encode_stream(ps, batch, doc_maxlen),
                                               meta, qdrant=qdrant, options=qdrant_options)
            return txn.build(self._encode_stream(passages, batch, doc_maxlen), passages, dict(zip(ids, metas,
                             strict=True)), meta, bm25=bm25, index_type=backend, nbits=nbits,
                             show_progress=bool(self.verbose))

        previous_access = self._qdrant.pop(name, None)
        if qdrant is not None:
            self._qdrant[name] = qdrant  # the snapshot opened after the commit reaches the server through it
        try:
            kind = self._write(name, build, must_exist=False, open_base=False)
        except BaseException:
            self._qdrant.pop(name, None)
            if previous_access is not None:
                self._qdrant[name] = previous_access
            raise
        path = self.index_root / name
        qdrant_collection.release_unused(Collection(path))  # storage of the replaced build, if embedded Qdrant
        self._current = name
        logger.info("indexed %d documents as %d passages into %s (%s)", len(texts), len(passages), path, kind)
        return str(path)

    def add_to_index(
        self,
        new_collection: Sequence[str],
        new_document_ids: Sequence[str] | None = None,
        new_document_metadatas: Sequence[dict[str, Any] | None] | None = None,
        index_name: str | None = None,
        split_documents: bool = True,
        document_splitter_fn: Callable[..., Any] | None = None,
        preprocessing_fn: Callable[[list[str]], list[str]] | None = None,
        bsize: int | Literal["auto"] = 32,
        use_faiss: bool = False,
    ) -> None:
        """Add documents to an index. A document id that is already indexed is replaced (upsert)."""
        _ignored("add_to_index", use_faiss=use_faiss)
        texts = check_texts(new_collection, "new_collection")
        ids = check_document_ids(new_document_ids, len(texts), "new_document_ids")
        metas = check_metadatas(new_document_metadatas, len(texts), "new_document_metadatas")
        batch = check_bsize(bsize)
        name = self._index_name(index_name)
        if isinstance(self._snapshot(name), QdrantSnapshot):

            def upsert(state: QdrantSnapshot) -> None:
                doc_maxlen = state.meta.max_document_length
                passages = self._make_passages(texts, ids, metas, doc_maxlen, split_documents, document_splitter_fn,
                                               preprocessing_fn)
                qdrant_collection.upsert(state, ids, passages, lambda ps: self._encode_stream(ps, batch, doc_maxlen))

            self._write_qdrant(name, upsert)
            logger.info("upserted %d documents into %s (Qdrant)", len(texts), self.index_root / name)
            return

        def add(txn: Transaction) -> tuple[int, int]:
            base = txn._require_base()
            doc_maxlen = base.meta.max_document_length
            passages = self._make_passages(texts, ids, metas, doc_maxlen, split_documents, document_splitter_fn,
                                           preprocessing_fn)
            replaced = base.store.pids_for_documents(ids)
            txn.change(delete_pids=replaced, batches=self._encode_stream(passages, batch, doc_maxlen),
                       passages=passages, document_metadata=dict(zip(ids, metas, strict=True)))
            return len(passages), len(replaced)

        n_passages, n_replaced = self._write(name, add)
        logger.info("added %d documents (%d passages, %d replaced passages) to %s", len(texts), n_passages,
                    n_replaced, self.index_root / name)

    def delete_from_index(self, document_ids: str | Sequence[str], index_name: str | None = None) -> None:
        """Delete documents (all their passages) by document id. Other passages keep their ids."""
        ids = check_id_list(document_ids, "document_ids")
        name = self._index_name(index_name)
        if not ids:
            return
        if isinstance(self._snapshot(name), QdrantSnapshot):
            self._write_qdrant(name, lambda state: qdrant_collection.delete(state, ids))
            return

        def delete(txn: Transaction) -> None:
            base = txn._require_base()
            present = base.store.documents_present(ids)
            missing = [d for d in ids if d not in present]
            if missing:
                logger.warning("delete_from_index: %d ids are not in the index and were ignored: %s",
                               len(missing), missing[:5])
            if not present:
                raise _NothingToWrite
            txn.change(delete_pids=base.store.pids_for_documents(sorted(present)))

        self._write(name, delete)

    def compact(self, index_name: str | None = None, retrain: bool = False,
                bsize: int | Literal["auto"] = 32) -> None:
        """Merge the index's segments into one and drop deleted passages; every passage keeps its id.

        Adds and deletes stay cheap without it (small segments are merged automatically); call it to
        reclaim the space of deleted passages or before publishing an index. Adds compress new passages
        with the PLAID centroids of the first build, so an index that grew a lot searches as well as one
        built with those centroids, not as well as a fresh build: ``retrain=True`` re-encodes every live
        passage with this model and trains the compression afresh (what a rebuild costs, O(index)),
        keeping passage and document ids, offsets and metadata. A Qdrant-backed index needs no compaction
        (Qdrant merges its segments and drops deleted points itself): a no-op there."""
        name = self._index_name(index_name)
        if isinstance(self._snapshot(name), QdrantSnapshot):
            logger.info("compact(): %s is Qdrant-backed; Qdrant optimizes its segments itself", self.index_root / name)
            return
        if not isinstance(retrain, bool):
            raise TypeError(f"retrain must be True or False, not {retrain!r}")
        if not retrain:
            self._write(name, lambda txn: txn.compact())
            return
        batch = check_bsize(bsize)
        settings = _encoding_settings(self.encoder.settings())

        def rebuild(txn: Transaction) -> int:
            base = txn._require_base()
            if base.meta.model.settings and _encoding_settings(base.meta.model.settings) != settings:
                raise ModelMismatchError(
                    f"compact(retrain=True) re-encodes every passage with this model ({self.model_name!r}), but the "
                    f"index at {txn.collection.path} was built with {base.meta.model.name_or_path!r} and other "
                    "settings; open it with RAGPretrainedModel.from_index() to retrain it with its own model"
                )
            doc_maxlen = base.meta.max_document_length
            return txn.rebuild(lambda ps: self._encode_stream(ps, batch, doc_maxlen), show_progress=bool(self.verbose))

        n = self._write(name, rebuild)
        logger.info("retrained %s on its %d passages", self.index_root / name, n)

    # ---------------------------------------------------------------------------------------------
    # search
    # ---------------------------------------------------------------------------------------------
    @overload
    def search(self, query: str, index_name: str | None = None, k: int = 10, doc_ids: Sequence[str] | None = None,
               filter: MetadataFilter | None = None, mode: SearchMode = "late", alpha: float | None = None,
               fusion: str | None = None, zero_index_ranks: bool = False, force_fast: bool = False,
               **search_params: Any) -> list[SearchResult]:
        ...

    @overload
    def search(self, query: Sequence[str], index_name: str | None = None, k: int = 10,
               doc_ids: Sequence[str] | None = None, filter: MetadataFilter | None = None,
               mode: SearchMode = "late", alpha: float | None = None, fusion: str | None = None,
               zero_index_ranks: bool = False, force_fast: bool = False,
               **search_params: Any) -> list[list[SearchResult]]:
        ...

    def search(
        self,
        query: Query,
        index_name: str | None = None,
        k: int = 10,
        doc_ids: Sequence[str] | None = None,
        filter: MetadataFilter | None = None,
        mode: SearchMode = "late",
        alpha: float | None = None,
        fusion: str | None = None,
        zero_index_ranks: bool = False,
        force_fast: bool = False,
        **search_params: Any,
    ) -> list[SearchResult] | list[list[SearchResult]]:
        """Search an index. A str query gives a list of results; a list of queries a list of lists.

        ``mode``: ``"late"`` (late interaction, the default), ``"bm25"`` (keywords only) or ``"hybrid"``
        (both, fused by ``fusion`` = ``"rrf"`` (default) or ``"normalized"``, ``alpha`` weighing late
        interaction against BM25, default 0.5; see :mod:`lateragkit.search_modes`).
        ``doc_ids`` restricts every query to those documents; ``filter`` keeps documents whose metadata
        equals every key of a dict, or for which a callable(metadata) returns True. Extra keyword
        arguments (``ncells``, ``centroid_score_threshold``, ``ndocs``) tune the PLAID search;
        ``force_fast`` picks RAGatouille's fastest ones. ``zero_index_ranks`` makes ranks start at 0.
        A Qdrant-backed index takes ``candidates``, ``hnsw_ef`` and ``exact`` instead, a dict ``filter`` only
        (filters run inside Qdrant) and ``mode="late"`` only.
        """
        queries, single = check_queries(query)
        k = check_k(k)
        wanted = None if doc_ids is None else check_id_list(doc_ids, "doc_ids")
        if mode not in ("late", "bm25", "hybrid"):
            raise ValueError(f"mode must be 'late', 'bm25' or 'hybrid', not {mode!r}")
        if mode != "hybrid" and (alpha, fusion) != (None, None):
            raise ValueError("alpha= and fusion= apply to mode='hybrid' only")
        state = self._snapshot(self._index_name(index_name))
        scored: Scored
        if isinstance(state, QdrantSnapshot):
            _ignored("search", force_fast=force_fast)
            Q, Q_mask = self.encoder.encode_queries(queries)
            scored = qdrant_collection.search(state, Q, Q_mask, k, doc_ids=wanted, filter=filter, mode=mode,
                                              params=search_params)
        else:
            if force_fast:
                search_params = {**FORCE_FAST_PARAMS, **search_params}
            allowed = self._allowed(state, wanted, filter)
            if allowed is not None and allowed.size == 0:
                hits: Hits = [(np.zeros(0, np.float32), np.zeros(0, np.int64)) for _ in queries]
            else:
                hits = self._hits(state, queries, k, allowed, mode, (alpha, fusion), search_params)
            scored = self._stored(state, hits)
        results = _search_rows(scored, 0 if zero_index_ranks else 1)
        return results[0] if single else results

    def _hits(self, state: Snapshot, queries: list[str], k: int, allowed: np.ndarray | None, mode: str,
              fusion: tuple[float | None, str | None], params: dict[str, Any]) -> Hits:
        if mode != "late" and not state.store.has_bm25:
            raise LateragkitError(
                f"the index at {state.path} has no BM25 postings (it was written by lateragkit 0.1); "
                "any write (add_to_index, delete_from_index or compact) adds them, or rebuild it with index()"
            )
        depth = k if mode != "hybrid" else hybrid_depth(k)
        late: Hits | None = None
        if mode != "bm25":
            Q, Q_mask = self.encoder.encode_queries(queries)
            late = state.index.search(Q, Q_mask, depth, pids=allowed, **params)
        if mode == "late":
            assert late is not None
            return late
        bm25 = state.store.bm25_search(queries, depth, allowed=allowed)
        if mode == "bm25":
            return bm25
        assert late is not None
        return fuse_hits(late, bm25, k, alpha=fusion[0], fusion=fusion[1])

    def _allowed(self, state: Snapshot, doc_ids: list[str] | None, filter: MetadataFilter | None
                 ) -> np.ndarray | None:
        allowed: np.ndarray | None = None
        if doc_ids is not None:
            allowed = np.asarray(state.store.pids_for_documents(doc_ids), dtype=np.int64)
        if filter is not None:
            matching = np.asarray(state.store.pids_matching(filter), dtype=np.int64)
            allowed = matching if allowed is None else np.intersect1d(allowed, matching)
        return allowed

    @staticmethod
    def _stored(state: Snapshot, hits: Hits) -> Scored:
        """The stored passage of every hit (read from the hit's own version)."""
        listed = [(scores.tolist(), pids.tolist()) for scores, pids in hits]  # Python numbers, once
        records = state.store.get(sorted({pid for _, pids in listed for pid in pids}))
        return [[(score, records[pid]) for score, pid in zip(scores, pids, strict=True)] for scores, pids in listed]

    @overload
    def rerank(self, query: str, documents: Sequence[str], k: int = 10,  # type: ignore[overload-overlap]
               zero_index_ranks: bool = False, bsize: int | Literal["auto"] = "auto") -> list[RerankResult]:
        ...

    @overload
    def rerank(self, query: Sequence[str], documents: Sequence[str], k: int = 10, zero_index_ranks: bool = False,
               bsize: int | Literal["auto"] = "auto") -> list[list[RerankResult]]:
        ...

    def rerank(
        self,
        query: Query,
        documents: Sequence[str],
        k: int = 10,
        zero_index_ranks: bool = False,
        bsize: int | Literal["auto"] = "auto",
    ) -> list[RerankResult] | list[list[RerankResult]]:
        """Score ``documents`` against the query with MaxSim, no index. ``k`` > len(documents) returns all.

        Documents are cut at the checkpoint's own document length for reranking (a warning says how many
        were cut)."""
        queries, single = check_queries(query)
        k = check_k(k)
        batch = check_bsize(bsize)
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise TypeError("documents must be a list of strings")
        if not documents:
            empty: list[list[RerankResult]] = [[] for _ in queries]
            return empty[0] if single else empty
        docs = check_texts(documents, "documents")
        vectors, doclens = self.encoder.encode_documents(
            docs, bsize=batch, doc_maxlen=self.encoder.rerank_doc_maxlen, warn_truncated=True
        )
        results = self._score_in_memory(queries, vectors, doclens, docs, None, k, 0 if zero_index_ranks else 1)
        return results[0] if single else results

    def encode(
        self,
        documents: Sequence[str],
        document_metadatas: Sequence[dict[str, Any] | None] | int | str | None = None,
        bsize: int | Literal["auto"] = "auto",
        verbose: bool = True,
        max_document_length: int | Literal["auto"] = "auto",
    ) -> None:
        """Encode documents into memory (uncompressed, no splitting) for :meth:`search_encoded_docs`.
        Repeated calls append. ``"auto"`` length fits the collection, up to the checkpoint's maximum
        (8192 tokens for jina-colbert-v1-en, 8190 for jina-colbert-v2); a warning says how many documents
        were cut. RAGatouille's positional order ``encode(documents, bsize, document_metadatas)`` works too."""
        if isinstance(document_metadatas, (int, str)) and not isinstance(document_metadatas, bool):
            # RAGatouille's order: encode(documents, bsize, document_metadatas)
            metas_given = bsize if isinstance(bsize, Sequence) and not isinstance(bsize, str) else None
            document_metadatas, bsize = metas_given, document_metadatas  # type: ignore[assignment]
        texts = check_texts(documents, "documents")
        metas = check_metadatas(document_metadatas, len(texts), "document_metadatas")
        batch = check_bsize(bsize)
        if max_document_length == "auto":
            doc_maxlen = _auto_doc_maxlen(texts, self.encoder.doc_maxlen, self.encoder.rerank_doc_maxlen)
        else:
            doc_maxlen = self._doc_maxlen(max_document_length)
        vectors, doclens = self.encoder.encode_documents(
            texts, bsize=batch, doc_maxlen=doc_maxlen, show_progress=bool(verbose and self.verbose),
            warn_truncated=True,
        )
        with self._mem_lock:
            self._mem_vectors.append(vectors)
            self._mem_doclens.append(doclens)
            self._mem_texts.extend(texts)
            self._mem_metadata.extend(metas)

    def search_encoded_docs(
        self, query: Query, k: int = 10, bsize: int = 32
    ) -> list[RerankResult] | list[list[RerankResult]]:
        """Exhaustive MaxSim over the documents given to :meth:`encode`."""
        queries, single = check_queries(query)
        k = check_k(k)
        batch = check_bsize(bsize)
        with self._mem_lock:
            if not self._mem_texts:
                raise LateragkitError("no documents are encoded in memory: call encode(documents) first")
            if len(self._mem_vectors) > 1:  # pack once, so later searches don't concatenate again
                self._mem_vectors = [torch.cat(self._mem_vectors)]
                self._mem_doclens = [torch.cat(self._mem_doclens)]
            vectors, doclens = self._mem_vectors[0], self._mem_doclens[0]
            texts, metas = list(self._mem_texts), list(self._mem_metadata)
        results = self._score_in_memory(queries, vectors, doclens, texts, metas, k, 1, bsize=batch)
        return results[0] if single else results

    def clear_encoded_docs(self, force: bool = False) -> None:
        """Forget the documents given to :meth:`encode` (immediately; ``force`` is accepted for
        RAGatouille compatibility, which waited 10 s without it)."""
        with self._mem_lock:
            self._mem_vectors, self._mem_doclens = [], []
            self._mem_texts, self._mem_metadata = [], []

    # ---------------------------------------------------------------------------------------------
    # adapters (optional extras, imported lazily)
    # ---------------------------------------------------------------------------------------------
    def as_langchain_retriever(self, **search_kwargs: Any) -> Any:
        from .integrations.langchain import LateragkitRetriever

        k = search_kwargs.pop("k", 10)
        return LateragkitRetriever(model=self, k=k, search_kwargs=search_kwargs)

    def as_langchain_document_compressor(self, k: int | None = None, **kwargs: Any) -> Any:
        """A LangChain document compressor that reranks with MaxSim (``k``, or ``top_n``, default 5)."""
        from .integrations.langchain import LateragkitCompressor

        if k is not None:
            kwargs["k"] = k
        return LateragkitCompressor(model=self, **kwargs)

    def as_llama_index_retriever(self, similarity_top_k: int = 10, **kwargs: Any) -> Any:
        from .integrations.llama_index import LateragkitLlamaRetriever

        return LateragkitLlamaRetriever(model=self, similarity_top_k=similarity_top_k, **kwargs)

    def as_llama_index_postprocessor(self, top_n: int = 5, **kwargs: Any) -> Any:
        from .integrations.llama_index import LateragkitRerank

        return LateragkitRerank(model=self, top_n=top_n, **kwargs)

    # ---------------------------------------------------------------------------------------------
    # internals: index folders
    # ---------------------------------------------------------------------------------------------
    def _index_name(self, index_name: str | None) -> str:
        if index_name is not None:
            return check_index_name(index_name)
        if self._current is None:
            raise IndexNotFoundError(
                "no index is loaded: call index(...) first, open one with RAGPretrainedModel.from_index(path), "
                "or pass index_name="
            )
        return self._current

    def _snapshot(self, name: str, reuse: PassageIndex | None = None) -> State:
        """The live version of index ``name``: the cached one while ``CURRENT`` still names it, else reopened
        (once, however many threads ask at the same time), reusing the loaded segments it shares with the
        cached version or with ``reuse`` (the index a write of this instance just committed)."""
        collection = self._collections.get(name)
        if collection is None or collection.path.parent != self.index_root:  # it holds only its path: kept
            collection = self._collections[name] = Collection(self.index_root / name)
        state = self._states.get(name)
        if state is not None and collection.is_current(state.version):
            return state
        live = collection.version()
        if live is None:
            raise IndexNotFoundError(
                f"no index named {name!r} under {self.index_root}; build it with index(..., index_name={name!r})"
            )
        with self._load_lock:
            state = self._states.get(name)
            if state is None or state.version != collection.version():
                state = self._open(collection, state, reuse)
                check_model_matches(state.meta, self.encoder.dim, self.model_name, state.path)
                if state.meta.model.name_or_path != self.model_name:
                    logger.warning("index %s was built with %s, searching it with %s", state.path,
                                   state.meta.model.name_or_path, self.model_name)
                # the old snapshot is not closed: searches still running on it finish on its files
                self._states[name] = state
            return state

    def _open(self, collection: Collection, old: State | None, reuse: PassageIndex | None) -> State:
        """Open the live version; a local index reuses the segments it shares with ``reuse`` or ``old``."""
        if reuse is None and isinstance(old, Snapshot):
            reuse = old.index
        if reuse is not None and collection.live().qdrant is None:
            return collection.open(device=self.encoder.device, reuse=reuse)
        return qdrant_collection.open_snapshot(collection, qdrant=self._qdrant.get(collection.name),
                                               device=self.encoder.device)

    def _warm_up(self, state: State) -> None:
        """One small search through every layer of a local index, so that the first real search does no
        one-time work (the encoder's first forward pass, first touch of the index's memory maps and of the
        passage store's pages)."""
        if not isinstance(state, Snapshot) or state.index.num_passages == 0:
            return
        Q, Q_mask = self.encoder.encode_queries([WARM_UP_QUERY])
        self._stored(state, state.index.search(Q, Q_mask, 10))

    def _write(self, name: str, op: Callable[[Transaction], Any], *, must_exist: bool = True,
               open_base: bool = True) -> Any:
        """Run ``op`` in a write transaction on index ``name`` and make its version the one searches see."""
        collection = Collection(self.index_root / name)
        with self._write_lock:
            if must_exist and not collection.exists():
                raise IndexNotFoundError(
                    f"no index named {name!r} under {self.index_root}; build it with index(..., index_name={name!r})"
                )
            self.index_root.mkdir(parents=True, exist_ok=True)
            known = self._states.get(name)
            try:
                with collection.write(device=self.encoder.device, known=known if isinstance(known, Snapshot) else None,
                                      must_exist=must_exist, open_base=open_base) as txn:
                    if txn.base is not None:
                        check_model_matches(txn.base.meta, self.encoder.dim, self.model_name, collection.path)
                    result = op(txn)
            except _NothingToWrite:
                return None
            self._snapshot(name, reuse=txn.index)
        return result

    def _write_qdrant(self, name: str, op: Callable[[QdrantSnapshot], None]) -> None:
        """Run ``op`` on the live Qdrant-backed version of index ``name`` inside its writer lock."""
        collection = Collection(self.index_root / name)
        with self._write_lock, collection.lock():
            state = self._snapshot(name)  # under the lock: the newest version (a rebuild may have replaced it)
            if not isinstance(state, QdrantSnapshot):
                raise LateragkitError(
                    f"the index at {collection.path} was rebuilt with index_type={state.meta.index_type!r} while "
                    "this write started; run it again"
                )
            op(state)

    # ---------------------------------------------------------------------------------------------
    # internals: text → passages → vectors
    # ---------------------------------------------------------------------------------------------
    def _doc_maxlen(self, max_document_length: int) -> int:
        max_document_length = check_positive_int(max_document_length, "max_document_length",
                                                 minimum=self.encoder.num_special_doc_tokens + 1)
        if max_document_length > self.encoder.max_tokens:
            logger.warning(
                "max_document_length=%d exceeds what %s accepts; using %d",
                max_document_length, self.model_name, self.encoder.max_tokens,
            )
            return self.encoder.max_tokens
        return max_document_length

    def _make_passages(
        self,
        texts: list[str],
        ids: list[str],
        metas: list[dict[str, Any] | None],
        doc_maxlen: int,
        split: bool,
        splitter_fn: Callable[..., Any] | None,
        preprocessing_fn: Callable[[list[str]], list[str]] | None,
    ) -> list[Passage]:
        splitter = None
        if split and splitter_fn is None:
            splitter = TokenSplitter(self.encoder.token_spans, doc_maxlen - self.encoder.num_special_doc_tokens)
        passages = split_documents(
            texts,
            ids,
            metas,
            splitter=splitter,
            document_splitter_fn=splitter_fn if split else None,
            splitter_kwargs={"chunk_size": doc_maxlen} if (split and splitter_fn is not None) else None,
            preprocessing_fn=preprocessing_fn,
        )
        if not passages:
            raise ValueError("the collection has no text to index: every document is empty or whitespace only")
        return passages

    def _encode_stream(
        self, passages: list[Passage], bsize: int, doc_maxlen: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bar = tqdm(total=len(passages), desc="Encoding passages", unit="passage", disable=not self.verbose)
        try:
            for start in range(0, len(passages), ENCODE_CHUNK_PASSAGES):
                chunk = passages[start : start + ENCODE_CHUNK_PASSAGES]
                yield self.encoder.encode_documents([p.content for p in chunk], bsize=bsize, doc_maxlen=doc_maxlen)
                bar.update(len(chunk))
        finally:
            bar.close()

    def _score_in_memory(
        self,
        queries: list[str],
        vectors: torch.Tensor,
        doclens: torch.Tensor,
        texts: list[str],
        metas: list[dict[str, Any] | None] | None,
        k: int,
        first_rank: int,
        bsize: int = 32,
    ) -> list[list[RerankResult]]:
        out: list[list[RerankResult]] = []
        for start in range(0, len(queries), max(1, bsize)):
            Q, Q_mask = self.encoder.encode_queries(queries[start : start + bsize])
            scores = scoring.maxsim(Q, Q_mask, vectors, doclens)
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                rows: list[RerankResult] = []
                for rank, (score, idx) in enumerate(zip(values, indices, strict=True), start=first_rank):
                    row: RerankResult = {"content": texts[idx], "score": float(score), "rank": rank,
                                         "result_index": int(idx)}
                    if metas is not None and metas[idx] is not None:
                        row["document_metadata"] = metas[idx]
                    rows.append(row)
                out.append(rows)
        return out

    def __repr__(self) -> str:
        return f"RAGPretrainedModel(model={self.model_name!r}, dim={self.encoder.dim}, index={self._current!r})"


class _NothingToWrite(Exception):
    """Raised inside a write transaction that turns out to change nothing: no version is committed."""


def _search_rows(scored: Scored, first_rank: int) -> list[list[SearchResult]]:
    """The result contract's rows (one shape for every backend)."""
    results: list[list[SearchResult]] = []
    for hits in scored:
        rows: list[SearchResult] = []
        for rank, (score, rec) in enumerate(hits, start=first_rank):
            row: SearchResult = {"content": rec.content, "score": float(score), "rank": rank,
                                 "document_id": rec.document_id, "passage_id": rec.passage_id}
            if rec.document_metadata is not None:
                row["document_metadata"] = rec.document_metadata
            if rec.start_char is not None and rec.end_char is not None:
                row["start_char"], row["end_char"] = rec.start_char, rec.end_char
            rows.append(row)
        results.append(rows)
    return results


def _encoding_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A model's recorded settings as stored (JSON), less where the model was loaded from."""
    out = dict(json.loads(json.dumps(settings, default=str)))
    out.pop("name_or_path", None)
    return out


def _resolve_index_type(index_type: str, qdrant: Any, options: Any, nbits: int | None) -> str:
    """``index_type`` checked against the backend-specific arguments; ``"auto"`` with ``qdrant=`` means Qdrant."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {INDEX_TYPES}, not {index_type!r}")
    if index_type == "auto" and qdrant is not None:
        index_type = "qdrant"
    if index_type != "qdrant":
        if qdrant is not None or options is not None:
            raise ValueError(f"qdrant= and qdrant_options= apply to index_type='qdrant', not {index_type!r}")
        return index_type
    qdrant_collection.check_access(qdrant)
    if options is not None and not isinstance(options, QdrantOptions):
        raise TypeError(f"qdrant_options must be a lateragkit.qdrant.QdrantOptions, not {type(options).__name__}")
    if nbits is not None:
        raise ValueError("nbits= applies to PLAID; quantize a Qdrant index with "
                         "qdrant_options=QdrantOptions(quantization='int8')")
    return index_type


# --------------------------------------------------------------------------------------------------
def _auto_doc_maxlen(documents: list[str], default: int, maximum: int) -> int:
    """RAGatouille's heuristic: room for the 90th-percentile document (≈1.35 tokens per word), rounded up
    to a multiple of 32 with 10 % slack, never below the model's default nor above its maximum."""
    words = np.array([len(d.split()) for d in documents])
    p90 = float(np.percentile(words, 90)) if len(words) else 0.0
    wanted = int(math.floor(math.ceil(p90 * 1.35 / 32) * 32 * 1.1))
    return int(min(max(wanted, default), maximum))
