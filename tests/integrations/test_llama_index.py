"""LlamaIndex adapters on a real MiniLM index of ADI: retriever, reranker, node parser, query engines."""
from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

import pytest

pytest.importorskip("llama_index.core", reason="LlamaIndex extra not installed: pip install 'lateragkit[llamaindex]'")

from llama_index.core import Document, Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler  # noqa: E402
from llama_index.core.embeddings import MockEmbedding  # noqa: E402
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeRelationship, NodeWithScore, TextNode  # noqa: E402

from lateragkit.integrations.llama_index import (  # noqa: E402
    LateragkitLlamaRetriever,
    LateragkitNodeParser,
    LateragkitRerank,
)
from lateragkit.splitting import TokenSplitter  # noqa: E402

QUERY = "How can computers be used to index and retrieve documents automatically?"
BOOKKEEPING = ("document_id", "passage_id", "score", "rank", "retrieval_score")


@pytest.fixture
def mock_settings() -> Any:
    """Global LlamaIndex Settings with a mock LLM and embedder, restored afterwards."""
    saved = (Settings._llm, Settings._embed_model)
    Settings.llm = MockLLM()
    Settings.embed_model = MockEmbedding(embed_dim=8)
    try:
        yield Settings
    finally:
        Settings._llm, Settings._embed_model = saved


# ------------------------------------------------------------------------------------------------
# retriever
# ------------------------------------------------------------------------------------------------
def test_nodes_mirror_search_results(adi_rag: Any, adi: Any) -> None:
    expected = adi_rag.search(QUERY, index_name="adi", k=6)
    retriever = adi_rag.as_llama_index_retriever(similarity_top_k=6, index_name="adi")
    assert isinstance(retriever, LateragkitLlamaRetriever)
    results = retriever.retrieve(QUERY)
    assert len(results) == 6
    for rank, (item, hit) in enumerate(zip(results, expected, strict=True), start=1):
        node = item.node
        assert isinstance(node, TextNode)
        assert node.node_id == hit["passage_id"]
        assert node.text == hit["content"]
        assert item.score == pytest.approx(hit["score"])
        assert node.relationships[NodeRelationship.SOURCE].node_id == hit["document_id"]
        assert node.ref_doc_id == hit["document_id"]
        assert node.metadata["rank"] == rank and node.metadata["passage_id"] == hit["passage_id"]
        assert node.metadata["title"] == adi.titles[adi.ids.index(hit["document_id"])]
        original = adi.by_id[hit["document_id"]]
        assert original[node.start_char_idx : node.end_char_idx] == node.text
        # the bookkeeping keys never reach the LLM or the embedder; the document's metadata does
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            content = node.get_content(metadata_mode=mode)
            assert f"title: {node.metadata['title']}" in content
            assert not any(f"{key}:" in content for key in BOOKKEEPING)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)


def test_retriever_search_kwargs_and_errors(adi_rag: Any) -> None:
    retriever = adi_rag.as_llama_index_retriever(similarity_top_k=50, index_name="adi", doc_ids=["17", "46"])
    results = retriever.retrieve(QUERY)
    assert results and {r.node.ref_doc_id for r in results} <= {"17", "46"}
    with pytest.raises(ValueError, match="similarity_top_k"):
        LateragkitLlamaRetriever(adi_rag, similarity_top_k=0)
    with pytest.raises(ValueError, match="similarity_top_k"):
        LateragkitLlamaRetriever(adi_rag, k=3)


def test_aretrieve_matches_and_does_not_block(adi_rag: Any, counting: Any) -> None:
    retriever = LateragkitLlamaRetriever(adi_rag, similarity_top_k=4, index_name="adi")
    sync = [r.node.node_id for r in retriever.retrieve(QUERY)]
    assert [r.node.node_id for r in asyncio.run(retriever.aretrieve(QUERY))] == sync

    counting.gate = threading.Event()
    gated = LateragkitLlamaRetriever(counting, similarity_top_k=4, index_name="adi")

    async def release_when_searching() -> None:
        while "search" not in counting.calls:
            await asyncio.sleep(0.005)
        counting.gate.set()

    async def run() -> list[NodeWithScore]:
        results, _ = await asyncio.gather(gated.aretrieve(QUERY), release_when_searching())
        return results

    assert [r.node.node_id for r in asyncio.run(run())] == sync


