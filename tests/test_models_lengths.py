"""Query and document lengths per checkpoint format, against token ids built from each reference's rule.

Stanford checkpoints follow RAGatouille (`max(query_maxlen, min(int(words * 1.35), max_position_embeddings - 4))`,
then colbert-ai's QueryTokenizer at that length); PyLate checkpoints follow PyLate's fixed `query_length`.
Documents: RAGatouille reranks at `max_position_embeddings - 4`, PyLate at `document_length`.
"""
from __future__ import annotations

import json
import logging

import pytest
import torch

from lateragkit.models import load_encoder

from .fixtures_models import write_bare_bert, write_pylate_bert, write_stanford_bert

PAD, Q_MARK, D_MARK, UNK, CLS, SEP, MASK = range(7)


@pytest.fixture(scope="module")
def tokdir(tmp_path_factory):
    """One tiny checkpoint whose tokenizer the others copy (trained once)."""
    return write_stanford_bert(tmp_path_factory.mktemp("lengths") / "stanford-128")


@pytest.fixture(scope="module")
def stanford(tmp_path_factory, tokdir):
    folder = write_stanford_bert(tmp_path_factory.mktemp("lengths") / "stanford-512", tokenizer_dir=tokdir,
                                 max_position_embeddings=512)
    return load_encoder(folder, device="cpu")


@pytest.fixture(scope="module")
def pylate(tmp_path_factory, tokdir):
    folder = write_pylate_bert(tmp_path_factory.mktemp("lengths") / "pylate", tokenizer_dir=tokdir,
                               max_position_embeddings=512, st_config={"document_length": 300})
    # the tokenizer says 256: PyLate cuts documents at document_length all the same
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "model_max_length": 256}))
    return load_encoder(folder, device="cpu")


def _single_token_words(tok, n):
    words = [w for w in ("the", "fox", "dog", "quick", "brown", "lazy", "over", "a", "query", "books")
             if len(tok(w, add_special_tokens=False)["input_ids"]) == 1]
    assert len(words) >= 3
    return [words[i % len(words)] for i in range(n)]


def _query_53_tokens_37_words(tok) -> str:
    """37 space-separated words, 53 word pieces: 16 of the words carry a comma (2 pieces each)."""
    words = _single_token_words(tok, 37)
    text = " ".join(w + "," if i < 16 else w for i, w in enumerate(words))
    assert len(text.split(" ")) == 37 and len(tok(text, add_special_tokens=False)["input_ids"]) == 53
    return text


def _query_26_words(tok) -> str:
    text = " ".join(_single_token_words(tok, 26))
    assert len(tok(text, add_special_tokens=False)["input_ids"]) == 26
    return text


def colbert_ai_query(tok, text: str, query_maxlen: int, marker: int) -> tuple[list[int], list[int]]:
    """colbert-ai QueryTokenizer.tensorize at `query_maxlen`: truncate to maxlen-1, insert the marker, pad -> mask."""
    enc = tok([text], padding="max_length", truncation=True, max_length=query_maxlen - 1)
    ids, att = enc["input_ids"][0], enc["attention_mask"][0]
    ids, att = ids[:1] + [marker] + ids[1:], att[:1] + [1] + att[1:]
    return [tok.mask_token_id if i == tok.pad_token_id else i for i in ids], att


def ragatouille_length(text: str, query_maxlen: int, max_position_embeddings: int) -> int:
    """RAGatouille: max(min(int(words * 1.35), max_position_embeddings - 4), query_maxlen)."""
    return max(min(int(len(text.split(" ")) * 1.35), max_position_embeddings - 4), query_maxlen)


def pylate_query(tok, text: str, query_length: int, prefix_id: int) -> tuple[list[int], list[int]]:
    """PyLate: max_seq_length = query_length - 1, padding="max_length" with pad = mask, then the prefix id."""
    enc = tok([text.strip()], padding="max_length", truncation="longest_first", max_length=query_length - 1)
    ids, att = enc["input_ids"][0], enc["attention_mask"][0]
    ids, att = ids[:1] + [prefix_id] + ids[1:], att[:1] + [1] + att[1:]
    return [tok.mask_token_id if i == tok.pad_token_id else i for i in ids], att


# --------------------------------------------------------------------------------------------- queries

def test_stanford_queries_follow_ragatouille(stanford, caplog):
    tok = stanford.tokenizer
    long53, fits26 = _query_53_tokens_37_words(tok), _query_26_words(tok)
    huge = " ".join(_single_token_words(tok, 600))
    texts = ["hello world", fits26, long53, huge]
    with caplog.at_level(logging.WARNING, logger="lateragkit.models.tokenization"):
        toks = stanford.tok.tokenize_queries(texts)
    for text, t in zip(texts, toks, strict=True):
        ids, att = colbert_ai_query(tok, text, ragatouille_length(text, 32, 512), Q_MARK)
        assert (t.ids, t.attention) == (ids, att)
        assert all(t.scored)
    # worked out by hand from RAGatouille: 26 words -> int(35.1) = 35 rows (29 ids + 6 [MASK]); 37 words -> 49 rows
    assert [len(t.ids) for t in toks] == [32, 35, 49, 508]
    assert toks[1].ids[-6:] == [MASK] * 6 and toks[1].ids[28] == SEP
    assert toks[2].ids[-1] == SEP and MASK not in toks[2].ids  # 56 ids cut to 49, [SEP] kept
    assert toks[3].ids[-1] == SEP  # 600 words: capped at max_position_embeddings - 4 = 508
    assert "2 of 4 queries were cut" in caplog.text and "RAGatouille" in caplog.text
    Q, Q_mask = stanford.encode_queries(texts[:3])
    assert Q.shape[1] == 49 and Q_mask.sum(1).tolist() == [32, 35, 49]


