"""Backbone construction with native transformers classes only (never remote code).

- Native model types (bert, roberta, xlm-roberta, electra, deberta-v2, modernbert, ...): the transformers
  class of `config.json`, attention through SDPA.
- jina's "xlm-roberta-flash-implementation" (XLM-R + RoPE, jina-colbert-v2): `JinaEmbeddingsV3Model` with a
  config built from the flash config and the checkpoint keys remapped (checkpoints.md §3.4).
- JinaBERT (symmetric ALiBi, GLU feed-forward; jina-colbert-v1-en): lateragkit's own plain-torch model
  (`jinabert.py`), the checkpoint keys as they are.

Models are built on the meta device and receive the checkpoint tensors directly (no random init), with every
missing or unexpected key reported as a `CheckpointFormatError`. Legacy LayerNorm names (`gamma` / `beta`, as
transformers <= 5.3 writes BERT norms) are read as `weight` / `bias`, as transformers itself does on load.
"""
from __future__ import annotations

import inspect
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..exceptions import CheckpointFormatError
from .jinabert import JinaBertConfig, JinaBertModel, is_jinabert_config

logger = logging.getLogger(__name__)

# Keys of a checkpoint that inference never needs.
_IGNORED_KEY = re.compile(r"(^|\.)pooler\.|(^|\.)position_ids$|^cls\.|^lm_head\.")
_ROBERTA_LIKE = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "roberta-prelayernorm"}
_DEFAULT_ROPE_BASE = 20000.0


@dataclass
class Backbone:
    model: nn.Module
    hidden_size: int
    max_tokens: int  # most tokens one sequence may have, specials included
    kind: str  # "native:<model_type>", "jina-xlmr-rope" or "jinabert-alibi"
    max_positions: int  # the config's max_position_embeddings (RAGatouille's lengths derive from it)


def is_ignored_key(key: str) -> bool:
    return bool(_IGNORED_KEY.search(key))


def backbone_kind(cfg: dict[str, Any]) -> str:
    """"jina-xlmr" (jina's XLM-R flash implementation), "jinabert" (ALiBi) or "native" (a transformers model type)."""
    auto_map = cfg.get("auto_map") or {}
    remote = " ".join(str(v) for v in (auto_map.values() if isinstance(auto_map, dict) else [auto_map]))
    pos = str(cfg.get("position_embedding_type", "absolute"))
    if "xlm-roberta-flash-implementation" in remote or pos == "rotary":
        return "jina-xlmr"
    if is_jinabert_config(cfg):
        return "jinabert"
    if auto_map:
        raise CheckpointFormatError(
            f"config.json asks for remote code ({remote}); lateragkit only runs native transformers "
            f"classes and never executes code from a checkpoint"
        )
    return "native"


# --------------------------------------------------------------------------------------------- jina XLM-R

def jina_config(cfg: dict[str, Any], vocab_size: int) -> Any:
    """`JinaEmbeddingsV3Config` for an XLMRobertaFlashConfig dict (checkpoints.md §3.4)."""
    try:
        from transformers import JinaEmbeddingsV3Config
    except ImportError as exc:  # pragma: no cover - depends on the installed transformers
        raise CheckpointFormatError(
            "this checkpoint needs transformers' JinaEmbeddingsV3Model (transformers >= 5.23): "
            "pip install -U transformers"
        ) from exc
    hidden = int(cfg.get("hidden_size", 1024))
    heads = int(cfg.get("num_attention_heads", 16))
    head_dim = hidden // heads
    if cfg.get("rotary_emb_dim") not in (None, head_dim):
        raise CheckpointFormatError(f"partial rotary (rotary_emb_dim={cfg['rotary_emb_dim']}) is not supported")
    if cfg.get("rotary_emb_scale_base") is not None or cfg.get("rotary_emb_interleaved"):
        raise CheckpointFormatError("scaled or interleaved rotary embeddings are not supported")
    act = str(cfg.get("hidden_act", "gelu"))
    if act != "gelu":
        raise CheckpointFormatError(f"hidden_act {act!r} is not supported for the jina XLM-R backbone")
    base = cfg.get("rotary_emb_base")
    if base is None:
        logger.warning("config.json has no rotary_emb_base: assuming %s (jina-embeddings-v3)", _DEFAULT_ROPE_BASE)
        base = _DEFAULT_ROPE_BASE
    return JinaEmbeddingsV3Config(
        vocab_size=int(vocab_size),
        hidden_size=hidden,
        num_hidden_layers=int(cfg.get("num_hidden_layers", 24)),
        num_attention_heads=heads,
        intermediate_size=int(cfg.get("intermediate_size", 4096)),
        hidden_act="gelu",
        type_vocab_size=int(cfg.get("type_vocab_size", 1)),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 8194)),
        layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-5)),
        pad_token_id=int(cfg.get("pad_token_id", 1)),
        bos_token_id=int(cfg.get("bos_token_id", 0)),
        eos_token_id=int(cfg.get("eos_token_id", 2)),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        rope_parameters={"rope_type": "default", "rope_theta": float(base)},
    )


