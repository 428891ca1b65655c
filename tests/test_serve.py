"""`lateragkit serve`: a real uvicorn server on 127.0.0.1 (a free port, a background thread that stops at the
end of the module), called over HTTP with httpx: every route, the request limits, the API key, and a bounded
load test (8 clients × 50 searches while a ninth adds documents).

The indexes hold ADI titles (real text, one passage each) encoded by a tiny random Stanford-format
checkpoint (tests/fixtures_models.py): the tests check the service's contract (routing, status codes,
result shapes, stored text), not ranking quality, so no assertion depends on which passage ranks first.
"""
from __future__ import annotations

import json
import os
import random
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'lateragkit[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'lateragkit[serve]'")
httpx = pytest.importorskip("httpx", reason="httpx is not installed: pip install 'lateragkit[serve]'")

from lateragkit import RAGPretrainedModel  # noqa: E402
from lateragkit.serve import BackgroundServer, Limits, create_app  # noqa: E402

from .conftest import data_dir  # noqa: E402
from .fixtures_models import write_stanford_bert  # noqa: E402

KEY = "test-key-7f3a"
LIMITS = Limits(max_body_bytes=64 * 1024, max_query_chars=300, max_queries=4, max_k=50, max_documents=8,
                max_document_chars=2000, max_rerank_documents=6, max_ids=40, max_id_chars=64)
N_CLIENTS, SEARCHES_PER_CLIENT, WRITES = 8, 50, 6


