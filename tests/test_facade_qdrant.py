"""The facade over a Qdrant-backed index: what only this backend has — where things are stored, rebuilds
and failed rebuilds, one process per embedded engine, its arguments and search parameters, concurrent
writers, and the LangChain / LlamaIndex adapters on top. (Behaviour shared with the other backends is in
test_backends_conformance.py.)"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from lateragkit import LateragkitError, RAGPretrainedModel
from lateragkit.collection import Collection

from .conftest import minilm_path

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("qdrant_edge") is None or importlib.util.find_spec("qdrant_client") is None,
    reason='the Qdrant extra is not installed: pip install "lateragkit[qdrant]"',
)

DOCS = {
    "paris": "Paris is the capital of France and its largest city.",
    "nile": "The Nile flows north through Egypt into the Mediterranean Sea.",
    "colbert": "ColBERT compares every query token with every document token.",
    "quantum": "Quantum computers use qubits instead of classical bits.",
    "amazon": "The Amazon river carries more water than any other river.",
}
QUESTIONS = {"Which river runs through Egypt?": "nile", "capital city of France": "paris",
             "qubits and classical bits": "quantum", "token-level late interaction": "colbert"}
ALL = 1000


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> RAGPretrainedModel:
    return RAGPretrainedModel.from_pretrained(minilm_path(), index_root=tmp_path_factory.mktemp("facade-qdrant"),
                                              verbose=0, device="cpu")


def _index(rag: RAGPretrainedModel, name: str, **kwargs: Any) -> str:
    metas = [{"kind": "river" if "river" in t or "Nile" in t else "other"} for t in DOCS.values()]
    kwargs.setdefault("index_type", "qdrant")
    return rag.index(list(DOCS.values()), document_ids=list(DOCS), document_metadatas=metas, index_name=name,
                     **kwargs)


def _top1(rag: RAGPretrainedModel, name: str, **params: Any) -> list[str]:
    return [rows[0]["document_id"] for rows in rag.search(list(QUESTIONS), index_name=name, k=1, **params)]


def _builds(path: str) -> list[str]:
    folder = Path(path) / "qdrant"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_embedded_layout_and_info(rag: RAGPretrainedModel) -> None:
    path = Path(_index(rag, "layout"))
    collection = Collection(path)
    live = collection.live()
    assert live.meta.index_type == "qdrant" and live.meta.model.dim == rag.encoder.dim
    assert sorted(p.name for p in live.folder.iterdir()) == ["lateragkit.json", "qdrant.json"]
    record = json.loads((live.folder / "qdrant.json").read_text())["location"]
    assert record["kind"] == "embedded" and not Path(record["path"]).is_absolute()  # the folder can move
    assert [f"qdrant/{b}" for b in _builds(str(path))] == [record["path"]]
    info = collection.info()
    assert info["index_type"] == "qdrant" and info["qdrant"] == record and info["model"] == rag.model_name
    with pytest.raises(LateragkitError, match="from_index"):
        collection.open()
    assert _top1(rag, "layout") == list(QUESTIONS.values())


def test_client_location_is_recorded_without_the_client(rag: RAGPretrainedModel, tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(tmp_path / "local"))
    try:
        path = _index(rag, "via-client", index_type="auto", qdrant=client)  # qdrant= alone picks Qdrant
        record = json.loads((Collection(path).live().folder / "qdrant.json").read_text())["location"]
        assert record == {"kind": "remote", "collection_name": "via-client"}
        assert client.collection_exists("via-client")
        assert not (Path(path) / "qdrant").exists()
        assert _top1(rag, "via-client") == list(QUESTIONS.values())
        with pytest.raises(ValueError, match="qdrant=<your QdrantClient>"):
            RAGPretrainedModel.from_index(path, verbose=0)
        again = RAGPretrainedModel.from_index(path, verbose=0, qdrant=client)
        assert _top1(again, "via-client") == list(QUESTIONS.values())
    finally:
        client.close()


def test_locations_given_as_qdrant_location(rag: RAGPretrainedModel, tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    from lateragkit.qdrant import QdrantLocation

    folder = tmp_path / "my-engine"
    path = _index(rag, "own-folder", qdrant=QdrantLocation(path=folder))
    _index(rag, "own-folder", qdrant=QdrantLocation(path=folder))  # a rebuild replaces that folder's contents
    record = json.loads((Collection(path).live().folder / "qdrant.json").read_text())["location"]
    assert record == {"kind": "embedded", "path": str(folder.resolve())}
    assert not (Path(path) / "qdrant").exists() and (folder / "shard").is_dir()
    assert _top1(rag, "own-folder") == list(QUESTIONS.values())
    client = QdrantClient(path=str(tmp_path / "local"))
    try:
        located = QdrantLocation(client=client, collection_name="custom", shard_number=2)
        path = _index(rag, "custom-collection", qdrant=located)
        record = json.loads((Collection(path).live().folder / "qdrant.json").read_text())["location"]
        assert record == {"kind": "remote", "collection_name": "custom", "shard_number": 2}
        assert client.collection_exists("custom") and not client.collection_exists("custom-collection")
        assert _top1(rag, "custom-collection") == list(QUESTIONS.values())
    finally:
        client.close()


def test_an_unreachable_server_is_a_clear_error_and_commits_nothing(rag: RAGPretrainedModel,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from lateragkit.qdrant import QdrantUnavailableError

    monkeypatch.setenv("QDRANT_API_KEY", "secret-key-123")
    with pytest.raises(QdrantUnavailableError, match="QDRANT_API_KEY") as caught:
        _index(rag, "unreachable", qdrant="http://127.0.0.1:9")  # nothing listens on the discard port
    assert "secret-key-123" not in str(caught.value)
    assert not Collection(rag.index_root / "unreachable").exists()


def test_rebuild_replaces_the_build_and_switching_backend_removes_it(rag: RAGPretrainedModel) -> None:
    path = _index(rag, "rebuild")
    first = _builds(path)
    _index(rag, "rebuild")
    second = _builds(path)
    assert len(first) == len(second) == 1 and first != second  # a new folder per build, the old one removed
    rag.index(["Only one document now."], document_ids=["one"], index_name="rebuild", index_type="exact")
    assert _builds(path) == [] and not (Path(path) / "qdrant").exists()
    assert [r["document_id"] for r in rag.search("document", index_name="rebuild", k=ALL)] == ["one"]


def test_failed_rebuild_leaves_the_index_intact(rag: RAGPretrainedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _index(rag, "failing")
    before = _builds(path)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("encoder died")

    with monkeypatch.context() as patch:
        patch.setattr(rag.encoder, "encode_documents", broken)
        with pytest.raises(RuntimeError, match="encoder died"):
            _index(rag, "failing")
    assert _builds(path) == before  # the half-built folder is gone, the live one kept
    assert _top1(rag, "failing") == list(QUESTIONS.values())


def test_a_second_process_gets_a_clear_error(rag: RAGPretrainedModel) -> None:
    path = _index(rag, "one-process")
    child = (
        "import sys\n"
        "from lateragkit.collection import Collection\n"
        "from lateragkit.qdrant import QdrantLockedError\n"
        "from lateragkit.qdrant_collection import open_snapshot\n"
        "try:\n"
        "    open_snapshot(Collection(sys.argv[1]))\n"
        "except QdrantLockedError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", child, path], capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert "Qdrant server" in done.stdout
    assert _top1(rag, "one-process") == list(QUESTIONS.values())  # this process keeps working


def test_arguments_are_checked(rag: RAGPretrainedModel) -> None:
    from lateragkit.qdrant import QdrantOptions

    with pytest.raises(ValueError, match="nbits"):
        _index(rag, "bad", nbits=2)
    with pytest.raises(ValueError, match="index_type='qdrant'"):
        _index(rag, "bad", index_type="plaid", qdrant_options=QdrantOptions())
    with pytest.raises(ValueError, match="index_type='qdrant'"):
        _index(rag, "bad", index_type="exact", qdrant="http://localhost:6333")
    with pytest.raises(TypeError, match="server URL"):
        _index(rag, "bad", qdrant=6333)
    with pytest.raises(TypeError, match="QdrantOptions"):
        _index(rag, "bad", qdrant_options={"quantization": "int8"})
    with pytest.raises(TypeError, match="server URL"):
        RAGPretrainedModel.from_index("anything", qdrant=["not", "a", "location"])
    assert not (rag.index_root / "bad").exists()
    local = rag.index(["text"], document_ids=["t"], index_name="local-one", index_type="exact")
    with pytest.raises(ValueError, match="Qdrant-backed"):
        RAGPretrainedModel.from_index(local, verbose=0, qdrant="http://localhost:6333")


def test_search_parameters_and_quantization(rag: RAGPretrainedModel) -> None:
    from lateragkit.qdrant import QdrantOptions

    _index(rag, "params")
    default = rag.search("river", index_name="params", k=ALL)
    exact = rag.search("river", index_name="params", k=ALL, exact=True)
    assert [r["passage_id"] for r in exact] == [r["passage_id"] for r in default]
    assert len(rag.search("river", index_name="params", k=3, candidates=1)) == 3  # the first stage gets >= k
    assert [r["document_id"] for r in rag.search("river", index_name="params", k=5, force_fast=True)] == [
        r["document_id"] for r in default]  # RAGatouille's PLAID switch: accepted, no effect here
    with pytest.raises(TypeError, match="ncells"):
        rag.search("river", index_name="params", k=3, ncells=4)
    _index(rag, "int8", qdrant_options=QdrantOptions(quantization="int8"))
    assert _top1(rag, "int8") == list(QUESTIONS.values())


def test_concurrent_writers_lose_nothing(rag: RAGPretrainedModel) -> None:
    path = _index(rag, "concurrent")
    other = RAGPretrainedModel.from_index(path, verbose=0, device="cpu")
    errors: list[BaseException] = []

    def add(model: RAGPretrainedModel, prefix: str) -> None:
        try:
            for i in range(3):
                model.add_to_index([f"{prefix} note number {i}"], new_document_ids=[f"{prefix}{i}"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(m, p)) for m, p in ((rag, "a"), (other, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    found = {r["document_id"] for r in rag.search("note number", index_name="concurrent", k=ALL)}
    assert found == set(DOCS) | {f"{p}{i}" for p in "ab" for i in range(3)}


def test_langchain_and_llama_index_adapters(rag: RAGPretrainedModel) -> None:
    path = _index(rag, "adapters")
    model = RAGPretrainedModel.from_index(path, verbose=0, device="cpu")
    if importlib.util.find_spec("langchain_core") is not None:
        docs = model.as_langchain_retriever(k=2, filter={"kind": "river"}).invoke("Which river runs through Egypt?")
        assert [d.metadata["document_id"] for d in docs] == ["nile", "amazon"]  # the two rivers, best first
        assert all(d.metadata["kind"] == "river" and d.id == f"{d.metadata['document_id']}-0" for d in docs)
        assert docs[0].metadata["start_index"] == 0 and docs[0].page_content == DOCS["nile"]
    if importlib.util.find_spec("llama_index") is not None:
        from llama_index.core.schema import QueryBundle

        nodes = model.as_llama_index_retriever(similarity_top_k=2).retrieve(QueryBundle("capital city of France"))
        assert len(nodes) == 2 and "Paris" in nodes[0].node.get_content()
