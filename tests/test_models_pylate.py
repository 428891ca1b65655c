"""PyLate / sentence-transformers ColBERT layout (tiny random BERT or ModernBERT + Dense chain)."""
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

from .fixtures_models import ENGLISH_TEXTS, rename_norms_to_legacy, write_pylate_bert, write_pylate_modernbert
from .test_models_lengths import pylate_query

CLS, SEP, MASK, PAD = 4, 5, 6, 0


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    # two Dense modules with bias: 32 -> 24 -> 16
    return write_pylate_bert(tmp_path_factory.mktemp("pylate") / "ckpt", dims=(24, 16), bias=True)


@pytest.fixture(scope="module")
def enc(ckpt):
    return load_encoder(ckpt, device="cpu")


def _reference(ckpt, ids, mask):
    from transformers import BertModel

    model = BertModel.from_pretrained(str(ckpt), add_pooling_layer=False).eval()
    with torch.no_grad():
        x = model(input_ids=ids, attention_mask=mask).last_hidden_state
    for sub in ("1_Dense", "2_Dense"):
        st = load_file(str(ckpt / sub / "model.safetensors"))
        x = x @ st["linear.weight"].T + st["linear.bias"]
    return F.normalize(x, dim=-1)


def test_settings(enc):
    s = enc.settings()
    assert (enc.format, enc.dim, enc.query_maxlen, enc.doc_maxlen) == ("pylate", 16, 32, 128)
    assert s["query_marker"] == "[Q] " and s["doc_marker"] == "[D] " and not s["attend_to_mask_tokens"]


def test_exact_tokens(enc):
    tok = enc.tokenizer
    q_id, d_id = tok.convert_tokens_to_ids("[Q] "), tok.convert_tokens_to_ids("[D] ")
    assert q_id != tok.unk_token_id and d_id != tok.unk_token_id
    words = tok("hello, world", add_special_tokens=False)["input_ids"]
    [q] = enc.tok.tokenize_queries(["hello, world"])
    n = len(words) + 3
    assert q.ids == [CLS, q_id, *words, SEP] + [MASK] * (32 - n)
    assert q.attention == [1] * n + [0] * (32 - n)
    [d] = enc.tok.tokenize_documents(["hello, world"], enc.doc_maxlen)
    assert d == [CLS, d_id, *words, SEP]
    # PyLate's skiplist: convert_tokens_to_ids of each punctuation word
    assert enc.tok.skiplist == frozenset(tok.convert_tokens_to_ids(list(string.punctuation)))
    assert enc.tok.doc_keep(d) == [t != tok.convert_tokens_to_ids(",") for t in d]


def test_forward_equals_bertmodel_plus_dense_chain(enc, ckpt):
    texts = ["hello, world", "the quick brown fox jumps over the lazy dog."]
    Q, Q_mask = enc.encode_queries(texts)
    toks = enc.tok.tokenize_queries(texts)
    ids = torch.tensor([t.ids for t in toks])
    mask = torch.tensor([t.attention for t in toks])
    torch.testing.assert_close(Q, _reference(ckpt, ids, mask), atol=1e-5, rtol=0)
    vectors, doclens = enc.encode_documents(texts)
    expect = []
    for text in texts:
        [row] = enc.tok.tokenize_documents([text], enc.doc_maxlen)
        r = _reference(ckpt, torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long))[0]
        expect.append(r[torch.tensor(enc.tok.doc_keep(row))])
    torch.testing.assert_close(vectors.float(), torch.cat(expect), atol=2e-3, rtol=0)


def _patched(ckpt, tmp_path, **st):
    folder = tmp_path / "copy"
    shutil.copytree(ckpt, folder)
    cfg = json.loads((folder / "config_sentence_transformers.json").read_text())
    cfg.update(st)
    (folder / "config_sentence_transformers.json").write_text(json.dumps(cfg))
    return folder


def test_no_expansion_no_prefix_attend(ckpt, tmp_path):
    enc = load_encoder(_patched(ckpt, tmp_path, do_query_expansion=False, query_prefix="", document_prefix="",
                                skiplist_words=[]), device="cpu")
    words = enc.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    [q] = enc.tok.tokenize_queries(["hello world"])
    assert q.ids == [CLS, *words, SEP] and all(q.scored)
    assert enc.num_special_doc_tokens == 2 and not enc.tok.skiplist
    Q, Q_mask = enc.encode_queries(["hello world", "a b c d e f g h"])
    assert Q_mask[0].sum() == len(words) + 2


def test_attend_to_expansion_tokens(ckpt, tmp_path):
    enc = load_encoder(_patched(ckpt, tmp_path, attend_to_expansion_tokens=True, query_length=10), device="cpu")
    [q] = enc.tok.tokenize_queries(["hello"])
    assert len(q.ids) == 10 and q.attention == [1] * 10


