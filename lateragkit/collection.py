"""The on-disk index format: the one module that knows an index folder's layout and file names.

An index folder (``<index_root>/<name>/``)::

    CURRENT                JSON {"version": "vNNNNNNNN"}: the live version (the commit point)
    LOCK                   the writer lock: one writer at a time across threads and processes
    vNNNNNNNN/             one committed version, never modified after its commit
      lateragkit.json      IndexMeta: format_version, model, index_type, document length, dates
      backend/             the passage index (lateragkit.index; segments hard-linked between versions)
      passages/            the passage store and BM25 postings (lateragkit.store; segments hard-linked)
      qdrant.json          Qdrant-backed index only (instead of backend/ and passages/): where its points
                           live, as `QdrantLocation.to_dict()` (never an API key; an embedded path is relative)
    qdrant/b-<hex>/        Qdrant-backed index only: the embedded engine's (mutable) storage of one build,
                           outside the immutable versions; see lateragkit.qdrant_collection
    .staging-<pid>-<hex>/  a write in progress (a leftover when its writer died)

Writes go through :meth:`Collection.write`: it takes the lock, removes the leftovers of dead writers,
opens the NEWEST committed version as the base of the change (never a stale copy an instance holds),
stages the new version, and commits it with `VersionedDir` (fsync, rename, ``os.replace`` of CURRENT).
Readers check ``CURRENT`` (one small read) and reopen when it names a newer version. The facade and the
CLI read and write index folders only through this module.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from filelock import FileLock, Timeout

from .bm25 import Bm25Config
from .exceptions import CorruptIndexError, IndexNotFoundError, LateragkitError, ModelMismatchError
from .index import PassageIndex, build_index, load_index
from .index.storage import CURRENT, VersionedDir, read_json, write_json
from .splitting import Passage
from .store import PassageStore

logger = logging.getLogger(__name__)

__all__ = [
    "Collection",
    "IndexMeta",
    "LiveVersion",
    "ModelRecord",
    "Snapshot",
    "Transaction",
    "list_indexes",
    "FORMAT_VERSION",
    "QDRANT_KIND",
]

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # 1: lateragkit 0.1 (one passages.sqlite per version, flat backend)
META_FILE = "lateragkit.json"
BACKEND_DIR = "backend"
LEGACY_STORE = "passages.sqlite"
LOCK_FILE = "LOCK"
QDRANT_KIND = "qdrant"  # index_type of an index whose passages are points of a Qdrant engine
QDRANT_FILE = "qdrant.json"
QDRANT_DIR = "qdrant"
# Seconds to wait for the writer lock before saying (once, in the log) that another writer holds it.
LOCK_NOTICE_AFTER = 5.0
# Opening retries when a concurrent writer committed and cleaned the version being opened.
OPEN_RETRIES = 5
_REBUILD = "the index must be rebuilt"
T = TypeVar("T")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# --------------------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRecord:
    """The model an index was built with: enough to load it again and to check compatibility."""

    name_or_path: str
    dim: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name_or_path": self.name_or_path, "dim": self.dim, "settings": self.settings}


@dataclass(frozen=True)
class IndexMeta:
    """``lateragkit.json`` of one version."""

    model: ModelRecord
    index_type: str
    max_document_length: int
    split_documents: bool = True
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "model": self.model.to_dict(),
            "index_type": self.index_type,
            "max_document_length": self.max_document_length,
            "split_documents": self.split_documents,
            "created": self.created,
            "updated": self.updated,
        }

    def touched(self) -> IndexMeta:
        """The same metadata for a new version written now."""
        return IndexMeta(self.model, self.index_type, self.max_document_length, self.split_documents,
                         self.created, _now(), FORMAT_VERSION)

    @classmethod
    def read(cls, folder: Path) -> IndexMeta:
        """Read and validate ``lateragkit.json``; `CorruptIndexError` naming the file on any problem."""
        path = folder / META_FILE
        data = read_json(path)
        version = data.get("format_version")
        if version not in READABLE_FORMATS:
            raise CorruptIndexError(
                f"{path} has format_version {version!r}; this lateragkit reads versions "
                f"{', '.join(map(str, READABLE_FORMATS))}: {_REBUILD} with this version"
            )
        try:
            model = data["model"]
            if not isinstance(model, dict) or not isinstance(model["name_or_path"], str):
                raise TypeError("model must name the model it was built with")
            settings = model.get("settings") or {}
            dim = model.get("dim", settings.get("dim"))
            if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
                raise TypeError(f"model.dim must be a positive int, not {dim!r}")
            index_type = data["index_type"]
            if not isinstance(index_type, str):
                raise TypeError("index_type must be a string")
            doc_len = data.get("max_document_length", settings.get("doc_maxlen", 256))
            if not isinstance(doc_len, int) or isinstance(doc_len, bool):
                raise TypeError("max_document_length must be an int")
            return cls(
                model=ModelRecord(model["name_or_path"], dim, dict(settings)),
                index_type=index_type,
                max_document_length=doc_len,
                split_documents=bool(data.get("split_documents", True)),
                created=str(data.get("created", "")),
                updated=str(data.get("updated", "")),
                format_version=int(version),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptIndexError(f"{path} is malformed ({exc}); {_REBUILD}") from exc

    def write(self, folder: Path) -> None:
        write_json(folder / META_FILE, self.to_dict())


# --------------------------------------------------------------------------------------------------
# an opened version
# --------------------------------------------------------------------------------------------------
@dataclass
class Snapshot:
    """One committed, immutable version opened for reading."""

    name: str
    path: Path
    version: str
    meta: IndexMeta
    index: PassageIndex
    store: PassageStore

    def close(self) -> None:
        self.store.close()

    def info(self) -> dict[str, Any]:
        index_info = self.index.info() if hasattr(self.index, "info") else {}
        return {
            "name": self.name,
            "path": str(self.path),
            "version": self.version,
            "format_version": self.meta.format_version,
            "index_type": self.meta.index_type,
            "model": self.meta.model.name_or_path,
            "dim": self.meta.model.dim,
            "max_document_length": self.meta.max_document_length,
            "passages": int(self.index.num_passages),
            "documents": len(self.store.document_ids()),
            "segments": len(index_info.get("segments", [])) or getattr(self.index, "num_segments", 1),
            "store_segments": len(self.store.segments),
            "bm25": self.store.has_bm25,
            "created": self.meta.created,
            "updated": self.meta.updated,
            "backend": index_info,
        }


def _open_version(name: str, path: Path, folder: Path, device: torch.device, reuse: PassageIndex | None
                  ) -> Snapshot:
    meta = IndexMeta.read(folder)
    if meta.index_type == QDRANT_KIND:
        raise LateragkitError(
            f"the index at {path} keeps its passages in Qdrant, not in local files: open it with "
            f"RAGPretrainedModel.from_index({str(path)!r}) (lateragkit.qdrant_collection.open_snapshot)"
        )
    # the segments (and codec) a newer version shares with ``reuse`` by hard links are not read again
    index = load_index(folder / BACKEND_DIR, device=device, reuse=reuse)
    if meta.format_version == 1:
        store = PassageStore.open_legacy(folder / LEGACY_STORE, is_live=index.is_live)
    else:
        store = PassageStore.open(folder / PassageStore.DIRNAME, is_live=index.is_live)
    return Snapshot(name=name, path=path, version=folder.name, meta=meta, index=index, store=store)


@dataclass(frozen=True)
class LiveVersion:
    """The live version's metadata, read without opening its index: enough to tell the backend apart, and
    for a Qdrant-backed index where its points live (``qdrant``: the stored `QdrantLocation` dict)."""

    version: str
    folder: Path
    meta: IndexMeta
    qdrant: dict[str, Any] | None = None


def _read_live(folder: Path) -> LiveVersion:
    meta = IndexMeta.read(folder)
    if meta.index_type != QDRANT_KIND:
        return LiveVersion(folder.name, folder, meta)
    record = read_json(folder / QDRANT_FILE).get("location")
    if not isinstance(record, dict):
        raise CorruptIndexError(f"{folder / QDRANT_FILE} does not say where the points live; {_REBUILD}")
    return LiveVersion(folder.name, folder, meta, record)


# --------------------------------------------------------------------------------------------------
# a write
# --------------------------------------------------------------------------------------------------
class Transaction:
    """One write of an index, inside the writer lock: ``base`` is the newest committed version (None for a
    first build); the change is staged into ``staging`` and committed when the ``with`` block ends."""

    def __init__(self, collection: Collection, base: Snapshot | None, staging: Path, device: torch.device) -> None:
        self.collection = collection
        self.base = base
        self.staging = staging
        self.device = device
        self.committed = False
        self.replaces = base is not None
        # the index this transaction wrote (None for a Qdrant-backed one): a reader of the committed version
        # reopens it with ``Collection.open(reuse=txn.index)`` and reads none of its files again
        self.index: PassageIndex | None = None

    def build(
        self,
        batches: Iterable[tuple[Any, Any]],
        passages: Sequence[Any],
        document_metadata: Mapping[str, dict[str, Any] | None],
        meta: IndexMeta,
        *,
        bm25: Bm25Config | None,
        **index_options: Any,
    ) -> str:
        """A complete new index (replacing whatever was there). Returns the backend's kind."""
        built = build_index(self.staging / BACKEND_DIR, batches, dim=meta.model.dim, num_passages=len(passages),
                            device=self.device, **index_options)
        kind = built.kind
        self.index = built
        PassageStore.create(self.staging / PassageStore.DIRNAME, list(range(len(passages))), passages,
                            document_metadata, bm25=bm25)
        IndexMeta(meta.model, kind, meta.max_document_length, meta.split_documents).write(self.staging)
        return kind

    def change(
        self,
        *,
        delete_pids: Sequence[int] = (),
        batches: Iterable[tuple[Any, Any]] | None = None,
        passages: Sequence[Any] = (),
        document_metadata: Mapping[str, dict[str, Any] | None] | None = None,
    ) -> np.ndarray:
        """Delete ``delete_pids`` and add ``passages`` (encoded as ``batches``) in one new version: an add,
        an upsert or a delete. Returns the new passages' pids."""
        base = self._require_base()
        deleted = np.asarray(sorted(set(int(p) for p in delete_pids)), dtype=np.int64)
        backend = self.staging / BACKEND_DIR
        new_pids = np.zeros(0, dtype=np.int64)
        if batches is not None and deleted.size:
            index, new_pids = base.index.replace(backend, deleted, batches)
        elif batches is not None:
            index, new_pids = base.index.add(backend, batches)
        else:
            index = base.index.delete(backend, deleted)
        self.index = index
        store_dir = self.staging / PassageStore.DIRNAME
        if passages:
            base.store.append(store_dir, [int(p) for p in new_pids], passages, document_metadata or {},
                              is_live=index.is_live)
        else:
            base.store.relink(store_dir, is_live=index.is_live)
        base.meta.touched().write(self.staging)
        return new_pids

    def compact(self) -> None:
        """Merge every segment into one and drop deleted passages (ids are kept)."""
        base = self._require_base()
        index = base.index.compact(self.staging / BACKEND_DIR)
        self.index = index
        base.store.relink(self.staging / PassageStore.DIRNAME, is_live=index.is_live, compact=True)
        base.meta.touched().write(self.staging)

    def rebuild(self, encode: Callable[[list[Any]], Iterable[tuple[Any, Any]]], **index_options: Any) -> int:
        """Every live passage of the base, re-encoded by ``encode`` (passages → vector batches), into a new
        index of the same kind and width: a PLAID codec trained afresh on all of them, as a fresh build of
        these passages would have. Passage and document ids, offsets, metadata and the BM25 settings are
        kept; passages are numbered anew in their current order. Returns the number of passages."""
        base = self._require_base()
        pids = base.index.live_pids()
        stored = base.store.get(int(p) for p in pids)
        passages = [
            Passage(s.passage_id, s.document_id, s.content, s.start_char, s.end_char, s.document_metadata)
            for s in (stored[int(p)] for p in pids)
        ]
        if not passages:
            raise ValueError(f"the index at {self.collection.path} holds no passage to retrain on; add documents first")
        metadata = {p.document_id: p.metadata for p in passages}
        nbits = getattr(base.index, "nbits", None)
        self.build(encode(passages), passages, metadata, base.meta, bm25=base.store.bm25_config,
                   index_type=base.meta.index_type, nbits=nbits, **index_options)
        return len(passages)

    def record_qdrant(self, meta: IndexMeta, location: Mapping[str, Any]) -> str:
        """Commit a Qdrant-backed index: the version holds only its metadata and where its points live
        (``location``: `QdrantLocation.to_dict()`, no secrets). Returns the kind."""
        IndexMeta(meta.model, QDRANT_KIND, meta.max_document_length, meta.split_documents).write(self.staging)
        write_json(self.staging / QDRANT_FILE, {"location": dict(location)})
        return QDRANT_KIND

    def _require_base(self) -> Snapshot:
        if self.base is None:
            raise IndexNotFoundError(
                f"no index at {self.collection.path}; build one with RAGPretrainedModel.index() first"
            )
        return self.base


