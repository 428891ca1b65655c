"""BM25 over immutable index segments, with statistics over the live passages of all segments.

The passage store of an index is a list of immutable segments (each write adds one; deletes are tombstones;
merges rewrite a contiguous run of segments). BM25 follows the same shape: every segment keeps its own
term postings in a ``bm25/`` subfolder, and :func:`bm25_search` combines them at query time with *global*
statistics over the passages that are live now: the number of live passages ``N``, their average length
``avgdl`` and, for each query term, its document frequency ``df`` among live passages. The scores are
therefore exactly those of a fresh ``bm25s`` index built on the live passages alone (same tokenizer, same
``method``/``k1``/``b``), however the passages are spread over segments and whatever was deleted.

Tokenisation is ``bm25s.tokenize``: lower-cased, split on ``(?u)\\b\\w\\w+\\b``, stopwords removed, then
stemmed with PyStemmer (Snowball) in the configured language, so queries and passages are tokenised
exactly as ``bm25s`` does.

Segment files (``<segment>/bm25/``; ``.npy`` and ``.json`` only, never pickle)::

    bm25.json    format_version, config (Bm25Config), counts, pid range, bm25s / PyStemmer versions
    vocab.json   {"terms": [...]}: the segment's terms, sorted; term id = position
    pids.npy     int64 [n]          passage ids, strictly increasing
    doclens.npy  int32 [n]          tokens per passage after stopword removal
    indptr.npy   int64 [terms + 1]  postings of term t: rows/tfs[indptr[t]:indptr[t + 1]] (CSC layout)
    rows.npy     int32 [nnz]        row (position in pids) of each posting, increasing within a term
    tfs.npy      int32 [nnz]        term frequency of each posting (>= 1)

Only raw term frequencies are stored, never scores: scores depend on the global statistics, which change
with every add and delete in any segment. A merge (:meth:`Bm25Segment.merge`) combines the postings of
several segments without re-tokenising, dropping non-live passages and terms left without postings; the
result is identical to a segment written from the kept texts.

Scores: ``idf(t) * tf / (tf + k1 * (1 - b + b * dl / avgdl))`` for ``"lucene"`` (bm25s's default,
``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``), ``"robertson"`` (``idf = ln(max(1, (N - df + 0.5) /
(df + 0.5)))``) and ``"atire"`` (``idf = ln(N / df)``, ``tf * (k1 + 1) / (tf + k1 * (...))``), summed over
the query's terms (a term repeated in the query counts as often as it appears, as in bm25s). Only passages
that contain at least one query term are candidates: a query whose every word is a stopword or unknown
returns an empty result.
"""
from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import CorruptIndexError
from .index.storage import load_npy, read_json, save_npy, write_json
from .validation import check_k, check_str_list

logger = logging.getLogger(__name__)

__all__ = [
    "Bm25Config",
    "Bm25Segment",
    "bm25_search",
    "tokenize",
    "BM25_FOLDER",
    "METHODS",
]

FORMAT_VERSION = 1
BM25_FOLDER = "bm25"
META_FILE = "bm25.json"
VOCAB_FILE = "vocab.json"
METHODS = ("lucene", "robertson", "atire")
_REBUILD = "rebuild the index (or its BM25 files) to repair it"
_ARRAYS = {"pids": np.int64, "doclens": np.int32, "indptr": np.int64, "rows": np.int32, "tfs": np.int32}
_MAX_ROWS = np.iinfo(np.int32).max

