"""LangChain adapters on a real MiniLM index of ADI: retriever, compressor, splitter, chains."""
from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

pytest.importorskip("langchain_core", reason="LangChain extra not installed: pip install 'lateragkit[langchain]'")

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.language_models import FakeListChatModel  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda, RunnablePassthrough  # noqa: E402
from langchain_core.tools import create_retriever_tool  # noqa: E402

from lateragkit.integrations.langchain import (  # noqa: E402
    LateragkitCompressor,
    LateragkitRetriever,
    LateragkitTextSplitter,
)
from lateragkit.splitting import TokenSplitter  # noqa: E402

QUERY = "How can computers be used to index and retrieve documents automatically?"
KEYS = {"document_id", "passage_id", "score", "rank"}


# ------------------------------------------------------------------------------------------------
# standard LangChain retriever suite (langchain-tests)
# ------------------------------------------------------------------------------------------------
try:
    from langchain_tests.integration_tests import RetrieversIntegrationTests
except ImportError:  # pragma: no cover - only without the test extra

    def test_langchain_standard_suite() -> None:
        pytest.skip("langchain-tests not installed: pip install 'lateragkit[test]'")

else:

    class TestLateragkitRetrieverStandard(RetrieversIntegrationTests):
        """LangChain's own retriever contract, run against the real ADI index."""

        @pytest.fixture(autouse=True)
        def _bind_model(self, adi_rag: Any) -> None:
            self._model = adi_rag

        @property
        def retriever_constructor(self) -> type[LateragkitRetriever]:
            return LateragkitRetriever

        @property
        def retriever_constructor_params(self) -> dict[str, Any]:
            return {"model": self._model, "index_name": "adi"}

        @property
        def retriever_query_example(self) -> str:
            return QUERY


# ------------------------------------------------------------------------------------------------
# retriever
# ------------------------------------------------------------------------------------------------
def test_documents_mirror_search_results(adi_rag: Any, adi: Any) -> None:
    expected = adi_rag.search(QUERY, index_name="adi", k=8)
    docs = adi_rag.as_langchain_retriever(k=8, index_name="adi").invoke(QUERY)
    assert len(docs) == len(expected) == 8
    for rank, (doc, hit) in enumerate(zip(docs, expected, strict=True), start=1):
        assert doc.id == hit["passage_id"]
        assert doc.page_content == hit["content"]
        meta = doc.metadata
        assert meta["document_id"] == hit["document_id"]
        assert meta["passage_id"] == hit["passage_id"]
        assert meta["score"] == pytest.approx(hit["score"])
        assert meta["rank"] == rank
        # the document's own metadata travels with every passage
        assert meta["title"] == adi.titles[adi.ids.index(hit["document_id"])]
        assert meta["n"] == int(hit["document_id"])
        # offsets point into the original document text
        original = adi.by_id[hit["document_id"]]
        assert original[meta["start_index"] : meta["end_index"]] == doc.page_content
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    # several passages per document exist in this index (max_document_length=64)
    assert any(not d.id.endswith("-0") for d in adi_rag.as_langchain_retriever(k=40, index_name="adi").invoke(QUERY))


def test_exact_sentence_finds_its_document(adi_rag: Any, adi: Any) -> None:
    doc_id = "42"
    sentence = adi.by_id[doc_id].split(".")[0]
    docs = LateragkitRetriever(model=adi_rag, k=3, index_name="adi").invoke(sentence)
    assert docs[0].metadata["document_id"] == doc_id
    assert sentence.strip() in docs[0].page_content


def test_k_from_constructor_and_invoke(adi_rag: Any) -> None:
    retriever = adi_rag.as_langchain_retriever(k=4, index_name="adi")
    assert isinstance(retriever, LateragkitRetriever)
    assert len(retriever.invoke(QUERY)) == 4
    assert len(retriever.invoke(QUERY, k=2)) == 2
    top2 = retriever.invoke(QUERY, k=2)
    assert [d.id for d in top2] == [d.id for d in retriever.invoke(QUERY)][:2]
    # k larger than the collection returns every passage, sorted
    everything = retriever.invoke(QUERY, k=100_000)
    assert len(everything) == len({d.id for d in everything}) > 82
    with pytest.raises(ValueError, match="k"):
        retriever.invoke(QUERY, k=0)
    with pytest.raises(ValueError, match="k"):
        LateragkitRetriever(model=adi_rag, k=0)


