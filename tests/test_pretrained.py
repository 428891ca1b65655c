"""End-to-end tests of the RAGPretrainedModel facade on real data (ADI) with the MiniLM encoder."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from lateragkit import RAGPretrainedModel
from lateragkit.exceptions import IndexExistsError, IndexNotFoundError, LateragkitError

from .conftest import data_dir, minilm_path

RESULT_KEYS = {"content", "score", "rank", "document_id", "passage_id"}


def _adi() -> tuple[list[str], list[str], dict[str, str], dict[str, dict[str, int]]]:
    folder = data_dir("adi")
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    ids = [d["_id"] for d in docs]
    texts = [(d["title"] + ". " + d["text"]).strip() for d in docs]
    queries = {}
    for line in (folder / "queries.jsonl").read_text().splitlines():
        q = json.loads(line)
        queries[q["_id"]] = q["text"]
    qrels: dict[str, dict[str, int]] = {}
    for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, score = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(score)
    return ids, texts, queries, qrels


@pytest.fixture(scope="module")
def adi():
    return _adi()


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> RAGPretrainedModel:
    return RAGPretrainedModel.from_pretrained(
        minilm_path(), index_root=tmp_path_factory.mktemp("indexes"), verbose=0
    )


@pytest.fixture(scope="module")
def adi_index(rag: RAGPretrainedModel, adi) -> str:
    ids, texts, _, _ = adi
    metas = [{"parity": int(i) % 2, "n": int(i)} for i in ids]
    return rag.index(texts, document_ids=ids, document_metadatas=metas, index_name="adi", index_type="plaid")


def _ndcg10(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> float:
    import math

    total = 0.0
    for qid, rels in qrels.items():
        ranked = run.get(qid, [])[:10]
        dcg = sum((2 ** rels.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked))
        ideal = sorted(rels.values(), reverse=True)[:10]
        idcg = sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
        total += dcg / idcg if idcg else 0.0
    return total / len(qrels)


# --------------------------------------------------------------------------------------------------
def test_index_search_quality_and_shape(rag, adi_index, adi):
    ids, texts, queries, qrels = adi
    assert Path(adi_index).is_dir() and Path(adi_index).name == "adi"
    judged = [q for q in queries if q in qrels]
    results = rag.search([queries[q] for q in judged], index_name="adi", k=10)
    assert isinstance(results, list) and len(results) == len(judged)
    run = {}
    for qid, rows in zip(judged, results, strict=True):
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        assert all(RESULT_KEYS <= set(r) for r in rows)
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
        run[qid] = list(dict.fromkeys(r["document_id"] for r in rows))
    # ADI dense MiniLM reference nDCG@10 is 0.498; late interaction through the index must be in that range.
    assert _ndcg10(run, qrels) > 0.42
    single = rag.search(queries[judged[0]], k=3)
    assert isinstance(single, list) and isinstance(single[0], dict) and len(single) == 3
    one_in_list = rag.search([queries[judged[0]]], k=3)
    assert isinstance(one_in_list[0], list)  # a one-element list of queries still gives a list of lists
    # content is the passage text of the document it claims to be
    by_id = dict(zip(ids, texts, strict=True))
    for r in single:
        assert r["content"] in by_id[r["document_id"]]
        assert r["document_metadata"]["n"] == int(r["document_id"])


def test_search_matches_exhaustive_maxsim_ranking(rag, adi_index, adi):
    """The index ranks the same top passages as exhaustive MaxSim over the same model and passages."""
    ids, texts, queries, qrels = adi
    n = rag._snapshot("adi").index.num_passages
    passages = [r["content"] for r in rag.search("retrieval", index_name="adi", k=n)]
    assert len(set(passages)) == n
    qs = list(queries.values())
    rag.clear_encoded_docs()
    rag.encode(passages, verbose=False)
    try:
        exact = rag.search_encoded_docs(qs, k=5)
    finally:
        rag.clear_encoded_docs()
    indexed = rag.search(qs, index_name="adi", k=5)
    # Residual compression (nbits=2) swaps near-ties: compare over all 35 queries.
    top1 = np.mean([i[0]["content"] == e[0]["content"] for i, e in zip(indexed, exact, strict=True)])
    overlap = np.mean([len({r["content"] for r in i} & {r["content"] for r in e}) / 5
                       for i, e in zip(indexed, exact, strict=True)])
    assert top1 >= 0.8 and overlap >= 0.8, (top1, overlap)
    # the index's scores are exact MaxSim over the decompressed vectors: close to the uncompressed ones
    # (compression errors are heavy-tailed, a few percent on a few passages: compare their distribution)
    rel = []
    for q, rows in zip(qs, indexed, strict=True):
        exact_score = {r["content"]: r["score"] for r in rag.rerank(q, [r["content"] for r in rows], k=5)}
        rel += [abs(r["score"] - exact_score[r["content"]]) / exact_score[r["content"]] for r in rows]
    assert np.median(rel) <= 0.03 and np.percentile(rel, 90) <= 0.08, (np.median(rel), np.percentile(rel, 90))


def test_k_larger_than_candidates_returns_all(rag, adi_index, adi):
    # RAGatouille #130: a k above the default candidate budget used to return fewer results.
    rows = rag.search("information retrieval systems", index_name="adi", k=1000)
    assert len(rows) == rag._snapshot("adi").index.num_passages
    assert len({r["passage_id"] for r in rows}) == len(rows)


@pytest.mark.parametrize("bad_k", [0, -3])
def test_k_must_be_positive(rag, adi_index, bad_k):
    with pytest.raises(ValueError, match="k must be at least 1"):
        rag.search("retrieval", index_name="adi", k=bad_k)


def test_doc_ids_restrict_single_and_batch(rag, adi_index):
    allowed = ["5", "17", "46"]
    single = rag.search("automatic retrieval of titles", index_name="adi", k=10, doc_ids=allowed)
    assert single and {r["document_id"] for r in single} <= set(allowed)
    batch = rag.search(["automatic retrieval", "library education"], index_name="adi", k=10, doc_ids=allowed)
    assert len(batch) == 2
    for rows in batch:  # RAGatouille ignored doc_ids for batches
        assert rows and {r["document_id"] for r in rows} <= set(allowed)


def test_metadata_filters(rag, adi_index):
    rows = rag.search("information", index_name="adi", k=20, filter={"parity": 1})
    assert rows and all(r["document_metadata"]["parity"] == 1 for r in rows)
    rows = rag.search("information", index_name="adi", k=20, filter=lambda m: m.get("n", 0) > 70)
    assert rows and all(int(r["document_id"]) > 70 for r in rows)
    assert rag.search("information", index_name="adi", k=5, filter={"parity": 7}) == []
    both = rag.search("information", index_name="adi", k=20, filter={"parity": 0}, doc_ids=["2", "3", "4"])
    assert {r["document_id"] for r in both} <= {"2", "4"}


def test_from_index_round_trip(rag, adi_index):
    query = "computer-based indexing of documents"
    before = rag.search(query, index_name="adi", k=5)
    reopened = RAGPretrainedModel.from_index(adi_index, verbose=0)
    after = reopened.search(query, k=5)
    assert [(r["passage_id"], r["content"], r.get("document_metadata")) for r in after] == [
        (r["passage_id"], r["content"], r.get("document_metadata")) for r in before
    ]
    assert [r["score"] for r in after] == pytest.approx([r["score"] for r in before], rel=1e-4)


# --------------------------------------------------------------------------------------------------
# updates: RAGatouille #222 (delete corrupts pid→text) and #266 (stale searcher after add)
# --------------------------------------------------------------------------------------------------
def _small_collection(adi, n=30):
    ids, texts, _, _ = adi
    return ids[:n], texts[:n]


def test_delete_then_search_returns_right_text(rag, adi):
    ids, texts = _small_collection(adi)
    rag.index(texts, document_ids=ids, index_name="crud_delete")
    target = texts[10]
    rag.delete_from_index(["1", "2", "3", ids[9]], index_name="crud_delete")
    rows = rag.search(target[:200], index_name="crud_delete", k=5)
    assert rows[0]["document_id"] == ids[10] and rows[0]["content"] in target
    by_id = dict(zip(ids, texts, strict=True))
    for r in rag.search("information", index_name="crud_delete", k=50):
        assert r["document_id"] not in {"1", "2", "3", ids[9]}
        assert r["content"] in by_id[r["document_id"]]


def test_add_is_seen_by_next_search_and_upserts(rag, adi):
    ids, texts = _small_collection(adi, 20)
    rag.index(texts, document_ids=ids, index_name="crud_add")
    before = {r["passage_id"]: r["content"] for r in rag.search("information", index_name="crud_add", k=100)}
    new_text = "Zebrafish migrate across the Serengeti in enormous herds every autumn."
    rag.add_to_index([new_text], new_document_ids=["zebra"], new_document_metadatas=[{"kind": "animal"}],
                     index_name="crud_add")
    rows = rag.search("zebrafish herds migrating", index_name="crud_add", k=1)
    assert rows[0]["document_id"] == "zebra" and rows[0]["document_metadata"] == {"kind": "animal"}
    # upsert: the same id replaces the document's passages
    rag.add_to_index(["Penguins huddle together through the Antarctic winter."], new_document_ids=["zebra"],
                     index_name="crud_add")
    rows = rag.search("zebrafish herds migrating", index_name="crud_add", k=50)
    assert all("Zebrafish" not in r["content"] for r in rows)
    top = rag.search("penguins antarctic winter", index_name="crud_add", k=1)[0]
    assert top["document_id"] == "zebra" and "document_metadata" not in top
    # every other passage keeps its id and text
    after = {r["passage_id"]: r["content"] for r in rag.search("information", index_name="crud_add", k=100)}
    assert {pid: after[pid] for pid in before} == before


def test_second_instance_sees_changes_after_reopen(rag, adi, tmp_path):
    ids, texts = _small_collection(adi, 10)
    path = rag.index(texts, document_ids=ids, index_name="crud_reopen")
    other = RAGPretrainedModel.from_index(path, verbose=0)
    other.add_to_index(["A note about quantum chromodynamics and gluons."], new_document_ids=["qcd"])
    again = RAGPretrainedModel.from_index(path, verbose=0)
    assert again.search("gluons quantum chromodynamics", k=1)[0]["document_id"] == "qcd"


def test_one_short_document(rag):
    # RAGatouille #84/#71: a single short document crashed k-means (faiss nx >= k).
    for index_type in ("auto", "plaid"):
        rag.index(["Hello world."], index_name=f"tiny_{index_type}", index_type=index_type)
        rows = rag.search("hello", index_name=f"tiny_{index_type}", k=10)
        assert len(rows) == 1 and rows[0]["content"] == "Hello world." and rows[0]["rank"] == 1


@pytest.mark.parametrize(
    "with_ids,with_meta,split", list(itertools.product([True, False], [True, False], [True, False]))
)
def test_parameter_combinations(rag, adi, with_ids, with_meta, split):
    ids, texts = _small_collection(adi, 12)
    long_text = " ".join(texts)  # long enough to need splitting at 64 tokens
    collection = [long_text] + texts[1:6]
    doc_ids = ["long"] + ids[1:6] if with_ids else None
    metas = [{"i": i} for i in range(6)] if with_meta else None
    name = f"combo_{int(with_ids)}{int(with_meta)}{int(split)}"
    rag.index(collection, document_ids=doc_ids, document_metadatas=metas, index_name=name,
              max_document_length=64, split_documents=split)
    rows = rag.search(texts[3][:100], index_name=name, k=3)
    assert rows[0]["content"] in collection[3] or rows[0]["content"] in long_text
    n_passages = rag._snapshot(name).index.num_passages
    assert (n_passages > 6) == split
    for r in rows:
        assert ("document_metadata" in r) == with_meta
        if with_ids:
            assert r["document_id"] in set(doc_ids)
    rag.delete_from_index(doc_ids[1] if with_ids else rows[0]["document_id"], index_name=name)
    assert rag._snapshot(name).index.num_passages < n_passages


def test_splitting_respects_max_document_length(rag, adi):
    _, texts = _small_collection(adi, 10)
    long_text = "\n\n".join(texts)
    rag.index([long_text], document_ids=["long"], index_name="split_len", max_document_length=48)
    rows = rag.search("information", index_name="split_len", k=1000)
    assert len(rows) > 5
    for r in rows:
        n_tokens = len(rag.encoder.token_spans(r["content"])) + rag.encoder.num_special_doc_tokens
        assert n_tokens <= 48
        assert long_text[r["start_char"] : r["end_char"]] == r["content"]
    assert len({r["passage_id"] for r in rows}) == len(rows)


# --------------------------------------------------------------------------------------------------
# bad input: clear errors, stored index untouched
# --------------------------------------------------------------------------------------------------
def _snapshot(path: str) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"collection": ["a", "b"], "document_ids": ["x", "x"]}, ValueError, "duplicates"),
        ({"collection": ["a", "b"], "document_ids": ["x", 3]}, ValueError, "non-empty strings"),
        ({"collection": ["a", "b"], "document_ids": ["x", " "]}, ValueError, "non-empty strings"),
        ({"collection": ["a", "b"], "document_metadatas": [{}]}, ValueError, "one dict per document"),
        ({"collection": ["a"], "document_metadatas": [{"f": object()}]}, ValueError, "JSON"),
        ({"collection": []}, ValueError, "empty"),
        ({"collection": ["  ", "\n"]}, ValueError, "no text"),
        ({"collection": "a single string"}, TypeError, "list of strings"),
        ({"collection": ["a", None]}, TypeError, "str"),
        ({"collection": ["a"], "index_name": "../escape"}, ValueError, "single folder name"),
        ({"collection": ["a"], "index_name": "/abs/path"}, ValueError, "single folder name"),
        ({"collection": ["a"], "index_name": "a/b"}, ValueError, "single folder name"),
        ({"collection": ["a"], "index_type": "hnsw"}, ValueError, "index_type"),
    ],
)
def test_bad_index_input_leaves_index_untouched(rag, adi, kwargs, error, match):
    ids, texts = _small_collection(adi, 5)
    path = rag.index(texts, document_ids=ids, index_name="guarded")
    before = _snapshot(path)
    kwargs.setdefault("index_name", "guarded")
    with pytest.raises(error, match=match):
        rag.index(**kwargs)
    assert _snapshot(path) == before
    assert rag.search(texts[2][:80], index_name="guarded", k=1)[0]["document_id"] == ids[2]


def test_overwrite_false_raises_and_keeps_index(rag, adi):
    ids, texts = _small_collection(adi, 5)
    path = rag.index(texts, document_ids=ids, index_name="no_overwrite")
    before = _snapshot(path)
    with pytest.raises(IndexExistsError, match="overwrite_index=True"):
        rag.index(["other"], index_name="no_overwrite", overwrite_index=False)
    assert _snapshot(path) == before


@pytest.mark.parametrize("query,error", [("", ValueError), ("   ", ValueError), (None, TypeError), ([], ValueError),
                                         (["ok", 3], TypeError)])
def test_bad_queries(rag, adi_index, query, error):
    with pytest.raises(error):
        rag.search(query, index_name="adi")


def test_unknown_index(rag, tmp_path):
    with pytest.raises(IndexNotFoundError, match="index"):
        rag.search("x", index_name="does_not_exist")
    with pytest.raises(IndexNotFoundError):
        RAGPretrainedModel.from_index(tmp_path / "nothing_here")
    fresh = RAGPretrainedModel(rag.encoder, index_root=tmp_path, verbose=0)
    with pytest.raises(IndexNotFoundError, match="index\\(\\.\\.\\.\\) first"):
        fresh.search("x")


def test_default_index_name_is_one_safe_folder(rag, tmp_path):
    fresh = RAGPretrainedModel(rag.encoder, index_root=tmp_path, verbose=0)
    path = Path(fresh.index(["some text about libraries"]))
    assert path.parent == tmp_path and "/" not in path.name and path.name.endswith("_index")


# --------------------------------------------------------------------------------------------------
# index-free paths
# --------------------------------------------------------------------------------------------------
def test_rerank_shapes_and_order(rag, adi):
    ids, texts, queries, qrels = adi
    docs = texts[:20]
    rows = rag.rerank(queries["3"], docs, k=5)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(set(r) == {"content", "score", "rank", "result_index"} for r in rows)
    assert all(docs[r["result_index"]] == r["content"] for r in rows)
    assert len(rag.rerank(queries["3"], docs[:3], k=10)) == 3  # k > n returns all, sorted
    assert rag.rerank(queries["3"], [], k=3) == []
    batch = rag.rerank([queries["3"], queries["4"]], docs, k=2)
    assert len(batch) == 2 and all(len(b) == 2 for b in batch)
    with pytest.raises(ValueError):
        rag.rerank(queries["3"], docs, k=0)


def test_encode_and_search_encoded_docs_quality(rag, adi):
    ids, texts, queries, qrels = adi
    rag.clear_encoded_docs()
    with pytest.raises(LateragkitError, match="encode"):
        rag.search_encoded_docs("anything")
    half = len(texts) // 2
    rag.encode(texts[:half], document_metadatas=[{"id": i} for i in ids[:half]])
    rag.encode(texts[half:])  # appending without metadata works (a RAGatouille crash)
    judged = [q for q in queries if q in qrels]
    results = rag.search_encoded_docs([queries[q] for q in judged], k=10)
    run = {q: [ids[r["result_index"]] for r in rows] for q, rows in zip(judged, results, strict=True)}
    assert _ndcg10(run, qrels) > 0.42
    first = results[0][0]
    assert texts[first["result_index"]] == first["content"]
    assert ("document_metadata" in first) == (first["result_index"] < half)
    rag.clear_encoded_docs(force=True)
    with pytest.raises(LateragkitError):
        rag.search_encoded_docs("anything")
