"""The server → client half of the OpenAI Realtime front (``openai_front.py``): it owns what the
GA protocol names and the core does not need — ids of items and responses, the session
configuration, per-response audio encoders — and turns core notes and bot audio into GA events.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from typing import Literal

import numpy as np
from pydantic import BaseModel

from unmute_trio.conversation.events import (
    Note,
    ResponseFinished,
    ResponseInterrupted,
    ResponseStarted,
    ResponseTextComplete,
    ResponseToolCall,
    ResponseWordPlanned,
    ResponseWordSpoken,
    ServiceWarning,
    SessionFailed,
    StatusReport,
    TurnAdded,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscriptDelta,
    UserTurnEnded,
)
from unmute_trio.conversation.messages import CANCELLED_BY_CLIENT
from unmute_trio.protocol.g711 import InputAudioDecoder, OutputAudioEncoder
from unmute_trio.protocol.moshi import SAMPLE_RATE
from unmute_trio.protocol.ogg_opus import OpusPackets
from unmute_trio.protocol.openai_event_builder import PartRef, ServerEvents
from unmute_trio.protocol.openai_items import (
    FunctionCallItem,
    Item,
    assistant_message,
    user_audio_message,
)
from unmute_trio.protocol.openai_response_config import ResponseConfig, resolve_response
from unmute_trio.protocol.openai_server_events import (
    CancelReason,
    RandomIds,
    Usage,
    encode_server_event,
)
from unmute_trio.protocol.openai_session import (
    SessionConfig,
    default_session,
)
from unmute_trio.session.context import SessionContext
from unmute_trio.session.front import SessionPort

log = logging.getLogger(__name__)

# Items kept for conversation.item.retrieve, and responses whose audio may still be queued.
MAX_ITEMS = 1024
MAX_RESPONSES = 8
DEFAULT_MODEL = "unmute-trio"
DEFAULT_VOICE = "default"


@dataclasses.dataclass
class _Response:
    response_id: str
    config: ResponseConfig
    message_id: str
    modality: Literal["audio", "text"]
    encoder: OutputAudioEncoder
    outputs: list[Item] = dataclasses.field(default_factory=list)
    text: str = ""

    @property
    def ref(self) -> PartRef:
        return PartRef(self.response_id, self.message_id)


class OpenAIPresenter:
    """Notes and audio → GA server events, and the bookkeeping of items and responses that
    both halves of the front share."""

    tts_opus = False  # its audio formats are PCM16 and G.711: the TTS sends PCM

    def __init__(self, state: SessionContext, query: dict[str, str] | None = None) -> None:
        query = query or {}
        self._ids = RandomIds()
        self._events = ServerEvents(self._ids)
        voices = [
            v.source.path_on_server for v in state.voices if hasattr(v.source, "path_on_server")
        ]
        self.config: SessionConfig = default_session(
            self._ids.new_id("sess"),
            model=query.get("model") or DEFAULT_MODEL,
            voice=voices[0] if voices else DEFAULT_VOICE,
        )
        self._decoder = InputAudioDecoder(self.config.audio.input.format.type)
        self._items: OrderedDict[str, Item] = OrderedDict()
        # item id → its turn in the core's transcript (for conversation.item.delete)
        self._keys: dict[str, int] = {}
        self._adding: str | None = None  # the client's item being added to the transcript
        self._last_item: str | None = None
        self._user_item: str | None = None
        self._samples_in = 0
        self._speech_started_ms = 0
        self._responses: OrderedDict[int, _Response] = OrderedDict()
        self._active_turn: int | None = None
        self._next_config: ResponseConfig | None = None

    # ------------------------------------------------------------------ server → client

    def present(self, note: Note) -> list[BaseModel]:
        ev = self._events
        transcribe = self.config.audio.input.transcription is not None
        vad = self.config.audio.input.turn_detection is not None
        match note:
            case TurnAdded():
                if self._adding is not None:
                    self._name_turn(self._adding, note.key)
                return []
            case UserSpeechStarted():
                return []  # announced with the turn's first word (below)
            case UserTranscriptDelta():
                started: list[BaseModel] = []
                if note.opens_turn:
                    # Speech starts before its first word is transcribed: the GA order.
                    self._speech_started_ms = self._now_ms()
                    item = self._current_user_item()
                    if vad:
                        started.append(ev.speech_started(self._speech_started_ms, item))
                if note.text.strip() and transcribe:
                    started.append(ev.transcription_delta(self._current_user_item(), note.text))
                return started
            case UserSpeechStopped():
                item = self._current_user_item()
                out: list[BaseModel] = []
                if vad:
                    out.append(ev.speech_stopped(self._now_ms(), item))
                pending = user_audio_message(item, None, "in_progress")
                out += [
                    ev.audio_committed(item, self._last_item),
                    ev.item_added(pending, self._last_item),
                ]
                return out
            case UserTurnEnded():
                item_id = self._current_user_item()
                self._user_item = None
                said = user_audio_message(item_id, note.text.strip())
                if note.key is not None:
                    self._name_turn(item_id, note.key)
                previous = self._last_item
                self._remember(said)
                out = [ev.item_done(said, previous)]
                if transcribe:
                    seconds = self._samples_in / SAMPLE_RATE
                    out.append(ev.transcription_completed(item_id, note.text.strip(), seconds))
                return out
            case ResponseStarted():
                return self._response_started(note)
            case ResponseWordPlanned():
                r = self._responses.get(note.turn_id)
                if r is None or r.modality != "text":
                    return []
                r.text += note.word
                return [ev.text_delta(r.ref, note.word)]
            case ResponseWordSpoken():
                r = self._responses.get(note.turn_id)
                if r is None or r.modality != "audio":
                    return []
                delta = note.text if not r.text else " " + note.text.strip()
                r.text += delta
                return [ev.transcript_delta(r.ref, delta)]
            case ResponseTextComplete():
                return []
            case ResponseToolCall():
                return self._tool_call(note)
            case ResponseFinished():
                return self._response_ended(note.turn_id, None, note)
            case ResponseInterrupted():
                reason: CancelReason = (
                    "client_cancelled" if note.reason == CANCELLED_BY_CLIENT else "turn_detected"
                )
                return self._response_ended(note.turn_id, reason)
            case StatusReport():
                return []
            case ServiceWarning():
                log.info("service warning (not sent to OpenAI clients): %s", note.message)
                return []
            case SessionFailed():
                return [self.fatal(note.message)]
        return []

    def _response_started(self, note: ResponseStarted) -> list[BaseModel]:
        ev = self._events
        config = self._next_config or resolve_response(self.config, None)
        assert isinstance(config, ResponseConfig), "the session's own tool_choice was checked"
        self._next_config = None
        modality: Literal["audio", "text"] = "audio" if note.speak else "text"
        fmt = config.output_format.type
        r = _Response(
            response_id=self._ids.new_id("resp"),
            config=config,
            message_id=self._ids.new_id("item"),
            modality=modality,
            encoder=OutputAudioEncoder(fmt),
        )
        self._responses[note.turn_id] = r
        while len(self._responses) > MAX_RESPONSES:
            self._responses.popitem(last=False)
        self._active_turn = note.turn_id
        self._name_turn(r.message_id, note.key)
        item = assistant_message(r.message_id, modality, None, "in_progress")
        previous = self._last_item
        self._last_item = r.message_id
        return [
            ev.response_created(r.response_id, config),
            ev.output_item_added(r.response_id, 0, item),
            ev.item_added(item, previous),
            ev.content_part_added(r.ref, modality),
        ]

    def _tool_call(self, note: ResponseToolCall) -> list[BaseModel]:
        r = self._responses.get(note.turn_id)
        if r is None:
            return []
        ev = self._events
        index = 1 + len(r.outputs)  # the message item is output 0
        item_id = self._ids.new_id("item")
        running = FunctionCallItem(
            id=item_id, status="in_progress", call_id=note.call_id, name=note.name, arguments=""
        )
        done = FunctionCallItem(
            id=item_id, call_id=note.call_id, name=note.name, arguments=note.arguments
        )
        r.outputs.append(done)
        self._name_turn(item_id, note.key)
        previous = self._last_item
        self._remember(done)
        return [
            ev.output_item_added(r.response_id, index, running),
            ev.item_added(running, previous),
            ev.function_arguments_delta(
                r.response_id, item_id, index, note.call_id, note.arguments
            ),
            ev.function_arguments_done(
                r.response_id, item_id, index, note.call_id, note.name, note.arguments
            ),
            ev.output_item_done(r.response_id, index, done),
            ev.item_done(done, previous),
        ]

    def _response_ended(
        self,
        turn_id: int,
        cancelled: CancelReason | None,
        finished: ResponseFinished | None = None,
    ) -> list[BaseModel]:
        r = self._responses.get(turn_id)
        if r is None:
            return []
        ev = self._events
        self._active_turn = None
        text = r.text.strip()
        out: list[BaseModel] = []
        if r.modality == "audio":
            if cancelled is None and (tail := r.encoder.flush()):
                out.append(ev.audio_delta(r.ref, tail))
            out += [ev.audio_done(r.ref), ev.transcript_done(r.ref, text)]
        else:
            out.append(ev.text_done(r.ref, text))
        truncated = finished is not None and finished.truncated
        status: Literal["completed", "incomplete"] = (
            "completed" if cancelled is None and not truncated else "incomplete"
        )
        message = assistant_message(r.message_id, r.modality, text, status)
        self._items[r.message_id] = message
        out += [
            ev.content_part_done(r.ref, r.modality, text),
            ev.output_item_done(r.response_id, 0, message),
            ev.item_done(message, None),
        ]
        outputs: list[Item] = [message, *r.outputs]
        usage = None
        if finished is not None and finished.usage is not None:
            counts = finished.usage
            usage = Usage(
                total_tokens=counts.input_tokens + counts.output_tokens,
                input_tokens=counts.input_tokens,
                output_tokens=counts.output_tokens,
            )
        if truncated:
            out.append(
                ev.response_done(
                    r.response_id,
                    r.config,
                    "incomplete",
                    outputs,
                    reason="max_output_tokens",
                    usage=usage,
                )
            )
        elif cancelled is None:
            out.append(ev.response_done(r.response_id, r.config, "completed", outputs, usage=usage))
        else:
            out.append(
                ev.response_done(r.response_id, r.config, "cancelled", outputs, reason=cancelled)
            )
        return out

    def audio_event(self, audio: np.ndarray | OpusPackets, turn_id: int) -> BaseModel | None:
        if isinstance(audio, OpusPackets):  # tts_opus is False: the TTS client refuses Opus
            raise TypeError("the OpenAI front takes PCM from the TTS, not Opus packets")
        r = self._responses.get(turn_id)
        if r is None:
            return None
        encoded = r.encoder.encode(audio)
        return self._events.audio_delta(r.ref, encoded) if encoded else None

    def encode(self, event: BaseModel) -> str:
        return encode_server_event(event)

    def fatal(self, message: str, code: str | None = None) -> BaseModel:
        return self._events.error(code or "server_error", message, error_type="server_error")

    # ------------------------------------------------------------------ helpers

    def _now_ms(self) -> int:
        return self._samples_in * 1000 // SAMPLE_RATE

    def _current_user_item(self) -> str:
        if self._user_item is None:
            self._user_item = self._ids.new_id("item")
        return self._user_item

    def _remember(self, item: Item) -> None:
        self._items[item.id] = item
        self._last_item = item.id
        while len(self._items) > MAX_ITEMS:
            old, _ = self._items.popitem(last=False)
            self._keys.pop(old, None)

    def _name_turn(self, item_id: str, key: int) -> None:
        self._keys[item_id] = key
        while len(self._keys) > MAX_ITEMS:  # the oldest items cannot be deleted any more
            del self._keys[next(iter(self._keys))]

    def _is_response_item(self, item_id: str) -> bool:
        return any(r.message_id == item_id for r in self._responses.values())

    def _error(
        self,
        session: SessionPort,
        code: str,
        message: str,
        param: str | None,
        event_id: str | None,
    ) -> None:
        session.send(self._events.error(code, message, param=param, event_id=event_id))

    def _unknown_item(self, session: SessionPort, item_id: str, event_id: str | None) -> None:
        message = f"Item with item_id '{item_id}' does not exist."
        self._error(session, "item_not_found", message, "item_id", event_id)
