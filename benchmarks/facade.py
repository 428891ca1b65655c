"""Facade benchmark: what ``RAG.search()`` adds to query encoding and index search, and the cost of opening.

    python benchmarks/facade.py                       # SciFact, first 3,000 documents, all-MiniLM-L6-v2, CPU
    python benchmarks/facade.py --max-docs 500        # a quicker run
    python benchmarks/facade.py --profile             # also print a cProfile of the facade's own work
    python benchmarks/facade.py --no-write            # print only

The collection is indexed once with the library (``index_type="plaid"``, one passage per document of at most
256 tokens) into ``benchmarks/cache/facade/`` (kept between runs; ``--rebuild`` rebuilds it); when
``benchmarks/search.py`` has cached the dataset's MiniLM document vectors they are indexed instead of encoding
the documents again. Then, with ``--threads`` torch threads (default 1), for each judged query (``k=10``), in
turns:

- **end-to-end**: ``rag.search(query, k=k)``;
- **encode**: the time spent inside ``encoder.encode_queries`` during that call;
- **index search**: the time spent inside the snapshot's ``index.search`` during that call.

The facade overhead of a query is its end-to-end time minus its encode and index search times, measured
within the same call (the ``CURRENT`` check, passage store reads, result rows). **Open** is
``RAGPretrainedModel.from_index(path)`` in a fresh process (imports done, not counted) and **first search**
the first ``search()`` after it in that process; both are the median of ``--opens`` fresh processes, and as
many again without ``from_index``'s warm-up search for comparison. Every figure is given as wall-clock time
and as the calling thread's CPU time (with one torch thread the whole search runs on that thread, so a busy
machine does not inflate it much). Targets (issue 14): end-to-end p50 at most encode p50 + index search p50 +
2 ms, and the first search after ``from_index`` under 1 s; the verdicts are printed for both clocks.

Prints a markdown table and writes it to ``benchmarks/RESULTS.md`` under ``## Facade`` (only that section is
replaced).
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import results_file  # noqa: E402  (benchmarks/results_file.py: the shared RESULTS.md writer)
import torch
from common import DATA, HERE, REPO, minilm_path, percentile  # noqa: E402  (benchmarks/common.py)

from lateragkit import RAGPretrainedModel  # noqa: E402
from lateragkit.evaluation import corpus_text, load_beir  # noqa: E402

CACHE = HERE / "cache" / "facade"
SEARCH_CACHE = HERE / "cache" / "search"  # benchmarks/search.py's cached document vectors
DOC_MAXLEN = 256  # as benchmarks/search.py
SECTION = "## Facade"
K = 10
WARMUP = 5
OVERHEAD_BUDGET_MS = 2.0
FIRST_SEARCH_BUDGET_MS = 1000.0


def log(message: str) -> None:
    print(f"[facade benchmark] {message}", file=sys.stderr, flush=True)


def clocks() -> tuple[float, float]:
    """Wall and this thread's CPU seconds (with one torch thread all of a search runs on this thread, so its
    CPU time does not depend on what else the machine runs)."""
    return time.perf_counter(), time.thread_time()


def ms_since(t0: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clocks()
    return (wall - t0[0]) * 1000.0, (cpu - t0[1]) * 1000.0


# --------------------------------------------------------------------------------------------------
# the index
# --------------------------------------------------------------------------------------------------
def cached_vectors(dataset: str, ids: list[str]) -> Any:
    """``encode_stream(passages, bsize, doc_maxlen)`` yielding the document vectors `benchmarks/search.py`
    cached for ``dataset`` (the same model, documents of at most 256 tokens, one passage each), or None."""
    folder = SEARCH_CACHE / dataset
    if not (folder / "ids.json").is_file() or not (folder / "doc_vectors.npy").is_file():
        return None
    if json.loads((folder / "ids.json").read_text())["doc_ids"][: len(ids)] != ids:
        return None
    vectors = np.load(folder / "doc_vectors.npy", mmap_mode="r")
    doclens = np.load(folder / "doclens.npy")[: len(ids)]
    starts = np.concatenate([[0], np.cumsum(doclens)])

    def stream(passages: list[Any], bsize: int, doc_maxlen: int) -> Any:
        assert [p.document_id for p in passages] == ids, "one passage per document, in corpus order"
        for s in range(0, len(ids), 500):
            e = min(len(ids), s + 500)
            yield (torch.from_numpy(np.array(vectors[starts[s] : starts[e]])),
                   torch.from_numpy(doclens[s:e].astype(np.int64)))

    return stream


def ensure_index(args: argparse.Namespace, model: str) -> tuple[Path, list[str]]:
    """The benchmark index (built once) and the judged queries."""
    corpus, queries, _ = load_beir(DATA / args.dataset)
    ids = list(corpus)[: args.max_docs] if args.max_docs else list(corpus)
    name = f"{args.dataset}-{len(ids)}"
    path = CACHE / name
    if args.rebuild or not (path / "CURRENT").is_file():
        rag = RAGPretrainedModel.from_pretrained(model, index_root=CACHE, verbose=0, device=args.device)
        stream = cached_vectors(args.dataset, ids) if args.model is None else None
        if stream is not None:  # the vectors benchmarks/search.py cached: no encoding (minutes on a busy CPU)
            rag._encode_stream = stream  # type: ignore[method-assign]
        log(f"indexing {len(ids)} {args.dataset} documents into {path} "
            f"({'cached vectors' if stream is not None else 'encoding them'})")
        t0 = time.perf_counter()
        rag.index([corpus_text(corpus[i]) for i in ids], document_ids=ids, index_name=name, index_type="plaid",
                  overwrite_index=True, split_documents=False, max_document_length=DOC_MAXLEN)
        log(f"indexed in {time.perf_counter() - t0:.0f} s")
    return path, list(queries.values())


# --------------------------------------------------------------------------------------------------
# open and first search, in a fresh process
# --------------------------------------------------------------------------------------------------
def child_open(path: Path, query: str, device: str, threads: int, cold: bool) -> dict[str, tuple[float, float]]:
    """Run in a fresh process (imports done): from_index, then the first and the second search. ``cold``: without
    the warm-up search of ``from_index`` (to show what it moves off the first search)."""
    torch.set_num_threads(threads)
    if cold:
        RAGPretrainedModel._warm_up = lambda self, state: None  # type: ignore[method-assign]
    t0 = clocks()
    rag = RAGPretrainedModel.from_index(path, verbose=0, device=device)
    out = {"open": ms_since(t0)}
    t0 = clocks()
    rag.search(query, k=K)
    out["first"] = ms_since(t0)
    t0 = clocks()
    rag.search(query, k=K)
    out["second"] = ms_since(t0)
    return out


def open_rows(args: argparse.Namespace, path: Path, query: str) -> list[dict[str, list[float]]]:
    """``--opens`` fresh processes with the warm-up and as many without (in turns); one dict per pair."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-open", str(path), "--child-query", query,
           "--device", args.device, "--threads", str(args.threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    rows = []
    for _ in range(args.opens):
        row: dict[str, list[float]] = {}
        for cold in (False, True):
            proc = subprocess.run(cmd + (["--child-cold"] if cold else []), capture_output=True, text=True, env=env,
                                  cwd=REPO, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"open child failed:\n{proc.stderr[-4000:]}")
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            row.update({f"{k}_cold" if cold else k: v for k, v in got.items()})
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# steady state
# --------------------------------------------------------------------------------------------------
Timings = dict[str, dict[str, list[float]]]  # clock ("wall" | "cpu") -> measure -> ms per query


class Inside:
    """Wraps a callable and adds the wall and CPU ms spent inside it to ``spent`` (reset per search)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.spent = [0.0, 0.0]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = clocks()
        try:
            return self.fn(*args, **kwargs)
        finally:
            wall, cpu = ms_since(t0)
            self.spent[0] += wall
            self.spent[1] += cpu


def steady(rag: RAGPretrainedModel, queries: list[str], n: int) -> Timings:
    """Per query, one ``rag.search``: its wall and CPU ms, and the ms spent inside query encoding and inside the
    index search during that very call (so the facade's overhead is measured exactly, not as a difference of
    separate runs)."""
    name = rag._index_name(None)
    state = rag._snapshot(name)
    encode = Inside(rag.encoder.encode_queries)
    search = Inside(state.index.search)  # type: ignore[union-attr]
    rag.encoder.encode_queries = encode  # type: ignore[method-assign]
    state.index.search = search  # type: ignore[union-attr]
    for q in queries[:WARMUP]:
        rag.search(q, k=K)
    out: Timings = {c: {"encode": [], "search": [], "both": [], "e2e": [], "overhead": []} for c in ("wall", "cpu")}
    for i in range(n):
        encode.spent, search.spent = [0.0, 0.0], [0.0, 0.0]
        t0 = clocks()
        rag.search(queries[i % len(queries)], k=K)
        e2e = ms_since(t0)
        for c, clock in enumerate(("wall", "cpu")):
            out[clock]["encode"].append(encode.spent[c])
            out[clock]["search"].append(search.spent[c])
            out[clock]["both"].append(encode.spent[c] + search.spent[c])
            out[clock]["e2e"].append(e2e[c])
            out[clock]["overhead"].append(e2e[c] - encode.spent[c] - search.spent[c])
    del rag.encoder.encode_queries, state.index.search  # type: ignore[union-attr]
    return out


def profile_facade(rag: RAGPretrainedModel, queries: list[str], n: int) -> str:
    """cProfile of ``n`` searches: the functions outside the encoder and the index, by total time."""
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        rag.search(queries[i % len(queries)], k=K)
    prof.disable()
    import io

    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).sort_stats("cumulative")
    stats.print_stats(r"lateragkit/(pretrained|collection|store|validation|results|index/storage|search_modes)", 30)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def verdicts(timed: Timings, opens: list[dict[str, list[float]]], clock: str) -> tuple[float, float, bool, bool]:
    """End-to-end p50 budget (p50 of encoding + index search within the same calls, + 2 ms) and first-search
    median on ``clock``, and whether each target is met."""
    c = 0 if clock == "wall" else 1
    p50 = {k: statistics.median(v) for k, v in timed[clock].items()}
    budget = p50["both"] + OVERHEAD_BUDGET_MS
    first = statistics.median(r["first"][c] for r in opens)
    return budget, first, p50["e2e"] <= budget, first < FIRST_SEARCH_BUDGET_MS


def markdown(timed: Timings, opens: list[dict[str, list[float]]], setup: dict[str, Any],
             args: argparse.Namespace, load: tuple[float, float]) -> str:
    def cells(measure: str) -> str:
        return " | ".join(f"{statistics.median(timed[c][measure]):.2f} | {percentile(timed[c][measure], 0.95):.2f}"
                          for c in ("wall", "cpu"))

    def once(measure: str, digits: int) -> str:
        return " | ".join(f"{statistics.median(r[measure][c] for r in opens):.{digits}f} | –" for c in (0, 1))

    lines = [
        SECTION,
        "",
        f"`python benchmarks/facade.py --dataset {args.dataset} --max-docs {args.max_docs} --threads {args.threads}` "
        f"— {setup['passages']:,} passages of {setup['documents']:,} {args.dataset} documents, {setup['kind']} "
        f"index, all-MiniLM-L6-v2 (dim {setup['dim']}), k={K}, one query per call, {args.device}, {args.threads} "
        f"torch thread(s), {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}; "
        f"load average {load[0]:.1f} before / {load[1]:.1f} after. {len(timed['wall']['e2e'])} queries; encoding and "
        "index search are the time spent inside them during each `RAG.search()` call. CPU = the calling thread's "
        "CPU time (with one torch thread the whole search runs on it), which a busy machine inflates far less than "
        "wall-clock time; wall-clock times on a shared machine are only comparable within one run.",
        "",
        "| | wall p50 (ms) | wall p95 (ms) | CPU p50 (ms) | CPU p95 (ms) |",
        "|---|---:|---:|---:|---:|",
        f"| query encoding (inside `encoder.encode_queries`) | {cells('encode')} |",
        f"| index search (inside `index.search`) | {cells('search')} |",
        f"| encoding + index search (of the same call) | {cells('both')} |",
        f"| end-to-end `RAG.search()` | {cells('e2e')} |",
        f"| facade overhead (end-to-end − encoding − index search, per call) | {cells('overhead')} |",
        f"| `RAGPretrainedModel.from_index` (fresh process, median of {len(opens)}; model load included) | "
        f"{once('open', 0)} |",
        f"| first `search()` after `from_index` | {once('first', 1)} |",
        f"| second `search()` after `from_index` | {once('second', 1)} |",
        f"| for comparison, without the warm-up search in `from_index`: `from_index` | {once('open_cold', 0)} |",
        f"| for comparison, without the warm-up: first `search()` | {once('first_cold', 1)} |",
        "",
    ]
    for clock in ("wall", "cpu"):
        budget, first, e2e_ok, first_ok = verdicts(timed, opens, clock)
        e2e = statistics.median(timed[clock]["e2e"])
        overhead = statistics.median(timed[clock]["overhead"])
        lines.append(
            f"- {clock.upper() if clock == 'cpu' else 'Wall'}: end-to-end p50 {e2e:.2f} ms vs (encoding + index "
            f"search) p50 + {OVERHEAD_BUDGET_MS:.0f} ms = {budget:.2f} ms: **{'PASS' if e2e_ok else 'FAIL'}** (the "
            f"facade's own work: p50 {overhead:.2f} ms per call); first "
            f"search after `from_index` {first:.0f} ms (target under {FIRST_SEARCH_BUDGET_MS:.0f} ms): "
            f"**{'PASS' if first_ok else 'FAIL'}**."
        )
    lines.append(
        "- `from_index` loads the model, memory-maps the index, opens the passage store and runs one small search "
        "(results unused) through every layer, so the first real search does no one-time work. Per search the "
        "facade reads `CURRENT` once (a reopen only when it names a newer version, reusing the unchanged "
        "segments), makes one SQLite query per store segment holding a result, and builds the result rows."
    )
    return "\n".join(lines) + "\n"


def bench(args: argparse.Namespace) -> tuple[Timings, list[dict[str, list[float]]], dict[str, Any], str]:
    torch.set_num_threads(args.threads)
    model = args.model or minilm_path()
    path, queries = ensure_index(args, model)
    log(f"timing open + first search in {args.opens} fresh processes")
    opens = open_rows(args, path, queries[0])
    rag = RAGPretrainedModel.from_index(path, verbose=0, device=args.device)
    state = rag._snapshot(path.name)
    setup = {"passages": int(state.index.num_passages),  # type: ignore[union-attr]
             "documents": len(state.store.document_ids()),  # type: ignore[union-attr]
             "kind": state.meta.index_type, "dim": rag.encoder.dim}
    log(f"timing {args.queries} queries")
    timed = steady(rag, queries, args.queries)
    prof = profile_facade(rag, queries, args.queries) if args.profile else ""
    return timed, opens, setup, prof


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--max-docs", type=int, default=3000, help="index only the first N documents")
    ap.add_argument("--model", default=None, help="checkpoint (default: all-MiniLM-L6-v2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--queries", type=int, default=300, help="timed queries (the judged ones, cycled)")
    ap.add_argument("--opens", type=int, default=3, help="fresh processes timing from_index + first search")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached index")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the facade's own functions")
    ap.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    ap.add_argument("--child-open", help=argparse.SUPPRESS)
    ap.add_argument("--child-query", help=argparse.SUPPRESS)
    ap.add_argument("--child-cold", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_open:
        print(json.dumps(child_open(Path(args.child_open), args.child_query, args.device, args.threads,
                                    args.child_cold)))
        return
    load = os.getloadavg()[0]
    timed, opens, setup, prof = bench(args)
    text = markdown(timed, opens, setup, args, (load, os.getloadavg()[0]))
    if prof:
        print(prof, file=sys.stderr)
    print(text)
    if not args.no_write:
        results_file.write_section(SECTION, text)


if __name__ == "__main__":
    main()
