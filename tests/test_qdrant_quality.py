"""Retrieval quality of the embedded Qdrant index against exhaustive MaxSim, with real MiniLM token vectors
(MEDLINE; the SciFact figures are in benchmarks/qdrant.py, which needs the cached SciFact encoding)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lateragkit import scoring
from lateragkit.evaluation import corpus_text, load_beir, ndcg_at_k, recall_at_k
from lateragkit.qdrant import QdrantIndex, QdrantLocation, QdrantOptions

from .conftest import data_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("qdrant_edge") is None,
                       reason='qdrant-edge-py not installed (optional extra): pip install "lateragkit[qdrant]"'),
]

DOC_MAXLEN = 128  # halves encoding time; both searches get the same vectors, which is what is compared


@pytest.fixture(scope="module")
def medline(minilm: str) -> dict[str, Any]:
    from lateragkit.models import load_encoder

    corpus, queries, qrels = load_beir(data_dir("medline"))
    doc_ids = list(corpus)
    enc = load_encoder(minilm, device="cpu")
    vectors, doclens = enc.encode_documents([corpus_text(corpus[d]) for d in doc_ids], doc_maxlen=DOC_MAXLEN)
    qids = list(queries)
    Q, M = enc.encode_queries([queries[q] for q in qids])
    return {"v": vectors.numpy(), "lens": doclens.numpy(), "Q": Q, "M": M, "doc_ids": doc_ids, "qids": qids,
            "qrels": qrels}


def _exact_run(data: dict[str, Any], k: int) -> dict[str, list[str]]:
    top = torch.topk(scoring.maxsim(data["Q"], data["M"], data["v"], data["lens"]), k, dim=1).indices
    return {q: [data["doc_ids"][int(i)] for i in row] for q, row in zip(data["qids"], top, strict=True)}


def _qdrant_run(index: QdrantIndex, data: dict[str, Any], k: int) -> dict[str, list[str]]:
    hits = index.search(data["Q"], data["M"], k)
    return {q: [rec["document_id"] for _, rec in row] for q, row in zip(data["qids"], hits, strict=True)}


@pytest.mark.parametrize("options", [QdrantOptions(), QdrantOptions(quantization="int8")], ids=["float16", "int8"])
def test_qdrant_quality_matches_exact_maxsim(medline: dict[str, Any], tmp_path: Path, options: QdrantOptions) -> None:
    offsets = np.concatenate([[0], np.cumsum(medline["lens"])])
    passages = [{"passage_id": f"{d}-0", "document_id": d, "content": "", "start_char": None, "end_char": None,
                 "document_metadata": None} for d in medline["doc_ids"]]
    vectors = [medline["v"][offsets[i] : offsets[i + 1]] for i in range(len(passages))]
    with QdrantIndex.create(QdrantLocation(path=tmp_path / "q"), dim=384, options=options) as index:
        index.upsert_documents(medline["doc_ids"], passages, vectors)
        assert index.count_passages() == len(passages)
        qrels = medline["qrels"]
        ndcg_exact = ndcg_at_k(_exact_run(medline, 10), qrels, 10)
        ndcg_qdrant = ndcg_at_k(_qdrant_run(index, medline, 10), qrels, 10)
        recall_exact = recall_at_k(_exact_run(medline, 100), qrels, 100)
        recall_qdrant = recall_at_k(_qdrant_run(index, medline, 100), qrels, 100)
    assert ndcg_exact > 0.6  # MiniLM MaxSim is a real retriever on MEDLINE
    assert abs(ndcg_qdrant - ndcg_exact) <= 0.01, (ndcg_qdrant, ndcg_exact)
    assert recall_qdrant >= recall_exact - 0.02, (recall_qdrant, recall_exact)
