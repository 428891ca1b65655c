"""Stanford `HF_ColBERT` checkpoints (tiny random BERT): exact tokens, forward, weight files, bad folders."""
from __future__ import annotations

import json
import shutil
import string

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lateragkit.exceptions import CheckpointFormatError
from lateragkit.models import load_encoder

from .fixtures_models import rename_norms_to_legacy, save_weights, write_stanford_bert

PAD, Q_MARK, D_MARK, UNK, CLS, SEP, MASK = range(7)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_stanford_bert(tmp_path_factory.mktemp("stanford") / "ckpt")


@pytest.fixture(scope="module")
def enc(ckpt):
    return load_encoder(ckpt, device="cpu")


def _copy(ckpt, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(ckpt, dst)
    return dst


def _stanford_query_tensorize(tok, texts, query_maxlen):
    """Stanford QueryTokenizer.tensorize, written out (checkpoints.md §1.1)."""
    obj = tok(texts, padding="max_length", truncation=True, max_length=query_maxlen - 1, return_tensors="pt")
    ids, mask = obj["input_ids"], obj["attention_mask"]
    ids = torch.cat([ids[:, :1], torch.full((len(texts), 1), Q_MARK), ids[:, 1:]], dim=1)
    mask = torch.cat([mask[:, :1], torch.ones(len(texts), 1, dtype=mask.dtype), mask[:, 1:]], dim=1)
    ids[ids == tok.pad_token_id] = tok.mask_token_id
    return ids, mask


def _reference_model(ckpt):
    from transformers import BertConfig, BertModel

    state = load_file(str(ckpt / "model.safetensors"))
    config = BertConfig.from_pretrained(str(ckpt))
    model = BertModel(config, add_pooling_layer=False).eval()
    model.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("bert.") and "pooler" not in k
                           and "position_ids" not in k})
    return model, state["linear.weight"]


def _reference_vectors(ckpt, ids, mask):
    model, linear = _reference_model(ckpt)
    with torch.no_grad():
        H = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return F.normalize(H @ linear.T, dim=-1)


def test_settings_from_artifact_metadata(enc):
    s = enc.settings()
    assert json.loads(json.dumps(s)) == s
    assert (enc.format, enc.is_bare, enc.dim, enc.query_maxlen, enc.doc_maxlen) == ("stanford", False, 16, 32, 128)
    assert s["query_marker"] == "[unused0]" and s["doc_marker"] == "[unused1]" and s["mask_punctuation"]
    assert enc.doc_maxlen == 128  # 180 in the metadata, clamped to the tiny backbone's 128 positions
    assert enc.num_special_doc_tokens == 3


def test_exact_query_tokens(enc):
    tok = enc.tokenizer
    words = tok("hello world", add_special_tokens=False)["input_ids"]
    [q] = enc.tok.tokenize_queries(["hello world"])
    assert q.ids == [CLS, Q_MARK, *words, SEP] + [MASK] * (32 - len(words) - 3)
    assert q.attention == [1] * (len(words) + 3) + [0] * (32 - len(words) - 3)  # [MASK] are not keys
    assert all(q.scored) and len(q.scored) == 32
    # the same as Stanford's tensorize for short queries
    texts = ["hello world", "the quick brown fox jumps over the lazy dog?"]
    ids, mask = _stanford_query_tensorize(tok, texts, 32)
    toks = enc.tok.tokenize_queries(texts)
    assert [t.ids for t in toks] == ids.tolist()
    assert [t.attention for t in toks] == mask.tolist()


