"""Encoding throughput of lateragkit's encoder with all-MiniLM-L6-v2 on a slice of SciFact.

Measures document encoding (tokens/s, docs/s) with length-sorted batching (what `encode_documents` does) against
batches taken in corpus order, and query encoding latency (one query per call, and a batch of 32).
CPU always; CUDA (bfloat16) when `torch.cuda.is_available()`.

    python benchmarks/encode.py [--docs 400] [--bsize 32] [--queries 64]

Prints a markdown table and writes it to ``benchmarks/RESULTS.md`` under ``## Encoding`` (only that section is
replaced; the other sections belong to the other scripts).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import results_file  # noqa: E402  (benchmarks/results_file.py: the shared RESULTS.md writer)
import torch
from common import DATA, HERE, minilm_path  # noqa: E402  (benchmarks/common.py)

from lateragkit.models import load_encoder  # noqa: E402

RESULTS = HERE / "RESULTS.md"
SECTION = "## Encoding"


def load_scifact(n_docs: int, n_queries: int) -> tuple[list[str], list[str]]:
    folder = DATA / "scifact"
    if not (folder / "corpus.jsonl").is_file():
        sys.exit(f"SciFact not found at {folder} (set LATERAGKIT_DATA)")
    docs = []
    with (folder / "corpus.jsonl").open(encoding="utf-8") as fh:
        for _, line in zip(range(n_docs), fh, strict=True):
            d = json.loads(line)
            docs.append(f"{d['title']} {d['text']}".strip())
    judged = {line.split("\t")[0] for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    queries = []
    with (folder / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            if q["_id"] in judged:
                queries.append(q["text"])
            if len(queries) == n_queries:
                break
    return docs, queries


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_device(device: str, docs: list[str], queries: list[str], bsize: int) -> list[dict[str, Any]]:
    enc = load_encoder(minilm_path(), device=device)
    dev = enc.device
    n_tokens = sum(len(ids) for ids in enc.tok.tokenize_documents(docs, enc.doc_maxlen))
    enc.encode_documents(docs[: 2 * bsize], bsize=bsize)  # warm-up
    enc.encode_queries(queries[:8])
    rows = []

    _sync(dev)
    t = time.perf_counter()
    vectors, _ = enc.encode_documents(docs, bsize=bsize)
    _sync(dev)
    sorted_s = time.perf_counter() - t

    t = time.perf_counter()
    for start in range(0, len(docs), bsize):  # batches in corpus order: padding to each batch's longest doc
        enc.encode_documents(docs[start : start + bsize], bsize=bsize)
    _sync(dev)
    unsorted_s = time.perf_counter() - t

    label = f"{dev.type} ({'bfloat16' if enc.dtype == torch.bfloat16 else 'float32'})"
    for name, secs in (("length-sorted batches", sorted_s), ("corpus-order batches", unsorted_s)):
        rows.append({"device": label, "what": f"documents, {name}", "value":
                     f"{len(docs) / secs:,.1f} docs/s, {n_tokens / secs:,.0f} tokens/s ({secs:.2f} s)"})

    lat = []
    for q in queries:
        _sync(dev)
        t = time.perf_counter()
        enc.encode_queries([q])
        _sync(dev)
        lat.append((time.perf_counter() - t) * 1000)
    rows.append({"device": label, "what": f"query latency, 1 query/call (n={len(lat)})",
                 "value": f"median {statistics.median(lat):.1f} ms, "
                          f"p90 {sorted(lat)[int(0.9 * (len(lat) - 1))]:.1f} ms"})
    batch = queries[:32]
    _sync(dev)
    t = time.perf_counter()
    enc.encode_queries(batch, bsize=32)
    _sync(dev)
    secs = time.perf_counter() - t
    rows.append({"device": label, "what": f"queries, one batch of {len(batch)}",
                 "value": f"{len(batch) / secs:,.0f} queries/s ({secs * 1000:.0f} ms)"})
    rows.append({"device": label, "what": "document vectors stored",
                 "value": f"{vectors.shape[0]:,} x {vectors.shape[1]} float16"})
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, n_docs: int, load_before: float) -> str:
    threads = torch.get_num_threads()
    lines = [
        SECTION,
        "",
        f"`python benchmarks/encode.py --docs {args.docs} --bsize {args.bsize} --queries {args.queries}` "
        f"({time.strftime('%Y-%m-%d')}): all-MiniLM-L6-v2 (bare encoder, doc_maxlen 256), the first {n_docs} "
        f"SciFact documents (title + abstract), judged SciFact queries. Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {threads} threads, load average "
        f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after the run. Timings are wall-clock on a possibly "
        f"shared machine; they indicate orders of magnitude only.",
        "",
        "| device | measurement | result |",
        "|---|---|---|",
    ]
    lines += [f"| {r['device']} | {r['what']} | {r['value']} |" for r in rows]
    if not torch.cuda.is_available():
        lines.append("| cuda (bfloat16) | all of the above | not measured: no CUDA device on this machine |")
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = RESULTS) -> None:
    results_file.write_section(SECTION, text, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=400)
    ap.add_argument("--bsize", type=int, default=32)
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--no-write", action="store_true", help="print only, do not update RESULTS.md")
    args = ap.parse_args()
    docs, queries = load_scifact(args.docs, args.queries)
    load_before = os.getloadavg()[0]
    rows = bench_device("cpu", docs, queries, args.bsize)
    if torch.cuda.is_available():
        rows += bench_device("cuda", docs, queries, args.bsize)
    text = markdown(rows, args, len(docs), load_before)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