def test_search_kwargs_reach_search(adi_rag: Any) -> None:
    only = ["3", "17", "46"]
    retriever = adi_rag.as_langchain_retriever(k=50, index_name="adi", doc_ids=only)
    docs = retriever.invoke(QUERY)
    assert docs and {d.metadata["document_id"] for d in docs} <= set(only)
    # per-call keywords override the constructor's
    docs = retriever.invoke(QUERY, doc_ids=["17"])
    assert docs and {d.metadata["document_id"] for d in docs} == {"17"}
    # k given inside search_kwargs (RAGatouille style) is the default k
    assert LateragkitRetriever(model=adi_rag, search_kwargs={"k": 2, "index_name": "adi"}).k == 2
    with pytest.raises(ValueError, match="k given twice"):
        LateragkitRetriever(model=adi_rag, k=3, search_kwargs={"k": 2})


def test_batch_and_async_match_invoke(adi_rag: Any, adi: Any) -> None:
    queries = [adi.queries[q] for q in ("1", "2", "3", "4", "5", "6")]
    retriever = adi_rag.as_langchain_retriever(k=5, index_name="adi")
    expected = [[d.id for d in retriever.invoke(q)] for q in queries]
    batched = retriever.batch(queries, config={"max_concurrency": 3})
    assert [[d.id for d in docs] for docs in batched] == expected

    async def run() -> tuple[list[list[Document]], list[list[Document]]]:
        concurrent = await asyncio.gather(*(retriever.ainvoke(q) for q in queries))
        abatched = await retriever.abatch(queries)
        return list(concurrent), abatched

    concurrent, abatched = asyncio.run(run())
    assert [[d.id for d in docs] for docs in concurrent] == expected
    assert [[d.id for d in docs] for docs in abatched] == expected
    one = asyncio.run(retriever.ainvoke(queries[0], k=2))
    assert [d.id for d in one] == expected[0][:2]


def test_ainvoke_does_not_block_the_event_loop(counting: Any) -> None:
    import threading

    counting.gate = threading.Event()
    retriever = LateragkitRetriever(model=counting, k=3, index_name="adi")

    async def release_when_searching() -> None:
        # Runs only if the loop is free while the search waits in its worker thread.
        while "search" not in counting.calls:
            await asyncio.sleep(0.005)
        counting.gate.set()

    async def run() -> list[Document]:
        docs, _ = await asyncio.gather(retriever.ainvoke(QUERY), release_when_searching())
        return docs

    docs = asyncio.run(run())
    assert len(docs) == 3 and counting.calls == ["search"]


def test_callbacks_and_tracing_params(adi_rag: Any) -> None:
    class Recorder(BaseCallbackHandler):
        def __init__(self) -> None:
            self.starts: list[dict[str, Any]] = []
            self.ends: list[list[Document]] = []

        def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
            self.starts.append({"query": query, "tags": kwargs.get("tags"), "metadata": kwargs.get("metadata")})

        def on_retriever_end(self, documents: Any, **kwargs: Any) -> None:
            self.ends.append(list(documents))

    recorder = Recorder()
    retriever = LateragkitRetriever(model=adi_rag, k=2, index_name="adi")
    docs = retriever.invoke(QUERY, config={"callbacks": [recorder], "tags": ["t1"], "metadata": {"run": 7}})
    assert len(recorder.starts) == 1 and recorder.starts[0]["query"] == QUERY
    assert "t1" in recorder.starts[0]["tags"]
    metadata = recorder.starts[0]["metadata"]
    assert metadata["run"] == 7
    assert metadata["ls_embedding_model"] == adi_rag.model_name
    assert metadata["ls_vector_store_provider"] == "lateragkit"
    assert [d.id for d in recorder.ends[0]] == [d.id for d in docs]


def test_retriever_tool(adi_rag: Any) -> None:
    retriever = adi_rag.as_langchain_retriever(k=2, index_name="adi")
    tool = create_retriever_tool(retriever, "search_adi", "Search the ADI abstracts.")
    text = tool.invoke({"query": QUERY})
    for doc in retriever.invoke(QUERY):
        assert doc.page_content in text


