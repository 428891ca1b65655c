"""Serve benchmark: requests/s and p50/p95 latency of ``POST /search`` at 1 and 8 concurrent clients.

    python benchmarks/serve.py                      # MEDLINE (1,033 abstracts), all-MiniLM-L6-v2, CPU
    python benchmarks/serve.py --dataset adi        # a quicker run
    python benchmarks/serve.py --no-write           # print only

The collection is indexed once with the library (``index_type="auto"``) into a temporary folder; then
``python -m lateragkit serve`` runs in its own process on 127.0.0.1 (a free port; loopback only) and client
threads of this process send the collection's judged queries (``k=10``) back to back, each with its own
HTTP connection. Latency is the client's wall time per request (query encoding, search, JSON, HTTP).
For reference, the same searches are timed in-process (``RAG.from_index(path).search``, no HTTP, the index
opened as the server opens it) in this process.
A ``GET /health`` row gives the bare HTTP round trip. Every setup runs a fixed number of requests (bounded),
after a few warm-up requests, and the setups take turns over ``--rounds`` rounds so that changes in the
machine's load touch all of them alike.

Prints a markdown table and writes it to ``benchmarks/RESULTS.md`` under ``## Serve`` (only that section is
replaced).
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import results_file  # noqa: E402  (benchmarks/results_file.py: the shared RESULTS.md writer)
import torch
from common import DATA, HERE, minilm_path, percentile  # noqa: E402  (benchmarks/common.py)

from lateragkit import RAGPretrainedModel  # noqa: E402
from lateragkit.evaluation import corpus_text, load_beir  # noqa: E402

RESULTS = HERE / "RESULTS.md"
SECTION = "## Serve"
INDEX_NAME = "serve-bench"
WARMUP = 5
K = 10


def log(message: str) -> None:
    print(f"[serve benchmark] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_level(clients: int, per_client: int, call: Callable[[Any, str], None], make_session: Callable[[], Any],
              queries: list[str]) -> tuple[list[float], float]:
    """``clients`` threads, each ``per_client`` calls back to back: ms per call, and the wall seconds of all."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)

    def worker(n: int) -> None:
        session = make_session()
        try:
            for i in range(WARMUP):
                call(session, queries[(n + i) % len(queries)])
            start.wait()
            for i in range(per_client):
                t0 = time.perf_counter()
                call(session, queries[(n * per_client + i) % len(queries)])
                latencies[n].append((time.perf_counter() - t0) * 1000.0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            start.abort()
        finally:
            if hasattr(session, "close"):
                session.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")
    return [x for lat in latencies for x in lat], wall


def summarise(setup: str, clients: int, parts: list[tuple[list[float], float]]) -> dict[str, Any]:
    """One table row from the rounds of one setup: requests/s over all rounds' wall time."""
    flat = [x for lat, _ in parts for x in lat]
    wall = sum(w for _, w in parts)
    return {"setup": setup, "clients": clients, "requests": len(flat), "rps": len(flat) / wall,
            "p50": statistics.median(flat), "p95": percentile(flat, 0.95)}


class Server:
    """``python -m lateragkit serve`` in a child process, on a free loopback port."""

    def __init__(self, index_root: Path, device: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "lateragkit", "serve", INDEX_NAME, "--index-root", str(index_root),
               "--port", str(self.port), "--device", device, "-q"]
        self.log = tempfile.TemporaryFile("w+")  # the server's stderr: a file, so it never blocks on a full pipe
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env={**os.environ, "LATERAGKIT_API_KEY": ""})

    def __enter__(self) -> Server:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "Serving" not in line:
            self.proc.kill()
            self.log.seek(0)
            raise RuntimeError(f"the server did not start: {line}{self.log.read()}")
        transport = httpx.HTTPTransport(retries=6)
        with httpx.Client(base_url=self.url, transport=transport, timeout=60) as c:
            c.get("/health").raise_for_status()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def bench(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    corpus, queries_by_id, _ = load_beir(DATA / args.dataset)
    ids = list(corpus)[: args.max_docs]
    queries = list(queries_by_id.values())
    with tempfile.TemporaryDirectory(prefix="lateragkit-serve-bench-") as tmp:
        rag = RAGPretrainedModel.from_pretrained(args.model or minilm_path(), index_root=tmp, device=args.device,
                                                 verbose=0)
        t0 = time.perf_counter()
        path = rag.index([corpus_text(corpus[i]) for i in ids], document_ids=ids, index_name=INDEX_NAME)
        setup = {"docs": len(ids), "queries": len(queries), "index_s": time.perf_counter() - t0,
                 "model": rag.model_name, "kind": _kind(path)}
        log(f"indexed {len(ids)} documents in {setup['index_s']:.0f} s")
        # the baseline opens the index the way the server does (from disk), not the instance that built it
        reopened = RAGPretrainedModel.from_index(path, device=args.device, verbose=0)

        def in_process(_session: None, query: str) -> None:
            reopened.search(query, k=K)

        def post(session: httpx.Client, query: str) -> None:
            session.post("/search", json={"query": query, "k": K}).raise_for_status()

        def health(session: httpx.Client, _query: str) -> None:
            session.get("/health").raise_for_status()

        with Server(Path(tmp), args.device) as server:
            def session() -> httpx.Client:
                return httpx.Client(base_url=server.url, timeout=120)

            # (label, clients, call, session factory); every round runs each once, so drifts in machine load
            # touch every setup alike
            setups = [("in-process RAG.search, index opened with from_index (no HTTP)", 1, in_process, lambda: None),
                      ("HTTP GET /health (no search)", 1, health, session),
                      ("HTTP POST /search", 1, post, session),
                      ("HTTP POST /search", 8, post, session)]
            parts: list[list[tuple[list[float], float]]] = [[] for _ in setups]
            for r in range(args.rounds):
                for i, (_label, clients, call, factory) in enumerate(setups):
                    total = args.requests if clients > 1 else args.requests // 2
                    per_client = max(1, total // (clients * args.rounds))
                    parts[i].append(run_level(clients, per_client, call, factory, queries))
                log(f"round {r + 1}/{args.rounds} done")
    return [summarise(label, clients, p) for (label, clients, _, _), p in zip(setups, parts, strict=True)], setup


def _kind(path: str) -> str:
    from lateragkit.collection import Collection

    return str(Collection(path).info().get("index_type", "?"))


def markdown(rows: list[dict[str, Any]], setup: dict[str, Any], args: argparse.Namespace, load: float) -> str:
    model = "all-MiniLM-L6-v2" if args.model is None else args.model
    argv = " ".join(sys.argv[1:])
    lines = [
        SECTION,
        "",
        f"`python benchmarks/serve.py{(' ' + argv) if argv else ''}` — {args.dataset}: {setup['docs']:,} documents "
        f"({setup['kind']} index, built in {setup['index_s']:.0f} s), {model}, its {setup['queries']} judged "
        f"queries sent in turn, k={K}, mode late. Server: `python -m lateragkit serve` in its own process on "
        f"127.0.0.1, device {args.device}; clients: threads of the benchmark process, one HTTP connection each, "
        f"requests back to back after {WARMUP} warm-up requests; the setups take turns over {args.rounds} rounds. "
        f"Machine: {os.cpu_count()} CPU cores "
        f"({platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} torch threads, load "
        f"average {load:.1f} before the run (other jobs shared the CPU: compare rows of one run).",
        "",
        "| setup | concurrent clients | requests | requests/s | p50 ms | p95 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['setup']} | {r['clients']} | {r['requests']} | {r['rps']:.1f} | {r['p50']:.1f} | "
                     f"{r['p95']:.1f} |")
    base, health, one, eight = rows
    lines += [
        "",
        f"- HTTP at 1 client: p50 {one['p50']:.1f} ms vs {base['p50']:.1f} ms in-process; a bare HTTP round trip "
        f"(`/health`) costs {health['p50']:.1f} ms p50, so HTTP, JSON and validation add little: the search "
        f"(query encoding and MaxSim over the collection, on {args.device}) is the cost, and the server process "
        "competes for the CPU with every other process of the machine.",
        f"- 8 clients: {eight['rps'] / one['rps']:.2f}× the requests/s of 1 client, p50 {eight['p50']:.1f} ms "
        f"({eight['p50'] / one['p50']:.1f}× the 1-client p50): searches run in parallel in the server's "
        "thread pool and share its CPU cores.",
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = RESULTS) -> None:
    results_file.write_section(SECTION, text, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="medline")
    ap.add_argument("--max-docs", type=int, default=None, help="index only the first N documents")
    ap.add_argument("--model", default=None, help="checkpoint (default: all-MiniLM-L6-v2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--requests", type=int, default=200,
                    help="requests at 8 clients (split evenly); half as many at 1 client and in-process")
    ap.add_argument("--rounds", type=int, default=8, help="the setups take turns this many times")
    ap.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    rows, setup = bench(args)
    text = markdown(rows, setup, args, load)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
