"""Token-accurate document splitting with exact character offsets.

:class:`TokenSplitter` cuts a text into chunks that fit a budget counted in the *model's own tokens*
(not words, not tiktoken tokens: RAGatouille's splitter counted cl100k tokens and its chunks were silently
truncated by the encoder). Every chunk is a slice of the original text, ``chunk.text ==
text[chunk.start:chunk.end]``; nothing is ever decoded back from token ids.

Cut points are chosen in this order of preference: paragraph breaks (a blank line), sentence ends (terminal
punctuation or a line break), word boundaries (whitespace), and, for a single run longer than the budget
(a URL, or Chinese/Thai text without spaces), plain token boundaries. Pieces are packed greedily up to the
budget; consecutive chunks share about ``overlap_tokens`` tokens, starting on a word boundary when there is one.

:func:`split_documents` turns a collection into :class:`Passage` records (ids, offsets, per-passage metadata
copies) using a :class:`TokenSplitter`, a RAGatouille-style ``document_splitter_fn``, or no splitting.

This module imports nothing else from lateragkit: it only needs a ``token_spans`` callable, which the encoder
provides (``encoder.token_spans``) and :func:`hf_token_spans` builds from any Hugging Face fast tokenizer.
"""
from __future__ import annotations

import bisect
import copy
import inspect
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .validation import check_positive_int

logger = logging.getLogger(__name__)

__all__ = [
    "Chunk",
    "Passage",
    "TokenSplitter",
    "hf_token_spans",
    "split_documents",
]

TokenSpans = Callable[[str], Sequence[tuple[int, int]]]

# Boundary levels between two consecutive tokens (higher = better place to cut).
_INVALID = -1  # inside a character span shared by several tokens: cannot cut here
_TOKEN = 0
_WORD = 1
_SENTENCE = 2
_PARAGRAPH = 3

# Sentence-final punctuation across scripts (Latin, CJK full-width, Devanagari danda, Arabic/Urdu).
_TERMINALS = frozenset(".!?…。！？．｡।॥؟۔‽")
# Closing characters that may follow the terminal punctuation: `He said "No." Then`.
_CLOSERS = frozenset("\"')]}»”’」』）】〕〉》")
# Terminals that end a sentence even with no space after them (CJK text has no spaces).
_CJK_TERMINALS = frozenset("。！？｡")
_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class Chunk:
    """A piece of a text: ``text == original[start:end]`` (character offsets, end exclusive)."""

    text: str
    start: int
    end: int


@dataclass
class Passage:
    """One indexable passage of a document.

    ``passage_id`` is ``f"{document_id}-{chunk_index}"``. ``start``/``end`` are character offsets into the
    original document text (``None`` when a custom ``document_splitter_fn`` returned text that could not be
    located in the document). ``content`` equals ``original[start:end]`` unless a ``preprocessing_fn``
    rewrote it; the offsets always refer to the original text. ``metadata`` is a deep copy of the document's
    metadata, private to this passage (``None`` when the document has none).
    """

    passage_id: str
    document_id: str
    content: str
    start: int | None
    end: int | None
    metadata: dict[str, Any] | None = None
    chunk_index: int = 0