def _adi() -> tuple[dict[str, str], list[str]]:
    folder = data_dir("adi")
    lines = (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    titles = {d["_id"]: d["title"].strip() for d in map(json.loads, lines)}
    # the first words of each query: the tiny model's queries are 32 tokens
    queries = [" ".join(json.loads(line)["text"].split()[:8])
               for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    return titles, queries


@pytest.fixture(scope="module")
def corpus() -> tuple[dict[str, str], list[str]]:
    return _adi()


@pytest.fixture(scope="module")
def index_root(tmp_path_factory: pytest.TempPathFactory, corpus) -> Path:
    """Three indexes built with one tiny model: `adi` (read only), `docs` (changed by the document tests)
    and `load` (changed by the load test)."""
    titles, _ = corpus
    work = tmp_path_factory.mktemp("serve")
    ckpt = write_stanford_bert(work / "ckpt", max_position_embeddings=512)
    rag = RAGPretrainedModel.from_pretrained(ckpt, index_root=work / "indexes", verbose=0, device="cpu")
    ids = list(titles)
    metas = [{"half": "first" if int(i) <= 41 else "second", "n": int(i)} for i in ids]
    for name, n in (("adi", len(ids)), ("docs", 20), ("load", 30)):
        rag.index([titles[i] for i in ids[:n]], document_ids=ids[:n], document_metadatas=metas[:n],
                  index_name=name, index_type="exact")
    return work / "indexes"


@pytest.fixture(scope="module")
def server(index_root: Path) -> Iterator[BackgroundServer]:
    app = create_app([index_root / "adi", index_root / "docs", index_root / "load"], api_key=KEY, limits=LIMITS,
                     device="cpu")
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[Any]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as c:
        yield c


def _ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def _detail(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    return detail


# ------------------------------------------------------------------------------------------------ routes
def test_health_and_openapi(server: BackgroundServer) -> None:
    assert server.host == "127.0.0.1"
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        health = _ok(anonymous.get("/health"))  # open even though the service has a key
        assert health["status"] == "ok" and health["indexes"] == ["adi", "docs", "load"]
        docs = anonymous.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        spec = _ok(anonymous.get("/openapi.json"))
    assert {"/search", "/rerank", "/documents", "/indexes", "/health"} <= set(spec["paths"])
    assert set(spec["paths"]["/documents"]) == {"post", "delete"}
    schemas = spec["components"]["schemas"]
    assert schemas["SearchRequest"]["properties"]["k"]["maximum"] == LIMITS.max_k  # limits are documented


def test_search_one_query(client: Any, corpus) -> None:
    titles, queries = corpus
    body = _ok(client.post("/search", json={"query": queries[0], "k": 5, "index": "adi"}))
    assert body["index"] == "adi"
    hits = body["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for h in hits:
        assert h["content"] == titles[h["document_id"]]
        assert h["passage_id"] == f"{h['document_id']}-0"
        assert h["document_metadata"] == {"half": "first" if int(h["document_id"]) <= 41 else "second",
                                          "n": int(h["document_id"])}


def test_search_several_queries_filter_and_doc_ids(client: Any, corpus) -> None:
    titles, queries = corpus
    body = _ok(client.post("/search", json={"queries": queries[:3], "k": 4, "index": "adi",
                                            "filter": {"half": "second"}}))
    assert len(body["results"]) == 3
    for hits in body["results"]:
        assert len(hits) == 4
        assert all(int(h["document_id"]) > 41 and h["content"] == titles[h["document_id"]] for h in hits)
    body = _ok(client.post("/search", json={"query": queries[1], "k": 10, "index": "adi", "doc_ids": ["3", "9"]}))
    assert sorted(h["document_id"] for h in body["results"]) == ["3", "9"]


@pytest.mark.parametrize("mode", ["late", "bm25", "hybrid"])
def test_search_modes(client: Any, corpus, mode: str) -> None:
    titles, _ = corpus
    hits = _ok(client.post("/search", json={"query": titles["17"], "k": 3, "index": "adi", "mode": mode}))["results"]
    assert 1 <= len(hits) <= 3 and [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    assert all(h["content"] == titles[h["document_id"]] for h in hits)
    if mode == "bm25":  # keywords: a title's own words find it first
        assert hits[0]["document_id"] == "17"


def test_hybrid_fusion_options(client: Any, corpus) -> None:
    titles, _ = corpus
    body = {"query": titles["17"], "k": 5, "index": "adi", "mode": "hybrid"}
    rrf = _ok(client.post("/search", json={**body, "fusion": "rrf"}))["results"]
    late_only = _ok(client.post("/search", json={**body, "fusion": "normalized", "alpha": 1.0}))["results"]
    late = _ok(client.post("/search", json={**body, "mode": "late"}))["results"]
    assert [h["passage_id"] for h in late_only] == [h["passage_id"] for h in late]  # alpha=1: late interaction
    assert all(h["content"] == titles[h["document_id"]] for h in rrf)
    assert "alpha" in _detail(client.post("/search", json={**body, "alpha": 1.5}), 422)
    assert "fusion" in _detail(client.post("/search", json={**body, "fusion": "max"}), 422)
    assert "hybrid" in _detail(client.post("/search", json={**body, "mode": "late", "alpha": 0.5}), 400)


def test_rerank(client: Any, corpus) -> None:
    titles, queries = corpus
    documents = [titles[i] for i in ("5", "12", "33", "46")]
    body = _ok(client.post("/rerank", json={"query": queries[2], "documents": documents, "k": 3, "index": "adi"}))
    hits = body["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert len({h["result_index"] for h in hits}) == 3
    assert all(documents[h["result_index"]] == h["content"] for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_add_upsert_and_delete_documents(client: Any) -> None:
    def search_ids(doc_ids: list[str]) -> dict[str, str]:
        hits = _ok(client.post("/search", json={"query": "information retrieval", "k": 50, "index": "docs",
                                                "doc_ids": doc_ids}))["results"]
        return {h["document_id"]: h["content"] for h in hits}

    before = {i["name"]: i for i in _ok(client.get("/indexes"))["indexes"]}["docs"]["documents"]
    added = _ok(client.post("/documents", json={"index": "docs", "documents": [
        {"id": "new-1", "text": "Punched cards in the automated library catalogue", "metadata": {"tag": "new"}},
        {"text": "A thesaurus for indexing technical reports"},
    ]}))
    assert added["index"] == "docs" and added["document_ids"][0] == "new-1"
    generated = added["document_ids"][1]
    assert len(generated) == 36  # a uuid4 when no id is given
    assert search_ids(["new-1", generated]) == {"new-1": "Punched cards in the automated library catalogue",
                                                generated: "A thesaurus for indexing technical reports"}
    hits = _ok(client.post("/search", json={"query": "library", "k": 50, "index": "docs", "filter": {"tag": "new"}}))
    assert [h["document_id"] for h in hits["results"]] == ["new-1"]
    # upsert: the same id replaces the document
    _ok(client.post("/documents", json={"index": "docs", "documents": [
        {"id": "new-1", "text": "Microfilm storage of engineering drawings"}]}))
    assert search_ids(["new-1"]) == {"new-1": "Microfilm storage of engineering drawings"}
    info = {i["name"]: i for i in _ok(client.get("/indexes"))["indexes"]}["docs"]
    assert info["documents"] == before + 2
    deleted = _ok(client.request("DELETE", "/documents", json={"index": "docs",
                                                               "document_ids": ["new-1", generated, "absent"]}))
    assert deleted["document_ids"] == ["new-1", generated, "absent"]
    assert search_ids(["new-1", generated]) == {}
    assert {i["name"]: i for i in _ok(client.get("/indexes"))["indexes"]}["docs"]["documents"] == before


def test_indexes(client: Any, corpus) -> None:
    titles, _ = corpus
    infos = _ok(client.get("/indexes"))["indexes"]
    assert [i["name"] for i in infos] == ["adi", "docs", "load"]
    adi = infos[0]
    assert adi["documents"] == len(titles) and adi["passages"] == len(titles)
    assert adi["index_type"] == "exact" and "path" not in adi  # server paths are not the client's business


def test_index_choice(client: Any) -> None:
    assert "pass \"index\"" in _detail(client.post("/search", json={"query": "x"}), 400)
    message = _detail(client.post("/search", json={"query": "x", "index": "nope"}), 404)
    assert "nope" in message and "adi, docs, load" in message


def test_single_index_without_key(index_root: Path, corpus) -> None:
    """One index served without an API key: requests need neither `index` nor a key."""
    titles, _ = corpus
    app = create_app([index_root / "adi"], limits=LIMITS, device="cpu")
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as anonymous:
        hits = _ok(anonymous.post("/search", json={"query": titles["4"], "k": 2}))["results"]
        assert len(hits) == 2 and all(h["content"] == titles[h["document_id"]] for h in hits)
        assert [i["name"] for i in _ok(anonymous.get("/indexes"))["indexes"]] == ["adi"]
    with pytest.raises(httpx.TransportError):  # stopped: nothing listens on its port any more
        httpx.get(srv.url + "/health", timeout=5)


# ------------------------------------------------------------------------------------------------ auth
PROTECTED = [
    ("POST", "/search", {"query": "library", "index": "adi"}),
    ("POST", "/rerank", {"query": "library", "documents": ["a library", "a book"], "index": "adi"}),
    ("POST", "/documents", {"index": "docs", "documents": [{"id": "auth-doc", "text": "an access check"}]}),
    ("DELETE", "/documents", {"index": "docs", "document_ids": ["auth-doc"]}),
    ("GET", "/indexes", None),
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_api_key_on_every_route(server: BackgroundServer, method: str, path: str, body: Any) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        missing = c.request(method, path, json=body)
        assert "missing API key" in _detail(missing, 401) and missing.headers["www-authenticate"] == "Bearer"
        for wrong in ({"X-API-Key": KEY + "x"}, {"X-API-Key": KEY[:-1]}, {"Authorization": "Bearer nope"}):
            assert "wrong API key" in _detail(c.request(method, path, json=body, headers=wrong), 401)
        _ok(c.request(method, path, json=body, headers={"X-API-Key": KEY}))
        _ok(c.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"}))


# ------------------------------------------------------------------------------------------------ bad requests
TOO_MANY = LIMITS.max_queries + 1
BAD_REQUESTS = [
    # (name, path, body, status, words the message must contain)
    ("query too long", "/search", {"query": "q" * (LIMITS.max_query_chars + 1), "index": "adi"}, 422, ["query", "300"]),
    ("too many queries", "/search", {"queries": ["a"] * TOO_MANY, "index": "adi"}, 422, ["queries", "4"]),
    ("k too large", "/search", {"query": "a", "k": LIMITS.max_k + 1, "index": "adi"}, 422, ["k", "50"]),
    ("k zero", "/search", {"query": "a", "k": 0, "index": "adi"}, 422, ["k", "greater than or equal to 1"]),
    ("k as a string", "/search", {"query": "a", "k": "5", "index": "adi"}, 422, ["k", "integer"]),
    ("query and queries", "/search", {"query": "a", "queries": ["b"], "index": "adi"}, 422, ["exactly one"]),
    ("no query", "/search", {"index": "adi"}, 422, ["exactly one"]),
    ("empty query", "/search", {"query": "", "index": "adi"}, 422, ["query", "at least 1"]),
    ("unknown mode", "/search", {"query": "a", "mode": "dense", "index": "adi"}, 422, ["mode", "late"]),
    ("unknown field", "/search", {"query": "a", "top_k": 3, "index": "adi"}, 422, ["top_k", "not permitted"]),
    ("too many doc_ids", "/search", {"query": "a", "doc_ids": ["1"] * (LIMITS.max_ids + 1), "index": "adi"}, 422,
     ["doc_ids", "40"]),
    ("filter not an object", "/search", {"query": "a", "filter": ["x"], "index": "adi"}, 422, ["filter"]),
    ("whitespace query", "/search", {"query": "   ", "index": "adi"}, 400, ["query", "empty"]),
    ("too many rerank documents", "/rerank", {"query": "a", "documents": ["d"] * (LIMITS.max_rerank_documents + 1)},
     422, ["documents", "6"]),
    ("no rerank documents", "/rerank", {"query": "a", "documents": []}, 422, ["documents"]),
    ("too many documents", "/documents",
     {"index": "docs", "documents": [{"text": "t"}] * (LIMITS.max_documents + 1)}, 422, ["documents", "8"]),
    ("document too long", "/documents",
     {"index": "docs", "documents": [{"text": "t" * (LIMITS.max_document_chars + 1)}]}, 422, ["text", "2000"]),
    ("id too long", "/documents", {"index": "docs", "documents": [{"id": "i" * 65, "text": "t"}]}, 422, ["id", "64"]),
    ("repeated ids", "/documents", {"index": "docs", "documents": [{"id": "a", "text": "t"}, {"id": "a", "text": "u"}]},
     422, ["repeat", "'a'"]),
    ("metadata not an object", "/documents", {"index": "docs", "documents": [{"text": "t", "metadata": 3}]}, 422,
     ["metadata"]),
]


@pytest.mark.parametrize(("path", "body", "status", "words"), [b[1:] for b in BAD_REQUESTS],
                         ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request(client: Any, path: str, body: Any, status: int, words: list[str]) -> None:
    message = _detail(client.post(path, json=body), status)
    for word in words:
        assert word in message, message


def test_delete_limits(client: Any) -> None:
    assert "document_ids" in _detail(client.request("DELETE", "/documents", json={"index": "docs",
                                                                                  "document_ids": []}), 422)
    too_many = {"index": "docs", "document_ids": [str(i) for i in range(LIMITS.max_ids + 1)]}
    assert "40" in _detail(client.request("DELETE", "/documents", json=too_many), 422)


def test_invalid_json_and_body_size(client: Any) -> None:
    assert "not valid JSON" in _detail(client.post("/search", content=b'{"query": "a",',
                                                   headers={"content-type": "application/json"}), 400)
    big = json.dumps({"index": "docs", "documents": [{"text": "x" * 1900}] * 40}).encode()
    assert len(big) > LIMITS.max_body_bytes
    message = _detail(client.post("/documents", content=big, headers={"content-type": "application/json"}), 413)
    assert str(LIMITS.max_body_bytes) in message

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while the body streams in
        for _ in range(10):
            yield b" " * 8192

    assert "body" in _detail(client.post("/search", content=chunks(), headers={"content-type": "application/json"}),
                             413)
    _ok(client.post("/search", json={"query": "still serving", "index": "adi"}))


# ------------------------------------------------------------------------------------------------ load
def test_concurrent_searches_while_adding(server: BackgroundServer, corpus) -> None:
    """8 clients × 50 searches while one client adds documents: every request succeeds, every hit's content is
    the text stored under its passage id, and no added document is lost."""
    titles, queries = corpus
    ids = list(titles)
    stored = {f"{d}-0": titles[d] for d in ids[:30]}  # passage id -> text, as indexed in `load`
    new_docs = [[(f"w{w}-{i}", titles[d]) for i, d in enumerate(ids[30 + 5 * w: 35 + 5 * w])] for w in range(WRITES)]
    stored.update({f"{doc_id}-0": text for batch in new_docs for doc_id, text in batch})
    errors: list[str] = []
    hits_seen = [0] * N_CLIENTS
    start = threading.Barrier(N_CLIENTS + 1)

    def searcher(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=120) as c:
            start.wait()
            for _ in range(SEARCHES_PER_CLIENT):
                body: dict[str, Any] = {"index": "load", "k": rng.choice([1, 5, 50])}
                if rng.random() < 0.25:
                    body["queries"] = rng.sample(queries, 2)
                else:
                    body["query"] = rng.choice(queries)
                r = c.post("/search", json=body)
                if r.status_code != 200:
                    errors.append(f"search {r.status_code}: {r.text}")
                    continue
                results = r.json()["results"]
                for hits in (results if "queries" in body else [results]):
                    for h in hits:
                        hits_seen[n] += 1
                        if stored.get(h["passage_id"]) != h["content"]:
                            errors.append(f"wrong text for {h['passage_id']}: {h['content']!r}")

    def writer() -> None:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=120) as c:
            start.wait()
            for batch in new_docs:
                r = c.post("/documents", json={"index": "load", "documents": [{"id": d, "text": t} for d, t in batch]})
                if r.status_code != 200:
                    errors.append(f"add {r.status_code}: {r.text}")

    threads = [threading.Thread(target=searcher, args=(n,)) for n in range(N_CLIENTS)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "the load test did not finish within 5 minutes"
    assert errors == []
    assert all(n > 0 for n in hits_seen)
    # no lost writes: every added document is there, with its text
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as c:
        info = {i["name"]: i for i in _ok(c.get("/indexes"))["indexes"]}["load"]
        assert info["documents"] == 30 + 5 * WRITES
        added = [d for batch in new_docs for d, _ in batch]
        hits = _ok(c.post("/search", json={"index": "load", "query": "information", "k": 50,
                                           "doc_ids": added}))["results"]
        assert {h["passage_id"]: h["content"] for h in hits} == {f"{d}-0": stored[f"{d}-0"] for d in added}


# ------------------------------------------------------------------------------------------------ the command
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_command(index_root: Path, corpus, tmp_path: Path) -> None:
    """`python -m lateragkit serve NAME` in its own process, key from the environment; stopped with SIGTERM."""
    titles, _ = corpus
    port = _free_port()
    env = {**os.environ, "LATERAGKIT_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lateragkit", "serve", "adi", "--index-root", str(index_root), "--port", str(port),
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 180)  # bounded: the model loads before this line
        first_line = proc.stdout.readline() if ready else "(nothing within 180 s)"
        assert f"http://127.0.0.1:{port}" in first_line and "API key required" in first_line, first_line
        transport = httpx.HTTPTransport(retries=6)  # retries connecting (with backoff) while uvicorn binds
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", transport=transport, timeout=60) as c:
            assert _ok(c.get("/health"))["indexes"] == ["adi"]
            assert c.post("/search", json={"query": "x"}).status_code == 401
            hits = _ok(c.post("/search", json={"query": titles["8"], "k": 1}, headers={"X-API-Key": KEY}))["results"]
            assert hits[0]["content"] == titles[hits[0]["document_id"]]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode in (0, -15), proc.stderr.read() if proc.stderr else ""


def test_serve_command_rejects_unknown_index_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from lateragkit import cli

    assert cli.main(["serve", "nothing-here", "--index-root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no index 'nothing-here'" in err and "lateragkit index" in err


def test_bad_configuration_fails_before_serving(index_root: Path, tmp_path: Path) -> None:
    from lateragkit.exceptions import IndexNotFoundError

    with pytest.raises(ValueError, match="non-empty"):
        create_app([index_root / "adi"], api_key="")
    with pytest.raises(ValueError, match="max_k must be at least 1"):
        Limits(max_k=0)
    with pytest.raises(IndexNotFoundError):
        create_app([tmp_path / "absent"])
    (tmp_path / "adi").mkdir()
    with pytest.raises(ValueError, match="two served indexes are named 'adi'"):
        create_app([index_root / "adi", tmp_path / "adi"])
