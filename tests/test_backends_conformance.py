"""One behaviour, every backend: the facade's index / add / upsert / delete / filters / doc_ids / reopening /
bad input over exact, PLAID, Qdrant embedded (qdrant-edge-py) and Qdrant through qdrant-client (its local mode
``QdrantClient(path=...)``, standing in for a server), on real text (40 ADI documents, MiniLM encoder) and on
an exactly-specified five-document fixture.

Where the backends legitimately differ, the test says so: PLAID's compressed vectors make its ranking
approximate (top-1 agreement with exact MaxSim, not equality), and a Qdrant-backed index takes only dict
filters (they run inside the engine) and ``mode="late"``.
"""
from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lateragkit import RAGPretrainedModel
from lateragkit.exceptions import IndexExistsError, IndexNotFoundError

from .conftest import data_dir, minilm_path

BACKENDS = ("exact", "plaid", "qdrant-embedded", "qdrant-client")
EXTRA = {"qdrant-embedded": "qdrant_edge", "qdrant-client": "qdrant_client"}
RESULT_KEYS = {"content", "score", "rank", "document_id", "passage_id"}
N_ADI = 40
DOC_LEN = 64  # tokens: the longer ADI abstracts split into several passages (ids, offsets differ per passage)
ALL = 10_000  # larger than any collection here
QUERIES = [
    "automatic retrieval of document titles",
    "library education and training of librarians",
    "computer indexing of technical reports",
    "information needs of scientists",
    "evaluation of retrieval systems",
    "machine translation",
]

SMALL = {
    "paris": "Paris is the capital of France and its largest city.",
    "nile": "The Nile flows north through Egypt into the Mediterranean Sea.",
    "colbert": "ColBERT compares every query token with every document token.",
    "quantum": "Quantum computers use qubits instead of classical bits.",
}
SMALL_META: dict[str, dict[str, Any] | None] = {
    "paris": {"kind": "place", "year": 2020},
    "nile": {"kind": "river", "year": 2021},
    "colbert": {"kind": "tech", "year": 2020},
    "quantum": None,
}


def _skip_without_extra(backend: str) -> None:
    module = EXTRA.get(backend)
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (optional extra): pip install \"lateragkit[qdrant]\"")


@dataclass
class Adi:
    ids: list[str]
    texts: list[str]
    metas: list[dict[str, int]]

    @property
    def by_id(self) -> dict[str, str]:
        return dict(zip(self.ids, self.texts, strict=True))


@pytest.fixture(scope="module")
def adi() -> Adi:
    lines = (data_dir("adi") / "corpus.jsonl").read_text().splitlines()[:N_ADI]
    docs = [json.loads(line) for line in lines]
    ids = [d["_id"] for d in docs]
    return Adi(ids, [(d["title"] + ". " + d["text"]).strip() for d in docs],
               [{"parity": int(i) % 2, "n": int(i)} for i in ids])


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> RAGPretrainedModel:
    return RAGPretrainedModel.from_pretrained(minilm_path(), index_root=tmp_path_factory.mktemp("conformance"),
                                              verbose=0, device="cpu")


@pytest.fixture(scope="module")
def qdrant_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """qdrant-client's local mode: the client API a server speaks, without a server."""
    _skip_without_extra("qdrant-client")
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path_factory.mktemp("qdrant-local")))
    yield client
    client.close()


@dataclass
class Built:
    backend: str
    name: str
    path: str
    reopen: dict[str, Any]  # what from_index needs besides the path


class Backends:
    """Builds indexes of one backend through the facade (the ADI one once per module)."""

    def __init__(self, rag: RAGPretrainedModel, request: pytest.FixtureRequest) -> None:
        self.rag = rag
        self.request = request
        self.adi: dict[str, Built] = {}

    def kwargs(self, backend: str) -> dict[str, Any]:
        _skip_without_extra(backend)
        if backend == "qdrant-client":
            return {"index_type": "qdrant", "qdrant": self.request.getfixturevalue("qdrant_client")}
        return {"index_type": "qdrant" if backend == "qdrant-embedded" else backend}

    def build(self, backend: str, name: str, texts: list[str], ids: list[str], metas: list[Any], **extra: Any
              ) -> Built:
        kwargs = self.kwargs(backend)
        path = self.rag.index(texts, document_ids=ids, document_metadatas=metas, index_name=f"{name}-{backend}",
                              **{**kwargs, **extra})
        reopen = {"qdrant": kwargs["qdrant"]} if "qdrant" in kwargs else {}
        return Built(backend, f"{name}-{backend}", path, reopen)

    def adi_index(self, backend: str, adi: Adi) -> Built:
        if backend not in self.adi:
            self.adi[backend] = self.build(backend, "adi", adi.texts, adi.ids, adi.metas, max_document_length=DOC_LEN)
        return self.adi[backend]

    def small(self, backend: str, name: str) -> Built:
        ids = list(SMALL)
        return self.build(backend, name, [SMALL[i] for i in ids], ids, [SMALL_META[i] for i in ids])