def hf_token_spans(tokenizer: Any) -> Callable[[str], list[tuple[int, int]]]:
    """Build a ``token_spans`` callable from a Hugging Face *fast* tokenizer (specials excluded).

    Raises:
        TypeError: the tokenizer cannot return character offsets (a slow, Python-only tokenizer).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer and cannot give character offsets; "
            "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )

    def token_spans(text: str) -> list[tuple[int, int]]:
        # verbose=False: long documents are expected here, the "sequence too long" warning is noise.
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(s), int(e)) for s, e in enc["offset_mapping"]]

    return token_spans


class TokenSplitter:
    """Split texts into chunks of at most ``max_tokens`` model tokens, with exact character offsets.

    Args:
        token_spans: ``text -> [(start, end), ...]``, the character span of each model token in ``text``,
            special tokens excluded (``encoder.token_spans``, or :func:`hf_token_spans`).
        max_tokens: most tokens in a chunk. Leave room for the specials the encoder adds: the facade passes
            ``max_document_length - encoder.num_special_doc_tokens``.
        overlap_tokens: tokens shared by consecutive chunks; ``None`` means ``max_tokens // 8`` (12.5 %).
            Must be in ``[0, max_tokens)``.
        min_fill: a paragraph (then sentence, then word) boundary is used only when the chunk it closes holds
            at least this fraction of the budget; otherwise a finer boundary is tried. Avoids tiny chunks
            while still preferring natural breaks.

    Guarantee: re-tokenizing any chunk's text with ``token_spans`` gives at most ``max_tokens`` tokens
    (each chunk is re-counted; a chunk whose re-count is higher — a cut inside a word can tokenize
    differently — is shortened, down to character-level cuts inside one token if need be). The one
    exception is a single character that alone yields more than ``max_tokens`` tokens (a byte-fallback
    tokenizer with a tiny budget), which cannot be cut; it is kept whole with a warning.

    Texts that are empty or whitespace only give no chunks. Chunks are trimmed of surrounding whitespace.
    The splitter is deterministic and stateless (safe to share between threads).
    """

    def __init__(
        self,
        token_spans: TokenSpans,
        max_tokens: int,
        overlap_tokens: int | None = None,
        *,
        min_fill: float = 0.5,
    ) -> None:
        if not callable(token_spans):
            raise TypeError(
                "token_spans must be a callable text -> list of (start, end) character spans, "
                "e.g. encoder.token_spans or lateragkit.splitting.hf_token_spans(tokenizer)"
            )
        max_tokens = check_positive_int(max_tokens, "max_tokens")
        if overlap_tokens is None:
            overlap_tokens = max_tokens // 8
        overlap_tokens = check_positive_int(overlap_tokens, "overlap_tokens", minimum=0)
        if overlap_tokens >= max_tokens:
            raise ValueError(
                f"overlap_tokens must be >= 0 and smaller than max_tokens={max_tokens} (got {overlap_tokens})"
            )
        if not 0.0 <= float(min_fill) <= 1.0:
            raise ValueError(f"min_fill must be between 0 and 1 (got {min_fill})")
        self.token_spans = token_spans
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.min_fill = float(min_fill)

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, max_tokens: int, overlap_tokens: int | None = None, **kwargs: Any
    ) -> TokenSplitter:
        """A splitter counting the tokens of a Hugging Face fast tokenizer."""
        return cls(hf_token_spans(tokenizer), max_tokens, overlap_tokens, **kwargs)

    def __repr__(self) -> str:
        return f"TokenSplitter(max_tokens={self.max_tokens}, overlap_tokens={self.overlap_tokens})"

    def __call__(self, text: str) -> list[Chunk]:
        return self.split(text)

    def count_tokens(self, text: str) -> int:
        """Number of model tokens in ``text`` (specials excluded)."""
        return len(self.token_spans(text))

    # ------------------------------------------------------------------------------------------------
    def split(self, text: str) -> list[Chunk]:
        """Split ``text`` into chunks; see the class docstring for the rules."""
        if not isinstance(text, str):
            raise TypeError(f"split() takes a str, got {type(text).__name__}")
        if not text.strip():
            return []
        spans = self._sorted_spans(text)
        n = len(spans)
        if n == 0:
            # Non-blank text the tokenizer drops entirely (control characters, say): it costs no tokens.
            chunk = _trimmed(text, 0, len(text))
            return [chunk] if chunk is not None else []

        levels = _boundary_levels(text, spans)
        # Sorted boundary indices whose level is at least L, for L = token, word, sentence, paragraph.
        at_least = [[j for j, lv in enumerate(levels) if lv >= level] for level in range(_PARAGRAPH + 1)]

        def pos(j: int) -> int:
            # Character position of the cut before token j; the gap before a token belongs to the chunk
            # that ends there, so chunks cover every character (trimming then drops the whitespace).
            if j == 0:
                return 0
            if j == n:
                return len(text)
            return spans[j][0]

        chunks: list[Chunk] = []
        start, prev_end = 0, 0
        while True:
            budget = self.max_tokens
            pieces: list[Chunk] = []
            while True:
                lo = max(start, prev_end)
                limit = min(n, start + budget)
                if limit <= lo and start < prev_end:
                    # The re-count shrank the budget below the overlap: drop the overlap instead.
                    start, budget = prev_end, self.max_tokens
                    continue
                end = self._choose_end(at_least, start, lo, limit, n) if limit > lo else None
                forced = end is None  # no token boundary fits: take the smallest step forward
                if end is None:
                    end = _first_after(at_least[_TOKEN], lo, n)
                chunk = _trimmed(text, pos(start), pos(end))
                if chunk is None:
                    break
                if not forced and chunk.start == 0 and chunk.end == len(text):
                    break  # the whole text: the spans above are its exact count
                recount = len(self.token_spans(chunk.text))
                if recount <= self.max_tokens:
                    pieces = [chunk]
                    break
                if forced or end - start <= 1:
                    if start < prev_end:
                        start, budget = prev_end, self.max_tokens
                        continue
                    # One token of the full text re-tokenizes to more than the budget on its own (a
                    # WordPiece continuation "##cz" becomes "c", "##z"): cut it by characters.
                    pieces = self._split_by_chars(text, chunk.start, chunk.end)
                    break
                # Cutting inside a word can tokenize differently from the full text: retry with less.
                budget = min(budget, end - start) - max(1, recount - self.max_tokens)
            if chunk is not None and not pieces:
                pieces = [chunk]
            chunks.extend(pieces)
            if end >= n:
                break
            prev_end = end
            # No overlap after a character-level cut: it would re-include the unit that did not fit.
            start = end if len(pieces) > 1 else self._next_start(at_least, start, end)
        return chunks

    def _split_by_chars(self, text: str, a: int, b: int) -> list[Chunk]:
        """Cut ``text[a:b]`` into the longest character prefixes that re-tokenize within the budget."""
        out: list[Chunk] = []
        i = a
        while i < b:
            while i < b and text[i].isspace():
                i += 1
            if i >= b:
                break
            good, bad = i + 1, b + 1  # invariant: text[i:good] fits (or is one character), text[i:bad] not
            if len(self.token_spans(text[i:good].rstrip())) > self.max_tokens:
                logger.warning(
                    "character %r at offset %d alone is more than max_tokens=%d tokens; keeping it whole",
                    text[i], i, self.max_tokens,
                )
            else:
                while bad - good > 1:
                    mid = (good + bad) // 2
                    if len(self.token_spans(text[i:mid].rstrip())) <= self.max_tokens:
                        good = mid
                    else:
                        bad = mid
            piece = _trimmed(text, i, good)
            if piece is not None:
                out.append(piece)
            i = good
        return out

    # ------------------------------------------------------------------------------------------------
    def _sorted_spans(self, text: str) -> list[tuple[int, int]]:
        length = len(text)
        spans = []
        for s, e in self.token_spans(text):
            s, e = max(0, min(int(s), length)), max(0, min(int(e), length))
            spans.append((s, max(s, e)))
        spans.sort()
        return spans

    def _choose_end(self, at_least: list[list[int]], start: int, lo: int, limit: int, n: int) -> int | None:
        """Best cut in ``(lo, limit]``: the farthest boundary of the highest level that fills enough."""
        if limit == n:
            return n  # the rest fits
        need = self.min_fill * (limit - start)
        for level in (_PARAGRAPH, _SENTENCE, _WORD):
            cut = _last_in(at_least[level], lo, limit)
            if cut is not None and cut - start >= need:
                return cut
        return _last_in(at_least[_TOKEN], lo, limit)

    def _next_start(self, at_least: list[list[int]], start: int, end: int) -> int:
        """Start of the next chunk: ``overlap_tokens`` back from ``end``, moved forward to a word boundary."""
        if self.overlap_tokens == 0:
            return end
        target = max(end - self.overlap_tokens, start + 1)
        if target >= end:
            return end
        word = _first_at_or_after(at_least[_WORD], target)
        if word is not None and word < end:
            return word
        token = _first_at_or_after(at_least[_TOKEN], target)
        return token if token is not None and token < end else end


def _boundary_levels(text: str, spans: list[tuple[int, int]]) -> list[int]:
    """Level of the cut before token j, for j = 0..n (0 and n are the text's ends)."""
    n = len(spans)
    levels = [_INVALID] * (n + 1)
    levels[0] = levels[n] = _PARAGRAPH
    max_end = spans[0][1]
    for j in range(1, n):
        s, e = spans[j]
        if s >= max_end:
            gap = text[max_end:s]
            levels[j] = _classify(text, gap, max_end, s)
        max_end = max(max_end, e)
    return levels


def _classify(text: str, gap: str, gap_start: int, next_start: int) -> int:
    if gap:
        newlines = gap.count("\n") + gap.count("\u2029")
        if newlines >= 2 or "\u2029" in gap:
            return _PARAGRAPH
        if newlines == 1:
            return _SENTENCE  # a line break: list items, headings, verse
        if _WHITESPACE.search(gap) is None:
            # No whitespace (dropped control characters, say): only a CJK full stop makes it a boundary.
            return _SENTENCE if _ends_cjk_sentence(text, gap_start) else _TOKEN
        if _ends_sentence(text, gap_start) and not text[next_start].islower():
            return _SENTENCE
        return _WORD
    return _SENTENCE if _ends_cjk_sentence(text, gap_start) else _TOKEN


def _ends_sentence(text: str, end: int) -> bool:
    i = end - 1
    while i >= 0 and text[i] in _CLOSERS:
        i -= 1
    return i >= 0 and text[i] in _TERMINALS


def _ends_cjk_sentence(text: str, end: int) -> bool:
    i = end - 1
    while i >= 0 and text[i] in _CLOSERS:
        i -= 1
    return i >= 0 and text[i] in _CJK_TERMINALS


def _last_in(sorted_idx: list[int], lo: int, hi: int) -> int | None:
    """Largest value in ``(lo, hi]``, or None."""
    k = bisect.bisect_right(sorted_idx, hi) - 1
    if k >= 0 and sorted_idx[k] > lo:
        return sorted_idx[k]
    return None


def _first_at_or_after(sorted_idx: list[int], target: int) -> int | None:
    k = bisect.bisect_left(sorted_idx, target)
    return sorted_idx[k] if k < len(sorted_idx) else None


def _first_after(sorted_idx: list[int], lo: int, n: int) -> int:
    k = bisect.bisect_right(sorted_idx, lo)
    return sorted_idx[k] if k < len(sorted_idx) else n


def _trimmed(text: str, start: int, end: int) -> Chunk | None:
    piece = text[start:end]
    stripped = piece.lstrip()
    start += len(piece) - len(stripped)
    stripped = stripped.rstrip()
    if not stripped:
        return None
    return Chunk(stripped, start, start + len(stripped))


# ----------------------------------------------------------------------------------------------------
# Collections -> passages
# ----------------------------------------------------------------------------------------------------
def split_documents(
    texts: Sequence[str],
    document_ids: Sequence[str],
    metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    splitter: Callable[[str], Sequence[Chunk]] | None = None,
    *,
    document_splitter_fn: Callable[..., Any] | None = None,
    splitter_kwargs: Mapping[str, Any] | None = None,
    preprocessing_fn: Callable[[list[str]], list[str]] | Sequence[Callable[[list[str]], list[str]]] | None = None,
) -> list[Passage]:
    """Turn documents into :class:`Passage` records, in document order then chunk order.

    Args:
        texts: the documents' texts.
        document_ids: one id (``str``) per text.
        metadatas: ``None``, or one dict (or ``None``) per text. Each passage gets its own deep copy.
        splitter: ``text -> list[Chunk]`` (e.g. a :class:`TokenSplitter`); ``None`` with no
            ``document_splitter_fn`` means no splitting: one passage per document, the whole text.
        document_splitter_fn: a RAGatouille-style splitter,
            ``fn(documents: list[str], document_ids: list[str], **splitter_kwargs) -> list[dict]`` where each
            dict has ``"document_id"`` and ``"content"``. Offsets are found by locating each content in its
            document (searching forward from the previous passage, then from the start); ``None`` when the
            content is not a verbatim slice. Cannot be combined with ``splitter``.
        splitter_kwargs: extra keyword arguments for ``document_splitter_fn`` (RAGatouille passes
            ``chunk_size=max_document_length``); those the function does not declare (and it has no
            ``**kwargs``) are left out, so ``fn(documents, document_ids)`` works too.
        preprocessing_fn: ``list[str] -> list[str]`` applied to all passage contents after splitting; it must
            return one string per input, in order. A list of such functions is applied in turn. Offsets still
            point at the original text; only ``content`` changes.

    Documents that are empty or whitespace only (or whose passages all are) yield no passages; a warning
    names them. Raises ``ValueError``/``TypeError`` with what to fix on malformed input.
    """
    texts = list(texts)
    document_ids = list(document_ids)
    if len(texts) != len(document_ids):
        raise ValueError(f"{len(texts)} documents but {len(document_ids)} document_ids: give one id per document")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"document {i} is a {type(t).__name__}; documents must be str")
    for i, d in enumerate(document_ids):
        if not isinstance(d, str):
            raise TypeError(f"document id {i} is a {type(d).__name__}; document ids must be str")
    if metadatas is None:
        metas: list[Mapping[str, Any] | None] = [None] * len(texts)
    else:
        metas = list(metadatas)
        if len(metas) != len(texts):
            raise ValueError(f"{len(texts)} documents but {len(metas)} metadatas: give one dict (or None) each")
        for i, m in enumerate(metas):
            if m is not None and not isinstance(m, Mapping):
                raise TypeError(f"metadata {i} is a {type(m).__name__}; each metadata must be a dict or None")
    if splitter is not None and document_splitter_fn is not None:
        raise ValueError("pass either splitter or document_splitter_fn, not both")

    # (document index, content, start, end) in output order.
    pieces: list[tuple[int, str, int | None, int | None]] = []
    if document_splitter_fn is not None:
        pieces = _run_user_splitter(document_splitter_fn, texts, document_ids, dict(splitter_kwargs or {}))
    elif splitter is not None:
        for di, text in enumerate(texts):
            for c in splitter(text):
                pieces.append((di, c.text, c.start, c.end))
    else:
        for di, text in enumerate(texts):
            if text.strip():
                pieces.append((di, text, 0, len(text)))

    pieces = [p for p in pieces if p[1].strip()]
    contents = _preprocess([p[1] for p in pieces], preprocessing_fn)

    passages: list[Passage] = []
    counters = [0] * len(texts)
    for (di, _, start, end), content in zip(pieces, contents, strict=True):
        index = counters[di]
        counters[di] += 1
        meta = metas[di]
        passages.append(
            Passage(
                passage_id=f"{document_ids[di]}-{index}",
                document_id=document_ids[di],
                content=content,
                start=start,
                end=end,
                metadata=None if meta is None else copy.deepcopy(dict(meta)),
                chunk_index=index,
            )
        )
    empty = [document_ids[i] for i, c in enumerate(counters) if c == 0]
    if empty:
        logger.warning(
            "%d document(s) have no text and are not indexed: %s%s",
            len(empty), ", ".join(map(repr, empty[:5])), " ..." if len(empty) > 5 else "",
        )
    return passages


