"""Block pool: PLAID search with its stage blocks on a thread pool vs a plain loop, paired query by query.

With ``torch.get_num_threads() > 1`` the blocks of the full centroid interaction and of the exact stage run on
a pool of that many Python threads (`lateragkit/index/blocks.py`). This script times the same searches with the
pool and with a plain loop (`plaid_search.map_blocks` swapped), alternating per query so that load from other
jobs falls on both alike, on the cached SciFact PLAID index of `profile_plaid.py`. Writes ``## Block pool``.

    python benchmarks/block_pool.py --threads 2 --queries 60
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import profile_plaid  # noqa: E402
import results_file  # noqa: E402
import search as search_bench  # noqa: E402

from lateragkit.index import blocks, plaid_search  # noqa: E402

SECTION = "## Block pool"


def plain_loop(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(b) for b in items]


WAYS = {"pool": blocks.map_blocks, "loop": plain_loop}


def paired(index: Any, data: dict[str, Any], k: int, n: int) -> dict[str, float]:
    """p50 of each way and the median per-query ratio loop / pool (the order alternates per query)."""
    times: dict[str, list[float]] = {"pool": [], "loop": []}
    for i in range(n):
        order = ("pool", "loop") if i % 2 else ("loop", "pool")
        for name in order:
            plaid_search.map_blocks = WAYS[name]  # type: ignore[assignment]
            t0 = time.perf_counter()
            index.search(data["Q"][i : i + 1], data["Q_mask"][i : i + 1], k)
            times[name].append(time.perf_counter() - t0)
    pool, loop = np.array(times["pool"]), np.array(times["loop"])
    return {"pool": 1e3 * float(np.median(pool)), "loop": 1e3 * float(np.median(loop)),
            "ratio": float(np.median(loop / pool))}


def batch_rates(index: Any, data: dict[str, Any], n: int, rounds: int = 3) -> dict[str, float]:
    """Best queries/s of one batched k=100 call per way, alternating over ``rounds``."""
    best = {"pool": 0.0, "loop": 0.0}
    for _ in range(rounds):
        for name in ("pool", "loop"):
            plaid_search.map_blocks = WAYS[name]  # type: ignore[assignment]
            t0 = time.perf_counter()
            index.search(data["Q"][:n], data["Q_mask"][:n], 100)
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = search_bench.encode_cached(args.dataset)
    index = profile_plaid.get_index(args.dataset, data, False, "cpu")
    n = min(args.queries, int(data["Q"].shape[0]))
    index.search(data["Q"][:4], data["Q_mask"][:4], 100)  # warm-up
    rows = {k: paired(index, data, k, n) for k in (10, 100)}
    rates = batch_rates(index, data, n)
    plaid_search.map_blocks = blocks.map_blocks
    lines = ["| search | pool ms / q/s | loop ms / q/s | loop ÷ pool |", "|---|---:|---:|---:|"]
    for k, r in rows.items():
        lines.append(f"| p50 k={k} (median of per-query ratios) | {r['pool']:.1f} | {r['loop']:.1f} | "
                     f"{r['ratio']:.2f}× |")
    lines.append(f"| batch of {n}, k=100 (best of 3, q/s) | {rates['pool']:.1f} | {rates['loop']:.1f} | "
                 f"{rates['pool'] / rates['loop']:.2f}× |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (
        f"{SECTION}\n\n`python benchmarks/block_pool.py --threads {args.threads} --queries {args.queries}` — "
        f"{args.dataset}, the cached PLAID nbits=2 index of `profile_plaid.py`, torch threads {args.threads}, "
        f"{os.cpu_count()} CPU cores, load average {load:.1f} at the end. The same searches with the stage blocks "
        "on the pool (`index/blocks.py`) and in a plain loop, alternating per query.\n\n" + "\n".join(lines) + "\n"
    )
    print(text)
    if not args.no_write:
        results_file.write_section(SECTION, text)


if __name__ == "__main__":
    main()
