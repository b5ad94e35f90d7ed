"""Builders of OpenAI Realtime (GA) server events from plain values.

:class:`ServerEvents` gives every event a fresh ``event_id`` from an injected
:class:`~unmute_trio.protocol.openai_server_events.IdSource` (random in production, sequential
in tests), so the session never assembles wire shapes itself. Item, response and call ids are
the caller's: it makes them with the same id source when it creates the thing they name.

The events of one assistant reply, in order (OpenAI's order)::

    response_created
    output_item_added(item)              conversation item_added(item)
    content_part_added                   (audio: transcript deltas and audio deltas interleave)
    audio_delta / transcript_delta ...   or text_delta ...
    audio_done, transcript_done          or text_done
    content_part_done
    output_item_done(item)               conversation item_done(item)
    response_done
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

from unmute_trio.protocol.openai_errors import ClientEventError
from unmute_trio.protocol.openai_items import Item
from unmute_trio.protocol.openai_response_config import ResponseConfig
from unmute_trio.protocol.openai_server_events import (
    CancelReason,
    ContentPart,
    ConversationItemAdded,
    ConversationItemDeleted,
    ConversationItemDone,
    ConversationItemRetrieved,
    ConversationItemTruncated,
    DurationUsage,
    ErrorDetail,
    ErrorEvent,
    IdSource,
    IncompleteReason,
    InputAudioBufferCleared,
    InputAudioBufferCommitted,
    InputAudioBufferSpeechStarted,
    InputAudioBufferSpeechStopped,
    InputAudioBufferTimeoutTriggered,
    Response,
    ResponseAudio,
    ResponseAudioOutput,
    ResponseContentPartAdded,
    ResponseContentPartDone,
    ResponseCreated,
    ResponseDone,
    ResponseFailure,
    ResponseFunctionCallArgumentsDelta,
    ResponseFunctionCallArgumentsDone,
    ResponseOutputAudioDelta,
    ResponseOutputAudioDone,
    ResponseOutputAudioTranscriptDelta,
    ResponseOutputAudioTranscriptDone,
    ResponseOutputItemAdded,
    ResponseOutputItemDone,
    ResponseOutputTextDelta,
    ResponseOutputTextDone,
    ResponseStatusDetails,
    SessionCreated,
    SessionUpdated,
    TranscriptionCompleted,
    TranscriptionDelta,
    TranscriptionError,
    TranscriptionFailed,
    Usage,
)
from unmute_trio.protocol.openai_session import SessionConfig


@dataclass(frozen=True, slots=True)
class PartRef:
    """Where a content part sits: in which response, item, output slot and content slot."""

    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0


class ServerEvents:
    def __init__(self, ids: IdSource) -> None:
        self._ids = ids

    def _event_id(self) -> str:
        return self._ids.new_id("event")

    # ------------------------------------------------------------ session and errors

    def session_created(self, session: SessionConfig) -> SessionCreated:
        return SessionCreated(event_id=self._event_id(), session=session)

    def session_updated(self, session: SessionConfig) -> SessionUpdated:
        return SessionUpdated(event_id=self._event_id(), session=session)

    def error(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> ErrorEvent:
        detail = ErrorDetail(
            type=error_type, code=code, message=message, param=param, event_id=event_id
        )
        return ErrorEvent(event_id=self._event_id(), error=detail)

    def client_error(self, err: ClientEventError) -> ErrorEvent:
        """The answer to a client event that was refused."""
        return self.error(
            err.code, err.message, param=err.param, event_id=err.event_id, error_type=err.type
        )

    # ------------------------------------------------------------ input audio buffer

    def speech_started(self, audio_start_ms: int, item_id: str) -> InputAudioBufferSpeechStarted:
        return InputAudioBufferSpeechStarted(
            event_id=self._event_id(), audio_start_ms=audio_start_ms, item_id=item_id
        )

    def speech_stopped(self, audio_end_ms: int, item_id: str) -> InputAudioBufferSpeechStopped:
        return InputAudioBufferSpeechStopped(
            event_id=self._event_id(), audio_end_ms=audio_end_ms, item_id=item_id
        )

    def audio_committed(
        self, item_id: str, previous_item_id: str | None
    ) -> InputAudioBufferCommitted:
        return InputAudioBufferCommitted(
            event_id=self._event_id(), item_id=item_id, previous_item_id=previous_item_id
        )

    def audio_cleared(self) -> InputAudioBufferCleared:
        return InputAudioBufferCleared(event_id=self._event_id())

    def idle_timeout(
        self, audio_start_ms: int, audio_end_ms: int, item_id: str
    ) -> InputAudioBufferTimeoutTriggered:
        return InputAudioBufferTimeoutTriggered(
            event_id=self._event_id(),
            audio_start_ms=audio_start_ms,
            audio_end_ms=audio_end_ms,
            item_id=item_id,
        )

    # ------------------------------------------------------------ conversation items

    def item_added(self, item: Item, previous_item_id: str | None) -> ConversationItemAdded:
        return ConversationItemAdded(
            event_id=self._event_id(), item=item, previous_item_id=previous_item_id
        )

    def item_done(self, item: Item, previous_item_id: str | None) -> ConversationItemDone:
        return ConversationItemDone(
            event_id=self._event_id(), item=item, previous_item_id=previous_item_id
        )

    def item_retrieved(self, item: Item) -> ConversationItemRetrieved:
        return ConversationItemRetrieved(event_id=self._event_id(), item=item)

    def item_deleted(self, item_id: str) -> ConversationItemDeleted:
        return ConversationItemDeleted(event_id=self._event_id(), item_id=item_id)

    def item_truncated(
        self, item_id: str, content_index: int, audio_end_ms: int
    ) -> ConversationItemTruncated:
        return ConversationItemTruncated(
            event_id=self._event_id(),
            item_id=item_id,
            content_index=content_index,
            audio_end_ms=audio_end_ms,
        )

    def transcription_delta(
        self, item_id: str, delta: str, content_index: int = 0
    ) -> TranscriptionDelta:
        return TranscriptionDelta(
            event_id=self._event_id(), item_id=item_id, content_index=content_index, delta=delta
        )

    def transcription_completed(
        self, item_id: str, transcript: str, audio_seconds: float, content_index: int = 0
    ) -> TranscriptionCompleted:
        return TranscriptionCompleted(
            event_id=self._event_id(),
            item_id=item_id,
            content_index=content_index,
            transcript=transcript,
            usage=DurationUsage(seconds=audio_seconds),
        )

    def transcription_failed(
        self, item_id: str, code: str, message: str, content_index: int = 0
    ) -> TranscriptionFailed:
        error = TranscriptionError(type="transcription_error", code=code, message=message)
        return TranscriptionFailed(
            event_id=self._event_id(), item_id=item_id, content_index=content_index, error=error
        )

    # ------------------------------------------------------------ responses

    def response_created(
        self, response_id: str, config: ResponseConfig, conversation_id: str | None = None
    ) -> ResponseCreated:
        response = _response(response_id, config, conversation_id, "in_progress", None, [], None)
        return ResponseCreated(event_id=self._event_id(), response=response)

    def response_done(
        self,
        response_id: str,
        config: ResponseConfig,
        status: Literal["completed", "cancelled", "incomplete", "failed"],
        output: list[Item],
        *,
        reason: CancelReason | IncompleteReason | None = None,
        failure: ResponseFailure | None = None,
        usage: Usage | None = None,
        conversation_id: str | None = None,
    ) -> ResponseDone:
        """``reason`` is required for cancelled and incomplete, ``failure`` for failed."""
        if status in ("cancelled", "incomplete") and reason is None:
            raise ValueError(f"a {status} response needs a reason")
        if status == "failed" and failure is None:
            raise ValueError("a failed response needs a failure")
        details = (
            None
            if status == "completed"
            else ResponseStatusDetails(type=status, reason=reason, error=failure)
        )
        response = _response(response_id, config, conversation_id, status, details, output, usage)
        return ResponseDone(event_id=self._event_id(), response=response)

    def output_item_added(
        self, response_id: str, output_index: int, item: Item
    ) -> ResponseOutputItemAdded:
        return ResponseOutputItemAdded(
            event_id=self._event_id(), response_id=response_id, output_index=output_index, item=item
        )

    def output_item_done(
        self, response_id: str, output_index: int, item: Item
    ) -> ResponseOutputItemDone:
        return ResponseOutputItemDone(
            event_id=self._event_id(), response_id=response_id, output_index=output_index, item=item
        )

    def content_part_added(
        self, ref: PartRef, modality: Literal["audio", "text"]
    ) -> ResponseContentPartAdded:
        return ResponseContentPartAdded(
            event_id=self._event_id(), **_ref(ref), part=_part(modality, "")
        )

    def content_part_done(
        self, ref: PartRef, modality: Literal["audio", "text"], text: str
    ) -> ResponseContentPartDone:
        """``text``: the whole transcript (audio) or text of the part."""
        return ResponseContentPartDone(
            event_id=self._event_id(), **_ref(ref), part=_part(modality, text)
        )

    def audio_delta(self, ref: PartRef, audio_b64: str) -> ResponseOutputAudioDelta:
        return ResponseOutputAudioDelta(event_id=self._event_id(), **_ref(ref), delta=audio_b64)

    def audio_done(self, ref: PartRef) -> ResponseOutputAudioDone:
        return ResponseOutputAudioDone(event_id=self._event_id(), **_ref(ref))

    def transcript_delta(self, ref: PartRef, delta: str) -> ResponseOutputAudioTranscriptDelta:
        return ResponseOutputAudioTranscriptDelta(
            event_id=self._event_id(), **_ref(ref), delta=delta
        )

    def transcript_done(self, ref: PartRef, transcript: str) -> ResponseOutputAudioTranscriptDone:
        return ResponseOutputAudioTranscriptDone(
            event_id=self._event_id(), **_ref(ref), transcript=transcript
        )

    def text_delta(self, ref: PartRef, delta: str) -> ResponseOutputTextDelta:
        return ResponseOutputTextDelta(event_id=self._event_id(), **_ref(ref), delta=delta)

    def text_done(self, ref: PartRef, text: str) -> ResponseOutputTextDone:
        return ResponseOutputTextDone(event_id=self._event_id(), **_ref(ref), text=text)

    def function_arguments_delta(
        self, response_id: str, item_id: str, output_index: int, call_id: str, delta: str
    ) -> ResponseFunctionCallArgumentsDelta:
        return ResponseFunctionCallArgumentsDelta(
            event_id=self._event_id(),
            response_id=response_id,
            item_id=item_id,
            output_index=output_index,
            call_id=call_id,
            delta=delta,
        )

    def function_arguments_done(
        self,
        response_id: str,
        item_id: str,
        output_index: int,
        call_id: str,
        name: str,
        arguments: str,
    ) -> ResponseFunctionCallArgumentsDone:
        return ResponseFunctionCallArgumentsDone(
            event_id=self._event_id(),
            response_id=response_id,
            item_id=item_id,
            output_index=output_index,
            call_id=call_id,
            name=name,
            arguments=arguments,
        )


class _PartFields(TypedDict):
    """The fields locating a content part, shared by the part and delta events."""

    response_id: str
    item_id: str
    output_index: int
    content_index: int


def _ref(ref: PartRef) -> _PartFields:
    return {
        "response_id": ref.response_id,
        "item_id": ref.item_id,
        "output_index": ref.output_index,
        "content_index": ref.content_index,
    }


def _part(modality: Literal["audio", "text"], text: str) -> ContentPart:
    if modality == "audio":
        return ContentPart(type="audio", transcript=text)
    return ContentPart(type="text", text=text)


def _response(
    response_id: str,
    config: ResponseConfig,
    conversation_id: str | None,
    status: Literal["in_progress", "completed", "cancelled", "incomplete", "failed"],
    details: ResponseStatusDetails | None,
    output: list[Item],
    usage: Usage | None,
) -> Response:
    return Response(
        id=response_id,
        status=status,
        status_details=details,
        output=output,
        conversation_id=conversation_id,
        output_modalities=config.output_modalities,
        max_output_tokens=config.max_output_tokens,
        audio=ResponseAudio(
            output=ResponseAudioOutput(format=config.output_format, voice=config.voice)
        ),
        usage=usage,
        metadata=config.metadata,
    )
