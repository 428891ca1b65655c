"""LlamaIndex adapters (extra ``lateragkit[llamaindex]``; imports ``llama_index.core`` only).

- :class:`LateragkitLlamaRetriever` — ``RAG.as_llama_index_retriever(similarity_top_k=10, **kw)``.
- :class:`LateragkitRerank` — ``RAG.as_llama_index_postprocessor(top_n=5, **kw)``: a node
  postprocessor doing real ColBERT MaxSim (``model.rerank``) over the nodes' text.
- :class:`LateragkitNodeParser` — the token-accurate splitter as a LlamaIndex node parser.

Scores are raw MaxSim sums (comparable between nodes of one query only); nothing is thresholded.
The bookkeeping metadata keys (``document_id``, ``passage_id``, ``score``, ``rank``,
``retrieval_score``) are excluded from what the LLM and the embedder see.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ..validation import check_positive_int
from . import _common, missing_extra

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
    from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.node_parser import TextSplitter
    from llama_index.core.node_parser.node_utils import default_id_func
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import (
        BaseNode,
        MetadataMode,
        NodeRelationship,
        NodeWithScore,
        QueryBundle,
        RelatedNodeInfo,
        TextNode,
    )
    from llama_index.core.utils import get_tqdm_iterable
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise missing_extra("llamaindex", exc) from exc

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)
_DEFAULT_TEXT_TEMPLATE: str = TextNode.model_fields["text_template"].default

__all__ = ["LateragkitLlamaRetriever", "LateragkitRerank", "LateragkitNodeParser"]


def _excluded(keys: Sequence[str]) -> list[str]:
    """``keys`` plus lateragkit's bookkeeping keys, order kept, no duplicates."""
    return list(dict.fromkeys([*keys, *_common.BOOKKEEPING_KEYS]))


def result_to_node(result: Mapping[str, Any]) -> NodeWithScore:
    """One ``search`` result dict as a ``NodeWithScore`` (node id = passage id, SOURCE = document id)."""
    metadata = _common.passage_metadata(result)
    start, end = _common.result_offsets(result)
    document_id = result.get("document_id")
    relationships = {}
    if document_id is not None:
        relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=str(document_id))
    node_kwargs: dict[str, Any] = {}
    passage_id = result.get("passage_id")
    if passage_id is not None:
        node_kwargs["id_"] = str(passage_id)
    node = TextNode(
        text=result["content"],
        metadata=metadata,
        excluded_llm_metadata_keys=_excluded(()),
        excluded_embed_metadata_keys=_excluded(()),
        start_char_idx=start,
        end_char_idx=end,
        relationships=relationships,
        **node_kwargs,
    )
    return NodeWithScore(node=node, score=float(result["score"]))


