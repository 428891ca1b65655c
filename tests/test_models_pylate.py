"""PyLate / sentence-transformers ColBERT layout (tiny random BERT + Dense chain)."""
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

from .fixtures_models import write_pylate_bert

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
