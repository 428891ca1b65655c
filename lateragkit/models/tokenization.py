"""ColBERT query/document tokenization (Stanford `QueryTokenizer`/`DocTokenizer` semantics, checkpoints.md §1).

Query: `[CLS] [Q] q1 .. qn [SEP]` truncated to the query length (keeping [SEP]), then (query expansion) the mask
token up to it; the mask positions are attention keys only when `attend_to_mask_tokens`; every position of the
query length is scored. The query length is the checkpoint format's rule (`lengths.py`): RAGatouille's
`max(query_maxlen, min(int(n_words * 1.35), max_position_embeddings - 4))` for Stanford checkpoints, PyLate's
fixed `query_length` for PyLate ones. A truncated query is logged (one warning per call).

Document: `[CLS] [D] d1 .. dn [SEP]` truncated to `doc_maxlen`; punctuation in the skiplist is dropped.

Bare encoders: no markers, no expansion, no skiplist (queries and documents are plain tokenizer output).
sentence-transformers formats (PyLate, bare) strip each text first (and lowercase it under `do_lower_case`).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import CheckpointFormatError
from .lengths import LengthRules
from .settings import EncoderSettings

logger = logging.getLogger(__name__)

# Word-boundary markers of sentencepiece (▁), byte-level BPE (Ġ, Ċ) and plain spaces.
_BOUNDARY_CHARS = "\u2581\u0120\u010a "


@dataclass
class QueryTokens:
    ids: list[int]
    attention: list[int]  # 1 = attention key
    scored: list[bool]  # True = this position's vector is scored


def _token_id(tokenizer: Any, token: str, what: str) -> int:
    unk = tokenizer.unk_token_id
    for cand in dict.fromkeys([token, token.strip()]):
        if not cand:
            continue
        tid = tokenizer.convert_tokens_to_ids(cand)
        if tid is not None and (tid != unk or cand == tokenizer.unk_token):
            return int(tid)
    raise CheckpointFormatError(f"the {what} {token!r} is not a token of the checkpoint's tokenizer")


def _is_boundary_only(piece: str | None) -> bool:
    return piece is not None and piece.strip(_BOUNDARY_CHARS) == ""


def build_skiplist(tokenizer: Any, settings: EncoderSettings) -> frozenset[int]:
    """Token ids whose document vectors are dropped (punctuation), computed with the real tokenizer.

    Stanford: the first id of `tok.encode(sym)` that is not a bare word-boundary piece (sentencepiece encodes
    "." as `▁` + `.`: the very common `▁` must not be skipped). PyLate: `convert_tokens_to_ids(sym)`.
    """
    if not settings.mask_punctuation or settings.skiplist_mode == "none":
        return frozenset()
    ids: set[int] = set()
    specials = set(tokenizer.all_special_ids)
    for word in settings.skiplist_words:
        if settings.skiplist_mode == "pylate":
            tid = tokenizer.convert_tokens_to_ids(word)
            if tid is not None:
                ids.add(int(tid))
            continue
        for tid in tokenizer.encode(word, add_special_tokens=False):
            if tid in specials or _is_boundary_only(tokenizer.convert_ids_to_tokens(tid)):
                continue
            ids.add(int(tid))
            break
    return frozenset(ids)


class ColBERTTokenization:
    """Token-level ColBERT semantics over a Hugging Face fast tokenizer."""

    def __init__(self, tokenizer: Any, settings: EncoderSettings, rules: LengthRules) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self.rules = rules
        self.query_maxlen = rules.query_maxlen
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self.query_marker_id = (
            _token_id(tokenizer, settings.query_marker, "query marker") if settings.query_marker else None
        )
        self.doc_marker_id = (
            _token_id(tokenizer, settings.doc_marker, "document marker") if settings.doc_marker else None
        )
        self.mask_id: int | None = None
        if settings.query_expansion:
            self.mask_id = self._expansion_id()
        self.skiplist = build_skiplist(tokenizer, settings)
        self.num_special = int(tokenizer.num_special_tokens_to_add(pair=False))

    def _expansion_id(self) -> int:
        """The query expansion token: the mask token (PyLate falls back on EOS for models without one)."""
        tok = self.tokenizer
        if tok.mask_token_id is not None:
            return int(tok.mask_token_id)
        if self.settings.format == "pylate" and tok.eos_token_id is not None:
            return int(tok.eos_token_id)
        raise CheckpointFormatError("query expansion needs a mask token, but the tokenizer has none")

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def num_special_doc_tokens(self) -> int:
        return self.num_special + (self.doc_marker_id is not None)

    def _prepare(self, texts: Sequence[str]) -> list[str]:
        s = self.settings
        out = [t.strip() for t in texts] if s.strip_text else list(texts)
        return [t.lower() for t in out] if s.lowercase else out

    def _encode(self, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
        """Ids of each text truncated to `max_length` (specials included), and whether it was truncated."""
        if not texts:
            return [], []
        out = self.tokenizer(
            self._prepare(texts), add_special_tokens=True, truncation=True, max_length=max(1, max_length),
            return_overflowing_tokens=True, return_attention_mask=False, return_token_type_ids=False,
        )
        ids: list[list[int] | None] = [None] * len(texts)
        cut = [False] * len(texts)
        for row, i in zip(out["input_ids"], out["overflow_to_sample_mapping"], strict=True):
            if ids[i] is None:
                ids[i] = list(row)
            else:
                cut[i] = True
        return [row or [] for row in ids], cut

    @staticmethod
    def _insert(ids: list[int], marker: int | None) -> list[int]:
        return ids if marker is None else ids[:1] + [marker] + ids[1:]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(a), int(b)) for a, b in enc["offset_mapping"]]

    # ------------------------------------------------------------------------------------------ queries
    def query_length(self, text: str) -> int:
        """Rows of a query (specials and marker included): padded to it with expansion, else at most it."""
        return self.rules.query_length(text)

    def tokenize_queries(self, texts: Sequence[str]) -> list[QueryTokens]:
        s = self.settings
        n_marker = int(self.query_marker_id is not None)
        lengths = [self.query_length(t) for t in texts]
        groups: dict[int, list[int]] = {}
        for i, length in enumerate(lengths):
            groups.setdefault(length, []).append(i)
        encoded: list[list[int]] = [[] for _ in texts]
        cut: list[int] = []
        for length, idx in groups.items():
            rows, flags = self._encode([texts[i] for i in idx], length - n_marker)
            for i, row, was_cut in zip(idx, rows, flags, strict=True):
                encoded[i] = self._insert(row, self.query_marker_id)
                if was_cut:
                    cut.append(i)
        if cut:
            logger.warning(
                "%d of %d queries were cut to their query length (%s tokens: %s); their end is ignored, as the "
                "checkpoint's reference implementation ignores it: shorten long queries",
                len(cut), len(texts), ", ".join(str(lengths[i]) for i in cut[:5]), self.rules.describe_query_rule(),
            )
        out: list[QueryTokens] = []
        for ids, length in zip(encoded, lengths, strict=True):
            n = len(ids)
            if s.query_expansion:
                assert self.mask_id is not None
                extra = length - n
                attention = [1] * n + [int(s.attend_to_mask_tokens)] * extra
                out.append(QueryTokens(ids + [self.mask_id] * extra, attention, [True] * length))
            else:
                out.append(QueryTokens(ids, [1] * n, [True] * n))
        return out

    # ------------------------------------------------------------------------------------------ documents
    def document_tokens(self, texts: Sequence[str], maxlen: int) -> tuple[list[list[int]], list[bool]]:
        """Ids of each document truncated to `maxlen` (marker and specials included), and whether it was cut."""
        n_marker = int(self.doc_marker_id is not None)
        ids, cut = self._encode(texts, maxlen - n_marker)
        return [self._insert(row, self.doc_marker_id) for row in ids], cut

    def tokenize_documents(self, texts: Sequence[str], maxlen: int) -> list[list[int]]:
        return self.document_tokens(texts, maxlen)[0]

    def doc_keep(self, ids: Sequence[int]) -> list[bool]:
        """Which token vectors of a document are kept (never none: the first is kept if all are punctuation)."""
        keep = [tid not in self.skiplist for tid in ids]
        if keep and not any(keep):
            keep[0] = True
        return keep