@pytest.fixture(scope="module")
def backends(rag: RAGPretrainedModel, request: pytest.FixtureRequest) -> Backends:
    return Backends(rag, request)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def adi_index(backends: Backends, backend: str, adi: Adi) -> Built:
    return backends.adi_index(backend, adi)


def _docs(rows: list[dict[str, Any]]) -> set[str]:
    return {r["document_id"] for r in rows}


def _is_qdrant(backend: str) -> bool:
    return backend.startswith("qdrant")


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def test_result_shape_offsets_and_metadata(rag: RAGPretrainedModel, adi_index: Built, adi: Adi) -> None:
    batch = rag.search(QUERIES[:3], index_name=adi_index.name, k=7)
    assert isinstance(batch, list) and len(batch) == 3 and all(isinstance(rows, list) for rows in batch)
    single = rag.search(QUERIES[0], index_name=adi_index.name, k=7)
    assert [r["passage_id"] for r in single] == [r["passage_id"] for r in batch[0]]
    for rows in batch:
        assert len(rows) == 7
        assert [r["rank"] for r in rows] == list(range(1, 8))
        scores = [r["score"] for r in rows]
        assert scores == sorted(scores, reverse=True) and all(isinstance(s, float) for s in scores)
        for r in rows:
            assert RESULT_KEYS <= set(r)
            doc = adi.by_id[r["document_id"]]
            assert r["passage_id"].startswith(r["document_id"] + "-")
            assert r["content"] == doc[r["start_char"] : r["end_char"]]
            assert r["document_metadata"] == adi.metas[adi.ids.index(r["document_id"])]
    zero = rag.search(QUERIES[0], index_name=adi_index.name, k=3, zero_index_ranks=True)
    assert [r["rank"] for r in zero] == [0, 1, 2]


def test_top1_agrees_with_exact_maxsim(rag: RAGPretrainedModel, backends: Backends, adi_index: Built,
                                       adi: Adi) -> None:
    reference = rag.search(QUERIES, index_name=backends.adi_index("exact", adi).name, k=1)
    got = rag.search(QUERIES, index_name=adi_index.name, k=1)
    same = [a[0]["passage_id"] == b[0]["passage_id"] for a, b in zip(reference, got, strict=True)]
    if adi_index.backend == "plaid":  # 2-bit residual compression: an approximation of MaxSim
        assert sum(same) >= len(QUERIES) - 1, same
    else:  # Qdrant scores the stored (float16) token vectors exactly: the same MaxSim sums
        assert all(same), same
        for a, b in zip(reference, got, strict=True):
            assert b[0]["score"] == pytest.approx(a[0]["score"], abs=5e-3)


def test_k_larger_than_the_collection_returns_every_passage_sorted(rag: RAGPretrainedModel, backends: Backends,
                                                                   adi_index: Built, adi: Adi) -> None:
    everything = rag.search(QUERIES[1], index_name=backends.adi_index("exact", adi).name, k=ALL)
    rows = rag.search(QUERIES[1], index_name=adi_index.name, k=ALL)
    assert len(everything) > N_ADI  # some documents were split
    assert sorted(r["passage_id"] for r in rows) == sorted(r["passage_id"] for r in everything)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


