"""``Instructions``: the Unmute extension of ``session.update`` that picks a character.

Six kinds, discriminated on ``type``. Unknown extra fields are ignored, as in the original, so
objects sent by the original frontend always validate. The prompts built from these objects live
in the session layer; this module only holds the wire shape.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

LanguageCode = Literal["en", "fr", "en/fr", "fr/en"]

# Our own wording of the default character brief (the original's text is not copied).
DEFAULT_CONSTANT_TEXT = (
    "Keep the conversation moving in both directions: answer, then ask the user something back "
    "or react to what they said. Be a peer rather than an assistant eager to please; you may "
    "disagree, tease a little, and have opinions. Small spoken fillers like 'well' or 'hmm' are "
    "welcome. Open with a short greeting and an idea to talk about."
)


class ConstantInstructions(BaseModel):
    type: Literal["constant"] = "constant"
    text: str = DEFAULT_CONSTANT_TEXT
    language: LanguageCode | None = None


class SmalltalkInstructions(BaseModel):
    type: Literal["smalltalk"] = "smalltalk"
    language: LanguageCode | None = None


class GuessAnimalInstructions(BaseModel):
    type: Literal["guess_animal"] = "guess_animal"
    language: LanguageCode | None = None


class QuizShowInstructions(BaseModel):
    type: Literal["quiz_show"] = "quiz_show"
    language: LanguageCode | None = None


class NewsInstructions(BaseModel):
    type: Literal["news"] = "news"
    language: LanguageCode | None = None


class UnmuteExplanationInstructions(BaseModel):
    type: Literal["unmute_explanation"] = "unmute_explanation"


Instructions = Annotated[
    ConstantInstructions
    | SmalltalkInstructions
    | GuessAnimalInstructions
    | QuizShowInstructions
    | NewsInstructions
    | UnmuteExplanationInstructions,
    Field(discriminator="type"),
]

INSTRUCTIONS_ADAPTER: TypeAdapter[Instructions] = TypeAdapter(Instructions)
