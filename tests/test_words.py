"""Word re-chunking of LLM deltas: the vectors of contract 1.2, exactly."""

from __future__ import annotations

import pytest

from unmute_trio.protocol.words import WordChunker, rechunk_to_words

CONTRACT_VECTORS = [
    (["i am ok"], ["i", " am", " ok"]),
    ([" i am ok"], [" i", " am", " ok"]),
    (["  foo bar"], [" foo", " bar"]),
    ([" \t foo  bar"], [" foo", " bar"]),
    (["hel", "lo", " ", "w", "orld"], ["hello", " world"]),
    (["hello \nworld"], ["hello", " world"]),
]


@pytest.mark.parametrize(("deltas", "words"), CONTRACT_VECTORS)
def test_contract_vectors(deltas: list[str], words: list[str]) -> None:
    assert rechunk_to_words(deltas) == words


@pytest.mark.parametrize(("deltas", "words"), CONTRACT_VECTORS)
def test_contract_vectors_fed_one_character_at_a_time(deltas: list[str], words: list[str]) -> None:
    assert rechunk_to_words(list("".join(deltas))) == words


def test_a_word_is_emitted_only_once_its_following_whitespace_arrives() -> None:
    chunker = WordChunker()
    assert chunker.feed("Hel") == []
    assert chunker.feed("lo,") == []
    assert chunker.feed(" wor") == ["Hello,"]
    assert chunker.feed("ld") == []
    assert chunker.finish() == [" world"]


def test_several_words_in_one_delta_and_trailing_whitespace() -> None:
    chunker = WordChunker()
    assert chunker.feed("one two three ") == ["one", " two", " three"]
    assert chunker.finish() == []


def test_whitespace_only_stream_gives_nothing() -> None:
    assert rechunk_to_words([" ", "\n\t", ""]) == []
    assert rechunk_to_words([]) == []


def test_unicode_whitespace_separates_words_and_punctuation_stays() -> None:
    assert rechunk_to_words(["Bonjour\u00a0«", "toi»\u2003!"]) == ["Bonjour", " «toi»", " !"]


def test_finish_is_final() -> None:
    chunker = WordChunker()
    chunker.feed("bye")
    assert chunker.finish() == ["bye"]
    assert chunker.finish() == []
    with pytest.raises(RuntimeError):
        chunker.feed("more")


def test_max_word_chars_bounds_a_word_without_whitespace() -> None:
    chunker = WordChunker(max_word_chars=5)
    assert chunker.feed("abc") == []
    assert chunker.feed("defg") == ["abcdefg"]
    assert chunker.feed("hi there") == [" hi"]
    assert chunker.finish() == [" there"]


def test_unbounded_by_default() -> None:
    long_word = "x" * 100_000
    assert rechunk_to_words([long_word, " y"]) == [long_word, " y"]


def test_max_word_chars_of_one_is_allowed_and_zero_is_refused_with_its_text() -> None:
    chunker = WordChunker(max_word_chars=1)
    assert chunker.feed("a") == []
    assert chunker.feed("b") == ["ab"]
    for bad in (0, -1):
        with pytest.raises(ValueError) as refused:
            WordChunker(max_word_chars=bad)
        assert str(refused.value) == "max_word_chars must be at least 1"


def test_feeding_after_finish_says_so() -> None:
    chunker = WordChunker()
    chunker.finish()
    with pytest.raises(RuntimeError) as refused:
        chunker.feed("late")
    assert str(refused.value) == "feed() after finish()"