_JINA_RENAMES = [
    (re.compile(r"^emb_ln\."), "embeddings.LayerNorm."),
    (re.compile(r"^encoder\.layers\."), "layers."),
    (re.compile(r"\.mixer\.out_proj\."), ".self_attn.o_proj."),
    (re.compile(r"\.norm1\."), ".post_attention_layernorm."),
    (re.compile(r"\.norm2\."), ".post_mlp_layernorm."),
]


def remap_jina_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """jina flash-implementation keys (without the `roberta.` prefix) -> `JinaEmbeddingsV3Model` keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if "lora_A" in key or "lora_B" in key or "parametrizations" in key:
            raise CheckpointFormatError(
                f"LoRA tensors ({key}) are not supported: jina-colbert-v2 has none; merge adapters first"
            )
        new = key
        for pattern, repl in _JINA_RENAMES:
            new = pattern.sub(repl, new)
        m = re.search(r"\.mixer\.Wqkv\.(weight|bias)$", new)
        if m:
            if value.shape[0] % 3:
                raise CheckpointFormatError(f"{key} has shape {tuple(value.shape)}, not divisible in 3 (q, k, v)")
            stem = new[: m.start()] + ".self_attn."
            for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{stem}{name}_proj.{m.group(1)}"] = part.contiguous()
            continue
        out[new] = value
    return out


# --------------------------------------------------------------------------------------------- building

def _strip_prefix(state: dict[str, torch.Tensor], prefix: str, *, required: bool) -> dict[str, torch.Tensor]:
    """Keys under `prefix.` with the prefix removed, plus the other keys unchanged (checked later)."""
    p = prefix + "."
    if not any(k.startswith(p) for k in state):
        if required:
            raise CheckpointFormatError(f"no backbone weights under the expected prefix {p!r}")
        return dict(state)
    return {(k[len(p):] if k.startswith(p) else k): v for k, v in state.items()}


def _fix_meta_buffers(model: nn.Module, config: Any) -> None:
    """Materialise the non-persistent buffers left on the meta device (they are functions of the config)."""
    for mod_name, module in list(model.named_modules()):
        meta = [n for n, b in module.named_buffers(recurse=False) if b is not None and b.is_meta]
        if not meta:
            continue
        if "Rotary" in type(module).__name__:
            fresh = type(module)(config)  # cheap: only the inverse frequencies
            parent = model.get_submodule(mod_name.rsplit(".", 1)[0]) if "." in mod_name else model
            setattr(parent, mod_name.rsplit(".", 1)[-1], fresh)
            continue
        for name in meta:
            buf = getattr(module, name)
            if name == "position_ids":
                value = torch.arange(buf.shape[-1], dtype=buf.dtype).expand(buf.shape).contiguous()
            elif name == "token_type_ids":
                value = torch.zeros(buf.shape, dtype=buf.dtype)
            else:
                raise CheckpointFormatError(f"cannot materialise buffer {mod_name}.{name} of {type(model).__name__}")
            module.register_buffer(name, value, persistent=False)


_LEGACY_NORM_NAMES = ((".gamma", ".weight"), (".beta", ".bias"))


def legacy_norm_names(state: dict[str, torch.Tensor], expected: Any) -> dict[str, torch.Tensor]:
    """`state` with legacy norm names (`….gamma` / `….beta`) read as `….weight` / `….bias` where the model has those.

    transformers <= 5.3 (the releases PyLate 1.6 pins) writes BERT LayerNorms under the legacy names; transformers
    renames them on load, and so does lateragkit. A key is renamed only when the model lacks it and has the new name.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in expected:
            for old, new in _LEGACY_NORM_NAMES:
                if key.endswith(old) and key[: -len(old)] + new in expected:
                    key = key[: -len(old)] + new
                    break
        out[key] = value
    return out


