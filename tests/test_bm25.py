"""Segment-aware BM25 (lateragkit.bm25): equal to a fresh bm25s index on the live passages, across segments,
deletes, merges and filters; validated, pickle-free files."""
from __future__ import annotations

import json
import math
from pathlib import Path

import bm25s
import numpy as np
import pytest
import Stemmer

from lateragkit.bm25 import BM25_FOLDER, Bm25Config, Bm25Segment, bm25_search, tokenize
from lateragkit.evaluation import corpus_text, load_beir
from lateragkit.exceptions import CorruptIndexError

from .conftest import data_dir

FRUIT = ["The apple and the banana.", "An apple with cherries.", "Banana, cherry.", "Durian!"]


@pytest.fixture(scope="module")
def scifact() -> tuple[list[str], list[str]]:
    """400 SciFact passages and 30 of its judged test queries."""
    corpus, queries, _ = load_beir(data_dir("scifact"))
    texts = [corpus_text(corpus[d]) for d in list(corpus)[:400]]
    return texts, list(queries.values())[:30]


def write_segments(
    root: Path, texts: list[str], cuts: list[int], config: Bm25Config | None = None
) -> list[Bm25Segment]:
    """Split ``texts`` at ``cuts`` into segments with pids 0..n-1, as successive writes would."""
    bounds = [0, *cuts, len(texts)]
    segments = []
    for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        Bm25Segment.write(root / f"seg{i}", np.arange(start, end), texts[start:end], config=config)
        segments.append(Bm25Segment.load(root / f"seg{i}"))
    return segments


def reference_scores(texts: list[str], queries: list[str], *, language: str = "english", stopwords: str = "en",
                     **params: object) -> np.ndarray:
    """bm25s's own scores [queries, texts] of a fresh index over ``texts``."""
    stemmer = Stemmer.Stemmer(language)
    retriever = bm25s.BM25(**params)
    retriever.index(bm25s.tokenize(texts, stopwords=stopwords, stemmer=stemmer, show_progress=False),
                    show_progress=False)
    query_tokens = bm25s.tokenize(queries, stopwords=stopwords, stemmer=stemmer, return_ids=False, show_progress=False)
    return np.stack([retriever.get_scores(q) if q else np.zeros(len(texts), np.float32) for q in query_tokens])


def dense(results: list[tuple[np.ndarray, np.ndarray]], pids: np.ndarray) -> np.ndarray:
    """Our results as a [queries, len(pids)] score matrix (0 for passages not returned)."""
    column = {int(p): j for j, p in enumerate(pids)}
    out = np.zeros((len(results), len(pids)))
    for i, (scores, found) in enumerate(results):
        for s, p in zip(scores, found, strict=True):
            out[i, column[int(p)]] = s
    return out


def assert_same_as_reference(results: list[tuple[np.ndarray, np.ndarray]], reference: np.ndarray,
                             live_pids: np.ndarray) -> None:
    np.testing.assert_allclose(dense(results, live_pids), reference, rtol=1e-5, atol=1e-5)
    column = {int(p): j for j, p in enumerate(live_pids)}
    for (scores, pids), ref in zip(results, reference, strict=True):
        assert scores.dtype == np.float32 and pids.dtype == np.int64
        assert np.all(np.diff(scores) <= 0)
        # the same ranking: bm25s's scores taken in our order never increase (beyond float32 noise)
        ref_in_our_order = ref[[column[int(p)] for p in pids]]
        assert np.all(np.diff(ref_in_our_order) <= 1e-5)
        # every passage bm25s scores above 0 is returned
        assert set(live_pids[ref > 0].tolist()) <= set(pids.tolist())


def test_tokenize_is_bm25s_with_stopwords_and_stemming() -> None:
    texts = ["The runners were running quickly to the studies", "", "of the and"]
    expected = bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False,
                              show_progress=False)
    assert tokenize(texts) == expected
    assert tokenize(texts)[0] == ["runner", "were", "run", "quick", "studi"]  # "were" is not on the list
    assert tokenize(texts)[1:] == [[], []]
    assert tokenize(texts, Bm25Config(stemming=False, stopwords=None))[0][:3] == ["the", "runners", "were"]


