"""Stage-by-stage time of lateragkit's PLAID search on SciFact, and the exact stage with a lookup table.

    python benchmarks/profile_plaid.py                      # SciFact, one torch thread, 100 queries
    python benchmarks/profile_plaid.py --queries 300 --threads 1

Builds (once, then reuses) a PLAID nbits=2 index of the cached SciFact MiniLM vectors with the public
`build_index` / `load_index` (cache: ``benchmarks/cache/profile/``), then searches one query at a time at
k=10 and k=100 with the default parameters and times each stage:

  centroid scores · candidate generation (IVF probe) · pruned centroid interaction · full centroid
  interaction · decompression · exact MaxSim · top-k · other (what no stage accounts for)

The stages are found from outside, by introspection: every function or method of ``lateragkit.index.*`` and
``lateragkit.scoring`` whose name matches a stage pattern (``STAGES``) is wrapped with a timer (plus
``torch.topk``). Each stage gets the time spent in its functions minus the time of wrapped functions they
call (exclusive time), so nested stages are not counted twice and the stage times add up to the search time.
The script prints which functions it wrapped; a stage no function matches shows as "not found" (its time
then lands in "other"). The query-centroid GEMM is inline in the search method today: it is timed apart on
the same shapes and taken out of "other".

Second part: the exact stage on the same candidate passages (captured from the decompression calls of the
search) computed four ways: decompression of all candidates at once + `scoring.maxsim` (the stage before
0.3: one pass over ~100 MB at k=100), the search's own exact stage (`PlaidSearch._exact_scores`: cache-sized
blocks), the lookup-table kernel (`lateragkit.index.lut`) with the per-token norms computed in the call, and
with them known beforehand (as if stored at build time). Also a batch: the queries' exact stages one by one vs
one `lut_maxsim_pairs` call vs the search's shared exact stage; and whole k=100 searches, one call per query
vs one batched call (``--rates``).

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
from lateragkit.index import build_index, load_index, lut  # noqa: E402

SECTION = "## PLAID profile"
CACHE = HERE / "cache" / "profile"
REPEATS = 3  # default runs of each exact-stage variant; the fastest counts

# (stage, pattern on the function's name): the first match wins
STAGES: list[tuple[str, str]] = [
    ("centroid scores", r"centroid_scores|score_centroids|query_centroids"),
    ("pruned interaction", r"pruned"),
    ("full centroid interaction", r"centroid_interaction|full_interaction"),
    ("decompression", r"decompress"),
    ("exact MaxSim", r"^maxsim$|exact_scores|^_?exact_stage$|^_?exact$"),
    ("top-k", r"^topk$|^_results$|^_?top_k$"),
    ("candidate generation", r"^_?candidates$|^_?probe$|candidate_gen|ivf_probe|ivf_lookup"),
]
STAGE_NAMES = [s for s, _ in STAGES] + ["other"]


# --------------------------------------------------------------------------------------------------
# instrumentation
# --------------------------------------------------------------------------------------------------
class StageTimer:
    """Exclusive wall time per stage of wrapped functions; records the ``rows`` argument of the
    decompression functions (the passages that reach the exact stage)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self.found: list[str] = []
        self.captured_rows: list[torch.Tensor] = []
        self.stages_found: set[str] = set()
        self._stack: list[float] = []
        self._active: list[str] = []
        self._undo: list[tuple[Any, str, Any]] = []

    def reset(self) -> None:
        self.totals.clear()
        self.captured_rows.clear()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        try:
            takes_rows = "rows" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            takes_rows = False

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if takes_rows and stage == "decompression" and not self._stack_has_decompression():
                rows = kwargs.get("rows", args[1] if len(args) > 1 else None)
                if rows is not None:
                    self.captured_rows.append(torch.as_tensor(rows).reshape(-1).cpu())
            self._sync()
            self._stack.append(0.0)
            self._active.append(stage)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._sync()
                elapsed = time.perf_counter() - t0
                self._active.pop()
                child = self._stack.pop()
                self.totals[stage] += elapsed - child
                if self._stack:
                    self._stack[-1] += elapsed

        return timed

    def _stack_has_decompression(self) -> bool:
        return "decompression" in self._active

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
                if stage is None or module is lut:
                    continue
                for other in modules.values():  # every module that bound it by `from ... import`
                    for alias, value in list(vars(other).items()):
                        if value is obj:
                            timer.patch(other, alias, stage, f"{obj.__module__}.{name} (in {other.__name__})")
    timer.patch(torch, "topk", "top-k", "torch.topk")


# --------------------------------------------------------------------------------------------------
# index access for the exact-stage comparison (both the single-array and the segmented layouts)
# --------------------------------------------------------------------------------------------------
def _take(array: Any, tok: torch.Tensor) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array[tok.to(array.device)]
    if hasattr(array, "take"):
        return array.take(tok)
    return torch.from_numpy(np.asarray(array[tok.numpy()]))


