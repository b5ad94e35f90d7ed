"""The ``response`` object of an OpenAI Realtime (GA) ``response.create``, and what it resolves to.

:class:`ResponseParams` holds a client's per-response overrides (instructions, modality, tools,
voice, ...); :func:`resolve_response` lays them over the session's settings to give the
:class:`ResponseConfig` one reply runs with, which ``response.created`` / ``response.done`` echo.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from unmute_trio.protocol.openai_errors import INVALID_VALUE, UNSUPPORTED_VALUE, ClientEventError
from unmute_trio.protocol.openai_session import (
    NOT_NULL,
    AudioFormat,
    FunctionTool,
    MaxOutputTokens,
    OutputModalities,
    SessionConfig,
    StrictModel,
    Text,
    ToolChoice,
    Tools,
    Voice,
    tool_choice_problem,
    unsupported_if_set,
)


def _conversation(value: Any) -> Any:
    if value != "auto" and isinstance(value, str):
        raise PydanticCustomError(
            UNSUPPORTED_VALUE,
            "Only conversation 'auto' is supported: out-of-band responses are not implemented.",
        )
    return value


class ResponseAudioOutputParams(StrictModel):
    format: Annotated[AudioFormat | None, NOT_NULL] = None
    voice: Annotated[Voice | None, NOT_NULL] = None


class ResponseAudioParams(StrictModel):
    output: Annotated[ResponseAudioOutputParams | None, NOT_NULL] = None


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),  # OpenAI's metadata limits
]


class ResponseParams(StrictModel):
    """The ``response`` of a ``response.create``: per-response overrides of the session."""

    instructions: Annotated[Text | None, NOT_NULL] = None
    output_modalities: Annotated[OutputModalities | None, NOT_NULL] = None
    tools: Annotated[Tools | None, NOT_NULL] = None
    tool_choice: Annotated[ToolChoice | None, NOT_NULL] = None
    max_output_tokens: Annotated[MaxOutputTokens | None, NOT_NULL] = None
    audio: Annotated[ResponseAudioParams | None, NOT_NULL] = None
    metadata: Metadata | None = None  # echoed in response.created / response.done
    conversation: Annotated[Literal["auto"] | None, BeforeValidator(_conversation)] = None
    input: Annotated[
        Any,
        BeforeValidator(unsupported_if_set("A custom 'input' context is not supported yet.")),
    ] = None
    prompt: Annotated[
        Any,
        BeforeValidator(
            unsupported_if_set("Stored prompts are not supported; send 'instructions'.")
        ),
    ] = None
    reasoning: Any = None  # ignored
    parallel_tool_calls: bool | None = None  # ignored


class ResponseConfig(BaseModel):
    """What one response runs with: the session's settings with the response's overrides."""

    instructions: str
    output_modalities: list[Literal["text", "audio"]]
    tools: list[FunctionTool]
    tool_choice: ToolChoice
    max_output_tokens: int | Literal["inf"]
    output_format: AudioFormat
    voice: Voice
    metadata: dict[str, str] | None


def resolve_response(
    session: SessionConfig, params: ResponseParams | None, *, event_id: str | None = None
) -> ResponseConfig | ClientEventError:
    """The settings of one response, or an error if its ``tool_choice`` names no tool."""
    p = params or ResponseParams()
    out = p.audio.output if p.audio is not None else None
    fmt = out.format if out is not None and out.format is not None else None
    voice = out.voice if out is not None and out.voice is not None else None
    tools = session.tools if p.tools is None else p.tools
    tool_choice = session.tool_choice if p.tool_choice is None else p.tool_choice
    problem = tool_choice_problem(tool_choice, tools)
    if problem is not None:
        return ClientEventError(
            code=INVALID_VALUE, message=problem, param="response.tool_choice", event_id=event_id
        )
    return ResponseConfig(
        instructions=session.instructions if p.instructions is None else p.instructions,
        output_modalities=p.output_modalities or session.output_modalities,
        tools=tools,
        tool_choice=tool_choice,
        max_output_tokens=p.max_output_tokens or session.max_output_tokens,
        output_format=fmt or session.audio.output.format,
        voice=voice or session.audio.output.voice,
        metadata=p.metadata,
    )
