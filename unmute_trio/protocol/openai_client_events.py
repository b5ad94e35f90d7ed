"""OpenAI Realtime (GA) client events and their decoder, :func:`parse_client_event`.

The events modelled are the ones this server acts on; the other GA client events are answered
with ``unsupported_event`` (see docs/openai-realtime.md). Every event may carry the client's
``event_id``, which the server's ``error`` answer repeats.

Decoding never raises for bad input: a frame that is not a valid event becomes a
:class:`~unmute_trio.protocol.openai_errors.ClientEventError` value (a bug in this module still
raises). Limits, checked before any model sees the data (by :mod:`.json_limits`, shared with
the Unmute dialect):

- a frame longer than :data:`MAX_FRAME_CHARS` characters is refused unparsed;
- JSON nested deeper than :data:`MAX_JSON_DEPTH` is refused (a pathological ``[[[[...`` that
  exhausts the JSON parser's recursion is reported the same way, not raised);
- a string holding a lone UTF-16 surrogate (``"\\ud800"``) is refused: it cannot be encoded as
  UTF-8, so it would break the LLM request or the log line that carries it later;

and after them, field lengths (instructions, message text, ids, tools) are bounded by the models.

Unknown fields are refused (``unknown_parameter``) in every event, as OpenAI does, except inside
the opaque objects a client owns (a tool's JSON-Schema ``parameters``, ``metadata``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from unmute_trio.protocol.json_limits import MAX_FRAME_CHARS as MAX_FRAME_CHARS
from unmute_trio.protocol.json_limits import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from unmute_trio.protocol.json_limits import (
    JsonLimitError,
    check_tree,
    format_path,
    has_lone_surrogate,
    loads,
)
from unmute_trio.protocol.openai_errors import (
    INVALID_FRAME,
    INVALID_JSON,
    INVALID_TYPE,
    INVALID_VALUE,
    MISSING_REQUIRED_PARAMETER,
    UNSUPPORTED_EVENT,
    ClientEventError,
    error_from_validation,
)
from unmute_trio.protocol.openai_items import MAX_CONTENT_PARTS, ItemInput
from unmute_trio.protocol.openai_response_config import ResponseParams
from unmute_trio.protocol.openai_session import MAX_ID_CHARS, Id, SessionPatch, StrictModel


class _ClientEvent(StrictModel):
    event_id: Id | None = None


class SessionUpdate(_ClientEvent):
    type: Literal["session.update"] = "session.update"
    session: SessionPatch


class InputAudioBufferAppend(_ClientEvent):
    type: Literal["input_audio_buffer.append"] = "input_audio_buffer.append"
    # Base64 audio in the session's input format; decoded (and checked) by protocol.g711.
    audio: str


class InputAudioBufferCommit(_ClientEvent):
    type: Literal["input_audio_buffer.commit"] = "input_audio_buffer.commit"


class InputAudioBufferClear(_ClientEvent):
    type: Literal["input_audio_buffer.clear"] = "input_audio_buffer.clear"


class ConversationItemCreate(_ClientEvent):
    type: Literal["conversation.item.create"] = "conversation.item.create"
    item: ItemInput
    previous_item_id: Id | None = None  # "root" inserts first; absent appends


class ConversationItemRetrieve(_ClientEvent):
    type: Literal["conversation.item.retrieve"] = "conversation.item.retrieve"
    item_id: Id


class ConversationItemDelete(_ClientEvent):
    type: Literal["conversation.item.delete"] = "conversation.item.delete"
    item_id: Id


class ConversationItemTruncate(_ClientEvent):
    """The client played only ``audio_end_ms`` of an assistant audio part (barge-in)."""

    type: Literal["conversation.item.truncate"] = "conversation.item.truncate"
    item_id: Id
    content_index: Annotated[int, Field(ge=0, lt=MAX_CONTENT_PARTS)]
    audio_end_ms: Annotated[int, Field(ge=0)]


class ResponseCreate(_ClientEvent):
    type: Literal["response.create"] = "response.create"
    response: ResponseParams | None = None


class ResponseCancel(_ClientEvent):
    type: Literal["response.cancel"] = "response.cancel"
    response_id: Id | None = None  # absent: the response in progress, if any


ClientEvent = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemRetrieve
    | ConversationItemDelete
    | ConversationItemTruncate
    | ResponseCreate
    | ResponseCancel
)

# Dispatch on ``type`` by hand rather than through a discriminated union: pydantic would put the
# tag into every error location, and an unknown type deserves its own message.
_EVENT_MODELS: dict[str, type[ClientEvent]] = {
    model.model_fields["type"].default: model
    for model in (
        SessionUpdate,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
        ConversationItemCreate,
        ConversationItemRetrieve,
        ConversationItemDelete,
        ConversationItemTruncate,
        ResponseCreate,
        ResponseCancel,
    )
}

# GA (or beta) client events that exist but that this server does not implement.
UNSUPPORTED_EVENTS = {
    "output_audio_buffer.clear": (
        "output_audio_buffer.clear is for WebRTC and SIP connections; over a WebSocket the"
        " client owns playback: stop it and send conversation.item.truncate."
    ),
    "transcription_session.update": (
        "transcription_session.update is a Realtime beta event; transcription-only sessions"
        " are not supported yet."
    ),
}


def parse_client_event(text: str | bytes) -> ClientEvent | ClientEventError:
    """Decode one WebSocket frame from a client into an event, or say why it is not one."""
    if isinstance(text, bytes):
        return ClientEventError(
            INVALID_FRAME, "Binary frames are not supported: send JSON events as text frames."
        )
    try:
        data = loads(text)
    except json.JSONDecodeError as e:
        return ClientEventError(
            INVALID_JSON, f"Invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})."
        )
    except JsonLimitError as e:
        return ClientEventError(e.code, e.message)
    if not isinstance(data, dict):
        return ClientEventError(INVALID_TYPE, "An event must be a JSON object.")
    event_id = _readable_event_id(data.get("event_id"))
    try:
        check_tree(data)
    except JsonLimitError as e:
        return ClientEventError(e.code, e.message, format_path(e.path) or None, event_id)
    kind = data.get("type")
    if kind is None:
        return ClientEventError(
            MISSING_REQUIRED_PARAMETER, "Missing required parameter: 'type'.", "type", event_id
        )
    if not isinstance(kind, str):
        return ClientEventError(
            INVALID_TYPE, "Invalid type for 'type': expected a string.", "type", event_id
        )
    model = _EVENT_MODELS.get(kind)
    if model is None:
        return _unknown_type(kind, event_id)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        return error_from_validation(e, data, event_id=event_id)


def _readable_event_id(value: Any) -> str | None:
    ok = isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS
    return value if ok and not has_lone_surrogate(value) else None


def _unknown_type(kind: str, event_id: str | None) -> ClientEventError:
    if kind in UNSUPPORTED_EVENTS:
        return ClientEventError(UNSUPPORTED_EVENT, UNSUPPORTED_EVENTS[kind], "type", event_id)
    shown = kind[:64] if kind.isascii() else ascii(kind[:64])  # never echo a whole payload
    supported = ", ".join(f"'{name}'" for name in _EVENT_MODELS)
    return ClientEventError(
        INVALID_VALUE,
        f"Invalid value: '{shown}'. Supported values are: {supported}.",
        "type",
        event_id,
    )