def _instantiate(cls: type, config: Any, state: dict[str, torch.Tensor], dtype: torch.dtype, where: str) -> nn.Module:
    takes_pooler = "add_pooling_layer" in inspect.signature(cls).parameters
    kwargs = {"add_pooling_layer": False} if takes_pooler else {}
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = cls(config, **kwargs)
    expected = model.state_dict()
    state = legacy_norm_names(state, expected)
    missing = sorted(k for k in expected if k not in state and not is_ignored_key(k))
    unexpected = sorted(k for k in state if k not in expected and not is_ignored_key(k))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        raise CheckpointFormatError(f"{where} does not match {cls.__name__}: " + "; ".join(parts))
    bad = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise CheckpointFormatError(f"{where}: tensor shapes do not match the config: {bad[:5]}")
    load = {
        k: (state[k].to(dtype) if state[k].is_floating_point() else state[k])
        for k in expected if k in state
    }
    model.load_state_dict(load, strict=False, assign=True)
    _fix_meta_buffers(model, config)
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:  # pragma: no cover - guarded by the missing-key check above
        raise CheckpointFormatError(f"{where}: parameters without weights: {leftover[:5]}")
    model.eval()
    return model


def keep_rotary_fp32(model: nn.Module) -> None:
    """Give rotary modules back float32 inverse frequencies after a cast to bf16/fp16."""
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and "inv_freq" in name and buf.dtype != torch.float32:
                config = getattr(module, "config", None)
                if config is not None:
                    fresh = type(module)(config)
                    ref = dict(fresh.named_buffers(recurse=False)).get(name)
                    if ref is not None:
                        module.register_buffer(name, ref.to(buf.device), persistent=False)
                        continue
                module.register_buffer(name, buf.float(), persistent=False)


def build_backbone(
    folder: Path,
    cfg: dict[str, Any],
    state: dict[str, torch.Tensor],
    *,
    prefix_required: bool,
    dtype: torch.dtype = torch.float32,
) -> Backbone:
    """Build the backbone of `folder` from its config dict and (prefixed or bare) checkpoint tensors.

    `state` must contain only backbone keys (possibly under the base-model prefix) and ignorable keys.
    """
    kind = backbone_kind(cfg)
    if kind == "jina-xlmr":
        stripped = _strip_prefix(state, "roberta", required=prefix_required)
        remapped = remap_jina_keys(stripped)
        emb = remapped.get("embeddings.word_embeddings.weight")
        if emb is None:
            raise CheckpointFormatError(f"{folder}: no word embeddings (roberta.embeddings.word_embeddings.weight)")
        config = jina_config(cfg, vocab_size=emb.shape[0])
        from transformers import JinaEmbeddingsV3Model

        model = _instantiate(JinaEmbeddingsV3Model, config, remapped, dtype, str(folder))
        max_pos = int(config.max_position_embeddings)
        return Backbone(model, config.hidden_size, max_pos, "jina-xlmr-rope", max_pos)
    if kind == "jinabert":
        return _jinabert_backbone(folder, cfg, state, prefix_required=prefix_required, dtype=dtype)

    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    model_type = cfg.get("model_type")
    if not model_type:
        raise CheckpointFormatError(f"{folder}/config.json has no model_type")
    try:
        config = AutoConfig.for_model(model_type)
        config = type(config).from_dict(cfg)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointFormatError(f"{folder}/config.json: model_type {model_type!r} is not usable: {exc}") from exc
    try:
        found: Any = MODEL_MAPPING[type(config)]
    except KeyError as exc:
        raise CheckpointFormatError(f"transformers has no base model class for model_type {model_type!r}") from exc
    cls = next((c for c in found if c is not None), None) if isinstance(found, tuple) else found
    if cls is None:
        raise CheckpointFormatError(f"transformers has no base model class for model_type {model_type!r}")
    stripped = _strip_prefix(state, cls.base_model_prefix, required=prefix_required)
    model = _instantiate(cls, config, stripped, dtype, str(folder))
    max_pos = int(getattr(config, "max_position_embeddings", 512) or 512)
    max_tokens = max_pos
    if model_type in _ROBERTA_LIKE:
        max_tokens -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return Backbone(model, int(config.hidden_size), max_tokens, f"native:{model_type}", max_pos)


def _jinabert_backbone(
    folder: Path, cfg: dict[str, Any], state: dict[str, torch.Tensor], *, prefix_required: bool, dtype: torch.dtype
) -> Backbone:
    """JinaBERT from its checkpoint keys (under `bert.` in a Stanford folder); never jina's remote code."""
    stripped = _strip_prefix(state, JinaBertModel.base_model_prefix, required=prefix_required)
    emb = stripped.get("embeddings.word_embeddings.weight")
    if emb is None:
        raise CheckpointFormatError(f"{folder}: no word embeddings (bert.embeddings.word_embeddings.weight)")
    config = JinaBertConfig.from_dict(cfg, vocab_size=emb.shape[0])
    model = _instantiate(JinaBertModel, config, stripped, dtype, f"{folder} (JinaBERT, ALiBi)")
    max_pos = config.max_position_embeddings
    return Backbone(model, config.hidden_size, max_pos, "jinabert-alibi", max_pos)
