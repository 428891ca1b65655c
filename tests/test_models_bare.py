"""Bare encoders (no ColBERT head): all-MiniLM-L6-v2 and tiny random BERT folders."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lateragkit import scoring
from lateragkit.models import load_encoder

from .conftest import data_dir
from .fixtures_models import save_weights, write_bare_bert


@pytest.fixture(scope="module")
def minilm_encoder(minilm):
    return load_encoder(minilm, device="cpu")


@pytest.fixture(scope="module")
def tiny_bare(tmp_path_factory):
    return write_bare_bert(tmp_path_factory.mktemp("bare") / "ckpt")


def _hf_vectors(path: str, texts: list[str], max_length: int = 256) -> list[torch.Tensor]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            batch = tok([text], truncation=True, max_length=max_length, return_tensors="pt")
            out.append(F.normalize(model(**batch).last_hidden_state[0], dim=-1))
    return out


# --------------------------------------------------------------------------------------------- MiniLM

def test_minilm_loads_as_bare(minilm_encoder):
    enc = minilm_encoder
    assert enc.is_bare and enc.format == "bare"
    assert enc.dim == 384 and enc.doc_maxlen == 256 and enc.max_tokens == 512
    assert enc.num_special_doc_tokens == 2
    assert json.loads(json.dumps(enc.settings()))["is_bare"] is True
    assert Path(enc.name_or_path).is_dir()


def test_minilm_exact_tokens_no_markers_no_expansion_no_skiplist(minilm_encoder):
    enc = minilm_encoder
    [q] = enc.tok.tokenize_queries(["Hello, world!"])
    assert q.ids == [101, 7592, 1010, 2088, 999, 102]  # [CLS] hello , world ! [SEP]: no marker, no [MASK]
    assert q.attention == [1] * 6 and all(q.scored)
    Q, Q_mask = enc.encode_queries(["Hello, world!", "a much longer query with several more words"])
    assert Q.shape[:2] == Q_mask.shape and Q_mask[0].sum() == 6 and not Q_mask[0, 6:].any()
    vectors, doclens = enc.encode_documents(["Hello, world!"])
    assert doclens.tolist() == [6]  # punctuation, CLS and SEP kept
    assert vectors.dtype == torch.float16 and vectors.shape == (6, 384)
    assert enc.token_spans("Hello, world!") == [(0, 5), (5, 6), (7, 12), (12, 13)]


def test_minilm_vectors_equal_plain_transformers(minilm_encoder, minilm):
    texts = ["How do statins affect breast cancer survival?", "Statins reduce mortality.", ""]
    ref = _hf_vectors(minilm, texts)
    vectors, doclens = minilm_encoder.encode_documents(texts, bsize=2)
    assert doclens.tolist() == [len(r) for r in ref]
    torch.testing.assert_close(vectors.float(), torch.cat(ref), atol=2e-3, rtol=0)
    Q, Q_mask = minilm_encoder.encode_queries(texts[:2])
    torch.testing.assert_close(Q[0][Q_mask[0]], ref[0], atol=1e-5, rtol=0)


def test_minilm_batching_order_and_dim_truncation(minilm, minilm_encoder):
    texts = ["short", "a somewhat longer document about retrieval", "mid length text here", "x " * 40]
    v_all, dl_all = minilm_encoder.encode_documents(texts, bsize=2)
    singles = [minilm_encoder.encode_documents([t])[0] for t in texts]
    assert dl_all.tolist() == [len(s) for s in singles]
    torch.testing.assert_close(v_all.float(), torch.cat(singles).float(), atol=2e-3, rtol=0)

    small = load_encoder(minilm, dim=128, device="cpu")
    assert small.dim == 128
    v128, dl128 = small.encode_documents(texts)
    assert torch.equal(dl128, dl_all)
    ref = _hf_vectors(minilm, texts)
    expect = torch.cat([F.normalize(F.normalize(r, dim=-1)[:, :128], dim=-1) for r in ref])
    torch.testing.assert_close(v128.float(), expect, atol=2e-3, rtol=0)
    with pytest.raises(ValueError, match="dim"):
        load_encoder(minilm, dim=512, device="cpu")


def test_minilm_doc_maxlen_truncation_and_clamp(minilm_encoder, caplog):
    long_doc = "word " * 1000
    _, dl = minilm_encoder.encode_documents([long_doc])
    assert dl.tolist() == [256]
    _, dl = minilm_encoder.encode_documents([long_doc], doc_maxlen=40)
    assert dl.tolist() == [40]
    with caplog.at_level(logging.WARNING, logger="lateragkit.models.encoder"):
        _, dl = minilm_encoder.encode_documents([long_doc], doc_maxlen=8190)
    assert dl.tolist() == [512]
    assert "8190" in caplog.text


def _ndcg_at_10(ranking: list[str], rels: dict[str, int]) -> float:
    """nDCG@10 with graded gains 2^rel - 1 (local helper; evaluation.py will hold the shared metric)."""
    dcg = sum((2 ** rels.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranking[:10]))
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:10]
    idcg = sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def test_minilm_adi_maxsim_quality(minilm_encoder):
    """Exhaustive MaxSim on ADI (82 docs, 35 judged queries).

    The shared data README gives MaxSim reference figures for SciFact (0.7072) and Cranfield (0.3690); ADI has
    only a dense one (0.498). This encoder reproduced Cranfield's 0.3690 and its 261,547 document tokens exactly
    (measured once, too slow for CI); on ADI the same protocol gives 0.508.
    """
    path = data_dir("adi")
    corpus = [json.loads(line) for line in (path / "corpus.jsonl").open(encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (path / "queries.jsonl").open(encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = {}
    for line in (path / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, did, score = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(score)
    qids = [q for q in qrels if q in queries]
    vectors, doclens = minilm_encoder.encode_documents([f"{d['title']} {d['text']}".strip() for d in corpus])
    Q, Q_mask = minilm_encoder.encode_queries([queries[q] for q in qids])
    scores = scoring.maxsim(Q, Q_mask, vectors, doclens)
    ids = [d["_id"] for d in corpus]
    ndcg = sum(
        _ndcg_at_10([ids[j] for j in torch.topk(scores[i], 10).indices.tolist()], qrels[q]) for i, q in enumerate(qids)
    ) / len(qids)
    assert len(qids) == 35
    assert abs(ndcg - 0.508) < 0.01, ndcg


# --------------------------------------------------------------------------------------------- tiny bare BERT

def test_tiny_bare_forward_equals_bertmodel(tiny_bare):
    from transformers import AutoTokenizer, BertModel

    enc = load_encoder(tiny_bare, device="cpu")
    assert enc.is_bare and enc.dim == 32 and enc.max_tokens == 128
    model = BertModel.from_pretrained(str(tiny_bare)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_bare))
    texts = ["the quick brown fox.", "hello, world! a test"]
    vectors, doclens = enc.encode_documents(texts)
    with torch.no_grad():
        ref = [F.normalize(model(**tok([t], return_tensors="pt")).last_hidden_state[0], dim=-1) for t in texts]
    torch.testing.assert_close(vectors.float(), torch.cat(ref), atol=2e-3, rtol=0)


def test_bare_with_prefixed_keys_and_mlm_head(tmp_path):
    """A bert-base-uncased style folder: `bert.*` keys plus `cls.predictions.*` (ignored)."""
    from safetensors.torch import load_file

    folder = write_bare_bert(tmp_path / "b")
    before = load_encoder(folder, device="cpu").encode_documents(["hello world"])[0]
    state = {f"bert.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()}
    state["cls.predictions.bias"] = torch.zeros(3)
    (folder / "model.safetensors").unlink()
    save_weights(folder, state, "bin")
    after = load_encoder(folder, device="cpu").encode_documents(["hello world"])[0]
    torch.testing.assert_close(after, before)