def _run_user_splitter(
    fn: Callable[..., Any], texts: list[str], document_ids: list[str], kwargs: dict[str, Any]
) -> list[tuple[int, str, int | None, int | None]]:
    if not callable(fn):
        raise TypeError("document_splitter_fn must be callable: fn(documents, document_ids, **kwargs) -> list[dict]")
    out = fn(list(texts), list(document_ids), **_accepted_kwargs(fn, kwargs))
    if isinstance(out, (str, bytes, Mapping)) or not isinstance(out, Sequence):
        raise TypeError(
            "document_splitter_fn must return a list of dicts with 'document_id' and 'content', "
            f"got {type(out).__name__}"
        )
    where = {d: i for i, d in enumerate(document_ids)}
    cursor: dict[int, int] = {}  # per document: where to start looking for the next passage
    pieces: list[tuple[int, str, int | None, int | None]] = []
    for k, item in enumerate(out):
        if not isinstance(item, Mapping) or "document_id" not in item or "content" not in item:
            raise TypeError(
                f"document_splitter_fn item {k} must be a dict with 'document_id' and 'content', got {item!r:.80}"
            )
        doc_id, content = item["document_id"], item["content"]
        if doc_id not in where:
            raise ValueError(f"document_splitter_fn returned unknown document_id {doc_id!r} (item {k})")
        if not isinstance(content, str):
            raise TypeError(f"document_splitter_fn item {k}: 'content' must be str, got {type(content).__name__}")
        di = where[doc_id]
        text = texts[di]
        found = text.find(content, cursor.get(di, 0)) if content else -1
        if found < 0 and content:
            found = text.find(content)
        if found >= 0:
            # Next search from just after this start: overlapping splitters re-use the tail of this passage.
            cursor[di] = found + 1
            pieces.append((di, content, found, found + len(content)))
        else:
            pieces.append((di, content, None, None))
    return pieces