@pytest.mark.parametrize("params", [{}, {"method": "atire", "k1": 1.2, "b": 0.6}, {"method": "robertson", "k1": 0.9,
                                                                                     "b": 0.4}])
def test_scores_equal_a_fresh_bm25s_index_over_segments_and_deletes(tmp_path: Path, scifact, params) -> None:
    texts, queries = scifact
    segments = write_segments(tmp_path, texts, [150, 170, 320], Bm25Config(**params))
    deleted = np.array([0, 3, 151, 160, 169, 300, 301, 399])
    live_pids = np.setdiff1d(np.arange(len(texts)), deleted)

    def is_live(pids: np.ndarray) -> np.ndarray:
        return ~np.isin(pids, deleted)

    results = bm25_search(segments, queries, 1000, is_live=is_live)
    reference = reference_scores([texts[p] for p in live_pids], queries, **params)
    assert_same_as_reference(results, reference, live_pids)
    assert not set(deleted.tolist()) & {int(p) for _, pids in results for p in pids}
    # a small k gives the head of the same ranking
    for (scores, _), ref in zip(bm25_search(segments, queries, 10, is_live=is_live), reference, strict=True):
        np.testing.assert_allclose(scores, np.sort(ref)[::-1][:10], rtol=1e-5, atol=1e-5)


def test_segments_with_different_vocabularies(tmp_path: Path) -> None:
    texts = ["cats purr on warm sofas", "a cat chases mice", "quantum entanglement of photons",
             "photons and cats in quantum boxes", "sofas and boxes"]
    segments = write_segments(tmp_path / "split", texts, [2])
    assert "cat" in segments[0].vocabulary and "quantum" not in segments[0].vocabulary
    assert "quantum" in segments[1].vocabulary and "purr" not in segments[1].vocabulary
    queries = ["quantum cats", "purring photons", "sofa"]
    results = bm25_search(segments, queries, 10)
    assert_same_as_reference(results, reference_scores(texts, queries), np.arange(len(texts)))
    single = write_segments(tmp_path / "single", texts, [])
    for (s1, p1), (s2, p2) in zip(results, bm25_search(single, queries, 10), strict=True):
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_allclose(s1, s2, rtol=1e-6)


def lucene(tf: int, dl: int, n: int, df: int, avgdl: float, k1: float = 1.5, b: float = 0.75) -> float:
    """BM25 as bm25s's default "lucene" variant defines it."""
    return math.log(1 + (n - df + 0.5) / (df + 0.5)) * tf / (tf + k1 * (1 - b + b * dl / avgdl))


def test_deletes_change_n_avgdl_and_df_exactly(tmp_path: Path) -> None:
    # terms: appl banana | appl cherri | banana cherri | durian  -> lengths 2, 2, 2, 1
    segments = write_segments(tmp_path, FRUIT, [2])
    (scores, pids), = bm25_search(segments, ["apples"], 10)
    assert pids.tolist() == [0, 1]
    np.testing.assert_allclose(scores, [lucene(1, 2, n=4, df=2, avgdl=7 / 4)] * 2, rtol=1e-6)

    # deleting pid 1 (in the first segment): N 4 -> 3, df(appl) 2 -> 1, avgdl 7/4 -> 5/3
    def is_live(pids: np.ndarray) -> np.ndarray:
        return pids != 1

    (scores, pids), = bm25_search(segments, ["apples"], 10, is_live=is_live)
    assert pids.tolist() == [0]
    np.testing.assert_allclose(scores, [lucene(1, 2, n=3, df=1, avgdl=5 / 3)], rtol=1e-6)
    # a delete in one segment changes the scores of passages in the other (global statistics)
    before = bm25_search(segments, ["durian cherry"], 10)[0]
    after = bm25_search(segments, ["durian cherry"], 10, is_live=is_live)[0]
    assert before[1].tolist() == [3, 1, 2] and after[1].tolist() == [3, 2]
    expected_durian = lucene(1, 1, n=3, df=1, avgdl=5 / 3)
    expected_cherry = lucene(1, 2, n=3, df=1, avgdl=5 / 3)
    np.testing.assert_allclose(after[0], [expected_durian, expected_cherry], rtol=1e-6)
    assert after[0][0] != pytest.approx(before[0][0])


