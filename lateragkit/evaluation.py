"""BEIR-layout loading and ranking metrics (nDCG@k, Recall@k).

A BEIR folder holds ``corpus.jsonl`` (``{"_id", "title", "text"}`` per line), ``queries.jsonl``
(``{"_id", "text"}``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score`` with a header line).

Evaluation rules (the usual BEIR / trec_eval conventions):

* Only *judged* queries are evaluated: those with at least one document of score > 0 in the qrels.
  ``queries.jsonl`` may hold more queries; :func:`load_beir` drops them.
* nDCG@k uses graded gains ``2**rel - 1`` and the discount ``1 / log2(rank + 1)``; the ideal ranking is
  built from the qrels. Rows with score 0 (or below) are judged non-relevant.
* Recall@k counts documents with score > 0 as relevant.
* The mean is over all judged queries: a judged query missing from the run (or with an empty result list)
  counts 0.

A *run* maps each query id to its results, either a sequence of document ids in rank order (best first) or a
mapping ``doc_id -> score`` (sorted by score descending, ties by document id). A document repeated in a
ranked list counts only at its first position.

This module imports nothing else from lateragkit.
"""
from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .validation import check_k

logger = logging.getLogger(__name__)

__all__ = [
    "corpus_text",
    "load_beir",
    "ndcg_at_k",
    "recall_at_k",
    "Run",
    "Qrels",
]

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Sequence[str] | Mapping[str, float]]


def corpus_text(doc: Mapping[str, Any]) -> str:
    """The text to index for a BEIR document: ``f"{title} {text}"`` stripped (the BEIR convention).

    An empty title gives just the text; a missing key counts as empty.
    """
    title = str(doc.get("title") or "")
    text = str(doc.get("text") or "")
    return f"{title} {text}".strip()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg}); expected one object per line") from None
            if not isinstance(row, dict) or "_id" not in row:
                raise ValueError(f"{path}:{lineno}: expected a JSON object with an '_id' field")
            rows.append(row)
    return rows


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id  corpus-id  score``, header line optional) into ``qid -> {docid: score}``."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8-sig", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{lineno}: expected 3 tab-separated columns query-id, corpus-id, score")
            qid, docid, score = row[0].strip(), row[1].strip(), row[2].strip()
            try:
                value = int(float(score))
            except ValueError:
                if lineno == 1:
                    continue  # the header line
                raise ValueError(f"{path}:{lineno}: score {score!r} is not a number") from None
            qrels.setdefault(qid, {})[docid] = value
    return qrels


def load_beir(
    folder: str | Path, split: str = "test"
) -> tuple[dict[str, dict[str, str]], dict[str, str], dict[str, dict[str, int]]]:
    """Load a BEIR folder.

    Returns ``(corpus, queries, qrels)``:

    * ``corpus``: ``doc_id -> {"title": str, "text": str}``, in file order (use :func:`corpus_text`);
    * ``queries``: ``query_id -> text`` for the judged queries only (at least one qrels score > 0), in
      ``queries.jsonl`` order;
    * ``qrels``: ``query_id -> {doc_id: score}`` for those same queries (score-0 rows kept: they are judged
      non-relevant).

    Raises:
        FileNotFoundError: the folder or one of its files is missing (the message names it).
        ValueError: a malformed line (the message gives file and line), or a judged query absent from
            ``queries.jsonl``.
    """
    root = Path(folder)
    if root.is_file() and root.name == "corpus.jsonl":
        root = root.parent
    if not root.is_dir():
        raise FileNotFoundError(f"BEIR folder {str(root)!r} does not exist")
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl",
             "qrels": root / "qrels" / f"{split}.tsv"}
    for what, path in files.items():
        if not path.is_file():
            hint = ""
            if what == "qrels":
                found = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
                hint = f" (available splits: {', '.join(found) or 'none'})"
            raise FileNotFoundError(f"{path} not found: a BEIR folder needs corpus.jsonl, queries.jsonl and "
                                    f"qrels/<split>.tsv{hint}")

    corpus: dict[str, dict[str, str]] = {}
    for row in _read_jsonl(files["corpus"]):
        corpus[str(row["_id"])] = {"title": str(row.get("title") or ""), "text": str(row.get("text") or "")}

    all_qrels = load_qrels(files["qrels"])
    judged = {qid for qid, docs in all_qrels.items() if any(s > 0 for s in docs.values())}
    if len(judged) < len(all_qrels):
        logger.info("%d queries have only non-relevant judgments and are not evaluated", len(all_qrels) - len(judged))

    queries: dict[str, str] = {}
    for row in _read_jsonl(files["queries"]):
        qid = str(row["_id"])
        if qid in judged:
            queries[qid] = str(row.get("text") or "")
    missing = judged - queries.keys()
    if missing:
        raise ValueError(
            f"{len(missing)} judged queries are missing from {files['queries']} (e.g. {sorted(missing)[:3]}); "
            "the folder is incomplete"
        )
    qrels = {qid: dict(all_qrels[qid]) for qid in queries}
    unknown = sum(1 for docs in qrels.values() for d in docs if d not in corpus)
    if unknown:
        logger.warning("%d qrels rows point to documents absent from the corpus", unknown)
    return corpus, queries, qrels


