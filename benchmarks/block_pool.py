"""Block pool: PLAID search with its stage blocks on a thread pool vs a plain loop vs one thread, paired per query.

With ``torch.get_num_threads() > 1`` the blocks of the full centroid interaction and of the exact stage, and the
queries of a batch, run on a pool of that many Python threads (`lateragkit/index/blocks.py`). This script times
the same searches with the pool, with a plain loop (`plaid_search.map_blocks` swapped) and on one torch thread,
rotating the order per query so that load from other jobs falls on all alike (the thread-count target of issue
14 is read from the pool vs one-thread ratio here: runs taken one after the other, as in `peers.py`, see
different load), on the cached SciFact PLAID index of `profile_plaid.py`. Writes ``## Block pool``.

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


def ways(threads: int) -> dict[str, tuple[int, Callable[..., Any]]]:
    """name -> (torch threads, the `map_blocks` used)."""
    return {"pool": (threads, blocks.map_blocks), "loop": (threads, plain_loop), "1 thread": (1, plain_loop)}


def use(way: tuple[int, Callable[..., Any]]) -> None:
    torch.set_num_threads(way[0])
    plaid_search.map_blocks = way[1]  # type: ignore[assignment]


def paired(index: Any, data: dict[str, Any], k: int, n: int, threads: int) -> dict[str, float]:
    """p50 ms of each way and the median per-query ratio of each to the pool (the order rotates per query)."""
    named = ways(threads)
    times: dict[str, list[float]] = {name: [] for name in named}
    names = list(named)
    for i in range(n):
        for name in names[i % 3 :] + names[: i % 3]:
            use(named[name])
            t0 = time.perf_counter()
            index.search(data["Q"][i : i + 1], data["Q_mask"][i : i + 1], k)
            times[name].append(time.perf_counter() - t0)
    pool = np.array(times["pool"])
    out = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    out.update({f"{name} ratio": float(np.median(np.array(t) / pool)) for name, t in times.items()})
    return out


def batch_rates(index: Any, data: dict[str, Any], n: int, threads: int, rounds: int = 3) -> dict[str, float]:
    """Best queries/s of one batched k=100 call per way, alternating over ``rounds``."""
    named = ways(threads)
    best = dict.fromkeys(named, 0.0)
    for _ in range(rounds):
        for name, way in named.items():
            use(way)
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
    rows = {k: paired(index, data, k, n, args.threads) for k in (10, 100)}
    rates = batch_rates(index, data, n, args.threads)
    use((args.threads, blocks.map_blocks))
    t = args.threads
    lines = [f"| search | pool ({t} thr) | loop ({t} thr) | 1 thread | loop ÷ pool | 1 thread ÷ pool |",
             "|---|---:|---:|---:|---:|---:|"]
    for k, r in rows.items():
        lines.append(f"| p50 k={k}, ms (ratios: median per query) | {r['pool']:.1f} | {r['loop']:.1f} | "
                     f"{r['1 thread']:.1f} | {r['loop ratio']:.2f}× | {r['1 thread ratio']:.2f}× |")
    lines.append(f"| batch of {n}, k=100, q/s (best of 3) | {rates['pool']:.1f} | {rates['loop']:.1f} | "
                 f"{rates['1 thread']:.1f} | {rates['pool'] / rates['loop']:.2f}× | "
                 f"{rates['pool'] / rates['1 thread']:.2f}× |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (
        f"{SECTION}\n\n`python benchmarks/block_pool.py --threads {args.threads} --queries {args.queries}` — "
        f"{args.dataset}, the cached PLAID nbits=2 index of `profile_plaid.py`, torch threads {args.threads}, "
        f"{os.cpu_count()} CPU cores, load average {load:.1f} at the end. The same searches with the stage blocks "
        "on the pool (`index/blocks.py`), in a plain loop, and on one torch thread, rotating the order per query; "
        "the last column is the speed-up of the pool's thread count over one thread.\n\n" + "\n".join(lines) + "\n"
    )
    print(text)
    if not args.no_write:
        results_file.write_section(SECTION, text)


if __name__ == "__main__":
    main()
