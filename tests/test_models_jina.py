"""jina-colbert-v2 layout (XLM-R + RoPE flash implementation) loaded natively as JinaEmbeddingsV3Model."""
from __future__ import annotations

import json
import math
import shutil
import string

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lateragkit.exceptions import CheckpointFormatError
from lateragkit.models import load_encoder
from lateragkit.models.backbones import keep_rotary_fp32, remap_jina_keys

from .fixtures_models import write_jina_colbert

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "JinaEmbeddingsV3Model"):  # pragma: no cover
    pytest.skip("transformers without JinaEmbeddingsV3Model", allow_module_level=True)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_jina_colbert(tmp_path_factory.mktemp("jina") / "ckpt")


@pytest.fixture(scope="module")
def enc(ckpt):
    return load_encoder(ckpt, device="cpu")


def jina_reference_forward(state: dict[str, torch.Tensor], cfg: dict, ids: torch.Tensor, mask: torch.Tensor):
    """Plain-torch forward written from checkpoints.md §3.4, on jina's original key names."""
    h, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd, eps, base = h // nh, cfg["layer_norm_eps"], cfg["rotary_emb_base"]
    p = lambda k: state["roberta." + k].float()  # noqa: E731
    B, S = ids.shape
    x = p("embeddings.word_embeddings.weight")[ids] + p("embeddings.token_type_embeddings.weight")[0]
    x = F.layer_norm(x, (h,), p("emb_ln.weight"), p("emb_ln.bias"), eps)
    inv_freq = 1.0 / base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    angle = torch.arange(S, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)

    def rope(t):  # t: [B, nh, S, hd], non-interleaved (rotate_half)
        t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
        return t * cos + torch.cat([-t2, t1], -1) * sin

    bias = torch.zeros(B, 1, 1, S).masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    for i in range(cfg["num_hidden_layers"]):
        L = lambda k, i=i: p(f"encoder.layers.{i}.{k}")  # noqa: E731
        qkv = (x @ L("mixer.Wqkv.weight").T + L("mixer.Wqkv.bias")).view(B, S, 3, nh, hd)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        q, k = rope(q), rope(k)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1) @ v
        a = att.transpose(1, 2).reshape(B, S, h) @ L("mixer.out_proj.weight").T + L("mixer.out_proj.bias")
        x = F.layer_norm(x + a, (h,), L("norm1.weight"), L("norm1.bias"), eps)
        m = F.gelu(x @ L("mlp.fc1.weight").T + L("mlp.fc1.bias")) @ L("mlp.fc2.weight").T + L("mlp.fc2.bias")
        x = F.layer_norm(x + m, (h,), L("norm2.weight"), L("norm2.bias"), eps)
    return x


def _ref_vectors(ckpt, ids, mask):
    state = load_file(str(ckpt / "model.safetensors"))
    cfg = json.loads((ckpt / "config.json").read_text())
    H = jina_reference_forward(state, cfg, ids, mask)
    return H, F.normalize(H @ state["linear.weight"].float().T, dim=-1)


def test_loads_natively(enc):
    from transformers import JinaEmbeddingsV3Model

    assert isinstance(enc.model, JinaEmbeddingsV3Model)
    assert enc.model.config._attn_implementation == "sdpa"
    assert enc.backbone.kind == "jina-xlmr-rope" and enc.format == "stanford"
    assert enc.model.config.rope_parameters["rope_theta"] == 10000.0  # read from config.json
    assert enc.dim == 16 and enc.query_maxlen == 32 and enc.max_tokens == 8194 and enc.doc_maxlen == 8192
    assert enc.rerank_doc_maxlen == enc.rules.query_cap == 8194 - 4  # RAGatouille: max_position_embeddings - 4