# ------------------------------------------------------------------------------------------------
# reranker (node postprocessor)
# ------------------------------------------------------------------------------------------------
def test_rerank_scores_are_maxsim_and_nodes_are_copies(adi_rag: Any) -> None:
    nodes = LateragkitLlamaRetriever(adi_rag, similarity_top_k=8, index_name="adi").retrieve(QUERY)
    before = copy.deepcopy(nodes)
    query = "automatic abstracting of documents"
    rerank = adi_rag.as_llama_index_postprocessor(top_n=4, keep_retrieval_score=True)
    assert isinstance(rerank, LateragkitRerank)
    out = rerank.postprocess_nodes(nodes, query_str=query)
    expected = adi_rag.rerank(query, [n.node.text for n in nodes], k=4)
    assert len(out) == 4
    for item, hit in zip(out, expected, strict=True):
        source = nodes[hit["result_index"]]
        assert item.node.node_id == source.node.node_id
        assert item.score == pytest.approx(hit["score"])
        assert item.node.metadata["retrieval_score"] == pytest.approx(source.score)
        assert "retrieval_score" in item.node.excluded_llm_metadata_keys
        assert "retrieval_score" not in item.node.get_content(metadata_mode=MetadataMode.LLM)
        assert item.node is not source.node
    assert [n.model_dump() for n in nodes] == [n.model_dump() for n in before]
    assert asyncio.run(rerank.apostprocess_nodes(nodes, query_str=query))[0].node.node_id == out[0].node.node_id


def test_rerank_scores_text_without_metadata(adi_rag: Any, adi: Any) -> None:
    """Nodes from any source: the model scores the bare text, not "key: value" metadata lines."""
    texts = [adi.titles[adi.ids.index(i)] for i in ("1", "2", "3", "4", "5")]
    nodes = [NodeWithScore(node=TextNode(text=t, metadata={"source": "adi", "i": i}), score=None)
             for i, t in enumerate(texts)]
    out = LateragkitRerank(adi_rag, top_n=5).postprocess_nodes(nodes, query_str=QUERY)
    expected = adi_rag.rerank(QUERY, texts, k=5)
    assert [item.node.text for item in out] == [hit["content"] for hit in expected]
    assert [item.score for item in out] == pytest.approx([hit["score"] for hit in expected])
    # without keep_retrieval_score nothing is added
    assert all(set(item.node.metadata) == {"source", "i"} for item in out)
    with_meta = LateragkitRerank(adi_rag, top_n=5, metadata_mode=MetadataMode.EMBED).postprocess_nodes(
        nodes, query_str=QUERY)
    assert [i.score for i in with_meta] != pytest.approx([i.score for i in out])


def test_rerank_bad_and_small_inputs(adi_rag: Any, counting: Any) -> None:
    nodes = LateragkitLlamaRetriever(adi_rag, similarity_top_k=3, index_name="adi").retrieve(QUERY)
    with pytest.raises(ValueError, match="query"):
        LateragkitRerank(adi_rag).postprocess_nodes(nodes)
    assert len(LateragkitRerank(adi_rag, top_n=10).postprocess_nodes(nodes, query_str=QUERY)) == 3
    counted = LateragkitRerank(counting, top_n=2)
    assert counted.postprocess_nodes([], query_str=QUERY) == []
    assert asyncio.run(counted.apostprocess_nodes([], query_str=QUERY)) == []
    assert counting.calls == []
    with pytest.raises(ValueError, match="top_n"):
        LateragkitRerank(adi_rag, top_n=0)


def test_rerank_emits_reranking_event(adi_rag: Any) -> None:
    debug = LlamaDebugHandler()
    rerank = LateragkitRerank(adi_rag, top_n=2, callback_manager=CallbackManager([debug]))
    nodes = LateragkitLlamaRetriever(adi_rag, similarity_top_k=5, index_name="adi").retrieve(QUERY)
    rerank.postprocess_nodes(nodes, query_str=QUERY)
    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1
    start, end = pairs[0]
    assert start.payload["model_name"] == adi_rag.model_name and start.payload["top_k"] == 2
    assert len(end.payload["nodes"]) == 2


# ------------------------------------------------------------------------------------------------
# query engines (mock LLM: it echoes its prompt, so the response shows what the LLM was given)
# ------------------------------------------------------------------------------------------------
def test_retriever_query_engine_with_rerank(adi_rag: Any, mock_settings: Any) -> None:
    retriever = adi_rag.as_llama_index_retriever(similarity_top_k=6, index_name="adi")
    rerank = adi_rag.as_llama_index_postprocessor(top_n=3)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(), node_postprocessors=[rerank])
    response = engine.query(QUERY)
    expected = rerank.postprocess_nodes(retriever.retrieve(QUERY), query_str=QUERY)
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in expected]
    prompt = str(response)
    for item in expected:
        assert item.node.text in prompt
        assert f"title: {item.node.metadata['title']}" in prompt
    assert not any(f"{key}:" in prompt for key in BOOKKEEPING)
    aresponse = asyncio.run(engine.aquery(QUERY))
    assert [n.node.node_id for n in aresponse.source_nodes] == [n.node.node_id for n in expected]


