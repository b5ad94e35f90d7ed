"""Browser ⇄ server events (docs/protocol.md): OpenAI-Realtime-style JSON with Unmute extensions.

Every event has ``type`` and ``event_id``; a missing ``event_id`` gets a fresh
``event_<21 alphanumerics>``. Client events are parsed with :func:`parse_client_event`, server
events serialised with :func:`encode_event`. Names are the Realtime API *beta* names
(``response.audio.delta``), which is what Unmute and its frontend use.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from unmute_trio.protocol import json_limits
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.ids import ALPHABET, random_chars
from unmute_trio.protocol.instructions import ConstantInstructions, Instructions

_ID_ALPHABET = ALPHABET

# Longest client strings of this dialect (docs/protocol.md). Frames are also bounded as a whole
# (json_limits.MAX_FRAME_CHARS, 1 MiB): that bounds the base64 audio of an append.
# A `constant` character's text goes into the system prompt of every LLM request of the
# session. The built-in characters' texts are under 1,000 characters; 20,000 (about 5,000
# tokens) leaves room for any hand-written character while keeping a client from making every
# request of its session megabytes long. The OpenAI dialect allows 65,536 for its instructions,
# a free-form system prompt rather than a character brief.
MAX_INSTRUCTIONS_CHARS = 20_000
# The voice is sent to the TTS in its URL's query string, percent-encoded (up to 12 bytes per
# character). Real names are under 100 characters (voices.yaml paths, custom:<uuid>); 256 keeps
# the TTS request line under 4 KB, well below the 8 KB limit of common servers and proxies.
MAX_VOICE_CHARS = 256
# Ids only need to be distinct; the OpenAI dialect's limit (openai_session.MAX_ID_CHARS).
MAX_EVENT_ID_CHARS = 512
# Longest JSON path quoted in an error: the keys of unknown fields are the client's own text.
_MAX_SHOWN_PATH_CHARS = 200


def random_event_id() -> str:
    return "event_" + random_chars()


class _Event(BaseModel):
    event_id: str = Field(default_factory=random_event_id)


# ---------------------------------------------------------------- client → server


class SessionConfig(BaseModel):
    instructions: Instructions | None = None
    voice: str | None = None
    allow_recording: bool


class SessionUpdate(_Event):
    type: Literal["session.update"] = "session.update"
    session: SessionConfig


class InputAudioBufferAppend(_Event):
    type: Literal["input_audio_buffer.append"] = "input_audio_buffer.append"
    audio: str  # base64 of one or more Ogg/Opus pages


class UnmuteInputAudioBufferAppendAnonymized(_Event):
    """Written to recordings in place of the user's audio; accepted from clients and ignored."""

    type: Literal["unmute.input_audio_buffer.append_anonymized"] = (
        "unmute.input_audio_buffer.append_anonymized"
    )
    number_of_samples: int


ClientEvent = Annotated[
    SessionUpdate | InputAudioBufferAppend | UnmuteInputAudioBufferAppendAnonymized,
    Field(discriminator="type"),
]

# ---------------------------------------------------------------- server → client

ErrorType = Literal["warning", "fatal", "invalid_request_error"]


class ErrorDetails(BaseModel):
    type: str
    code: str | None = None
    message: str
    param: str | None = None
    details: Any = None  # ours, not part of the OpenAI API


class Error(_Event):
    type: Literal["error"] = "error"
    error: ErrorDetails


class SessionUpdated(_Event):
    type: Literal["session.updated"] = "session.updated"
    session: SessionConfig


class Response(BaseModel):
    object: Literal["realtime.response"] = "realtime.response"
    status: Literal["in_progress", "completed", "cancelled", "failed", "incomplete"]
    voice: str
    chat_history: list[dict[str, Any]] = Field(default_factory=list)


class ResponseCreated(_Event):
    type: Literal["response.created"] = "response.created"
    response: Response


class UnmuteResponseTextDeltaReady(_Event):
    type: Literal["unmute.response.text.delta.ready"] = "unmute.response.text.delta.ready"
    delta: str


class ResponseTextDelta(_Event):
    type: Literal["response.text.delta"] = "response.text.delta"
    delta: str


class ResponseTextDone(_Event):
    type: Literal["response.text.done"] = "response.text.done"
    text: str


class ResponseAudioDelta(_Event):
    type: Literal["response.audio.delta"] = "response.audio.delta"
    delta: str  # base64 of Ogg/Opus bytes


class ResponseAudioDone(_Event):
    type: Literal["response.audio.done"] = "response.audio.done"


class ConversationItemInputAudioTranscriptionDelta(_Event):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    delta: str
    start_time: float  # Unmute extension


class InputAudioBufferSpeechStarted(_Event):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"


class InputAudioBufferSpeechStopped(_Event):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"


class UnmuteInterruptedByVAD(_Event):
    type: Literal["unmute.interrupted_by_vad"] = "unmute.interrupted_by_vad"


class UnmuteAdditionalOutputs(_Event):
    type: Literal["unmute.additional_outputs"] = "unmute.additional_outputs"
    args: Any


class UnmuteResponseAudioDeltaReady(_Event):
    type: Literal["unmute.response.audio.delta.ready"] = "unmute.response.audio.delta.ready"
    number_of_samples: int


