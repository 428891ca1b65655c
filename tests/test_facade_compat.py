"""RAGatouille code runs unchanged, and the facade's newer entry points: keyword compatibility
(zero_index_ranks, force_fast, use_faiss, n_gpu, RAG.model, encode's positional order), bsize checks,
compact(), from_index(model=...), the model-width check, and search modes over the kept BM25 index."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from lateragkit import ModelMismatchError, RAGPretrainedModel
from lateragkit.collection import Collection

from .conftest import minilm_path

DOCS = [
    "Paris is the capital of France and its largest city.",
    "The Nile flows north through Egypt into the Mediterranean.",
    "ColBERT compares every query token with every document token.",
    "Quantum computers use qubits instead of classical bits.",
    "The Amazon river carries more water than any other river.",
]
IDS = ["paris", "nile", "colbert", "quantum", "amazon"]


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> RAGPretrainedModel:
    model = RAGPretrainedModel.from_pretrained(
        minilm_path(), index_root=tmp_path_factory.mktemp("compat"), verbose=0, device="cpu", n_gpu=0
    )
    model.index(DOCS, document_ids=IDS, document_metadatas=[{"kind": "place" if i != 2 else "tech"}
                                                           for i in range(5)], index_name="compat",
                use_faiss=True)
    return model


def test_ragatouille_keywords_are_accepted_and_honoured(rag, caplog):
    one = rag.search("Which river runs through Egypt?", k=3)
    zero = rag.search("Which river runs through Egypt?", k=3, zero_index_ranks=True)
    assert [r["rank"] for r in one] == [1, 2, 3]
    assert [r["rank"] for r in zero] == [0, 1, 2]
    assert [r["passage_id"] for r in zero] == [r["passage_id"] for r in one]
    fast = rag.search("Which river runs through Egypt?", k=3, force_fast=True)
    assert fast[0]["document_id"] == "nile"
    reranked = rag.rerank("Which river runs through Egypt?", DOCS, k=2, zero_index_ranks=True)
    assert [r["rank"] for r in reranked] == [0, 1] and reranked[0]["result_index"] == 1
    with caplog.at_level(logging.INFO, logger="lateragkit.pretrained"):
        rag.add_to_index(["The Danube flows through Vienna."], new_document_ids=["danube"], use_faiss=True)
    assert "use_faiss" in caplog.text
    assert rag.search("Danube Vienna", k=1)[0]["document_id"] == "danube"
    assert rag.model is rag.encoder


def test_encode_binds_metadata_second_and_keeps_ragatouille_order(rag):
    rag.clear_encoded_docs()
    rag.encode(DOCS[:2], [{"n": 0}, {"n": 1}])  # the README's order: documents, document_metadatas
    rows = rag.search_encoded_docs("capital of France", k=1)
    assert rows[0]["document_metadata"] == {"n": 0}
    rag.clear_encoded_docs()
    rag.encode(DOCS[:2], 16, [{"n": 2}, {"n": 3}])  # RAGatouille's positional order: documents, bsize, metas
    rows = rag.search_encoded_docs("capital of France", k=1)
    assert rows[0]["document_metadata"] == {"n": 2}
    rag.clear_encoded_docs()


@pytest.mark.parametrize("bsize,error", [(0, ValueError), (-5, ValueError), ("big", ValueError),
                                         (2.5, TypeError), (True, TypeError)])
def test_bad_bsize_is_rejected_like_encode(rag, bsize, error):
    with pytest.raises(error, match="bsize"):
        rag.index(DOCS, index_name="bsize_check", bsize=bsize)
    with pytest.raises(error, match="bsize"):
        rag.encode(DOCS, bsize=bsize)
    assert not Collection(rag.index_root / "bsize_check").exists()


def test_bsize_auto_is_accepted(rag):
    rag.index(DOCS[:3], document_ids=IDS[:3], index_name="bsize_auto", bsize="auto")
    assert rag.search("Egypt", index_name="bsize_auto", k=1)[0]["document_id"] == "nile"


def test_rerank_warns_when_a_document_is_cut(rag, caplog):
    long_doc = " ".join(["word"] * 2000)
    with caplog.at_level(logging.WARNING):
        rag.rerank("word", [long_doc, DOCS[0]], k=2)
    assert "cut" in caplog.text.lower() or "truncat" in caplog.text.lower()


def test_search_modes(rag):
    late = rag.search("river Egypt", index_name="compat", k=5)
    bm25 = rag.search("river Egypt", index_name="compat", k=5, mode="bm25")
    hybrid = rag.search("river Egypt", index_name="compat", k=5, mode="hybrid")
    # BM25 only returns passages containing a query term: "river" twice in the Amazon one, "egypt" in the Nile one
    assert [r["document_id"] for r in bm25] == ["amazon", "nile"]
    assert late[0]["document_id"] == "nile"
    assert {r["document_id"] for r in hybrid[:2]} == {"nile", "amazon"}
    for rows in (late, bm25, hybrid):
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        assert all(a["score"] >= b["score"] for a, b in zip(rows, rows[1:], strict=False))
    # alpha weighs late interaction: 1 ranks as late interaction alone, 0 as BM25 alone
    for fusion in ("rrf", "normalized"):
        only_late = rag.search("river Egypt", index_name="compat", k=5, mode="hybrid", alpha=1.0, fusion=fusion)
        only_bm25 = rag.search("river Egypt", index_name="compat", k=5, mode="hybrid", alpha=0.0, fusion=fusion)
        assert [r["passage_id"] for r in only_late] == [r["passage_id"] for r in late]
        assert [r["passage_id"] for r in only_bm25] == [r["passage_id"] for r in bm25]
    # filters apply inside every mode
    assert rag.search("river Egypt", index_name="compat", k=5, mode="bm25", filter={"kind": "tech"}) == []
    assert {r["document_id"] for r in rag.search("river", index_name="compat", k=5, mode="hybrid",
                                                doc_ids=["amazon"])} == {"amazon"}
    with pytest.raises(ValueError, match="mode"):
        rag.search("river", index_name="compat", mode="dense")
    with pytest.raises(ValueError, match="alpha"):
        rag.search("river", index_name="compat", mode="hybrid", alpha=2.0)
    with pytest.raises(ValueError, match="hybrid"):
        rag.search("river", index_name="compat", alpha=0.3)


def test_bm25_follows_deletes_and_upserts(rag):
    rag.index(DOCS, document_ids=IDS, index_name="bm25_updates")
    assert rag.search("qubits", index_name="bm25_updates", k=3, mode="bm25")[0]["document_id"] == "quantum"
    rag.delete_from_index(["quantum"], index_name="bm25_updates")
    assert rag.search("qubits", index_name="bm25_updates", k=3, mode="bm25") == []
    rag.add_to_index(["Qubits hold superpositions."], new_document_ids=["paris"], index_name="bm25_updates")
    rows = rag.search("qubits", index_name="bm25_updates", k=3, mode="bm25")
    assert [(r["document_id"], r["content"]) for r in rows] == [("paris", "Qubits hold superpositions.")]
    assert rag.search("capital France", index_name="bm25_updates", k=5, mode="bm25") == []


def test_compact_keeps_ids_and_results(rag):
    rag.index(DOCS, document_ids=IDS, index_name="compacting")
    for i in range(3):
        rag.add_to_index([f"Extra document {i} about rivers."], new_document_ids=[f"extra{i}"],
                         index_name="compacting")
    rag.delete_from_index(["paris", "extra1"], index_name="compacting")
    before = rag.search(["river", "token"], index_name="compacting", k=20)
    info = Collection(rag.index_root / "compacting").info()
    rag.compact("compacting")
    after = rag.search(["river", "token"], index_name="compacting", k=20)
    assert [[(r["passage_id"], r["content"], round(r["score"], 4)) for r in rows] for rows in after] == \
        [[(r["passage_id"], r["content"], round(r["score"], 4)) for r in rows] for rows in before]
    compacted = Collection(rag.index_root / "compacting").info()
    assert compacted["segments"] == 1 and compacted["store_segments"] == 1
    assert compacted["passages"] == info["passages"] == len(DOCS) + 3 - 2
    assert compacted["backend"]["deleted"] == 0


def test_from_index_with_moved_model_and_width_check(rag, tmp_path):
    path = Path(rag.index(DOCS, document_ids=IDS, index_name="moved"))
    # the index records the model folder; a copy elsewhere opens with model=
    copy = tmp_path / "model_copy"
    shutil.copytree(minilm_path(), copy)
    reopened = RAGPretrainedModel.from_index(path, model=copy, device="cpu", verbose=0)
    assert reopened.search("Egypt river", k=1)[0]["document_id"] == "nile"
    # a model of another width cannot search it: a clear error naming what to do
    narrow = RAGPretrainedModel.from_pretrained(minilm_path(), dim=128, index_root=path.parent, verbose=0,
                                                device="cpu")
    with pytest.raises(ModelMismatchError, match="from_index"):
        narrow.search("Egypt", index_name="moved")
    with pytest.raises(ModelMismatchError, match="384"):
        narrow.add_to_index(["x"], index_name="moved")
    assert reopened.search("Egypt river", k=1)[0]["document_id"] == "nile"


def test_from_index_names_the_override_when_the_model_is_gone(tmp_path):
    model_copy = tmp_path / "model"
    shutil.copytree(minilm_path(), model_copy)
    rag = RAGPretrainedModel.from_pretrained(str(model_copy), index_root=tmp_path / "idx", verbose=0, device="cpu")
    path = rag.index(DOCS[:2], document_ids=IDS[:2], index_name="gone")
    shutil.rmtree(model_copy)
    with pytest.raises(Exception, match="model="):
        RAGPretrainedModel.from_index(path, device="cpu", verbose=0)


def test_framework_retrievers_take_the_search_mode(rag):
    pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
    pytest.importorskip("llama_index.core", reason="the llamaindex extra is not installed")
    want = [r["passage_id"] for r in rag.search("river Egypt", index_name="compat", k=2, mode="bm25")]
    docs = rag.as_langchain_retriever(k=2, mode="bm25", index_name="compat").invoke("river Egypt")
    assert [d.metadata["passage_id"] for d in docs] == want
    nodes = rag.as_llama_index_retriever(similarity_top_k=2, mode="bm25", index_name="compat").retrieve("river Egypt")
    assert [n.node.metadata["passage_id"] for n in nodes] == want


def _adi_documents() -> tuple[list[str], list[str]]:
    from lateragkit.evaluation import corpus_text, load_beir

    from .conftest import data_dir

    corpus = load_beir(data_dir("adi"), split="test")[0]
    ids = sorted(corpus, key=int)
    return [corpus_text(corpus[i]) for i in ids], ids


def test_compact_retrain_equals_a_fresh_build_of_the_same_passages(tmp_path):
    """An index grown by adds keeps the codec of its first build; compact(retrain=True) re-encodes the live
    passages and trains a new one: it then ranks exactly as a fresh build of those passages, ids and
    metadata kept."""
    texts, ids = _adi_documents()
    metas = [{"n": int(i)} for i in ids]
    rag = RAGPretrainedModel.from_pretrained(minilm_path(), index_root=tmp_path, verbose=0, device="cpu")
    base = 50
    rag.index(texts[:base], document_ids=ids[:base], document_metadatas=metas[:base], index_name="grown",
              index_type="plaid")
    for a in range(base, len(texts), 8):
        rag.add_to_index(texts[a : a + 8], new_document_ids=ids[a : a + 8], new_document_metadatas=metas[a : a + 8],
                         index_name="grown")
    rag.delete_from_index([ids[3], ids[60]], index_name="grown")
    before = Collection(tmp_path / "grown").info()
    assert before["segments"] > 1
    rag.compact("grown", retrain=True)
    keep = [i for i in range(len(texts)) if i not in (3, 60)]
    rag.index([texts[i] for i in keep], document_ids=[ids[i] for i in keep],
              document_metadatas=[metas[i] for i in keep], index_name="fresh", index_type="plaid")
    queries = ["computer based information retrieval", "indexing of documents by keywords", "library automation"]

    def rows(name: str) -> list[list[tuple[str, str, dict, float]]]:
        return [[(r["passage_id"], r["document_id"], r["document_metadata"], round(r["score"], 4)) for r in hits]
                for hits in rag.search(queries, index_name=name, k=15)]

    assert rows("grown") == rows("fresh")
    grown, fresh = Collection(tmp_path / "grown").info(), Collection(tmp_path / "fresh").info()
    assert grown["segments"] == 1 and grown["passages"] == fresh["passages"] == before["passages"]
    assert grown["backend"]["num_centroids"] == fresh["backend"]["num_centroids"]
    assert grown["backend"]["deleted"] == 0
    # a later add lands on the retrained index as on any other
    rag.add_to_index(["Automatic abstracting of technical papers."], new_document_ids=["new"], index_name="grown")
    assert rag.search("automatic abstracting", index_name="grown", k=1)[0]["document_id"] == "new"


def test_compact_retrain_refuses_another_model(rag, monkeypatch):
    rag.index(DOCS, document_ids=IDS, index_name="retrain_other")
    settings = dict(rag.encoder.settings(), query_maxlen=7)
    monkeypatch.setattr(rag.encoder, "settings", lambda: settings)
    with pytest.raises(ModelMismatchError, match="from_index"):
        rag.compact("retrain_other", retrain=True)
    with pytest.raises(TypeError, match="retrain"):
        rag.compact("retrain_other", retrain="yes")
