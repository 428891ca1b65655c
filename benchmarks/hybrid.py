"""Hybrid benchmark: BM25, late interaction and their fusion on SciFact, NPL, Cranfield and MEDLINE.

    python benchmarks/hybrid.py                                # the four sets (encodes once, then cached)
    python benchmarks/hybrid.py --datasets medline cranfield   # a quicker run
    python benchmarks/hybrid.py --encode-only npl              # only fill the vector cache

For each collection (BEIR layout, ``../shared/data`` or ``$LATERAGKIT_DATA``; judged test queries only):

* **bm25**: ``lateragkit.bm25`` (bm25s tokenisation, English stopwords, PyStemmer, the "lucene" variant with
  k1 = 1.5, b = 0.75), one segment. Its scores are cross-checked against a fresh ``bm25s`` index on the same
  passages (largest difference printed in the notes).
* **late**: exhaustive MaxSim (``lateragkit.scoring.maxsim``) over all-MiniLM-L6-v2 token vectors (documents
  at most 256 tokens): the exact late-interaction ranking, no index approximation. MiniLM is not a ColBERT
  model; these are late-interaction numbers of that model, not ColBERT's. The vectors are encoded once and
  cached under ``benchmarks/cache/hybrid/<set>/`` (git-ignored); SciFact's are read from
  ``benchmarks/cache/search/scifact/`` when ``benchmarks/search.py`` has cached them.
* **hybrid**: each side's top ``--depth`` (100) candidates fused per query with ``lateragkit.fusion``:
  reciprocal-rank fusion (k = 60) and min-max normalised score fusion, at several ``alpha`` (weight of late
  interaction). One default for all collections is chosen from the mean over the sets (second table).

Metrics: nDCG@10 (graded gains 2^rel - 1) and Recall@100 (relevant = score > 0) from ``lateragkit.evaluation``.
Prints the tables and writes them to ``benchmarks/RESULTS.md`` under ``## Hybrid`` (only that section).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import results_file  # noqa: E402  (benchmarks/results_file.py: the shared RESULTS.md writer)
import torch
from common import DATA, HERE, minilm_path  # noqa: E402  (benchmarks/common.py)

from lateragkit import scoring  # noqa: E402
from lateragkit.bm25 import Bm25Config, Bm25Segment, bm25_search, tokenize  # noqa: E402
from lateragkit.evaluation import corpus_text, load_beir, ndcg_at_k, recall_at_k  # noqa: E402
from lateragkit.fusion import DEFAULT_ALPHA, DEFAULT_METHOD, RRF_K, fuse  # noqa: E402

CACHE = HERE / "cache" / "hybrid"
SEARCH_CACHE = HERE / "cache" / "search"
RUNS = CACHE / "runs"  # late-interaction top-k per query (cached) and the BM25 segment, per set
RESULTS = HERE / "RESULTS.md"
SECTION = "## Hybrid"
DATASETS = ["scifact", "npl", "cranfield", "medline"]
DOC_MAXLEN = 256
CHUNK_PASSAGES = 1024
LATE_DEPTH = 1000  # late-interaction results kept per query (cached); fusion uses the top --depth
FILES = ["doc_vectors.npy", "doclens.npy", "Q.npy", "Q_mask.npy", "ids.json"]
ALPHAS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]

Hits = list[tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------------------------------
# late interaction: cached vectors, exhaustive MaxSim
# --------------------------------------------------------------------------------------------------
def encode_to(dataset: str, folder: Path) -> None:
    """Encode a collection and its judged queries with MiniLM into ``folder`` (written whole, then renamed)."""
    from lateragkit.models import load_encoder

    corpus, queries, _ = load_beir(DATA / dataset)
    doc_ids = list(corpus)
    texts = [corpus_text(corpus[d]) for d in doc_ids]
    qids = list(queries)
    enc = load_encoder(minilm_path(), device="cpu")
    t0 = time.perf_counter()
    vecs, lens = [], []
    for s in range(0, len(texts), CHUNK_PASSAGES):
        v, n = enc.encode_documents(texts[s : s + CHUNK_PASSAGES], doc_maxlen=DOC_MAXLEN, bsize=32)
        vecs.append(v.numpy())
        lens.append(n.numpy())
        print(f"  {dataset}: encoded {min(s + CHUNK_PASSAGES, len(texts))}/{len(texts)} documents", flush=True)
    Q, Qm = enc.encode_queries([queries[q] for q in qids])
    print(f"{dataset}: encoding took {time.perf_counter() - t0:.0f} s", flush=True)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "doc_vectors.npy", np.concatenate(vecs))
    np.save(tmp / "doclens.npy", np.concatenate(lens))
    np.save(tmp / "Q.npy", Q.numpy())
    np.save(tmp / "Q_mask.npy", Qm.numpy())
    (tmp / "ids.json").write_text(json.dumps({"doc_ids": doc_ids, "query_ids": qids}))
    tmp.rename(folder)


def vector_folder(dataset: str) -> Path:
    """The cached vectors of ``dataset`` (the search benchmark's cache first), encoding them if absent."""
    for folder in (SEARCH_CACHE / dataset, CACHE / dataset):
        if all((folder / f).exists() for f in FILES):
            return folder
    encode_to(dataset, CACHE / dataset)
    return CACHE / dataset


def late_hits(dataset: str, folder: Path) -> tuple[Hits, float]:
    """Exhaustive MaxSim top-LATE_DEPTH per query (cached beside this benchmark's files) and ms/query."""
    out = RUNS / dataset / "late"
    doclens = np.load(folder / "doclens.npy")
    Q, Q_mask = torch.from_numpy(np.load(folder / "Q.npy")), torch.from_numpy(np.load(folder / "Q_mask.npy"))
    stamp = {"source": str(folder.relative_to(HERE)), "passages": int(len(doclens)), "tokens": int(doclens.sum()),
             "queries": int(Q.shape[0]), "depth": LATE_DEPTH}
    if (out / "stamp.json").exists() and json.loads((out / "stamp.json").read_text()) == stamp:
        scores, pids = np.load(out / "scores.npy"), np.load(out / "pids.npy")
        ms = float(json.loads((out / "time.json").read_text())["ms_per_query"])
    else:
        vectors = np.load(folder / "doc_vectors.npy", mmap_mode="r")
        t0 = time.perf_counter()
        all_scores = scoring.maxsim(Q, Q_mask, vectors, doclens)
        top = torch.topk(all_scores, min(LATE_DEPTH, all_scores.shape[1]), dim=1)
        ms = 1000 * (time.perf_counter() - t0) / Q.shape[0]
        scores, pids = top.values.numpy(), top.indices.numpy().astype(np.int64)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "scores.npy", scores)
        np.save(out / "pids.npy", pids)
        (out / "time.json").write_text(json.dumps({"ms_per_query": ms}))
        (out / "stamp.json").write_text(json.dumps(stamp))
    return [(scores[i], pids[i]) for i in range(len(scores))], ms