def _accepted_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``fn`` accepts: RAGatouille passes ``chunk_size`` to every splitter, but a
    user's function written as ``fn(documents, document_ids)`` should still work."""
    if not kwargs:
        return kwargs
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    dropped = sorted(set(kwargs) - set(params))
    if dropped:
        logger.debug("document_splitter_fn does not take %s; not passed", dropped)
    return {k: v for k, v in kwargs.items() if k in params}


def _preprocess(
    contents: list[str],
    fn: Callable[[list[str]], list[str]] | Sequence[Callable[[list[str]], list[str]]] | None,
) -> list[str]:
    if fn is None:
        return contents
    fns = list(fn) if isinstance(fn, Sequence) else [fn]
    for f in fns:
        if not callable(f):
            raise TypeError("preprocessing_fn must be a callable list[str] -> list[str] (or a list of them)")
        result = f(list(contents))
        if isinstance(result, str) or not isinstance(result, Sequence):
            raise TypeError(f"preprocessing_fn must return a list of str, got {type(result).__name__}")
        result = list(result)
        if len(result) != len(contents):
            raise ValueError(
                f"preprocessing_fn returned {len(result)} strings for {len(contents)} passages; "
                "it must return exactly one string per passage, in order"
            )
        for i, r in enumerate(result):
            if not isinstance(r, str):
                raise TypeError(f"preprocessing_fn returned a {type(r).__name__} at position {i}; expected str")
        contents = result
    return contents
