"""Concurrency inside one process: searches during writes, and concurrent lazy loading of an index.

No sleeps and no timing asserts: threads run until the writer has done a fixed number of writes (an
Event tells the searchers to stop), and every result is checked against ground truth afterwards.
"""
from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest

import lateragkit.collection as collection_module
from lateragkit import RAGPretrainedModel

from .conftest import data_dir, minilm_path

N_SEARCHERS = 8
WRITE_ROUNDS = 3  # each round: one add, one upsert, one delete
ALL = 1000  # more than the passages in the index: a search returns every live passage


def _adi() -> tuple[list[str], list[str], list[str]]:
    folder = data_dir("adi")
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    queries = [json.loads(line)["text"] for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    # titles only: short passages keep the many encodes of this test cheap on two cores
    return [d["_id"] for d in docs], [d["title"].strip() for d in docs], queries


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> RAGPretrainedModel:
    return RAGPretrainedModel.from_pretrained(
        minilm_path(), index_root=tmp_path_factory.mktemp("concurrency"), verbose=0, device="cpu"
    )


def _content_ok(row: dict[str, Any], written: dict[str, set[str]]) -> bool:
    """The passage's content is a slice, at its offsets, of a text once written under its document id,
    and its passage id belongs to that document."""
    texts = written.get(row["document_id"], set())
    if not row["passage_id"].startswith(row["document_id"] + "-"):
        return False
    if not row["passage_id"][len(row["document_id"]) + 1 :].isdigit():
        return False
    start, end = row.get("start_char"), row.get("end_char")
    if start is None:
        return any(row["content"] in t for t in texts)
    return any(t[start:end] == row["content"] for t in texts)


@pytest.mark.parametrize("index_type", ["exact", "plaid"])
def test_searches_during_adds_and_deletes(rag, index_type):
    ids, texts, queries = _adi()
    name = f"live-{index_type}"
    live: dict[str, str] = dict(zip(ids[:30], texts[:30], strict=True))
    rag.index(list(live.values()), document_ids=list(live), index_name=name, index_type=index_type)
    written: dict[str, set[str]] = {d: {t} for d, t in live.items()}
    versions: list[dict[str, str]] = [dict(live)]  # every state a reader may legitimately see
    rng = random.Random(0)
    spare = list(zip(ids[30:], texts[30:], strict=True))

    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[tuple[int, list[dict[str, Any]]]] = []  # (k, results) of every search, checked afterwards
    seen_lock = threading.Lock()
    counts = [0] * N_SEARCHERS

    def searcher(i: int) -> None:
        r = random.Random(i)
        try:
            while True:  # at least one search, then until the writer is done
                k = r.choice([1, 5, ALL])
                out = rag.search(r.choice(queries), index_name=name, k=k)
                with seen_lock:
                    seen.append((k, out))
                counts[i] += 1
                if stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def writer() -> None:
        try:
            for round_ in range(WRITE_ROUNDS):
                # add two new documents
                new = [spare.pop(0), spare.pop(0)]
                for d, t in new:
                    written.setdefault(d, set()).add(t)
                nxt = dict(versions[-1])
                nxt.update(new)
                versions.append(nxt)  # recorded before the commit: a reader may see it from then on
                rag.add_to_index([t for _, t in new], new_document_ids=[d for d, _ in new], index_name=name)
                # upsert: an existing document gets another document's text (and a marker)
                target = rng.choice(sorted(versions[-1]))
                text = f"revision {round_}: " + spare[0][1]
                written[target].add(text)
                nxt = dict(versions[-1])
                nxt[target] = text
                versions.append(nxt)
                rag.add_to_index([text], new_document_ids=[target], index_name=name)
                # delete one document
                victim = rng.choice(sorted(versions[-1]))
                nxt = dict(versions[-1])
                del nxt[victim]
                versions.append(nxt)
                rag.delete_from_index([victim], index_name=name)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            stop.set()

    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(N_SEARCHERS)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert errors == [], errors
    assert all(c >= 1 for c in counts)

    states = [dict(sorted(v.items())) for v in versions]
    for k, rows in seen:
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        for row in rows:
            assert _content_ok(row, written), row
        if k == ALL and index_type == "exact":
            # a full listing is one complete version: exactly the documents (and texts) of one state
            got: dict[str, list[str]] = {}
            for row in rows:
                got.setdefault(row["document_id"], []).append(row["content"])
            assert any(
                set(got) == set(s) and all(c in s[d] for d, cs in got.items() for c in cs) for s in states
            ), sorted(got)

    final = versions[-1]
    out = rag.search(queries[:3], index_name=name, k=ALL)
    for rows in out:
        for row in rows:
            assert _content_ok(row, {d: {t} for d, t in final.items()}), row
    if index_type == "exact":
        for rows in out:
            assert {r["document_id"] for r in rows} == set(final)
    # a fresh reader opening the folder sees the same final state
    fresh = RAGPretrainedModel.from_index(Path(rag.index_root) / name, verbose=0)
    assert fresh.search(queries[:3], k=ALL) == out
    # restricting to one document finds exactly its final text
    doc = sorted(final)[0]
    only = rag.search(queries[0], index_name=name, k=ALL, doc_ids=[doc])
    assert only and {r["document_id"] for r in only} == {doc}
    assert all(r["content"] in final[doc] for r in only)


def test_concurrent_first_use_loads_the_index_once(rag, monkeypatch):
    ids, texts, queries = _adi()
    rag.index(texts[:25], document_ids=ids[:25], index_name="lazy", index_type="exact")
    want = rag.search(queries[:4], index_name="lazy", k=10)

    calls = []
    original = collection_module.load_index

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(collection_module, "load_index", counting)
    cold = RAGPretrainedModel(rag.encoder, index_root=rag.index_root, verbose=0)  # nothing loaded yet
    barrier = threading.Barrier(N_SEARCHERS)
    results: list[Any] = [None] * N_SEARCHERS
    errors: list[BaseException] = []

    def first_use(i: int) -> None:
        try:
            barrier.wait()
            results[i] = cold.search(queries[:4], index_name="lazy", k=10)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(N_SEARCHERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [], errors
    assert all(r == want for r in results)
    assert len(calls) == 1, f"the index was loaded {len(calls)} times by concurrent first searches"
