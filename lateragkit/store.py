"""The passage store: pid → passage text, ids, offsets and document metadata, in one SQLite file.

A store file belongs to one committed index version and is never changed after the commit; a writer
copies it into the next version's staging folder and changes the copy. Readers therefore need no lock
against writers, only against each other on the shared connection.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import CorruptIndexError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS passages (
    pid INTEGER PRIMARY KEY,
    passage_id TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL,
    content TEXT NOT NULL,
    start_char INTEGER,
    end_char INTEGER
);
CREATE INDEX IF NOT EXISTS passages_document ON passages(document_id);
CREATE TABLE IF NOT EXISTS documents (
    document_id TEXT PRIMARY KEY,
    metadata TEXT
);
"""

MetadataFilter = Mapping[str, Any] | Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class StoredPassage:
    pid: int
    passage_id: str
    document_id: str
    content: str
    start_char: int | None
    end_char: int | None
    document_metadata: dict[str, Any] | None


class PassageStore:
    """SQLite-backed passage records. One connection, serialised by a lock (SQLite objects are not
    safe to share between threads without one)."""

    FILENAME = "passages.sqlite"

    def __init__(self, path: Path, *, readonly: bool) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if readonly:
            if not self.path.is_file():
                raise CorruptIndexError(f"passage store {self.path} is missing; the index must be rebuilt")
            uri = f"file:{self.path}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            try:
                self._conn.execute("SELECT pid, passage_id, document_id, content, start_char, end_char FROM passages LIMIT 1")
                self._conn.execute("SELECT document_id, metadata FROM documents LIMIT 1")
            except sqlite3.DatabaseError as exc:
                self._conn.close()
                raise CorruptIndexError(
                    f"passage store {self.path} is unreadable ({exc}); the index must be rebuilt"
                ) from exc
        else:
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
            self._conn.executescript(_SCHEMA)
            self._conn.commit()

    # -- creation ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path) -> PassageStore:
        return cls(path, readonly=False)

    @classmethod
    def open(cls, path: Path) -> PassageStore:
        return cls(path, readonly=True)

    def copy_to(self, path: Path) -> PassageStore:
        """A writable copy at ``path`` (SQLite's online backup: consistent even while others read)."""
        dest = sqlite3.connect(str(path))
        with self._lock:
            self._conn.backup(dest)
        dest.close()
        return PassageStore(path, readonly=False)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writes (only on a staging copy) -------------------------------------------------------------
    def add(
        self,
        pids: Sequence[int],
        passages: Sequence[Any],
        document_metadata: Mapping[str, dict[str, Any] | None],
    ) -> None:
        """Insert passages (objects with passage_id, document_id, content, start, end) under ``pids``,
        and the metadata of their documents."""
        if len(pids) != len(passages):
            raise ValueError(f"{len(pids)} pids for {len(passages)} passages")
        rows = [
            (int(pid), p.passage_id, p.document_id, p.content, p.start, p.end)
            for pid, p in zip(pids, passages)
        ]
        docs = [
            (doc_id, None if meta is None else json.dumps(meta, ensure_ascii=False))
            for doc_id, meta in document_metadata.items()
        ]
        with self._lock, self._conn:
            self._conn.executemany("INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._conn.executemany("INSERT OR REPLACE INTO documents VALUES (?, ?)", docs)

    def delete_documents(self, document_ids: Iterable[str]) -> list[int]:
        """Remove the documents and their passages; returns the pids that were removed."""
        ids = list(document_ids)
        pids = self.pids_for_documents(ids)
        with self._lock, self._conn:
            self._conn.executemany("DELETE FROM passages WHERE document_id = ?", [(d,) for d in ids])
            self._conn.executemany("DELETE FROM documents WHERE document_id = ?", [(d,) for d in ids])
        return pids

    # -- reads ------------------------------------------------------------------------------------
    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0])

    def document_ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._conn.execute("SELECT document_id FROM documents")}

    def pids_for_documents(self, document_ids: Iterable[str]) -> list[int]:
        ids = list(dict.fromkeys(document_ids))
        out: list[int] = []
        with self._lock:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                out.extend(
                    row[0]
                    for row in self._conn.execute(
                        f"SELECT pid FROM passages WHERE document_id IN ({marks})", part
                    )
                )
        return sorted(out)

    def pids_matching(self, metadata_filter: MetadataFilter) -> list[int]:
        """Pids of passages whose document metadata matches: a mapping means equality on every key,
        a callable is called with the metadata dict (``{}`` when the document has none)."""
        if callable(metadata_filter):
            predicate = metadata_filter
        elif isinstance(metadata_filter, Mapping):
            wanted = dict(metadata_filter)

            def predicate(meta: dict[str, Any]) -> bool:
                return all(key in meta and meta[key] == value for key, value in wanted.items())
        else:
            raise TypeError(
                f"filter must be a dict of metadata values or a callable(metadata) -> bool, "
                f"not {type(metadata_filter).__name__}"
            )
        with self._lock:
            docs = self._conn.execute("SELECT document_id, metadata FROM documents").fetchall()
        matching = [doc_id for doc_id, meta in docs if predicate(json.loads(meta) if meta else {})]
        return self.pids_for_documents(matching)

    def get(self, pids: Sequence[int]) -> dict[int, StoredPassage]:
        wanted = [int(p) for p in pids]
        out: dict[int, StoredPassage] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    "SELECT p.pid, p.passage_id, p.document_id, p.content, p.start_char, p.end_char, "
                    f"d.metadata FROM passages p LEFT JOIN documents d USING (document_id) WHERE p.pid IN ({marks})",
                    part,
                ).fetchall()
                for pid, passage_id, doc_id, content, start_char, end_char, meta in rows:
                    out[pid] = StoredPassage(
                        pid, passage_id, doc_id, content, start_char, end_char, json.loads(meta) if meta else None
                    )
        return out
