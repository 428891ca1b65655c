"""LangChain adapters (extra ``lateragkit[langchain]``; imports ``langchain_core`` only).

- :class:`LateragkitRetriever` — ``RAG.as_langchain_retriever(k=10, **search_kwargs)``.
- :class:`LateragkitCompressor` — ``RAG.as_langchain_document_compressor(k=5, **kw)``; a reranker
  for ``ContextualCompressionRetriever`` or any LCEL chain.
- :class:`LateragkitTextSplitter` — the token-accurate splitter as a LangChain document transformer.

Scores are raw MaxSim sums (the sum over query tokens of the best document-token similarity); they
are comparable between passages of one query only, and nothing is thresholded unless asked.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from ..validation import check_positive_int
from . import _common, missing_extra

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
        Callbacks,
    )
    from langchain_core.documents import BaseDocumentCompressor, BaseDocumentTransformer, Document
    from langchain_core.retrievers import BaseRetriever, LangSmithRetrieverParams
    from pydantic import ConfigDict, Field, field_validator, model_validator
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise missing_extra("langchain", exc) from exc

logger = logging.getLogger(__name__)

__all__ = ["LateragkitRetriever", "LateragkitCompressor", "LateragkitTextSplitter"]


def result_to_document(result: Mapping[str, Any]) -> Document:
    """One ``search`` result dict as a LangChain ``Document`` (id = passage id)."""
    metadata = _common.passage_metadata(result)
    start, end = _common.result_offsets(result)
    if start is not None:
        metadata["start_index"] = start
        metadata["end_index"] = end
    passage_id = result.get("passage_id")
    return Document(
        id=None if passage_id is None else str(passage_id),
        page_content=result["content"],
        metadata=metadata,
    )


class LateragkitRetriever(BaseRetriever):
    """A LangChain retriever over a lateragkit index.

    ``invoke(query)`` returns up to ``k`` ``Document``s, best first, each with
    ``id=passage_id`` and ``metadata`` = the document's metadata plus ``document_id``,
    ``passage_id``, ``score`` (raw MaxSim), ``rank`` (1-based) and, when the index stores them,
    ``start_index``/``end_index`` (character offsets of the passage in its document). These keys
    take precedence over document metadata keys of the same name.

    ``invoke(query, k=3, doc_ids=[...], index_name=...)`` overrides the constructor's values for one
    call; any other keyword goes to ``RAGPretrainedModel.search``. ``ainvoke``/``abatch`` run the
    search in a worker thread, so the event loop is never blocked.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any = Field(repr=False, exclude=True)
    """The ``RAGPretrainedModel`` (anything with ``search(query, k=..., **kw) -> list[dict]``)."""
    k: int = 10
    """Number of documents to return (``invoke(q, k=...)`` overrides it for one call)."""
    index_name: str | None = None
    """Index to search; ``None`` uses the model's current index."""
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra keyword arguments for ``search`` (``doc_ids``, ``filter``, search parameters...)."""

    @model_validator(mode="before")
    @classmethod
    def _k_from_search_kwargs(cls, data: Any) -> Any:
        # RAGatouille users write as_langchain_retriever(k=3) with everything in search kwargs.
        if isinstance(data, dict) and "k" in (data.get("search_kwargs") or {}):
            search_kwargs = dict(data["search_kwargs"])
            k = search_kwargs.pop("k")
            if "k" in data and data["k"] != k:
                raise ValueError(f"k given twice with different values ({data['k']} and {k}); pass it once")
            data = {**data, "k": k, "search_kwargs": search_kwargs}
        return data

    @field_validator("k")
    @classmethod
    def _check_k(cls, value: int) -> int:
        return check_positive_int(value, "k")

    def _search_params(self, kwargs: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        params = {**self.search_kwargs, **kwargs}
        k = params.pop("k", None)
        k = self.k if k is None else check_positive_int(k, "k")
        index_name = params.pop("index_name", self.index_name)
        if index_name is not None:
            params["index_name"] = index_name
        return k, params

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, params = self._search_params(kwargs)
        results = self.model.search(query, k=k, **params)
        return [result_to_document(r) for r in _common.as_single_query_results(results, query)]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        # The search is CPU/GPU work: run it in a thread so the event loop keeps serving others.
        return await asyncio.to_thread(
            self._get_relevant_documents, query, run_manager=run_manager.get_sync(), **kwargs
        )

    def _get_ls_params(self, **kwargs: Any) -> LangSmithRetrieverParams:
        params = super()._get_ls_params(**kwargs)
        params["ls_vector_store_provider"] = "lateragkit"
        params["ls_embedding_provider"] = "lateragkit"
        params["ls_embedding_model"] = _common.model_name(self.model)
        return params


class LateragkitCompressor(BaseDocumentCompressor):
    """Rerank LangChain ``Document``s with late-interaction MaxSim (``model.rerank``).

    Returns at most ``k`` *new* ``Document``s, best first, keeping each input's ``id`` and
    metadata and adding ``metadata["relevance_score"]`` (raw MaxSim). The input documents are never
    modified. ``top_n`` is accepted as an alias of ``k`` (LangChain's reranker convention).
    ``score_threshold`` (off by default) drops documents scoring below it.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: Any = Field(repr=False, exclude=True)
    """The ``RAGPretrainedModel`` (anything with ``rerank(query, documents, k=...) -> list[dict]``)."""
    k: int = 5
    """Number of documents to keep."""
    score_threshold: float | None = None
    """Drop documents whose MaxSim score is below this (raw scale; ``None`` keeps all)."""
    bsize: int | Literal["auto"] = "auto"
    """Batch size passed to ``rerank``."""

    @model_validator(mode="before")
    @classmethod
    def _top_n_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "top_n" in data:
            data = dict(data)
            top_n = data.pop("top_n")
            if "k" in data and data["k"] != top_n:
                raise ValueError(f"k={data['k']} and top_n={top_n} disagree; pass only one of them")
            data["k"] = top_n
        return data

    @field_validator("k")
    @classmethod
    def _check_k(cls, value: int) -> int:
        return check_positive_int(value, "k")

    @property
    def top_n(self) -> int:
        """Alias of ``k``."""
        return self.k

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        docs = list(documents)
        if not docs:
            return []
        results = self.model.rerank(
            query, [d.page_content for d in docs], k=min(self.k, len(docs)), bsize=self.bsize
        )
        out: list[Document] = []
        for result in _common.as_single_query_results(results, query):
            score = float(result["score"])
            if self.score_threshold is not None and score < self.score_threshold:
                continue
            # Map by result_index, never by position: the order changed.
            source = docs[int(result["result_index"])]
            metadata = {**source.metadata, "relevance_score": score}
            out.append(source.model_copy(update={"metadata": metadata}))
        return out


class LateragkitTextSplitter(BaseDocumentTransformer):
    """The token-accurate lateragkit splitter as a LangChain document transformer.

    Chunks hold at most ``max_tokens`` *model* tokens (the encoder's own tokenizer, specials
    excluded), overlap by ``overlap_tokens``, and are exact slices of the input text:
    ``metadata["start_index"]``/``["end_index"]`` give their character offsets. Each chunk copies its
    document's metadata; a document with an ``id`` gives chunks ``f"{id}-{chunk_index}"``.

    Build it from a model (``LateragkitTextSplitter.from_model(RAG)``, budget = the encoder's
    ``doc_maxlen`` minus its special tokens) or from any ``token_spans(text)`` callable.
    """

    def __init__(
        self,
        token_spans: Any,
        max_tokens: int | None = None,
        overlap_tokens: int | None = None,
    ) -> None:
        self.max_tokens, self.overlap_tokens = _common.resolve_budget(
            token_spans, max_tokens, overlap_tokens
        )
        self._splitter = _common.build_token_splitter(token_spans, self.max_tokens, self.overlap_tokens)

    @classmethod
    def from_model(
        cls, model: Any, *, max_tokens: int | None = None, overlap_tokens: int | None = None
    ) -> LateragkitTextSplitter:
        """Split with a ``RAGPretrainedModel``'s (or an encoder's) tokenizer and token budget."""
        return cls(model, max_tokens=max_tokens, overlap_tokens=overlap_tokens)

    def split_text(self, text: str) -> list[str]:
        """The chunk texts of one string."""
        return [chunk.text for chunk in self._splitter.split(text)]

    def create_documents(
        self, texts: Iterable[str], metadatas: Iterable[Mapping[str, Any]] | None = None
    ) -> list[Document]:
        """Chunk ``texts`` into ``Document``s (metadata copied per chunk, offsets added)."""
        texts = list(texts)
        metas = [{} for _ in texts] if metadatas is None else [dict(m) for m in metadatas]
        if len(metas) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(metas)} metadatas; pass one per text")
        return self.split_documents(
            [Document(page_content=t, metadata=m) for t, m in zip(texts, metas, strict=True)]
        )

    def split_documents(self, documents: Iterable[Document]) -> list[Document]:
        """Chunk ``Document``s; each chunk is a new ``Document`` with ``start_index``/``end_index``."""
        out: list[Document] = []
        for document in documents:
            for index, chunk in enumerate(self._splitter.split(document.page_content)):
                metadata = {**document.metadata, "start_index": chunk.start, "end_index": chunk.end}
                out.append(
                    Document(
                        id=None if document.id is None else f"{document.id}-{index}",
                        page_content=chunk.text,
                        metadata=metadata,
                    )
                )
        return out

    def transform_documents(self, documents: Sequence[Document], **kwargs: Any) -> Sequence[Document]:
        return self.split_documents(documents)
