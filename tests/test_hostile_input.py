"""Hostile and odd input at the facade: every bad call raises a typed error that says what to do and
leaves the stored indexes byte-for-byte unchanged; odd but valid input (strange ids, huge or garbled
documents, huge k) works and every result stays a verbatim slice of its document."""
from __future__ import annotations

import hashlib
import json
import logging
import resource
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lateragkit import RAGPretrainedModel
from lateragkit.exceptions import IndexNotFoundError

from .conftest import data_dir, minilm_path

ALL = 10**9


def _corpus(name: str) -> list[dict[str, str]]:
    folder = data_dir(name)
    return [json.loads(line) for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]


def _queries(name: str) -> list[str]:
    folder = data_dir(name)
    return [json.loads(line)["text"] for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines()]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file (and folder) below ``folder`` with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def _assert_slices(rows: list[dict[str, Any]], docs: dict[str, str]) -> None:
    for row in rows:
        text = docs[row["document_id"]]
        assert row["content"] == text[row["start_char"] : row["end_char"]], row
        assert row["passage_id"].startswith(row["document_id"] + "-")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def rag(workdir: Path) -> RAGPretrainedModel:
    return RAGPretrainedModel.from_pretrained(minilm_path(), index_root=workdir / "indexes", verbose=0, device="cpu")


@pytest.fixture(scope="module")
def adi() -> dict[str, str]:
    return {d["_id"]: (d["title"] + ". " + d["text"]).strip() for d in _corpus("adi")}


@pytest.fixture(scope="module")
def base(rag: RAGPretrainedModel, adi: dict[str, str]) -> dict[str, str]:
    """A committed index that every bad call below must leave untouched."""
    docs = dict(list(adi.items())[:20])
    rag.index(list(docs.values()), document_ids=list(docs), index_name="base", index_type="exact")
    return docs


@pytest.fixture
def unchanged(workdir: Path, base):  # noqa: ANN001 - fixture
    """Asserts, after the test, that nothing under the work folder (indexes and their parent) changed."""
    before = _snapshot(workdir)
    yield
    assert _snapshot(workdir) == before, "a rejected call changed files on disk"


# --------------------------------------------------------------------------------------------------
# empty input
# --------------------------------------------------------------------------------------------------
def test_empty_collection_is_rejected(rag, unchanged):
    with pytest.raises(ValueError, match="empty"):
        rag.index([], index_name="empty")
    with pytest.raises(ValueError, match="empty"):
        rag.index([], index_name="base")
    with pytest.raises(ValueError, match="empty"):
        rag.add_to_index([], index_name="base")


def test_all_empty_documents_are_rejected(rag, unchanged):
    for name in ("blank", "base"):
        with pytest.raises(ValueError, match="empty or whitespace"):
            rag.index(["", "   ", "\n\t \u3000"], document_ids=["e1", "e2", "e3"], index_name=name)
    with pytest.raises(ValueError, match="empty or whitespace"):
        rag.add_to_index(["", " "], new_document_ids=["e1", "e2"], index_name="base")


def test_empty_documents_are_dropped_with_a_warning(rag, adi, caplog):
    docs = {"blank-one": "", "real-one": adi["1"], "blank-two": " \n\t ", "real-two": adi["2"]}
    with caplog.at_level(logging.WARNING):
        rag.index(list(docs.values()), document_ids=list(docs), index_name="mixed", index_type="exact")
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "blank-one" in warned and "blank-two" in warned
    rows = rag.search("computer information", index_name="mixed", k=ALL)
    assert {r["document_id"] for r in rows} == {"real-one", "real-two"}
    assert rag.search("computer information", index_name="mixed", k=5, doc_ids=["blank-one"]) == []
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rag.add_to_index(["", adi["3"]], new_document_ids=["blank-three", "real-three"], index_name="mixed")
    assert "blank-three" in " ".join(r.getMessage() for r in caplog.records)
    rows = rag.search("computer information", index_name="mixed", k=ALL)
    assert {r["document_id"] for r in rows} == {"real-one", "real-two", "real-three"}


def test_one_document(rag, adi):
    rag.index([adi["5"]], document_ids=["only"], index_name="one", index_type="exact")
    rows = rag.search("information retrieval", index_name="one", k=10)
    assert [r["document_id"] for r in rows] == ["only"] * len(rows) and len(rows) >= 1
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))