# --------------------------------------------------------------------------------------------------
# the collection
# --------------------------------------------------------------------------------------------------
class Collection:
    """One index folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self._versioned = VersionedDir(self.path)
        self._current_file = os.fspath(self.path / CURRENT)

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r})"

    def exists(self) -> bool:
        return self._versioned.exists()

    def version(self) -> str | None:
        """Name of the live version (one small file read), or None when nothing was committed."""
        if not self._versioned.exists():
            return None
        try:
            return self._versioned.current().name
        except IndexNotFoundError:
            return None

    def is_current(self, version: str) -> bool:
        """True when ``CURRENT`` names ``version``: one read of a small file and no other system call, the
        check a reader makes before each search (anything else, a damaged ``CURRENT`` included, is False:
        the caller then reopens through `version()` and `open()`, which say what is wrong)."""
        try:
            with open(self._current_file, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("version") == version

    def open(self, *, device: torch.device | str | None = None, reuse: PassageIndex | None = None) -> Snapshot:
        """Open the live version. A writer that commits and cleans meanwhile makes this retry.

        ``reuse``: an index of this collection already open (the one of a version a reader held before
        another instance committed, or ``Transaction.index`` of the write just committed): the segments and
        codec the live version shares with it are reused, not loaded again, so reopening after a small add
        costs O(new segments). ``reuse`` itself stays usable."""
        dev = torch.device(device) if device is not None else torch.device("cpu")
        return self._read_retrying(lambda folder: _open_version(self.name, self.path, folder, dev, reuse))

    def live(self) -> LiveVersion:
        """The live version's metadata (and Qdrant location), without opening its index."""
        return self._read_retrying(_read_live)

    def _read_retrying(self, read: Callable[[Path], T]) -> T:
        last_error: Exception | None = None
        for _ in range(OPEN_RETRIES):
            folder = self._versioned.current()
            try:
                return read(folder)
            except (CorruptIndexError, FileNotFoundError) as exc:
                if self.version() == folder.name and folder.is_dir():
                    raise  # the live version itself is damaged
                last_error = exc  # the version was replaced and cleaned while being opened: retry
        assert last_error is not None
        raise last_error

    @property
    def qdrant_dir(self) -> Path:
        """Where the embedded Qdrant engine of a Qdrant-backed index keeps its builds (one folder each)."""
        return self.path / QDRANT_DIR

    def info(self, *, device: torch.device | str | None = None) -> dict[str, Any]:
        live = self.live()
        if live.qdrant is not None:  # the engine is not opened here: counts need RAGPretrainedModel.from_index
            meta = live.meta
            return {
                "name": self.name, "path": str(self.path), "version": live.version,
                "format_version": meta.format_version, "index_type": meta.index_type,
                "model": meta.model.name_or_path, "dim": meta.model.dim,
                "max_document_length": meta.max_document_length, "created": meta.created,
                "updated": meta.updated, "qdrant": live.qdrant,
            }
        snap = self.open(device=device)
        try:
            return snap.info()
        finally:
            snap.close()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """The writer lock (a file lock: released by the OS when its holder dies, even by SIGKILL)."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / LOCK_FILE))
        try:
            lock.acquire(timeout=LOCK_NOTICE_AFTER)
        except Timeout:
            logger.info("waiting for another writer of %s to finish", self.path)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def write(
        self,
        *,
        device: torch.device | str | None = None,
        known: Snapshot | None = None,
        must_exist: bool = True,
        open_base: bool = True,
    ) -> Iterator[Transaction]:
        """A write transaction on the newest committed version (see :class:`Transaction`).

        ``known``: a snapshot the caller has open; it is reused when it is still the live version, else
        the newest version is opened, reusing ``known``'s unchanged segments (a stale instance never writes
        over another instance's change).
        ``open_base=False`` (a full rebuild) does not open the live version at all, so a damaged index
        can still be replaced; ``txn.replaces`` says whether one was there.
        """
        dev = torch.device(device) if device is not None else torch.device("cpu")
        with self.lock():
            self._versioned.clean()  # leftovers of writers that died: no live writer can own them now
            base: Snapshot | None = None
            live = self.version()
            if live is None and must_exist:
                raise IndexNotFoundError(f"no index at {self.path}; build one with RAGPretrainedModel.index() first")
            if live is not None and open_base:
                fresh = known is not None and known.version == live
                base = known if fresh else self.open(device=dev, reuse=known.index if known is not None else None)
            with self._versioned.stage() as staging:
                txn = Transaction(self, base, staging, dev)
                txn.replaces = live is not None
                yield txn
            txn.committed = True
            self._versioned.clean()


def list_indexes(root: str | os.PathLike[str], *, device: torch.device | str | None = None) -> list[dict[str, Any]]:
    """Info of every index folder under ``root`` (sorted by name); a damaged one is listed with its error."""
    root = Path(root)
    out: list[dict[str, Any]] = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        collection = Collection(folder)
        if not collection.exists():
            continue
        try:
            out.append(collection.info(device=device))
        except LateragkitError as exc:
            out.append({"name": folder.name, "path": str(folder), "error": str(exc)})
    return out


def check_model_matches(meta: IndexMeta, dim: int, model_name: str, path: Path) -> None:
    """An index can only be searched with vectors of its own width: say what to do otherwise."""
    if meta.model.dim != dim:
        raise ModelMismatchError(
            f"the index at {path} holds {meta.model.dim}-dimensional vectors (built with "
            f"{meta.model.name_or_path!r}) but the model {model_name!r} produces {dim}-dimensional ones; open it "
            f"with RAGPretrainedModel.from_index({str(path)!r}) (model=... if the model folder moved), load the same "
            "model with the same dim=, or rebuild the index with this model"
        )