def test_pylate_queries_have_a_fixed_length(pylate):
    tok = pylate.tokenizer
    prefix = tok.convert_tokens_to_ids("[Q] ")
    long53, fits26 = _query_53_tokens_37_words(tok), _query_26_words(tok)
    texts = ["hello world", fits26, long53, "  padded with spaces  "]
    toks = pylate.tok.tokenize_queries(texts)
    for text, t in zip(texts, toks, strict=True):
        ids, att = pylate_query(tok, text, 32, prefix)
        assert (t.ids, t.attention) == (ids, att)
    assert [len(t.ids) for t in toks] == [32, 32, 32, 32]  # PyLate (and colbert-ai at query_maxlen 32): 53 -> 32
    assert toks[2].ids[-1] == SEP and toks[1].ids[-3:] == [MASK] * 3
    assert pylate.settings()["query_length_rule"] == "fixed"


def test_bare_queries_are_plain_tokens_cut_at_max_seq_length(tmp_path, tokdir):
    folder = write_bare_bert(tmp_path / "bare", tokenizer_dir=tokdir, max_position_embeddings=512)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 40, "do_lower_case": False}))
    enc = load_encoder(folder, device="cpu")
    tok = enc.tokenizer
    text = " ".join(_single_token_words(tok, 60))
    [short, long] = enc.tok.tokenize_queries(["hello world", text])
    assert short.ids == tok("hello world")["input_ids"]
    assert long.ids == tok(text, truncation=True, max_length=40)["input_ids"] and len(long.ids) == 40
    assert (enc.query_maxlen, enc.doc_maxlen, enc.rerank_doc_maxlen) == (40, 40, 40)


# --------------------------------------------------------------------------------------------- documents

def test_document_lengths_per_format(stanford, pylate, tokdir):
    # Stanford: index at doc_maxlen (artifact.metadata), rerank at RAGatouille's max_position_embeddings - 4
    assert (stanford.doc_maxlen, stanford.rerank_doc_maxlen, stanford.max_tokens) == (180, 508, 512)
    assert load_encoder(tokdir, device="cpu").rerank_doc_maxlen == 124  # a 128-position backbone
    # PyLate: document_length (300), whatever the tokenizer's model_max_length (256) says
    assert (pylate.doc_maxlen, pylate.rerank_doc_maxlen, pylate.max_tokens) == (300, 300, 512)
    long_doc = " ".join(_single_token_words(pylate.tokenizer, 400))
    _, doclens = pylate.encode_documents([long_doc], doc_maxlen=pylate.rerank_doc_maxlen)
    assert doclens.tolist() == [300]
    [ids] = pylate.tok.tokenize_documents([long_doc], 300)
    d_id = pylate.tokenizer.convert_tokens_to_ids("[D] ")
    assert ids == [CLS, d_id] + pylate.tokenizer(long_doc, add_special_tokens=False)["input_ids"][:297] + [SEP]
    _, doclens = stanford.encode_documents([long_doc], doc_maxlen=stanford.rerank_doc_maxlen)
    assert doclens.tolist() == [403]  # 400 words + [CLS] [D] [SEP]: not cut below 508
    for enc in (stanford, pylate):
        s = enc.settings()
        assert s["rerank_doc_maxlen"] == enc.rerank_doc_maxlen and s["dim"] == enc.dim and s["format"] == enc.format


def test_warn_truncated_logs_one_warning(stanford, caplog):
    words = _single_token_words(stanford.tokenizer, 50)
    docs = [" ".join(words), "short one", " ".join(words[:30])]
    with caplog.at_level(logging.WARNING, logger="lateragkit.models.encoder"):
        vectors, doclens = stanford.encode_documents(docs, doc_maxlen=20)
    assert caplog.records == []  # default: indexing passages that the splitter already fitted
    with caplog.at_level(logging.WARNING, logger="lateragkit.models.encoder"):
        again, doclens2 = stanford.encode_documents(docs, doc_maxlen=20, warn_truncated=True)
    assert len(caplog.records) == 1
    msg = caplog.records[0].getMessage()
    assert "2 of 3 documents were cut at 20 tokens" in msg and "max_document_length" in msg
    assert torch.equal(vectors, again) and torch.equal(doclens, doclens2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lateragkit.models.encoder"):
        stanford.encode_documents(docs[1:2], doc_maxlen=20, warn_truncated=True)
    assert caplog.records == []
