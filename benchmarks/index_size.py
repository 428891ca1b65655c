"""Index size: bytes per token of a PLAID index, every file counted, by file.

Builds PLAID indexes (``build_index``, default parameters) of synthetic clustered collections
(`updates.synthetic`: each passage's tokens are noisy copies of 4 of 2,000 topic vectors, 30-60 tokens per
passage) at dim 128 and the given sizes, sums the sizes of every file under each index folder by file name,
and divides by the number of token vectors. Issue 14's target: at most 36 bytes per token at dim 128, nbits 2
(residuals 32 + int16 codes 2 is the floor). Writes the ``## Index size`` section of RESULTS.md.

    python benchmarks/index_size.py --passages 50000 200000
"""
from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_file  # noqa: E402
from updates import synthetic, topics  # noqa: E402

from lateragkit.index import build_index  # noqa: E402

SECTION = "## Index size"
TARGET = 36.0


def measure(n: int, dim: int, nbits: int, work: Path) -> dict[str, Any]:
    """Build one index of ``n`` synthetic passages and return its bytes per token by file name."""
    folder = work / f"plaid-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    index = build_index(folder, synthetic(n, dim, (30, 60), seed=5, centers=topics(2000, dim, seed=1)), dim=dim,
                        index_type="plaid", nbits=nbits, device="cpu")
    seconds = time.perf_counter() - t0
    by_name: collections.Counter[str] = collections.Counter()
    for f in folder.rglob("*"):
        if f.is_file():
            by_name[f.name] += f.stat().st_size
    tokens = index.num_tokens
    shutil.rmtree(folder, ignore_errors=True)
    return {"passages": n, "tokens": tokens, "K": index.num_centroids, "seconds": seconds,
            "per_file": {name: size / tokens for name, size in by_name.items()},
            "total": sum(by_name.values()) / tokens}


def table(rows: list[dict[str, Any]]) -> str:
    names = sorted({name for r in rows for name in r["per_file"]}, key=lambda n: -rows[0]["per_file"].get(n, 0))
    head = "| file | " + " | ".join(f"{r['passages']:,} passages ({r['tokens'] / 1e6:.2f} M tokens, K={r['K']:,})"
                                     for r in rows) + " |"
    lines = [head, "|---|" + "---:|" * len(rows)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{r['per_file'].get(name, 0):.3f}" for r in rows) + " |")
    lines.append("| **total** | " + " | ".join(f"**{r['total']:.2f}**" for r in rows) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, nargs="+", default=[50_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="index-size-") as tmp:
        rows = [measure(n, args.dim, args.nbits, Path(tmp)) for n in args.passages]
    verdicts = [f"- {'PASS' if r['total'] <= TARGET else 'FAIL'}: ≤ {TARGET:.0f} bytes per token at "
                f"{r['passages']:,} passages: {r['total']:.2f}" for r in rows]
    text = (
        f"{SECTION}\n\n`python benchmarks/index_size.py --passages {' '.join(map(str, args.passages))}` — PLAID "
        f"nbits={args.nbits}, dim {args.dim}, default build parameters, synthetic clustered passages of 30-60 "
        "tokens (`updates.synthetic`). Bytes per token vector of every file under the index folder, by file "
        "name (summed over segments).\n\n" + table(rows) + "\n\n" + "\n".join(verdicts) + "\n"
    )
    print(text)
    if not args.no_write:
        results_file.write_section(SECTION, text)


if __name__ == "__main__":
    main()