def test_doc_ids_restrict_every_query(rag: RAGPretrainedModel, adi_index: Built, adi: Adi) -> None:
    allowed = ["3", "7", "12"]
    for rows in rag.search(QUERIES[:2], index_name=adi_index.name, k=ALL, doc_ids=allowed):
        assert _docs(rows) == set(allowed)
    assert _docs(rag.search(QUERIES[0], index_name=adi_index.name, k=ALL, doc_ids="7")) == {"7"}
    assert rag.search(QUERIES[0], index_name=adi_index.name, k=5, doc_ids=["no-such-doc"]) == []
    assert rag.search(QUERIES[0], index_name=adi_index.name, k=5, doc_ids=[]) == []
    assert rag.search(QUERIES[:2], index_name=adi_index.name, k=5, doc_ids=[]) == [[], []]


def test_dict_filter_is_equality_on_every_key(rag: RAGPretrainedModel, adi_index: Built, adi: Adi) -> None:
    even = rag.search(QUERIES[2], index_name=adi_index.name, k=ALL, filter={"parity": 0})
    assert _docs(even) == {i for i, m in zip(adi.ids, adi.metas, strict=True) if m["parity"] == 0}
    assert _docs(rag.search(QUERIES[2], index_name=adi_index.name, k=ALL, filter={"parity": 0, "n": 4})) == {"4"}
    assert rag.search(QUERIES[2], index_name=adi_index.name, k=ALL, filter={"parity": 0, "n": 5}) == []
    assert rag.search(QUERIES[2], index_name=adi_index.name, k=5, filter={"missing_key": 1}) == []
    both = rag.search(QUERIES[2], index_name=adi_index.name, k=ALL, filter={"parity": 1}, doc_ids=["2", "3", "5"])
    assert _docs(both) == {"3", "5"}


def test_callable_filter(rag: RAGPretrainedModel, adi_index: Built) -> None:
    def odd(meta: dict[str, Any]) -> bool:
        return meta.get("parity") == 1

    if _is_qdrant(adi_index.backend):  # filters run inside Qdrant: a Python callable cannot
        with pytest.raises(TypeError, match="dict"):
            rag.search(QUERIES[0], index_name=adi_index.name, k=5, filter=odd)
    else:
        by_callable = rag.search(QUERIES[0], index_name=adi_index.name, k=ALL, filter=odd)
        by_dict = rag.search(QUERIES[0], index_name=adi_index.name, k=ALL, filter={"parity": 1})
        assert [r["passage_id"] for r in by_callable] == [r["passage_id"] for r in by_dict]


def test_bad_search_input(rag: RAGPretrainedModel, adi_index: Built) -> None:
    name = adi_index.name
    for k in (0, -3):
        with pytest.raises(ValueError, match="k"):
            rag.search(QUERIES[0], index_name=name, k=k)
    with pytest.raises(TypeError):
        rag.search(QUERIES[0], index_name=name, k=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="strings"):
        rag.search(QUERIES[0], index_name=name, doc_ids=[7])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty"):
        rag.search("   ", index_name=name)
    with pytest.raises(ValueError, match="mode"):
        rag.search(QUERIES[0], index_name=name, mode="dense")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no_such_param"):
        rag.search(QUERIES[0], index_name=name, no_such_param=1)
    with pytest.raises(IndexNotFoundError):
        rag.search(QUERIES[0], index_name="never-built")


def test_keyword_modes(rag: RAGPretrainedModel, adi_index: Built) -> None:
    for mode in ("bm25", "hybrid"):
        if _is_qdrant(adi_index.backend):  # BM25 lives in the local passage store
            with pytest.raises(ValueError, match="mode='late'"):
                rag.search(QUERIES[0], index_name=adi_index.name, k=3, mode=mode)  # type: ignore[arg-type]
        else:
            assert len(rag.search(QUERIES[0], index_name=adi_index.name, k=3, mode=mode)) == 3  # type: ignore[arg-type]


def test_reopen_with_from_index(rag: RAGPretrainedModel, adi_index: Built) -> None:
    before = rag.search(QUERIES[:2], index_name=adi_index.name, k=5)
    other = RAGPretrainedModel.from_index(adi_index.path, verbose=0, device="cpu", **adi_index.reopen)
    after = other.search(QUERIES[:2], k=5)
    for a, b in zip(before, after, strict=True):
        assert [r["passage_id"] for r in a] == [r["passage_id"] for r in b]
        assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], abs=1e-5)
    if adi_index.backend == "qdrant-client":  # the client object is not stored: from_index must be given it
        with pytest.raises(ValueError, match="qdrant="):
            RAGPretrainedModel.from_index(adi_index.path, verbose=0, device="cpu")


