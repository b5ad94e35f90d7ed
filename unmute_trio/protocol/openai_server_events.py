"""OpenAI Realtime (GA) server events: wire models and the id source that names things.

Models are built by :class:`~unmute_trio.protocol.openai_event_builder.ServerEvents`, which
fills in event ids, and serialised with :func:`encode_server_event`. Names and shapes are those
of the GA API (``response.output_audio.delta``, not the beta ``response.audio.delta``); the
tests validate every one against the official SDK's ``RealtimeServerEvent`` union.
"""

from __future__ import annotations

from itertools import count
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, Field, TypeAdapter

from unmute_trio.protocol.ids import random_chars
from unmute_trio.protocol.openai_items import Item
from unmute_trio.protocol.openai_session import AudioFormat, SessionConfig, Voice

# ---------------------------------------------------------------- ids


class IdSource(Protocol):
    """Makes the ids of events, items, responses, calls, sessions (``prefix`` + ``_`` + ...)."""

    def new_id(self, prefix: str) -> str: ...


class RandomIds:
    """OpenAI-looking ids (``item_`` + 21 letters and digits; see protocol/ids.py)."""

    def new_id(self, prefix: str) -> str:
        return prefix + "_" + random_chars()


class SequentialIds:
    """Deterministic ids for tests and recordings: ``event_1``, ``event_2``, ``item_1``, ..."""

    def __init__(self) -> None:
        self._counters: dict[str, count[int]] = {}

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._counters.setdefault(prefix, count(1)))}"


# ---------------------------------------------------------------- models


class _ServerEvent(BaseModel):
    event_id: str


class ErrorDetail(BaseModel):
    type: str
    code: str | None = None
    message: str
    param: str | None = None
    event_id: str | None = None  # the client event this answers