def test_vector_index_query_engine_with_lateragkit_rerank(adi_rag: Any, adi: Any, mock_settings: Any) -> None:
    docs = [Document(text=adi.by_id[i], id_=i) for i in adi.ids[:6]]
    index = VectorStoreIndex.from_documents(docs)  # MockEmbedding from Settings
    rerank = adi_rag.as_llama_index_postprocessor(top_n=2)
    engine = index.as_query_engine(similarity_top_k=6, node_postprocessors=[rerank])
    response = engine.query(QUERY)
    candidates = index.as_retriever(similarity_top_k=6).retrieve(QUERY)
    expected = adi_rag.rerank(QUERY, [c.node.get_content(metadata_mode=MetadataMode.NONE) for c in candidates], k=2)
    assert [n.node.text for n in response.source_nodes] == [hit["content"] for hit in expected]
    assert [n.score for n in response.source_nodes] == pytest.approx([hit["score"] for hit in expected])


def test_settings_restored_after_mock_settings() -> None:
    # runs after the query-engine tests (file order): the mocks must not leak into other tests
    assert not isinstance(Settings._llm, MockLLM)
    assert not isinstance(Settings._embed_model, MockEmbedding)


# ------------------------------------------------------------------------------------------------
# node parser
# ------------------------------------------------------------------------------------------------
def test_node_parser_offsets_budget_relationships(adi_rag: Any, adi: Any) -> None:
    spans = adi_rag.encoder.token_spans
    parser = LateragkitNodeParser.from_model(adi_rag, max_tokens=24, overlap_tokens=4)
    reference = TokenSplitter(spans, 24, 4)
    docs = [Document(text=adi.by_id[i], id_=f"adi-{i}", metadata={"n": int(i)}) for i in ("1", "7")]
    nodes = parser.get_nodes_from_documents(docs)
    for doc in docs:
        mine = [n for n in nodes if n.ref_doc_id == doc.doc_id]
        expected = reference.split(doc.text)
        assert len(mine) == len(expected) > 1
        for index, (node, ref) in enumerate(zip(mine, expected, strict=True)):
            assert node.node_id == f"{doc.doc_id}-{index}"
            assert (node.text, node.start_char_idx, node.end_char_idx) == (ref.text, ref.start, ref.end)
            assert doc.text[node.start_char_idx : node.end_char_idx] == node.text
            assert len(spans(node.text)) <= 24
            assert node.metadata == {"n": doc.metadata["n"]} and node.metadata is not doc.metadata
            if index > 0:
                assert node.relationships[NodeRelationship.PREVIOUS].node_id == mine[index - 1].node_id
    assert parser.split_text(adi.by_id["1"]) == [c.text for c in reference.split(adi.by_id["1"])]


def test_node_parser_keeps_exact_offsets_in_repetitive_text(adi_rag: Any) -> None:
    # Every chunk of a periodic text also occurs earlier; str.find-based offsets would be wrong.
    text = "The index stores token vectors. " * 30
    parser = LateragkitNodeParser(adi_rag.encoder.token_spans, max_tokens=16, overlap_tokens=3)
    nodes = parser.get_nodes_from_documents([Document(text=text, id_="rep")])
    expected = TokenSplitter(adi_rag.encoder.token_spans, 16, 3).split(text)
    assert [(n.start_char_idx, n.end_char_idx) for n in nodes] == [(c.start, c.end) for c in expected]
    assert len({n.text for n in nodes}) < len(nodes)  # the repetition is real


def test_node_parser_in_ingestion(adi_rag: Any, adi: Any, mock_settings: Any) -> None:
    parser = LateragkitNodeParser.from_model(adi_rag, max_tokens=32)
    docs = [Document(text=adi.by_id[i], id_=i) for i in adi.ids[:5]]
    index = VectorStoreIndex.from_documents(docs, transformations=[parser])
    stored = list(index.docstore.docs.values())
    assert len(stored) == len(parser.get_nodes_from_documents(docs))
    assert all(docs[0].text[n.start_char_idx : n.end_char_idx] == n.text for n in stored if n.ref_doc_id == "1")
    with pytest.raises(TypeError, match="max_tokens is required"):
        LateragkitNodeParser(adi_rag.encoder.token_spans)
