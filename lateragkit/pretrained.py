"""`RAGPretrainedModel`: the facade. It wires encoder, splitter, index and passage store together and
owns no algorithm of its own.

Concurrency model: a committed index version is immutable. Searches take a snapshot of the current
`_IndexState` and read only from it; writers (index / add / delete) are serialised by one lock, build
the next version in a staging folder, commit it atomically and then swap the snapshot. A search thus
always sees one complete version, never a half-applied change.
"""
from __future__ import annotations

import json
import logging
import math
import re
import shutil
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from . import scoring
from .exceptions import IndexExistsError, IndexNotFoundError, LateragkitError
from .index import PassageIndex, build_index, load_index
from .index.storage import VersionedDir
from .models import ColBERTEncoder, load_encoder
from .splitting import Passage, TokenSplitter, split_documents
from .store import MetadataFilter, PassageStore

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "lateragkit.json"
BACKEND_DIR = "backend"
DEFAULT_INDEX_ROOT = Path(".lateragkit") / "indexes"
# Passages encoded per streamed chunk handed to the index builder: bounds the vectors held in memory.
ENCODE_CHUNK_PASSAGES = 1024

Query = str | Sequence[str]


@dataclass
class _IndexState:
    """One committed, immutable index version, opened for reading."""

    name: str
    path: Path
    version_dir: Path
    meta: dict[str, Any]
    index: PassageIndex
    store: PassageStore


# --------------------------------------------------------------------------------------------------
# input validation (one place, used by every entry point)
# --------------------------------------------------------------------------------------------------
def _check_index_name(index_name: str) -> str:
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


def _check_unicode(value: str, what: str) -> None:
    # Lone surrogates (e.g. from a bad decode) cannot be tokenized or stored as UTF-8: say so up front
    # instead of failing deep inside the tokenizer or SQLite.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} holds invalid Unicode ({exc.reason} at character {exc.start}); clean it first, e.g. "
            "text.encode('utf-8', 'replace').decode('utf-8')"
        ) from None