class LateragkitLlamaRetriever(BaseRetriever):
    """A LlamaIndex retriever over a lateragkit index.

    ``retrieve(query)`` returns up to ``similarity_top_k`` ``NodeWithScore``s, best first:
    ``TextNode(id_=passage_id, text, metadata = document metadata + document_id, passage_id, score,
    rank)`` with ``start_char_idx``/``end_char_idx`` when the index stores offsets and a SOURCE
    relationship to the ``document_id``. ``aretrieve`` runs the search in a worker thread.
    Extra keyword arguments (``doc_ids=...``, search parameters) go to ``RAGPretrainedModel.search``.
    """

    def __init__(
        self,
        model: Any,
        similarity_top_k: int = 10,
        *,
        index_name: str | None = None,
        search_kwargs: Mapping[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        object_map: dict | None = None,
        verbose: bool = False,
        **kwargs: Any,
    ) -> None:
        self._model = model
        self.similarity_top_k = check_positive_int(similarity_top_k, "similarity_top_k")
        self.index_name = index_name
        self.search_kwargs = {**(search_kwargs or {}), **kwargs}
        if "k" in self.search_kwargs:
            raise ValueError("pass the number of results as similarity_top_k, not k")
        super().__init__(callback_manager=callback_manager, object_map=object_map, verbose=verbose)

    @property
    def model(self) -> Any:
        return self._model

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        params = dict(self.search_kwargs)
        if self.index_name is not None:
            params["index_name"] = self.index_name
        query = query_bundle.query_str
        results = self._model.search(query, k=self.similarity_top_k, **params)
        return [result_to_node(r) for r in _common.as_single_query_results(results, query)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # LlamaIndex's default runs _retrieve on the event loop; offload the search instead.
        return await asyncio.to_thread(self._retrieve, query_bundle)


class LateragkitRerank(BaseNodePostprocessor):
    """Rerank nodes with late-interaction MaxSim (``model.rerank``) over their text.

    Scores ``node.get_content(metadata_mode=metadata_mode)`` (default ``MetadataMode.NONE``: the
    passage text only) and returns at most ``top_n`` *copies* of the nodes, best first, with the MaxSim
    score; the input nodes are not modified. With ``keep_retrieval_score=True`` the original score is
    kept in ``metadata["retrieval_score"]`` (hidden from the LLM and the embedder).
    """

    top_n: int = Field(default=5, description="Number of nodes to keep.")
    keep_retrieval_score: bool = Field(
        default=False, description="Store the incoming score in metadata['retrieval_score']."
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.NONE, description="Which node content the model scores."
    )
    bsize: int | Literal["auto"] = Field(default="auto", description="Batch size for rerank.")
    model_name: str = Field(default="lateragkit", description="Name of the model (for events).")

    _model: Any = PrivateAttr()

    def __init__(
        self,
        model: Any,
        top_n: int = 5,
        keep_retrieval_score: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("model_name", _common.model_name(model))
        # pydantic: these are fields of this subclass, which its generated __init__ accepts
        super().__init__(top_n=top_n, keep_retrieval_score=keep_retrieval_score, **kwargs)  # type: ignore[call-arg]
        self._model = model

    @field_validator("top_n")
    @classmethod
    def _check_top_n(cls, value: int) -> int:
        return check_positive_int(value, "top_n")

    @classmethod
    def class_name(cls) -> str:
        return "LateragkitRerank"

    @property
    def model(self) -> Any:
        return self._model

    def _copy_with_score(self, item: NodeWithScore, score: float) -> NodeWithScore:
        node = item.node
        metadata = dict(node.metadata)
        llm_keys = list(node.excluded_llm_metadata_keys)
        embed_keys = list(node.excluded_embed_metadata_keys)
        if self.keep_retrieval_score:
            metadata["retrieval_score"] = item.score
            llm_keys, embed_keys = _excluded(llm_keys), _excluded(embed_keys)
        copy = node.model_copy(
            update={
                "metadata": metadata,
                "excluded_llm_metadata_keys": llm_keys,
                "excluded_embed_metadata_keys": embed_keys,
                "relationships": dict(node.relationships),
            }
        )
        return NodeWithScore(node=copy, score=score)

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError(
                "LateragkitRerank needs the query: call postprocess_nodes(nodes, query_str=...) "
                "or pass a QueryBundle"
            )
        if not nodes:
            return []
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=self.model_name
            )
        )
        query = query_bundle.query_str
        texts = [item.node.get_content(metadata_mode=self.metadata_mode) for item in nodes]
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model_name,
                EventPayload.QUERY_STR: query,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            results = self._model.rerank(query, texts, k=min(self.top_n, len(nodes)), bsize=self.bsize)
            # Map by result_index, never by position: the order changed.
            reranked = [
                self._copy_with_score(nodes[int(r["result_index"])], float(r["score"]))
                for r in _common.as_single_query_results(results, query)
            ]
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked


class LateragkitNodeParser(TextSplitter):
    """The token-accurate lateragkit splitter as a LlamaIndex node parser / text splitter.

    Each node is cut into passages of at most ``max_tokens`` model tokens (overlapping by
    ``overlap_tokens``) that are exact slices of its text: ``start_char_idx``/``end_char_idx`` are
    the passage's offsets in the parent's text. Node ids are ``f"{parent_id}-{chunk_index}"``
    (unless an ``id_func`` is given); each passage has a SOURCE relationship to its parent and, when
    ``include_metadata``, a copy of its metadata.

    Build it from a model (``LateragkitNodeParser.from_model(RAG)``) or from any
    ``token_spans(text)`` callable plus ``max_tokens``.
    """

    max_tokens: int = Field(description="Most model tokens in one passage (specials excluded).")
    overlap_tokens: int = Field(description="Tokens shared by consecutive passages.")

    _splitter: Any = PrivateAttr()

    def __init__(
        self,
        token_spans: Any,
        max_tokens: int | None = None,
        overlap_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        max_tokens, overlap_tokens = _common.resolve_budget(token_spans, max_tokens, overlap_tokens)
        # pydantic: these are fields of this subclass, which its generated __init__ accepts
        super().__init__(max_tokens=max_tokens, overlap_tokens=overlap_tokens, **kwargs)  # type: ignore[call-arg]
        self._splitter = _common.build_token_splitter(token_spans, max_tokens, overlap_tokens)

    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        max_tokens: int | None = None,
        overlap_tokens: int | None = None,
        **kwargs: Any,
    ) -> LateragkitNodeParser:
        """Split with a ``RAGPretrainedModel``'s (or an encoder's) tokenizer and token budget."""
        return cls(model, max_tokens=max_tokens, overlap_tokens=overlap_tokens, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "LateragkitNodeParser"

    def split_text(self, text: str) -> list[str]:
        return [chunk.text for chunk in self._splitter.split(text)]

    def _parse_nodes(
        self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any
    ) -> list[BaseNode]:
        deterministic_ids = self.id_func is default_id_func
        out: list[BaseNode] = []
        for parent in get_tqdm_iterable(nodes, show_progress, "Splitting into passages"):
            text = parent.get_content(metadata_mode=MetadataMode.NONE)
            source = parent.as_related_node_info()
            for index, chunk in enumerate(self._splitter.split(text)):
                node_id = f"{parent.node_id}-{index}" if deterministic_ids else self.id_func(index, parent)
                out.append(
                    TextNode(
                        id_=node_id,
                        text=chunk.text,
                        start_char_idx=chunk.start,
                        end_char_idx=chunk.end,
                        metadata=dict(parent.metadata) if self.include_metadata else {},
                        excluded_llm_metadata_keys=list(parent.excluded_llm_metadata_keys),
                        excluded_embed_metadata_keys=list(parent.excluded_embed_metadata_keys),
                        metadata_separator=parent.metadata_separator,
                        metadata_template=parent.metadata_template,
                        text_template=getattr(parent, "text_template", _DEFAULT_TEXT_TEMPLATE),
                        relationships={NodeRelationship.SOURCE: source},
                    )
                )
        return out

    def _postprocess_parsed_nodes(self, nodes: list[BaseNode], parent_doc_map: dict) -> list[BaseNode]:
        # The base class re-derives offsets with str.find, which picks the wrong occurrence of
        # repeated text; the splitter's offsets are exact, so put them back.
        exact = [(getattr(n, "start_char_idx", None), getattr(n, "end_char_idx", None)) for n in nodes]
        nodes = super()._postprocess_parsed_nodes(nodes, parent_doc_map)
        for node, (start, end) in zip(nodes, exact, strict=True):
            if isinstance(node, TextNode) and start is not None:
                node.start_char_idx, node.end_char_idx = start, end
        return nodes
