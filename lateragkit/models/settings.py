"""Checkpoint format detection and the ColBERT settings each format carries.

Formats (checkpoints.md §6):
- ``"pylate"``: sentence-transformers layout with a ColBERT head (`modules.json` + `k_Dense/` chain and
  `config_sentence_transformers.json` with the PyLate keys);
- ``"stanford"``: `HF_ColBERT` (`config.json` architectures, or an `artifact.metadata` file);
- ``"bare"``: any other encoder (a plain transformers folder, or a single-vector sentence-transformers model
  such as all-MiniLM-L6-v2), used as a late-interaction model over its own token vectors.
"""
from __future__ import annotations

import json
import logging
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import CheckpointFormatError

logger = logging.getLogger(__name__)

PUNCTUATION: tuple[str, ...] = tuple(string.punctuation)
BARE_DEFAULT_MAXLEN = 256


@dataclass
class EncoderSettings:
    """ColBERT inference settings read from a checkpoint (defaults: Stanford ColBERTConfig, §2.2)."""

    format: str
    query_maxlen: int = 32
    doc_maxlen: int = 220  # Stanford ColBERTConfig default (colbertv2.0 sets 180 in its artifact.metadata)
    query_marker: str | None = "[unused0]"  # a token string; None = no marker inserted
    doc_marker: str | None = "[unused1]"
    query_expansion: bool = True  # pad queries with the mask token up to their length
    attend_to_mask_tokens: bool = False
    mask_punctuation: bool = True
    skiplist_mode: str = "stanford"  # "stanford": first id of tok.encode(sym); "pylate": convert_tokens_to_ids
    skiplist_words: tuple[str, ...] = PUNCTUATION
    similarity: str = "cosine"
    dim: int | None = None  # declared output dim (artifact.metadata), checked against the head
    backbone_subdir: str = ""  # sentence-transformers: folder of the Transformer module
    dense_dirs: list[str] = field(default_factory=list)  # PyLate: Dense modules applied in order
    strip_text: bool = False  # sentence-transformers strips every text before tokenizing it
    lowercase: bool = False  # sentence-transformers `do_lower_case`

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skiplist_words"] = list(self.skiplist_words)
        return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointFormatError(f"cannot read {path}: {exc}") from exc


def read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointFormatError(
            f"{folder} has no config.json: not a transformers/ColBERT checkpoint folder"
        )
    cfg = _read_json(path)
    if not isinstance(cfg, dict):
        raise CheckpointFormatError(f"{path} must hold a JSON object")
    return cfg


def _st_modules(folder: Path) -> list[dict[str, Any]] | None:
    path = folder / "modules.json"
    if not path.is_file():
        return None
    mods = _read_json(path)
    if not isinstance(mods, list) or not all(isinstance(m, dict) for m in mods):
        raise CheckpointFormatError(f"{path} must be a list of module entries")
    return sorted(mods, key=lambda m: int(m.get("idx", 0)))


def _is_pylate(mods: list[dict[str, Any]], st_cfg: dict[str, Any]) -> bool:
    if any("pylate" in str(m.get("type", "")).lower() for m in mods):
        return True
    if str(st_cfg.get("model_type", "")).lower() == "colbert" or st_cfg.get("similarity_fn_name") == "MaxSim":
        return True
    return "query_prefix" in st_cfg or "query_length" in st_cfg


def _st_lowercase(folder: Path) -> bool:
    """`do_lower_case` of a sentence-transformers Transformer module folder (False when absent)."""
    path = folder / "sentence_bert_config.json"
    cfg = _read_json(path) if path.is_file() else {}
    return isinstance(cfg, dict) and bool(cfg.get("do_lower_case", False))


def _transformer_subdir(folder: Path, mods: list[dict[str, Any]]) -> str:
    for m in mods:
        if str(m.get("type", "")).endswith("Transformer"):
            return str(m.get("path", "") or "")
    raise CheckpointFormatError(f"{folder / 'modules.json'} has no sentence_transformers Transformer module")


def detect_format(folder: Path) -> str:
    folder = Path(folder)
    mods = _st_modules(folder)
    if mods is not None:
        st_path = folder / "config_sentence_transformers.json"
        st_cfg = _read_json(st_path) if st_path.is_file() else {}
        return "pylate" if _is_pylate(mods, st_cfg if isinstance(st_cfg, dict) else {}) else "bare"
    cfg = read_config(folder)
    if "HF_ColBERT" in (cfg.get("architectures") or []) or (folder / "artifact.metadata").is_file():
        return "stanford"
    return "bare"


