"""jina-colbert-v1-en layout (JinaBERT: symmetric ALiBi, GLU feed-forward) against a plain-torch forward of the spec."""
from __future__ import annotations

import json
import math
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lateragkit.exceptions import CheckpointFormatError
from lateragkit.models import load_encoder
from lateragkit.models.jinabert import JinaBertModel, alibi_slopes

from .fixtures_models import ENGLISH_TEXTS, save_weights, write_jinabert_colbert

CLS, Q_MARK, D_MARK, SEP, MASK = 4, 1, 2, 5, 6


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_jinabert_colbert(tmp_path_factory.mktemp("jinabert") / "ckpt")  # 6 heads: not a power of two


@pytest.fixture(scope="module")
def enc(ckpt):
    return load_encoder(ckpt, device="cpu")


def spec_slopes(n: int) -> list[float]:
    """The issue's slope rule, written out again: power of two, else 2^k slopes + slopes(2^(k+1))[0::2]."""
    if math.log2(n).is_integer():
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]
    k = 2 ** math.floor(math.log2(n))
    return spec_slopes(k) + spec_slopes(2 * k)[0::2][: n - k]


def reference_forward(state: dict[str, torch.Tensor], cfg: dict, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Plain-torch JinaBERT forward written from the issue's spec, with the full [heads, S, S] ALiBi bias."""
    h, nh, inter, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"], cfg["layer_norm_eps"]
    hd = h // nh
    p = lambda k: state["bert." + k].float()  # noqa: E731
    B, S = ids.shape
    x = p("embeddings.word_embeddings.weight")[ids] + p("embeddings.token_type_embeddings.weight")[0]
    x = F.layer_norm(x, (h,), p("embeddings.LayerNorm.weight"), p("embeddings.LayerNorm.bias"), eps)
    pos = torch.arange(S, dtype=torch.float32)
    alibi = -torch.tensor(spec_slopes(nh))[:, None, None] * (pos[:, None] - pos[None, :]).abs()
    pad = torch.zeros(B, 1, 1, S).masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    act = F.gelu if cfg["feed_forward_type"] == "geglu" else F.relu
    for i in range(cfg["num_hidden_layers"]):
        L = lambda k, i=i: p(f"encoder.layer.{i}.{k}")  # noqa: E731
        q, k, v = (
            (x @ L(f"attention.self.{n}.weight").T + L(f"attention.self.{n}.bias")).view(B, S, nh, hd).transpose(1, 2)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + alibi[None] + pad
        a = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, S, h)
        a = a @ L("attention.output.dense.weight").T + L("attention.output.dense.bias")
        x = F.layer_norm(x + a, (h,), L("attention.output.LayerNorm.weight"), L("attention.output.LayerNorm.bias"), eps)
        g = x @ L("mlp.gated_layers.weight").T
        m = (act(g[..., :inter]) * g[..., inter:]) @ L("mlp.wo.weight").T + L("mlp.wo.bias")
        x = F.layer_norm(x + m, (h,), L("mlp.layernorm.weight"), L("mlp.layernorm.bias"), eps)
    return x


def _reference(ckpt, ids, mask):
    state = load_file(str(ckpt / "model.safetensors"))
    cfg = json.loads((ckpt / "config.json").read_text())
    H = reference_forward(state, cfg, ids, mask)
    return H, F.normalize(H @ state["linear.weight"].T, dim=-1)


def _long_text(n_tokens_at_least: int, tok) -> str:
    parts: list[str] = []
    while len(tok(" ".join(parts))["input_ids"]) < n_tokens_at_least:
        parts.append(ENGLISH_TEXTS[len(parts) % len(ENGLISH_TEXTS)])
    return " ".join(parts)


# --------------------------------------------------------------------------------------------- slopes

def test_alibi_slopes_by_hand_and_by_rule():
    # 12 heads (jina-colbert-v1-en): slopes(8) = 2^-1..2^-8, then slopes(16)[0::2][:4] = 2^-0.5 .. 2^-3.5
    assert alibi_slopes(12) == pytest.approx([2.0**-e for e in (1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5, 2.5, 3.5)], rel=1e-12)
    # 6 heads: slopes(4) = 2^-2, 2^-4, 2^-6, 2^-8, then slopes(8)[0::2][:2] = 2^-1, 2^-3
    assert alibi_slopes(6) == pytest.approx([2.0**-e for e in (2, 4, 6, 8, 1, 3)], rel=1e-12)
    for n in (1, 2, 3, 5, 7, 8, 12, 16, 20, 24):
        assert alibi_slopes(n) == pytest.approx(spec_slopes(n), rel=1e-12)
    with pytest.raises(ValueError):
        alibi_slopes(0)


# --------------------------------------------------------------------------------------------- loading

def test_loads_natively_with_jina_lengths(enc, ckpt):
    assert isinstance(enc.model, JinaBertModel)
    assert enc.backbone.kind == "jinabert-alibi" and enc.format == "stanford"
    assert (enc.dim, enc.max_tokens, enc.query_maxlen, enc.doc_maxlen) == (16, 8192, 32, 180)
    assert enc.rerank_doc_maxlen == 8192  # jina-colbert-v1-en's 8192-token documents
    assert enc.rules.query_cap == 8192 - 4  # RAGatouille's max_position_embeddings - 4
    s = enc.settings()
    assert s["backbone"] == "jinabert-alibi" and s["rerank_doc_maxlen"] == 8192 and s["dim"] == 16
    # the remote code named in auto_map is recognised, never fetched nor imported
    assert not any(name.startswith("transformers_modules") for name in sys.modules)


def test_query_tokens_are_stanford(enc):
    words = enc.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    [q] = enc.tok.tokenize_queries(["hello world"])
    assert q.ids == [CLS, Q_MARK, *words, SEP] + [MASK] * (32 - len(words) - 3)
    assert q.attention == [1] * (len(words) + 3) + [0] * (32 - len(words) - 3)


# --------------------------------------------------------------------------------------------- forward

def test_forward_equals_spec_on_a_long_document(enc, ckpt):
    """A document longer than 512 tokens, one row, in several attention blocks, against the full-bias forward."""
    text = _long_text(600, enc.tokenizer)
    [row] = enc.tok.tokenize_documents([text], enc.rerank_doc_maxlen)
    assert len(row) > 512
    ids, mask = torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long)
    H_ref, ref = _reference(ckpt, ids, mask)
    model = enc.model
    try:
        for budget in (None, 6 * len(row) * 97, 6 * len(row) * 7):  # one block; blocks of 97 rows; of 7 rows
            model.block_elements = budget
            with torch.no_grad():
                H = model(input_ids=ids, attention_mask=mask).last_hidden_state
            assert (H - H_ref).abs().max() < 1e-4, budget  # fp32 sums over ~800 keys in another order
        model.block_elements = 6 * len(row) * 128
        vectors, doclens = enc.encode_documents([text], doc_maxlen=enc.rerank_doc_maxlen)
    finally:
        model.block_elements = None
    keep = torch.tensor(enc.tok.doc_keep(row))
    assert doclens.tolist() == [int(keep.sum())]
    assert (vectors.float() - ref[0][keep]).abs().max() < 2e-3  # fp16 storage


