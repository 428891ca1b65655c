"""The passage store: pid → passage text, ids, offsets and document metadata, plus BM25 postings.

A store is a list of immutable **segments**, oldest first. Each write (index, add, upsert) adds one
segment holding that write's passages; a segment covers an increasing pid range disjoint from the
others'. A segment folder holds ``passages.sqlite`` (tables ``passages`` and ``documents``) and, when the
index has BM25, ``bm25/`` (see :mod:`lateragkit.bm25`). Deleted passages are not removed from a segment:
the store is opened with the index's ``is_live(pids)`` and every read returns live passages only. A new
version of the store hard-links its unchanged segment folders' files, never copies them, so an add costs
O(new passages). Runs of small segments are merged by the same rule as the index's segments
(:func:`lateragkit.merge_policy.plan_merge`), dropping deleted passages; :meth:`PassageStore.compact`
merges everything.

Layout (inside an index version folder)::

    passages/
      store.json              format_version, segments [{name, first_pid, last_pid, passages}],
                              next_segment, bm25 (Bm25Config as a dict, or null)
      s00000001/passages.sqlite
      s00000001/bm25/...

A store file is never changed after its version is committed, so readers need no lock against writers,
only against each other on a shared SQLite connection.
"""
from __future__ import annotations

import bisect
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bm25 import Bm25Config, Bm25Segment, bm25_search
from .exceptions import CorruptIndexError
from .index.storage import link_or_copy, read_json, write_json
from .merge_policy import plan_merge

logger = logging.getLogger(__name__)

__all__ = ["PassageStore", "StoredPassage", "MetadataFilter", "IsLive"]

STORE_FORMAT = 2
MANIFEST = "store.json"
SQLITE = "passages.sqlite"
_REBUILD = "the index must be rebuilt"
_BATCH = 500
_COLUMNS = "pid, passage_id, document_id, content, start_char, end_char"
_GET_SQL = ("SELECT p.pid, p.passage_id, p.document_id, p.content, p.start_char, p.end_char, d.metadata "
            "FROM passages p LEFT JOIN documents d USING (document_id) WHERE p.pid IN ({marks})")

_SCHEMA = """
CREATE TABLE passages (
    pid INTEGER PRIMARY KEY,
    passage_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    content TEXT NOT NULL,
    start_char INTEGER,
    end_char INTEGER
);
CREATE INDEX passages_document ON passages(document_id);
CREATE TABLE documents (
    document_id TEXT PRIMARY KEY,
    metadata TEXT
);
"""

MetadataFilter = Mapping[str, Any] | Callable[[dict[str, Any]], bool]
IsLive = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class StoredPassage:
    """A passage as a search returns it: the fields of a result row (``pid``: None where the backend has none)."""

    passage_id: str
    document_id: str
    content: str
    start_char: int | None
    end_char: int | None
    document_metadata: dict[str, Any] | None
    pid: int | None = None


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    first_pid: int
    last_pid: int
    passages: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "first_pid": self.first_pid, "last_pid": self.last_pid, "passages": self.passages}


def metadata_predicate(metadata_filter: MetadataFilter) -> Callable[[dict[str, Any]], bool]:
    """A dict filter means equality on every key; a callable is used as it is."""
    if callable(metadata_filter):
        return metadata_filter
    if isinstance(metadata_filter, Mapping):
        wanted = dict(metadata_filter)

        def predicate(meta: dict[str, Any]) -> bool:
            return all(key in meta and meta[key] == value for key, value in wanted.items())

        return predicate
    raise TypeError(
        "filter must be a dict of metadata values or a callable(metadata) -> bool, "
        f"not {type(metadata_filter).__name__}"
    )