class ErrorEvent(_ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail


class SessionCreated(_ServerEvent):
    type: Literal["session.created"] = "session.created"
    session: SessionConfig


class SessionUpdated(_ServerEvent):
    type: Literal["session.updated"] = "session.updated"
    session: SessionConfig


class InputAudioBufferSpeechStarted(_ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int  # from the start of the session's input audio
    item_id: str  # the user item the speech will become


class InputAudioBufferSpeechStopped(_ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class InputAudioBufferCommitted(_ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class InputAudioBufferCleared(_ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class InputAudioBufferTimeoutTriggered(_ServerEvent):
    """``idle_timeout_ms`` elapsed with no speech; a response follows."""

    type: Literal["input_audio_buffer.timeout_triggered"] = "input_audio_buffer.timeout_triggered"
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


class ConversationItemAdded(_ServerEvent):
    type: Literal["conversation.item.added"] = "conversation.item.added"
    item: Item
    previous_item_id: str | None = None


class ConversationItemDone(_ServerEvent):
    type: Literal["conversation.item.done"] = "conversation.item.done"
    item: Item
    previous_item_id: str | None = None


class ConversationItemRetrieved(_ServerEvent):
    type: Literal["conversation.item.retrieved"] = "conversation.item.retrieved"
    item: Item


class ConversationItemDeleted(_ServerEvent):
    type: Literal["conversation.item.deleted"] = "conversation.item.deleted"
    item_id: str


class ConversationItemTruncated(_ServerEvent):
    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


class TranscriptionDelta(_ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int
    delta: str


class DurationUsage(BaseModel):
    """Transcription billed by audio duration (OpenAI's ``whisper-1`` style usage)."""

    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptionCompleted(_ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int
    transcript: str
    usage: DurationUsage


class TranscriptionError(BaseModel):
    type: str
    code: str | None = None
    message: str
    param: str | None = None


class TranscriptionFailed(_ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    item_id: str
    content_index: int
    error: TranscriptionError


class ResponseAudioOutput(BaseModel):
    format: AudioFormat
    voice: Voice


class ResponseAudio(BaseModel):
    output: ResponseAudioOutput


class ResponseFailure(BaseModel):
    type: str
    code: str | None = None
    message: str | None = None


CancelReason = Literal["turn_detected", "client_cancelled"]
IncompleteReason = Literal["max_output_tokens", "content_filter"]


class ResponseStatusDetails(BaseModel):
    type: Literal["completed", "cancelled", "incomplete", "failed"]
    reason: CancelReason | IncompleteReason | None = None
    error: ResponseFailure | None = None


class Usage(BaseModel):
    total_tokens: int
    input_tokens: int
    output_tokens: int


ResponseStatus = Literal["in_progress", "completed", "cancelled", "failed", "incomplete"]


class Response(BaseModel):
    id: str
    object: Literal["realtime.response"] = "realtime.response"
    status: ResponseStatus
    status_details: ResponseStatusDetails | None = None
    output: list[Item] = Field(default_factory=list)
    conversation_id: str | None = None
    output_modalities: list[Literal["text", "audio"]]
    max_output_tokens: int | Literal["inf"]
    audio: ResponseAudio
    usage: Usage | None = None
    metadata: dict[str, str] | None = None


class ResponseCreated(_ServerEvent):
    type: Literal["response.created"] = "response.created"
    response: Response


class ResponseDone(_ServerEvent):
    type: Literal["response.done"] = "response.done"
    response: Response


class ResponseOutputItemAdded(_ServerEvent):
    type: Literal["response.output_item.added"] = "response.output_item.added"
    response_id: str
    output_index: int
    item: Item


class ResponseOutputItemDone(_ServerEvent):
    type: Literal["response.output_item.done"] = "response.output_item.done"
    response_id: str
    output_index: int
    item: Item


class ContentPart(BaseModel):
    """A part as ``response.content_part.*`` names it: ``audio`` (+ transcript) or ``text``."""

    type: Literal["audio", "text"]
    transcript: str | None = None
    text: str | None = None


class _PartEvent(_ServerEvent):
    response_id: str
    item_id: str
    output_index: int
    content_index: int


class ResponseContentPartAdded(_PartEvent):
    type: Literal["response.content_part.added"] = "response.content_part.added"
    part: ContentPart


class ResponseContentPartDone(_PartEvent):
    type: Literal["response.content_part.done"] = "response.content_part.done"
    part: ContentPart


class ResponseOutputAudioDelta(_PartEvent):
    type: Literal["response.output_audio.delta"] = "response.output_audio.delta"
    delta: str  # base64, in the session's output format


class ResponseOutputAudioDone(_PartEvent):
    type: Literal["response.output_audio.done"] = "response.output_audio.done"


class ResponseOutputAudioTranscriptDelta(_PartEvent):
    type: Literal["response.output_audio_transcript.delta"] = (
        "response.output_audio_transcript.delta"
    )
    delta: str


class ResponseOutputAudioTranscriptDone(_PartEvent):
    type: Literal["response.output_audio_transcript.done"] = "response.output_audio_transcript.done"
    transcript: str


class ResponseOutputTextDelta(_PartEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    delta: str


class ResponseOutputTextDone(_PartEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    text: str


class ResponseFunctionCallArgumentsDelta(_ServerEvent):
    type: Literal["response.function_call_arguments.delta"] = (
        "response.function_call_arguments.delta"
    )
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


class ResponseFunctionCallArgumentsDone(_ServerEvent):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


ServerEvent = Annotated[
    ErrorEvent
    | SessionCreated
    | SessionUpdated
    | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped
    | InputAudioBufferCommitted
    | InputAudioBufferCleared
    | InputAudioBufferTimeoutTriggered
    | ConversationItemAdded
    | ConversationItemDone
    | ConversationItemRetrieved
    | ConversationItemDeleted
    | ConversationItemTruncated
    | TranscriptionDelta
    | TranscriptionCompleted
    | TranscriptionFailed
    | ResponseCreated
    | ResponseDone
    | ResponseOutputItemAdded
    | ResponseOutputItemDone
    | ResponseContentPartAdded
    | ResponseContentPartDone
    | ResponseOutputAudioDelta
    | ResponseOutputAudioDone
    | ResponseOutputAudioTranscriptDelta
    | ResponseOutputAudioTranscriptDone
    | ResponseOutputTextDelta
    | ResponseOutputTextDone
    | ResponseFunctionCallArgumentsDelta
    | ResponseFunctionCallArgumentsDone,
    Field(discriminator="type"),
]

_SERVER_ADAPTER: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)


def encode_server_event(event: BaseModel) -> str:
    """The JSON text frame for a server event. Nulls are kept, as OpenAI sends them."""
    return event.model_dump_json()


def parse_server_event(text: str | bytes) -> ServerEvent:
    """Decode a server event (for test clients and the load generator; raises on bad input)."""
    return _SERVER_ADAPTER.validate_json(text)