def test_exact_tokens_and_sentencepiece_skiplist(enc):
    tok = enc.tokenizer
    qm, dm, mask_id = (tok.convert_tokens_to_ids(t) for t in ("[QueryMarker]", "[DocumentMarker]", "<mask>"))
    assert mask_id == qm - 1 == dm - 2  # same order as the real model (250001, 250002, 250003)
    words = tok("Hello world", add_special_tokens=False)["input_ids"]
    [q] = enc.tok.tokenize_queries(["Hello world"])
    assert q.ids == [0, qm, *words, 2] + [mask_id] * (32 - len(words) - 3)
    assert q.attention == [1] * 32  # attend_to_mask_tokens: true in the metadata
    [d] = enc.tok.tokenize_documents(["Hello world."], enc.doc_maxlen)
    assert d[:2] == [0, dm] and d[-1] == 2
    # "." is encoded as "▁" + "."; the bare "▁" piece must not be skipped, "." must
    bare = tok.convert_tokens_to_ids("\u2581")
    assert tok.encode(".", add_special_tokens=False)[0] == bare
    assert bare not in enc.tok.skiplist
    assert tok.convert_tokens_to_ids(".") in enc.tok.skiplist
    for sym in string.punctuation:
        assert any(i in enc.tok.skiplist for i in tok.encode(sym, add_special_tokens=False)) or \
            tok.encode(sym, add_special_tokens=False) == [bare]


def test_forward_equals_plain_torch_reference(enc, ckpt):
    texts = ["Wie viele Einwohner hat Berlin?", " ".join(["The quick brown fox jumps over the lazy dog."] * 3)]
    toks = enc.tok.tokenize_queries(texts)
    assert len(toks[0].ids) == 32 < len(toks[1].ids) == 36  # RAGatouille: 27 words -> int(27 * 1.35) rows
    Q, Q_mask = enc.encode_queries(texts)
    for i, t in enumerate(toks):
        ids, mask = torch.tensor([t.ids]), torch.tensor([t.attention])
        H_ref, ref = _ref_vectors(ckpt, ids, mask)
        with torch.no_grad():
            H = enc.model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert (H - H_ref).abs().max() < 1e-5
        assert Q_mask[i].sum() == len(t.ids)
        assert (Q[i, : len(t.ids)] - ref[0]).abs().max() < 1e-5

    # documents: a padded batch (the shorter row has key padding)
    vectors, doclens = enc.encode_documents(texts, bsize=2)
    rows = enc.tok.tokenize_documents(texts, enc.doc_maxlen)
    width = max(map(len, rows))
    ids = torch.tensor([r + [1] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    _, ref = _ref_vectors(ckpt, ids, mask)
    expect = torch.cat([ref[i, : len(r)][torch.tensor(enc.tok.doc_keep(r))] for i, r in enumerate(rows)])
    assert doclens.tolist() == [sum(enc.tok.doc_keep(r)) for r in rows]
    assert (vectors.float() - expect).abs().max() < 2e-3  # fp16 storage


def test_rotary_without_auto_map_and_bf16_weights(ckpt, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(ckpt, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("auto_map")  # position_embedding_type "rotary" alone picks the jina backbone
    (folder / "config.json").write_text(json.dumps(cfg))
    state = load_file(str(folder / "model.safetensors"))
    from safetensors.torch import save_file

    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(folder / "model.safetensors"))
    enc = load_encoder(folder, device="cpu")
    assert enc.backbone.kind == "jina-xlmr-rope"
    assert next(enc.model.parameters()).dtype == torch.float32  # CPU computes in float32


def test_rotary_inv_freq_stays_fp32_in_bf16(enc, ckpt):
    other = load_encoder(ckpt, device="cpu")
    ref = other.model.rotary_emb.inv_freq.clone()
    other.model.to(torch.bfloat16)
    assert other.model.rotary_emb.inv_freq.dtype == torch.bfloat16
    keep_rotary_fp32(other.model)
    assert other.model.rotary_emb.inv_freq.dtype == torch.float32
    assert torch.equal(other.model.rotary_emb.inv_freq, ref)


def test_remap_and_bad_jina_checkpoints(ckpt, tmp_path):
    state = {k[len("roberta."):]: v for k, v in load_file(str(ckpt / "model.safetensors")).items()
             if k.startswith("roberta.")}
    out = remap_jina_keys(state)
    wqkv = state["encoder.layers.0.mixer.Wqkv.weight"]
    h = wqkv.shape[1]
    assert torch.equal(out["layers.0.self_attn.k_proj.weight"], wqkv[h:2 * h])
    assert "embeddings.LayerNorm.weight" in out and "layers.1.post_mlp_layernorm.bias" in out
    with pytest.raises(CheckpointFormatError, match="LoRA"):
        remap_jina_keys({"encoder.layers.0.mixer.Wqkv.parametrizations.weight.original": wqkv})

    folder = tmp_path / "bad"
    shutil.copytree(ckpt, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "rotary_emb_interleaved": True}))
    with pytest.raises(CheckpointFormatError, match="interleaved"):
        load_encoder(folder, device="cpu")
