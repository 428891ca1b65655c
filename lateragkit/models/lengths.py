"""How many tokens a query or a document gets: the rules of each checkpoint format's reference implementation.

Queries (specials and marker included):

- ``"ragatouille"`` (Stanford ``HF_ColBERT`` checkpoints, as RAGatouille encodes them): the query length is
  ``max(query_maxlen, min(int(n_words * 1.35), max_position_embeddings - 4))`` with ``n_words`` the number of
  ``" "``-separated words; the query is truncated to that length (keeping the final [SEP]) and padded with the
  mask token up to it. A 53-token, 37-word query gets 49 rows; a 26-word query that fits in 32 tokens gets 35
  (three extra [MASK] rows), exactly as RAGatouille.
- ``"fixed"`` (PyLate checkpoints, bare encoders): ``query_maxlen`` (PyLate's ``query_length``, a bare encoder's
  ``max_seq_length``): truncated to it, and padded to it with the expansion token when the checkpoint expands
  queries.

Documents: ``doc_maxlen`` (the checkpoint's own length) when indexing; ``rerank_doc_maxlen`` when reranking or
encoding documents without an index: RAGatouille's ``max_position_embeddings - 4`` for Stanford checkpoints
(508 for BERT), 8192 for JinaBERT (jina-colbert-v1-en's documented document length), PyLate's
``document_length``, and a bare encoder's ``max_seq_length``. Every length is clamped to what the backbone takes.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LengthRules", "length_rules", "ragatouille_query_length", "RAGATOUILLE_MARGIN", "WORDS_TO_TOKENS"]

RAGATOUILLE_MARGIN = 4  # RAGatouille: base_model_max_tokens = max_position_embeddings - 4
WORDS_TO_TOKENS = 1.35  # RAGatouille's estimate of tokens per word


def ragatouille_query_length(text: str, query_maxlen: int, cap: int) -> int:
    """RAGatouille's query length: ``max(query_maxlen, min(int(words * 1.35), cap))``."""
    words = int(len(text.split(" ")) * WORDS_TO_TOKENS)
    return max(query_maxlen, min(words, cap))


@dataclass(frozen=True)
class LengthRules:
    """The query and document lengths of one loaded checkpoint (all clamped to the backbone)."""

    query_rule: str  # "ragatouille" | "fixed"
    query_maxlen: int
    query_cap: int  # most rows a query may get (specials and marker included)
    doc_maxlen: int
    rerank_doc_maxlen: int

    def describe_query_rule(self) -> str:
        """The query length rule in words, for messages."""
        if self.query_rule == "ragatouille":
            return (
                f"RAGatouille's rule max({self.query_maxlen}, int(1.35 x words)), at most {self.query_cap} tokens"
            )
        return f"the checkpoint's query length of {self.query_maxlen} tokens"

    def query_length(self, text: str) -> int:
        """Rows of the query `text` (before any padding decision for checkpoints without query expansion)."""
        if self.query_rule == "ragatouille":
            return ragatouille_query_length(text, self.query_maxlen, self.query_cap)
        return self.query_maxlen


def length_rules(
    *,
    fmt: str,
    backbone_kind: str,
    query_maxlen: int,
    doc_maxlen: int,
    max_positions: int,
    max_tokens: int,
) -> LengthRules:
    """The length rules of a checkpoint of format `fmt` ("stanford" | "pylate" | "bare").

    `max_positions` is the config's ``max_position_embeddings``; `max_tokens` the most tokens the backbone takes.
    """
    query_maxlen = min(int(query_maxlen), max_tokens)
    doc_maxlen = min(int(doc_maxlen), max_tokens)
    if fmt == "stanford":
        reference_max = max(1, max_positions - RAGATOUILLE_MARGIN)
        cap = max(query_maxlen, min(reference_max, max_tokens))
        rerank = max_positions if backbone_kind == "jinabert-alibi" else reference_max
        return LengthRules("ragatouille", query_maxlen, cap, doc_maxlen, min(rerank, max_tokens))
    return LengthRules("fixed", query_maxlen, query_maxlen, doc_maxlen, doc_maxlen)
