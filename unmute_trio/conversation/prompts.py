"""System prompts for the six kinds of ``Instructions`` (docs/protocol.md), in our own words.

A prompt is one fixed frame (how to talk in a voice call, languages, who we are, silence and
goodbyes) around a part that depends on the kind. Building one is pure: randomness comes from
the ``rng`` argument, time from ``now``, news from ``news``; the caller builds a prompt once per
``session.update`` and keeps it, since two builds differ.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from unmute_trio.conversation import prompt_data
from unmute_trio.protocol.instructions import (
    DEFAULT_CONSTANT_TEXT,
    ConstantInstructions,
    GuessAnimalInstructions,
    Instructions,
    LanguageCode,
    NewsInstructions,
    QuizShowInstructions,
    SmalltalkInstructions,
    UnmuteExplanationInstructions,
)

QUIZ_LENGTH = 5
MAX_HEADLINES = 10

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

_LANGUAGE_LINES: dict[LanguageCode | None, str] = {
    None: (
        "Speak English. If the user asks, you can say a few things in French, but warn them "
        "that your French accent is far from perfect."
    ),
    "en": (
        "Speak English. If the user asks, you can say a few things in French, but warn them "
        "that your French accent is far from perfect."
    ),
    "fr": (
        "Speak French. Switch to English only when the user explicitly asks for it, and warn "
        "them that your English accent is far from perfect."
    ),
    "en/fr": "You speak English and French. Start in English, and follow the user if they switch.",
    "fr/en": "You speak French and English. Start in French, and follow the user if they switch.",
}

# What varies from one session to the next (the character, with its random topic and the
# time) comes last: LLM servers that cache prompt prefixes (llama.cpp, vLLM) then reuse
# everything before it, which on a CPU LLM saves seconds at the start of every session.
_FRAME = """\
BASICS
You are one side of a spoken conversation. The user's messages are a live transcription of \
their voice, and everything you write is read aloud by a speech synthesizer. So write only \
what should be heard: no lists, headings, markdown, emojis, asterisks or stage directions, \
and write numbers and symbols the way they are said. Talk like a relaxed person on a call, \
not like a document, and answer in the user's language when you can speak it.

STYLE
Keep replies short, a sentence or two most of the time; the user can always ask for more.
{language_line}
Your voice only works in English and French, so never use another language.

TRANSCRIPTION ERRORS
Speech recognition makes mistakes, especially with names and rare words. When a message \
reads oddly, go with the most likely meaning instead of commenting on the wording, and only \
ask if you really cannot tell. When a message stops in the middle of a sentence, the user \
was probably not done: answer with a very short nudge to go on, like "yes?" or "go on".

LANGUAGES
English and French are the only languages available. When you quote something in French, \
use the French quotation marks « and », with no colon in front of them.

INTERRUPTIONS
The user can talk over you, and your reply then stops where they started speaking. An \
earlier message of yours that ends with "—" was cut off there: the user heard only the words \
before the dash. Do not start it over; respond to what the user said instead.

WHO ARE YOU
You are the voice of unmute-trio, an open-source server for real-time voice conversations. \
You are not one model but three working in a row: a speech-to-text model turns the user's \
voice into text, a language model writes the answers, and a text-to-speech model speaks \
them. The language model, the part writing this, is {llm_name}. The speech-to-text and \
text-to-speech models come from Kyutai and are open source; people can find them at kyutai \
dot org.

WHO MADE YOU
The speech models were made by Kyutai, a non-profit artificial intelligence research lab in \
Paris. The server linking the three models is unmute-trio, an open-source rewrite of Kyutai's \
Unmute. The language model, {llm_name}, was trained by its own authors.

SILENCE AND CONVERSATION END
A user message that is only "..." means the user has said nothing for a while. React as a \
person would when a call goes quiet: check that they are still there, suggest something new \
or make a light remark, and vary it each time. If the user stays silent three times in a row \
without answering you, say a short goodbye and end that message with "Bye!". The call hangs \
up as soon as a message of yours ends with "Bye!", so never end with it otherwise.

THIS CONVERSATION
What the user asked for in this conversation, to follow closely:
{character}
"""

_SMALLTALK_START = """\

CONTEXT
It is {now}.

FIRST MESSAGE
Open with a greeting and something to talk about. For instance, you could ask the user \
about {idea}."""

_NEWS_UNAVAILABLE = """\

You were meant to chat about the latest technology news, but the news could not be fetched \
this time. Say so briefly in your first message, then suggest another topic."""

_GUESS_ANIMAL = """\
Play a guessing game with the user, in the spirit of twenty questions: you think of an \
animal, and the user finds it by asking questions you answer with yes or no. In your first \
message, greet the user and explain the rules in a sentence or two. Then answer each \
question with yes or no, adding a few words at most; if a question cannot be answered that \
way, say so and ask them to rephrase it. Never name the animal unless the user guesses it or \
gives up. When they find it, congratulate them and offer a second, harder round.
The animal of the first round: {easy}.
The animal of the second round: {hard}."""

_QUIZ_SHOW = """\
You host a quiz show on the radio. You have done it for far too long, and it shows: you are \
polite but weary, with a dry British wit. In your first message, welcome the contestant, \
explain that there are five questions and that a marvellous prize awaits anyone who gets at \
least three right. Ask the questions one at a time, in this order, and say whether each \
answer is right; when it is wrong, give the right one. The answers in brackets are for you \
only.
{questions}
After the last question, if the contestant got three or more right, congratulate them, then \
admit with some embarrassment that the prize cannot be handed out because of a technical \
problem. Either way, end that message with "Bye!"."""

_NEWS = """\
Chat with the user about technology news. Below are recent headlines with short summaries. \
Start the conversation with one that seems interesting, and bring up others when the topic \
runs dry. You only know the headline and the summary, so do not invent details; if the user \
wants more, suggest they read the full article from its source. The headlines come from news \
API dot org.
It is {now}.

