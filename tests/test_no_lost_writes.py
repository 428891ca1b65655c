"""No lost writes: writers of one index serialise across instances, threads and processes, and every
write starts from the newest committed version (a stale instance reloads first). Readers pick up a
version committed elsewhere on their next search.

The process tests start real writer processes (tests/writer_child.py), each with its own instance opened
with ``from_index`` before any of them writes, and check afterwards that every document each one wrote is
present with its text and metadata.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lateragkit import RAGPretrainedModel
from lateragkit.collection import Collection

from .conftest import REPO, minilm_path

ALL = 10_000


@pytest.fixture(scope="module")
def encoder_rag(tmp_path_factory: pytest.TempPathFactory) -> RAGPretrainedModel:
    return RAGPretrainedModel.from_pretrained(
        minilm_path(), index_root=tmp_path_factory.mktemp("nolost"), verbose=0, device="cpu"
    )


def _base(rag: RAGPretrainedModel, name: str, n: int = 6) -> Path:
    texts = [f"Base document {i} on a general subject number {i}." for i in range(n)]
    return Path(rag.index(texts, document_ids=[f"base-{i}" for i in range(n)], index_name=name,
                          index_type="exact"))


def _stored(path: Path) -> dict[str, tuple[str, dict | None]]:
    """document_id -> (content of its first passage, metadata), read from a fresh instance."""
    rag = RAGPretrainedModel.from_index(path, device="cpu", verbose=0)
    rows = rag.search("document", k=ALL)
    return {r["document_id"]: (r["content"], r.get("document_metadata")) for r in rows}


def test_stale_instance_does_not_lose_the_other_instances_add(encoder_rag):
    """The issue's example: A and B on one index; A adds a1, then B (opened before) adds b1."""
    path = _base(encoder_rag, "stale", n=2)
    A = encoder_rag
    B = RAGPretrainedModel(encoder_rag.encoder, index_root=path.parent, verbose=0)
    B._current = path.name
    assert {r["document_id"] for r in B.search("document", k=ALL)} == {"base-0", "base-1"}
    A.add_to_index(["Apples grow on trees."], new_document_ids=["a1"], index_name=path.name)
    B.add_to_index(["Bananas are yellow."], new_document_ids=["b1"], index_name=path.name)
    assert set(_stored(path)) == {"base-0", "base-1", "a1", "b1"}
    # readers in any instance see the newest version on their next search
    assert {r["document_id"] for r in A.search("fruit", k=ALL, index_name=path.name)} == set(_stored(path))


def test_two_instances_interleaved_in_two_threads(encoder_rag):
    path = _base(encoder_rag, "threads")
    instances = [RAGPretrainedModel(encoder_rag.encoder, index_root=path.parent, verbose=0) for _ in range(2)]
    for inst in instances:
        inst._current = path.name
        inst.search("warm", k=1)  # both hold a snapshot of the first version
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(w: int) -> None:
        try:
            barrier.wait()
            for i in range(5):
                instances[w].add_to_index([f"Thread {w} document {i}."], new_document_ids=[f"t{w}-{i}"])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    stored = _stored(path)
    for w in range(2):
        for i in range(5):
            assert stored[f"t{w}-{i}"][0] == f"Thread {w} document {i}."


def _run_children(path: Path, jobs: list[tuple[str, str, int]]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.writer_child", str(path), worker, op, str(n)], cwd=REPO,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for worker, op, n in jobs
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]


@pytest.mark.slow
def test_four_processes_25_adds_each(encoder_rag):
    path = _base(encoder_rag, "procs")
    _run_children(path, [(str(w), "add", 25) for w in range(4)])
    stored = _stored(path)
    for w in range(4):
        for i in range(25):
            content, meta = stored[f"w{w}-{i}"]
            assert content == f"Worker {w} wrote document number {i} about topic {w}x{i}."
            assert meta == {"worker": str(w), "i": i}
    assert len(stored) == 6 + 100
    # every write committed a version; nothing but the live one is left behind
    collection = Collection(path)
    assert [p.name for p in path.iterdir() if p.name.startswith("v")] == [collection.version()]
    assert not [p for p in path.iterdir() if p.name.startswith(".staging")]


def test_add_and_delete_racing_from_two_processes(encoder_rag):
    path = _base(encoder_rag, "race")
    _run_children(path, [("a", "add", 6), ("d", "delete", 4)])
    stored = _stored(path)
    assert {f"a-{i}".replace("a-", "wa-") for i in range(6)} <= set(stored)
    assert not {f"base-{i}" for i in range(4)} & set(stored)
    assert {"base-4", "base-5"} <= set(stored)
    assert len(stored) == 2 + 6


@pytest.mark.parametrize("index_type", ["exact", "plaid"])
def test_reload_after_another_instances_add_reuses_unchanged_segments(encoder_rag, index_type, monkeypatch):
    """A reader that sees a newer version (another instance added 1 document) reopens it reusing the segments
    (and PLAID codec) both versions share: the same loaded objects, no file read again, same results."""
    topics = ["rivers", "mountains", "volcanoes", "deserts", "forests", "glaciers", "oceans", "islands"]
    texts = [f"Passage {i} describes {topics[i % 8]} and their climate, wildlife and history in region {i}."
             for i in range(40)]
    path = Path(encoder_rag.index(texts, document_ids=[f"d{i}" for i in range(40)], index_name=f"reuse-{index_type}",
                                  index_type=index_type))
    reader = RAGPretrainedModel(encoder_rag.encoder, index_root=path.parent, verbose=0)
    reader._current = path.name
    reader.search("glaciers", k=3)
    before = reader._snapshot(path.name).index
    assert before.kind == index_type and before.num_segments == 1
    loaded: list[str] = []
    segment_init = type(before.segments[0]).__init__

    def counting_init(self, folder, *args, **kwargs):  # records every segment read from disk
        loaded.append(Path(folder).name)
        segment_init(self, folder, *args, **kwargs)

    monkeypatch.setattr(type(before.segments[0]), "__init__", counting_init)
    encoder_rag.add_to_index(["Volcanoes erupt lava and ash over the islands."], new_document_ids=["new"],
                             index_name=path.name)
    written = encoder_rag._snapshot(path.name).index
    assert loaded == ["seg-000002"]  # the writer wrote the new segment and reopened nothing after its commit
    loaded.clear()
    rows = reader.search("volcanoes erupting lava", k=5)
    after = reader._snapshot(path.name).index
    assert after is not before and after.num_segments == 2
    assert after.segments[0] is before.segments[0]  # the unchanged segment: the very same loaded object
    assert written.segments[1] is not after.segments[1]  # (another instance: nothing shared across them)
    assert loaded == [after.segments[1].name]  # only the new segment was read
    if index_type == "plaid":
        assert after.shared is before.shared  # the codec too
    fresh = RAGPretrainedModel.from_index(path, device="cpu", verbose=0).search("volcanoes erupting lava", k=5)
    assert [(r["document_id"], r["content"]) for r in rows] == [(r["document_id"], r["content"]) for r in fresh]
    assert [r["score"] for r in rows] == pytest.approx([r["score"] for r in fresh], abs=1e-5)
    assert rows[0]["document_id"] == "new"
