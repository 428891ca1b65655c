"""Fixtures for the framework-adapter tests: one real MiniLM model and one ADI index per session."""
from __future__ import annotations

import inspect
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from ..conftest import data_dir, minilm_path


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: Any):  # type: ignore[no-untyped-def]
    # langchain-tests' standard suite has bare `async def` tests that need pytest-asyncio's auto mode.
    # Mark the coroutine tests of this folder (only) so they also run in strict mode. trylast makes this
    # the innermost wrapper: the marker is in place before pytest-asyncio converts the item.
    outcome = yield
    result = outcome.get_result()
    items = result if isinstance(result, list) else [result]
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(getattr(item, "obj", None)):
            if item.get_closest_marker("asyncio") is None:
                item.add_marker(pytest.mark.asyncio)


class AdiCollection:
    """The ADI collection (82 docs) as indexed by the fixtures: text, ids, metadata, queries."""

    def __init__(self, folder: Path) -> None:
        docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
        self.ids = [d["_id"] for d in docs]
        self.texts = [d["text"] for d in docs]
        self.titles = [d["title"] for d in docs]
        self.metadatas = [{"title": d["title"], "n": int(d["_id"])} for d in docs]
        self.by_id = dict(zip(self.ids, self.texts, strict=True))
        self.queries = {}
        for line in (folder / "queries.jsonl").read_text().splitlines():
            q = json.loads(line)
            self.queries[q["_id"]] = q["text"]


@pytest.fixture(scope="session")
def adi() -> AdiCollection:
    return AdiCollection(data_dir("adi"))


@pytest.fixture(scope="session")
def adi_rag(tmp_path_factory: pytest.TempPathFactory, adi: AdiCollection) -> Any:
    """A real RAGPretrainedModel (MiniLM) with the ADI texts indexed as "adi" (title in metadata).

    ``max_document_length=64`` makes the longer ADI abstracts split into several passages, so
    passage ids, document ids and character offsets all differ between passages.
    """
    from lateragkit import RAGPretrainedModel

    rag = RAGPretrainedModel.from_pretrained(
        minilm_path(), index_root=tmp_path_factory.mktemp("integration-indexes"), verbose=0
    )
    rag.index(
        adi.texts,
        document_ids=adi.ids,
        document_metadatas=adi.metadatas,
        index_name="adi",
        max_document_length=64,
    )
    return rag


class CountingModel:
    """Wraps a real model, counts calls, and can hold ``search``/``rerank`` until an event is set.

    ``gate``: when set to a ``threading.Event``, each call waits for it (at most ``gate_timeout`` s)
    and raises if it never comes — proof that the caller did not block the thread that sets it.
    """

    def __init__(self, model: Any) -> None:
        self._model = model
        self.calls: list[str] = []
        self.gate: threading.Event | None = None
        self.gate_timeout = 30.0
        self.encoder = model.encoder
        self.model_name = model.model_name

    def _wait(self) -> None:
        if self.gate is not None and not self.gate.wait(self.gate_timeout):
            raise RuntimeError("the event loop never ran while the model worked: the call blocked it")

    def search(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("search")
        self._wait()
        return self._model.search(*args, **kwargs)

    def rerank(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("rerank")
        self._wait()
        return self._model.rerank(*args, **kwargs)


@pytest.fixture
def counting(adi_rag: Any) -> CountingModel:
    return CountingModel(adi_rag)