def test_repeated_query_terms_count_as_in_bm25s(tmp_path: Path) -> None:
    segments = write_segments(tmp_path, FRUIT, [])
    once, twice = bm25_search(segments, ["banana", "banana bananas"], 10)
    np.testing.assert_allclose(twice[0], 2 * once[0], rtol=1e-6)
    assert_same_as_reference([twice], reference_scores(FRUIT, ["banana bananas"]), np.arange(4))


def test_allowed_restricts_candidates_before_ranking(tmp_path: Path, scifact) -> None:
    texts, queries = scifact
    segments = write_segments(tmp_path, texts, [300])
    full = bm25_search(segments, queries[:5], 1000)
    # allow only passages ranked 50th and below: a filter after top-10 would leave nothing
    allowed = np.unique(np.concatenate([pids[50:] for _, pids in full]))
    restricted = bm25_search(segments, queries[:5], 10, allowed=allowed)
    for (scores, pids), (full_scores, full_pids) in zip(restricted, full, strict=True):
        expected = [(s, p) for s, p in zip(full_scores, full_pids, strict=True) if p in set(allowed.tolist())][:10]
        assert len(pids) == min(10, len(expected)) and len(pids) > 0
        assert pids.tolist() == [p for _, p in expected]
        # the statistics stay those of every live passage: scores are unchanged by the filter
        np.testing.assert_allclose(scores, [s for s, _ in expected], rtol=1e-6)
    # one array per query, and an empty allowed set
    per_query = bm25_search(segments, queries[:2], 5, allowed=[full[0][1][3:4], np.array([], dtype=np.int64)])
    assert per_query[0][1].tolist() == [int(full[0][1][3])] and len(per_query[1][1]) == 0


def test_query_without_usable_terms_gives_an_empty_result(tmp_path: Path) -> None:
    segments = write_segments(tmp_path, FRUIT, [])
    results = bm25_search(segments, ["the and of", "", "zyxwv", "banana"], 10)
    for scores, pids in results[:3]:
        assert scores.shape == (0,) and pids.shape == (0,)
        assert scores.dtype == np.float32 and pids.dtype == np.int64
    assert results[3][1].tolist() == [0, 2]
    # nothing live, or no segment at all
    assert len(bm25_search(segments, ["banana"], 10, is_live=lambda p: np.zeros(len(p), bool))[0][1]) == 0
    assert len(bm25_search([], ["banana"], 10)[0][1]) == 0


def test_merge_equals_a_fresh_write_of_the_kept_passages(tmp_path: Path, scifact) -> None:
    texts, queries = scifact
    texts = texts[:200]
    segments = write_segments(tmp_path / "parts", texts, [60, 130])
    deleted = np.array([1, 59, 60, 100, 199])

    def is_live(pids: np.ndarray) -> np.ndarray:
        return ~np.isin(pids, deleted)

    Bm25Segment.merge(tmp_path / "merged", segments[::-1], is_live)
    merged = Bm25Segment.load(tmp_path / "merged")
    kept = np.setdiff1d(np.arange(len(texts)), deleted)
    Bm25Segment.write(tmp_path / "fresh", kept, [texts[p] for p in kept])
    fresh = Bm25Segment.load(tmp_path / "fresh")
    assert merged.vocabulary == fresh.vocabulary
    for name in ("pids", "doclens", "indptr", "rows", "tfs"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(fresh, name), err_msg=name)
    before = bm25_search(segments, queries, 100, is_live=is_live)
    for (s1, p1), (s2, p2) in zip(before, bm25_search([merged], queries, 100), strict=True):
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_allclose(s1, s2, rtol=1e-6)


