"""Qdrant backend benchmark: SciFact quality/latency/size against exact MaxSim and PLAID, and how p50 grows.

    python benchmarks/qdrant.py                         # SciFact (cached vectors) + synthetic growth
    python benchmarks/qdrant.py --skip-synthetic        # part 1 only (part 2's last text is kept)
    python benchmarks/qdrant.py --skip-dataset --sizes 25000 50000
    python benchmarks/qdrant.py --resume ...            # go on from what an interrupted run saved

Part 1 (SciFact): every index is built from the same cached all-MiniLM-L6-v2 token vectors that
``benchmarks/search.py`` uses (``encode_cached``: run ``python benchmarks/search.py --encode-only scifact``
first; this script never encodes). Rows: exhaustive exact MaxSim, PLAID nbits=2 and the embedded Qdrant
index (qdrant-edge-py) with float32 / float16 token vectors and float16 + scalar int8 quantization, at the
default first stage (``candidates=200``) and a candidates sweep. Columns as in ``## Search``: build seconds,
bytes per token on disk (apparent size of every file under the index folder), nDCG@10, Recall@100, p50/p95
latency of one query per call (k=10), QPS of one batched call. Target: Qdrant nDCG@10 within 0.01 of exact
MaxSim.

Part 2 (synthetic): clustered random token vectors (dim 128, 20-40 tokens per passage, ColBERTv2's width)
in growing collections; for each size PLAID nbits=2 (built for that size) and the embedded Qdrant index
(grown by adding passages) are timed side by side, query by query (k=10, one query per call: p50 and p95,
PLAID also with one torch thread), with the load average while timing, the share of exact MaxSim's top 10
that each returns, bytes per token, build/add seconds and the step's peak memory. The state is saved under
``benchmarks/cache/qdrant/synthetic/`` after every 10,000-passage block and every size: ``--resume`` goes
on from there after an interruption, and ``RESULTS.md`` is rewritten after every size.

Prints markdown tables and writes them to ``benchmarks/RESULTS.md`` under ``## Qdrant`` (each part's text
is also kept under ``benchmarks/cache/qdrant/`` so that one part can be rerun alone).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import search as search_bench  # noqa: E402  (benchmarks/search.py: cached vectors, measure(), write_section)

from lateragkit import scoring  # noqa: E402
from lateragkit.index import build_index  # noqa: E402
from lateragkit.qdrant import QdrantIndex, QdrantLocation, QdrantOptions  # noqa: E402

SECTION = "## Qdrant"
logger = logging.getLogger("benchmarks.qdrant")
WORK = HERE / "cache" / "qdrant"
PARTS = ("dataset", "synthetic")  # each part's text is kept in WORK/part-<name>.md: one part can be rerun alone
UPSERT_DOCS = 1024  # passages per upsert_documents call while building (the facade's encode chunk)


def tree_bytes(folder: Path, *, allocated: bool = False) -> int:
    """Size of every file under ``folder``: apparent (``st_size``), or the disk blocks allocated (``du``;
    smaller for Qdrant's preallocated, sparse memory-mapped files)."""
    files = [p.stat() for p in Path(folder).rglob("*") if p.is_file()]
    return sum(st.st_blocks * 512 if allocated else st.st_size for st in files)


def passages_of(doc_ids: list[str], vectors: np.ndarray, doclens: np.ndarray, start: int = 0) -> Iterator[Any]:
    """(document ids, passage records, vector arrays) in groups of UPSERT_DOCS passages (one per document)."""
    offsets = np.concatenate([[0], np.cumsum(doclens)])
    for s in range(0, len(doclens), UPSERT_DOCS):
        e = min(len(doclens), s + UPSERT_DOCS)
        ids = [doc_ids[i] for i in range(s, e)]
        records = [{"passage_id": f"{d}-0", "document_id": d, "content": "", "start_char": None, "end_char": None,
                    "document_metadata": None} for d in ids]
        block = np.asarray(vectors[offsets[s] : offsets[e]])
        local = offsets[s : e + 1] - offsets[s]
        yield ids, records, [block[local[i] : local[i + 1]] for i in range(e - s)]


def add_to_qdrant(index: QdrantIndex, doc_ids: list[str], vectors: np.ndarray, doclens: np.ndarray) -> None:
    for ids, records, vecs in passages_of(doc_ids, vectors, doclens):
        index.upsert_documents(ids, records, vecs)


class QdrantRows:
    """A `QdrantIndex` seen as `benchmarks/search.py`'s index protocol: search returns (scores, row numbers)."""

    kind = "qdrant"

    def __init__(self, index: QdrantIndex, folder: Path, num_tokens: int, row_of: dict[str, int]) -> None:
        self.index, self.directory, self.num_tokens, self.row_of = index, folder, num_tokens, row_of

    def search(self, Q: torch.Tensor, Q_mask: torch.Tensor, k: int, **params: Any) -> list:
        out = []
        for hits in self.index.search(Q, Q_mask, k, **params):
            out.append((np.array([s for s, _ in hits], dtype=np.float32),
                        np.array([self.row_of[rec["document_id"]] for _, rec in hits], dtype=np.int64)))
        return out


# --------------------------------------------------------------------------------------------------
# part 1: SciFact
# --------------------------------------------------------------------------------------------------
class Rows:
    """The rows of part 1, saved after each one (``WORK/rows-<dataset>.json``); with ``--resume`` a row whose
    key was saved by an earlier run is reused instead of measured again (its sizes are read again from its
    index folder, which stays under ``WORK/<dataset>/<key without -c…>``)."""

    def __init__(self, path: Path, work: Path, tokens: int, resume: bool) -> None:
        self.path, self.work, self.tokens = path, work, tokens
        saved = json.loads(path.read_text()) if resume and path.exists() else []
        self.saved = {r["key"]: r for r in saved}
        self.rows: list[dict[str, Any]] = []

    def have(self, key: str) -> bool:
        if key in self.saved:
            self._keep(key, self.saved[key])
            return True
        return False

    def add(self, key: str, row: dict[str, Any]) -> None:
        self._keep(key, row)
        print(table(self.rows), flush=True)

    def _keep(self, key: str, row: dict[str, Any]) -> None:
        folder = self.work / key.split("-c")[0]
        row["key"] = key
        if folder.exists():
            row["bytes_per_token"] = tree_bytes(folder) / self.tokens
            row["allocated_per_token"] = tree_bytes(folder, allocated=True) / self.tokens
        self.rows.append(row)
        self.path.write_text(json.dumps(self.rows))


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = ["| index | build s | B/token on disk (apparent) | B/token on disk (allocated) | nDCG@10 | R@100 | "
             "p50 ms | p95 ms | p50 vs exhaustive | QPS (batch) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        allocated = f"{r['allocated_per_token']:.0f}" if "allocated_per_token" in r else "—"
        lines.append(f"| {r['name']} | {r['build_s']:.0f} | {r['bytes_per_token']:.0f} | {allocated} | "
                     f"{r['ndcg10']:.4f} | {r['recall100']:.3f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                     f"{base['p50_ms'] / r['p50_ms']:.1f}× | {r['qps']:.1f} |")
    return "\n".join(lines)


def baseline_rows(out: Rows, work: Path, data: dict[str, Any], args: argparse.Namespace) -> None:
    vectors, doclens, chunks = data["vectors"], data["doclens"], search_bench.chunks
    dim = int(vectors.shape[1])
    if not out.have("exact"):
        t0 = time.perf_counter()
        exact = build_index(work / "exact", chunks(vectors, doclens), dim=dim, index_type="exact")
        out.add("exact", search_bench.measure("exhaustive exact MaxSim (fp16 vectors)", exact, data,
                                              time.perf_counter() - t0, {}, args.exact_latency_queries))
    if not out.have("plaid2"):
        t0 = time.perf_counter()
        plaid = build_index(work / "plaid2", chunks(vectors, doclens), dim=dim, index_type="plaid", nbits=2)
        out.add("plaid2", search_bench.measure(f"PLAID nbits=2 (K={plaid.num_centroids})", plaid, data,
                                               time.perf_counter() - t0, {}, args.latency_queries))


def qdrant_rows(out: Rows, work: Path, data: dict[str, Any], args: argparse.Namespace) -> None:
    vectors, doclens = data["vectors"], data["doclens"]
    dim, tokens = int(vectors.shape[1]), int(doclens.sum())
    for datatype, quantization in [("float32", None), ("float16", None), ("float16", "int8")]:
        key = f"qdrant-{datatype}-{quantization or 'none'}"
        sweep = args.candidates if (datatype, quantization) == ("float16", None) else []
        keys = [key] + [f"{key}-c{c}" for c in sweep]
        if all(k in out.saved for k in keys):
            for k in keys:
                out.have(k)
            continue
        folder = work / key
        shutil.rmtree(folder, ignore_errors=True)
        options = QdrantOptions(datatype=datatype, quantization=quantization)
        t0 = time.perf_counter()
        index = QdrantIndex.create(QdrantLocation(path=folder), dim=dim, options=options)
        add_to_qdrant(index, data["doc_ids"], vectors, doclens)
        build_s = time.perf_counter() - t0
        label = f"Qdrant embedded, {datatype}{' + int8 quantization' if quantization else ''}"
        rows = QdrantRows(index, folder, tokens, {d: i for i, d in enumerate(data["doc_ids"])})
        for k, candidates in zip(keys, [options.candidates, *sweep], strict=True):
            params = {} if k == key else {"candidates": candidates}
            out.add(k, search_bench.measure(f"{label}, candidates={candidates}", rows, data, build_s, params,
                                            args.latency_queries))
        index.close()


def side_by_side(args: argparse.Namespace, data: dict[str, Any]) -> str:
    """p50/p95 of PLAID nbits=2 and the Qdrant indexes of part 1, reopened from their folders and timed in
    turn query by query, so that all of them see the same machine load (the rows above were timed one index
    after the other)."""
    from lateragkit.index import load_index

    work = WORK / args.dataset
    doc_row = {d: i for i, d in enumerate(data["doc_ids"])}
    indexes: dict[str, Any] = {"PLAID nbits=2": load_index(work / "plaid2")}
    for key, label in [("qdrant-float16-none", "Qdrant float16"), ("qdrant-float16-int8", "Qdrant float16 + int8")]:
        indexes[f"{label}, candidates=200"] = QdrantRows(QdrantIndex.open(QdrantLocation(path=work / key)),
                                                         work / key, 0, doc_row)
    Q, M = data["Q"], data["Q_mask"]
    lengths = M.sum(1).tolist()
    lat: dict[str, list[float]] = {name: [] for name in indexes}
    for i in range(min(args.latency_queries, Q.shape[0])):
        q, m = Q[i : i + 1, : lengths[i]], M[i : i + 1, : lengths[i]]
        for name, index in indexes.items():
            if i == 0:
                index.search(q, m, 10)  # warm-up
            t0 = time.perf_counter()
            index.search(q, m, 10)
            lat[name].append(1000 * (time.perf_counter() - t0))
    for index in indexes.values():
        if isinstance(index, QdrantRows):
            index.index.close()
    lines = ["| index | p50 ms | p95 ms |", "|---|---:|---:|"]
    lines += [f"| {name} | {np.percentile(v, 50):.1f} | {np.percentile(v, 95):.1f} |" for name, v in lat.items()]
    return "\n".join(lines)


def dataset_rows(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str, str]:
    cache = search_bench.CACHE / args.dataset
    if not (cache / "ids.json").exists():
        raise SystemExit(f"no cached vectors in {cache}: run `python benchmarks/search.py --encode-only "
                         f"{args.dataset}` first (this benchmark never encodes)")
    data = search_bench.encode_cached(args.dataset)
    doclens = data["doclens"]
    dim, tokens = int(data["vectors"].shape[1]), int(doclens.sum())
    work = WORK / args.dataset
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{args.dataset}: {len(doclens)} passages, {tokens} tokens, dim {dim}, {data['Q'].shape[0]} queries",
          flush=True)
    out = Rows(WORK / f"rows-{args.dataset}.json", work, tokens, args.resume)
    baseline_rows(out, work, data, args)
    qdrant_rows(out, work, data, args)
    what = f"{args.dataset}: {len(doclens):,} passages, {tokens:,} token vectors (dim {dim})"
    reused = sum(r["key"] in out.saved for r in out.rows)
    if reused:
        what += (f" ({reused} of the {len(out.rows)} rows were timed by earlier runs of this command — an "
                 "interrupted one and its resumption — under other machine load; this run re-read their sizes "
                 "and timed the side-by-side latencies below)")
    return out.rows, what, side_by_side(args, data)


# --------------------------------------------------------------------------------------------------
# part 2: synthetic growth
# --------------------------------------------------------------------------------------------------
SYN_DIM, SYN_TOPICS = 128, 4096
SYN_BLOCK = 10_000  # passages generated and added per step (the resume granularity)


def synthetic_block(start: int, n: int, topics: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Passages start..start+n: 20-40 tokens, each a noisy copy of one of the passage's 4 topics.
    Deterministic per passage block (seeded by ``start``). Returns (float16 vectors, doclens, topics [n, 4])."""
    rng = np.random.default_rng(1_000_003 + start)
    lens = rng.integers(20, 41, size=n)
    own = rng.integers(0, len(topics), size=(n, 4))
    which = own[np.repeat(np.arange(n), lens), rng.integers(0, 4, size=int(lens.sum()))]
    v = topics[which] + 0.6 * rng.normal(size=(len(which), SYN_DIM)).astype(np.float32) / np.sqrt(SYN_DIM)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float16), lens.astype(np.int64), own


def synthetic_queries(topics: np.ndarray, own: np.ndarray, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    targets = rng.choice(len(own), n, replace=False)
    q = topics[own[targets][:, np.arange(32) % 4]] + 0.6 * rng.normal(size=(n, 32, SYN_DIM)) / np.sqrt(SYN_DIM)
    q /= np.linalg.norm(q, axis=2, keepdims=True)
    return torch.from_numpy(q.astype(np.float32)), torch.ones(n, 32, dtype=torch.bool)


class MemoryWatch:
    """Peak resident memory of this process (``VmRSS``, sampled every second by a daemon thread) and lowest
    ``MemAvailable`` of the machine since the last ``reset()``."""

    def __init__(self) -> None:
        self.peak_rss = 0
        self.min_available = 1 << 62
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _read(path: str, key: str) -> int:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self._read("/proc/self/status", "VmRSS"))
        self.min_available = min(self.min_available, self._read("/proc/meminfo", "MemAvailable"))

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def reset(self) -> None:
        self.peak_rss, self.min_available = 0, 1 << 62
        self.sample()

    def stop(self) -> None:
        self._stop.set()


class OneThread:
    """An index searched with one torch thread (the process's setting is restored after each call): shows
    how much of PLAID's latency on a busy machine is torch's thread pool waiting for a core."""

    def __init__(self, index: Any) -> None:
        self.index = index

    def search(self, Q: torch.Tensor, Q_mask: torch.Tensor, k: int) -> Any:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.index.search(Q, Q_mask, k)
        finally:
            torch.set_num_threads(threads)


def interleaved_latency(indexes: dict[str, Any], Q: torch.Tensor, M: torch.Tensor) -> dict[str, Any]:
    """Latency of one query per call (k=10) of every index, timed in turn query by query (the order rotates
    from one query to the next) so that all of them see the same machine load. Returns per index the list
    of milliseconds, and ``load`` (1-minute load averages sampled every 10 queries)."""
    names = list(indexes)
    for index in indexes.values():
        index.search(Q[:2], M[:2], 10)  # warm-up
    lat: dict[str, list[float]] = {name: [] for name in names}
    load: list[float] = []
    for i in range(Q.shape[0]):
        if i % 10 == 0:
            load.append(os.getloadavg()[0])
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t0 = time.perf_counter()
            indexes[name].search(Q[i : i + 1], M[i : i + 1], 10)
            lat[name].append(1000 * (time.perf_counter() - t0))
    load.append(os.getloadavg()[0])
    return {"ms": lat, "load": load}


def overlap(found: list[np.ndarray], truth: torch.Tensor) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)]))


class Synthetic:
    """Part 2's state: the growing embedded Qdrant index, the generated vectors so far, and the rows, saved to
    ``WORK/synthetic/state.json`` after every block of passages and every finished size, so that ``--resume``
    goes on from there (Qdrant upserts are idempotent: a block cut short is added again whole)."""

    def __init__(self, args: argparse.Namespace, where: str) -> None:
        rng = np.random.default_rng(7)
        self.topics = rng.normal(size=(SYN_TOPICS, SYN_DIM)).astype(np.float32)
        self.topics /= np.linalg.norm(self.topics, axis=1, keepdims=True)
        # a --no-write run (a trial) works apart, so that it never replaces the state a real run resumes from
        self.work = WORK / ("synthetic-no-write" if args.no_write else "synthetic")
        self.state_path = self.work / "state.json"
        self.args = args
        config = {"dim": SYN_DIM, "topics": SYN_TOPICS, "block": SYN_BLOCK, "queries": args.synthetic_queries,
                  "upsert_docs": UPSERT_DOCS}
        state = json.loads(self.state_path.read_text()) if args.resume and self.state_path.exists() else None
        if state is not None and state.get("config") != config:
            raise SystemExit(f"{self.state_path} was saved with {state.get('config')}, not {config}: "
                             "run without --resume to start again")
        if state is None:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work.mkdir(parents=True)
            state = {"config": config, "where": where, "qdrant_have": 0, "step_add_s": 0.0, "plaid_build_s": {},
                     "rows": []}
            self.qdrant = QdrantIndex.create(QdrantLocation(path=self.work / "qdrant"), dim=SYN_DIM)
        else:
            self.qdrant = QdrantIndex.open(QdrantLocation(path=self.work / "qdrant"))
            logger.info("resuming: %d passages in Qdrant, %d sizes done", state["qdrant_have"], len(state["rows"]))
        state.setdefault("where", where)  # the command (and machine) that started the measurement
        self.state, self.where = state, where
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None  # generated blocks, in order

    def held_blocks(self) -> list[tuple[int, int]]:
        """(start, passages) of every block Qdrant holds, in the order added: as saved, or (state of an older
        version of this script) rebuilt from the sizes reached, each step cut in SYN_BLOCK blocks from its start."""
        if "blocks" in self.state:
            return [(int(a), int(n)) for a, n in self.state["blocks"]]
        ends = sorted({r["passages"] for r in self.state["rows"]} | {self.state["qdrant_have"]})
        blocks, prev = [], 0
        for end in ends:
            blocks += [(a, min(SYN_BLOCK, end - a)) for a in range(prev, end, SYN_BLOCK)]
            prev = end
        return blocks

    def regenerate(self) -> None:
        """The vectors of the passages Qdrant already holds, generated again block by block exactly as they
        were added (a block's vectors depend on its start and length)."""
        blocks = self.held_blocks()
        self.state["blocks"] = [list(b) for b in blocks]
        self.parts = [synthetic_block(start, n, self.topics) for start, n in blocks]

    def save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.state_path)

    def grow_qdrant(self, size: int) -> None:
        """Add passages to the embedded Qdrant index until it holds ``size``; the seconds this step took are
        summed in ``state['step_add_s']`` (kept across an interruption)."""
        have = self.state["qdrant_have"]
        for start in range(have, size, SYN_BLOCK):
            v, lens, own = synthetic_block(start, min(SYN_BLOCK, size - start), self.topics)
            t0 = time.perf_counter()
            add_to_qdrant(self.qdrant, [f"p{start + i}" for i in range(len(lens))], v, lens)
            self.state["step_add_s"] += time.perf_counter() - t0
            assert self.parts is not None
            self.parts.append((v, lens, own))
            self.state["blocks"].append([start, len(lens)])
            self.state["qdrant_have"] = start + len(lens)
            self.save()
            logger.info("Qdrant: %d passages (%.0f s this step)", start + len(lens), self.state["step_add_s"])

    def plaid(self, size: int, vectors: np.ndarray, doclens: np.ndarray) -> tuple[Any, float]:
        """PLAID nbits=2 for ``size`` passages: built (and its build time saved), or reopened when an
        interrupted run had finished building it."""
        from lateragkit.index import load_index

        folder = self.work / f"plaid-{size}"
        built = self.state["plaid_build_s"].get(str(size))
        if built is not None and folder.exists():
            return load_index(folder), float(built)
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        plaid = build_index(folder, search_bench.chunks(vectors, doclens), dim=SYN_DIM, index_type="plaid", nbits=2)
        build_s = time.perf_counter() - t0
        self.state["plaid_build_s"][str(size)] = build_s
        self.save()
        return plaid, build_s

    def measure(self, size: int, memory: MemoryWatch) -> dict[str, Any]:
        if self.parts is None:
            self.regenerate()
        self.grow_qdrant(size)
        assert self.parts is not None
        vectors = np.concatenate([p[0] for p in self.parts])
        doclens = np.concatenate([p[1] for p in self.parts])
        tokens = int(doclens.sum())
        Q, M = synthetic_queries(self.topics, np.concatenate([p[2] for p in self.parts]),
                                 self.args.synthetic_queries, seed=size)
        logger.info("%d passages: exact MaxSim top 10", size)
        truth = torch.topk(scoring.maxsim(Q, M, vectors, doclens), 10, dim=1).indices
        logger.info("%d passages: PLAID build", size)
        plaid, plaid_build = self.plaid(size, vectors, doclens)
        q_rows = QdrantRows(self.qdrant, self.work / "qdrant", tokens, {f"p{i}": i for i in range(size)})
        logger.info("%d passages: timing", size)
        timed = interleaved_latency({"plaid": plaid, "plaid1": OneThread(plaid), "qdrant": q_rows}, Q, M)
        memory.sample()
        row = {
            "passages": size, "tokens": tokens, "plaid_build_s": plaid_build, "qdrant_add_s": self.state["step_add_s"],
            "load_min": min(timed["load"]), "load_max": max(timed["load"]),
            "plaid_overlap": overlap([p for _, p in plaid.search(Q, M, 10)], truth),
            "qdrant_overlap": overlap([p for _, p in q_rows.search(Q, M, 10)], truth),
            "plaid_bpt": tree_bytes(self.work / f"plaid-{size}") / tokens,
            "qdrant_bpt": tree_bytes(self.work / "qdrant") / tokens,
            "peak_rss": memory.peak_rss, "min_available": memory.min_available,
        }
        for name, ms in timed["ms"].items():
            row[f"{name}_p50"], row[f"{name}_p95"] = float(np.percentile(ms, 50)), float(np.percentile(ms, 95))
        del plaid
        shutil.rmtree(self.work / f"plaid-{size}", ignore_errors=True)
        return row

    def run(self, on_row: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
        """Measure every size not measured yet, calling ``on_row(state)`` after each; when every size was
        measured already (``--resume`` after a finished run), only ``on_row`` runs: the text is rendered again
        from the saved rows, under the command that measured them."""
        rows = self.state["rows"]
        measured = 0
        memory = MemoryWatch()
        try:
            for size in sorted(self.args.sizes):
                if any(r["passages"] == size for r in rows):
                    continue
                if size < self.state["qdrant_have"]:
                    raise SystemExit(f"size {size} is below the {self.state['qdrant_have']} passages already in "
                                     "Qdrant: run without --resume to start again")
                memory.reset()
                if self.args.resume and measured == 0 and rows:
                    self.state.setdefault("continued_by", []).append(self.where)
                rows.append(self.measure(size, memory))
                measured += 1
                self.state["step_add_s"] = 0.0
                self.save()
                print(synthetic_table(rows), flush=True)
                on_row(self.state)
            if measured == 0:
                on_row(self.state)
        finally:
            memory.stop()
            self.qdrant.close()
        return rows


def synthetic_table(rows: list[dict[str, Any]]) -> str:
    gib = 1 << 30
    lines = ["| passages | tokens | PLAID nbits=2 build s | Qdrant add s (this step) | PLAID p50 / p95 ms | "
             "PLAID, 1 torch thread, p50 / p95 ms | Qdrant p50 / p95 ms | load avg (1 min) while timed | "
             "PLAID top-10 ∩ exact | Qdrant top-10 ∩ exact | PLAID B/token | Qdrant B/token | peak RSS GiB | "
             "lowest MemAvailable GiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['passages']:,} | {r['tokens']:,} | {r['plaid_build_s']:.0f} | {r['qdrant_add_s']:.0f} | "
                     f"{r['plaid_p50']:.1f} / {r['plaid_p95']:.1f} | {r['plaid1_p50']:.1f} / {r['plaid1_p95']:.1f} | "
                     f"{r['qdrant_p50']:.1f} / {r['qdrant_p95']:.1f} | "
                     f"{r['load_min']:.1f}–{r['load_max']:.1f} | {r['plaid_overlap']:.3f} | "
                     f"{r['qdrant_overlap']:.3f} | {r['plaid_bpt']:.0f} | {r['qdrant_bpt']:.0f} | "
                     f"{r['peak_rss'] / gib:.1f} | {r['min_available'] / gib:.1f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
def checks(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = []
    for r in rows:
        if r["name"].startswith("Qdrant") and "candidates=200" in r["name"]:
            ok = abs(r["ndcg10"] - base["ndcg10"]) <= 0.01
            lines.append(f"- {'PASS' if ok else 'FAIL'}: {r['name']} nDCG@10 within 0.01 of exact MaxSim "
                         f"({r['ndcg10']:.4f} vs {base['ndcg10']:.4f})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--skip-dataset", action="store_true", help="reuse the dataset part of the last run")
    ap.add_argument("--skip-synthetic", action="store_true", help="reuse the synthetic part of the last run")
    ap.add_argument("--resume", action="store_true",
                    help="go on from what an interrupted run saved (part 1: its rows; part 2: its sizes and "
                         "Qdrant index)")
    ap.add_argument("--candidates", type=int, nargs="*", default=[50, 100, 500])
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--exact-latency-queries", type=int, default=20)
    ap.add_argument("--sizes", type=int, nargs="+", default=[25_000, 50_000, 100_000, 200_000])
    ap.add_argument("--synthetic-queries", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--no-write", action="store_true",
                    help="print only: leave RESULTS.md and the parts kept for it alone (part 2 then works in "
                         "benchmarks/cache/qdrant/synthetic-no-write/)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = " ".join(["python benchmarks/qdrant.py", *sys.argv[1:]])
    cpu = platform.processor() or platform.machine()
    where = (f"`{command}` — {os.cpu_count()} CPU cores ({cpu}), torch threads {torch.get_num_threads()}, "
             f"qdrant-edge-py {_version('qdrant-edge-py')}, {time.strftime('%Y-%m-%d')}; other jobs shared the CPU, "
             "so compare rows of one run, not absolute times.")
    if not args.skip_dataset:
        rows, what, latency = dataset_rows(args)
        save_part("dataset", "\n".join([
            f"### {args.dataset}: quality, latency, size\n", where + "\n",
            f"{what}; the same cached all-MiniLM-L6-v2 vectors for every row. Latency: one query per call, k=10, "
            "query encoding excluded; QPS: one batched call over all queries. Bytes/token: every file under the "
            "index folder / token vectors, as apparent size and as allocated disk blocks (Qdrant preallocates "
            "sparse memory-mapped files and WAL segments). Qdrant: one point per passage, token vectors as a "
            "MAX_SIM multivector (no HNSW), their mean as an HNSW vector; first stage `candidates` points by "
            "HNSW (`prefetch`), then exact MaxSim on them in the same query.\n",
            table(rows) + "\n", checks(rows) + "\n",
            f"Latency side by side: the same {args.latency_queries} queries, each sent to every index in turn "
            "(so that all see the same load), k=10, one query per call:\n", latency + "\n"]))
    if not args.skip_synthetic:
        def on_row(state: dict[str, Any]) -> None:
            text = synthetic_text(args, state)
            if args.no_write:
                print(text, flush=True)
            else:
                save_part("synthetic", text)
                write_results(args)

        Synthetic(args, where).run(on_row)
    else:
        write_results(args)


def synthetic_text(args: argparse.Namespace, state: dict[str, Any]) -> str:
    rows = state["rows"]
    done = {r["passages"] for r in rows} >= set(args.sizes)
    progress = "" if done else (f"**Run in progress:** {len(rows)} of {len(set(args.sizes))} sizes measured so "
                                "far; this section is rewritten after each size.\n")
    resumed = "".join(f"\n\nContinued after an interruption by {w} (the build and add seconds of a step that was "
                      "cut short are summed over both runs)." for w in state.get("continued_by", []))
    return "\n".join([
        "### Synthetic growth: p50 latency against collection size\n", state["where"] + resumed + "\n", progress,
        f"Clustered random token vectors, dim {SYN_DIM}, 20-40 tokens per passage, {args.synthetic_queries} "
        "queries of 32 tokens; k=10, one query per call. PLAID nbits=2 is built for each size; the embedded "
        "Qdrant index (float16, candidates=200) grows by adding the new passages (`upsert_documents` of "
        f"{UPSERT_DOCS} passages per call). PLAID and Qdrant are timed side by side: each query goes to both "
        "in turn (the order rotates), so both see the same machine load; PLAID is timed twice, with the "
        "process's torch threads and with one torch thread (a thread pool waiting for a busy core is a large "
        "part of PLAID's latency on a shared machine); the load-average column is the "
        "range of the 1-minute load average sampled every 10 queries (2 cores: above 2 the CPU was "
        "oversubscribed). 'top-10 ∩ exact': share of exact MaxSim's top 10 returned. B/token: apparent size of "
        "every file / token vectors. Peak RSS: this process's resident memory during the step (generation, "
        "exact MaxSim, PLAID build, Qdrant adds and timing), sampled every second; lowest MemAvailable: the "
        "machine's, over the same step (24 GiB, shared with other jobs).\n",
        synthetic_table(rows) + "\n"])


def write_results(args: argparse.Namespace) -> None:
    parts = [WORK / f"part-{name}.md" for name in PARTS]
    out = "\n".join([f"{SECTION}\n", *(p.read_text(encoding="utf-8") for p in parts if p.exists())])
    print(out, flush=True)
    if not args.no_write:
        search_bench.SECTION = SECTION
        search_bench.write_section(out)
        print(f"wrote {search_bench.RESULTS} ({SECTION})", flush=True)


def save_part(name: str, text: str) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / f"part-{name}.md").write_text(text, encoding="utf-8")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
