"""BEIR loading and nDCG@k / Recall@k: hand-computed cases, an independent brute force, the real folders."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from lateragkit.evaluation import corpus_text, load_beir, ndcg_at_k, recall_at_k

from .conftest import data_dir


def write_beir(root: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]]) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------------- loading
def test_load_beir_small_folder(tmp_path: Path) -> None:
    folder = write_beir(
        tmp_path / "mini",
        [{"_id": "d1", "title": "Cats", "text": "Cats purr."}, {"_id": "d2", "title": "", "text": "Dogs bark."},
         {"_id": "3", "text": "No title key."}],
        [{"_id": "q1", "text": "purring"}, {"_id": "q2", "text": "unjudged"}, {"_id": "q3", "text": "only zeros"},
         {"_id": "q4", "text": "barking"}],
        [("q1", "d1", 2), ("q1", "d2", 0), ("q3", "d1", 0), ("q4", "d2", 1)],
    )
    corpus, queries, qrels = load_beir(folder)
    assert corpus == {
        "d1": {"title": "Cats", "text": "Cats purr."},
        "d2": {"title": "", "text": "Dogs bark."},
        "3": {"title": "", "text": "No title key."},
    }
    assert queries == {"q1": "purring", "q4": "barking"}  # q2 unjudged, q3 has no relevant document
    assert qrels == {"q1": {"d1": 2, "d2": 0}, "q4": {"d2": 1}}
    assert [corpus_text(corpus[d]) for d in corpus] == ["Cats Cats purr.", "Dogs bark.", "No title key."]
    # A path to corpus.jsonl is accepted too.
    assert load_beir(folder / "corpus.jsonl")[1] == queries


def test_load_beir_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_beir(tmp_path / "nope")
    folder = write_beir(tmp_path / "f", [{"_id": "d", "text": "x"}], [{"_id": "q", "text": "y"}], [("q", "d", 1)])
    with pytest.raises(FileNotFoundError, match="available splits: test"):
        load_beir(folder, split="dev")
    (folder / "corpus.jsonl").write_text('{"_id": "d", "text": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"corpus.jsonl:2"):
        load_beir(folder)
    folder = write_beir(tmp_path / "g", [{"_id": "d", "text": "x"}], [{"_id": "q", "text": "y"}], [("q9", "d", 1)])
    with pytest.raises(ValueError, match="missing from"):
        load_beir(folder)


def test_load_real_folders() -> None:
    corpus, queries, qrels = load_beir(data_dir("adi"))
    assert (len(corpus), len(queries), sum(len(v) for v in qrels.values())) == (82, 35, 170)
    corpus, queries, qrels = load_beir(data_dir("scifact"))
    assert (len(corpus), len(queries), sum(len(v) for v in qrels.values())) == (5183, 300, 339)
    assert set(queries) == set(qrels)
    corpus, queries, qrels = load_beir(data_dir("cranfield"))
    assert len(queries) == 225 and sum(len(v) for v in qrels.values()) == 1837
    assert {s for v in qrels.values() for s in v.values()} == {0, 1, 2, 3, 4}


# ---------------------------------------------------------------------------------------------- metrics
QRELS = {"q1": {"a": 2, "b": 1, "c": 0}, "q2": {"z": 1}, "q3": {"c": 0}}  # q3: no relevant document


def test_ndcg_hand_computed() -> None:
    run = {"q1": ["c", "a", "x", "b"], "q3": ["c"]}  # q2 has no results
    # q1: DCG = (2^2-1)/log2(3) + (2^1-1)/log2(5); IDCG = 3/log2(2) + 1/log2(3)
    q1 = (3 / math.log2(3) + 1 / math.log2(5)) / (3 + 1 / math.log2(3))
    per = ndcg_at_k(run, QRELS, k=10, per_query=True)
    assert per == {"q1": pytest.approx(q1, abs=1e-12), "q2": 0.0}
    assert ndcg_at_k(run, QRELS, k=10) == pytest.approx(q1 / 2, abs=1e-12)
    # k=2 cuts "b" off; the ideal is still over the 2 best judgments.
    expected = (3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert ndcg_at_k(run, QRELS, k=2, per_query=True)["q1"] == pytest.approx(expected)
    # k=1: the ideal keeps only the grade-2 document.
    assert ndcg_at_k({"q1": ["a"], "q2": ["z"]}, QRELS, k=1) == 1.0
    assert ndcg_at_k({"q1": ["a", "b"], "q2": ["z"]}, QRELS) == 1.0
    assert ndcg_at_k({}, QRELS) == 0.0
    assert ndcg_at_k({}, {}) == 0.0


def test_score_dict_runs_and_duplicates() -> None:
    as_list = {"q1": ["c", "a", "x", "b"]}
    as_dict = {"q1": {"b": 0.5, "a": 3.0, "x": 1.0, "c": 7.0}}
    assert ndcg_at_k(as_dict, QRELS) == ndcg_at_k(as_list, QRELS)
    # Ties are broken by document id: "a" before "b".
    assert ndcg_at_k({"q1": {"b": 1.0, "a": 1.0}}, QRELS, k=1, per_query=True)["q1"] == 1.0
    # A repeated document counts once, at its first position.
    assert ndcg_at_k({"q1": ["a", "a", "b"]}, QRELS, per_query=True)["q1"] == 1.0
    assert recall_at_k({"q1": ["a", "a"]}, QRELS, k=2, per_query=True)["q1"] == 0.5


def test_recall_hand_computed() -> None:
    run = {"q1": ["c", "a", "x", "b"], "q2": ["y"]}
    assert recall_at_k(run, QRELS, k=2, per_query=True) == {"q1": 0.5, "q2": 0.0}
    assert recall_at_k(run, QRELS, k=4) == 0.5  # (1 + 0) / 2
    assert recall_at_k({"q1": ["a", "b"], "q2": ["z"]}, QRELS, k=100) == 1.0


def test_bad_k() -> None:
    for k, error in ((0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="k must be"):
            ndcg_at_k({}, QRELS, k=k)  # type: ignore[arg-type]
        with pytest.raises(error, match="k must be"):
            recall_at_k({}, QRELS, k=k)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ndcg_at_k({"q1": "abc"}, QRELS)


def brute_force(run: dict, qrels: dict, k: int) -> tuple[float, float]:
    """Independent vectorised computation over judged queries (relevance matrix + discount vector)."""
    judged = [q for q, docs in qrels.items() if any(s > 0 for s in docs.values())]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ndcgs, recalls = [], []
    for q in judged:
        ranked = list(dict.fromkeys(run.get(q, [])))[:k]
        rel = np.array([max(qrels[q].get(d, 0), 0) for d in ranked] + [0] * (k - len(ranked)), dtype=float)
        ideal = np.sort(np.array([s for s in qrels[q].values() if s > 0] + [0] * k, dtype=float))[::-1][:k]
        ndcgs.append(float(((2**rel - 1) * discount).sum() / ((2**ideal - 1) * discount).sum()))
        recalls.append(float((rel > 0).sum() / sum(1 for s in qrels[q].values() if s > 0)))
    return float(np.mean(ndcgs)), float(np.mean(recalls))


@pytest.mark.parametrize("seed", range(5))
def test_against_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(60)]
    qrels = {
        f"q{i}": {d: rng.choice([0, 0, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 15))} for i in range(40)
    }
    run = {q: [rng.choice(docs) for _ in range(rng.randint(0, 50))] for q in qrels if rng.random() < 0.9}
    for k in (1, 5, 10, 30):
        ndcg, recall = brute_force(run, qrels, k)
        assert ndcg_at_k(run, qrels, k) == pytest.approx(ndcg, abs=1e-12)
        assert recall_at_k(run, qrels, k) == pytest.approx(recall, abs=1e-12)
    # A perfect run (qrels sorted by grade) scores 1 on both.
    perfect = {q: sorted((d for d, s in v.items() if s > 0), key=lambda d: -v[d]) for q, v in qrels.items()}
    assert ndcg_at_k(perfect, qrels, 10) == pytest.approx(1.0) and recall_at_k(perfect, qrels, 100) == 1.0