def test_long_query_follows_ragatouille(enc):
    """RAGatouille: max(32, min(int(words * 1.35), max_position_embeddings - 4)) rows, the query cut to it."""
    text = " ".join(["quick brown fox, lazy dog!"] * 10)  # 50 words -> 67 rows; 73 ids: cut, [SEP] kept
    n_ids = len(enc.tokenizer(text)["input_ids"]) + 1
    expect = max(32, min(int(len(text.split(" ")) * 1.35), 128 - 4))
    [q] = enc.tok.tokenize_queries([text])
    assert n_ids > expect == 67 == len(q.ids)
    ids, mask = _stanford_query_tensorize(enc.tokenizer, [text], expect)  # colbert-ai at query_maxlen 67
    assert [q.ids] == ids.tolist() and [q.attention] == mask.tolist()
    Q, Q_mask = enc.encode_queries([text, "hello"])
    assert Q.shape[1] == expect and Q_mask[0].all() and Q_mask[1].sum() == 32
    # more words than the backbone takes: capped at max_position_embeddings - 4 = 124, keeping [SEP]
    [q] = enc.tok.tokenize_queries([" ".join([text] * 3)])
    assert len(q.ids) == 124 and q.ids[-1] == SEP and MASK not in q.ids


def test_attend_to_mask_tokens_from_metadata(ckpt, tmp_path):
    folder = _copy(ckpt, tmp_path)
    meta = json.loads((folder / "artifact.metadata").read_text())
    meta.update(attend_to_mask_tokens=True, query_maxlen=12)
    (folder / "artifact.metadata").write_text(json.dumps({"config": meta}))  # the nested layout is read too
    enc = load_encoder(folder, device="cpu")
    [q] = enc.tok.tokenize_queries(["hello"])
    assert len(q.ids) == 12 and q.attention == [1] * 12 and q.ids[-1] == MASK


def test_exact_document_tokens_and_skiplist(enc):
    tok = enc.tokenizer
    text = "hello, world! (a test)"
    words = tok(text, add_special_tokens=False)["input_ids"]
    [ids] = enc.tok.tokenize_documents([text], enc.doc_maxlen)
    assert ids == [CLS, D_MARK, *words, SEP]
    punct = {tok.encode(p, add_special_tokens=False)[0] for p in string.punctuation}
    assert set(enc.tok.skiplist) == punct
    keep = enc.tok.doc_keep(ids)
    assert [i for i, k in zip(ids, keep, strict=True) if k] == [i for i in ids if i not in punct]
    _, doclens = enc.encode_documents([text])
    assert doclens.tolist() == [sum(keep)]
    # truncation keeps [SEP] and the marker
    [ids] = enc.tok.tokenize_documents(["hello world " * 50], 8)
    assert len(ids) == 8 and ids[:2] == [CLS, D_MARK] and ids[-1] == SEP


def test_forward_equals_bertmodel_plus_linear(enc, ckpt):
    texts = ["hello, world! a test", "the quick brown fox jumps over the lazy dog.", "statins"]
    ids, mask = _stanford_query_tensorize(enc.tokenizer, texts, 32)
    ref = _reference_vectors(ckpt, ids, mask)
    Q, Q_mask = enc.encode_queries(texts)
    assert Q_mask.all()
    torch.testing.assert_close(Q, ref, atol=1e-5, rtol=0)

    vectors, doclens = enc.encode_documents(texts, bsize=2)
    expect = []
    for text in texts:
        [row] = enc.tok.tokenize_documents([text], enc.doc_maxlen)
        r = _reference_vectors(ckpt, torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long))[0]
        expect.append(r[torch.tensor(enc.tok.doc_keep(row))])
    assert doclens.tolist() == [len(e) for e in expect]
    torch.testing.assert_close(vectors.float(), torch.cat(expect), atol=2e-3, rtol=0)


def test_dim_truncation_renormalises(ckpt, enc):
    small = load_encoder(ckpt, dim=8, device="cpu")
    assert small.dim == 8 and small.settings()["native_dim"] == 16
    Q16, _ = enc.encode_queries(["hello world"])
    Q8, _ = small.encode_queries(["hello world"])
    torch.testing.assert_close(Q8, F.normalize(Q16[..., :8], dim=-1), atol=1e-5, rtol=0)  # proportional rows
    assert torch.allclose(Q8.norm(dim=-1), torch.ones(Q8.shape[:2]), atol=1e-5)
    with pytest.raises(ValueError):
        load_encoder(ckpt, dim=32, device="cpu")


