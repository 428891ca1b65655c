"""Retrieval quality of the PLAID index against exact search, with real MiniLM token vectors (MEDLINE)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from lateragkit.evaluation import corpus_text, load_beir, ndcg_at_k, recall_at_k
from lateragkit.index import build_index

from .conftest import data_dir
from .test_index_codec import one_thread

pytestmark = pytest.mark.slow

DOC_MAXLEN = 128  # halves encoding time; both indexes get the same vectors, which is what is compared


@pytest.fixture(scope="module")
def medline(minilm: str) -> dict:
    from lateragkit.models import load_encoder

    corpus, queries, qrels = load_beir(data_dir("medline"))
    doc_ids = list(corpus)
    enc = load_encoder(minilm, device="cpu")
    vectors, doclens = enc.encode_documents([corpus_text(corpus[d]) for d in doc_ids], doc_maxlen=DOC_MAXLEN)
    qids = list(queries)
    Q, M = enc.encode_queries([queries[q] for q in qids])
    return {"v": vectors.numpy(), "lens": doclens.numpy(), "Q": Q, "M": M, "doc_ids": doc_ids, "qids": qids,
            "qrels": qrels}


def _chunks(v: np.ndarray, lens: np.ndarray, per: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    starts = np.concatenate([[0], np.cumsum(lens)])
    for s in range(0, len(lens), per):
        e = min(len(lens), s + per)
        yield v[starts[s] : starts[e]], lens[s:e]


def _run(index, data: dict, k: int) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    hits = index.search(data["Q"], data["M"], k)
    return {q: [data["doc_ids"][p] for p in pids] for q, (_, pids) in zip(data["qids"], hits, strict=True)}


def test_plaid_quality_matches_exact_search(medline: dict, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with one_thread():  # small searches: intra-op threads cost more than they give
        _check_quality(medline, tmp_path)


def _check_quality(medline: dict, tmp_path) -> None:  # type: ignore[no-untyped-def]
    exact = build_index(tmp_path / "exact", _chunks(medline["v"], medline["lens"]), dim=384, index_type="exact")
    plaid = build_index(tmp_path / "plaid", _chunks(medline["v"], medline["lens"]), dim=384, index_type="plaid",
                        nbits=2)
    assert plaid.kind == "plaid" and plaid.num_passages == len(medline["doc_ids"])
    qrels = medline["qrels"]
    ndcg_exact = ndcg_at_k(_run(exact, medline, 10), qrels, 10)
    ndcg_plaid = ndcg_at_k(_run(plaid, medline, 10), qrels, 10)
    recall_exact = recall_at_k(_run(exact, medline, 100), qrels, 100)
    recall_plaid = recall_at_k(_run(plaid, medline, 100), qrels, 100)
    # MiniLM MaxSim is a real retriever here (dense MiniLM reaches 0.79 nDCG@10 on MEDLINE)
    assert ndcg_exact > 0.6
    assert abs(ndcg_plaid - ndcg_exact) <= 0.01, (ndcg_plaid, ndcg_exact)
    assert recall_plaid >= recall_exact - 0.02, (recall_plaid, recall_exact)
