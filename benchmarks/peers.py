"""Peers benchmark: lateragkit's PLAID index against fast-plaid, on the same cached vectors, in one run.

    python benchmarks/peers.py --setup           # once: fast-plaid in its own virtual environment
    python benchmarks/peers.py                   # SciFact, 1 and 2 threads; writes ## Peers in RESULTS.md
    python benchmarks/peers.py --threads 2 --latency-queries 30

fast-plaid (PyPI ``fast-plaid``, a Rust/libtorch extension) is pinned to one torch version per wheel, so it
lives in its own virtual environment, ``benchmarks/.cache/venv-peers`` (git-ignored; ``--venv`` to change),
and never in the project's: ``--setup`` creates it and installs ``fast-plaid==FAST_PLAID_VERSION`` (which
pulls torch 2.11.0 from PyPI — the CUDA build with its NVIDIA libraries, about 5 GB; it runs on the CPU
here). The benchmark runs fast-plaid in a subprocess of that environment (this file in ``--worker`` mode,
which imports only numpy, torch and fast_plaid) on the SciFact MiniLM token vectors cached by
``benchmarks/search.py`` (``encode_cached``), right after our index on the same vectors, for each thread
count.

Measured for each system and thread count: build seconds (ours: `build_index`; fast-plaid: ``create``,
k-means included), bytes per token on disk, nDCG@10 and Recall@100 over the judged test queries, p50
latency of one query per call at k=10 and at k=100 (each query at its own length, query encoding excluded),
and queries/s of one call with a batch of queries at k=100. fast-plaid is searched with
``n_ivf_probe=4, n_full_scores=1024`` and with its defaults (8 / 4096); ours with `load_index` and the
default parameters (nbits=2 for both).

Threads: ``torch.set_num_threads(T)`` in both processes, and OMP/MKL/OpenBLAS/Rayon thread variables set to T
for the worker. fast-plaid's batch search on CPU can also split the queries over joblib threads
(``n_processes``); at T > 1 both ways are measured by default (torch threads T and one job; T jobs of one
torch thread each) and the faster counts (``--fp-batch-modes``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import folder_bytes  # benchmarks/common.py (standard library only: the worker imports it too)

HERE = Path(__file__).resolve().parent
VENV = HERE / ".cache" / "venv-peers"
WORK = HERE / "cache" / "peers"
SEARCH_CACHE = HERE / "cache" / "search"
SECTION = "## Peers"
FAST_PLAID_VERSION = "1.7.0.2110"  # the wheel built for torch 2.11.0
FP_SETTINGS = [(4, 1024), (8, 4096)]  # (n_ivf_probe, n_full_scores); the second is fast-plaid's default
REUSED_NOTE = (" Build times: measured when each index was built, in this run or an earlier one (--reuse-builds "
               "searches the indexes an earlier run left).")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")


# --------------------------------------------------------------------------------------------------
# shared by both processes (numpy and torch only)
# --------------------------------------------------------------------------------------------------
def load_vectors(dataset: str) -> dict[str, Any]:
    """The cached token vectors of ``search.encode_cached`` read with numpy alone (the worker has no lateragkit)."""
    folder = SEARCH_CACHE / dataset
    Q = np.load(folder / "Q.npy")
    mask = np.load(folder / "Q_mask.npy")
    return {
        "vectors": np.load(folder / "doc_vectors.npy", mmap_mode="r"),
        "doclens": np.load(folder / "doclens.npy"),
        "queries": [torch.from_numpy(np.ascontiguousarray(Q[i][mask[i]])) for i in range(Q.shape[0])],
    }


def percentile_ms(seconds: list[float]) -> float:
    return 1000 * float(np.percentile(seconds, 50))


FIT_PASSAGES = 1000


def centroid_fit(data: dict[str, Any], centroids: np.ndarray, codes_of: Any) -> float:
    """Mean cosine of the token vectors of ``FIT_PASSAGES`` fixed passages to the centroid their index assigned
    them (``codes_of(rows)``: their codes, token after token): how well the codec's k-means fits the
    collection, a steadier measure than nDCG over a few hundred queries."""
    doclens = data["doclens"]
    starts = np.concatenate([[0], np.cumsum(doclens)])
    rows = np.sort(np.random.default_rng(0).choice(doclens.size, min(FIT_PASSAGES, doclens.size), replace=False))
    x = np.concatenate([np.asarray(data["vectors"][starts[r] : starts[r + 1]], dtype=np.float32) for r in rows])
    c = np.asarray(centroids, dtype=np.float32)[np.asarray(codes_of(rows), dtype=np.int64)]
    cos = (x * c).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(c, axis=1))
    return float(cos.mean())


def fast_plaid_fit(data: dict[str, Any], folder: Path) -> float:
    """`centroid_fit` of a fast-plaid index, from its files (``centroids.npy``; ``merged_codes.npy``: every
    token's code in passage order)."""
    doclens = data["doclens"]
    starts = np.concatenate([[0], np.cumsum(doclens)])
    codes = np.load(folder / "merged_codes.npy", mmap_mode="r")
    return centroid_fit(data, np.load(folder / "centroids.npy"),
                        lambda rows: np.concatenate([codes[starts[r] : starts[r + 1]] for r in rows]))


def latencies(search_one: Any, queries: list[torch.Tensor], k: int, n: int) -> list[float]:
    """Wall time of ``search_one(query, k)`` for the first ``n`` queries, one per call."""
    out = []
    for q in queries[:n]:
        t0 = time.perf_counter()
        search_one(q, k)
        out.append(time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------------------------------
# fast-plaid (worker process, in the peers virtual environment)
# --------------------------------------------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    from fast_plaid import search as fp_search

    threads = int(args.threads[0])
    torch.set_num_threads(threads)
    data = load_vectors(args.dataset)
    folder = Path(args.index)
    built = folder.parent / f"{folder.name}.build.json"
    if args.reuse_builds and built.exists():
        build_s = json.loads(built.read_text())["build_s"]
        index = fp_search.FastPlaid(index=str(folder), device="cpu")
    else:
        vectors, doclens = data["vectors"], data["doclens"]
        starts = np.concatenate([[0], np.cumsum(doclens)])
        docs = [torch.from_numpy(np.asarray(vectors[starts[i] : starts[i + 1]], dtype=np.float32))
                for i in range(len(doclens))]
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        index = fp_search.FastPlaid(index=str(folder), device="cpu")
        index.create(documents_embeddings=docs, nbits=2)
        build_s = time.perf_counter() - t0
        built.write_text(json.dumps({"build_s": build_s}))
        print(f"fast-plaid create: {build_s:.0f} s", flush=True)
        del docs
    queries = data["queries"]
    batch = queries[: args.batch_queries]
    out: dict[str, Any] = {"build_s": build_s, "bytes": folder_bytes(folder), "settings": []}
    for probe, full in FP_SETTINGS:
        def one(q: torch.Tensor, k: int, probe: int = probe, full: int = full) -> Any:
            return index.search(q[None], top_k=k, n_ivf_probe=probe, n_full_scores=full, show_progress=False,
                                n_processes=1)

        one(queries[0], 10)  # warm-up: the first search loads the index
        row: dict[str, Any] = {"n_ivf_probe": probe, "n_full_scores": full,
                               "lat10": latencies(one, queries, 10, args.latency_queries),
                               "lat100": latencies(one, queries, 100, args.latency_queries)}
        modes = {"torch": [(threads, 1)], "jobs": [(1, threads)],
                 "both": [(threads, 1)] + ([(1, threads)] if threads > 1 else [])}[args.fp_batch_modes]
        row["batch"] = []
        for torch_threads, jobs in modes:  # (torch threads, joblib jobs)
            torch.set_num_threads(torch_threads)
            t0 = time.perf_counter()
            hits = index.search(batch, top_k=100, n_ivf_probe=probe, n_full_scores=full, show_progress=False,
                                n_processes=jobs)
            row["batch"].append({"torch_threads": torch_threads, "jobs": jobs, "seconds": time.perf_counter() - t0})
            row["hits100"] = [[int(pid) for pid, _ in h] for h in hits]
        torch.set_num_threads(threads)
        out["settings"].append(row)
        print(f"fast-plaid {probe}/{full}: p50 k=100 {percentile_ms(row['lat100']):.0f} ms", flush=True)
    Path(args.out).write_text(json.dumps(out))


def build_folder(args: argparse.Namespace, system: str, threads: int) -> Path:
    """The index folder of ``system`` ("lateragkit" / "fast-plaid") for this thread count. With --reuse-builds
    and no build at this thread count, an earlier build at another thread count (the same vectors and
    parameters: only the search threads differ; its build time is reported)."""
    own = WORK / args.dataset / f"{system}-t{threads}"
    if args.reuse_builds and not (own.parent / f"{own.name}.build.json").exists():
        for other in sorted((WORK / args.dataset).glob(f"{system}-t*.build.json")):
            return other.parent / other.name[: -len(".build.json")]
    return own


def run_worker(args: argparse.Namespace, data: dict[str, Any], threads: int) -> dict[str, Any]:
    python = Path(args.venv) / "bin" / "python"
    if not python.exists():
        sys.exit(f"no fast-plaid environment at {args.venv}: run `python benchmarks/peers.py --setup` first")
    out = WORK / args.dataset / f"fast-plaid-t{threads}.json"
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARS}}
    cmd = [str(python), __file__, "--worker", "--dataset", args.dataset, "--threads", str(threads),
           "--latency-queries", str(args.latency_queries), "--batch-queries", str(args.batch_queries),
           "--fp-batch-modes", args.fp_batch_modes] + (["--reuse-builds"] if args.reuse_builds else []) + [
           "--index", str(build_folder(args, "fast-plaid", threads)), "--out", str(out)]
    subprocess.run(cmd, env=env, check=True)
    return {**json.loads(out.read_text()), "fit": fast_plaid_fit(data, build_folder(args, "fast-plaid", threads))}