def test_bad_pylate_folders(ckpt, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(ckpt, folder)
    mods = json.loads((folder / "modules.json").read_text())
    mods.append({"idx": 3, "name": "3", "path": "3_Pooling", "type": "sentence_transformers.models.Pooling"})
    (folder / "modules.json").write_text(json.dumps(mods))
    with pytest.raises(CheckpointFormatError, match="Pooling"):
        load_encoder(folder, device="cpu")
    mods.pop()
    (folder / "modules.json").write_text(json.dumps(mods))
    cfg = json.loads((folder / "2_Dense" / "config.json").read_text())
    (folder / "2_Dense" / "config.json").write_text(json.dumps({**cfg, "in_features": 7}))
    with pytest.raises(CheckpointFormatError, match="in_features"):
        load_encoder(folder, device="cpu")
    (folder / "2_Dense" / "config.json").write_text(json.dumps({**cfg, "activation_function": "os.system"}))
    with pytest.raises(CheckpointFormatError, match="activation"):
        load_encoder(folder, device="cpu")
    (folder / "2_Dense" / "config.json").write_text(json.dumps({**cfg, "bias": False}))
    with pytest.raises(CheckpointFormatError, match="Dense weights"):
        load_encoder(folder, device="cpu")


# --------------------------------------------------------------------------------------------- legacy norm names

def test_layernorm_gamma_beta_as_pylate_1_6_writes_them(ckpt, enc, tmp_path):
    """PyLate 1.6 pins transformers <= 5.3, whose save_pretrained writes BERT norms as LayerNorm.gamma / .beta."""
    folder = tmp_path / "legacy"
    shutil.copytree(ckpt, folder)
    assert rename_norms_to_legacy(folder) == 2 * (1 + 2 * 2)  # embeddings + 2 per layer, weight and bias
    keys = set(load_file(str(folder / "model.safetensors")))
    assert "embeddings.LayerNorm.gamma" in keys and "encoder.layer.1.output.LayerNorm.beta" in keys
    assert not any(k.endswith("LayerNorm.weight") for k in keys)
    other = load_encoder(folder, device="cpu")
    texts = ["hello, world", "the quick brown fox jumps over the lazy dog."]
    assert torch.equal(other.encode_queries(texts)[0], enc.encode_queries(texts)[0])
    assert torch.equal(other.encode_documents(texts)[0], enc.encode_documents(texts)[0])


# --------------------------------------------------------------------------------------------- ModernBERT

@pytest.fixture(scope="module")
def modern(tmp_path_factory):
    return write_pylate_modernbert(tmp_path_factory.mktemp("modernbert") / "ckpt", tokenizer_max_length=256)


def _modern_reference(folder, ids, mask):
    """transformers' own ModernBertModel + the Dense head, on the same files."""
    from transformers import ModernBertModel

    model = ModernBertModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        x = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return F.normalize(x @ load_file(str(folder / "1_Dense" / "model.safetensors"))["linear.weight"].T, dim=-1)


def test_modernbert_pylate_checkpoint(modern):
    """GTE-ModernColBERT-v1 layout: native ModernBertModel, PyLate's prefixes and lengths, [MASK] expansion."""
    from transformers import ModernBertModel

    enc = load_encoder(modern, device="cpu")
    assert isinstance(enc.model, ModernBertModel) and enc.backbone.kind == "native:modernbert"
    assert (enc.format, enc.dim, enc.query_maxlen, enc.doc_maxlen) == ("pylate", 16, 32, 300)
    assert (enc.rerank_doc_maxlen, enc.max_tokens) == (300, 512)  # the tokenizer's model_max_length 256 is moot
    tok = enc.tokenizer
    q_id, d_id = tok.convert_tokens_to_ids("[Q] "), tok.convert_tokens_to_ids("[D] ")
    assert tok.mask_token_id not in (None, tok.pad_token_id)

    queries = ["What is late interaction?", " ".join(["retrieval, ranking"] * 20)]  # the second is cut at 32
    toks = enc.tok.tokenize_queries(queries)
    for text, t in zip(queries, toks, strict=True):
        assert (t.ids, t.attention) == pylate_query(tok, text, 32, q_id)
    assert toks[0].ids[-1] == tok.mask_token_id and toks[1].ids[-1] == tok.sep_token_id
    Q, Q_mask = enc.encode_queries(queries)
    ref = _modern_reference(modern, torch.tensor([t.ids for t in toks]), torch.tensor([t.attention for t in toks]))
    assert Q_mask.all() and Q.shape == (2, 32, 16)
    torch.testing.assert_close(Q, ref, atol=2e-5, rtol=0)

    # documents: ST strips the text; a long one spans several 16-token local-attention windows
    docs = ["  Late interaction, as in ColBERT: every token counts.  ", " ".join(ENGLISH_TEXTS[:4])]
    skip = set(tok.convert_tokens_to_ids(list(string.punctuation)))
    vectors, doclens = enc.encode_documents(docs, bsize=2)
    expect = []
    for text in docs:
        raw = tok(text.strip(), truncation=True, max_length=299)["input_ids"]
        row = raw[:1] + [d_id] + raw[1:]
        assert enc.tok.tokenize_documents([text], 300) == [row]
        r = _modern_reference(modern, torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long))[0]
        expect.append(r[torch.tensor([t not in skip for t in row])])
    assert len(expect[1]) > 48 and doclens.tolist() == [len(e) for e in expect]
    torch.testing.assert_close(vectors.float(), torch.cat(expect), atol=2e-3, rtol=0)


def test_modernbert_legacy_norm_names(modern, tmp_path):
    folder = tmp_path / "legacy"
    shutil.copytree(modern, folder)
    assert rename_norms_to_legacy(folder) > 0  # ModernBERT norms have no bias: `norm.gamma` only
    texts = ["hello, world", "late interaction"]
    a, b = load_encoder(modern, device="cpu"), load_encoder(folder, device="cpu")
    assert torch.equal(a.encode_documents(texts)[0], b.encode_documents(texts)[0])