# --------------------------------------------------------------------------------------------------
# BM25
# --------------------------------------------------------------------------------------------------
def bm25_hits(dataset: str, texts: list[str], queries: list[str], depth: int) -> tuple[Hits, dict[str, float]]:
    """BM25 top-``depth`` per query from one lateragkit segment, with timings and the bm25s cross-check."""
    folder = RUNS / dataset / "bm25-segment"
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    Bm25Segment.write(folder, np.arange(len(texts)), texts)
    build_s = time.perf_counter() - t0
    segment = Bm25Segment.load(folder)
    t0 = time.perf_counter()
    hits = bm25_search([segment], queries, depth)
    ms = 1000 * (time.perf_counter() - t0) / len(queries)
    return hits, {"build_s": build_s, "ms_per_query": ms, "max_diff": bm25s_difference(texts, queries, hits)}


def bm25s_difference(texts: list[str], queries: list[str], hits: Hits) -> float:
    """Largest |score difference| between our results and a fresh bm25s index on the same passages."""
    import bm25s
    import Stemmer

    config = Bm25Config()
    retriever = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
    stemmer = Stemmer.Stemmer(config.language)
    retriever.index(bm25s.tokenize(texts, stopwords=config.stopwords, stemmer=stemmer, show_progress=False),
                    show_progress=False)
    worst = 0.0
    for terms, (scores, pids) in zip(tokenize(queries, config), hits, strict=True):
        if terms:
            reference = retriever.get_scores(terms)
            worst = max(worst, float(np.abs(reference[pids] - scores).max(initial=0.0)))
            top = np.sort(reference)[::-1][: len(scores)]  # the same head: ranks agree up to ties
            worst = max(worst, float(np.abs(top[top > 0] - scores[: int((top > 0).sum())]).max(initial=0.0)))
    return worst