ServerEvent = Annotated[
    Error
    | SessionUpdated
    | ResponseCreated
    | UnmuteResponseTextDeltaReady
    | ResponseTextDelta
    | ResponseTextDone
    | ResponseAudioDelta
    | ResponseAudioDone
    | ConversationItemInputAudioTranscriptionDelta
    | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped
    | UnmuteInterruptedByVAD
    | UnmuteAdditionalOutputs
    | UnmuteResponseAudioDeltaReady,
    Field(discriminator="type"),
]

_CLIENT_ADAPTER: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
_SERVER_ADAPTER: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)


# ---------------------------------------------------------------- codecs


def parse_client_event(text: str | bytes) -> ClientEvent:
    """Parse one WebSocket text frame from a client.

    Raises :class:`WireFormatError` for a binary frame, invalid JSON, a frame over a limit of
    :mod:`.json_limits` (shared with the OpenAI dialect: size, nesting, lone surrogates, integer
    length), an invalid event, or a string over its limit above; its ``details`` say what was
    wrong (pydantic's error list, or one entry in its shape, without echoing the input back).
    """
    if isinstance(text, bytes):
        raise WireFormatError("Binary frames are not supported: send JSON events as text frames")
    try:
        data = json_limits.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WireFormatError(f"Invalid JSON: {e}", {"position": getattr(e, "pos", None)}) from e
    except json_limits.JsonLimitError as e:
        raise _limit_error(e) from None
    if not isinstance(data, dict):
        raise WireFormatError("An event must be a JSON object", {"got": type(data).__name__})
    try:
        json_limits.check_tree(data)
    except json_limits.JsonLimitError as e:
        raise _limit_error(e) from None
    append = _plain_append(data)
    if append is not None:
        return append
    try:
        event = _CLIENT_ADAPTER.validate_python(data)
    except ValidationError as e:
        raise WireFormatError.from_validation("client event", e) from e
    _check_lengths(event)
    return event


_APPEND_KEYS = frozenset({"type", "audio", "event_id"})


def _plain_append(data: dict[str, Any]) -> InputAudioBufferAppend | None:
    """The microphone's ``input_audio_buffer.append`` (25 a second per session), built without
    pydantic's validation when it is plainly valid: string ``audio``, a string ``event_id`` within
    its limit or none, nothing else. Anything else returns None and goes the general way, which
    accepts and refuses exactly as before (~8 µs instead of ~20 µs per frame)."""
    if data.get("type") != "input_audio_buffer.append" or not data.keys() <= _APPEND_KEYS:
        return None
    audio = data.get("audio")
    event_id = data.get("event_id")
    if not isinstance(audio, str):
        return None
    if event_id is None:
        if "event_id" in data:
            return None  # an explicit null: the general path says what is wrong
        event_id = random_event_id()
    elif not isinstance(event_id, str) or len(event_id) > MAX_EVENT_ID_CHARS:
        return None
    return InputAudioBufferAppend.model_construct(
        event_id=event_id, type="input_audio_buffer.append", audio=audio
    )


def _check_lengths(event: ClientEvent) -> None:
    """Refuse a client string over its limit, naming the field (the limits are above)."""
    _check_length(("event_id",), event.event_id, MAX_EVENT_ID_CHARS)
    if isinstance(event, SessionUpdate):
        config = event.session
        _check_length(("session", "voice"), config.voice, MAX_VOICE_CHARS)
        if isinstance(config.instructions, ConstantInstructions):
            path = ("session", "instructions", "text")
            _check_length(path, config.instructions.text, MAX_INSTRUCTIONS_CHARS)


def _check_length(path: tuple[str, ...], value: str | None, limit: int) -> None:
    if value is None or len(value) <= limit:
        return
    field = json_limits.format_path(path)
    raise WireFormatError(
        f"Invalid client event: '{field}' is {len(value)} characters long; the limit is {limit}",
        [
            {
                "type": "string_too_long",
                "loc": list(path),
                "msg": f"String should have at most {limit} characters",
            }
        ],
    )


def _limit_error(error: json_limits.JsonLimitError) -> WireFormatError:
    """A frame over a limit of :mod:`.json_limits`, in this dialect's words: the message names
    the offending field when its path is short enough to quote; ``details`` has the shape of
    pydantic's errors (``type``, ``loc``, ``msg``), as for other invalid events."""
    field = json_limits.format_path(error.path)
    shown = field if field and len(field) <= _MAX_SHOWN_PATH_CHARS else None
    where = f" (at '{shown}')" if shown else ""
    text = error.message.rstrip(".")
    message = f"Invalid client event{where}: {text[:1].lower()}{text[1:]}"
    detail = {"type": error.code, "loc": list(error.path) if shown else [], "msg": error.message}
    return WireFormatError(message, [detail])


def parse_server_event(text: str | bytes) -> ServerEvent:
    """Parse a server event (used by test clients, the load generator and recordings)."""
    try:
        return _SERVER_ADAPTER.validate_json(text)
    except ValidationError as e:
        raise WireFormatError.from_validation("server event", e) from e


def encode_event(event: BaseModel) -> str:
    """Serialise an event to the JSON text sent on the WebSocket (nulls kept, as the original)."""
    return event.model_dump_json()


def invalid_request_error(error: WireFormatError) -> Error:
    """The ``error`` event answering a frame that :func:`parse_client_event` rejected."""
    return make_error("invalid_request_error", error.message, details=error.details)


def make_error(
    error_type: ErrorType, message: str, details: Any = None, code: str | None = None
) -> Error:
    return Error(error=ErrorDetails(type=error_type, message=message, details=details, code=code))
