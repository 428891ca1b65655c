"""The frameworks stay optional: importing lateragkit loads neither, and a missing extra is a clear error.

The checks run in one fresh interpreter (modules imported by other tests would hide a leak): it first
imports lateragkit and records which framework modules got loaded, then makes LangChain and LlamaIndex
look uninstalled and records what each adapter entry point raises.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent(
    """
    import json, sys

    import lateragkit, lateragkit.integrations, lateragkit.pretrained
    from lateragkit import RAGPretrainedModel
    report = {"leaked": sorted(m for m in sys.modules
                               if m.split(".")[0] in ("langchain", "langchain_core", "llama_index"))}

    # A None entry in sys.modules makes the import system raise ModuleNotFoundError: "not installed".
    for name in ("langchain_core", "llama_index", "llama_index.core"):
        sys.modules[name] = None

    import lateragkit.integrations as integrations
    rag = RAGPretrainedModel.__new__(RAGPretrainedModel)  # no model needed: the import fails first
    calls = {
        "as_langchain_retriever": rag.as_langchain_retriever,
        "as_langchain_document_compressor": rag.as_langchain_document_compressor,
        "LateragkitTextSplitter": lambda: integrations.LateragkitTextSplitter,
        "as_llama_index_retriever": rag.as_llama_index_retriever,
        "as_llama_index_postprocessor": rag.as_llama_index_postprocessor,
        "LateragkitNodeParser": lambda: integrations.LateragkitNodeParser,
    }
    report["errors"] = {}
    for label, call in calls.items():
        try:
            call()
            report["errors"][label] = None
        except Exception as exc:
            report["errors"][label] = {
                "type": type(exc).__name__,
                "is_import_error": isinstance(exc, ImportError),
                "is_missing_extra": isinstance(exc, lateragkit.MissingExtraError),
                "message": str(exc),
            }
    print("REPORT" + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REPORT"))
    return json.loads(line[len("REPORT"):])


def test_import_lateragkit_imports_no_framework(report: dict[str, Any]) -> None:
    assert report["leaked"] == []


@pytest.mark.parametrize(
    ("entry", "extra"),
    [
        ("as_langchain_retriever", "langchain"),
        ("as_langchain_document_compressor", "langchain"),
        ("LateragkitTextSplitter", "langchain"),
        ("as_llama_index_retriever", "llamaindex"),
        ("as_llama_index_postprocessor", "llamaindex"),
        ("LateragkitNodeParser", "llamaindex"),
    ],
)
def test_adapter_without_extra_raises_missing_extra(report: dict[str, Any], entry: str, extra: str) -> None:
    error = report["errors"][entry]
    assert error is not None, f"{entry} did not fail although its framework is missing"
    assert error["is_missing_extra"] and error["is_import_error"], error
    assert f'pip install "lateragkit[{extra}]"' in error["message"]


def test_unknown_integration_name_is_attribute_error() -> None:
    import lateragkit.integrations as integrations

    with pytest.raises(AttributeError, match="NoSuchAdapter"):
        integrations.NoSuchAdapter  # noqa: B018