def _ranked(results: Sequence[str] | Mapping[str, float], k: int) -> list[str]:
    """Top ``k`` distinct document ids of one query's results."""
    if isinstance(results, Mapping):
        ordered = [d for d, _ in sorted(results.items(), key=lambda item: (-float(item[1]), str(item[0])))]
    elif isinstance(results, (str, bytes)):
        raise TypeError("a run maps each query id to a list of document ids (or a dict doc_id -> score), not a str")
    else:
        ordered = list(results)
    seen: set[str] = set()
    top: list[str] = []
    for d in ordered:
        if d in seen:
            continue
        seen.add(d)
        top.append(d)
        if len(top) == k:
            break
    return top


def _judged(qrels: Qrels) -> list[str]:
    return [qid for qid, docs in qrels.items() if any(s > 0 for s in docs.values())]


def ndcg_at_k(run: Run, qrels: Qrels, k: int = 10, *, per_query: bool = False) -> float | dict[str, float]:
    """Mean nDCG@k over the judged queries of ``qrels`` (see the module docstring for the conventions).

    With ``per_query=True`` returns ``query_id -> nDCG@k`` instead of the mean. With no judged query the
    mean is 0.0.
    """
    k = check_k(k)
    scores: dict[str, float] = {}
    for qid in _judged(qrels):
        judgments = qrels[qid]
        gains = sorted((s for s in judgments.values() if s > 0), reverse=True)[:k]
        ideal = sum((2.0**g - 1.0) / math.log2(i + 2) for i, g in enumerate(gains))
        dcg = 0.0
        for i, d in enumerate(_ranked(run.get(qid, ()), k)):
            rel = judgments.get(d, 0)
            if rel > 0:
                dcg += (2.0**rel - 1.0) / math.log2(i + 2)
        scores[qid] = dcg / ideal
    if per_query:
        return scores
    return sum(scores.values()) / len(scores) if scores else 0.0


def recall_at_k(run: Run, qrels: Qrels, k: int = 100, *, per_query: bool = False) -> float | dict[str, float]:
    """Mean Recall@k (relevant = score > 0) over the judged queries of ``qrels``."""
    k = check_k(k)
    scores: dict[str, float] = {}
    for qid in _judged(qrels):
        relevant = {d for d, s in qrels[qid].items() if s > 0}
        hits = sum(1 for d in _ranked(run.get(qid, ()), k) if d in relevant)
        scores[qid] = hits / len(relevant)
    if per_query:
        return scores
    return sum(scores.values()) / len(scores) if scores else 0.0
