"""`load_encoder`: name or folder -> ready `ColBERTEncoder` (Stanford, PyLate, jina XLM-R, JinaBERT or bare)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..exceptions import CheckpointFormatError
from .backbones import build_backbone, keep_rotary_fp32
from .encoder import ColBERTEncoder
from .heads import pylate_head, stanford_linear
from .lengths import length_rules
from .resolve import default_model_name, resolve_model_dir
from .settings import read_config, read_settings
from .weights import load_state_dict

logger = logging.getLogger(__name__)

__all__ = ["load_encoder", "default_device"]


def default_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_tokenizer(folder: Path):  # noqa: ANN202 - a transformers tokenizer
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as exc:
        raise CheckpointFormatError(f"cannot load the tokenizer of {folder}: {type(exc).__name__}: {exc}") from exc
    if not getattr(tok, "is_fast", False):
        raise CheckpointFormatError(f"{folder}: a fast (tokenizers) tokenizer is needed for character offsets")
    return tok


def load_encoder(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    language: str = "en",
    dim: int | None = None,
    device: str | torch.device | None = None,
) -> ColBERTEncoder:
    """Load a late-interaction encoder.

    Args:
        name_or_path: a local checkpoint folder or a Hugging Face repo id (from the cache, or downloaded
            unless `HF_HUB_OFFLINE` is set). None: `colbert-ir/colbertv2.0` for English, else
            `jinaai/jina-colbert-v2`.
        language: picks the default model when no name is given.
        dim: output dimension; smaller than the checkpoint's (Matryoshka 128/96/64) truncates the vectors and
            re-normalises them.
        device: "cpu", "cuda", ...; default CUDA when available (weights then run in bfloat16).

    Raises:
        ModelNotFoundError: the name is neither a folder nor cached, and cannot be downloaded.
        CheckpointFormatError: the folder is not a supported checkpoint.
    """
    name = os.fspath(name_or_path) if name_or_path is not None else default_model_name(language)
    folder = resolve_model_dir(name)
    stored_name = str(folder) if Path(name).expanduser().is_dir() else name
    dev = default_device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32

    settings = read_settings(folder)
    bb_dir = folder / settings.backbone_subdir
    cfg = read_config(bb_dir)
    state = load_state_dict(bb_dir)

    linear_weight = None
    if settings.format == "stanford":
        linear_weight = state.pop("linear.weight", None)
        if linear_weight is None:
            raise CheckpointFormatError(f"{folder}: a Stanford (HF_ColBERT) checkpoint needs linear.weight")
    backbone = build_backbone(bb_dir, cfg, state, prefix_required=settings.format == "stanford", dtype=dtype)
    del state

    head: nn.Module | None
    if settings.format == "stanford":
        assert linear_weight is not None
        linear = stanford_linear(linear_weight, backbone.hidden_size, str(folder))
        head, head_dim = linear, linear.out_features
        if settings.dim is not None and settings.dim != head_dim:
            logger.warning("%s: artifact.metadata says dim %d, linear.weight has %d rows: using %d",
                           folder, settings.dim, head_dim, head_dim)
    elif settings.format == "pylate":
        head, head_dim = pylate_head(folder, settings.dense_dirs, backbone.hidden_size)
    else:
        head, head_dim = None, backbone.hidden_size

    out_dim = head_dim if dim is None else int(dim)
    if not 1 <= out_dim <= head_dim:
        raise ValueError(
            f"dim={dim} is not available: {name} produces {head_dim}-dimensional vectors (ask for at most that)"
        )

    tokenizer = _load_tokenizer(bb_dir)
    tmax = getattr(tokenizer, "model_max_length", None)
    if settings.format == "bare" and isinstance(tmax, int) and 16 <= tmax < backbone.max_tokens:
        # sentence-transformers' rule for a bare encoder: min(max_position_embeddings, model_max_length). ColBERT
        # checkpoints pass their own lengths to the tokenizer (colbert-ai, PyLate), so its model_max_length is moot.
        backbone.max_tokens = tmax
    rules = length_rules(
        fmt=settings.format,
        backbone_kind=backbone.kind,
        query_maxlen=settings.query_maxlen,
        doc_maxlen=settings.doc_maxlen,
        max_positions=backbone.max_positions,
        max_tokens=backbone.max_tokens,
    )

    backbone.model.to(dev)
    keep_rotary_fp32(backbone.model)
    if head is not None:
        head.to(device=dev, dtype=dtype).eval()
    logger.info("loaded %s (%s, %s backbone, dim %d) on %s", name, settings.format, backbone.kind, out_dim, dev)
    return ColBERTEncoder(
        name_or_path=stored_name,
        backbone=backbone,
        head=head,
        head_dim=head_dim,
        tokenizer=tokenizer,
        settings=settings,
        rules=rules,
        dim=out_dim,
        device=dev,
        dtype=dtype,
    )
