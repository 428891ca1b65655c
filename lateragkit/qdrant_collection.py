"""Qdrant-backed index folders: the glue between an index folder (`collection`: versions, writer lock,
metadata) and the Qdrant engine (`lateragkit.qdrant`), used by the facade for ``index_type="qdrant"``.

The index folder keeps its usual ``CURRENT`` / ``LOCK`` / ``vNNNNNNNN/lateragkit.json`` (index_type
``"qdrant"``) plus ``qdrant.json``, which says where the points live (`QdrantLocation.to_dict()`: never an
API key). The passages themselves are Qdrant points:

- embedded (``qdrant=None``, the default): a qdrant-edge-py shard in ``<index>/qdrant/b-<hex>/``, one folder
  per build (a rebuild writes a new folder and commits it, so a failed rebuild leaves the old index intact;
  the folders the live version does not name are removed under the writer lock);
- a Qdrant server or cluster (``qdrant="http://host:6333"``, a ``qdrant_client.QdrantClient`` — its local
  mode too — or a `QdrantLocation`): a collection named after the index unless a `QdrantLocation` names one.
  Rebuilding drops and recreates that collection (a rebuild that fails midway leaves it partly filled).

Writes hold the index's writer lock (`Collection.lock`), so writers in several processes serialise against a
server. Adds and deletes change the live engine in place (no new version): each document is replaced in one
engine operation, so a killed writer leaves every document either fully old or fully new.

One process at a time: the embedded engine locks its storage while open, so a second process gets
`QdrantLockedError` (use a Qdrant server for several processes). Inside a process every facade instance
shares one open embedded engine per folder (`_shared_open`).
"""
from __future__ import annotations

import logging
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .collection import QDRANT_KIND, Collection, IndexMeta, LiveVersion, Snapshot, Transaction
from .qdrant import PassageRecord, QdrantIndex, QdrantLocation, QdrantOptions
from .splitting import Passage
from .store import StoredPassage

__all__ = [
    "QdrantSnapshot",
    "open_snapshot",
    "build",
    "upsert",
    "delete",
    "search",
    "release_unused",
    "check_access",
]

logger = logging.getLogger(__name__)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
Encode = Callable[[list[Passage]], Batches]

_EMBEDDED: dict[str, QdrantIndex] = {}  # resolved folder -> the one open embedded engine of this process
_EMBEDDED_LOCK = threading.Lock()


@dataclass
class QdrantSnapshot:
    """The live version of a Qdrant-backed index: its metadata and the open engine."""

    name: str
    path: Path
    version: str
    meta: IndexMeta
    index: QdrantIndex

    def close(self) -> None:
        """Nothing to release per snapshot: an embedded engine is shared by the process (see module doc)."""


# --------------------------------------------------------------------------------------------------
# locations
# --------------------------------------------------------------------------------------------------
def _is_client(obj: Any) -> bool:
    client_module = sys.modules.get("qdrant_client")  # a client object implies its module is imported
    return client_module is not None and isinstance(obj, client_module.QdrantClient)


def check_access(qdrant: Any) -> None:
    """``qdrant=``: None (embedded), a server URL, a ``qdrant_client.QdrantClient`` or a `QdrantLocation`."""
    if qdrant is None or isinstance(qdrant, QdrantLocation) or _is_client(qdrant):
        return
    if isinstance(qdrant, str) and "://" in qdrant:
        return
    raise TypeError(
        "qdrant= must be None (an embedded engine inside the index folder), a server URL such as "
        "'http://localhost:6333' (API key from QDRANT_API_KEY), a qdrant_client.QdrantClient or a "
        f"lateragkit.qdrant.QdrantLocation; got {qdrant!r}"
    )


def _new_location(qdrant: Any, collection: Collection) -> tuple[QdrantLocation, dict[str, Any]]:
    """Where a new build goes, and what ``qdrant.json`` records about it."""
    if qdrant is None:
        folder = collection.qdrant_dir / f"b-{uuid.uuid4().hex[:12]}"
        return QdrantLocation(path=folder), {"kind": "embedded", "path": folder.relative_to(collection.path).as_posix()}
    if isinstance(qdrant, QdrantLocation):
        if qdrant.is_embedded:  # a folder the user chose: recorded absolute (or relative if inside the index)
            folder = Path(str(qdrant.path)).resolve()
            inside = folder.is_relative_to(collection.path.resolve())
            stored = folder.relative_to(collection.path.resolve()).as_posix() if inside else str(folder)
            return QdrantLocation(path=folder), {"kind": "embedded", "path": stored}
        return qdrant, qdrant.to_dict()
    if isinstance(qdrant, str):
        location = QdrantLocation(url=qdrant, collection_name=collection.name)
    else:
        location = QdrantLocation(client=qdrant, collection_name=collection.name)
    return location, location.to_dict()