# --------------------------------------------------------------------------------------------------
# one segment
# --------------------------------------------------------------------------------------------------
class _Segment:
    """One immutable segment: a read-only SQLite connection and, when present, its BM25 postings."""

    def __init__(self, folder: Path, info: SegmentInfo, *, sqlite_path: Path | None = None,
                 bm25: bool | None = None) -> None:
        self.folder = folder
        self.info = info
        self.path = sqlite_path or folder / SQLITE
        self._lock = threading.Lock()
        if not self.path.is_file():
            raise CorruptIndexError(f"passage store {self.path} is missing; {_REBUILD}")
        # immutable=1: the file never changes after its commit, so SQLite takes no locks and reads no journal
        self._conn = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        try:
            self._conn.execute(f"SELECT {_COLUMNS} FROM passages LIMIT 1")
            self._conn.execute("SELECT document_id, metadata FROM documents LIMIT 1")
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise CorruptIndexError(f"passage store {self.path} is unreadable ({exc}); {_REBUILD}") from exc
        # bm25: True when the store's manifest says every segment has postings (a missing file is damage),
        # False for a store without BM25, None to take what is there (a segment being merged)
        wanted = Bm25Segment.exists(folder) if bm25 is None else bm25
        self.bm25 = Bm25Segment.load(folder) if wanted else None

    def pids(self) -> np.ndarray:
        """The segment's pids, ascending (from the memory-mapped BM25 postings when present)."""
        if self.bm25 is not None:
            return np.asarray(self.bm25.pids, dtype=np.int64)
        return np.asarray([r[0] for r in self.query("SELECT pid FROM passages ORDER BY pid")], dtype=np.int64)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise CorruptIndexError(f"passage store {self.path} is unreadable ({exc}); {_REBUILD}") from exc

    def query_in(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run ``sql`` (with one ``{marks}`` placeholder list) over ``values`` in batches."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(values), _BATCH):
            part = list(values[start : start + _BATCH])
            rows.extend(self.query(sql.format(marks=",".join("?" * len(part))), part))
        return rows

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _write_segment(
    folder: Path,
    rows: Sequence[tuple[Any, ...]],
    documents: Sequence[tuple[str, str | None]],
    bm25: Bm25Config | None,
) -> SegmentInfo:
    """Write one segment (rows sorted by pid) into the new, empty ``folder``."""
    folder.mkdir(parents=True)
    conn = sqlite3.connect(str(folder / SQLITE))
    try:
        conn.executescript(_SCHEMA)
        with conn:
            conn.executemany("INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?)", rows)
            conn.executemany("INSERT OR REPLACE INTO documents VALUES (?, ?)", documents)
    finally:
        conn.close()
    pids = np.asarray([r[0] for r in rows], dtype=np.int64)
    if bm25 is not None:
        Bm25Segment.write(folder, pids, [r[3] for r in rows], config=bm25)
    return SegmentInfo(folder.name, int(pids[0]) if pids.size else -1, int(pids[-1]) if pids.size else -1, len(rows))


# --------------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------------
class PassageStore:
    """The passages of one committed index version, read through ``is_live`` (see the module docstring)."""

    DIRNAME = "passages"

    def __init__(
        self,
        folder: Path,
        segments: list[_Segment],
        *,
        next_segment: int,
        bm25: Bm25Config | None,
        is_live: IsLive | None,
    ) -> None:
        self.folder = folder
        self.segments = segments
        self.next_segment = next_segment
        self.bm25_config = bm25
        self.is_live: IsLive = is_live if is_live is not None else (lambda pids: np.ones(len(pids), dtype=bool))
        self._first_list = [s.info.first_pid for s in segments]  # ascending: segments cover increasing pids

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: Path, *, is_live: IsLive | None = None) -> PassageStore:
        """Open the store folder of a committed version (``CorruptIndexError`` naming the file on damage)."""
        folder = Path(folder)
        manifest = read_json(folder / MANIFEST)
        if manifest.get("format_version") != STORE_FORMAT:
            raise CorruptIndexError(
                f"{folder / MANIFEST} has format_version {manifest.get('format_version')!r}, "
                f"this lateragkit reads {STORE_FORMAT}; {_REBUILD}"
            )
        try:
            infos = [SegmentInfo(str(s["name"]), int(s["first_pid"]), int(s["last_pid"]), int(s["passages"]))
                     for s in manifest["segments"]]
            next_segment = int(manifest["next_segment"])
            bm25 = None if manifest.get("bm25") is None else Bm25Config.from_dict(manifest["bm25"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptIndexError(f"{folder / MANIFEST} is malformed ({exc!r}); {_REBUILD}") from exc
        for info in infos:
            if "/" in info.name or "\\" in info.name or info.name in ("", ".", ".."):
                raise CorruptIndexError(f"{folder / MANIFEST} names an invalid segment {info.name!r}; {_REBUILD}")
        segments = [_Segment(folder / info.name, info, bm25=bm25 is not None) for info in infos]
        return cls(folder, segments, next_segment=next_segment, bm25=bm25, is_live=is_live)

    @classmethod
    def open_legacy(cls, sqlite_path: Path, *, is_live: IsLive | None = None) -> PassageStore:
        """A store written by lateragkit 0.1 (one ``passages.sqlite`` per version): one segment, no BM25."""
        seg_folder = Path(sqlite_path).parent
        probe = _Segment(seg_folder, SegmentInfo("legacy", 0, 0, 0), sqlite_path=Path(sqlite_path), bm25=False)
        first, last, count = probe.query("SELECT MIN(pid), MAX(pid), COUNT(*) FROM passages")[0]
        probe.info = SegmentInfo("legacy", int(first if first is not None else -1),
                                 int(last if last is not None else -1), int(count))
        return cls(seg_folder, [probe], next_segment=1, bm25=None, is_live=is_live)

    @property
    def is_legacy(self) -> bool:
        return any(s.info.name == "legacy" for s in self.segments)

    def close(self) -> None:
        for seg in self.segments:
            seg.close()

    # -- writing (each returns the description of a new store written into `folder`) -------------
    @classmethod
    def create(
        cls,
        folder: Path,
        pids: Sequence[int],
        passages: Sequence[Any],
        document_metadata: Mapping[str, dict[str, Any] | None],
        *,
        bm25: Bm25Config | None,
    ) -> None:
        """Write a new store holding one segment into ``folder`` (created, must not exist)."""
        folder.mkdir(parents=True)
        rows = _passage_rows(pids, passages)
        info = _write_segment(folder / "s00000001", rows, _document_rows(document_metadata), bm25)
        _write_manifest(folder, [info], next_segment=2, bm25=bm25)

    def append(
        self,
        folder: Path,
        pids: Sequence[int],
        passages: Sequence[Any],
        document_metadata: Mapping[str, dict[str, Any] | None],
        *,
        is_live: IsLive,
    ) -> None:
        """Write, into ``folder``, this store plus one segment of new passages; merge small segments when
        the merge policy says so. ``is_live`` is the NEW version's liveness (drops rows deleted by it)."""
        folder.mkdir(parents=True)
        new_name = f"s{self.next_segment:08d}"
        info = _write_segment(folder / new_name, _passage_rows(pids, passages), _document_rows(document_metadata),
                              self.bm25_config)
        infos = self._link_all(folder)
        infos.append(info)
        new_segment = self.next_segment + 1
        sizes = [self._live_count(i, folder, is_live) for i in infos]
        run = plan_merge(sizes)
        if run is not None:
            start, end = run
            merged = self._merge(folder, infos[start:end], f"s{new_segment:08d}", is_live)
            infos = infos[:start] + ([merged] if merged is not None else [])
            new_segment += 1
        _write_manifest(folder, infos, next_segment=new_segment, bm25=self.bm25_config)

    def relink(self, folder: Path, *, is_live: IsLive, compact: bool = False) -> None:
        """Write this store into ``folder`` unchanged (a delete: the index's tombstones hide rows), or, with
        ``compact``, merged into one segment without the rows ``is_live`` rejects. A store written by
        lateragkit 0.1 is converted (its one SQLite file copied into a segment, BM25 postings added)."""
        folder.mkdir(parents=True)
        infos = self._link_all(folder)
        next_segment = self.next_segment
        if compact and infos:
            merged = self._merge(folder, infos, f"s{next_segment:08d}", is_live)
            infos = [merged] if merged is not None else []
            next_segment += 1
        _write_manifest(folder, infos, next_segment=next_segment, bm25=self.bm25_config)

    def _link_all(self, folder: Path) -> list[SegmentInfo]:
        """Hard-link every segment into ``folder`` (a legacy store is converted, once, to a real segment)."""
        infos = []
        for seg in self.segments:
            if seg.info.name == "legacy":
                rows = seg.query(f"SELECT {_COLUMNS} FROM passages ORDER BY pid")
                docs = seg.query("SELECT document_id, metadata FROM documents")
                config = self.bm25_config or Bm25Config()
                self.bm25_config = config
                infos.append(_write_segment(folder / "s00000000", rows, docs, config))
                continue
            _link_tree(seg.folder, folder / seg.info.name)
            infos.append(seg.info)
        return infos

    def _live_count(self, info: SegmentInfo, folder: Path, is_live: IsLive) -> int:
        seg = self._segment(info.name)
        if seg is None:  # written in this transaction: all live
            return info.passages
        return int(np.count_nonzero(is_live(seg.pids()))) if seg.info.passages else 0

    def _segment(self, name: str) -> _Segment | None:
        for seg in self.segments:
            if seg.info.name == name:
                return seg
        return None

    def _merge(self, folder: Path, infos: list[SegmentInfo], name: str, is_live: IsLive) -> SegmentInfo | None:
        """Merge the (already linked) segments ``infos`` of ``folder`` into a new segment ``name``."""
        sources = [_Segment(folder / i.name, i) for i in infos]
        try:
            rows: list[tuple[Any, ...]] = []
            docs: dict[str, str | None] = {}
            for src in sources:
                seg_rows = src.query("SELECT pid, passage_id, document_id, content, start_char, end_char "
                                     "FROM passages ORDER BY pid")
                if not seg_rows:
                    continue
                live = is_live(np.asarray([r[0] for r in seg_rows], dtype=np.int64))
                kept = [r for r, ok in zip(seg_rows, live, strict=True) if ok]
                rows.extend(kept)
                wanted = sorted({r[2] for r in kept})
                for doc_id, meta in src.query_in("SELECT document_id, metadata FROM documents "
                                                 "WHERE document_id IN ({marks})", wanted):
                    docs[doc_id] = meta  # a later segment's metadata of the same document wins
            merged = None
            if rows:
                merged = _write_segment(folder / name, rows, sorted(docs.items()), None)
                if self.bm25_config is not None:
                    with_bm25 = [s.bm25 for s in sources if s.bm25 is not None]
                    if len(with_bm25) == len(sources):
                        Bm25Segment.merge(folder / name, with_bm25, is_live)
                    else:
                        Bm25Segment.write(folder / name, np.asarray([r[0] for r in rows], dtype=np.int64),
                                          [r[3] for r in rows], config=self.bm25_config)
        finally:
            for src in sources:
                src.close()
        for info in infos:
            _remove_linked(folder / info.name)
        logger.debug("merged %d store segments into %s", len(infos), name)
        return merged

    # -- reads ------------------------------------------------------------------------------------
    def count(self) -> int:
        """Live passages."""
        return sum(int(np.count_nonzero(self.is_live(p))) for p in self._all_pids())

    def _all_pids(self) -> Iterable[np.ndarray]:
        for seg in self.segments:
            yield seg.pids()

    def document_ids(self) -> set[str]:
        """Ids of the documents that have at least one live passage."""
        out: set[str] = set()
        for seg in self.segments:
            rows = seg.query("SELECT pid, document_id FROM passages")
            if rows:
                live = self.is_live(np.asarray([r[0] for r in rows], dtype=np.int64))
                out.update(r[1] for r, ok in zip(rows, live, strict=True) if ok)
        return out

    def documents_present(self, document_ids: Iterable[str]) -> set[str]:
        """Which of ``document_ids`` have at least one live passage."""
        ids = list(dict.fromkeys(document_ids))
        rows: list[tuple[Any, ...]] = []
        for seg in self.segments:
            rows.extend(seg.query_in("SELECT pid, document_id FROM passages WHERE document_id IN ({marks})", ids))
        if not rows:
            return set()
        live = self.is_live(np.asarray([r[0] for r in rows], dtype=np.int64))
        return {r[1] for r, ok in zip(rows, live, strict=True) if ok}

    def pids_for_documents(self, document_ids: Iterable[str]) -> list[int]:
        """Live pids of the given documents, ascending."""
        ids = list(dict.fromkeys(document_ids))
        found: list[int] = []
        for seg in self.segments:
            found.extend(r[0] for r in seg.query_in("SELECT pid FROM passages WHERE document_id IN ({marks})", ids))
        return self._live_sorted(found)

    def pids_matching(self, metadata_filter: MetadataFilter) -> list[int]:
        """Live pids of passages whose document metadata matches: a mapping means equality on every key,
        a callable is called with the metadata dict (``{}`` when the document has none)."""
        predicate = metadata_predicate(metadata_filter)
        found: list[int] = []
        for seg in self.segments:
            docs = seg.query("SELECT document_id, metadata FROM documents")
            matching = [doc_id for doc_id, meta in docs if predicate(json.loads(meta) if meta else {})]
            found.extend(r[0] for r in seg.query_in("SELECT pid FROM passages WHERE document_id IN ({marks})",
                                                    matching))
        return self._live_sorted(found)

    def _live_sorted(self, pids: list[int]) -> list[int]:
        if not pids:
            return []
        array = np.unique(np.asarray(pids, dtype=np.int64))
        return [int(p) for p in array[self.is_live(array)]]

    def get(self, pids: Iterable[int]) -> dict[int, StoredPassage]:
        """Records of the given pids (live or not: a search result is read from its own version): one query
        per segment that holds some of them (a search's k results: usually one or two)."""
        out: dict[int, StoredPassage] = {}
        if not self.segments:
            return out
        by_segment: dict[int, list[int]] = {}
        for pid in pids:  # k pids: a bisect each beats numpy's per-call overhead
            s = bisect.bisect_right(self._first_list, int(pid)) - 1
            if s >= 0:
                by_segment.setdefault(s, []).append(int(pid))
        for s, part in by_segment.items():
            rows = self.segments[s].query_in(_GET_SQL, part)
            for pid, passage_id, doc_id, content, start_char, end_char, meta in rows:
                out[pid] = StoredPassage(passage_id, doc_id, content, start_char, end_char,
                                         json.loads(meta) if meta else None, pid)
        return out

    # -- BM25 -------------------------------------------------------------------------------------
    @property
    def has_bm25(self) -> bool:
        return bool(self.segments) and all(seg.bm25 is not None for seg in self.segments)

    def bm25_search(
        self, queries: list[str], k: int, *, allowed: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """BM25 over the live passages (see :func:`lateragkit.bm25.bm25_search`)."""
        segments = [seg.bm25 for seg in self.segments if seg.bm25 is not None]
        if not segments:
            return [(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)) for _ in queries]
        return bm25_search(segments, queries, k, is_live=self.is_live, allowed=allowed)

    def info(self) -> dict[str, Any]:
        return {"segments": [seg.info.to_dict() for seg in self.segments], "bm25": self.has_bm25}


# --------------------------------------------------------------------------------------------------
Row = tuple[int, str, str, str, int | None, int | None]


def _passage_rows(pids: Sequence[int], passages: Sequence[Any]) -> list[Row]:
    if len(pids) != len(passages):
        raise ValueError(f"{len(pids)} pids for {len(passages)} passages")
    return [(int(pid), p.passage_id, p.document_id, p.content, p.start, p.end)
            for pid, p in zip(pids, passages, strict=True)]


def _document_rows(document_metadata: Mapping[str, dict[str, Any] | None]) -> list[tuple[str, str | None]]:
    return [(doc_id, None if meta is None else json.dumps(meta, ensure_ascii=False))
            for doc_id, meta in document_metadata.items()]


def _write_manifest(folder: Path, infos: list[SegmentInfo], *, next_segment: int, bm25: Bm25Config | None) -> None:
    write_json(folder / MANIFEST, {
        "format_version": STORE_FORMAT,
        "segments": [i.to_dict() for i in infos],
        "next_segment": next_segment,
        "bm25": None if bm25 is None else bm25.to_dict(),
    })


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of the segment folder ``src`` into ``dst`` (same relative layout)."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(path, target)


def _remove_linked(folder: Path) -> None:
    """Remove a segment folder of the staging area (its files are links; the committed originals stay)."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
    folder.rmdir()