@pytest.mark.parametrize("how", ["bin", "sharded"])
def test_weight_file_formats(ckpt, enc, tmp_path, how):
    folder = _copy(ckpt, tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    save_weights(folder, state, how)
    other = load_encoder(folder, device="cpu")
    texts = ["hello, world!"]
    torch.testing.assert_close(other.encode_documents(texts)[0], enc.encode_documents(texts)[0])


def _drop_bert_prefix(state):
    for key in [k for k in state if k.startswith("bert.")]:
        state[key[5:]] = state.pop(key)


def _edit_state(folder, fn):
    state = load_file(str(folder / "model.safetensors"))
    fn(state)
    save_weights(folder, state)


@pytest.mark.parametrize(
    "breakage, match",
    [
        (lambda f: (f / "model.safetensors").unlink(), "no weights"),
        (lambda f: (f / "config.json").unlink(), "config.json"),
        (lambda f: _edit_state(f, lambda s: s.pop("linear.weight")), "linear.weight"),
        (lambda f: _edit_state(f, lambda s: s.update({"bert.encoder.extra.weight": torch.zeros(2)})), "unexpected"),
        (lambda f: _edit_state(f, lambda s: s.update({"linear.bias": torch.zeros(16)})), "unexpected"),
        (lambda f: _edit_state(f, lambda s: s.pop("bert.encoder.layer.1.output.dense.weight")), "missing"),
        (lambda f: _edit_state(f, lambda s: s.update({"linear.weight": torch.zeros(16, 7)})), "linear.weight"),
        (lambda f: _edit_state(f, lambda s: s.update({"bert.embeddings.word_embeddings.weight": torch.zeros(5, 32)})),
         "shape"),
        (lambda f: _edit_state(f, _drop_bert_prefix), "prefix"),
        (lambda f: (f / "model.safetensors").write_bytes(b"not a safetensors file"), "cannot read"),
        (lambda f: (f / "artifact.metadata").write_text("{not json"), "artifact.metadata"),
        (lambda f: (f / "artifact.metadata").write_text(json.dumps({"query_token_id": "[NOPE]"})), "query marker"),
        (lambda f: (f / "artifact.metadata").write_text(json.dumps({"interaction": "flipr"})), "interaction"),
        (lambda f: _patch_config(f, auto_map={"AutoModel": "someone/custom--modeling.CustomModel"}), "remote code"),
        (lambda f: _patch_config(f, position_embedding_type="alibi"), "ALiBi"),
        (lambda f: _patch_config(f, model_type="no-such-model"), "model_type"),
    ],
)
def test_bad_folders_raise_checkpoint_format_error(ckpt, tmp_path, breakage, match):
    folder = _copy(ckpt, tmp_path)
    breakage(folder)
    with pytest.raises(CheckpointFormatError, match=match):
        load_encoder(folder, device="cpu")


def _patch_config(folder, **kw):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(kw)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_defaults_without_artifact_metadata(ckpt, tmp_path):
    folder = _copy(ckpt, tmp_path)
    (folder / "artifact.metadata").unlink()  # config.json still says HF_ColBERT
    enc = load_encoder(folder, device="cpu")
    assert (enc.format, enc.query_maxlen, enc.doc_maxlen) == ("stanford", 32, 128)
    assert not enc.tok.settings.attend_to_mask_tokens and enc.tok.settings.mask_punctuation


def test_legacy_layernorm_names_under_the_bert_prefix(ckpt, enc, tmp_path):
    folder = _copy(ckpt, tmp_path)
    assert rename_norms_to_legacy(folder) == 10
    assert "bert.embeddings.LayerNorm.gamma" in load_file(str(folder / "model.safetensors"))
    texts = ["hello, world!"]
    assert torch.equal(load_encoder(folder, device="cpu").encode_documents(texts)[0], enc.encode_documents(texts)[0])
