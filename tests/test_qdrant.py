"""Conformance of `lateragkit.qdrant.QdrantIndex` on both engines: embedded (qdrant-edge-py) and qdrant-client
(its local mode, standing in for a server: the backend uses only the client's server API).

Every test runs against both; each checks behaviour against an independent reference (`scoring.maxsim` on
the same vectors, or the exactly-specified fixture below).
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lateragkit import scoring
from lateragkit.exceptions import CorruptIndexError, IndexExistsError, IndexNotFoundError, MissingExtraError
from lateragkit.qdrant import (
    QdrantIndex,
    QdrantLocation,
    QdrantLockedError,
    QdrantOptions,
    QdrantUnavailableError,
    point_id,
)

ENGINES = {"embedded": "qdrant_edge", "client": "qdrant_client"}
DIM = 32
N_DOCS = 30  # documents doc0..doc29, two passages each (doc{j}-0, doc{j}-1): 60 passages


def _require(engine: str) -> None:
    if importlib.util.find_spec(ENGINES[engine]) is None:
        pytest.skip(f"{ENGINES[engine]} not installed (optional extra): pip install \"lateragkit[qdrant]\"")


def metadata_of(j: int) -> dict[str, Any] | None:
    if j % 5 == 4:
        return None
    return {"topic": "abc"[j % 3], "year": 2000 + j % 2, "tags": ["x", str(j % 2)]}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_data(n_passages: int, seed: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """Passages of 3-12 unit token vectors, each a noisy copy of one of the passage's 3 'topics' (of 40), and
    queries built from the topics of every 7th passage; one query in three has a padded (masked-out) token.
    Returns packed float16 vectors, doclens, Q [B, 5, DIM] and Q_mask."""
    rng = np.random.default_rng(seed)
    topics = unit(rng.normal(size=(40, DIM)))
    lens = rng.integers(3, 13, size=n_passages)
    own = np.stack([rng.choice(40, 3, replace=False) for _ in range(n_passages)])
    which = np.concatenate([own[i][rng.integers(0, 3, size=lens[i])] for i in range(n_passages)])
    v = unit(topics[which] + 0.35 * rng.normal(size=(len(which), DIM)) / np.sqrt(DIM)).astype(np.float16)
    targets = np.arange(0, n_passages, 7)
    q = unit(topics[own[targets][:, [0, 1, 2, 0, 1]]] + 0.35 * rng.normal(size=(len(targets), 5, DIM)) / np.sqrt(DIM))
    mask = np.ones((len(targets), 5), dtype=bool)
    mask[1::3, -1] = False
    return v, lens.astype(np.int64), torch.from_numpy(q.astype(np.float32)), torch.from_numpy(mask)


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    v, lens, Q, M = make_data(2 * N_DOCS, seed=22)
    starts = np.concatenate([[0], np.cumsum(lens)])
    vectors = [v[starts[i] : starts[i + 1]] for i in range(len(lens))]
    passages = [
        {
            "passage_id": f"doc{i // 2}-{i % 2}",
            "document_id": f"doc{i // 2}",
            "content": f"passage {i % 2} of document {i // 2}",
            "start_char": 100 * (i % 2),
            "end_char": 100 * (i % 2) + 99,
            "document_metadata": metadata_of(i // 2),
        }
        for i in range(len(lens))
    ]
    return {
        "v": v, "lens": lens, "vectors": vectors, "passages": passages, "Q": Q, "M": M,
        "doc_ids": [f"doc{j}" for j in range(N_DOCS)],
        "ref": scoring.maxsim(Q, M, v, lens).numpy(),
    }


class Backend:
    """Makes locations of one engine under a temporary folder and cleans up what it opened."""

    def __init__(self, engine: str, root: Path) -> None:
        self.engine, self.root, self.clients, self.indexes = engine, root, [], []  # type: ignore[var-annotated]

    def location(self, name: str = "idx", *, persistent: bool = False) -> QdrantLocation:
        if self.engine == "embedded":
            return QdrantLocation(path=self.root / name)
        from qdrant_client import QdrantClient

        # local mode in memory unless the test reopens (persisting there costs ~1 s per test)
        client = QdrantClient(path=str(self.root / f"client-{name}")) if persistent else QdrantClient(":memory:")
        self.clients.append(client)
        return QdrantLocation(client=client, collection_name=name)

    def create(self, location: QdrantLocation | None = None, **options: Any) -> QdrantIndex:
        index = QdrantIndex.create(location or self.location(), dim=DIM, options=QdrantOptions(**options))
        self.indexes.append(index)
        return index

    def close(self) -> None:
        for index in self.indexes:
            index.close()
        for client in self.clients:
            client.close()


@pytest.fixture(params=sorted(ENGINES))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    _require(request.param)
    b = Backend(request.param, tmp_path)
    yield b
    b.close()


@pytest.fixture(scope="module", params=sorted(ENGINES))
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           data: dict[str, Any]) -> Iterator[QdrantIndex]:
    """One filled index per engine (default options) for the tests that only read."""
    _require(request.param)
    b = Backend(request.param, tmp_path_factory.mktemp(f"shared-{request.param}"))
    yield filled(b, data)
    b.close()


def filled(backend: Backend, data: dict[str, Any], **options: Any) -> QdrantIndex:
    index = backend.create(**options)
    index.upsert_documents(data["doc_ids"], data["passages"], data["vectors"])
    return index


def ids_of(hits: list[tuple[float, dict[str, Any]]]) -> list[str]:
    return [rec["passage_id"] for _, rec in hits]


def reference_top(data: dict[str, Any], b: int, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
    scored = [(p["passage_id"], float(data["ref"][b, i])) for i, p in enumerate(data["passages"])
              if allowed is None or p["passage_id"] in allowed]
    return sorted(scored, key=lambda t: -t[1])[:k]


def assert_matches_reference(hits: list[list[tuple[float, dict[str, Any]]]], data: dict[str, Any], k: int,
                             allowed: set[str] | None = None, atol: float = 2e-3) -> None:
    assert len(hits) == data["Q"].shape[0]
    for b, row in enumerate(hits):
        ref = reference_top(data, b, k, allowed)
        assert ids_of(row) == [pid for pid, _ in ref]
        np.testing.assert_allclose([s for s, _ in row], [s for _, s in ref], atol=atol, rtol=0)


# --------------------------------------------------------------------------------------------------
# scores and ranking
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("datatype, atol", [("float32", 1e-4), ("float16", 2e-3)])
def test_scores_equal_scoring_maxsim(backend: Backend, data: dict[str, Any], datatype: str, atol: float) -> None:
    index = filled(backend, data, datatype=datatype)
    # the first stage keeps every passage here (candidates >= collection): the ranking is exact MaxSim
    assert_matches_reference(index.search(data["Q"], data["M"], 10, candidates=100), data, 10, atol=atol)
    assert_matches_reference(index.search(data["Q"], data["M"], 10, exact=True), data, 10, atol=atol)


def test_records_come_back_whole(shared: QdrantIndex, data: dict[str, Any]) -> None:
    index = shared
    by_id = {p["passage_id"]: p for p in data["passages"]}
    for row in index.search(data["Q"], data["M"], 5):
        for _, rec in row:
            assert rec == by_id[rec["passage_id"]]


def test_first_stage_limits_candidates_and_default_finds_the_best(shared: QdrantIndex, data: dict[str, Any]) -> None:
    index = shared
    one = index.search(data["Q"], data["M"], 1, candidates=1)
    assert all(len(row) == 1 for row in one)
    # the default candidates (200) exceed this collection: top 3 equals exact MaxSim
    assert_matches_reference(index.search(data["Q"], data["M"], 3), data, 3)


@pytest.mark.filterwarnings("ignore:Local mode performs exact")
def test_hnsw_first_stage_after_indexing(backend: Backend, data: dict[str, Any]) -> None:
    """With a tiny indexing threshold the engine builds the pooled vector's HNSW graph (a server does so in
    the background; qdrant-client's local mode has no HNSW and always scans)."""
    index = filled(backend, data, indexing_threshold_kb=1)
    if backend.engine == "embedded":
        assert index.info()["indexed_vectors"] > 0
    assert_matches_reference(index.search(data["Q"], data["M"], 10, candidates=60, hnsw_ef=200), data, 10)
    allowed = {p["passage_id"] for p in data["passages"] if (p["document_metadata"] or {}).get("topic") == "b"}
    hits = index.search(data["Q"], data["M"], 10, candidates=60, filter={"topic": "b"})
    assert_matches_reference(hits, data, 10, allowed=allowed)


