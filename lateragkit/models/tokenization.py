"""ColBERT query/document tokenization (Stanford `QueryTokenizer`/`DocTokenizer` semantics, checkpoints.md §1).

Query: `[CLS] [Q] q1 .. qn [SEP]`, then (query expansion) the mask token up to the query length; the mask
positions are attention keys only when `attend_to_mask_tokens`; every position of the query length is scored.
The query length follows RAGatouille: `max(query_maxlen, min(max_tokens, int(n_words * 1.35)))`, raised to the
query's own token count so that a long query is never cut silently below `max_tokens`.

Document: `[CLS] [D] d1 .. dn [SEP]` truncated to `doc_maxlen`; punctuation in the skiplist is dropped.

Bare encoders: no markers, no expansion, no skiplist (queries and documents are plain tokenizer output).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from ..exceptions import CheckpointFormatError
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

    def __init__(self, tokenizer: Any, settings: EncoderSettings, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self.max_tokens = int(max_tokens)
        self.query_maxlen = min(int(settings.query_maxlen), self.max_tokens)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self.query_marker_id = (
            _token_id(tokenizer, settings.query_marker, "query marker") if settings.query_marker else None
        )
        self.doc_marker_id = _token_id(tokenizer, settings.doc_marker, "document marker") if settings.doc_marker else None
        self.mask_id: int | None = None
        if settings.query_expansion:
            if tokenizer.mask_token_id is None:
                raise CheckpointFormatError("query expansion needs a mask token, but the tokenizer has none")
            self.mask_id = int(tokenizer.mask_token_id)
        self.skiplist = build_skiplist(tokenizer, settings)
        self.num_special = int(tokenizer.num_special_tokens_to_add(pair=False))

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def num_special_doc_tokens(self) -> int:
        return self.num_special + (self.doc_marker_id is not None)

    def _encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        if not texts:
            return []
        out = self.tokenizer(
            list(texts), add_special_tokens=True, truncation=True, max_length=max(1, max_length),
            return_attention_mask=False, return_token_type_ids=False,
        )
        return [list(ids) for ids in out["input_ids"]]

    @staticmethod
    def _insert(ids: list[int], marker: int | None) -> list[int]:
        return ids if marker is None else ids[:1] + [marker] + ids[1:]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(a), int(b)) for a, b in enc["offset_mapping"]]

    # ------------------------------------------------------------------------------------------ queries
    def query_length(self, text: str, n_ids: int) -> int:
        """Padded length of an expanded query (specials and marker included)."""
        words = int(len(text.split(" ")) * 1.35)
        return max(self.query_maxlen, min(self.max_tokens, max(words, n_ids)))

    def tokenize_queries(self, texts: Sequence[str]) -> list[QueryTokens]:
        s = self.settings
        n_marker = int(self.query_marker_id is not None)
        limit = self.max_tokens if s.query_expansion else self.query_maxlen
        encoded = self._encode(texts, self.max_tokens - n_marker)
        out: list[QueryTokens] = []
        recut = [i for i, ids in enumerate(encoded) if len(ids) + n_marker > limit]
        if recut:
            logger.warning(
                "%d quer%s longer than %d tokens truncated", len(recut), "y" if len(recut) == 1 else "ies", limit
            )
            for i, ids in zip(recut, self._encode([texts[i] for i in recut], limit - n_marker)):
                encoded[i] = ids
        for text, raw in zip(texts, encoded):
            ids = self._insert(raw, self.query_marker_id)
            n = len(ids)
            if s.query_expansion:
                assert self.mask_id is not None
                length = self.query_length(text, n)
                extra = length - n
                attention = [1] * n + [int(s.attend_to_mask_tokens)] * extra
                ids = ids + [self.mask_id] * extra
                out.append(QueryTokens(ids, attention, [True] * length))
            else:
                out.append(QueryTokens(ids, [1] * n, [True] * n))
        return out

    # ------------------------------------------------------------------------------------------ documents
    def tokenize_documents(self, texts: Sequence[str], maxlen: int) -> list[list[int]]:
        n_marker = int(self.doc_marker_id is not None)
        return [self._insert(ids, self.doc_marker_id) for ids in self._encode(texts, maxlen - n_marker)]

    def doc_keep(self, ids: Sequence[int]) -> list[bool]:
        """Which token vectors of a document are kept (never none: the first is kept if all are punctuation)."""
        keep = [tid not in self.skiplist for tid in ids]
        if keep and not any(keep):
            keep[0] = True
        return keep
