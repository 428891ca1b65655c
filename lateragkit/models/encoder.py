"""`ColBERTEncoder`: text -> L2-normalised token vectors (queries padded, documents packed)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone
from .lengths import LengthRules
from .settings import EncoderSettings
from .tokenization import ColBERTTokenization, QueryTokens

logger = logging.getLogger(__name__)

__all__ = ["ColBERTEncoder"]

# A document batch holds at most bsize x this many tokens (long documents: fewer rows per batch).
BATCH_TOKENS_PER_ROW = 512


def _pad(rows: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


class ColBERTEncoder:
    """A loaded late-interaction encoder (see `load_encoder`).

    Attributes: `name_or_path`, `dim`, `query_maxlen`, `doc_maxlen`, `rerank_doc_maxlen`, `max_tokens`, `device`,
    `dtype`, `tokenizer`, `is_bare`, `format`, `num_special_doc_tokens`.

    `doc_maxlen` is the checkpoint's document length for indexing; `rerank_doc_maxlen` the one its reference uses
    when reranking or encoding documents without an index (see `lengths.py`).
    """

    def __init__(
        self,
        *,
        name_or_path: str,
        backbone: Backbone,
        head: nn.Module | None,
        head_dim: int,
        tokenizer: Any,
        settings: EncoderSettings,
        rules: LengthRules,
        dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.name_or_path = name_or_path
        self.backbone = backbone
        self.model = backbone.model
        self.head = head
        self.native_dim = int(head_dim)
        self.dim = int(dim)
        self.tokenizer = tokenizer
        self.format = settings.format
        self.is_bare = settings.format == "bare"
        self.device = device
        self.dtype = dtype
        self.max_tokens = int(backbone.max_tokens)
        self._settings = settings
        self.rules = rules
        self.query_maxlen = rules.query_maxlen
        self.doc_maxlen = rules.doc_maxlen
        self.rerank_doc_maxlen = rules.rerank_doc_maxlen
        self.tok = ColBERTTokenization(tokenizer, settings, rules)

    # ------------------------------------------------------------------------------------------ info
    @property
    def num_special_doc_tokens(self) -> int:
        """Tokens the encoder adds around a document (CLS, SEP and the document marker)."""
        return self.tok.num_special_doc_tokens

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of each model token of `text` (special tokens excluded)."""
        return self.tok.token_spans(text)

    def settings(self) -> dict[str, Any]:
        """JSON-able settings recorded beside an index."""
        s = self._settings
        return {
            "name_or_path": self.name_or_path,
            "format": self.format,
            "backbone": self.backbone.kind,
            "is_bare": self.is_bare,
            "dim": self.dim,
            "native_dim": self.native_dim,
            "query_maxlen": self.query_maxlen,
            "query_length_rule": self.rules.query_rule,
            "doc_maxlen": self.doc_maxlen,
            "rerank_doc_maxlen": self.rerank_doc_maxlen,
            "max_tokens": self.max_tokens,
            "query_marker": s.query_marker,
            "doc_marker": s.doc_marker,
            "query_expansion": s.query_expansion,
            "attend_to_mask_tokens": s.attend_to_mask_tokens,
            "mask_punctuation": bool(self.tok.skiplist),
            "similarity": "cosine",
        }

    def __repr__(self) -> str:
        return (
            f"ColBERTEncoder({self.name_or_path!r}, format={self.format!r}, dim={self.dim}, "
            f"query_maxlen={self.query_maxlen}, doc_maxlen={self.doc_maxlen}, device={str(self.device)!r})"
        )

    # ------------------------------------------------------------------------------------------ forward
    @torch.inference_mode()
    def _embed(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """Normalised token vectors `float32 [b, L, dim]` for padded ids (rows of padding included)."""
        ids = ids.to(self.device, non_blocking=True)
        attention = attention.to(self.device, non_blocking=True)
        hidden = self.model(input_ids=ids, attention_mask=attention).last_hidden_state
        out = self.head(hidden) if self.head is not None else hidden
        out = out[..., : self.dim].float()
        return F.normalize(out, p=2, dim=-1, eps=1e-12)

    # ------------------------------------------------------------------------------------------ queries
    def encode_queries(self, queries: Sequence[str] | str, *, bsize: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode queries: `Q float32 [B, Lq, dim]` and `Q_mask bool [B, Lq]` (True = scored), on `device`.

        Each query is encoded on its own terms (its own length), whatever else is in the batch.
        """
        if isinstance(queries, str):
            queries = [queries]
        queries = list(queries)
        toks: list[QueryTokens] = self.tok.tokenize_queries(queries)
        n = len(toks)
        L = max((len(t.ids) for t in toks), default=1)
        Q = torch.zeros(n, L, self.dim, dtype=torch.float32, device=self.device)
        Q_mask = torch.zeros(n, L, dtype=torch.bool, device=self.device)
        order = sorted(range(n), key=lambda i: len(toks[i].ids))
        for start in range(0, n, max(1, int(bsize))):
            idx = order[start : start + max(1, int(bsize))]
            width = max(len(toks[i].ids) for i in idx)
            ids = _pad([toks[i].ids for i in idx], self.tok.pad_id, width)
            att = _pad([toks[i].attention for i in idx], 0, width)
            scored = _pad([[int(x) for x in toks[i].scored] for i in idx], 0, width).bool()
            E = self._embed(ids, att)
            rows = torch.as_tensor(idx, device=self.device)
            Q[rows, :width] = E
            Q_mask[rows, :width] = scored.to(self.device)
        Q = Q * Q_mask[..., None]
        return Q, Q_mask

    # ------------------------------------------------------------------------------------------ documents
    def _doc_maxlen(self, doc_maxlen: int | None) -> int:
        if doc_maxlen is None:
            return self.doc_maxlen
        want = int(doc_maxlen)
        if want < self.num_special_doc_tokens + 1:
            raise ValueError(f"doc_maxlen={want} leaves no room for text (at least {self.num_special_doc_tokens + 1})")
        if want > self.max_tokens:
            logger.warning(
                "doc_maxlen=%d is longer than %s takes (%d tokens): using %d",
                want, self.name_or_path, self.max_tokens, self.max_tokens,
            )
            want = self.max_tokens
        return want

    def _warn_truncated(self, n_cut: int, n_docs: int, maxlen: int) -> None:
        room = (
            f"pass a larger max_document_length (up to {self.max_tokens}, what {self.name_or_path} takes) or split "
            f"the documents" if maxlen < self.max_tokens else "split the documents into passages"
        )
        logger.warning(
            "%d of %d documents were cut at %d tokens and their end is ignored: %s", n_cut, n_docs, maxlen, room
        )

    def encode_documents(
        self,
        docs: Sequence[str],
        *,
        bsize: int = 32,
        doc_maxlen: int | None = None,
        show_progress: bool = False,
        warn_truncated: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode documents: packed `vectors float16 [N_tokens, dim]` (CPU) and `doclens int64 [n_docs]`.

        Documents are batched by length (longest first) and returned in input order. Documents longer than
        `doc_maxlen` (default: the checkpoint's) are truncated; `doc_maxlen` above `max_tokens` is clamped.
        `warn_truncated`: log one warning saying how many documents were cut, and at how many tokens.
        """
        if isinstance(docs, str):
            docs = [docs]
        docs = list(docs)
        maxlen = self._doc_maxlen(doc_maxlen)
        all_ids, cut = self.tok.document_tokens(docs, maxlen)
        if warn_truncated and any(cut):
            self._warn_truncated(sum(cut), len(docs), maxlen)
        n = len(all_ids)
        keeps = [self.tok.doc_keep(r) for r in all_ids]
        doclens = torch.tensor([sum(k) for k in keeps], dtype=torch.int64)
        # The packed output is allocated once and each batch writes its rows in place: peak memory is the
        # output plus one batch (no per-document copies, no final concatenation).
        offsets = (torch.cumsum(doclens, 0) - doclens).tolist()
        out = torch.empty(int(doclens.sum()), self.dim, dtype=torch.float16)
        order = sorted(range(n), key=lambda i: -len(all_ids[i]))
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="Encoding documents", unit="doc")
        step = max(1, int(bsize))
        # Long documents get fewer rows per batch: a batch holds at most bsize x 512 tokens, so activation
        # memory does not grow with document length (8k-token documents are encoded a few at a time).
        token_budget = step * BATCH_TOKENS_PER_ROW
        start = 0
        while start < n:
            width = len(all_ids[order[start]])
            rows_per_batch = max(1, min(step, token_budget // max(1, width)))
            idx = order[start : start + rows_per_batch]
            start += len(idx)
            rows = [all_ids[i] for i in idx]
            ids = _pad(rows, self.tok.pad_id, width)
            att = _pad([[1] * len(r) for r in rows], 0, width)
            keep = _pad([[int(k) for k in keeps[i]] for i in idx], 0, width).bool()
            E = self._embed(ids, att).to("cpu", torch.float16)
            for j, i in enumerate(idx):
                o = offsets[i]
                out[o : o + int(doclens[i])] = E[j][keep[j]]
            del E
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out, doclens