def test_k_larger_than_collection_returns_all_sorted(shared: QdrantIndex, data: dict[str, Any]) -> None:
    index = shared
    for row in index.search(data["Q"][:2], data["M"][:2], 10_000):
        assert sorted(ids_of(row)) == sorted(p["passage_id"] for p in data["passages"])
        scores = [s for s, _ in row]
        assert scores == sorted(scores, reverse=True)


def test_empty_index_returns_empty_lists(backend: Backend, data: dict[str, Any]) -> None:
    index = backend.create()
    assert index.search(data["Q"][:3], data["M"][:3], 5) == [[], [], []]
    assert index.count_passages() == 0 and index.document_ids() == set()


# --------------------------------------------------------------------------------------------------
# writes
# --------------------------------------------------------------------------------------------------
def test_upsert_counts_and_ids(shared: QdrantIndex, data: dict[str, Any]) -> None:
    index = shared
    assert index.count_passages() == 2 * N_DOCS
    assert index.document_ids() == set(data["doc_ids"])
    info = index.info()
    assert info["kind"] == "qdrant" and info["dim"] == DIM and info["passages"] == 2 * N_DOCS


def test_upsert_replaces_every_earlier_passage_of_a_document(backend: Backend, data: dict[str, Any]) -> None:
    index = filled(backend, data)
    new = {"passage_id": "doc3-new", "document_id": "doc3", "content": "rewritten", "start_char": None,
           "end_char": None, "document_metadata": {"topic": "z"}}
    index.upsert_documents(["doc3"], [new], [data["vectors"][0]])
    assert index.count_passages() == 2 * N_DOCS - 1
    hits = index.search(data["Q"], data["M"], 100, doc_ids=["doc3"])
    assert all([rec for _, rec in row] == [new] for row in hits)
    # the old metadata no longer matches, the new one does
    assert all("doc3" not in {r["document_id"] for _, r in row}
               for row in index.search(data["Q"], data["M"], 100, filter={"topic": "a"}))
    only_new = index.search(data["Q"][:1], data["M"][:1], 5, filter={"topic": "z"})
    assert [ids_of(row) for row in only_new] == [["doc3-new"]]
    # re-adding with the original passages restores the original ranking
    index.upsert_documents(["doc3"], data["passages"][6:8], data["vectors"][6:8])
    assert_matches_reference(index.search(data["Q"], data["M"], 10, exact=True), data, 10)