def _stanford_settings(folder: Path) -> EncoderSettings:
    s = EncoderSettings(format="stanford")
    path = folder / "artifact.metadata"
    if not path.is_file():
        logger.warning("%s has no artifact.metadata: using the Stanford ColBERT defaults", folder)
        return s
    meta = _read_json(path)
    if isinstance(meta, dict) and isinstance(meta.get("config"), dict):
        meta = meta["config"]
    if not isinstance(meta, dict):
        raise CheckpointFormatError(f"{path} must hold a JSON object (a ColBERTConfig dump)")
    try:
        s.query_marker = str(meta.get("query_token_id", s.query_marker))
        s.doc_marker = str(meta.get("doc_token_id", s.doc_marker))
        s.query_maxlen = int(meta.get("query_maxlen", s.query_maxlen))
        s.doc_maxlen = int(meta.get("doc_maxlen", s.doc_maxlen))
        s.mask_punctuation = bool(meta.get("mask_punctuation", s.mask_punctuation))
        s.attend_to_mask_tokens = bool(meta.get("attend_to_mask_tokens", s.attend_to_mask_tokens))
        s.similarity = str(meta.get("similarity", s.similarity))
        s.dim = int(meta["dim"]) if meta.get("dim") is not None else None
    except (TypeError, ValueError) as exc:
        raise CheckpointFormatError(f"{path} holds an invalid value: {exc}") from exc
    interaction = str(meta.get("interaction", "colbert"))
    if interaction != "colbert":
        raise CheckpointFormatError(f"{path}: interaction {interaction!r} is not supported (only 'colbert')")
    if s.similarity not in {"cosine", "l2"}:
        raise CheckpointFormatError(f"{path}: similarity {s.similarity!r} is not supported")
    if s.similarity == "l2":
        # On unit vectors -|q-d|^2 = 2<q,d> - 2: the same ranking as cosine MaxSim.
        logger.info("%s was trained with l2 similarity; scoring uses the rank-equivalent cosine MaxSim", folder)
    if s.query_maxlen < 3 or s.doc_maxlen < 3:
        raise CheckpointFormatError(f"{path}: query_maxlen and doc_maxlen must be at least 3")
    return s


def _pylate_settings(folder: Path, mods: list[dict[str, Any]]) -> EncoderSettings:
    st_path = folder / "config_sentence_transformers.json"
    cfg = _read_json(st_path) if st_path.is_file() else {}
    if not isinstance(cfg, dict):
        raise CheckpointFormatError(f"{st_path} must hold a JSON object")
    s = EncoderSettings(format="pylate", skiplist_mode="pylate", doc_maxlen=180)
    try:
        qp = cfg.get("query_prefix", "[Q] ")
        dp = cfg.get("document_prefix", "[D] ")
        s.query_marker = qp or None
        s.doc_marker = dp or None
        s.query_maxlen = int(cfg.get("query_length") or 32)
        s.doc_maxlen = int(cfg.get("document_length") or 180)
        s.attend_to_mask_tokens = bool(cfg.get("attend_to_expansion_tokens", False))
        s.query_expansion = bool(cfg.get("do_query_expansion", True))
        words = cfg.get("skiplist_words", None)
        s.skiplist_words = tuple(str(w) for w in (PUNCTUATION if words is None else words))
    except (TypeError, ValueError) as exc:
        raise CheckpointFormatError(f"{st_path} holds an invalid value: {exc}") from exc
    if s.query_maxlen < 3 or s.doc_maxlen < 3:
        raise CheckpointFormatError(f"{st_path}: query_length and document_length must be at least 3")
    s.mask_punctuation = bool(s.skiplist_words)
    s.backbone_subdir = _transformer_subdir(folder, mods)
    s.strip_text, s.lowercase = True, _st_lowercase(folder / s.backbone_subdir)
    for m in mods:
        kind = str(m.get("type", ""))
        if kind.endswith("Transformer") or kind.endswith("Normalize"):
            continue
        if kind.endswith("Dense"):
            s.dense_dirs.append(str(m.get("path", "")))
        else:
            raise CheckpointFormatError(
                f"{folder / 'modules.json'}: module type {kind!r} is not part of a PyLate ColBERT model"
            )
    if not s.dense_dirs:
        logger.warning("%s: PyLate model without Dense module, token vectors are used as they are", folder)
    return s


def _bare_settings(folder: Path, mods: list[dict[str, Any]] | None) -> EncoderSettings:
    sub = _transformer_subdir(folder, mods) if mods is not None else ""
    maxlen = BARE_DEFAULT_MAXLEN
    sb = folder / sub / "sentence_bert_config.json"
    if sb.is_file():
        val = _read_json(sb)
        if isinstance(val, dict) and isinstance(val.get("max_seq_length"), int) and val["max_seq_length"] > 2:
            maxlen = int(val["max_seq_length"])
    # Bare encoders were trained without markers, query expansion or punctuation masking: none applied.
    return EncoderSettings(
        format="bare",
        query_maxlen=maxlen,
        doc_maxlen=maxlen,
        query_marker=None,
        doc_marker=None,
        query_expansion=False,
        attend_to_mask_tokens=False,
        mask_punctuation=False,
        skiplist_mode="none",
        skiplist_words=(),
        backbone_subdir=sub,
        strip_text=True,
        lowercase=_st_lowercase(folder / sub),
    )


def read_settings(folder: Path) -> EncoderSettings:
    """Detect the format of a checkpoint folder and read its settings."""
    folder = Path(folder)
    fmt = detect_format(folder)
    if fmt == "stanford":
        return _stanford_settings(folder)
    mods = _st_modules(folder)
    if fmt == "pylate":
        assert mods is not None
        return _pylate_settings(folder, mods)
    return _bare_settings(folder, mods)