def test_rag_chain_with_fake_llm(adi_rag: Any) -> None:
    retriever = adi_rag.as_langchain_retriever(k=3, index_name="adi")
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context.\n\n{context}"), ("human", "{question}")]
    )
    seen: list[str] = []

    def record(value: Any) -> Any:
        seen.append(value.to_string())
        return value

    llm = FakeListChatModel(responses=["An answer."])
    chain = (
        {"context": retriever | RunnableLambda(lambda docs: "\n\n".join(d.page_content for d in docs)),
         "question": RunnablePassthrough()}
        | prompt
        | RunnableLambda(record)
        | llm
        | StrOutputParser()
    )
    assert chain.invoke(QUERY) == "An answer."
    top = retriever.invoke(QUERY)
    assert all(d.page_content in seen[0] for d in top)


# ------------------------------------------------------------------------------------------------
# compressor (reranker)
# ------------------------------------------------------------------------------------------------
def _candidates(adi_rag: Any, k: int = 8) -> list[Document]:
    return adi_rag.as_langchain_retriever(k=k, index_name="adi").invoke(QUERY)


def test_compressor_reranks_with_maxsim_and_copies(adi_rag: Any) -> None:
    docs = _candidates(adi_rag)
    before = copy.deepcopy(docs)
    query = "automatic abstracting of documents"
    compressor = adi_rag.as_langchain_document_compressor(k=4)
    assert isinstance(compressor, LateragkitCompressor) and compressor.top_n == 4
    out = compressor.compress_documents(docs, query)
    expected = adi_rag.rerank(query, [d.page_content for d in docs], k=4)
    assert len(out) == 4
    for doc, hit in zip(out, expected, strict=True):
        source = docs[hit["result_index"]]
        assert doc.page_content == source.page_content == hit["content"]
        assert doc.id == source.id
        assert doc.metadata["relevance_score"] == pytest.approx(hit["score"])
        assert {k: v for k, v in doc.metadata.items() if k != "relevance_score"} == source.metadata
        assert doc is not source and doc.metadata is not source.metadata
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True)
    # the input is untouched
    assert docs == before
    assert all("relevance_score" not in d.metadata for d in docs)


def test_compressor_top_n_alias_and_small_inputs(adi_rag: Any, counting: Any) -> None:
    docs = _candidates(adi_rag, k=3)
    assert LateragkitCompressor(model=adi_rag, top_n=2).k == 2
    assert len(adi_rag.as_langchain_document_compressor(top_n=2).compress_documents(docs, QUERY)) == 2
    assert len(adi_rag.as_langchain_document_compressor(2).compress_documents(docs, QUERY)) == 2
    # fewer documents than k: all of them, sorted
    out = LateragkitCompressor(model=adi_rag, k=10).compress_documents(docs, QUERY)
    assert sorted(d.id for d in out) == sorted(d.id for d in docs)
    # empty input: empty output, and the model is not called
    compressor = LateragkitCompressor(model=counting, k=5)
    assert compressor.compress_documents([], QUERY) == []
    assert asyncio.run(compressor.acompress_documents([], QUERY)) == []
    assert counting.calls == []
    with pytest.raises(ValueError, match="disagree"):
        LateragkitCompressor(model=adi_rag, k=3, top_n=4)
    with pytest.raises(ValueError, match="k"):
        LateragkitCompressor(model=adi_rag, k=0)
    with pytest.raises(ValueError):
        LateragkitCompressor(model=adi_rag, not_a_field=1)


def test_compressor_score_threshold(adi_rag: Any) -> None:
    docs = _candidates(adi_rag)
    scores = sorted((d.metadata["relevance_score"] for d in
                     LateragkitCompressor(model=adi_rag, k=8).compress_documents(docs, QUERY)), reverse=True)
    cut = scores[4]
    kept = LateragkitCompressor(model=adi_rag, k=8, score_threshold=cut).compress_documents(docs, QUERY)
    assert [d.metadata["relevance_score"] for d in kept] == pytest.approx([s for s in scores if s >= cut])


