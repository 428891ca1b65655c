"""JinaBERT (symmetric ALiBi, GLU feed-forward) in plain torch: the backbone of jina-colbert-v1-en.

Written from the architecture as text-embeddings-inference (`backends/candle/src/models/jina.rs`, `alibi.rs`) and
vLLM implement it; jina's remote code (`jinaai/jina-bert-implementation`) is recognised in `config.json`, never
run. Parameter names are those of the checkpoints (under ``bert.`` in a Stanford `HF_ColBERT` folder):

    embeddings.{word_embeddings, token_type_embeddings, LayerNorm}           (no position table)
    encoder.layer.{i}.attention.self.{query, key, value}
    encoder.layer.{i}.attention.output.{dense, LayerNorm}
    encoder.layer.{i}.mlp.gated_layers (no bias, [2·I, H]), mlp.wo, mlp.layernorm

Per layer (post-LN, as BERT): ``a = softmax(QKᵀ/√d − slope_h·|i − j| + key_mask) V``; ``h = LN(h + dense(a))``;
``g = gated_layers(h)``; ``h = LN(h + wo(act(g[..., :I]) * g[..., I:]))`` with exact GELU (geglu) or ReLU (reglu).

Memory: the ALiBi bias is never built for the whole sequence ([heads, S, S] would be 3.2 GB in fp32 for one
8,190-token document). Attention runs over blocks of query rows with SDPA and a bias built for that block only,
and everything after attention (dense, norms, feed-forward) is row-wise, so it runs on the same block: per layer
the extra memory is Q, K, V and one block's bias, scores and feed-forward activations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..exceptions import CheckpointFormatError

__all__ = ["JinaBertConfig", "JinaBertModel", "JinaBertOutput", "alibi_slopes", "alibi_bias", "is_jinabert_config"]

# Elements of one block's attention bias (batch x heads x rows x keys): 2**24 fp32 = 64 MB on CPU; more on CUDA.
CPU_BLOCK_ELEMENTS = 1 << 24
CUDA_BLOCK_ELEMENTS = 1 << 27
_GLU_ACTIVATIONS = {"geglu": "gelu", "reglu": "relu"}


def is_jinabert_config(cfg: dict[str, Any]) -> bool:
    """True for a JinaBERT config: ALiBi positions, or an `auto_map` naming jina-bert-implementation."""
    auto_map = cfg.get("auto_map") or {}
    remote = " ".join(str(v) for v in (auto_map.values() if isinstance(auto_map, dict) else [auto_map]))
    return "jina-bert-implementation" in remote or str(cfg.get("position_embedding_type", "")) == "alibi"


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi head slopes (MosaicBERT / jina rule).

    A power of two n: ``start = 2^(−2^−(log2 n − 3))`` and slopes ``start · start^i``. Otherwise the slopes of the
    closest lower power of two 2^k, then ``slopes(2·2^k)[0::2][: n − 2^k]``.
    """
    if n_heads < 1:
        raise ValueError(f"n_heads must be positive, got {n_heads}")
    if n_heads & (n_heads - 1) == 0:
        start = 2.0 ** (-(2.0 ** -(math.log2(n_heads) - 3)))
        return [start * start**i for i in range(n_heads)]
    lower = 1 << (n_heads.bit_length() - 1)
    return alibi_slopes(lower) + alibi_slopes(2 * lower)[0::2][: n_heads - lower]


def alibi_bias(slopes: torch.Tensor, rows: range, n_keys: int) -> torch.Tensor:
    """The symmetric ALiBi bias ``−slope_h · |i − j|`` of query rows `rows` and keys 0..n_keys-1: [heads, r, keys]."""
    i = torch.arange(rows.start, rows.stop, device=slopes.device, dtype=torch.float32)
    j = torch.arange(n_keys, device=slopes.device, dtype=torch.float32)
    distance = (i[:, None] - j[None, :]).abs()
    return -slopes.float()[:, None, None] * distance[None]


