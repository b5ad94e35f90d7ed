"""OpenAI Realtime (GA) session configuration: wire models, defaults, merging of updates.

Three kinds of object live here:

- the *effective* :class:`SessionConfig`, every field with a value, which ``session.created``
  and ``session.updated`` echo (defaults as OpenAI documents them: audio out, PCM16 24 kHz both
  ways, ``server_vad`` 0.5 / 300 ms / 500 ms, ``tool_choice`` ``auto``, ``max_output_tokens``
  ``inf``);
- :class:`SessionPatch`, the partial ``session`` object of a ``session.update``, applied with
  :func:`apply_session_update`;
- the pieces both share (audio formats, turn detection, tools), also used by
  ``openai_response_config`` for ``response.create``.

Client-facing models forbid unknown fields and are strict (``"5"`` is not an integer), because
a misspelt setting that is silently dropped is a bug the client never sees; GA fields that this
server accepts but does not act on are declared and documented as ignored. Limits below are ours
and documented in docs/openai-realtime.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from unmute_trio.protocol.openai_errors import (
    INVALID_TYPE,
    INVALID_VALUE,
    UNSUPPORTED_PARAMETER,
    UNSUPPORTED_VALUE,
    ClientEventError,
)

# Longest free-text field (instructions, tool descriptions, transcription prompts, message text):
# about 16k tokens, more than a small local LLM's whole context, and it bounds per-item memory.
MAX_TEXT_CHARS = 65_536
# Ids, names and voice names are short; a bound keeps them from carrying payloads.
MAX_ID_CHARS = 512
MAX_NAME_CHARS = 256
MAX_TOOLS = 128  # the chat-completions limit, so the tools can be forwarded to the LLM as they are
# VAD durations: OpenAI gives no maximum; ours keeps the prefix-padding buffer bounded (10 s).
MAX_VAD_MS = 10_000
PCM_RATE: Final = 24_000
# The chat-completions rule for function names, since tools are forwarded to the LLM.
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _refuse_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError(
            INVALID_TYPE, "Invalid type: null is not allowed here (leave the field out instead)."
        )
    return value


def unsupported_if_set(why: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is not None:
            raise PydanticCustomError(UNSUPPORTED_PARAMETER, why)
        return value

    return check


# A field of a partial update that may be left out but not set to null.
NOT_NULL = BeforeValidator(_refuse_null)


# ---------------------------------------------------------------- audio


class PcmFormat(StrictModel):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[24000] = PCM_RATE  # PCM16 little-endian mono; OpenAI allows only 24 kHz


class PcmuFormat(StrictModel):
    type: Literal["audio/pcmu"] = "audio/pcmu"  # G.711 μ-law, 8 kHz


class PcmaFormat(StrictModel):
    type: Literal["audio/pcma"] = "audio/pcma"  # G.711 A-law, 8 kHz


AudioFormat = Annotated[PcmFormat | PcmuFormat | PcmaFormat, Field(discriminator="type")]


class ServerVad(StrictModel):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=MAX_VAD_MS)
    silence_duration_ms: int = Field(default=500, ge=0, le=MAX_VAD_MS)
    create_response: bool = True
    interrupt_response: bool = True
    # Ours: 1 s to 10 min (a shorter idle timeout would fire during ordinary thinking pauses).
    idle_timeout_ms: int | None = Field(default=None, ge=1_000, le=600_000)


class SemanticVad(StrictModel):
    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


TurnDetection = Annotated[ServerVad | SemanticVad, Field(discriminator="type")]


class InputTranscription(StrictModel):
    """Echoed as given; transcription always comes from this server's own STT."""

    model: Name | None = None
    language: Annotated[str, Field(max_length=32)] | None = None
    prompt: Text | None = None
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None
    keywords: Annotated[list[Name], Field(max_length=MAX_TOOLS)] | None = None
    languages: (
        Annotated[list[Annotated[str, Field(max_length=32)]], Field(max_length=32)] | None
    ) = None


class NoiseReduction(StrictModel):
    """Accepted and ignored: this server does no noise reduction."""

    type: Literal["near_field", "far_field"] | None = None
    strength: float | None = None


class VoiceId(StrictModel):
    id: Name


Voice = Name | VoiceId


class AudioInput(StrictModel):
    format: AudioFormat = Field(default_factory=PcmFormat)
    transcription: InputTranscription | None = None
    turn_detection: TurnDetection | None = Field(default_factory=ServerVad)


class AudioOutput(StrictModel):
    format: AudioFormat = Field(default_factory=PcmFormat)
    voice: Voice
    speed: float = Field(default=1.0, ge=0.25, le=1.5)


class AudioConfig(StrictModel):
    input: AudioInput = Field(default_factory=AudioInput)
    output: AudioOutput


# ---------------------------------------------------------------- tools


def _function_tool_type(value: Any) -> Any:
    if value == "mcp":
        raise PydanticCustomError(
            UNSUPPORTED_VALUE, "MCP tools are not supported by this server; declare function tools."
        )
    return value


class FunctionTool(StrictModel):
    type: Annotated[Literal["function"], BeforeValidator(_function_tool_type)] = "function"
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    description: Text | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema object, passed on untouched


class FunctionToolChoice(StrictModel):
    type: Annotated[Literal["function"], BeforeValidator(_function_tool_type)]
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]


ToolChoice = Literal["auto", "none", "required"] | FunctionToolChoice


def _unique_names(tools: list[FunctionTool]) -> list[FunctionTool]:
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise PydanticCustomError(
                INVALID_VALUE, "Duplicate tool name '{name}'.", {"name": tool.name}
            )
        seen.add(tool.name)
    return tools