def compressed_rows(index: Any, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(codes, residuals, doclens)` of the passages at ``rows``, read through the index's attributes."""
    codes = getattr(index, "_codes", None)
    residuals = getattr(index, "_residuals", None)
    offsets = getattr(index, "_tok_offsets", None)
    doclens = getattr(index, "_doclens", None)
    if codes is None or residuals is None or offsets is None or doclens is None:
        raise AttributeError("the index has no _codes/_residuals/_tok_offsets/_doclens: update compressed_rows()")
    rows = rows.to(offsets.device).long()
    lens = doclens[rows].cpu()
    starts = offsets[rows].cpu()
    seg = torch.repeat_interleave(torch.arange(lens.numel()), lens)
    tok = torch.arange(seg.numel()) - (torch.cumsum(lens, 0) - lens)[seg] + starts[seg]
    return _take(codes, tok), _take(residuals, tok), lens


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


def profile_k(index: Any, data: dict[str, Any], k: int, n_queries: int, timer: StageTimer,
              repeats: int, exact_ways: bool = True) -> dict[str, Any]:
    """Per-stage mean ms over ``n_queries`` single-query searches, and the exact-stage comparison."""
    Q, M = data["Q"], data["Q_mask"]
    lengths = M.sum(1).tolist()
    codec = index.codec
    stage_ms: dict[str, float] = defaultdict(float)
    totals, gemm_ms = [], 0.0
    exact: dict[str, float] = defaultdict(float)
    per_query: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    max_diff = 0.0
    for i in range(n_queries):
        q, m = Q[i : i + 1, : lengths[i]], M[i : i + 1, : lengths[i]]
        timer.reset()
        totals.append(best_of(1, index.search, q, m, k))
        for stage, sec in timer.totals.items():
            stage_ms[stage] += 1000 * sec
        qs = q[m].to(codec.device, codec.dtype)
        gemm_ms += 1000 * best_of(3, torch.matmul, qs, codec.centroids.T)
        if not timer.captured_rows or not exact_ways:
            continue
        rows = torch.cat(timer.captured_rows)
        codes, residuals, lens = compressed_rows(index, rows)
        per_query.append((rows, codes, residuals, lens))
        diff = compare_exact(index, q, m, rows, codes, residuals, lens, exact, repeats)
        max_diff = max(max_diff, diff)
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
        "exact": {name: v / max(1, len(per_query)) for name, v in exact.items()},
        "exact_queries": len(per_query),
        "passages": float(np.mean([r.numel() for r, *_ in per_query])) if per_query else 0.0,
        "tokens": float(np.mean([c.numel() for _, c, _, _ in per_query])) if per_query else 0.0,
        "max_diff": max_diff,
        "captured": per_query,
    }


def decompress_maxsim(codec: Any, q: torch.Tensor, m: torch.Tensor, codes: torch.Tensor, residuals: torch.Tensor,
                      lens: torch.Tensor) -> torch.Tensor:
    """Today's exact stage: decompress, then `scoring.maxsim`."""
    return scoring.maxsim(q, m, codec.decompress(codes, residuals), lens)


def search_exact(index: Any, qs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The exact stage as `search` runs it (blocked decompression + GEMM + segmented maximum), one query."""
    return index._exact_scores(qs.to(index.codec.dtype), [0, int(qs.shape[0])], [rows])[0][None]


def compare_exact(index: Any, q: torch.Tensor, m: torch.Tensor, rows: torch.Tensor, codes: torch.Tensor,
                  residuals: torch.Tensor, lens: torch.Tensor, acc: dict[str, float], repeats: int) -> float:
    """Exact-stage scores of one query four ways (best of 3 runs each); adds ms to ``acc``."""
    codec = index.codec
    qs = q[m].to(codec.device, torch.float32)
    S = qs @ codec.centroids.float().T

    inv = lut.token_inv_norms(codec, codes, residuals)
    ways: dict[str, Callable[[], torch.Tensor]] = {
        "decompress + MaxSim": functools.partial(decompress_maxsim, codec, q, m, codes, residuals, lens),
        "search's exact stage": functools.partial(search_exact, index, qs, rows),
        "LUT, norms computed": functools.partial(lut.lut_maxsim, codec, q, m, codes, residuals, lens,
                                                 centroid_scores=S),
        "LUT, norms given": functools.partial(lut.lut_maxsim, codec, q, m, codes, residuals, lens,
                                              centroid_scores=S, inv_norms=inv),
    }
    outs = {}
    for name, fn in ways.items():
        acc[name] += 1000 * best_of(repeats, fn)
        outs[name] = fn()
    acc["of which: norms"] += 1000 * best_of(repeats, lut.token_inv_norms, codec, codes, residuals)
    ref = outs["decompress + MaxSim"]
    return max(float((outs[n] - ref).abs().max()) for n in outs)


def batch_exact(index: Any, data: dict[str, Any], captured: list, batch: int, repeats: int) -> dict[str, float]:
    """The exact stages of ``batch`` queries: one query at a time (decompress + MaxSim) vs one
    `lut_maxsim_pairs` call over the union of their candidates (each token's norm computed once)."""
    codec = index.codec
    Q, M = data["Q"][:batch], data["Q_mask"][:batch]
    captured = captured[:batch]
    t_one = 0.0
    for i, (_, codes, residuals, lens) in enumerate(captured):
        q, m = Q[i : i + 1], M[i : i + 1]
        t_one += best_of(repeats, decompress_maxsim, codec, q, m, codes, residuals, lens)
    union, inverse = torch.unique(torch.cat([r for r, *_ in captured]), return_inverse=True)
    codes, residuals, lens = compressed_rows(index, union)
    pq = torch.cat([torch.full((r.numel(),), i) for i, (r, *_) in enumerate(captured)])
    S = Q[M].to(codec.device, torch.float32) @ codec.centroids.float().T
    pairs = functools.partial(lut.lut_maxsim_pairs, codec, Q, M, codes, residuals, lens, pq, inverse,
                              centroid_scores=S)
    t_pairs = best_of(repeats, pairs)
    t_given = best_of(repeats, pairs, inv_norms=lut.token_inv_norms(codec, codes, residuals))
    counts = M.sum(1).tolist()
    firsts = np.concatenate([[0], np.cumsum(counts)]).tolist()
    shared = functools.partial(index._exact_scores, Q[M].to(codec.device, codec.dtype), firsts,
                               [r for r, *_ in captured])
    t_shared = best_of(repeats, shared)
    return {"queries": len(captured), "union_passages": int(union.numel()), "one_by_one_ms": 1000 * t_one,
            "pairs_ms": 1000 * t_pairs, "pairs_given_ms": 1000 * t_given, "shared_ms": 1000 * t_shared}


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
    names = ["decompress + MaxSim", "search's exact stage", "LUT, norms computed", "of which: norms",
             "LUT, norms given"]
    lines = ["| exact stage, same candidates | " + " | ".join(
        f"k={r['k']} ({r['passages']:.0f} passages, {r['tokens']:,.0f} tokens) ms | speed-up" for r in results) + " |",
        "|---|" + "---:|---:|" * len(results)]
    for name in names:
        cells = []
        for r in results:
            v, base = r["exact"].get(name), r["exact"].get("decompress + MaxSim")
            cells.append("—" if v is None else f"{v:.2f}")
            cells.append("" if v is None or not base or name == "of which: norms" else f"{base / v:.2f}×")
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
        results = [profile_k(index, data, k, n_queries, timer, args.repeats, exact_ways=not args.stages_json)
                   for k in (10, 100)]
    finally:
        timer.unpatch()
    if args.stages_json:
        import json

        import lateragkit

        keep = ("k", "queries", "total_ms", "p50_ms", "stages")
        rows = [{**{key: r[key] for key in keep}, "package": str(Path(lateragkit.__file__).parent)} for r in results]
        Path(args.stages_json).write_text(json.dumps(rows))
        return
    captured = results[1]["captured"]
    batch = batch_exact(index, data, captured, args.batch, args.repeats) if captured else None
    if batch is not None:
        codes, residuals, _ = compressed_rows(index, torch.arange(len(data["doclens"])))
        batch["all_tokens"] = int(codes.numel())
        batch["all_norms_s"] = best_of(1, lut.token_inv_norms, index.codec, codes, residuals)
        del codes, residuals
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
        "final one) plus result building.",
        "",
        *([f"Before: the package `{before[0]['package']}` (`--baseline`) profiled the same way in a subprocess "
            "just before (same index, queries and threads); after: this checkout.", ""] if before else []),
        stage_table(results, before),
        "",
        "Exact stage on the candidates the searches above sent to it (mean per query, fastest of "
        f"{args.repeats} runs): today's decompression + `scoring.maxsim`, vs "
        "`lateragkit.index.lut.lut_maxsim` (lookup tables of partial dot products, no decompression) with the "
        "per-token norms computed in the call, and with them given (as if stored at build time). Token gathering "
        "is common to all and excluded. Largest score difference to decompression + MaxSim: "
        f"{max(r['max_diff'] for r in results):.1e}.",
        "",
        exact_table(results),
    ]
    if batch:
        lines += [
            "",
            f"Batch (k=100, the exact stages of {batch['queries']} queries, {batch['union_passages']:,} distinct "
            f"passages among their candidates): one at a time with decompression + MaxSim "
            f"{batch['one_by_one_ms']:.0f} ms; one `lut_maxsim_pairs` call (norms computed once per distinct token) "
            f"{batch['pairs_ms']:.0f} ms ({batch['one_by_one_ms'] / batch['pairs_ms']:.2f}×); the same with the "
            f"norms given {batch['pairs_given_ms']:.0f} ms ({batch['one_by_one_ms'] / batch['pairs_given_ms']:.2f}×); "
            f"the search's shared exact stage (`PlaidSearch._exact_scores` of all {batch['queries']} queries: each "
            f"distinct passage decompressed once) {batch['shared_ms']:.0f} ms "
            f"({batch['one_by_one_ms'] / batch['shared_ms']:.2f}×).",
            "",
            f"The norms of every token of the index ({batch['all_tokens']:,}), computed once as a build or load "
            f"step would: {batch['all_norms_s']:.1f} s with `lut.token_inv_norms` (4 bytes per token as float32).",
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
