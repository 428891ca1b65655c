"""Stage-by-stage time of lateragkit's PLAID search on SciFact, and its exact stage against decompression.

    python benchmarks/profile_plaid.py                      # SciFact, one torch thread, 100 queries
    python benchmarks/profile_plaid.py --queries 300 --threads 1
    python benchmarks/profile_plaid.py --baseline /tmp/old  # beside the stages of an older checkout

Builds (once, then reuses) a PLAID nbits=2 index of the cached SciFact MiniLM vectors with the public
`build_index` / `load_index` (cache: ``benchmarks/cache/profile/``), then searches one query at a time at
k=10 and k=100 with the default parameters and times each stage:

  centroid scores · candidate generation (IVF probe) · pruned centroid interaction · full centroid
  interaction · token gathering · residual scoring · decompression · exact MaxSim · top-k · other (what no
  stage accounts for)

The stages are found from outside, by introspection: every function or method of ``lateragkit.index.*`` and
``lateragkit.scoring`` whose name matches a stage pattern (``STAGES``) is wrapped with a timer (plus
``torch.topk``). Each stage gets the time spent in its functions minus the time of wrapped functions they
call (exclusive time), so nested stages are not counted twice and the stage times add up to the search time;
a function no pattern matches (``scoring.segment_max``, ``ResidualCodec.residuals``) counts in the stage of
its caller. The script prints which functions it wrapped; a stage no function matches shows as "—" (its time
then lands in its caller's stage or in "other"). The query-centroid GEMM is inline in the search method
today: it is timed apart on the same shapes and taken out of "other".

Second part: the exact stage on the same candidate passages (each query's ``cands``, captured from the
search's `PlaidSearch._exact_scores` call) computed two ways: `decompress_rows` of all candidates at once +
`scoring.maxsim` (the stage before: one pass over ~100 MB at k=100), and the search's own exact stage
(`PlaidSearch._exact_scores`: cache-sized token blocks scored from the residuals, no decompression). Also a
batch: the queries' exact stages one `_exact_scores` call at a time vs one call for all of them; and whole
k=100 searches, one call per query vs one batched call (``--rates``).

``--baseline DIR`` profiles the stages of the lateragkit package in ``DIR`` (an earlier checkout) first, in a
subprocess, with the same wrapping code: a function one package lacks is simply not wrapped there.

Prints the tables and writes them under ``## PLAID profile`` in ``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import os
import pkgutil
import platform
import re
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
if "--lateragkit" in sys.argv:  # profile another checkout of the library (the baseline of --baseline)
    sys.path.insert(0, sys.argv[sys.argv.index("--lateragkit") + 1])
    # imported now, before benchmarks/search.py puts this checkout first on sys.path and imports it
    import lateragkit  # noqa: E402, F401

import results_file  # noqa: E402
import search as search_bench  # noqa: E402

from lateragkit import scoring  # noqa: E402
from lateragkit.index import build_index, load_index  # noqa: E402

SECTION = "## PLAID profile"
CACHE = HERE / "cache" / "profile"
REPEATS = 3  # default runs of each exact-stage variant; the fastest counts
CAPTURED_ARG = "cands"  # the argument of the exact stage (`_exact_scores`) holding each query's candidate rows

# (stage, pattern on the function's name): the first match wins; also the order of the stage table
STAGES: list[tuple[str, str]] = [
    ("centroid scores", r"centroid_scores|score_centroids|query_centroids"),
    ("candidate generation", r"^_?candidates$|^_?probe$|candidate_gen|ivf_probe|ivf_lookup"),
    ("pruned interaction", r"pruned"),
    ("full centroid interaction", r"centroid_interaction|full_interaction"),
    ("token gathering", r"^_?token_block$"),
    ("residual scoring", r"^token_scores$"),
    ("decompression", r"decompress"),
    ("exact MaxSim", r"^maxsim$|exact_scores|pair_scores|query_scores|^_?exact_stage$|^_?exact$"),
    ("top-k", r"^topk$|^_results$|^_?top_k$"),
]
STAGE_NAMES = [s for s, _ in STAGES] + ["other"]


# --------------------------------------------------------------------------------------------------
# instrumentation
# --------------------------------------------------------------------------------------------------
class StageTimer:
    """Exclusive wall time per stage of wrapped functions; records the candidate rows (``CAPTURED_ARG``) of
    the exact-stage functions that take them (the passages that reach the exact stage)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self.found: list[str] = []
        self.captured_rows: list[torch.Tensor] = []
        self.stages_found: set[str] = set()
        self._stack: list[float] = []
        self._undo: list[tuple[Any, str, Any]] = []

    def reset(self) -> None:
        self.totals.clear()
        self.captured_rows.clear()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _capture(self, args: tuple, kwargs: dict[str, Any], at: int) -> None:
        """Keep the candidate rows passed to an exact-stage function (argument ``at``), outside nested calls."""
        cands = kwargs.get(CAPTURED_ARG, args[at] if len(args) > at else None)
        rows = [torch.as_tensor(c).reshape(-1).cpu() for c in cands or () if c is not None]
        if rows and not self._stack:
            self.captured_rows.append(torch.cat(rows))

    def wrap(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        try:
            params = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            params = []
        at = params.index(CAPTURED_ARG) if stage == "exact MaxSim" and CAPTURED_ARG in params else None

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if at is not None:
                self._capture(args, kwargs, at)
            self._sync()
            self._stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._sync()
                elapsed = time.perf_counter() - t0
                child = self._stack.pop()
                self.totals[stage] += elapsed - child
                if self._stack:
                    self._stack[-1] += elapsed

        return timed

    def patch(self, owner: Any, name: str, stage: str, label: str) -> None:
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        fn = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
        wrapped: Any = self.wrap(fn, stage)
        if isinstance(original, staticmethod):
            wrapped = staticmethod(wrapped)
        elif isinstance(original, classmethod):
            wrapped = classmethod(wrapped)
        setattr(owner, name, wrapped)
        self._undo.append((owner, name, original))
        self.found.append(f"{label} → {stage}")
        self.stages_found.add(stage)

    def unpatch(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def stage_of(name: str) -> str | None:
    for stage, pattern in STAGES:
        if re.search(pattern, name):
            return stage
    return None


def instrument(timer: StageTimer) -> None:
    """Wrap every matching function of lateragkit.index.* / lateragkit.scoring (module functions in every
    lateragkit module that binds them, class methods on their class) and torch.topk."""
    import lateragkit.index as index_pkg

    for info in pkgutil.iter_modules(index_pkg.__path__):
        importlib.import_module(f"lateragkit.index.{info.name}")
    modules = {n: m for n, m in sys.modules.items() if n.startswith("lateragkit") and m is not None}
    searched = [m for n, m in modules.items() if n.startswith("lateragkit.index") or n == "lateragkit.scoring"]
    done: set[int] = set()
    for module in searched:
        for name, obj in list(vars(module).items()):
            if inspect.isclass(obj) and obj.__module__ == module.__name__ and id(obj) not in done:
                done.add(id(obj))
                for attr, member in list(vars(obj).items()):
                    fn = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                    stage = stage_of(attr) if inspect.isfunction(fn) else None
                    if stage and attr != "__init__":
                        timer.patch(obj, attr, stage, f"{obj.__module__}.{obj.__qualname__}.{attr}")
            elif inspect.isfunction(obj) and obj.__module__ == module.__name__ and id(obj) not in done:
                done.add(id(obj))
                stage = stage_of(name)
                if stage is None:
                    continue
                for other in modules.values():  # every module that bound it by `from ... import`
                    for alias, value in list(vars(other).items()):
                        if value is obj:
                            timer.patch(other, alias, stage, f"{obj.__module__}.{name} (in {other.__name__})")
    timer.patch(torch, "topk", "top-k", "torch.topk")


# --------------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------------
def best_of(runs: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Least wall time of ``runs`` calls of ``fn(*args, **kwargs)``, in seconds."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best


def profile_k(index: Any, data: dict[str, Any], k: int, n_queries: int, timer: StageTimer) -> dict[str, Any]:
    """Per-stage mean ms over ``n_queries`` single-query searches, and each query's candidate rows (the ``cands``
    its exact stage got: ``captured``, `(query, rows)` pairs)."""
    Q, M = data["Q"], data["Q_mask"]
    lengths = M.sum(1).tolist()
    codec = index.codec
    stage_ms: dict[str, float] = dict.fromkeys(sorted(timer.stages_found), 0.0)
    totals, gemm_ms = [], 0.0
    captured: list[tuple[int, torch.Tensor]] = []
    for i in range(n_queries):
        q, m = Q[i : i + 1, : lengths[i]], M[i : i + 1, : lengths[i]]
        timer.reset()
        totals.append(best_of(1, index.search, q, m, k))
        for stage, sec in timer.totals.items():
            stage_ms[stage] += 1000 * sec
        qs = q[m].to(codec.device, codec.dtype)
        gemm_ms += 1000 * best_of(3, torch.matmul, qs, codec.centroids.T)
        if timer.captured_rows:
            captured.append((i, torch.cat(timer.captured_rows)))
    n = max(1, n_queries)
    stage_ms = {s: v / n for s, v in stage_ms.items()}
    total_ms = 1000 * float(np.mean(totals))
    if "centroid scores" not in stage_ms:
        stage_ms["centroid scores"] = gemm_ms / n  # inline GEMM, timed apart
    stage_ms["other"] = max(0.0, total_ms - sum(v for s, v in stage_ms.items() if s != "other"))
    return {
        "k": k,
        "queries": n_queries,
        "total_ms": total_ms,
        "p50_ms": 1000 * float(np.percentile(totals, 50)),
        "stages": stage_ms,
        "captured": captured,
    }


def scored_tokens(index: Any, data: dict[str, Any], i: int) -> torch.Tensor:
    """The scored tokens of query ``i`` as the search holds them (`[T, dim]`, the codec's device and dtype)."""
    return data["Q"][i][data["Q_mask"][i]].to(index.codec.device, index.codec.dtype)


def decompress_maxsim(index: Any, q: torch.Tensor, m: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The exact stage before: every candidate decompressed at once (`decompress_rows`), then `scoring.maxsim`."""
    vecs, lens = index.decompress_rows(rows)
    return scoring.maxsim(q, m, vecs, lens)[0]


def search_exact(index: Any, qs: torch.Tensor, S: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The exact stage as `search` runs it (`PlaidSearch._exact_scores`: token blocks, residual scores, segmented
    maximum), one query; ``S``: its centroid scores (computed by the search before this stage)."""
    return index._exact_scores(qs, S, [0, int(qs.shape[0])], [rows])[0]


def exact_ways(index: Any, data: dict[str, Any], result: dict[str, Any], repeats: int) -> None:
    """The exact stage of each query of ``result`` on its captured candidates, both ways (fastest of ``repeats``
    runs each): mean ms per way, passages and tokens per query, largest score difference; added to ``result``."""
    Q, M = data["Q"], data["Q_mask"]
    acc: dict[str, float] = defaultdict(float)
    max_diff, tokens = 0.0, []
    for i, rows in result["captured"]:
        rows = rows.to(index.device)
        qs = scored_tokens(index, data, i)
        lq = int(qs.shape[0])
        ways = {
            "decompress + MaxSim": functools.partial(decompress_maxsim, index, Q[i : i + 1, :lq], M[i : i + 1, :lq],
                                                     rows),
            "search's exact stage": functools.partial(search_exact, index, qs, qs @ index.codec.centroids.T, rows),
        }
        outs = {}
        for name, fn in ways.items():
            acc[name] += 1000 * best_of(repeats, fn)
            outs[name] = fn().float().cpu()
        max_diff = max(max_diff, float((outs["search's exact stage"] - outs["decompress + MaxSim"]).abs().max()))
        tokens.append(int(index._doclens[rows].sum()))
    n = len(result["captured"])
    result.update({
        "exact": {name: v / max(1, n) for name, v in acc.items()},
        "exact_queries": n,
        "passages": float(np.mean([r.numel() for _, r in result["captured"]])) if n else 0.0,
        "tokens": float(np.mean(tokens)) if n else 0.0,
        "max_diff": max_diff,
    })


def batch_exact(index: Any, data: dict[str, Any], captured: list, batch: int, repeats: int) -> dict[str, float]:
    """The exact stages of ``batch`` queries (k=100 candidates): one `_exact_scores` call per query vs one call
    for all of them (each distinct passage's tokens read once); the largest score difference between the two."""
    captured = captured[:batch]
    qs = [scored_tokens(index, data, i) for i, _ in captured]
    cands = [rows.to(index.device) for _, rows in captured]
    C = index.codec.centroids
    t_one, one = 0.0, []
    for q, rows in zip(qs, cands, strict=True):
        fn = functools.partial(search_exact, index, q, q @ C.T, rows)
        t_one += best_of(repeats, fn)
        one.append(fn())
    Qs = torch.cat(qs)
    firsts = np.concatenate([[0], np.cumsum([int(q.shape[0]) for q in qs])]).tolist()
    shared = functools.partial(index._exact_scores, Qs, Qs @ C.T, firsts, cands)
    t_shared = best_of(repeats, shared)
    diff = max(float((a - b).abs().max()) for a, b in zip(shared(), one, strict=True) if a.numel())
    union = torch.unique(torch.cat(cands))
    return {"queries": len(captured), "union_passages": int(union.numel()), "one_by_one_ms": 1000 * t_one,
            "shared_ms": 1000 * t_shared, "batch_diff": diff}


def search_rates(index: Any, data: dict[str, Any], n: int, k: int = 100) -> dict[str, float]:
    """Queries per second at k: one `search` call per query vs one call with all ``n`` queries."""
    Q, M = data["Q"][:n], data["Q_mask"][:n]
    lengths = M.sum(1).tolist()
    t0 = time.perf_counter()
    for i in range(n):
        index.search(Q[i : i + 1, : lengths[i]], M[i : i + 1, : lengths[i]], k)
    one = time.perf_counter() - t0
    batch = best_of(1, index.search, Q, M, k)
    return {"queries_rate": n, "one_qps": n / one, "batch_qps": n / batch}


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def stage_table(results: list[dict[str, Any]], before: list[dict[str, Any]] | None = None) -> str:
    """Stage rows; with ``before`` (the baseline checkout's stages) a before and an after column per k."""
    cols = [(f"k={r['k']}", r) for r in results]
    if before:
        cols = [c for b, r in zip(before, results, strict=True)
                for c in ((f"k={b['k']} before", b), (f"k={r['k']} after", r))]
    head = "| stage | " + " | ".join(f"{name} ms/query | share" for name, _ in cols) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(cols)]
    for stage in STAGE_NAMES:
        cells = []
        for _, r in cols:
            v = r["stages"].get(stage)
            cells.append("—" if v is None else f"{v:.2f}")
            cells.append("—" if v is None else f"{100 * v / r['total_ms']:.0f} %")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| **search (mean)** | " + " | ".join(f"**{r['total_ms']:.1f}** | 100 %" for _, r in cols) + " |")
    lines.append("| search p50 | " + " | ".join(f"{r['p50_ms']:.1f} | " for _, r in cols) + " |")
    return "\n".join(lines)


def run_baseline(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The stage profile of the checkout ``args.baseline`` (its ``lateragkit`` package), in a subprocess on the
    same index and queries, run just before this one."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stages.json"
        cmd = [sys.executable, __file__, "--lateragkit", str(Path(args.baseline).resolve()), "--stages-json",
               str(out), "--dataset", args.dataset, "--queries", str(args.queries), "--threads", str(args.threads),
               "--device", args.device]
        subprocess.run(cmd, check=True)
        return list(json.loads(out.read_text()))


def exact_table(results: list[dict[str, Any]]) -> str:
    names = ["decompress + MaxSim", "search's exact stage"]
    lines = ["| exact stage, same candidates | " + " | ".join(
        f"k={r['k']} ({r['passages']:.0f} passages, {r['tokens']:,.0f} tokens) ms | speed-up" for r in results) + " |",
        "|---|" + "---:|---:|" * len(results)]
    for name in names:
        cells = []
        for r in results:
            v, base = r["exact"].get(name), r["exact"].get("decompress + MaxSim")
            cells.append("—" if v is None else f"{v:.2f}")
            cells.append("" if v is None or not base else f"{base / v:.2f}×")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(section: str, text: str) -> None:
    """Rewrite this benchmark's own section of RESULTS.md."""
    results_file.write_section(section, text)


def get_index(dataset: str, data: dict[str, Any], rebuild: bool, device: str) -> Any:
    """The cached PLAID nbits=2 index of ``dataset``; built when missing, unreadable or asked for."""
    folder = CACHE / dataset / "plaid2"
    if not rebuild:
        try:
            return load_index(folder, device=device)
        except Exception as exc:  # noqa: BLE001 - any failure to load means: build it again
            print(f"building the index ({type(exc).__name__}: {exc})", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    vectors, doclens = data["vectors"], data["doclens"]
    return build_index(folder, search_bench.chunks(vectors, doclens), dim=int(vectors.shape[1]),
                       index_type="plaid", nbits=2, device=device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--queries", type=int, default=100, help="queries profiled one at a time per k")
    ap.add_argument("--batch", type=int, default=32, help="queries in the batched exact-stage comparison (k=100)")
    ap.add_argument("--rates", type=int, default=100,
                    help="queries of the k=100 rate comparison: one search call each vs one batched call (0: skip)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="runs of each exact-stage variant (fastest counts)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached index")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--baseline", help="a checkout of an earlier lateragkit (the folder holding its `lateragkit/`): "
                    "its stage profile is run first, in a subprocess, and shown beside this one")
    ap.add_argument("--lateragkit", help=argparse.SUPPRESS)  # handled before the imports
    ap.add_argument("--stages-json", help=argparse.SUPPRESS)  # the baseline's subprocess: stages only, as JSON
    args = ap.parse_args()
    before = run_baseline(args) if args.baseline else None
    torch.set_num_threads(args.threads)
    data = search_bench.encode_cached(args.dataset)
    index = get_index(args.dataset, data, args.rebuild, args.device)
    n_queries = min(args.queries, int(data["Q"].shape[0]))
    index.search(data["Q"][:4], data["Q_mask"][:4], 100)  # warm-up: first touch of the memory maps
    timer = StageTimer(torch.device(args.device))
    instrument(timer)
    print("wrapped:\n  " + "\n  ".join(timer.found), flush=True)
    try:
        results = [profile_k(index, data, k, n_queries, timer) for k in (10, 100)]
    finally:
        timer.unpatch()
    if args.stages_json:
        import json

        import lateragkit

        keep = ("k", "queries", "total_ms", "p50_ms", "stages")
        rows = [{**{key: r[key] for key in keep}, "package": str(Path(lateragkit.__file__).parent)} for r in results]
        Path(args.stages_json).write_text(json.dumps(rows))
        return
    for r in results:
        exact_ways(index, data, r, args.repeats)
    captured = results[1]["captured"]
    batch = batch_exact(index, data, captured, args.batch, args.repeats) if captured else None
    if batch is not None and args.rates:
        batch.update(search_rates(index, data, min(args.rates, int(data["Q"].shape[0]))))
    missing = [s for s, _ in STAGES if s not in timer.stages_found]
    text = report(args, data, index, results, batch, timer.found, missing, before)
    print(text)
    if not args.no_write:
        write_results(SECTION, text)
        print(f"wrote {search_bench.RESULTS} ({SECTION})")


def report(args: argparse.Namespace, data: dict[str, Any], index: Any, results: list[dict[str, Any]],
           batch: dict[str, float] | None, found: list[str], missing: list[str],
           before: list[dict[str, Any]] | None = None) -> str:
    command = " ".join(["python benchmarks/profile_plaid.py", *sys.argv[1:]])
    doclens = data["doclens"]
    lines = [
        SECTION, "",
        f"`{command}` — {args.dataset}: {len(doclens):,} passages, {int(np.sum(doclens)):,} MiniLM token vectors "
        f"(dim {int(data['vectors'].shape[1])}), PLAID nbits=2 (K={index.num_centroids}) built with `build_index`, "
        f"default search parameters; {results[0]['queries']} queries one at a time per k, each at its own length. "
        f"Device {args.device}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), load average {os.getloadavg()[0]:.1f} at the end: "
        "other jobs shared the machine, so compare rows of one run.",
        "",
        "Stage times are exclusive (a stage's functions minus the wrapped functions they call), mean per query; "
        "'centroid scores' is the query-centroid GEMM, inline in the search method and timed apart on the "
        "same shapes (it is taken out of 'other'). 'top-k' is every `torch.topk` (stage 2/3 selections and the "
        "final one) plus result building. 'token gathering' is `_token_block` (codes, residuals and scales of a "
        "block of passages, across segments), 'residual scoring' `ResidualCodec.token_scores`, 'exact MaxSim' "
        "what remains of the exact stage (`_exact_scores`, `_query_scores`, `_pair_scores`, `_block_pair_scores`: "
        "residual expansion, segmented maxima, bookkeeping); an unwrapped helper such as `scoring.segment_max` "
        "counts in the stage that called it. '—': no function of that package matched the stage.",
        "",
        *([f"Before: the package `{before[0]['package']}` (`--baseline`) profiled the same way in a subprocess "
            "just before (same index, queries and threads); after: this checkout.", ""] if before else []),
        stage_table(results, before),
        "",
        "Exact stage on the candidates the searches above sent to it (each query's `cands`; mean per query, "
        f"fastest of {args.repeats} runs): `decompress_rows` of all candidates at once + `scoring.maxsim` (the "
        "exact stage before), vs the search's own exact stage (`PlaidSearch._exact_scores`: token blocks of "
        "~`EXACT_TOKENS`, `ResidualCodec.token_scores` without decompression, segmented maximum). Both include "
        "token gathering; the query-centroid scores the search computes before are given. Largest score "
        f"difference between them: {max(r['max_diff'] for r in results):.1e}.",
        "",
        exact_table(results),
    ]
    if batch:
        lines += [
            "",
            f"Batch (k=100, the exact stages of {batch['queries']} queries, {batch['union_passages']:,} distinct "
            f"passages among their candidates): one `_exact_scores` call per query {batch['one_by_one_ms']:.0f} ms; "
            f"one call for all {batch['queries']} (each distinct passage's tokens read once) "
            f"{batch['shared_ms']:.0f} ms ({batch['one_by_one_ms'] / batch['shared_ms']:.2f}×); largest score "
            f"difference {batch['batch_diff']:.1e}.",
        ]
        if "batch_qps" in batch:
            lines += [
                "",
                f"Whole searches at k=100, {batch['queries_rate']} queries: one `search` call per query "
                f"{batch['one_qps']:.2f} queries/s; one call with all of them {batch['batch_qps']:.2f} queries/s "
                f"({batch['batch_qps'] / batch['one_qps']:.2f}×).",
            ]
    lines += ["", "Functions wrapped: " + "; ".join(f"`{f}`" for f in found) + "."]
    if missing:
        lines.append("Stages no function matched: " + ", ".join(missing) + ".")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