# --------------------------------------------------------------------------------------------------
# one collection
# --------------------------------------------------------------------------------------------------
def evaluate(hits: Hits, doc_ids: list[str], qids: list[str], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    run = {q: [doc_ids[int(p)] for p in pids] for q, (_, pids) in zip(qids, hits, strict=True)}
    return {"ndcg10": float(ndcg_at_k(run, qrels, 10)), "recall100": float(recall_at_k(run, qrels, 100))}


def variants() -> list[tuple[str, str, float]]:
    """(label, method, alpha) of every fusion measured."""
    out = [(f"rrf α={a}", "rrf", a) for a in ALPHAS]
    out += [(f"normalized α={a}", "normalized", a) for a in ALPHAS]
    return out


def run_dataset(dataset: str, depth: int) -> dict[str, Any]:
    corpus, queries, qrels = load_beir(DATA / dataset)
    folder = vector_folder(dataset)
    ids = json.loads((folder / "ids.json").read_text())
    doc_ids, qids = ids["doc_ids"], ids["query_ids"]
    if doc_ids != list(corpus) or qids != list(queries):
        raise SystemExit(f"{folder} was encoded from another version of {dataset}: delete it and rerun")
    texts = [corpus_text(corpus[d]) for d in doc_ids]
    late, late_ms = late_hits(dataset, folder)
    late = [(s[:depth], p[:depth]) for s, p in late]
    bm25, bm25_info = bm25_hits(dataset, texts, [queries[q] for q in qids], depth)
    row: dict[str, Any] = {"dataset": dataset, "passages": len(doc_ids), "queries": len(qids),
                           "late_ms": late_ms, **bm25_info,
                           "bm25": evaluate(bm25, doc_ids, qids, qrels), "late": evaluate(late, doc_ids, qids, qrels)}
    t0 = time.perf_counter()
    for label, method, alpha in variants():
        fused = [fuse(lt, bm, method=method, alpha=alpha, k=100) for lt, bm in zip(late, bm25, strict=True)]
        row[label] = evaluate(fused, doc_ids, qids, qrels)
    row["fusion_ms"] = 1000 * (time.perf_counter() - t0) / (len(qids) * len(variants()))
    print(f"{dataset}: bm25 {row['bm25']}, late {row['late']}, default fusion "
          f"{row[default_label()]}", flush=True)
    return row


def default_label() -> str:
    return f"{DEFAULT_METHOD} α={DEFAULT_ALPHA}"


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------
def main_table(rows: list[dict[str, Any]]) -> str:
    shown = list(dict.fromkeys(["bm25", "late", "rrf α=0.5", default_label()]))
    names = {"rrf α=0.5": "plain RRF", default_label(): f"hybrid default ({default_label()})"}
    head = ("| set | passages | queries | "
            + " | ".join(f"{names.get(s, s)} nDCG@10 | R@100" for s in shown)
            + " | hybrid default − better of bm25/late: nDCG@10, R@100 |")
    lines = [head, "|---|---:|---:|" + "---:|---:|" * len(shown) + "---|"]
    for r in rows:
        cells = " | ".join(f"{r[s]['ndcg10']:.4f} | {r[s]['recall100']:.3f}" for s in shown)
        d_ndcg, d_recall = (r[default_label()][m] - max(r["bm25"][m], r["late"][m]) for m in ("ndcg10", "recall100"))
        verdict = "beats both" if d_ndcg > 0 and d_recall > 0 else "**does not beat both**"
        lines.append(f"| {r['dataset']} | {r['passages']:,} | {r['queries']} | {cells} | "
                     f"{d_ndcg:+.4f}, {d_recall:+.3f} ({verdict}) |")
    return "\n".join(lines)


def sweep_table(rows: list[dict[str, Any]]) -> str:
    sets = [r["dataset"] for r in rows]
    lines = ["| fusion | " + " | ".join(sets) + " | mean nDCG@10 | mean R@100 | sets above the better side |",
             "|---|" + "---:|" * (len(sets) + 3)]
    for label, _, _ in variants():
        nd = [r[label]["ndcg10"] for r in rows]
        rc = [r[label]["recall100"] for r in rows]
        wins = sum(r[label]["ndcg10"] > max(r["bm25"]["ndcg10"], r["late"]["ndcg10"]) for r in rows)
        mark = " **(library default)**" if label == default_label() else ""
        lines.append(f"| {label}{mark} | " + " | ".join(f"{v:.4f}" for v in nd)
                     + f" | {np.mean(nd):.4f} | {np.mean(rc):.3f} | {wins}/{len(rows)} |")
    for side in ("bm25", "late"):
        nd = [r[side]["ndcg10"] for r in rows]
        rc = [r[side]["recall100"] for r in rows]
        lines.append(f"| {side} alone | " + " | ".join(f"{v:.4f}" for v in nd)
                     + f" | {np.mean(nd):.4f} | {np.mean(rc):.3f} | — |")
    return "\n".join(lines)


def best_mean(rows: list[dict[str, Any]]) -> str:
    return max((label for label, _, _ in variants()), key=lambda lab: np.mean([r[lab]["ndcg10"] for r in rows]))


def speed_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| set | BM25 build s (tokenise + write) | BM25 ms/query | exhaustive MaxSim ms/query | "
             "fusion ms/query | max abs score difference vs bm25s |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['build_s']:.1f} | {r['ms_per_query']:.2f} | {r['late_ms']:.1f} | "
                     f"{r['fusion_ms']:.3f} | {r['max_diff']:.1e} |")
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    results_file.write_section(SECTION, text, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--depth", type=int, default=100, help="candidates taken from each side for fusion")
    ap.add_argument("--encode-only", nargs="+", metavar="DATASET", help="only encode and cache these sets")
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = ap.parse_args()
    if args.encode_only:
        for name in args.encode_only:
            vector_folder(name)
        return
    rows = [run_dataset(name, args.depth) for name in args.datasets]
    command = "python benchmarks/hybrid.py" + "".join(f" {a}" for a in sys.argv[1:])
    cpu = platform.processor() or platform.machine()
    text = (
        f"{SECTION}\n\n"
        f"`{command}` — BM25 (`lateragkit.bm25`: bm25s tokenisation, English stopwords, PyStemmer, lucene "
        f"k1=1.5 b=0.75), late interaction (exhaustive MaxSim over all-MiniLM-L6-v2 token vectors, documents "
        f"≤ {DOC_MAXLEN} tokens; MiniLM is not a ColBERT model) and hybrid (each side's top {args.depth} fused "
        f"per query by `lateragkit.fusion`; RRF k={RRF_K}; normalized = min-max per query; α = weight of late "
        f"interaction). Judged test queries only; nDCG@10 with graded gains, R@100 from the fused top 100. "
        f"{os.cpu_count()} CPU cores ({cpu}), torch threads {torch.get_num_threads()}, shared with other jobs: "
        f"times are indicative only.\n\n"
        f"{main_table(rows)}\n\n"
        f"Every fusion measured (nDCG@10 per set). The library default is one setting for all sets, not tuned "
        f"per collection: the best mean nDCG@10 here is {best_mean(rows)} "
        f"(`lateragkit.fusion` default: {default_label()}). It was picked on these same four sets (there is no "
        f"held-out collection), so its margin over the better side is an optimistic estimate; MEDLINE has only "
        f"30 queries.\n\n{sweep_table(rows)}\n\n"
        f"Speed and the BM25 cross-check (largest |score difference| against a fresh `bm25s` index over the same "
        f"passages, top {args.depth} of every query). BM25 search: one batched `bm25_search` call over all "
        f"queries, k={args.depth}. The exhaustive MaxSim time is the one measured when its run was cached.\n\n"
        f"{speed_table(rows)}\n"
    )
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"wrote {RESULTS} ({SECTION})")


if __name__ == "__main__":
    main()