def test_upsert_of_a_document_without_passages_removes_it(backend: Backend, data: dict[str, Any]) -> None:
    index = filled(backend, data)
    # doc0 listed without passages, doc1 rewritten with its own
    index.upsert_documents(["doc0", "doc1"], data["passages"][2:4], data["vectors"][2:4])
    assert index.document_ids() == set(data["doc_ids"]) - {"doc0"}
    assert index.count_passages() == 2 * N_DOCS - 2
    index.upsert_documents(["doc5"], [], [])
    assert index.document_ids() == set(data["doc_ids"]) - {"doc0", "doc5"}


def test_delete_documents(backend: Backend, data: dict[str, Any]) -> None:
    index = filled(backend, data)
    index.delete_documents(["doc1", "doc5", "no-such-doc"])
    assert index.document_ids() == set(data["doc_ids"]) - {"doc1", "doc5"}
    assert index.count_passages() == 2 * N_DOCS - 4
    gone = {"doc1-0", "doc1-1", "doc5-0", "doc5-1"}
    allowed = {p["passage_id"] for p in data["passages"]} - gone
    assert_matches_reference(index.search(data["Q"], data["M"], 100, exact=True), data, 100, allowed=allowed)
    index.delete_documents([])
    assert index.count_passages() == 2 * N_DOCS - 4