def test_padded_batch_and_queries_equal_spec(enc, ckpt):
    texts = ["hello, world! a test", "the quick brown fox jumps over the lazy dog. " * 3, "statins"]
    rows = enc.tok.tokenize_documents(texts, enc.doc_maxlen)
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    _, ref = _reference(ckpt, ids, mask)
    enc.model.block_elements = 3 * 6 * width * 5  # padded batch in blocks of 5 rows
    try:
        vectors, doclens = enc.encode_documents(texts, bsize=3)
    finally:
        enc.model.block_elements = None
    expect = torch.cat([ref[i, : len(r)][torch.tensor(enc.tok.doc_keep(r))] for i, r in enumerate(rows)])
    assert doclens.tolist() == [sum(enc.tok.doc_keep(r)) for r in rows]
    assert (vectors.float() - expect).abs().max() < 2e-3

    Q, Q_mask = enc.encode_queries(texts)
    for i, t in enumerate(enc.tok.tokenize_queries(texts)):
        _, r = _reference(ckpt, torch.tensor([t.ids]), torch.tensor([t.attention]))
        assert Q_mask[i].sum() == len(t.ids) == max(32, int(len(texts[i].split(" ")) * 1.35))
        assert (Q[i, : len(t.ids)] - r[0]).abs().max() < 5e-5


def test_reglu_and_power_of_two_heads(tmp_path):
    folder = write_jinabert_colbert(tmp_path / "reglu", feed_forward_type="reglu", num_attention_heads=4, seed=3)
    enc = load_encoder(folder, device="cpu")
    text = "the quick brown fox jumps over the lazy dog"
    [row] = enc.tok.tokenize_documents([text], enc.doc_maxlen)
    with torch.no_grad():
        H = enc.model(input_ids=torch.tensor([row])).last_hidden_state
    H_ref, _ = _reference(folder, torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long))
    assert (H - H_ref).abs().max() < 1e-4
    # the activation matters: the same weights under geglu differ
    cfg = json.loads((folder / "config.json").read_text())
    other = reference_forward(load_file(str(folder / "model.safetensors")), {**cfg, "feed_forward_type": "geglu"},
                              torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long))
    assert (H - other).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------- recognition and errors

def _copy(ckpt, tmp_path, **cfg_update):
    folder = tmp_path / "copy"
    shutil.copytree(ckpt, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(cfg_update)
    (folder / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
    return folder


def test_alibi_without_auto_map_is_jinabert(ckpt, enc, tmp_path):
    folder = _copy(ckpt, tmp_path, auto_map=None)
    other = load_encoder(folder, device="cpu")
    assert other.backbone.kind == "jinabert-alibi"
    texts = ["hello, world!"]
    torch.testing.assert_close(other.encode_documents(texts)[0], enc.encode_documents(texts)[0])


@pytest.mark.parametrize(
    "edit, match",
    [
        (dict(feed_forward_type="original"), "feed_forward_type"),
        (dict(num_attention_heads=5), "num_attention_heads"),
    ],
)
def test_bad_jinabert_configs(ckpt, tmp_path, edit, match):
    with pytest.raises(CheckpointFormatError, match=match):
        load_encoder(_copy(ckpt, tmp_path, **edit), device="cpu")


def test_bad_jinabert_weights(ckpt, tmp_path):
    folder = _copy(ckpt, tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state["bert.embeddings.position_embeddings.weight"] = torch.zeros(8192, 48)  # an absolute-position BERT
    state["bert.encoder.layer.0.mlp.gated_layers.bias"] = torch.zeros(80)
    save_weights(folder, state)
    with pytest.raises(CheckpointFormatError, match=r"JinaBERT, ALiBi.*unexpected keys.*position_embeddings"):
        load_encoder(folder, device="cpu")
    del state["bert.embeddings.position_embeddings.weight"], state["bert.encoder.layer.0.mlp.gated_layers.bias"]
    del state["bert.encoder.layer.1.mlp.wo.bias"]
    save_weights(folder, state)
    with pytest.raises(CheckpointFormatError, match=r"missing keys.*layer\.1\.mlp\.wo\.bias"):
        load_encoder(folder, device="cpu")