# --------------------------------------------------------------------------------------------------
# ids and metadata
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ids", [["a", "b", "a"], ["x", "x"]])
def test_duplicate_ids_are_rejected(rag, adi, unchanged, ids):
    texts = list(adi.values())[: len(ids)]
    with pytest.raises(ValueError, match="duplicates"):
        rag.index(texts, document_ids=ids, index_name="base")
    with pytest.raises(ValueError, match="duplicates"):
        rag.add_to_index(texts, new_document_ids=ids, index_name="base")


ODD_IDS = [
    "a/b",
    "../../etc/passwd",
    "/absolute/path",
    "back\\slash",
    "with spaces  and\ttabs",
    "ünïcödé 文档 مستند",
    "emoji 🙂‍↔️",
    "CURRENT",
    "v00000001",
    "'; DROP TABLE passages; --",
]


def test_odd_document_ids_are_stored_not_used_as_paths(rag, adi, workdir):
    texts = list(adi.values())[: len(ODD_IDS)]
    docs = dict(zip(ODD_IDS, texts, strict=True))
    metas = [{"id": i} for i in ODD_IDS]
    rag.index(texts, document_ids=ODD_IDS, document_metadatas=metas, index_name="odd-ids", index_type="exact")
    rows = rag.search("computer information systems", index_name="odd-ids", k=ALL)
    assert {r["document_id"] for r in rows} == set(ODD_IDS)
    for row in rows:
        assert row["document_metadata"] == {"id": row["document_id"]}
    _assert_slices(rows, docs)
    for doc_id in ODD_IDS:
        only = rag.search("information", index_name="odd-ids", k=ALL, doc_ids=[doc_id])
        assert {r["document_id"] for r in only} == {doc_id}
    # no id became a file or folder name anywhere
    names = {p.name for p in workdir.rglob("*")}
    assert not names & {"passwd", "etc", "absolute", "path", "a", "b", "slash"}
    assert not any(("文档" in n or "DROP" in n or "spaces" in n) for n in names)
    assert not (Path("/absolute")).exists()
    rag.delete_from_index(["a/b", "../../etc/passwd", "'; DROP TABLE passages; --"], index_name="odd-ids")
    rows = rag.search("computer information systems", index_name="odd-ids", k=ALL)
    assert {r["document_id"] for r in rows} == set(ODD_IDS) - {"a/b", "../../etc/passwd", "'; DROP TABLE passages; --"}


@pytest.mark.parametrize(
    "bad_ids,error",
    [(["", "x"], ValueError), (["  ", "x"], ValueError), ([1, 2], ValueError), ("ab", TypeError), (["a"], ValueError)],
)
def test_malformed_ids_are_rejected(rag, adi, unchanged, bad_ids, error):
    texts = list(adi.values())[:2]
    with pytest.raises(error):
        rag.index(texts, document_ids=bad_ids, index_name="base")
    with pytest.raises(error):
        rag.add_to_index(texts, new_document_ids=bad_ids, index_name="base")


class _Opaque:
    pass


@pytest.mark.parametrize(
    "meta,error",
    [
        ({"tags": {"a", "b"}}, ValueError),
        ({"obj": _Opaque()}, ValueError),
        ({"x": float("nan")}, ValueError),
        ({"x": float("inf")}, ValueError),
        ({"raw": b"bytes"}, ValueError),
        ("not a dict", TypeError),
        (["a", "list"], TypeError),
    ],
)
def test_metadata_that_is_not_json_is_rejected(rag, adi, unchanged, meta, error):
    texts = list(adi.values())[:2]
    with pytest.raises(error, match="metadata|JSON"):
        rag.index(texts, document_ids=["m1", "m2"], document_metadatas=[meta, None], index_name="base")
    with pytest.raises(error, match="metadata|JSON"):
        rag.add_to_index(texts, new_document_ids=["m1", "m2"], new_document_metadatas=[None, meta], index_name="base")


# --------------------------------------------------------------------------------------------------
# index names and k
# --------------------------------------------------------------------------------------------------
BAD_NAMES = ["../x", "x/../../y", "..", ".", "", "   ", "a/b", "a\\b", "x\x00y", "/tmp/absolute-index"]