def test_replacement_is_one_operation_even_if_the_cleanup_is_lost(
    backend: Backend, data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer dies after the replacing operation, before deleting the tombstones: the document is already
    completely new (stale passages invisible), and the next write removes the leftovers."""
    index = filled(backend, data)
    engine = index._engine

    def die(ids: list[str]) -> None:
        raise KeyboardInterrupt("writer killed")

    monkeypatch.setattr(engine, "delete_ids", die)
    with pytest.raises(KeyboardInterrupt):
        index.upsert_documents(["doc2"], data["passages"][4:5], data["vectors"][4:5])
    monkeypatch.undo()
    assert index.count_passages() == 2 * N_DOCS - 1
    for row in index.search(data["Q"], data["M"], 100, doc_ids=["doc2"]):
        assert ids_of(row) == ["doc2-0"]
    assert engine.stats()["points_stored"] == 2 * N_DOCS  # the tombstone is still stored
    index.upsert_documents(["doc9"], data["passages"][18:20], data["vectors"][18:20])
    assert engine.stats()["points_stored"] == 2 * N_DOCS - 1


def test_documents_are_written_in_bounded_operations(backend: Backend, data: dict[str, Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    index = backend.create()
    index.batch_tokens = 40  # a few documents per operation; a document is never split
    sizes: list[set[str]] = []
    upsert = index._engine.upsert

    def spy(points: list[Any]) -> None:
        sizes.append({p.payload["document_id"] for p in points if p.payload})
        upsert(points)

    monkeypatch.setattr(index._engine, "upsert", spy)
    index.upsert_documents(data["doc_ids"], data["passages"], data["vectors"])
    assert len(sizes) > 5
    assert sorted(d for s in sizes for d in s) == sorted(data["doc_ids"])  # each document in exactly one
    assert index.count_passages() == 2 * N_DOCS


# --------------------------------------------------------------------------------------------------
# doc_ids and filters
# --------------------------------------------------------------------------------------------------
def test_doc_ids_restrict_every_query(shared: QdrantIndex, data: dict[str, Any]) -> None:
    index = shared
    wanted = ["doc2", "doc7", "doc11", "unknown"]
    allowed = {f"{d}-{i}" for d in wanted for i in (0, 1)}
    assert_matches_reference(index.search(data["Q"], data["M"], 4, doc_ids=wanted), data, 4, allowed=allowed)
    assert index.search(data["Q"][:2], data["M"][:2], 4, doc_ids=[]) == [[], []]
    assert index.search(data["Q"][:2], data["M"][:2], 4, doc_ids=["unknown"]) == [[], []]


@pytest.mark.parametrize(
    "flt",
    [{"topic": "a"}, {"topic": "b", "year": 2001}, {"year": 2000.0}, {"tags": ["x", "1"]}, {"topic": "a", "year": 2001},
     {}],
)
def test_dict_filter_is_equality_on_every_key(shared: QdrantIndex, data: dict[str, Any], flt: dict[str, Any]) -> None:
    index = shared

    def matches(meta: dict[str, Any] | None) -> bool:
        return all(meta is not None and key in meta and meta[key] == value for key, value in flt.items())

    allowed = {p["passage_id"] for p in data["passages"] if matches(p["document_metadata"])}
    assert allowed or flt == {"topic": "a", "year": 2001}  # that one matches nothing (j % 3 == 0 and j odd)
    hits = index.search(data["Q"], data["M"], 100, filter=flt)
    assert_matches_reference(hits, data, 100, allowed=allowed)


def test_filter_and_doc_ids_combine(shared: QdrantIndex, data: dict[str, Any]) -> None:
    index = shared
    hits = index.search(data["Q"], data["M"], 100, doc_ids=["doc0", "doc1", "doc3"], filter={"topic": "a"})
    assert_matches_reference(hits, data, 100, allowed={"doc0-0", "doc0-1", "doc3-0", "doc3-1"})


def test_filter_misuse_is_a_clear_type_error(shared: QdrantIndex, data: dict[str, Any]) -> None:
    index = shared
    with pytest.raises(TypeError, match="dict filter|dict of metadata"):
        index.search(data["Q"][:1], data["M"][:1], 3, filter=lambda meta: True)
    with pytest.raises(TypeError, match="dict of metadata"):
        index.search(data["Q"][:1], data["M"][:1], 3, filter=[("topic", "a")])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# reopening and locations
# --------------------------------------------------------------------------------------------------
def test_reopen_reads_its_stored_config(backend: Backend, data: dict[str, Any]) -> None:
    location = backend.location("reopen", persistent=True)
    index = backend.create(location, datatype="float32", candidates=77)
    index.upsert_documents(data["doc_ids"], data["passages"], data["vectors"])
    before = index.search(data["Q"], data["M"], 10)
    index.close()
    with pytest.raises(ValueError, match="closed"):
        index.search(data["Q"], data["M"], 10)
    again = QdrantIndex.open(location)
    backend.indexes.append(again)
    assert again.dim == DIM and again.options == QdrantOptions(datatype="float32", candidates=77)
    assert again.count_passages() == 2 * N_DOCS
    assert again.search(data["Q"], data["M"], 10) == before


def test_create_over_existing_and_open_missing(backend: Backend) -> None:
    location = backend.location("twice")
    backend.create(location)
    with pytest.raises(IndexExistsError):
        QdrantIndex.create(location, dim=DIM)
    with pytest.raises(IndexNotFoundError):
        QdrantIndex.open(backend.location("never-created"))


def test_drop_removes_the_index(backend: Backend) -> None:
    location = backend.location("dropped")
    backend.create(location).close()
    QdrantIndex.drop(location)
    with pytest.raises(IndexNotFoundError):
        QdrantIndex.open(location)
    QdrantIndex.drop(location)  # nothing there: no error


def test_embedded_folder_is_locked_while_open(tmp_path: Path) -> None:
    _require("embedded")
    location = QdrantLocation(path=tmp_path / "locked")
    with QdrantIndex.create(location, dim=DIM):
        with pytest.raises(QdrantLockedError, match="another process"):
            QdrantIndex.open(location)
    QdrantIndex.open(location).close()  # closing released the lock


def test_embedded_searches_run_while_a_writer_replaces_documents(tmp_path: Path, data: dict[str, Any]) -> None:
    _require("embedded")
    index = QdrantIndex.create(QdrantLocation(path=tmp_path / "busy"), dim=DIM)
    index.upsert_documents(data["doc_ids"], data["passages"], data["vectors"])
    errors: list[BaseException] = []
    searches = [0]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                for row in index.search(data["Q"], data["M"], 5):
                    assert row and all(rec["document_id"] in data["doc_ids"] for _, rec in row)
                searches[0] += 1
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for round_ in range(6):
            keep = data["passages"][round_ % 2 :: 2]  # every document alternately keeps passage 0 or 1
            index.upsert_documents(data["doc_ids"], keep, data["vectors"][round_ % 2 :: 2])
    finally:
        stop.set()
        for t in threads:
            t.join()
        index.close()
    assert not errors, errors[0]
    assert searches[0] > 0


def test_embedded_incomplete_creation_is_reported(tmp_path: Path) -> None:
    _require("embedded")
    location = QdrantLocation(path=tmp_path / "half")
    QdrantIndex.create(location, dim=DIM).close()
    (tmp_path / "half" / "lateragkit-qdrant.json").unlink()  # as if the creating process died before it
    with pytest.raises(CorruptIndexError, match="did not finish"):
        QdrantIndex.open(location)


def test_location_never_stores_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    loc = QdrantLocation(url="https://qdrant.example:6333", api_key="secret", collection_name="docs", shard_number=4,
                         replication_factor=2, write_consistency_factor=2)
    stored = loc.to_dict()
    assert "secret" not in repr(stored) and "secret" not in repr(loc)
    assert stored == {"kind": "remote", "collection_name": "docs", "url": "https://qdrant.example:6333",
                      "shard_number": 4, "replication_factor": 2, "write_consistency_factor": 2}
    monkeypatch.setenv("QDRANT_API_KEY", "from-env")
    back = QdrantLocation.from_dict(stored)
    assert back.resolved_api_key() == "from-env" and back.shard_number == 4
    assert QdrantLocation.from_dict(stored, api_key="given").resolved_api_key() == "given"
    assert QdrantLocation.from_dict({"kind": "embedded", "path": "q"}, base="/idx").path == Path("/idx/q")
    with pytest.raises(ValueError, match="qdrant_client="):
        QdrantLocation.from_dict({"kind": "remote", "collection_name": "docs"})


@pytest.mark.parametrize(
    "kwargs, error",
    [({}, ValueError), ({"path": "a", "url": "http://x:6333"}, ValueError), ({"url": "localhost"}, ValueError),
     ({"path": "a", "api_key": "k"}, ValueError), ({"path": "a", "collection_name": "a/b"}, ValueError),
     ({"url": "http://x:6333", "shard_number": 0}, ValueError), ({"path": 3}, TypeError)],
)
def test_bad_locations(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        QdrantLocation(**kwargs)


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------
def test_bad_search_input(shared: QdrantIndex, data: dict[str, Any]) -> None:
    index = shared
    Q, M = data["Q"][:2], data["M"][:2]
    with pytest.raises(ValueError, match="k must be"):
        index.search(Q, M, 0)
    with pytest.raises(ValueError, match=r"\[B, Lq, 32\]"):
        index.search(torch.zeros(2, 4, 16), torch.ones(2, 4, dtype=torch.bool), 3)
    with pytest.raises(ValueError, match="Q_mask"):
        index.search(Q, M[:, :2], 3)
    with pytest.raises(ValueError, match="no scored token"):
        index.search(Q, torch.zeros_like(M), 3)
    with pytest.raises(TypeError, match="ncells"):
        index.search(Q, M, 3, ncells=2)
    with pytest.raises(ValueError, match="candidates"):
        index.search(Q, M, 3, candidates=0)


def test_bad_write_input(backend: Backend, data: dict[str, Any]) -> None:
    index = backend.create()
    p, v = data["passages"], data["vectors"]
    cases: list[tuple[tuple[Any, Any, Any], type, str]] = [
        ((["doc0"], p[:2], v[:1]), ValueError, "one per passage"),
        ((["doc1"], p[:2], v[:2]), ValueError, "not in document_ids"),
        ((["doc0", "doc0"], p[:2], v[:2]), ValueError, "duplicates"),
        (("doc0", p[:2], v[:2]), TypeError, "list of str"),
        ((["doc0"], [p[0], p[0]], v[:2]), ValueError, "twice"),
        ((["doc0"], p[:1], [np.zeros((0, DIM))]), ValueError, "n_tokens >= 1"),
        ((["doc0"], p[:1], [np.zeros((3, DIM + 1))]), ValueError, "shape"),
        ((["doc0"], p[:1], [np.full((3, DIM), np.nan)]), ValueError, "NaN"),
        ((["doc0"], [{**p[0], "content": None}], v[:1]), TypeError, "content"),
        ((["doc0"], [{**p[0], "document_metadata": [1]}], v[:1]), TypeError, "document_metadata"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            index.upsert_documents(*args)
    assert index.count_passages() == 0  # nothing was written by a rejected call
    with pytest.raises(ValueError, match="dim"):
        QdrantIndex.create(backend.location("bad-dim"), dim=0)


@pytest.mark.parametrize("kwargs", [{"datatype": "int4"}, {"quantization": "pq"}, {"candidates": 0}, {"hnsw_m": 1}])
def test_bad_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        QdrantOptions(**kwargs)


# --------------------------------------------------------------------------------------------------
# quantization
# --------------------------------------------------------------------------------------------------
def test_int8_quantization_keeps_the_ranking_close(backend: Backend, data: dict[str, Any]) -> None:
    index = filled(backend, data, quantization="int8")
    hits = index.search(data["Q"], data["M"], 5)
    for b, row in enumerate(hits):
        ref = dict(reference_top(data, b, 60))
        assert ids_of(row)[0] == reference_top(data, b, 1)[0][0]
        for score, rec in row:  # int8 scores are approximate
            assert score == pytest.approx(ref[rec["passage_id"]], rel=0.05, abs=0.05)


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "qdrant_edge", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(MissingExtraError, match=r'pip install "lateragkit\[qdrant\]"'):
        QdrantIndex.create(QdrantLocation(path=tmp_path / "x"), dim=DIM)
    with pytest.raises(ImportError, match="qdrant_client"):
        QdrantIndex.open(QdrantLocation(url="http://localhost:6333"))
    assert not (tmp_path / "x").exists()


def test_importing_lateragkit_imports_no_qdrant_package() -> None:
    code = ("import sys, lateragkit, lateragkit.qdrant; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('qdrant_edge', 'qdrant_client')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_unreachable_server_is_a_typed_error(tmp_path: Path) -> None:
    _require("client")
    location = QdrantLocation(url="http://127.0.0.1:9", collection_name="docs")  # nothing listens on port 9
    with pytest.raises(QdrantUnavailableError, match="server is running"):
        QdrantIndex.create(location, dim=DIM)
    with pytest.raises(QdrantUnavailableError):
        QdrantIndex.open(location)


def test_point_ids_are_stable_uuid5() -> None:
    # pinned: a change of the id scheme would orphan every point of existing indexes
    assert point_id("doc1-0") == "3e810f69-9234-572f-9cc4-d8bbad49ee22"
    assert uuid.UUID(point_id("doc1-1")).version == 5 and point_id("doc1-1") != point_id("doc1-0")