def _stored_location(live: LiveVersion, qdrant: Any, collection: Collection) -> QdrantLocation:
    """The location of the live version. ``qdrant=`` given at open time replaces the stored server: a URL or
    a client keeps the stored collection name, a `QdrantLocation` is used as it is."""
    if isinstance(qdrant, QdrantLocation):
        return qdrant
    record = dict(live.qdrant or {})
    if qdrant is not None and record.get("kind") == "embedded":
        raise ValueError(
            f"the index at {collection.path} uses an embedded Qdrant folder: a server URL or client does not "
            "apply (pass nothing, or qdrant=QdrantLocation(path=...) if that folder moved)"
        )
    if isinstance(qdrant, str):
        record["url"] = qdrant
    client = None if qdrant is None or isinstance(qdrant, str) else qdrant
    if record.get("kind") == "remote" and client is None and "url" not in record:
        raise ValueError(
            f"the index at {collection.path} lives in Qdrant collection {record.get('collection_name')!r}, reached "
            "through a QdrantClient object, which is not stored on disk: reopen it with "
            f"RAGPretrainedModel.from_index({str(collection.path)!r}, qdrant=<your QdrantClient>)"
        )
    return QdrantLocation.from_dict(record, client=client, base=collection.path)


def _shared_open(location: QdrantLocation, *, create: QdrantOptions | None = None, dim: int = 0) -> QdrantIndex:
    """Open (or with ``create``, create) an index; an embedded folder is opened once per process."""
    if not location.is_embedded:
        return QdrantIndex.create(location, dim=dim, options=create) if create else QdrantIndex.open(location)
    key = str(Path(str(location.path)).resolve())
    with _EMBEDDED_LOCK:
        index = _EMBEDDED.get(key)
        if index is None:
            index = QdrantIndex.create(location, dim=dim, options=create) if create else QdrantIndex.open(location)
            _EMBEDDED[key] = index
        return index


def _forget_embedded(folder: Path) -> None:
    """Close this process's engine of ``folder`` (if open) and remove the folder."""
    with _EMBEDDED_LOCK:
        index = _EMBEDDED.pop(str(folder.resolve()), None)
    if index is not None:
        index.close()
    QdrantIndex.drop(QdrantLocation(path=folder))


# --------------------------------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------------------------------
def open_snapshot(collection: Collection, *, qdrant: Any = None, device: torch.device | str | None = None
                  ) -> Snapshot | QdrantSnapshot:
    """The live version of ``collection``: a local `Snapshot`, or for a Qdrant-backed index a
    `QdrantSnapshot` (``qdrant``: how to reach a server when the stored URL is not enough, see `check_access`;
    ignored for a local index)."""
    live = collection.live()
    if live.meta.index_type != QDRANT_KIND:
        return collection.open(device=device)
    index = _shared_open(_stored_location(live, qdrant, collection))
    return QdrantSnapshot(collection.name, collection.path, live.version, live.meta, index)


# --------------------------------------------------------------------------------------------------
# writing (the caller holds the writer lock)
# --------------------------------------------------------------------------------------------------
def build(txn: Transaction, passages: list[Passage], encode: Encode, meta: IndexMeta, *, qdrant: Any,
          options: QdrantOptions | None) -> str:
    """Write ``passages`` into a new Qdrant index and stage the version naming it (``txn`` commits it)."""
    collection = txn.collection
    release_unused(collection, locked=True)  # builds that died midway
    location, stored = _new_location(qdrant, collection)
    if txn.replaces:
        _drop_previous(collection, location)
    index = _shared_open(location, create=options or QdrantOptions(), dim=meta.model.dim)
    try:
        _write_documents(index, [], passages, encode)
    except BaseException:
        if location.is_embedded:
            _forget_embedded(Path(str(location.path)))
        else:
            index.close()
            QdrantIndex.drop(location)
        raise
    logger.info("built a Qdrant index at %s (%d passages)", location.describe(), len(passages))
    return txn.record_qdrant(meta, stored)


def _drop_previous(collection: Collection, location: QdrantLocation) -> None:
    """Rebuilding into the place the live version uses (the same embedded folder or server collection): drop
    it first. Anything else that exists is never dropped: creating over it raises `IndexExistsError`."""
    try:
        live = collection.live()
    except Exception:  # noqa: BLE001 - an unreadable previous version names nothing to drop
        return
    previous = live.qdrant or {}
    if location.is_embedded:
        if previous.get("kind") == "embedded":
            folder = Path(str(location.path)).resolve()
            if (collection.path / str(previous["path"])).resolve() == folder:
                logger.info("overwrite_index: removing %s before rebuilding it", folder)
                _forget_embedded(folder)
        return
    same_name = previous.get("kind") == "remote" and previous.get("collection_name") == location.collection_name
    same_server = location.url is None or previous.get("url") in (None, location.url)
    if same_name and same_server:
        logger.info("overwrite_index: dropping %s before rebuilding it", location.describe())
        QdrantIndex.drop(location)


