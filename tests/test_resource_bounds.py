"""Memory stays bounded by construction: long documents and large k are processed in bounded blocks.

Peak RSS itself is measured in benchmarks/memory.py (timings and RSS do not belong in asserts); these
tests pin the mechanisms that bound it, and that blocking changes no result.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lateragkit.index import build_index, plaid_build, plaid_search
from lateragkit.models import encoder as encoder_mod
from lateragkit.models import load_encoder

from .fixtures_models import write_bare_bert
from .test_index_codec import chunked, make_collection, make_queries, make_topics

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


@pytest.fixture(scope="module")
def long_encoder(tmp_path_factory: pytest.TempPathFactory):
    folder = write_bare_bert(tmp_path_factory.mktemp("long") / "ckpt", max_position_embeddings=1024)
    return load_encoder(str(folder), device="cpu")


def _text(n_words: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, n_words))


def test_long_documents_are_encoded_in_token_bounded_batches(long_encoder, monkeypatch) -> None:
    enc = long_encoder
    monkeypatch.setattr(encoder_mod, "BATCH_TOKENS_PER_ROW", 64)  # bsize 4 -> at most 256 tokens per batch
    shapes: list[tuple[int, int]] = []
    embed = enc._embed

    def spy(ids, attention):
        shapes.append(tuple(ids.shape))
        return embed(ids, attention)

    monkeypatch.setattr(enc, "_embed", spy)
    lengths = [900, 20, 300, 5, 700, 64, 1, 150, 40, 1000, 12, 80]
    docs = [_text(n, seed=i) for i, n in enumerate(lengths)]
    vecs, lens = enc.encode_documents(docs, bsize=4, doc_maxlen=1024)

    assert sum(rows for rows, _ in shapes) == len(docs)
    for rows, width in shapes:
        assert rows == 1 or rows * width <= 4 * 64, shapes  # a long document is encoded alone
    assert any(rows > 1 for rows, _ in shapes)  # short documents are still batched together
    assert max(width for _, width in shapes) > 256  # and long ones are not truncated to fit

    # the packed output is exactly each document encoded on its own, in input order
    monkeypatch.setattr(enc, "_embed", embed)
    assert vecs.dtype == torch.float16 and int(lens.sum()) == vecs.shape[0]
    starts = np.concatenate([[0], np.cumsum(lens.numpy())])
    for i, doc in enumerate(docs):
        alone, n = enc.encode_documents([doc], bsize=1, doc_maxlen=1024)
        assert int(n[0]) == int(lens[i])
        torch.testing.assert_close(vecs[starts[i] : starts[i + 1]].float(), alone.float(), atol=2e-3, rtol=0)


def test_encode_documents_of_nothing(long_encoder) -> None:
    vecs, lens = long_encoder.encode_documents([], bsize=4)
    assert vecs.shape == (0, long_encoder.dim) and lens.shape == (0,)


@pytest.fixture(scope="module")
def plaid_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    dim = 32
    topics = make_topics(40, dim, seed=3)
    v, lens, own = make_collection(600, dim, topics=topics, seed=4)
    Q, M = make_queries(topics, own, np.arange(0, 600, 60), seed=5)
    index = build_index(tmp_path_factory.mktemp("plaid") / "i", chunked(v, lens, 200), dim=dim,
                        index_type="plaid", nbits=2)
    return {"index": index, "Q": Q, "M": M, "lens": lens}


def test_exact_stage_reads_tokens_in_bounded_blocks(plaid_data, monkeypatch) -> None:
    index, Q, M = plaid_data["index"], plaid_data["Q"], plaid_data["M"]
    k = 400  # a large k: ndocs grows to 1,600, so every live passage reaches the exact stage
    expected = index.search(Q, M, k)

    budget = 100
    monkeypatch.setattr(plaid_search, "EXACT_TOKENS", budget)
    decompressed: list[int] = []
    original = index._token_block

    def spy(rows):
        block = original(rows)
        decompressed.append(int(block.codes.shape[0]))
        return block

    monkeypatch.setattr(index, "_token_block", spy)
    got = index.search(Q, M, k)

    longest = int(plaid_data["lens"].max())
    assert len(decompressed) > 10
    assert max(decompressed) <= max(budget, longest)
    # the batch shares the exact stage: each passage's tokens are read once, not once per query
    assert sum(decompressed) <= int(plaid_data["lens"].sum())
    for (s_exp, p_exp), (s_got, p_got) in zip(expected, got, strict=True):
        assert len(p_got) == k
        np.testing.assert_array_equal(p_got, p_exp)
        np.testing.assert_allclose(s_got, s_exp, rtol=0, atol=1e-5)


def test_training_sample_is_gathered_blockwise_as_float32(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((1000, 8)).astype(np.float16)
    np.save(tmp_path / "v.npy", v)
    mm = np.load(tmp_path / "v.npy", mmap_mode="r")
    rows = np.sort(rng.choice(1000, 333, replace=False))
    got = plaid_build.gather_float32(mm, rows, block=50)
    assert got.dtype == np.float32 and got.shape == (333, 8)
    np.testing.assert_array_equal(got, v[rows].astype(np.float32))


@pytest.mark.parametrize("kind", ["exact", "plaid"])
def test_merges_copy_rows_in_token_bounded_blocks(tmp_path: Path, monkeypatch, kind: str) -> None:
    from lateragkit.index import segments as segments_mod
    from lateragkit.index.storage import NpyAppender

    v, lens, _ = make_collection(300, 32, seed=12)
    starts = np.concatenate([[0], np.cumsum(lens)])
    index = build_index(tmp_path / "a", [(v[: starts[250]], lens[:250])], dim=32, index_type=kind)
    index, _ = index.add(tmp_path / "b", [(v[starts[250] :], lens[250:])])
    index = index.delete(tmp_path / "c", np.arange(0, 300, 7))
    expected_rows = np.setdiff1d(np.arange(300), np.arange(0, 300, 7))

    blocks: list[int] = []
    append = NpyAppender.append

    def spy(self, block):  # type: ignore[no-untyped-def]
        if self.path.name in ("vectors.npy", "codes.npy"):
            blocks.append(int(np.asarray(block).shape[0]))
        return append(self, block)

    monkeypatch.setattr(segments_mod, "COPY_TOKENS", 100)
    monkeypatch.setattr(NpyAppender, "append", spy)
    compacted = index.compact(tmp_path / "d")
    assert len(blocks) > 10 and max(blocks) <= max(100, int(lens.max()))
    # blocking changes nothing: the kept rows, in order, with their tokens
    assert compacted.live_pids().tolist() == expected_rows.tolist() and compacted.num_rows == expected_rows.size
    (segment,) = compacted.segments
    arrays = segment.token_arrays()
    name = "vectors.npy" if kind == "exact" else "codes.npy"
    source = np.concatenate([np.asarray(s.token_arrays()[name]) for s in index.segments])
    tok = np.concatenate([np.arange(starts[r], starts[r + 1]) for r in expected_rows])
    np.testing.assert_array_equal(np.asarray(arrays[name]), source[tok])