def test_files_are_npy_and_json_only_never_pickle(tmp_path: Path) -> None:
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "passages.sqlite").write_bytes(b"other files of the segment stay")
    Bm25Segment.write(tmp_path / "seg", np.arange(10, 14), FRUIT)
    files = sorted((tmp_path / "seg" / BM25_FOLDER).iterdir())
    assert {f.suffix for f in files} == {".npy", ".json"}
    for f in files:
        if f.suffix == ".npy":
            array = np.load(f, allow_pickle=False)
            assert not array.dtype.hasobject
        else:
            json.loads(f.read_text(encoding="utf-8"))
    assert (tmp_path / "seg" / "passages.sqlite").read_bytes() == b"other files of the segment stay"
    segment = Bm25Segment.load(tmp_path / "seg")
    assert segment.pids.tolist() == [10, 11, 12, 13] and isinstance(segment.rows, np.memmap)
    assert segment.config == Bm25Config() and Bm25Segment.exists(tmp_path / "seg")
    with pytest.raises(FileExistsError):
        Bm25Segment.write(tmp_path / "seg", np.arange(10, 14), FRUIT)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def _rewrite(name: str, change):
    def apply(path: Path) -> None:
        array = np.load(path)
        np.save(path, change(array), allow_pickle=False)
    return name, apply


def _edit_json(name: str, change):
    def apply(path: Path) -> None:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return name, apply