# --------------------------------------------------------------------------------------------------
# writing (a fresh five-document index per test)
# --------------------------------------------------------------------------------------------------
def test_add_upsert_and_delete(rag: RAGPretrainedModel, backends: Backends, backend: str) -> None:
    small = backends.small(backend, "writes")
    name = small.name
    assert _docs(rag.search("river", index_name=name, k=ALL)) == set(SMALL)
    rag.add_to_index(["The Danube flows through Vienna and Budapest."], new_document_ids=["danube"],
                     new_document_metadatas=[{"kind": "river", "year": 2022}], index_name=name)
    top = rag.search("Danube Vienna", index_name=name, k=1)[0]
    assert top["document_id"] == "danube" and top["document_metadata"] == {"kind": "river", "year": 2022}
    # upsert: an indexed id is replaced, passages and metadata
    rag.add_to_index(["The Thames runs through London."], new_document_ids=["nile"],
                     new_document_metadatas=[{"kind": "english river"}], index_name=name)
    nile = rag.search("river", index_name=name, k=ALL, doc_ids=["nile"])
    assert [(r["content"], r["document_metadata"]) for r in nile] == [
        ("The Thames runs through London.", {"kind": "english river"})
    ]
    assert rag.search("Egypt Mediterranean", index_name=name, k=ALL, filter={"kind": "river", "year": 2021}) == []
    rag.delete_from_index(["paris"], index_name=name)
    rag.delete_from_index("no-such-document", index_name=name)  # unknown ids are ignored
    assert _docs(rag.search("capital of France", index_name=name, k=ALL)) == {"nile", "colbert", "quantum", "danube"}
    # a document whose new text is empty is replaced by nothing
    rag.add_to_index(["", "Rust is a systems programming language."], new_document_ids=["quantum", "rust"],
                     index_name=name)
    assert _docs(rag.search("qubits", index_name=name, k=ALL)) == {"nile", "colbert", "danube", "rust"}
    # another instance sees every write
    other = RAGPretrainedModel.from_index(small.path, verbose=0, device="cpu", **small.reopen)
    assert _docs(other.search("qubits", k=ALL)) == {"nile", "colbert", "danube", "rust"}


def test_compact_keeps_results(rag: RAGPretrainedModel, backends: Backends, backend: str) -> None:
    small = backends.small(backend, "compact")
    rag.delete_from_index(["colbert"], index_name=small.name)
    before = rag.search("river city", index_name=small.name, k=ALL)
    rag.compact(index_name=small.name)
    after = rag.search("river city", index_name=small.name, k=ALL)
    assert [r["passage_id"] for r in after] == [r["passage_id"] for r in before]
    assert [r["score"] for r in after] == pytest.approx([r["score"] for r in before], abs=1e-4)


def test_overwrite_and_rebuild(rag: RAGPretrainedModel, backends: Backends, backend: str) -> None:
    small = backends.small(backend, "rebuild")
    with pytest.raises(IndexExistsError, match="overwrite_index=True"):
        backends.build(backend, "rebuild", ["other text"], ["x"], [None], overwrite_index=False)
    backends.build(backend, "rebuild", ["Completely new text about volcanoes."], ["volcano"], [None])
    assert _docs(rag.search("France", index_name=small.name, k=ALL)) == {"volcano"}


def test_bad_write_input(rag: RAGPretrainedModel, backends: Backends, backend: str) -> None:
    small = backends.small(backend, "badwrites")
    with pytest.raises(ValueError, match="duplicates"):
        rag.add_to_index(["a", "b"], new_document_ids=["dup", "dup"], index_name=small.name)
    with pytest.raises(ValueError, match="one id per document"):
        rag.add_to_index(["a", "b"], new_document_ids=["only-one"], index_name=small.name)
    with pytest.raises(TypeError, match="strings"):
        rag.delete_from_index([3], index_name=small.name)  # type: ignore[list-item]
    with pytest.raises(IndexNotFoundError):
        rag.add_to_index(["a"], index_name="never-built")
    with pytest.raises(ValueError, match="duplicates"):
        backends.build(backend, "badbuild", ["a", "b"], ["same", "same"], [None, None])
    assert _docs(rag.search("river", index_name=small.name, k=ALL)) == set(SMALL)  # nothing was written
