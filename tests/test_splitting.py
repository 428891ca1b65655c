"""TokenSplitter and split_documents: exact offsets, token budgets, hierarchy, overlap, Unicode, adapters."""
from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lateragkit.splitting import Chunk, Passage, TokenSplitter, hf_token_spans, split_documents

from .conftest import data_dir


def ws_spans(text: str) -> list[tuple[int, int]]:
    """One token per whitespace-separated word: hand-checkable counts."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def char_spans(text: str) -> list[tuple[int, int]]:
    """One token per non-space character (like BERT on Chinese)."""
    return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]


def texts(chunks: list[Chunk]) -> list[str]:
    return [c.text for c in chunks]


@pytest.fixture(scope="module")
def tokenizer(minilm: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm)


def recount(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def check_invariants(text: str, chunks: list[Chunk], count, max_tokens: int) -> None:
    covered = [False] * len(text)
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.text and c.text == c.text.strip()
        assert count(c.text) <= max_tokens
        for i in range(c.start, c.end):
            covered[i] = True
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())
    starts = [c.start for c in chunks]
    ends = [c.end for c in chunks]
    assert starts == sorted(set(starts)) and ends == sorted(set(ends))  # always progress


# ---------------------------------------------------------------------------------------------- validation
def test_validation() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        TokenSplitter(ws_spans, 0)
    with pytest.raises(ValueError, match="overlap_tokens"):
        TokenSplitter(ws_spans, 10, 10)
    with pytest.raises(ValueError, match="overlap_tokens"):
        TokenSplitter(ws_spans, 10, -1)
    with pytest.raises(TypeError):
        TokenSplitter("not callable", 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        TokenSplitter(ws_spans, 10).split(b"bytes")  # type: ignore[arg-type]
    assert TokenSplitter(ws_spans, 253).overlap_tokens == 31
    assert TokenSplitter(ws_spans, 5).overlap_tokens == 0


def test_blank_text_gives_no_chunks() -> None:
    s = TokenSplitter(ws_spans, 4)
    assert s.split("") == []
    assert s.split(" \n\t \u3000 ") == []


# ---------------------------------------------------------------------------------------------- exact cases
def test_word_windows_exact_offsets() -> None:
    text = "one two three four five six seven eight nine ten"
    chunks = TokenSplitter(ws_spans, 4, 0).split(text)
    assert chunks == [
        Chunk("one two three four", 0, 18),
        Chunk("five six seven eight", 19, 39),
        Chunk("nine ten", 40, 48),
    ]


def test_overlap_exact() -> None:
    text = "one two three four five six seven eight nine ten"
    chunks = TokenSplitter(ws_spans, 4, 1).split(text)
    assert texts(chunks) == ["one two three four", "four five six seven", "seven eight nine ten"]
    chunks = TokenSplitter(ws_spans, 4, 2).split(text)
    assert texts(chunks) == ["one two three four", "three four five six", "five six seven eight",
                             "seven eight nine ten"]
    assert [c.start for c in chunks] == [0, 8, 19, 28]


def test_whitespace_trimmed_and_offsets_adjusted() -> None:
    text = "\n\n  Alpha beta.   \n\n\n   Gamma delta.  \n"
    chunks = TokenSplitter(ws_spans, 2, 0).split(text)
    assert chunks == [Chunk("Alpha beta.", 4, 15), Chunk("Gamma delta.", 24, 36)]


def test_sentence_preferred_over_word() -> None:
    text = "Aaa bbb ccc. Ddd eee fff. Ggg hhh iii."
    chunks = TokenSplitter(ws_spans, 8, 0).split(text)
    assert chunks == [Chunk("Aaa bbb ccc. Ddd eee fff.", 0, 25), Chunk("Ggg hhh iii.", 26, 38)]


def test_paragraph_preferred_over_sentence() -> None:
    text = "One two. Three four five.\n\nSix seven. Eight nine ten."
    chunks = TokenSplitter(ws_spans, 8, 0).split(text)
    # A sentence boundary after "Six seven." would also fit in 8 tokens; the paragraph wins.
    assert texts(chunks) == ["One two. Three four five.", "Six seven. Eight nine ten."]


def test_small_paragraph_is_packed_with_sentences() -> None:
    # The paragraph break after 3 tokens would leave the chunk under half full: sentences are used instead.
    text = "A1 a2 a3.\n\nB1 b2 b3 b4. B5 b6 b7.\n\nC1 c2."
    chunks = TokenSplitter(ws_spans, 8, 0).split(text)
    assert texts(chunks) == ["A1 a2 a3.\n\nB1 b2 b3 b4.", "B5 b6 b7.\n\nC1 c2."]


def test_line_break_is_a_sentence_boundary() -> None:
    text = "- item one here\n- item two here\n- item three"
    chunks = TokenSplitter(ws_spans, 8, 0).split(text)
    assert texts(chunks) == ["- item one here\n- item two here", "- item three"]


def test_abbreviation_before_lowercase_is_not_a_sentence_end() -> None:
    text = "Alpha beta gamma e.g. delta epsilon zeta eta"
    chunks = TokenSplitter(ws_spans, 6, 0).split(text)
    assert texts(chunks) == ["Alpha beta gamma e.g. delta epsilon", "zeta eta"]
    text = "Alpha beta gamma end. Delta epsilon zeta eta"
    assert texts(TokenSplitter(ws_spans, 6, 0).split(text)) == ["Alpha beta gamma end.", "Delta epsilon zeta eta"]


def test_cjk_full_stop_is_a_sentence_end_without_spaces() -> None:
    text = "他来了。她走了。我们都在。"
    chunks = TokenSplitter(char_spans, 6, 0).split(text)
    assert chunks == [Chunk("他来了。", 0, 4), Chunk("她走了。", 4, 8), Chunk("我们都在。", 8, 13)]


def test_token_windows_for_a_long_word() -> None:
    text = "ab " + "x" * 10 + " cd"
    chunks = TokenSplitter(char_spans, 4, 0).split(text)
    assert texts(chunks) == ["ab", "xxxx", "xxxx", "xx cd"]
    check_invariants(text, chunks, lambda t: len(char_spans(t)), 4)


def test_recount_guard_shrinks_chunks() -> None:
    # A tokenizer whose count depends on context: a text starting with "x" gets one extra token, as a
    # WordPiece continuation (##x) can become more tokens when it starts a string. Cuts inside the run
    # would then exceed the budget when the chunk is tokenized on its own.
    def spans(text: str) -> list[tuple[int, int]]:
        out = char_spans(text)
        if text.startswith("x"):
            out.insert(0, (0, 1))
        return out

    chunks = TokenSplitter(spans, 4, 0).split("x" * 12)
    assert texts(chunks) == ["xxx", "xxx", "xxx", "xxx"]
    assert all(len(spans(c.text)) <= 4 for c in chunks)


def test_never_cuts_inside_a_shared_span() -> None:
    # Byte-fallback tokenizers give several tokens the same character span: no cut may fall between them.
    def spans(text: str) -> list[tuple[int, int]]:
        out = []
        for i, ch in enumerate(text):
            if not ch.isspace():
                out.extend([(i, i + 1)] * (3 if ord(ch) > 127 else 1))
        return out

    text = "aéb" * 5
    chunks = TokenSplitter(spans, 4, 1).split(text)
    check_invariants(text, chunks, lambda t: len(spans(t)), 4)
    assert texts(chunks)[:2] == ["aé", "ba"]  # "aéb" would be 5 tokens; "baé" too


def test_text_the_tokenizer_drops_is_kept() -> None:
    chunks = TokenSplitter(lambda t: [], 4).split("  \x07\x08  ")
    assert chunks == [Chunk("\x07\x08", 2, 4)]


def test_deterministic_and_callable() -> None:
    text = " ".join(f"w{i}{'.' if i % 7 == 0 else ''}" for i in range(500))
    s = TokenSplitter(ws_spans, 20, 3)
    assert s.split(text) == s.split(text) == s(text)
    assert s.split(text) == TokenSplitter(ws_spans, 20, 3).split(text)


# ---------------------------------------------------------------------------------------------- real tokenizer
@pytest.mark.parametrize("lang", ["zh", "ar", "th", "hi", "en"])
def test_xquad_paragraphs_with_minilm(tokenizer, lang: str) -> None:
    folder = data_dir(f"xquad/{lang}")
    docs = [json.loads(line)["text"] for line in (folder / "corpus.jsonl").open(encoding="utf-8")][:25]
    splitter = TokenSplitter(hf_token_spans(tokenizer), 48, 6)
    cut_inside_run = 0
    n_chunks = 0
    for text in docs:
        chunks = splitter.split(text)
        check_invariants(text, chunks, lambda t: recount(tokenizer, t), 48)
        n_chunks += len(chunks)
        cut_inside_run += sum(1 for c in chunks[:-1] if c.end < len(text) and not text[c.end].isspace())
        if lang == "en":
            for c in chunks:
                assert c.start == 0 or text[c.start - 1].isspace()  # overlap starts on a word
                assert c.end == len(text) or text[c.end].isspace()
    assert n_chunks > len(docs)  # the paragraphs are longer than 48 tokens
    if lang == "zh":
        assert cut_inside_run > 0  # no spaces: token windows are used


def test_minilm_token_that_retokenizes_longer_is_cut_by_characters(tokenizer, caplog) -> None:
    # In "XcZ" MiniLM has two tokens, "x" and "##cz"; on its own "cZ" is "c" + "##z", two tokens.
    splitter = TokenSplitter(hf_token_spans(tokenizer), 1, 0)
    assert splitter.split("XcZ") == [Chunk("X", 0, 1), Chunk("c", 1, 2), Chunk("Z", 2, 3)]
    # A single character that is two tokens by itself (Hangul decomposes into jamo) cannot be cut.
    with caplog.at_level("WARNING", logger="lateragkit.splitting"):
        assert splitter.split("케") == [Chunk("케", 0, 1)]
    assert "alone is more than max_tokens" in caplog.text


def test_large_document(tokenizer) -> None:
    folder = data_dir("scifact")
    parts, size = [], 0
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            parts.append(doc["title"] + "\n\n" + doc["text"])
            size += len(parts[-1]) + 2
            if size > 200_000:
                break
    text = "\n\n".join(parts)[:200_000]
    splitter = TokenSplitter(hf_token_spans(tokenizer), 253)
    chunks = splitter.split(text)
    assert len(chunks) > 150
    for c in chunks:
        assert text[c.start : c.end] == c.text
    counts = tokenizer([c.text for c in chunks], add_special_tokens=False, verbose=False)["input_ids"]
    assert max(len(ids) for ids in counts) <= 253
    assert sum(len(ids) for ids in counts) / len(chunks) > 0.7 * 253  # greedy packing fills chunks
    covered = bytearray(len(text))
    for c in chunks:
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())


# ---------------------------------------------------------------------------------------------- properties
ALPHABET = st.sampled_from(list("abcXYZ .,!?\n\t") + ["é", "你", "好", "。", "ก", "😀", "\u00a0", "\x07", "ß", "ﬁ"])


@settings(max_examples=200, deadline=None)
@given(text=st.text(ALPHABET, max_size=300), max_tokens=st.integers(1, 12), data=st.data())
def test_property_whitespace_tokens(text: str, max_tokens: int, data) -> None:
    overlap = data.draw(st.integers(0, max_tokens - 1))
    chunks = TokenSplitter(ws_spans, max_tokens, overlap).split(text)
    check_invariants(text, chunks, lambda t: len(ws_spans(t)), max_tokens)
    assert (not chunks) == (not text.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(ALPHABET, max_size=200) | st.text(max_size=120), max_tokens=st.integers(4, 16), data=st.data())
def test_property_minilm_tokens(tokenizer, text: str, max_tokens: int, data) -> None:
    overlap = data.draw(st.integers(0, max_tokens - 1))
    chunks = TokenSplitter(hf_token_spans(tokenizer), max_tokens, overlap).split(text)
    check_invariants(text, chunks, lambda t: recount(tokenizer, t), max_tokens)


# ---------------------------------------------------------------------------------------------- passages
def test_split_documents_with_splitter() -> None:
    meta = {"source": "a", "tags": ["x"]}
    passages = split_documents(
        ["one two three four five six", "  ", "seven eight"],
        ["d1", "d2", "d3"],
        [meta, None, {"source": "c"}],
        splitter=TokenSplitter(ws_spans, 4, 0),
    )
    assert [(p.passage_id, p.document_id, p.content, p.start, p.end, p.chunk_index) for p in passages] == [
        ("d1-0", "d1", "one two three four", 0, 18, 0),
        ("d1-1", "d1", "five six", 19, 27, 1),
        ("d3-0", "d3", "seven eight", 0, 11, 0),
    ]
    assert passages[0].metadata == meta and passages[2].metadata == {"source": "c"}
    # Deep copies: no passage shares the caller's dict or another passage's dict.
    passages[0].metadata["tags"].append("y")
    assert meta["tags"] == ["x"] and passages[1].metadata["tags"] == ["x"]
    assert passages[0].metadata is not passages[1].metadata


def test_split_documents_without_splitting() -> None:
    passages = split_documents(["  Whole text. Kept as is  ", "", "b"], ["a", "b", "c"], None, None)
    assert [(p.passage_id, p.content, p.start, p.end, p.metadata) for p in passages] == [
        ("a-0", "  Whole text. Kept as is  ", 0, 26, None),
        ("c-0", "b", 0, 1, None),
    ]


def test_split_documents_validation() -> None:
    with pytest.raises(ValueError, match="document_ids"):
        split_documents(["a", "b"], ["1"])
    with pytest.raises(ValueError, match="metadatas"):
        split_documents(["a"], ["1"], [{}, {}])
    with pytest.raises(TypeError):
        split_documents(["a"], [1])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        split_documents(["a"], ["1"], ["meta"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not both"):
        split_documents(["a"], ["1"], splitter=TokenSplitter(ws_spans, 3), document_splitter_fn=lambda d, i: [])


def test_ragatouille_style_splitter_fn() -> None:
    calls = {}

    def sentence_splitter(documents, document_ids, chunk_size=256):
        calls["chunk_size"] = chunk_size
        out = []
        for doc, doc_id in zip(documents, document_ids, strict=True):
            sentences = re.findall(r"[^.]+\.", doc)
            # Overlapping windows of two sentences, stripped, as LlamaIndex's SentenceSplitter would.
            for i in range(max(1, len(sentences) - 1)):
                out.append({"document_id": doc_id, "content": " ".join(s.strip() for s in sentences[i : i + 2])})
        return out

    docs = ["First one. Second one. Third one.", "Same. Same. Same."]
    passages = split_documents(
        docs, ["x", "y"], [{"k": 1}, None],
        document_splitter_fn=sentence_splitter, splitter_kwargs={"chunk_size": 64},
    )
    assert calls["chunk_size"] == 64
    assert [(p.passage_id, p.content, p.start, p.end) for p in passages] == [
        ("x-0", "First one. Second one.", 0, 22),
        ("x-1", "Second one. Third one.", 11, 33),
        ("y-0", "Same. Same.", 0, 11),
        ("y-1", "Same. Same.", 6, 17),  # the second occurrence, found after the previous start
    ]
    for p in passages:
        assert docs[["x", "y"].index(p.document_id)][p.start : p.end] == p.content
    assert passages[0].metadata == {"k": 1} and passages[0].metadata is not passages[1].metadata

    def rewriting(documents, document_ids):
        return [{"document_id": d, "content": t.upper()} for t, d in zip(documents, document_ids, strict=True)]

    # chunk_size is not passed to a function that does not take it.
    (p,) = split_documents(["abc"], ["z"], document_splitter_fn=rewriting, splitter_kwargs={"chunk_size": 9})
    assert (p.content, p.start, p.end) == ("ABC", None, None)

    with pytest.raises(ValueError, match="unknown document_id"):
        split_documents(["abc"], ["z"], document_splitter_fn=lambda d, i: [{"document_id": "q", "content": "a"}])
    with pytest.raises(TypeError, match="document_id"):
        split_documents(["abc"], ["z"], document_splitter_fn=lambda d, i: ["abc"])


def test_preprocessing_fn_contract() -> None:
    passages = split_documents(
        ["Hello World again", "Foo Bar"], ["a", "b"],
        splitter=TokenSplitter(ws_spans, 2, 0), preprocessing_fn=lambda xs: [x.lower() for x in xs],
    )
    assert [(p.content, p.start, p.end) for p in passages] == [
        ("hello world", 0, 11), ("again", 12, 17), ("foo bar", 0, 7)]
    chained = split_documents(
        ["Ab"], ["a"], preprocessing_fn=[lambda xs: [x.lower() for x in xs], lambda xs: [x + "!" for x in xs]]
    )
    assert chained[0].content == "ab!"
    with pytest.raises(ValueError, match="one string per passage"):
        split_documents(["a b"], ["a"], preprocessing_fn=lambda xs: xs + ["extra"])
    with pytest.raises(TypeError):
        split_documents(["a b"], ["a"], preprocessing_fn=lambda xs: "joined")


def test_passage_is_plain_record() -> None:
    p = Passage("d-0", "d", "text", 0, 4, None, 0)
    assert (p.passage_id, p.document_id, p.content, p.start, p.end, p.metadata, p.chunk_index) == (
        "d-0", "d", "text", 0, 4, None, 0
    )
