"""Checkpoint loading and encoding: text -> L2-normalised token vectors.

`load_encoder(name_or_path)` reads Stanford `HF_ColBERT` checkpoints (BERT, XLM-R, jina-colbert-v2's
XLM-R + RoPE, jina-colbert-v1-en's JinaBERT + ALiBi), PyLate / sentence-transformers ColBERT models (BERT,
ModernBERT, ...), and bare encoders (late interaction over their own token vectors), with native transformers
classes or lateragkit's own plain-torch JinaBERT: never code from a checkpoint.
"""
from __future__ import annotations

from .encoder import ColBERTEncoder
from .loader import load_encoder
from .resolve import DEFAULT_ENGLISH_MODEL, DEFAULT_MULTILINGUAL_MODEL, default_model_name

__all__ = [
    "ColBERTEncoder",
    "load_encoder",
    "default_model_name",
    "DEFAULT_ENGLISH_MODEL",
    "DEFAULT_MULTILINGUAL_MODEL",
]