def upsert(state: QdrantSnapshot, document_ids: list[str], passages: list[Passage], encode: Encode) -> None:
    """Replace (or add) ``document_ids`` with ``passages``: a listed document without passages is removed."""
    _write_documents(state.index, document_ids, passages, encode)


def delete(state: QdrantSnapshot, document_ids: list[str]) -> None:
    """Delete every passage of these documents (one delete-by-filter operation; unknown ids are ignored)."""
    state.index.delete_documents(document_ids)


def _write_documents(index: QdrantIndex, document_ids: list[str], passages: list[Passage], encode: Encode) -> None:
    """Encode and upsert ``passages`` document by document: each document in one engine operation (its
    passages may span the encoder's chunks, so the last document of a chunk waits for the next one)."""
    first = {doc_id: i for i, doc_id in reversed(list(enumerate(p.document_id for p in passages)))}
    ordered = sorted(passages, key=lambda p: first[p.document_id])  # stable: each document's passages together
    pending: list[tuple[PassageRecord, np.ndarray]] = []
    cursor = 0
    for vectors, doclens in encode(ordered):
        array = vectors.float().cpu().numpy()
        bounds = np.concatenate([[0], np.cumsum(doclens.cpu().numpy())])
        for j in range(len(bounds) - 1):
            pending.append((_record(ordered[cursor]), array[bounds[j] : bounds[j + 1]]))
            cursor += 1
        last = pending[-1][0]["document_id"]
        cut = len(pending)
        while cut > 0 and pending[cut - 1][0]["document_id"] == last:
            cut -= 1
        _upsert_group(index, pending[:cut])
        del pending[:cut]
    _upsert_group(index, pending)
    emptied = sorted(set(document_ids) - set(first))
    if emptied:  # documents whose new text has no passage: replaced by nothing
        index.upsert_documents(emptied, [], [])


def _upsert_group(index: QdrantIndex, items: Sequence[tuple[PassageRecord, np.ndarray]]) -> None:
    if items:
        doc_ids = list(dict.fromkeys(record["document_id"] for record, _ in items))
        index.upsert_documents(doc_ids, [record for record, _ in items], [vecs for _, vecs in items])


def _record(p: Passage) -> PassageRecord:
    return PassageRecord(passage_id=p.passage_id, document_id=p.document_id, content=p.content, start_char=p.start,
                         end_char=p.end, document_metadata=p.metadata)


def release_unused(collection: Collection, *, locked: bool = False) -> None:
    """Remove the embedded build folders the live version does not use (after a rebuild, a switch to a
    local backend, or a build that died). ``locked``: the caller already holds the writer lock."""
    if not collection.qdrant_dir.is_dir():
        return
    if not locked:
        with collection.lock():
            release_unused(collection, locked=True)
        return
    try:
        live = collection.live()
    except Exception as exc:  # noqa: BLE001 - without a readable live version, nothing is known to be unused
        logger.info("not removing Qdrant folders of %s: %s", collection.path, exc)
        return
    keep: Path | None = None
    if live.qdrant is not None and live.qdrant.get("kind") == "embedded":
        keep = (collection.path / str(live.qdrant["path"])).resolve()
    for folder in collection.qdrant_dir.iterdir():
        if folder.resolve() != keep:
            _forget_embedded(folder)
    if keep is None or not keep.is_relative_to(collection.qdrant_dir.resolve()):
        shutil.rmtree(collection.qdrant_dir, ignore_errors=True)



# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def search(state: QdrantSnapshot, Q: torch.Tensor, Q_mask: torch.Tensor, k: int, *, doc_ids: list[str] | None,
           filter: Any, mode: str, params: Mapping[str, Any]
           ) -> list[list[tuple[float, StoredPassage]]]:
    """One list per query of ``(raw MaxSim score, passage)``, best first. ``doc_ids`` and a dict ``filter``
    run inside the engine (a callable filter is a `TypeError` saying to pass a dict)."""
    if mode != "late":
        raise ValueError(
            f"mode={mode!r} needs the BM25 index of a local passage store; a Qdrant-backed index searches with "
            "mode='late' only (build the index with index_type='plaid' or 'exact' for BM25 or hybrid search)"
        )
    hits = state.index.search(Q, Q_mask, k, doc_ids=doc_ids, filter=filter, **dict(params))
    return [[(score, StoredPassage(**record)) for score, record in row] for row in hits]
