"""System prompts (contract 1.3): every kind, determinism, languages, quiz, news fallback."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from unmute_trio.conversation import prompt_data
from unmute_trio.conversation.prompts import (
    build_system_prompt,
    language_line,
    llm_name_from_model,
)
from unmute_trio.protocol.instructions import (
    DEFAULT_CONSTANT_TEXT,
    ConstantInstructions,
    GuessAnimalInstructions,
    Instructions,
    NewsInstructions,
    QuizShowInstructions,
    SmalltalkInstructions,
    UnmuteExplanationInstructions,
)

NOW = datetime(2026, 3, 3, 14, 5, tzinfo=UTC)  # a Tuesday
LLM = "gemma 3 1b it"
NEWS = [
    {
        "source": {"id": "the-verge", "name": "The Verge"},
        "title": f"Headline number {i}",
        "description": f"Summary {i}.",
    }
    for i in range(12)
]

ALL_KINDS: list[Instructions] = [
    ConstantInstructions(),
    SmalltalkInstructions(),
    GuessAnimalInstructions(),
    QuizShowInstructions(),
    NewsInstructions(),
    UnmuteExplanationInstructions(),
]


def build(instructions: Instructions | None, seed: int = 0, **kwargs: Any) -> str:
    kwargs.setdefault("now", NOW)
    return build_system_prompt(instructions, llm_name=LLM, rng=random.Random(seed), **kwargs)


@pytest.mark.parametrize("model", ["google/gemma-3-1b-it", "gemma-3-1b-it", "org/gemma_3_1b-it"])
def test_llm_name_from_model(model: str) -> None:
    assert llm_name_from_model(model) == "gemma 3 1b it"


def test_llm_name_keeps_only_the_last_path_part() -> None:
    assert llm_name_from_model("@preset/gpt-oss-120b") == "gpt oss 120b"


@pytest.mark.parametrize("instructions", ALL_KINDS, ids=lambda i: i.type)
def test_every_kind_builds_names_the_llm_and_explains_silence(instructions: Instructions) -> None:
    prompt = build(instructions, news=NEWS)
    assert LLM in prompt
    for section in ("BASICS", "STYLE", "TRANSCRIPTION ERRORS", "WHO ARE YOU", "SILENCE"):
        assert section in prompt
    assert '"..."' in prompt and '"Bye!"' in prompt
    assert "{" not in prompt  # every template slot was filled


@pytest.mark.parametrize("instructions", ALL_KINDS, ids=lambda i: i.type)
def test_same_seed_and_time_give_the_same_prompt(instructions: Instructions) -> None:
    assert build(instructions, seed=7, news=NEWS) == build(instructions, seed=7, news=NEWS)


@pytest.mark.parametrize(
    "instructions",
    [
        SmalltalkInstructions(),
        GuessAnimalInstructions(),
        QuizShowInstructions(),
        NewsInstructions(),
    ],
    ids=lambda i: i.type,
)
def test_random_kinds_vary_with_the_seed(instructions: Instructions) -> None:
    assert len({build(instructions, seed=seed, news=NEWS) for seed in range(10)}) > 1


def test_building_does_not_touch_the_global_random_state() -> None:
    state = random.getstate()
    for instructions in ALL_KINDS:
        build(instructions, news=NEWS)
    assert random.getstate() == state


def test_language_lines_differ_per_language_code() -> None:
    prompts = {
        code: build(ConstantInstructions(language=code))
        for code in (None, "en", "fr", "en/fr", "fr/en")
    }
    assert prompts[None] == prompts["en"]  # no preference means English
    assert len({prompts[c] for c in ("en", "fr", "en/fr", "fr/en")}) == 4
    for code, prompt in prompts.items():
        assert language_line(code) in prompt  # type: ignore[arg-type]


def test_constant_uses_the_text_verbatim_and_none_means_default() -> None:
    assert "Talk like a pirate {not a slot}." in build(
        ConstantInstructions(text="Talk like a pirate {not a slot}.")
    )
    assert DEFAULT_CONSTANT_TEXT in build(None)


def test_smalltalk_gives_the_time_and_one_starter_idea() -> None:
    prompt = build(SmalltalkInstructions(language="fr"))
    assert "Tuesday, March 3, 2026, at 14:05 in the UTC time zone" in prompt
    assert sum(idea in prompt for idea in prompt_data.STARTER_IDEAS) == 1
    assert language_line("fr") in prompt


def test_naive_time_is_called_server_local_time() -> None:
    assert "at 14:05, server local time" in build(
        SmalltalkInstructions(), now=NOW.replace(tzinfo=None)
    )


def test_guess_animal_picks_one_easy_and_one_hard_animal() -> None:
    prompt = build(GuessAnimalInstructions())
    easy = re.search(r"first round: (.+)\.", prompt)
    hard = re.search(r"second round: (.+)\.", prompt)
    assert easy and easy.group(1) in prompt_data.EASY_ANIMALS
    assert hard and hard.group(1) in prompt_data.HARD_ANIMALS


@pytest.mark.parametrize("seed", range(20))
def test_quiz_has_five_distinct_numbered_questions(seed: int) -> None:
    prompt = build(QuizShowInstructions(), seed=seed)
    lines = re.findall(r"^(\d)\. (.+) \((.+)\)$", prompt, flags=re.MULTILINE)
    assert [n for n, _, _ in lines] == ["1", "2", "3", "4", "5"]
    pairs = [(q, a) for _, q, a in lines]
    assert len(set(pairs)) == 5
    assert all(pair in prompt_data.QUIZ_QUESTIONS for pair in pairs)


def test_news_lists_at_most_ten_headlines_with_sources() -> None:
    prompt = build(NewsInstructions(language="en/fr"), news=NEWS)
    headlines = re.findall(r"^- Headline number (\d+): Summary \1\. \(source: The Verge\)$",
                           prompt, flags=re.MULTILINE)  # fmt: skip
    assert len(headlines) == 10
    assert len(set(headlines)) == 10
    assert "14:05" in prompt
    assert language_line("en/fr") in prompt


def test_news_skips_articles_without_title_and_accepts_plain_sources() -> None:
    news = [{"title": "", "description": "x"}, {"title": "Real one", "source": "Example"}]
    prompt = build(NewsInstructions(), news=news)
    assert "- Real one (source: Example)" in prompt
    assert "- :" not in prompt


@pytest.mark.parametrize("news", [None, []])
@pytest.mark.parametrize("language", ["fr", "fr/en", "en"])
def test_news_fallback_is_smalltalk_in_the_requested_language(news: Any, language: Any) -> None:
    prompt = build(NewsInstructions(language=language), news=news)
    assert "could not be fetched" in prompt
    assert language_line(language) in prompt
    assert sum(idea in prompt for idea in prompt_data.STARTER_IDEAS) == 1
    assert "HEADLINES" not in prompt


def test_unmute_explanation_is_always_in_english() -> None:
    prompt = build(UnmuteExplanationInstructions())
    assert language_line("en") in prompt
    assert "unmute-trio" in prompt and "Kyutai" in prompt


def test_prompt_data_lists_are_sized_and_unique() -> None:
    assert len(prompt_data.STARTER_IDEAS) >= 20
    assert len(prompt_data.EASY_ANIMALS) >= 15
    assert len(prompt_data.HARD_ANIMALS) >= 15
    assert len(prompt_data.QUIZ_QUESTIONS) >= 40
    for items in (
        prompt_data.STARTER_IDEAS,
        prompt_data.EASY_ANIMALS,
        prompt_data.HARD_ANIMALS,
        [q for q, _ in prompt_data.QUIZ_QUESTIONS],
    ):
        assert len(set(items)) == len(items)


def test_what_varies_between_sessions_comes_last_so_servers_reuse_the_prefix() -> None:
    now = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    a = build_system_prompt(SmalltalkInstructions(), llm_name="m", rng=random.Random(1), now=now)
    b = build_system_prompt(SmalltalkInstructions(), llm_name="m", rng=random.Random(2), now=now)
    assert a != b
    shared = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
    assert a.rfind("THIS CONVERSATION") < shared
    assert shared > 0.7 * len(a)


def test_llm_name_of_a_model_with_several_slashes_is_its_last_part() -> None:
    assert llm_name_from_model("org/team/gemma-3_1b-it") == "gemma 3 1b it"


def test_something_that_is_not_instructions_is_refused_with_its_repr() -> None:
    with pytest.raises(TypeError) as refused:
        build_system_prompt(
            "constant",  # type: ignore[arg-type]
            llm_name=LLM,
            rng=random.Random(0),
            now=NOW,
        )
    assert str(refused.value) == "not an Instructions object: 'constant'"


def test_smalltalk_is_the_default_character_then_its_context_and_first_message() -> None:
    prompt = build(SmalltalkInstructions())
    start = (
        DEFAULT_CONSTANT_TEXT
        + "\nCONTEXT\nIt is Tuesday, March 3, 2026, at 14:05 in the UTC time zone.\n\n"
        + "FIRST MESSAGE\nOpen with a greeting and something to talk about."
    )
    assert start in prompt


def test_a_headline_without_a_source_names_none() -> None:
    news = [
        {"title": "Only title"},
        {"title": "With summary", "description": "A summary.", "source": {"name": None}},
    ]
    prompt = build(NewsInstructions(), news=news)
    lines = prompt.split("HEADLINES\n", 1)[1].splitlines()
    assert sorted(lines) == ["- Only title", "- With summary: A summary."]


def test_the_unmute_explanation_names_the_llm_in_its_text() -> None:
    prompt = build(UnmuteExplanationInstructions())
    assert (
        "The transcript then goes to the language model, gemma 3 1b it, which writes the reply "
        "word by word."
    ) in prompt
    assert prompt.rstrip().endswith("never hears the tone of the user's voice.")