CORRUPTIONS = {
    "missing rows": ("rows.npy", Path.unlink),
    "missing meta": ("bm25.json", Path.unlink),
    "missing vocab": ("vocab.json", Path.unlink),
    "truncated tfs": ("tfs.npy", _truncate),
    "not json": ("bm25.json", lambda p: p.write_text("{not json")),
    "rows out of range": _rewrite("rows.npy", lambda a: a + 100),
    "pids not increasing": _rewrite("pids.npy", lambda a: a[::-1].copy()),
    "wrong dtype": _rewrite("doclens.npy", lambda a: a.astype(np.float64)),
    "short indptr": _rewrite("indptr.npy", lambda a: a[:-1].copy()),
    "tf zero": _rewrite("tfs.npy", lambda a: np.where(np.arange(len(a)) == 0, 0, a).astype(a.dtype)),
    "doclens disagree": _rewrite("doclens.npy", lambda a: (a + 1).astype(a.dtype)),
    "vocab unsorted": _edit_json("vocab.json", lambda d: d["terms"].reverse()),
    "vocab short": _edit_json("vocab.json", lambda d: d["terms"].pop()),
    "format version": _edit_json("bm25.json", lambda d: d.update(format_version=99)),
    "bad config": _edit_json("bm25.json", lambda d: d["config"].update(method="bm42")),
    "bad count": _edit_json("bm25.json", lambda d: d.update(num_postings=-1)),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_or_missing_file_is_a_corrupt_index_error_naming_it(tmp_path: Path, case: str) -> None:
    Bm25Segment.write(tmp_path, np.arange(4), FRUIT)
    name, damage = CORRUPTIONS[case]
    damage(tmp_path / BM25_FOLDER / name)
    with pytest.raises(CorruptIndexError, match=name.replace(".", r"\.")):
        Bm25Segment.load(tmp_path)


def test_segment_without_bm25_files(tmp_path: Path) -> None:
    assert not Bm25Segment.exists(tmp_path)
    with pytest.raises(CorruptIndexError, match="bm25"):
        Bm25Segment.load(tmp_path)


def test_empty_segment_round_trips(tmp_path: Path) -> None:
    Bm25Segment.write(tmp_path / "empty", np.array([], dtype=np.int64), [])
    empty = Bm25Segment.load(tmp_path / "empty")
    assert empty.num_passages == 0 and empty.num_terms == 0
    segments = [empty, *write_segments(tmp_path, FRUIT, [])]
    assert bm25_search(segments, ["banana"], 10)[0][1].tolist() == [0, 2]


def test_other_languages_use_their_stemmer_and_stopwords(tmp_path: Path) -> None:
    config = Bm25Config(language="de")
    assert config.language == "german" and config.stopwords == "german"
    texts = ["Die Häuser und die Gärten", "Ein Haus mit einem Garten", "Der Hund läuft"]
    assert tokenize(texts, config) == bm25s.tokenize(texts, stopwords="de", stemmer=Stemmer.Stemmer("german"),
                                                      return_ids=False, show_progress=False)
    segments = write_segments(tmp_path, texts, [1], config)
    results = bm25_search(segments, ["Häuser Garten"], 10)
    assert_same_as_reference(results, reference_scores(texts, ["Häuser Garten"], language="german",
                                                       stopwords="de"), np.arange(3))
    # a language without a bm25s stopword list: stemming only; without a stemmer: neither (for_language)
    assert Bm25Config(language="fi").stopwords is None
    assert Bm25Config.for_language("zh") == Bm25Config(language="chinese", stemming=False)
    assert Bm25Config.for_language("en") == Bm25Config()


def test_search_time_config_changes_scoring_not_tokens(tmp_path: Path) -> None:
    segments = write_segments(tmp_path, FRUIT, [])
    tuned = bm25_search(segments, ["apple durian"], 10, config=Bm25Config(k1=0.5, b=0.2))
    assert_same_as_reference(tuned, reference_scores(FRUIT, ["apple durian"], k1=0.5, b=0.2), np.arange(4))
    with pytest.raises(ValueError, match="tokenises differently"):
        bm25_search(segments, ["apple"], 10, config=Bm25Config(stemming=False))


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    segments = write_segments(tmp_path / "ok", FRUIT, [2])
    with pytest.raises(ValueError, match="k must be at least 1"):
        bm25_search(segments, ["apple"], 0)
    with pytest.raises(TypeError, match="k must be an int"):
        bm25_search(segments, ["apple"], 2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of strings"):
        bm25_search(segments, "apple", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is_live must return a bool array"):
        bm25_search(segments, ["apple"], 3, is_live=lambda p: np.ones(1, bool))
    with pytest.raises(ValueError, match="overlap"):
        bm25_search([segments[0], segments[0]], ["apple"], 3)
    with pytest.raises(ValueError, match="one per query"):
        bm25_search(segments, ["apple"], 3, allowed=[np.array([0]), np.array([1])])
    with pytest.raises(ValueError, match="strictly increasing"):
        Bm25Segment.write(tmp_path / "bad", np.array([3, 2, 5, 6]), FRUIT)
    with pytest.raises(ValueError, match="one id per text"):
        Bm25Segment.write(tmp_path / "bad", np.arange(3), FRUIT)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        Bm25Segment.write(tmp_path / "bad", np.arange(2), ["ok", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="no stemmer for 'klingon'"):
        Bm25Config(language="klingon")
    with pytest.raises(ValueError, match="method must be one of"):
        Bm25Config(method="bm42")
    with pytest.raises(ValueError, match="b must be a number"):
        Bm25Config(b=1.5)
    other = write_segments(tmp_path / "other", ["apple pie"], [], Bm25Config(stemming=False))
    with pytest.raises(ValueError, match="different settings"):
        bm25_search([*segments, *other], ["apple"], 3)


def test_config_round_trips_through_json() -> None:
    for config in (Bm25Config(), Bm25Config(language="fr", k1=1.2, b=0.5, method="atire"),
                   Bm25Config(stopwords=["foo", "bar"], stemming=False)):
        assert Bm25Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
