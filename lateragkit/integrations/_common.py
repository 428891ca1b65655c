"""Framework-free helpers shared by the LangChain and LlamaIndex adapters.

Imports nothing from either framework, so it is safe to use from both.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..validation import check_positive_int

# Keys the adapters write into a passage's metadata. LlamaIndex hides them from the LLM and
# the embedder (they would otherwise be printed as "score: 12.3" in front of the text).
BOOKKEEPING_KEYS: tuple[str, ...] = ("document_id", "passage_id", "score", "rank", "retrieval_score")

# Keys of a passage's character offsets in a search result: the facade writes start_char/end_char;
# the others are accepted for result dicts built by hand or by other RAGatouille-like models.
_OFFSET_KEYS: tuple[tuple[str, str], ...] = (
    ("start_char", "end_char"),
    ("start_char_idx", "end_char_idx"),
    ("char_start", "char_end"),
    ("start", "end"),
    ("start_index", "end_index"),
)


def result_offsets(result: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """Character offsets of a search result's passage inside its document, when the facade gives them."""
    for start_key, end_key in _OFFSET_KEYS:
        start, end = result.get(start_key), result.get(end_key)
        if start is not None and end is not None:
            return int(start), int(end)
    return None, None


def passage_metadata(result: Mapping[str, Any]) -> dict[str, Any]:
    """Document metadata (copied) plus the bookkeeping keys of one ``search`` result dict."""
    metadata = dict(result.get("document_metadata") or {})
    metadata["document_id"] = result.get("document_id")
    metadata["passage_id"] = result.get("passage_id")
    metadata["score"] = float(result["score"])
    metadata["rank"] = int(result["rank"])
    return metadata


def as_single_query_results(results: Any, query: Any) -> list[Mapping[str, Any]]:
    """Results of one ``str`` query; rejects anything else with a clear message."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}; pass one query at a time")
    if results is None:
        # RAGatouille returned None for "nothing found"; our facade never should, but be explicit.
        return []
    return list(results)


def model_name(model: Any) -> str:
    """A readable name of the model behind a facade object (for tracing and callback payloads)."""
    encoder = getattr(model, "encoder", None)
    for obj in (encoder, model):
        if obj is None:
            continue
        for attr in ("name_or_path", "model_name", "pretrained_model_name_or_path"):
            value = getattr(obj, attr, None)
            if isinstance(value, str) and value:
                return value
    return type(model).__name__



def resolve_token_spans(source: Any) -> Callable[[str], Any]:
    """A ``token_spans(text)`` callable from a facade model, an encoder, or the callable itself."""
    encoder = getattr(source, "encoder", None)
    if encoder is not None and callable(getattr(encoder, "token_spans", None)):
        return encoder.token_spans
    if callable(getattr(source, "token_spans", None)):
        return source.token_spans
    if callable(source):
        return source
    raise TypeError(
        "expected a RAGPretrainedModel, an encoder with .token_spans(text), or a callable "
        f"token_spans(text) -> list[(start, end)]; got {type(source).__name__}"
    )


def default_max_tokens(source: Any) -> int:
    """Token budget of one passage for a model: its document length minus the tokens it adds."""
    encoder = getattr(source, "encoder", None) or source
    doc_maxlen = getattr(encoder, "doc_maxlen", None)
    if not isinstance(doc_maxlen, int):
        raise TypeError(
            "max_tokens is required when the splitter is built from a bare token_spans callable "
            "(it cannot be read from a model)"
        )
    specials = int(getattr(encoder, "num_special_doc_tokens", 0) or 0)
    return max(1, doc_maxlen - specials)


def default_overlap(max_tokens: int) -> int:
    # About 1/8 of the budget: enough to keep a sentence that straddles a boundary searchable.
    return max_tokens // 8


def resolve_budget(source: Any, max_tokens: int | None, overlap_tokens: int | None) -> tuple[int, int]:
    """Validated ``(max_tokens, overlap_tokens)``, filling defaults from the model when not given."""
    if max_tokens is None:
        max_tokens = default_max_tokens(source)
    max_tokens = check_positive_int(max_tokens, "max_tokens")
    if overlap_tokens is None:
        overlap_tokens = default_overlap(max_tokens)
    overlap_tokens = check_positive_int(overlap_tokens, "overlap_tokens", minimum=0)
    if overlap_tokens >= max_tokens:
        raise ValueError(
            f"overlap_tokens ({overlap_tokens}) must be smaller than max_tokens ({max_tokens})"
        )
    return max_tokens, overlap_tokens


def build_token_splitter(source: Any, max_tokens: int, overlap_tokens: int) -> Any:
    """A ``lateragkit.splitting.TokenSplitter`` over a model's/encoder's/callable's token spans."""
    from ..splitting import TokenSplitter

    return TokenSplitter(resolve_token_spans(source), max_tokens, overlap_tokens)