@dataclass
class JinaBertConfig:
    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 8192
    pad_token_id: int = 0
    feed_forward_type: str = "geglu"

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], vocab_size: int) -> JinaBertConfig:
        """The config of a JinaBERT `config.json` (checked: GLU feed-forward, whole heads)."""
        ff = str(cfg.get("feed_forward_type", "geglu"))
        if ff not in _GLU_ACTIVATIONS:
            raise CheckpointFormatError(
                f"JinaBERT (ALiBi) feed_forward_type {ff!r} is not supported: only 'geglu' and 'reglu' "
                f"(jina-colbert-v1-en and the jina-embeddings-v2 models) are"
            )
        try:
            config = cls(
                vocab_size=int(vocab_size),
                hidden_size=int(cfg.get("hidden_size", 768)),
                num_hidden_layers=int(cfg.get("num_hidden_layers", 12)),
                num_attention_heads=int(cfg.get("num_attention_heads", 12)),
                intermediate_size=int(cfg.get("intermediate_size", 3072)),
                type_vocab_size=int(cfg.get("type_vocab_size", 2)),
                layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 8192)),
                pad_token_id=int(cfg.get("pad_token_id", 0) or 0),
                feed_forward_type=ff,
            )
        except (TypeError, ValueError) as exc:
            raise CheckpointFormatError(f"JinaBERT config.json holds an invalid value: {exc}") from exc
        if config.num_attention_heads < 1 or config.hidden_size % config.num_attention_heads:
            raise CheckpointFormatError(
                f"JinaBERT hidden_size {config.hidden_size} is not a multiple of num_attention_heads "
                f"{config.num_attention_heads}"
            )
        return config


@dataclass
class JinaBertOutput:
    last_hidden_state: torch.Tensor


class JinaBertEmbeddings(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x)


class JinaBertSelfAttention(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)


class JinaBertSelfOutput(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class JinaBertAttention(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.self = JinaBertSelfAttention(config)
        self.output = JinaBertSelfOutput(config)


class JinaBertGLUMLP(nn.Module):
    """``LN(x + wo(act(g[..., :I]) * g[..., I:]))`` with ``g = gated_layers(x)`` (no bias)."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.act = nn.GELU(approximate="none") if config.feed_forward_type == "geglu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gated_layers(x)
        inner = self.act(g[..., : self.intermediate_size]) * g[..., self.intermediate_size :]
        return self.layernorm(x + self.wo(inner))


class JinaBertLayer(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.attention = JinaBertAttention(config)
        self.mlp = JinaBertGLUMLP(config)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        return x.view(b, s, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, h: torch.Tensor, padding: torch.Tensor | None, slopes: torch.Tensor, block_rows: int
    ) -> torch.Tensor:
        """One layer over `h` [B, S, H]; `padding` [B, 1, 1, S] is True for padded keys (None: no padding)."""
        att = self.attention
        q, k, v = (self._heads(lin(h)) for lin in (att.self.query, att.self.key, att.self.value))
        b, s, width = h.shape
        out = torch.empty_like(h)
        for start in range(0, s, block_rows):
            rows = range(start, min(s, start + block_rows))
            bias = alibi_bias(slopes, rows, s)[None].to(q.dtype)
            if padding is not None:
                bias = torch.where(padding, torch.finfo(q.dtype).min, bias)
            ctx = F.scaled_dot_product_attention(q[:, :, rows.start : rows.stop], k, v, attn_mask=bias)
            ctx = ctx.transpose(1, 2).reshape(b, len(rows), width)
            x = att.output.LayerNorm(h[:, rows.start : rows.stop] + att.output.dense(ctx))
            out[:, rows.start : rows.stop] = self.mlp(x)
        return out


class JinaBertEncoder(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(JinaBertLayer(config) for _ in range(config.num_hidden_layers))


class JinaBertModel(nn.Module):
    """JinaBERT encoder returning ``.last_hidden_state``; attention in bounded-memory blocks of query rows.

    `block_elements` caps one block's bias (batch × heads × rows × keys); None picks 2**24 on CPU, 2**27 on CUDA.
    """

    base_model_prefix = "bert"

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = JinaBertEmbeddings(config)
        self.encoder = JinaBertEncoder(config)
        self.block_elements: int | None = None

    def block_rows(self, batch: int, seq_len: int, device: torch.device) -> int:
        budget = self.block_elements
        if budget is None:
            budget = CUDA_BLOCK_ELEMENTS if device.type == "cuda" else CPU_BLOCK_ELEMENTS
        return max(1, min(seq_len, budget // max(1, batch * self.config.num_attention_heads * seq_len)))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> JinaBertOutput:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = self.embeddings(input_ids, token_type_ids)
        b, s = input_ids.shape
        padding = None
        if attention_mask is not None and not bool(attention_mask.all()):
            padding = (attention_mask == 0)[:, None, None, :]
        slopes = torch.tensor(alibi_slopes(self.config.num_attention_heads), device=h.device)
        rows = self.block_rows(b, s, h.device)
        for layer in self.encoder.layer:
            h = layer(h, padding, slopes, rows)
        return JinaBertOutput(last_hidden_state=h)