def test_contextual_compression_retriever(adi_rag: Any) -> None:
    ccr_module = pytest.importorskip(
        "langchain_classic.retrievers", reason="langchain-classic not installed (ContextualCompressionRetriever)"
    )
    base = adi_rag.as_langchain_retriever(k=6, index_name="adi")
    compressor = adi_rag.as_langchain_document_compressor(k=3)
    ccr = ccr_module.ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    query = "automatic abstracting of documents"
    out = ccr.invoke(query)
    expected = compressor.compress_documents(base.invoke(query), query)
    assert [d.id for d in out] == [d.id for d in expected] and len(out) == 3
    assert asyncio.run(ccr.ainvoke(query)) == out
    # invoke(k=...) reaches the base retriever through the compression retriever
    assert len(ccr.invoke(query, k=2)) == 2


def test_manual_compression_chain_sync_and_async(adi_rag: Any) -> None:
    """The same pipeline without langchain-classic: retrieve, then rerank, as LCEL."""
    base = adi_rag.as_langchain_retriever(k=6, index_name="adi")
    compressor = adi_rag.as_langchain_document_compressor(k=3)

    async def arerank(x: dict[str, Any]) -> Any:
        return await compressor.acompress_documents(x["docs"], x["query"])

    chain = {"docs": base, "query": RunnablePassthrough()} | RunnableLambda(
        lambda x: compressor.compress_documents(x["docs"], x["query"]), afunc=arerank
    )
    query = "automatic abstracting of documents"
    out = chain.invoke(query)
    assert [d.id for d in out] == [d.id for d in compressor.compress_documents(base.invoke(query), query)]
    assert asyncio.run(chain.ainvoke(query)) == out


# ------------------------------------------------------------------------------------------------
# text splitter
# ------------------------------------------------------------------------------------------------
def test_text_splitter_offsets_budget_and_metadata(adi_rag: Any, adi: Any) -> None:
    spans = adi_rag.encoder.token_spans
    splitter = LateragkitTextSplitter.from_model(adi_rag, max_tokens=24, overlap_tokens=4)
    reference = TokenSplitter(spans, 24, 4)
    sources = [Document(id=i, page_content=adi.by_id[i], metadata={"tags": ["adi"], "id": i})
               for i in ("1", "7", "42")]
    chunks = splitter.split_documents(sources)
    by_doc: dict[str, list[Document]] = {}
    for chunk in chunks:
        by_doc.setdefault(chunk.metadata["id"], []).append(chunk)
    for source in sources:
        parts = by_doc[source.id]
        expected = reference.split(source.page_content)
        assert len(parts) == len(expected) > 1
        for index, (part, ref) in enumerate(zip(parts, expected, strict=True)):
            assert part.id == f"{source.id}-{index}"
            assert (part.page_content, part.metadata["start_index"], part.metadata["end_index"]) == (
                ref.text, ref.start, ref.end)
            assert source.page_content[ref.start : ref.end] == part.page_content
            assert len(spans(part.page_content)) <= 24
            # metadata copied per chunk, not shared with the source
            assert part.metadata is not source.metadata and part.metadata["tags"] == ["adi"]
    assert all("start_index" not in s.metadata for s in sources)
    assert splitter.split_text(adi.by_id["1"]) == [c.text for c in reference.split(adi.by_id["1"])]
    assert splitter.transform_documents(sources) == chunks


def test_text_splitter_from_callable_and_errors(adi_rag: Any, adi: Any) -> None:
    spans = adi_rag.encoder.token_spans
    splitter = LateragkitTextSplitter(spans, max_tokens=32)
    assert splitter.overlap_tokens == 4  # default: an eighth of the budget
    docs = splitter.create_documents([adi.by_id["3"], adi.by_id["4"]], metadatas=[{"d": 3}, {"d": 4}])
    assert {d.metadata["d"] for d in docs} == {3, 4} and all(d.id is None for d in docs)
    assert all(len(spans(d.page_content)) <= 32 for d in docs)
    default = LateragkitTextSplitter.from_model(adi_rag)
    assert default.max_tokens == adi_rag.encoder.doc_maxlen - adi_rag.encoder.num_special_doc_tokens
    with pytest.raises(TypeError, match="max_tokens is required"):
        LateragkitTextSplitter(spans)
    with pytest.raises(ValueError, match="overlap_tokens"):
        LateragkitTextSplitter(spans, max_tokens=8, overlap_tokens=8)
    with pytest.raises(ValueError, match="metadatas"):
        splitter.create_documents(["a b c"], metadatas=[{}, {}])
    with pytest.raises(TypeError, match="token_spans"):
        LateragkitTextSplitter(42, max_tokens=8)