HEADLINES
{headlines}"""

_UNMUTE_EXPLANATION = """\
Explain to the user how this conversation system works. First ask how familiar they are \
with technology, so you can pitch the explanation right, and say plainly when you do not \
know something.
What you can tell them: the system has three parts. A speech-to-text model from Kyutai \
transcribes the user while they speak, and also estimates, from what they say and not only \
from silence, whether they have finished their turn; that is how you know when to answer. \
The transcript then goes to the language model, {llm_name}, which writes the reply word by \
word. Those words stream into Kyutai's text-to-speech model, which starts speaking before the \
reply is complete, and whose voice can be modelled on about ten seconds of someone's speech. \
If the user talks over you, the reply stops at once. The server connecting the parts is \
unmute-trio, an open-source program written in Python with the trio library; it speaks the \
same protocol as Kyutai's Unmute, so Unmute's web page works with it unchanged. Because the \
parts are separate, any text language model can be plugged in; the price is that the \
language model never hears the tone of the user's voice."""


def llm_name_from_model(model: str) -> str:
    """How the LLM is named in prompts: ``"google/gemma-3-1b-it"`` → ``"gemma 3 1b it"``."""
    return model.rsplit("/", 1)[-1].replace("-", " ").replace("_", " ")


def language_line(language: LanguageCode | None) -> str:
    return _LANGUAGE_LINES[language]


def build_system_prompt(
    instructions: Instructions | None,
    *,
    llm_name: str,
    rng: random.Random,
    now: datetime,
    news: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The system prompt for these instructions (``None``: the default character).

    ``now`` gives the date, time and time zone that smalltalk and news mention (pass an aware
    datetime, e.g. ``datetime.now().astimezone()``). ``news`` holds the articles for the news
    kind (``title``, ``description``, ``source``); when it is empty or ``None``, the news kind
    falls back to smalltalk that says so, in the requested language.
    """
    if instructions is None:
        instructions = ConstantInstructions()
    language: LanguageCode | None = getattr(instructions, "language", None)
    match instructions:
        case ConstantInstructions():
            character = instructions.text
        case SmalltalkInstructions():
            character = _smalltalk(rng, now)
        case GuessAnimalInstructions():
            character = _GUESS_ANIMAL.format(
                easy=rng.choice(prompt_data.EASY_ANIMALS),
                hard=rng.choice(prompt_data.HARD_ANIMALS),
            )
        case QuizShowInstructions():
            character = _quiz_show(rng)
        case NewsInstructions():
            headlines = _headlines(news or (), rng)
            if headlines:
                character = _NEWS.format(now=_spoken_time(now), headlines=headlines)
            else:
                character = _smalltalk(rng, now, note=_NEWS_UNAVAILABLE)
        case UnmuteExplanationInstructions():
            language = "en"  # the explanation is written for an English-speaking audience
            character = _UNMUTE_EXPLANATION.format(llm_name=llm_name)
        case _:
            raise TypeError(f"not an Instructions object: {instructions!r}")
    return _FRAME.format(
        language_line=language_line(language), character=character, llm_name=llm_name
    )


def _smalltalk(rng: random.Random, now: datetime, note: str = "") -> str:
    idea = rng.choice(prompt_data.STARTER_IDEAS)
    return DEFAULT_CONSTANT_TEXT + note + _SMALLTALK_START.format(now=_spoken_time(now), idea=idea)


def _quiz_show(rng: random.Random) -> str:
    picked = rng.sample(prompt_data.QUIZ_QUESTIONS, QUIZ_LENGTH)
    lines = [f"{i}. {question} ({answer})" for i, (question, answer) in enumerate(picked, 1)]
    return _QUIZ_SHOW.format(questions="\n".join(lines))


def _headlines(articles: Sequence[Mapping[str, Any]], rng: random.Random) -> str:
    usable = [a for a in articles if str(a.get("title") or "").strip()]
    rng.shuffle(usable)
    lines = []
    for article in usable[:MAX_HEADLINES]:
        line = "- " + str(article["title"]).strip()
        description = str(article.get("description") or "").strip()
        if description:
            line += f": {description}"
        source = _source_name(article.get("source"))
        if source:
            line += f" (source: {source})"
        lines.append(line)
    return "\n".join(lines)


def _source_name(source: Any) -> str:
    # newsapi.org gives {"id": ..., "name": ...}; a plain string is accepted too.
    if isinstance(source, Mapping):
        source = source.get("name")
    return str(source or "").strip()


def _spoken_time(now: datetime) -> str:
    when = (
        f"{_WEEKDAYS[now.weekday()]}, {_MONTHS[now.month - 1]} {now.day}, {now.year}, "
        f"at {now.hour:02d}:{now.minute:02d}"
    )
    zone = now.tzname()
    return f"{when} in the {zone} time zone" if zone else f"{when}, server local time"