# ISO 639-1 codes accepted for `language`, mapped to the Snowball (PyStemmer) / bm25s names.
_ISO = {
    "ar": "arabic", "ca": "catalan", "cs": "czech", "da": "danish", "de": "german", "el": "greek",
    "en": "english", "es": "spanish", "et": "estonian", "eu": "basque", "fi": "finnish", "fr": "french",
    "ga": "irish", "hi": "hindi", "hu": "hungarian", "hy": "armenian", "id": "indonesian", "it": "italian",
    "lt": "lithuanian", "ne": "nepali", "nl": "dutch", "no": "norwegian", "pl": "polish", "pt": "portuguese",
    "ro": "romanian", "ru": "russian", "sr": "serbian", "sv": "swedish", "ta": "tamil", "tr": "turkish",
    "ja": "japanese", "ko": "korean", "zh": "chinese",  # no stemmer: use Bm25Config.for_language
}
# Languages for which bm25s ships a stopword list (its own names).
_BM25S_STOPWORDS = {
    "english", "german", "dutch", "french", "spanish", "portuguese", "italian", "russian", "swedish",
    "norwegian", "chinese", "turkish", "korean", "danish",
}

Allowed = np.ndarray | Sequence[int] | Sequence[np.ndarray] | None
IsLive = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------------
# configuration and tokenisation
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bm25Config:
    """Tokenisation and scoring settings of a BM25 index (recorded in every segment).

    Attributes:
        language: Snowball stemmer language (a PyStemmer name such as ``"english"``, or an ISO 639-1 code
            such as ``"en"``; stored as the full name).
        stopwords: ``"auto"`` (bm25s's list for ``language`` when it has one, else none), a bm25s list name,
            a tuple of words, or None for no stopword removal. Stored resolved.
        stemming: stem tokens with PyStemmer (True) or keep them as split.
        k1, b: the BM25 parameters (bm25s's defaults 1.5 and 0.75).
        method: ``"lucene"`` (default, as bm25s), ``"robertson"`` or ``"atire"``.
    """

    language: str = "english"
    stopwords: str | tuple[str, ...] | None = "auto"
    stemming: bool = True
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"

    def __post_init__(self) -> None:
        if not isinstance(self.language, str) or not self.language.strip():
            raise ValueError(f"language must be a language name such as 'english' (got {self.language!r})")
        language = self.language.strip().lower()
        language = _ISO.get(language, language)
        object.__setattr__(self, "language", language)
        object.__setattr__(self, "stopwords", _resolve_stopwords(self.stopwords, language))
        if not isinstance(self.stemming, bool):
            raise ValueError(f"stemming must be True or False (got {self.stemming!r})")
        if self.stemming:
            _stemmer(language)  # fails now, with the choices, on a language PyStemmer lacks
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)} (got {self.method!r})")
        for name, low, high in (("k1", 0.0, float("inf")), ("b", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in [{low}, {high}] (got {value!r})")
            object.__setattr__(self, name, float(value))

    @classmethod
    def for_language(cls, language: str, **settings: Any) -> Bm25Config:
        """Settings for ``language`` that never fail on it: stemming only where PyStemmer has a stemmer (e.g.
        none for ``"zh"`` or ``"ja"``, which are then split on word characters only), stopwords where bm25s
        has a list."""
        name = _ISO.get(language.strip().lower(), language.strip().lower())
        import Stemmer

        if "stemming" not in settings and name not in Stemmer.algorithms():
            logger.info("no Snowball stemmer for %r: BM25 terms are not stemmed", language)
            settings["stemming"] = False
        return cls(language=name, **settings)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able settings (as stored in ``bm25.json``)."""
        stopwords = list(self.stopwords) if isinstance(self.stopwords, tuple) else self.stopwords
        return {"language": self.language, "stopwords": stopwords, "stemming": self.stemming, "k1": self.k1,
                "b": self.b, "method": self.method}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bm25Config:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer format)."""
        known = {"language", "stopwords", "stemming", "k1", "b", "method"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown BM25 settings {sorted(unknown)}")
        data = dict(data)
        if isinstance(data.get("stopwords"), list):
            data["stopwords"] = tuple(data["stopwords"])
        return cls(**data)

    def tokenizer_settings(self) -> dict[str, Any]:
        """The settings that decide tokens (segments searched together must agree on them)."""
        return {"language": self.language, "stopwords": self.stopwords, "stemming": self.stemming}


def _resolve_stopwords(stopwords: Any, language: str) -> str | tuple[str, ...] | None:
    if stopwords is None or stopwords is False:
        return None
    if stopwords == "auto":
        return language if language in _BM25S_STOPWORDS else None
    if isinstance(stopwords, str):
        name = _ISO.get(stopwords.lower(), stopwords.lower())
        if name not in _BM25S_STOPWORDS:
            raise ValueError(f"bm25s has no stopword list {stopwords!r}: use one of "
                             f"{', '.join(sorted(_BM25S_STOPWORDS))}, a list of words, or None")
        return name
    if isinstance(stopwords, (list, tuple, set, frozenset)) and all(isinstance(w, str) for w in stopwords):
        return tuple(sorted(set(stopwords)))
    raise ValueError(f"stopwords must be 'auto', a list name, a list of words or None (got {stopwords!r})")


def _stemmer(language: str) -> Any:
    """A new PyStemmer stemmer: one per tokenisation call, as a stemmer must not be shared between threads."""
    import Stemmer  # PyStemmer

    try:
        return Stemmer.Stemmer(language)
    except KeyError:
        raise ValueError(f"PyStemmer has no stemmer for {language!r}: use one of "
                         f"{', '.join(Stemmer.algorithms())}, or stemming=False") from None


def _tokenize_ids(
    texts: list[str], config: Bm25Config, show_progress: bool = False
) -> tuple[list[list[int]], list[str]]:
    """bm25s's tokenizer: token ids per text and the vocabulary (id -> term)."""
    import bm25s

    stopwords = list(config.stopwords) if isinstance(config.stopwords, tuple) else config.stopwords
    stemmer = _stemmer(config.language) if config.stemming else None
    tokens = bm25s.tokenize(texts, lower=True, stopwords=stopwords, stemmer=stemmer, return_ids=True,
                            show_progress=show_progress)
    vocab = [""] * len(tokens.vocab)
    for term, i in tokens.vocab.items():
        vocab[i] = term
    return tokens.ids, vocab


def tokenize(texts: Sequence[str], config: Bm25Config | None = None) -> list[list[str]]:
    """The BM25 terms of each text (lower-cased, stopwords removed, stemmed), exactly as bm25s gives them."""
    ids, vocab = _tokenize_ids(check_str_list(texts, "texts"), config or Bm25Config())
    return [[vocab[i] for i in doc] for doc in ids]


# --------------------------------------------------------------------------------------------------
# segments
# --------------------------------------------------------------------------------------------------
class Bm25Segment:
    """The BM25 postings of one immutable segment (memory-mapped; see the module docstring for the files).

    Attributes: ``folder`` (the segment folder), ``config``, ``pids`` (int64, increasing), ``doclens``,
    ``indptr``, ``rows``, ``tfs``, ``vocabulary`` (sorted terms), ``num_passages``, ``num_terms``.
    """

    def __init__(self, folder: Path, config: Bm25Config, vocabulary: list[str], arrays: dict[str, np.ndarray]) -> None:
        self.folder = folder
        self.config = config
        self.vocabulary = vocabulary
        self.pids = arrays["pids"]
        self.doclens = arrays["doclens"]
        self.indptr = arrays["indptr"]
        self.rows = arrays["rows"]
        self.tfs = arrays["tfs"]
        self._term_index: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"Bm25Segment({str(self.folder)!r}, passages={self.num_passages}, terms={self.num_terms})"

    @property
    def num_passages(self) -> int:
        return int(self.pids.shape[0])

    @property
    def num_terms(self) -> int:
        return len(self.vocabulary)

    @property
    def pid_range(self) -> tuple[int, int]:
        """(first pid, last pid); (0, -1) for an empty segment."""
        return (int(self.pids[0]), int(self.pids[-1])) if self.num_passages else (0, -1)

    def term_ids(self, terms: Sequence[str]) -> np.ndarray:
        """int64 id of each term in this segment's vocabulary, -1 where absent."""
        if self._term_index is None:
            self._term_index = {t: i for i, t in enumerate(self.vocabulary)}
        index = self._term_index
        return np.array([index.get(t, -1) for t in terms], dtype=np.int64)

    @staticmethod
    def exists(folder: str | Path) -> bool:
        """Whether ``folder`` holds BM25 files (a segment written before BM25 existed does not)."""
        return (Path(folder) / BM25_FOLDER / META_FILE).is_file()

    @staticmethod
    def write(folder: str | Path, pids: np.ndarray | Sequence[int], texts: Sequence[str], *,
              config: Bm25Config | None = None, show_progress: bool = False) -> None:
        """Tokenise ``texts`` (passage ``pids[i]`` has text ``texts[i]``) and write the segment's BM25 files.

        Files go into ``folder/bm25/`` (created; ``folder`` may hold other files). ``pids`` must be
        non-negative and strictly increasing. Raises ``ValueError`` / ``TypeError`` on bad input and
        ``FileExistsError`` when ``folder/bm25`` already exists (segments are immutable).
        """
        config = config or Bm25Config()
        texts = check_str_list(texts, "texts")
        pids = _check_pids(pids, len(texts))
        ids, vocab = _tokenize_ids(texts, config, show_progress)
        doclens = np.fromiter((len(d) for d in ids), dtype=np.int64, count=len(ids))
        terms = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(doclens.sum()))
        rows = np.repeat(np.arange(len(ids), dtype=np.int64), doclens)
        _write_segment(Path(folder), config, pids, doclens, vocab, terms, rows, np.ones_like(terms))

    @classmethod
    def load(cls, folder: str | Path) -> Bm25Segment:
        """Memory-map a segment's BM25 files and validate them (``CorruptIndexError`` naming the file)."""
        folder = Path(folder)
        root = folder / BM25_FOLDER
        if not root.is_dir():
            raise CorruptIndexError(f"{root} is missing: this segment has no BM25 files; {_REBUILD}")
        meta_path = root / META_FILE
        meta = read_json(meta_path)
        config, counts = _parse_meta(meta, meta_path)
        vocabulary = _read_vocabulary(root / VOCAB_FILE, counts["num_terms"])
        shapes = {"pids": counts["num_passages"], "doclens": counts["num_passages"],
                  "indptr": counts["num_terms"] + 1, "rows": counts["num_postings"], "tfs": counts["num_postings"]}
        arrays = {name: load_npy(root / f"{name}.npy", dtype=dtype, shape=(shapes[name],))
                  for name, dtype in _ARRAYS.items()}
        _validate_arrays(root, arrays, counts)
        return cls(folder, config, vocabulary, arrays)

    @staticmethod
    def merge(folder: str | Path, segments: Sequence[Bm25Segment], is_live: IsLive | None = None) -> None:
        """Write into ``folder/bm25/`` one segment holding the live passages of ``segments``.

        The postings are combined as stored (no re-tokenising): rows of non-live passages are dropped, the
        vocabularies are united and terms without any remaining posting are dropped, so the result equals
        :meth:`write` on the kept passages' texts. ``segments`` must share their settings and cover
        disjoint pid ranges (any order); ``is_live(pids) -> bool array`` (None: all live).
        """
        if not segments:
            raise ValueError("merge needs at least one segment")
        config = _common_config(segments, None, scoring_too=True)
        segments = _in_pid_order(segments)
        vocab = sorted(set().union(*(seg.vocabulary for seg in segments)))
        position = {t: i for i, t in enumerate(vocab)}
        parts: list[tuple[np.ndarray, ...]] = []
        offset = 0
        for seg in segments:
            keep = _live_mask(seg, is_live)
            new_row = np.cumsum(keep, dtype=np.int64) - 1 + offset
            remap = np.array([position[t] for t in seg.vocabulary], dtype=np.int64)
            term_of = np.repeat(remap, np.diff(seg.indptr))
            rows = np.asarray(seg.rows, dtype=np.int64)
            kept = keep[rows]
            parts.append((np.asarray(seg.pids)[keep], np.asarray(seg.doclens, dtype=np.int64)[keep],
                          term_of[kept], new_row[rows[kept]], np.asarray(seg.tfs, dtype=np.int64)[kept]))
            offset += int(keep.sum())
        pids, doclens, terms, rows, tfs = (np.concatenate(column) for column in zip(*parts, strict=True))
        _write_segment(Path(folder), config, pids, doclens, vocab, terms, rows, tfs)


def _check_pids(pids: np.ndarray | Sequence[int], n: int) -> np.ndarray:
    array = np.asarray(pids)
    if array.ndim != 1 or array.shape[0] != n:
        raise ValueError(f"pids must be a 1-D array with one id per text ({n} texts, pids of shape {array.shape})")
    if n and array.dtype.kind not in "iu":
        raise TypeError(f"pids must be integers (got dtype {array.dtype})")
    array = array.astype(np.int64)
    if n and (array[0] < 0 or np.any(np.diff(array) <= 0)):
        raise ValueError("pids must be non-negative and strictly increasing (a segment covers an increasing pid range)")
    if n > _MAX_ROWS:
        raise ValueError(f"a BM25 segment holds at most {_MAX_ROWS} passages (got {n}); split the write")
    return array


def _write_segment(folder: Path, config: Bm25Config, pids: np.ndarray, doclens: np.ndarray, vocab: list[str],
                   terms: np.ndarray, rows: np.ndarray, tfs: np.ndarray) -> None:
    """Write the files of one segment from (term, row, tf) triples; terms without postings are dropped.

    ``terms`` index ``vocab``, which need not be sorted: it is stored sorted (code point order).
    """
    order = sorted(range(len(vocab)), key=vocab.__getitem__)
    rank = np.empty(len(vocab), dtype=np.int64)
    rank[order] = np.arange(len(vocab), dtype=np.int64)
    vocab, terms = [vocab[i] for i in order], rank[terms]
    n, n_terms = len(pids), len(vocab)
    key = terms * max(n, 1) + rows
    unique, inverse = np.unique(key, return_inverse=True)
    tf = np.bincount(inverse.ravel(), weights=tfs, minlength=len(unique)).astype(np.int64)
    term_of, row_of = np.divmod(unique, max(n, 1))
    counts = np.bincount(term_of, minlength=n_terms)
    used = counts > 0
    if not used.all():  # a term whose every passage was dropped by a merge
        vocab = [t for t, u in zip(vocab, used.tolist(), strict=True) if u]
        counts = counts[used]
    indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    root = folder / BM25_FOLDER
    root.mkdir(parents=True, exist_ok=False)
    arrays = {"pids": pids, "doclens": doclens, "indptr": indptr, "rows": row_of, "tfs": tf}
    for name, dtype in _ARRAYS.items():
        save_npy(root / f"{name}.npy", np.asarray(arrays[name], dtype=dtype))
    write_json(root / VOCAB_FILE, {"terms": vocab})
    write_json(root / META_FILE, {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "num_passages": n,
        "num_terms": len(vocab),
        "num_postings": int(len(tf)),
        "total_length": int(doclens.sum()),
        "tokenizer": {"bm25s": _version("bm25s"), "PyStemmer": _version("PyStemmer")},
    })
    logger.debug("wrote BM25 segment %s: %d passages, %d terms, %d postings", root, n, len(vocab), len(tf))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _parse_meta(meta: dict[str, Any], path: Path) -> tuple[Bm25Config, dict[str, int]]:
    if meta.get("format_version") != FORMAT_VERSION:
        raise CorruptIndexError(f"{path} has format_version {meta.get('format_version')!r}, this lateragkit reads "
                                f"{FORMAT_VERSION}; upgrade lateragkit or {_REBUILD}")
    counts: dict[str, int] = {}
    for name in ("num_passages", "num_terms", "num_postings", "total_length"):
        value = meta.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CorruptIndexError(f"{path}: {name} is {value!r}, expected a count; {_REBUILD}")
        counts[name] = value
    try:
        config = Bm25Config.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptIndexError(f"{path}: invalid BM25 settings ({exc}); {_REBUILD}") from None
    return config, counts


def _read_vocabulary(path: Path, num_terms: int) -> list[str]:
    terms = read_json(path).get("terms")
    if not isinstance(terms, list) or len(terms) != num_terms or not all(isinstance(t, str) for t in terms):
        raise CorruptIndexError(f"{path} does not hold the segment's {num_terms} terms; {_REBUILD}")
    if any(a >= b for a, b in itertools.pairwise(terms)):
        raise CorruptIndexError(f"{path}: terms are not sorted and unique; {_REBUILD}")
    return terms


def _validate_arrays(root: Path, arrays: dict[str, np.ndarray], counts: dict[str, int]) -> None:
    """Cross-check the arrays (O(postings), vectorised): any inconsistency names the file at fault."""
    pids, doclens, indptr, rows, tfs = (arrays[name] for name in _ARRAYS)
    n = counts["num_passages"]

    def fail(name: str, what: str) -> None:
        raise CorruptIndexError(f"{root / (name + '.npy')}: {what}; {_REBUILD}")

    if n and (pids[0] < 0 or np.any(np.diff(pids) <= 0)):
        fail("pids", "passage ids are not non-negative and strictly increasing")
    if np.any(doclens < 0) or int(doclens.sum(dtype=np.int64)) != counts["total_length"]:
        fail("doclens", "lengths do not add up to total_length in bm25.json")
    if indptr[0] != 0 or indptr[-1] != counts["num_postings"] or np.any(np.diff(indptr) <= 0):
        fail("indptr", "offsets do not run from 0 to the number of postings with every term present")
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        fail("rows", f"a row lies outside 0..{n - 1}")
    if len(tfs) and tfs.min() < 1:
        fail("tfs", "a term frequency is below 1")
    if not np.array_equal(np.bincount(rows, weights=tfs, minlength=n).astype(np.int64), doclens.astype(np.int64)):
        fail("tfs", "term frequencies do not add up to the passage lengths in doclens.npy")


# --------------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------------
def _common_config(segments: Sequence[Bm25Segment], config: Bm25Config | None, scoring_too: bool = False) -> Bm25Config:
    """The settings to search (or merge) ``segments`` with: theirs, which must agree on tokenisation."""
    if not segments:
        return config or Bm25Config()
    first = segments[0].config
    for seg in segments[1:]:
        same = seg.config == first if scoring_too else seg.config.tokenizer_settings() == first.tokenizer_settings()
        if not same:
            raise ValueError(f"BM25 segments {segments[0].folder} and {seg.folder} were written with different "
                             f"settings ({first} vs {seg.config}); merge or rebuild them with one setting")
    if config is None:
        return first
    if config.tokenizer_settings() != first.tokenizer_settings():
        raise ValueError(f"config tokenises differently from the segments ({config.tokenizer_settings()} vs "
                         f"{first.tokenizer_settings()}); only k1, b and method may differ at search time")
    return config


def _in_pid_order(segments: Sequence[Bm25Segment]) -> list[Bm25Segment]:
    ordered = sorted((s for s in segments if s.num_passages), key=lambda s: s.pid_range[0])
    for a, b in itertools.pairwise(ordered):
        if a.pid_range[1] >= b.pid_range[0]:
            raise ValueError(f"BM25 segments {a.folder} and {b.folder} overlap in passage ids "
                             f"({a.pid_range} and {b.pid_range}); pass each segment once")
    return ordered


def _live_mask(seg: Bm25Segment, is_live: IsLive | None) -> np.ndarray:
    if is_live is None:
        return np.ones(seg.num_passages, dtype=bool)
    mask = np.asarray(is_live(np.asarray(seg.pids)))
    if mask.shape != (seg.num_passages,) or mask.dtype != np.bool_:
        raise TypeError(f"is_live must return a bool array of shape ({seg.num_passages},) for the pids it gets "
                        f"(got {mask.dtype} {mask.shape})")
    return mask


def _allowed_per_query(allowed: Allowed, n_queries: int) -> list[np.ndarray | None]:
    """``allowed`` as one sorted unique int64 array (or None) per query."""
    if allowed is None:
        return [None] * n_queries
    per_query = isinstance(allowed, (list, tuple)) and len(allowed) > 0 and all(
        isinstance(a, (np.ndarray, list, tuple)) for a in allowed)
    if per_query:
        if len(allowed) != n_queries:
            raise ValueError(f"allowed has {len(allowed)} arrays for {n_queries} queries; give one per query or "
                             "one array for all")
        return [_sorted_ids(a) for a in allowed]  # type: ignore[arg-type]
    ids = _sorted_ids(allowed)  # type: ignore[arg-type]
    return [ids] * n_queries


def _sorted_ids(ids: np.ndarray | Sequence[int]) -> np.ndarray:
    array = np.asarray(ids)
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"allowed must hold integer passage ids (got dtype {array.dtype})")
    return np.unique(array.astype(np.int64).ravel())


def _in_sorted(values: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    if not len(sorted_ids):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return sorted_ids[at] == values


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, e)`` for each pair, vectorised."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return offsets + np.arange(total, dtype=np.int64)


def _idf(df: np.ndarray, n: int, method: str) -> np.ndarray:
    out = np.zeros(len(df), dtype=np.float64)
    seen = df > 0
    d = df[seen].astype(np.float64)
    if method == "lucene":
        out[seen] = np.log1p((n - d + 0.5) / (d + 0.5))
    elif method == "robertson":
        out[seen] = np.log(np.maximum((n - d + 0.5) / (d + 0.5), 1.0))
    else:  # atire
        out[seen] = np.log(n / d)
    return out


def _tf_component(tf: np.ndarray, dl: np.ndarray, avgdl: float, config: Bm25Config) -> np.ndarray:
    tf = tf.astype(np.float64)
    norm = config.k1 * (1.0 - config.b + config.b * dl.astype(np.float64) / avgdl)
    if config.method == "atire":
        return tf * (config.k1 + 1.0) / (tf + norm)
    return tf / (norm + tf)


@dataclass
class _Live:
    """Per-call view of the segments: live masks and the global statistics over live passages."""

    segments: list[Bm25Segment]
    masks: list[np.ndarray]
    num_live: int
    avgdl: float


def _live_view(segments: Sequence[Bm25Segment], is_live: IsLive | None) -> _Live:
    ordered = _in_pid_order(segments)
    masks = [_live_mask(seg, is_live) for seg in ordered]
    num_live = sum(int(m.sum()) for m in masks)
    total = sum(int(np.asarray(seg.doclens, dtype=np.int64)[m].sum()) for seg, m in zip(ordered, masks, strict=True))
    return _Live(ordered, masks, num_live, total / num_live if num_live else 0.0)


def _postings(live: _Live, term_list: list[str]) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], np.ndarray]:
    """Live postings of the query terms in each segment as (term index, row, tf), and each term's global df."""
    parts = []
    df = np.zeros(len(term_list), dtype=np.int64)
    for seg, mask in zip(live.segments, live.masks, strict=True):
        tid = seg.term_ids(term_list)
        present = np.flatnonzero(tid >= 0)
        starts, ends = seg.indptr[tid[present]], seg.indptr[tid[present] + 1]
        at = _ranges(starts, ends)
        which = np.repeat(present, ends - starts)
        rows = np.asarray(seg.rows[at], dtype=np.int64)
        keep = mask[rows]
        which, rows, tfs = which[keep], rows[keep], np.asarray(seg.tfs[at])[keep]
        df += np.bincount(which, minlength=len(term_list))
        parts.append((which, rows, tfs))
    return parts, df