@pytest.mark.parametrize("name", BAD_NAMES + ["<abs>"])
def test_index_names_that_would_escape_the_root_are_rejected(rag, adi, workdir, unchanged, name):
    if name == "<abs>":
        name = str(workdir / "indexes" / "base")  # even an absolute path to an existing index
    texts = list(adi.values())[:2]
    outside = sorted(p.name for p in workdir.parent.iterdir())
    with pytest.raises(ValueError, match="index_name"):
        rag.index(texts, document_ids=["n1", "n2"], index_name=name)
    with pytest.raises(ValueError, match="index_name"):
        rag.add_to_index(texts, new_document_ids=["n1", "n2"], index_name=name)
    with pytest.raises(ValueError, match="index_name"):
        rag.delete_from_index(["1"], index_name=name)
    with pytest.raises(ValueError, match="index_name"):
        rag.search("information", index_name=name)
    assert sorted(p.name for p in workdir.parent.iterdir()) == outside
    assert not Path("/tmp/absolute-index").exists()


def test_unknown_index(rag, workdir, unchanged):
    with pytest.raises(IndexNotFoundError, match="nope"):
        rag.search("information", index_name="nope")
    with pytest.raises(IndexNotFoundError):
        rag.add_to_index(["some text"], new_document_ids=["t"], index_name="nope")
    with pytest.raises(IndexNotFoundError):
        rag.delete_from_index(["t"], index_name="nope")
    with pytest.raises(IndexNotFoundError):
        RAGPretrainedModel.from_index(workdir / "indexes" / "nope", verbose=0)
    assert not (workdir / "indexes" / "nope").exists()


@pytest.mark.parametrize("k,error", [(0, ValueError), (-1, ValueError), (-(10**12), ValueError),
                                     (2.5, TypeError), (True, TypeError), ("10", TypeError), (None, TypeError)])
def test_bad_k(rag, unchanged, k, error):
    with pytest.raises(error, match="k"):
        rag.search("information", index_name="base", k=k)


@pytest.fixture(scope="module")
def plaid_base(rag: RAGPretrainedModel, adi: dict[str, str]) -> dict[str, str]:
    docs = dict(list(adi.items())[:40])
    rag.index(list(docs.values()), document_ids=list(docs), index_name="plaid-base", index_type="plaid")
    return docs


def test_huge_k_returns_every_candidate_sorted(rag, base, plaid_base):
    rows = rag.search("information retrieval systems", index_name="base", k=10**9)
    assert {r["document_id"] for r in rows} == set(base)  # exact: every passage is a candidate
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert len({r["passage_id"] for r in rows}) == len(rows)
    for name, docs in (("base", base), ("plaid-base", plaid_base)):
        rows = rag.search(["information retrieval systems", "library catalog"], index_name=name, k=10**9)
        for out in rows:
            assert 1 <= len(out) <= 10**9
            assert len({r["passage_id"] for r in out}) == len(out)
            assert [r["score"] for r in out] == sorted((r["score"] for r in out), reverse=True)
            _assert_slices(out, docs)


# --------------------------------------------------------------------------------------------------
# huge, garbled and multilingual documents
# --------------------------------------------------------------------------------------------------
def test_200k_character_document_is_split_with_bounded_memory(rag, adi):
    # 200,000 characters: real text (~50k characters, ~12k tokens: the encoding cost of the test) in
    # paragraphs separated by long runs of blank lines and spaces, as PDF extractions often are.
    paragraphs = list(adi.values())
    long_doc, i = "", 0
    while len(long_doc) < 200_000:
        long_doc += paragraphs[i % len(paragraphs)] + ("\n" * 40 + " " * 2500 + "\t" * 100 if i % 2 else "\n\n")
        i += 1
    long_doc = long_doc[:200_000]
    no_spaces = "x" * 200_000  # one "word" far longer than any tokenizer's word limit
    docs = {"long": long_doc, "no-spaces": no_spaces, "short": adi["1"]}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rag.index(list(docs.values()), document_ids=list(docs), index_name="long", index_type="exact",
              max_document_length=256)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    rows = rag.search("information retrieval", index_name="long", k=ALL, doc_ids=["long"])
    _assert_slices(rows, docs)
    budget = 256 - rag.encoder.num_special_doc_tokens
    assert all(len(rag.encoder.token_spans(r["content"])) <= budget for r in rows)
    covered = [False] * len(long_doc)
    for r in rows:
        covered[r["start_char"] : r["end_char"]] = [True] * (r["end_char"] - r["start_char"])
    assert all(c or ch.isspace() for c, ch in zip(covered, long_doc, strict=True)), \
        "some text of the long document was lost"
    assert len(rows) >= len(rag.encoder.token_spans(long_doc)) // budget
    rows = rag.search("xxxx", index_name="long", k=ALL, doc_ids=["no-spaces"])
    assert rows
    _assert_slices(rows, docs)
    # encoding runs in bounded batches: the whole document is never one tensor (~200 passages here)
    assert grown_mb < 1500, f"indexing a 200k-character document grew the peak RSS by {grown_mb:.0f} MB"