Tools = Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS), AfterValidator(_unique_names)]


def _one_modality(value: list[str]) -> list[str]:
    if len(value) != 1:
        raise PydanticCustomError(
            INVALID_VALUE,
            "output_modalities must be ['audio'] (speech with its transcript) or ['text'];"
            " the GA API does not allow both.",
        )
    return value


OutputModalities = Annotated[list[Literal["text", "audio"]], AfterValidator(_one_modality)]
MaxOutputTokens = Annotated[int, Field(ge=1, le=4096)] | Literal["inf"]

# ---------------------------------------------------------------- the effective session


def _audio_only() -> list[Literal["text", "audio"]]:
    return ["audio"]


class SessionConfig(StrictModel):
    """The session as it is now; ``session.created`` / ``session.updated`` echo all of it."""

    type: Literal["realtime"] = "realtime"
    object: Literal["realtime.session"] = "realtime.session"
    id: str
    model: str
    instructions: Text = ""
    output_modalities: OutputModalities = Field(default_factory=_audio_only)
    audio: AudioConfig
    tools: Tools = Field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    max_output_tokens: MaxOutputTokens = "inf"


def default_session(
    session_id: str, *, model: str, voice: str, instructions: str = ""
) -> SessionConfig:
    """A new session's configuration: OpenAI's defaults, with this server's model and voice."""
    return SessionConfig(
        id=session_id,
        model=model,
        instructions=instructions,
        audio=AudioConfig(output=AudioOutput(voice=voice)),
    )


# ---------------------------------------------------------------- session.update


def _session_type(value: Any) -> Any:
    if value == "transcription":
        raise PydanticCustomError(
            UNSUPPORTED_VALUE, "Transcription sessions are not supported yet; use 'realtime'."
        )
    return value


class AudioInputPatch(StrictModel):
    format: Annotated[AudioFormat | None, NOT_NULL] = None
    transcription: InputTranscription | None = None  # null turns transcription events off
    turn_detection: TurnDetection | None = None  # null turns VAD off (manual commits)
    noise_reduction: NoiseReduction | None = None  # ignored


class AudioOutputPatch(StrictModel):
    format: Annotated[AudioFormat | None, NOT_NULL] = None
    voice: Annotated[Voice | None, NOT_NULL] = None
    speed: Annotated[float | None, NOT_NULL, Field(ge=0.25, le=1.5)] = None


class AudioPatch(StrictModel):
    input: Annotated[AudioInputPatch | None, NOT_NULL] = None
    output: Annotated[AudioOutputPatch | None, NOT_NULL] = None


class SessionPatch(StrictModel):
    """The ``session`` of a ``session.update``: only the fields present change."""

    type: Annotated[Literal["realtime"], BeforeValidator(_session_type)]
    instructions: Annotated[Text | None, NOT_NULL] = None
    output_modalities: Annotated[OutputModalities | None, NOT_NULL] = None
    audio: Annotated[AudioPatch | None, NOT_NULL] = None
    tools: Annotated[Tools | None, NOT_NULL] = None
    tool_choice: Annotated[ToolChoice | None, NOT_NULL] = None
    max_output_tokens: Annotated[MaxOutputTokens | None, NOT_NULL] = None
    # GA fields accepted and ignored: the model is the server's; tracing, logprobs, truncation
    # policy, reasoning effort and parallel tool calls have no equivalent here.
    model: Name | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    tracing: Any = None
    truncation: Any = None
    reasoning: Any = None
    parallel_tool_calls: bool | None = None
    # A stored prompt would replace the instructions; silently ignoring it would be worse.
    prompt: Annotated[
        Any,
        BeforeValidator(
            unsupported_if_set("Stored prompts are not supported; send 'instructions'.")
        ),
    ] = None


_IGNORED_PATCH_FIELDS: Any = {
    "type": True,
    "model": True,
    "include": True,
    "tracing": True,
    "truncation": True,
    "reasoning": True,
    "parallel_tool_calls": True,
    "prompt": True,
    "audio": {"input": {"noise_reduction"}},
}


def apply_session_update(
    config: SessionConfig, patch: SessionPatch, *, event_id: str | None = None
) -> SessionConfig | ClientEventError:
    """The session after a ``session.update``; the old one is left untouched.

    Fields left out keep their value. Objects merge field by field, except that an object whose
    ``type`` changes (``audio/pcm`` → ``audio/pcmu``, ``server_vad`` → ``semantic_vad``) is
    replaced, the fields it does not give taking their defaults. Lists (``tools``) are
    replaced whole. ``turn_detection`` and ``transcription`` may be set to null.
    """
    changes = patch.model_dump(exclude_unset=True, exclude=_IGNORED_PATCH_FIELDS)
    merged = SessionConfig.model_validate(_merge(config.model_dump(), changes))
    problem = tool_choice_problem(merged.tool_choice, merged.tools)
    if problem is not None:
        return ClientEventError(
            code=INVALID_VALUE, message=problem, param="session.tool_choice", event_id=event_id
        )
    return merged


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, new in changes.items():
        old = out.get(key)
        if (
            isinstance(old, dict)
            and isinstance(new, dict)
            and new.get("type", old.get("type")) == old.get("type")
        ):
            out[key] = _merge(old, new)
        else:
            out[key] = new
    return out


def tool_choice_problem(choice: ToolChoice, tools: list[FunctionTool]) -> str | None:
    if isinstance(choice, FunctionToolChoice) and all(t.name != choice.name for t in tools):
        return f"tool_choice names the function {choice.name!r}, which is not among the tools."
    if choice == "required" and not tools:
        return "tool_choice is 'required' but there are no tools."
    return None