def _top_k(scores: np.ndarray, pids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (score descending, ties by pid ascending), deterministic at the cut too."""
    if len(scores) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        above = np.flatnonzero(scores > kth)
        ties = np.flatnonzero(scores == kth)
        ties = ties[np.argsort(pids[ties], kind="stable")][: k - len(above)]
        chosen = np.concatenate([above, ties])
        scores, pids = scores[chosen], pids[chosen]
    order = np.lexsort((pids, -scores))
    return scores[order].astype(np.float32), pids[order].astype(np.int64)


def _search_one(live: _Live, terms: list[str], k: int, allowed: np.ndarray | None,
                config: Bm25Config) -> tuple[np.ndarray, np.ndarray]:
    empty = (np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))
    if not terms or live.num_live == 0 or (allowed is not None and not len(allowed)):
        return empty
    counts = Counter(terms)  # a term repeated in the query counts as often as it appears (as in bm25s)
    term_list = list(counts)
    weights = np.array([counts[t] for t in term_list], dtype=np.float64)
    parts, df = _postings(live, term_list)
    idf = _idf(df, live.num_live, config.method) * weights
    all_scores, all_pids = [], []
    for seg, (which, rows, tfs) in zip(live.segments, parts, strict=True):
        pids = np.asarray(seg.pids)[rows]
        if allowed is not None:  # restrict candidates before ranking (not a filter after top-k)
            ok = _in_sorted(pids, allowed)
            which, rows, tfs, pids = which[ok], rows[ok], tfs[ok], pids[ok]
        if not len(rows):
            continue
        contribution = idf[which] * _tf_component(tfs, np.asarray(seg.doclens)[rows], live.avgdl, config)
        candidates, inverse = np.unique(rows, return_inverse=True)
        all_scores.append(np.bincount(inverse.ravel(), weights=contribution, minlength=len(candidates)))
        all_pids.append(np.asarray(seg.pids)[candidates])
    if not all_scores:
        return empty
    return _top_k(np.concatenate(all_scores), np.concatenate(all_pids).astype(np.int64), k)


def bm25_search(
    segments: Sequence[Bm25Segment],
    queries: Sequence[str],
    k: int,
    *,
    is_live: IsLive | None = None,
    allowed: Allowed = None,
    config: Bm25Config | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """BM25 search over segments with global statistics over their live passages.

    Args:
        segments: the index's segments (any order; disjoint pid ranges).
        queries: query texts; one result per query.
        k: at most this many results per query (a positive int).
        is_live: ``is_live(pids) -> bool array`` marking the passages not deleted (None: all live). Called
            once per segment per call; the statistics (N, avgdl, df) count live passages only.
        allowed: restrict candidates to these pids (doc_ids / metadata filter), applied before ranking: an
            int array for every query, or a list of one array per query. None: no restriction.
        config: override ``k1``, ``b`` or ``method`` at search time; its tokenisation settings must match
            the segments'. None: the segments' own settings.

    Returns:
        One ``(scores float32 [k'], pids int64 [k'])`` per query, best first (ties by pid). Only passages
        containing a query term are returned, so ``k'`` may be below ``k``; a query with no usable term
        (only stopwords, or words absent from the index) gives empty arrays.
    """
    k = check_k(k)
    queries = check_str_list(queries, "queries")
    config = _common_config(segments, config)
    allowed_lists = _allowed_per_query(allowed, len(queries))
    live = _live_view(segments, is_live)
    query_terms = tokenize(queries, config) if queries else []
    return [_search_one(live, terms, int(k), allowed_q, config)
            for terms, allowed_q in zip(query_terms, allowed_lists, strict=True)]