XQUAD_LANGS = ["ar", "zh", "th", "hi", "ru", "el"]
CONTROLS = ["\x00", "\x07", "\x1b[31m", "\u200b", "\ufeff", "\u202e", "\r\n", "\x0c", "e\u0301", "\U0001f600"]


def test_control_characters_and_mixed_scripts(rag):
    docs: dict[str, str] = {}
    queries = []
    for lang in XQUAD_LANGS:
        paras = _corpus(f"xquad/{lang}")[:2]
        for i, para in enumerate(paras):
            text = para["text"]
            cut = len(text) // 2
            docs[f"{lang}-{i}"] = CONTROLS[i % len(CONTROLS)] + text[:cut] + "".join(CONTROLS) + text[cut:]
        queries.append(_queries(f"xquad/{lang}")[0])
    # a document mixing every script, and documents of control/format characters only
    docs["mixed"] = " ".join(text[:200] for text in list(docs.values())[::4])
    docs["controls-only"] = "\x00\x01\x02\x07\x1b"
    docs["zero-width-only"] = "\u200b\u200c\u200d\ufeff"
    rag.index(list(docs.values()), document_ids=list(docs), index_name="scripts", index_type="exact")
    for rows in rag.search(queries + ["\x00 control \u200b query \u202e"], index_name="scripts", k=ALL):
        assert rows
        _assert_slices(rows, docs)


def test_lone_surrogates_are_rejected_cleanly(rag, unchanged):
    # Not valid Unicode: neither the tokenizer nor SQLite (UTF-8) can take them; refused up front.
    with pytest.raises(ValueError, match=r"collection\[1\].*invalid Unicode"):
        rag.index(["valid text", "broken \ud800 text"], document_ids=["s1", "s2"], index_name="base")
    with pytest.raises(ValueError, match="invalid Unicode"):
        rag.add_to_index(["broken \udfff text"], new_document_ids=["s3"], index_name="base")
    with pytest.raises(ValueError, match="invalid Unicode"):
        rag.add_to_index(["fine text"], new_document_ids=["id \ud800"], index_name="base")
    with pytest.raises(ValueError, match="metadata|Unicode"):
        rag.add_to_index(["fine text"], new_document_ids=["s4"], new_document_metadatas=[{"k": "\ud800"}],
                         index_name="base")
    with pytest.raises(ValueError, match="invalid Unicode"):
        rag.search("query \ud800", index_name="base")


# --------------------------------------------------------------------------------------------------
# property: every result is a slice of its document
# --------------------------------------------------------------------------------------------------
_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=400)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(_texts, min_size=1, max_size=5), query=_texts)
def test_results_are_slices_of_their_documents(rag, texts, query):
    ids = [f"doc-{i}" for i in range(len(texts))]
    docs = dict(zip(ids, texts, strict=True))
    try:
        rag.index(texts, document_ids=ids, index_name="prop", index_type="exact", max_document_length=32)
    except ValueError:
        # documented: nothing indexable (every document empty, whitespace or without any model token)
        assert all(not rag.encoder.token_spans(t) for t in texts)
        return
    if not query.strip():
        query = "document"
    for rows in rag.search([query, "the"], index_name="prop", k=ALL):
        assert rows
        _assert_slices(rows, docs)