def _check_texts(texts: Any, what: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{what} must be a list of strings, not {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{what} is empty: pass at least one document")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] is a {type(text).__name__}; every document must be a str")
        _check_unicode(text, f"{what}[{i}]")
    return texts


def _check_document_ids(ids: Any, n: int, what: str) -> list[str]:
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
        _check_unicode(doc_id, f"{what}[{i}]")
    if len(set(ids)) != n:
        dups = sorted(d for d, count in Counter(ids).items() if count > 1)[:5]
        raise ValueError(f"{what} contains duplicates (e.g. {dups}); document ids must be unique")
    return ids


def _check_metadatas(metas: Any, n: int, what: str) -> list[dict[str, Any] | None]:
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


def _check_queries(query: Any) -> tuple[list[str], bool]:
    """Returns the queries as a list and whether a single str was given."""
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
        _check_unicode(q, "a query")
    return queries, single


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, not {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"k must be at least 1 (got {k})")
    return int(k)


def _default_index_name(model_name: str) -> str:
    base = Path(str(model_name).rstrip("/\\")).name or "lateragkit"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") + "_index"


# --------------------------------------------------------------------------------------------------
class RAGPretrainedModel:
    """Late-interaction retrieval in three lines: ``from_pretrained`` → ``index`` → ``search``.

    Scores are raw MaxSim sums (Σ over query tokens of the best cosine over the passage's tokens):
    comparable within one query and model, not calibrated, never thresholded by default.
    """

    def __init__(self, encoder: ColBERTEncoder, *, index_root: str | Path | None = None, verbose: int = 1) -> None:
        self.encoder = encoder
        self.model_name = encoder.name_or_path
        self.index_root = Path(index_root) if index_root is not None else DEFAULT_INDEX_ROOT
        self.verbose = verbose
        self._states: dict[str, _IndexState] = {}
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
        """Load a ColBERT checkpoint (Stanford, jina-colbert-v2, PyLate) or a bare encoder.

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
        device: str | torch.device | None = None,
        verbose: int = 1,
        n_gpu: int | None = None,
    ) -> RAGPretrainedModel:
        """Reopen an index folder written by :meth:`index`: model, passages, ids and metadata."""
        path = Path(index_path)
        versioned = VersionedDir(path)
        if not versioned.exists():
            raise IndexNotFoundError(f"no lateragkit index at {path}; build one with RAGPretrainedModel.index()")
        meta = _read_meta(versioned.current())
        model = meta["model"]
        encoder = load_encoder(model["name_or_path"], dim=model.get("dim"), device=device)
        rag = cls(encoder, index_root=path.parent, verbose=verbose)
        rag._open_state(path.name)
        rag._current = path.name
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
        overwrite_index: bool = True,
        max_document_length: int = 256,
        split_documents: bool = True,
        document_splitter_fn: Callable[..., Any] | None = None,
        preprocessing_fn: Callable[[list[str]], list[str]] | None = None,
        bsize: int = 32,
        nbits: int | None = None,
        index_type: Literal["auto", "plaid", "exact"] = "auto",
    ) -> str:
        """Split, encode and index a collection; returns the index folder's path.

        ``max_document_length`` counts the model's own tokens (specials and marker included) and is
        both the chunk size for splitting and the encoder's document length.
        """
        collection = _check_texts(collection, "collection")
        ids = _check_document_ids(document_ids, len(collection), "document_ids")
        metas = _check_metadatas(document_metadatas, len(collection), "document_metadatas")
        name = _check_index_name(index_name) if index_name is not None else _default_index_name(self.model_name)
        if index_type not in ("auto", "plaid", "exact"):
            raise ValueError(f"index_type must be 'auto', 'plaid' or 'exact', not {index_type!r}")
        doc_maxlen = self._doc_maxlen(max_document_length)
        passages = self._make_passages(
            collection, ids, metas, doc_maxlen, split_documents, document_splitter_fn, preprocessing_fn
        )
        path = self.index_root / name
        with self._write_lock:
            versioned = VersionedDir(path)
            if versioned.exists() and not overwrite_index:
                raise IndexExistsError(
                    f"an index named {name!r} already exists at {path}; pass overwrite_index=True to replace it, "
                    "or use add_to_index() to update it"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            with versioned.stage() as staging:
                built = build_index(
                    staging / BACKEND_DIR,
                    self._encode_stream(passages, bsize, doc_maxlen),
                    dim=self.encoder.dim,
                    index_type=index_type,
                    num_passages=len(passages),
                    nbits=nbits,
                    device=self.encoder.device,
                    show_progress=bool(self.verbose),
                )
                pids = list(range(len(passages)))
                store = PassageStore.create(staging / PassageStore.FILENAME)
                store.add(pids, passages, dict(zip(ids, metas)))
                store.close()
                built_kind = built.kind
                now = datetime.now(timezone.utc).isoformat()
                _write_meta(
                    staging,
                    {
                        "format_version": FORMAT_VERSION,
                        "model": {"name_or_path": self.model_name, "dim": self.encoder.dim,
                                  "settings": self.encoder.settings()},
                        "index_type": built_kind,
                        "max_document_length": doc_maxlen,
                        "split_documents": bool(split_documents),
                        "created": now,
                        "updated": now,
                    },
                )
                del built
            self._swap_state(name)
        logger.info("indexed %d documents as %d passages into %s (%s)", len(collection), len(passages), path, built_kind)
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
        bsize: int = 32,
    ) -> None:
        """Add documents to an index. A document id that is already indexed is replaced (upsert)."""
        collection = _check_texts(new_collection, "new_collection")
        ids = _check_document_ids(new_document_ids, len(collection), "new_document_ids")
        metas = _check_metadatas(new_document_metadatas, len(collection), "new_document_metadatas")
        with self._write_lock:
            state = self._state_for(index_name)
            doc_maxlen = int(state.meta.get("max_document_length", self.encoder.doc_maxlen))
            passages = self._make_passages(
                collection, ids, metas, doc_maxlen, split_documents, document_splitter_fn, preprocessing_fn
            )
            replaced = state.store.pids_for_documents(ids)
            versioned = VersionedDir(state.path)
            with versioned.stage() as staging:
                index = state.index
                scratch = staging / "scratch"
                if replaced:
                    index = index.delete(scratch, np.asarray(replaced, dtype=np.int64))
                index, new_pids = index.add(staging / BACKEND_DIR, self._encode_stream(passages, bsize, doc_maxlen))
                del index
                shutil.rmtree(scratch, ignore_errors=True)
                store = state.store.copy_to(staging / PassageStore.FILENAME)
                store.delete_documents(ids)
                store.add([int(p) for p in new_pids], passages, dict(zip(ids, metas)))
                store.close()
                _write_meta(staging, {**state.meta, "updated": datetime.now(timezone.utc).isoformat()})
            self._swap_state(state.name)
        logger.info(
            "added %d documents (%d passages, %d replaced passages) to %s",
            len(collection), len(passages), len(replaced), state.path,
        )

    def delete_from_index(self, document_ids: str | Sequence[str], index_name: str | None = None) -> None:
        """Delete documents (all their passages) by document id. Other passages keep their ids."""
        if isinstance(document_ids, str):
            document_ids = [document_ids]  # a bare str is one id, never a substring match
        ids = list(document_ids)
        for doc_id in ids:
            if not isinstance(doc_id, str):
                raise TypeError(f"document ids are strings, got {type(doc_id).__name__}")
        with self._write_lock:
            state = self._state_for(index_name)
            known = state.store.document_ids()
            missing = [d for d in ids if d not in known]
            if missing:
                logger.warning("delete_from_index: %d ids are not in the index and were ignored: %s",
                               len(missing), missing[:5])
            present = [d for d in ids if d in known]
            if not present:
                return
            pids = state.store.pids_for_documents(present)
            with VersionedDir(state.path).stage() as staging:
                index = state.index.delete(staging / BACKEND_DIR, np.asarray(pids, dtype=np.int64))
                del index
                store = state.store.copy_to(staging / PassageStore.FILENAME)
                store.delete_documents(present)
                store.close()
                _write_meta(staging, {**state.meta, "updated": datetime.now(timezone.utc).isoformat()})
            self._swap_state(state.name)

    # ---------------------------------------------------------------------------------------------
    # search
    # ---------------------------------------------------------------------------------------------
    def search(
        self,
        query: Query,
        index_name: str | None = None,
        k: int = 10,
        doc_ids: Sequence[str] | None = None,
        filter: MetadataFilter | None = None,
        **search_params: Any,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Search an index. A str query gives a list of results; a list of queries a list of lists.

        ``doc_ids`` restricts every query to those documents; ``filter`` keeps documents whose metadata
        equals every key of a dict, or for which a callable(metadata) returns True. Extra keyword
        arguments (``ncells``, ``centroid_score_threshold``, ``ndocs``) tune the PLAID search.
        """
        queries, single = _check_queries(query)
        k = _check_k(k)
        state = self._state_for(index_name)
        allowed: np.ndarray | None = None
        if doc_ids is not None:
            if isinstance(doc_ids, str):
                doc_ids = [doc_ids]
            allowed = np.asarray(state.store.pids_for_documents(list(doc_ids)), dtype=np.int64)
        if filter is not None:
            matching = np.asarray(state.store.pids_matching(filter), dtype=np.int64)
            allowed = matching if allowed is None else np.intersect1d(allowed, matching)
        if allowed is not None and allowed.size == 0:
            empty: list[list[dict[str, Any]]] = [[] for _ in queries]
            return empty[0] if single else empty
        Q, Q_mask = self.encoder.encode_queries(queries)
        hits = state.index.search(Q, Q_mask, k, pids=allowed, **search_params)
        wanted = sorted({int(p) for _, pids in hits for p in pids})
        records = state.store.get(wanted)
        results: list[list[dict[str, Any]]] = []
        for scores, pids in hits:
            rows = []
            for rank, (score, pid) in enumerate(zip(scores, pids), start=1):
                rec = records[int(pid)]
                row = {
                    "content": rec.content,
                    "score": float(score),
                    "rank": rank,
                    "document_id": rec.document_id,
                    "passage_id": rec.passage_id,
                }
                if rec.document_metadata is not None:
                    row["document_metadata"] = rec.document_metadata
                if rec.start_char is not None:
                    row["start_char"], row["end_char"] = rec.start_char, rec.end_char
                rows.append(row)
            results.append(rows)
        return results[0] if single else results

    def rerank(
        self,
        query: Query,
        documents: Sequence[str],
        k: int = 10,
        bsize: int | Literal["auto"] = "auto",
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Score ``documents`` against the query with MaxSim, no index. ``k`` > len(documents) returns all."""
        queries, single = _check_queries(query)
        k = _check_k(k)
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise TypeError("documents must be a list of strings")
        documents = list(documents)
        if not documents:
            return [] if single else [[] for _ in queries]
        documents = _check_texts(documents, "documents")
        vectors, doclens = self.encoder.encode_documents(
            documents, bsize=_bsize(bsize), doc_maxlen=self.encoder.max_tokens
        )
        results = self._score_in_memory(queries, vectors, doclens, documents, None, k)
        return results[0] if single else results

    def encode(
        self,
        documents: Sequence[str],
        bsize: int | Literal["auto"] = "auto",
        document_metadatas: Sequence[dict[str, Any] | None] | None = None,
        verbose: bool = True,
        max_document_length: int | Literal["auto"] = "auto",
    ) -> None:
        """Encode documents into memory (uncompressed, no splitting) for :meth:`search_encoded_docs`.
        Repeated calls append. ``"auto"`` length fits the collection, up to the model's maximum
        (8190 tokens for jina-colbert-v2)."""
        documents = _check_texts(documents, "documents")
        metas = _check_metadatas(document_metadatas, len(documents), "document_metadatas")
        if max_document_length == "auto":
            doc_maxlen = _auto_doc_maxlen(documents, self.encoder.doc_maxlen, self.encoder.max_tokens)
        else:
            doc_maxlen = self._doc_maxlen(int(max_document_length))
        vectors, doclens = self.encoder.encode_documents(
            documents, bsize=_bsize(bsize), doc_maxlen=doc_maxlen, show_progress=bool(verbose and self.verbose)
        )
        with self._mem_lock:
            self._mem_vectors.append(vectors)
            self._mem_doclens.append(doclens)
            self._mem_texts.extend(documents)
            self._mem_metadata.extend(metas)

    def search_encoded_docs(
        self, query: Query, k: int = 10, bsize: int = 32
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Exhaustive MaxSim over the documents given to :meth:`encode`."""
        queries, single = _check_queries(query)
        k = _check_k(k)
        with self._mem_lock:
            if not self._mem_texts:
                raise LateragkitError("no documents are encoded in memory: call encode(documents) first")
            if len(self._mem_vectors) > 1:  # pack once, so later searches don't concatenate again
                self._mem_vectors = [torch.cat(self._mem_vectors)]
                self._mem_doclens = [torch.cat(self._mem_doclens)]
            vectors, doclens = self._mem_vectors[0], self._mem_doclens[0]
            texts, metas = list(self._mem_texts), list(self._mem_metadata)
        results = self._score_in_memory(queries, vectors, doclens, texts, metas, k, bsize=bsize)
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
    # internals
    # ---------------------------------------------------------------------------------------------
    def _doc_maxlen(self, max_document_length: int) -> int:
        if isinstance(max_document_length, bool) or not isinstance(max_document_length, int):
            raise TypeError("max_document_length must be an int (tokens)")
        minimum = self.encoder.num_special_doc_tokens + 1
        if max_document_length < minimum:
            raise ValueError(f"max_document_length must be at least {minimum} tokens (got {max_document_length})")
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
            raise ValueError(
                "the collection has no text to index: every document is empty or whitespace only"
            )
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
        bsize: int = 32,
    ) -> list[list[dict[str, Any]]]:
        out: list[list[dict[str, Any]]] = []
        for start in range(0, len(queries), max(1, bsize)):
            Q, Q_mask = self.encoder.encode_queries(queries[start : start + bsize])
            scores = scoring.maxsim(Q, Q_mask, vectors, doclens)
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            for values, indices in zip(top.values.tolist(), top.indices.tolist()):
                rows = []
                for rank, (score, idx) in enumerate(zip(values, indices), start=1):
                    row = {"content": texts[idx], "score": float(score), "rank": rank, "result_index": int(idx)}
                    if metas is not None and metas[idx] is not None:
                        row["document_metadata"] = metas[idx]
                    rows.append(row)
                out.append(rows)
        return out

    def _state_for(self, index_name: str | None) -> _IndexState:
        if index_name is None:
            if self._current is None:
                raise IndexNotFoundError(
                    "no index is loaded: call index(...) first, open one with RAGPretrainedModel.from_index(path), "
                    "or pass index_name="
                )
            index_name = self._current
        name = _check_index_name(index_name)
        state = self._states.get(name)
        if state is not None:
            return state
        with self._load_lock:  # one loader per index, even when many threads ask at once
            state = self._states.get(name)
            if state is None:
                state = self._open_state(name)
            return state

    def _open_state(self, name: str) -> _IndexState:
        path = self.index_root / name
        versioned = VersionedDir(path)
        if not versioned.exists():
            raise IndexNotFoundError(
                f"no index named {name!r} under {self.index_root}; build it with index(..., index_name={name!r})"
            )
        version_dir = versioned.current()
        meta = _read_meta(version_dir)
        if meta["model"]["name_or_path"] != self.model_name:
            logger.warning("index %s was built with %s, searching it with %s", path,
                           meta["model"]["name_or_path"], self.model_name)
        state = _IndexState(
            name=name,
            path=path,
            version_dir=version_dir,
            meta=meta,
            index=load_index(version_dir / BACKEND_DIR, device=self.encoder.device),
            store=PassageStore.open(version_dir / PassageStore.FILENAME),
        )
        self._states[name] = state
        return state

    def _swap_state(self, name: str) -> None:
        """After a commit: open the new version and make it the one searches see."""
        old = self._states.pop(name, None)
        with self._load_lock:
            self._open_state(name)
        self._current = name
        # Older versions stay on disk until the next clean; in-flight searches on `old` keep working
        # because their files are only unlinked, and its store connection stays open until collected.
        del old
        VersionedDir(self.index_root / name).clean()

    def __repr__(self) -> str:
        return f"RAGPretrainedModel(model={self.model_name!r}, dim={self.encoder.dim}, index={self._current!r})"


# --------------------------------------------------------------------------------------------------
def _bsize(bsize: int | str) -> int:
    if bsize == "auto":
        return 32
    if isinstance(bsize, bool) or not isinstance(bsize, int) or bsize < 1:
        raise ValueError(f"bsize must be a positive int or 'auto', not {bsize!r}")
    return bsize


def _auto_doc_maxlen(documents: list[str], default: int, maximum: int) -> int:
    """RAGatouille's heuristic: room for the 90th-percentile document (≈1.35 tokens per word), rounded up
    to a multiple of 32 with 10 % slack, never below the model's default nor above its maximum."""
    words = np.array([len(d.split()) for d in documents])
    p90 = float(np.percentile(words, 90)) if len(words) else 0.0
    wanted = int(math.floor(math.ceil(p90 * 1.35 / 32) * 32 * 1.1))
    return int(min(max(wanted, default), maximum))


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")


def _read_meta(folder: Path) -> dict[str, Any]:
    from .exceptions import CorruptIndexError

    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CorruptIndexError(f"{path} is missing; the index must be rebuilt") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptIndexError(f"{path} is not valid JSON ({exc}); the index must be rebuilt") from exc
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CorruptIndexError(
            f"{path} has format_version {meta.get('format_version') if isinstance(meta, dict) else None!r}, "
            f"this lateragkit reads version {FORMAT_VERSION}; rebuild the index"
        )
    if not isinstance(meta.get("model"), dict) or "name_or_path" not in meta["model"]:
        raise CorruptIndexError(f"{path} does not name the model the index was built with; rebuild the index")
    return meta