def setup(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", f"fast-plaid=={FAST_PLAID_VERSION}"], check=True)


# --------------------------------------------------------------------------------------------------
# lateragkit (this process)
# --------------------------------------------------------------------------------------------------
def run_ours(args: argparse.Namespace, data: dict[str, Any], threads: int) -> dict[str, Any]:
    import search as search_bench

    from lateragkit.index import build_index, load_index

    torch.set_num_threads(threads)
    vectors, doclens = data["vectors"], data["doclens"]
    folder = build_folder(args, "lateragkit", threads)
    built = folder.parent / f"{folder.name}.build.json"
    if args.reuse_builds and built.exists():
        build_s = json.loads(built.read_text())["build_s"]
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        build_index(folder, search_bench.chunks(vectors, doclens), dim=int(vectors.shape[1]), index_type="plaid",
                    nbits=2)
        build_s = time.perf_counter() - t0
        built.write_text(json.dumps({"build_s": build_s}))
        print(f"lateragkit build: {build_s:.0f} s", flush=True)
    index = load_index(folder)
    queries = data["queries"]

    def one(q: torch.Tensor, k: int) -> Any:
        return index.search(q[None], torch.ones(1, q.shape[0], dtype=torch.bool), k)

    one(queries[0], 10)  # warm-up
    lat10 = latencies(one, queries, 10, args.latency_queries)
    lat100 = latencies(one, queries, 100, args.latency_queries)
    Q, M = data["Q"][: args.batch_queries], data["Q_mask"][: args.batch_queries]
    t0 = time.perf_counter()
    hits100 = index.search(Q, M, 100)
    batch_s = time.perf_counter() - t0
    hits10 = index.search(Q, M, 10)
    print(f"lateragkit: p50 k=100 {percentile_ms(lat100):.0f} ms", flush=True)
    fit = centroid_fit(data, index.codec.centroids.float().cpu().numpy(),
                       lambda rows: index._token_block(torch.from_numpy(rows)).codes.cpu().numpy())
    return {"build_s": build_s, "bytes": folder_bytes(folder), "fit": fit, "lat10": lat10, "lat100": lat100,
            "batch_s": batch_s, "hits10": [[int(p) for p in pids] for _, pids in hits10],
            "hits100": [[int(p) for p in pids] for _, pids in hits100]}


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def quality(hits10: list[list[int]], hits100: list[list[int]], data: dict[str, Any]) -> tuple[float, float]:
    from lateragkit.evaluation import ndcg_at_k, recall_at_k

    doc_ids, qids = data["doc_ids"], data["query_ids"][: len(hits100)]
    qrels = {q: data["qrels"][q] for q in qids if q in data["qrels"]}  # the judged queries that were searched

    def run(hits: list[list[int]]) -> dict[str, list[str]]:
        return {q: [doc_ids[p] for p in pids] for q, pids in zip(qids, hits, strict=False)}

    ndcg, recall = ndcg_at_k(run(hits10), qrels, 10), recall_at_k(run(hits100), qrels, 100)
    assert isinstance(ndcg, float) and isinstance(recall, float)
    return ndcg, recall


def rows_for(threads: int, ours: dict[str, Any], fp: dict[str, Any], data: dict[str, Any]) -> list[dict[str, Any]]:
    tokens = int(np.sum(data["doclens"]))
    n_batch = len(ours["hits100"])
    nd, rc = quality(ours["hits10"], ours["hits100"], data)
    nd100, _ = quality([h[:10] for h in ours["hits100"]], ours["hits100"], data)
    rows = [{"name": "lateragkit PLAID nbits=2 (defaults)", "threads": threads, "build_s": ours["build_s"],
             "bpt": ours["bytes"] / tokens, "fit": ours["fit"], "ndcg": nd, "ndcg100": nd100, "recall": rc,
             "p50_10": percentile_ms(ours["lat10"]),
             "p50_100": percentile_ms(ours["lat100"]), "qps": n_batch / ours["batch_s"], "batch_note": ""}]
    for s in fp["settings"]:
        best = min(s["batch"], key=lambda b: b["seconds"])
        nd, rc = quality([h[:10] for h in s["hits100"]], s["hits100"], data)
        rows.append({"name": f"fast-plaid {FAST_PLAID_VERSION} nbits=2, n_ivf_probe={s['n_ivf_probe']}, "
                             f"n_full_scores={s['n_full_scores']}", "threads": threads, "build_s": fp["build_s"],
                     "bpt": fp["bytes"] / tokens, "fit": fp["fit"], "ndcg": nd, "ndcg100": nd, "recall": rc,
                     "p50_10": percentile_ms(s["lat10"]),
                     "p50_100": percentile_ms(s["lat100"]), "qps": n_batch / best["seconds"],
                     "batch_note": f"{best['torch_threads']} torch thr × {best['jobs']} job"
                                   + ("s" if best["jobs"] > 1 else "")})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| system | threads | build s | B/token | centroid fit | nDCG@10 (k=10 / k=100) | R@100 | p50 k=10 ms | "
             "p50 k=100 ms | batch k=100 q/s | ours faster: p50 k=10 / k=100 / batch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ours = next(o for o in rows if o["threads"] == r["threads"] and o["name"].startswith("lateragkit"))
        ratio = ("—" if r is ours else f"{r['p50_10'] / ours['p50_10']:.1f}× / {r['p50_100'] / ours['p50_100']:.1f}× "
                 f"/ {ours['qps'] / r['qps']:.1f}×")
        note = f" ({r['batch_note']})" if r["batch_note"] else ""
        nd = f"{r['ndcg']:.4f}" if r["ndcg"] == r["ndcg100"] else f"{r['ndcg']:.4f} / {r['ndcg100']:.4f}"
        lines.append(f"| {r['name']} | {r['threads']} | {r['build_s']:.0f} | {r['bpt']:.1f} | {r['fit']:.4f} | {nd} | "
                     f"{r['recall']:.3f} | {r['p50_10']:.1f} | {r['p50_100']:.1f} | {r['qps']:.2f}{note} | {ratio} |")
    return "\n".join(lines)


def checks(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each PASS/FAIL with the measured figure."""
    out = []
    by = {(r["name"].split(",")[-1].strip() if "fast" in r["name"] else "ours", r["threads"]): r for r in rows}
    threads = sorted({r["threads"] for r in rows})
    for t in threads:
        ours = by[("ours", t)]
        for key in [k for k in by if k[1] == t and k[0] != "ours"]:
            fp = by[key]
            label = f"{t} thread{'s' if t > 1 else ''}, vs fast-plaid n_ivf_probe={fp['name'].split('probe=')[1]}"
            for what, ratio in (("p50 k=10", fp["p50_10"] / ours["p50_10"]),
                                ("p50 k=100", fp["p50_100"] / ours["p50_100"]),
                                ("batch q/s", ours["qps"] / fp["qps"])):
                out.append(f"- {'PASS' if ratio >= 10 else 'FAIL'}: {what} ≥ 10× ({label}): {ratio:.1f}×")
            out.append(f"- {'PASS' if ours['ndcg'] >= fp['ndcg'] else 'FAIL'}: nDCG@10 of our k=10 search ≥ "
                       f"fast-plaid's ({label}): {ours['ndcg']:.4f} vs {fp['ndcg']:.4f}")
            quality_ok = ours["ndcg100"] >= fp["ndcg"] and ours["recall"] >= fp["recall"]
            out.append(f"- {'PASS' if quality_ok else 'FAIL'}: nDCG@10 and R@100 of our k=100 search ≥ fast-plaid's "
                       f"({label}): {ours['ndcg100']:.4f}/{ours['recall']:.3f} vs {fp['ndcg']:.4f}/{fp['recall']:.3f}")
        fp_build = next(r["build_s"] for r in rows if r["threads"] == t and r is not ours)
        ratio = fp_build / ours["build_s"]
        out.append(f"- {'PASS' if ratio >= 5 else 'FAIL'}: build ≥ 5× faster than fast-plaid create() ({t} thr): "
                   f"{ratio:.1f}×")
        one_rate = 1000 / ours["p50_100"]
        out.append(f"- {'PASS' if ours['qps'] >= 3 * one_rate else 'FAIL'}: batch ≥ 3× our one-at-a-time rate "
                   f"({t} thr, k=100): {ours['qps']:.2f} vs {one_rate:.2f} q/s ({ours['qps'] / one_rate:.1f}×)")
    if len(threads) > 1 and 1 in threads and 2 in threads:
        one, two = by[("ours", 1)], by[("ours", 2)]
        for what, ratio in (("p50 k=10", one["p50_10"] / two["p50_10"]),
                            ("p50 k=100", one["p50_100"] / two["p50_100"]), ("batch q/s", two["qps"] / one["qps"])):
            verdict = "PASS" if ratio >= 1.7 else "FAIL"
            out.append(f"- {verdict}: ours, 2 threads ≥ 1.7× 1 thread ({what}): {ratio:.2f}×")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--latency-queries", type=int, default=50, help="queries timed one per call, per k")
    ap.add_argument("--batch-queries", type=int, default=300, help="queries in the batched k=100 call")
    ap.add_argument("--fp-batch-modes", choices=["both", "torch", "jobs"], default="both",
                    help="fast-plaid's batch at T threads: T torch threads and one job, T jobs of one torch thread, "
                         "or both (the faster counts)")
    ap.add_argument("--reuse-builds", action="store_true",
                    help="search the indexes (and report the build times) of an earlier run instead of building")
    ap.add_argument("--venv", default=str(VENV))
    ap.add_argument("--setup", action="store_true", help="create the fast-plaid virtual environment and exit")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.setup:
        setup(Path(args.venv))
        return
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    import search as search_bench
    from profile_plaid import write_results

    data = {**search_bench.encode_cached(args.dataset), **load_vectors(args.dataset)}
    rows: list[dict[str, Any]] = []
    for threads in args.threads:
        ours = run_ours(args, data, threads)
        fp = run_worker(args, data, threads)
        rows.extend(rows_for(threads, ours, fp, data))
        print(table(rows), flush=True)
    text = report(args, data, rows)
    print(text)
    if not args.no_write:
        write_results(SECTION, text)
        print(f"wrote {search_bench.RESULTS} ({SECTION})")


def report(args: argparse.Namespace, data: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    command = " ".join(["python benchmarks/peers.py", *sys.argv[1:]])
    doclens = data["doclens"]
    n_batch = min(args.batch_queries, len(data["queries"]))
    return (
        f"{SECTION}\n\n"
        f"`{command}` — {args.dataset}: {len(doclens):,} passages, {int(np.sum(doclens)):,} cached MiniLM token "
        f"vectors (dim {int(data['vectors'].shape[1])}), the same for both systems, run one after the other per "
        f"thread count. {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end (other jobs "
        f"shared the machine: compare rows of one thread count). lateragkit: `build_index(index_type='plaid', "
        f"nbits=2)`, `load_index`, default search parameters, torch {torch.__version__}. fast-plaid "
        f"{FAST_PLAID_VERSION} (torch 2.11.0, own virtual environment, CPU), `create(nbits=2)` with its defaults. "
        f"p50: one query per call, {args.latency_queries} queries, each at its own length, query encoding "
        f"excluded. Batch: one call with {n_batch} queries at k=100 (nDCG@10 and R@100 are over these queries). "
        f"nDCG@10: ours from a k=10 search (its own, cheaper parameters: 32 passages scored exactly) and from the "
        f"top 10 of the k=100 search (256 scored exactly, as fast-plaid's n_full_scores=1024 does), fast-plaid "
        f"from the top 10 of its k=100 search (its candidate stages do not depend on k); R@100 from the k=100 "
        f"batch. B/token: every file of the index folder / tokens. Centroid fit: mean cosine of the token vectors "
        f"of {FIT_PASSAGES:,} fixed passages to the centroid each index assigned them (`centroid_fit`)."
        f"{REUSED_NOTE if args.reuse_builds else ''}\n\n"
        f"{table(rows)}\n\n" + "\n".join(checks(rows)) + "\n"
    )


if __name__ == "__main__":
    main()
