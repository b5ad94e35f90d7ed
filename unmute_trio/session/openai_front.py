"""The OpenAI Realtime API (GA) front: ``openai`` SDK clients on the same conversation core.

Client events are parsed by ``protocol.openai_client_events`` and become session calls and core
events; core notes become GA server events built by ``protocol.openai_event_builder``. What the
front keeps is only what the GA protocol names and the core does not need: ids of items and
responses, the session configuration, per-response audio encoders.

How GA concepts map onto the core (docs/openai-realtime.md has the full table):

- ``turn_detection`` (``server_vad`` or ``semantic_vad``): Kyutai's pause prediction ends user
  turns; ``create_response`` and ``interrupt_response`` switch automatic replies and barge-in;
  ``idle_timeout_ms`` is the silence timeout. ``null``: only ``input_audio_buffer.commit`` ends
  a user turn and only ``response.create`` starts a reply.
- The assistant's transcript and the LLM's context hold what was played (the server paces audio
  in real time), so ``conversation.item.truncate`` is acknowledged without further change.
- A reply never starts on its own when the session opens: GA clients ask with
  ``response.create`` (the Unmute dialect greets first).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from unmute_trio.conversation.events import (
    AudioCommitted,
    FunctionOutputAdded,
    Note,
    ResponseCancelRequested,
    ResponseFinished,
    ResponseInterrupted,
    ResponseRequested,
    ResponseSpec,
    ResponseStarted,
    ResponseTextComplete,
    ResponseToolCall,
    ResponseWordPlanned,
    ResponseWordSpoken,
    ServiceWarning,
    SessionFailed,
    SessionUpdated,
    StatusReport,
    TurnAdded,
    TurnDeleteRequested,
    TurnOptions,
    TurnOptionsChanged,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTextAdded,
    UserTranscriptDelta,
    UserTurnEnded,
)
from unmute_trio.conversation.machine import CANCELLED_BY_CLIENT
from unmute_trio.protocol import openai_client_events as client
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.g711 import InputAudioDecoder, OutputAudioEncoder
from unmute_trio.protocol.instructions import ConstantInstructions
from unmute_trio.protocol.moshi import SAMPLE_RATE
from unmute_trio.protocol.openai_errors import INVALID_FRAME, ClientEventError
from unmute_trio.protocol.openai_event_builder import PartRef, ServerEvents
from unmute_trio.protocol.openai_items import (
    FunctionCallItem,
    FunctionCallOutputInput,
    InputTextPart,
    Item,
    UserMessageInput,
    assistant_message,
    item_from_input,
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
    FunctionToolChoice,
    SessionConfig,
    VoiceId,
    apply_session_update,
    default_session,
)
from unmute_trio.session.front import SessionPort
from unmute_trio.web.state import AppState

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


class OpenAIFront:
    def __init__(self, state: AppState, query: dict[str, str] | None = None) -> None:
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

    # ------------------------------------------------------------------ client → server

    async def serve(self, session: SessionPort) -> None:
        session.send(self._events.session_created(self.config))
        await self._apply_config(session, self.config)
        while True:
            frame = await session.receive()
            if isinstance(frame, bytes):
                message = "Binary frames are not part of the protocol; send JSON text frames."
                session.send(self._events.error(INVALID_FRAME, message))
                continue
            event = client.parse_client_event(frame)
            if isinstance(event, ClientEventError):
                session.send(self._events.client_error(event))
                continue
            await self._handle(session, event)

    async def _handle(self, session: SessionPort, event: client.ClientEvent) -> None:
        match event:
            case client.InputAudioBufferAppend():
                try:
                    pcm = self._decoder.decode(event.audio)
                except WireFormatError as e:
                    self._error(session, "invalid_value", e.message, "audio", event.event_id)
                    return
                self._samples_in += len(pcm)
                if len(pcm):
                    await session.audio_in(pcm)
            case client.SessionUpdate():
                updated = apply_session_update(self.config, event.session, event_id=event.event_id)
                if isinstance(updated, ClientEventError):
                    session.send(self._events.client_error(updated))
                    return
                await self._apply_config(session, updated)
                session.send(self._events.session_updated(self.config))
            case client.InputAudioBufferCommit():
                session.dispatch(AudioCommitted())
            case client.InputAudioBufferClear():
                # The STT has heard the audio already; the words it has not yet turned into
                # a turn still join the next one (documented).
                session.send(self._events.audio_cleared())
            case client.ConversationItemCreate():
                self._create_item(session, event)
            case client.ConversationItemRetrieve():
                item = self._items.get(event.item_id)
                if item is None:
                    self._unknown_item(session, event.item_id, event.event_id)
                else:
                    session.send(self._events.item_retrieved(item))
            case client.ConversationItemDelete():
                self._delete_item(session, event)
            case client.ConversationItemTruncate():
                if event.item_id not in self._items and not self._is_response_item(event.item_id):
                    self._unknown_item(session, event.item_id, event.event_id)
                    return
                # Already true: only words whose audio was sent are in the context.
                truncated = self._events.item_truncated(
                    event.item_id, event.content_index, event.audio_end_ms
                )
                session.send(truncated)
            case client.ResponseCreate():
                await self._create_response(session, event)
            case client.ResponseCancel():
                if self._active_turn is None:
                    message = "There is no response in progress to cancel."
                    self._error(
                        session, "response_cancel_not_active", message, None, event.event_id
                    )
                    return
                session.dispatch(ResponseCancelRequested())

    async def _apply_config(self, session: SessionPort, config: SessionConfig) -> None:
        old, self.config = self.config, config
        first = old is config
        if first or old.audio.input.format != config.audio.input.format:
            self._decoder = InputAudioDecoder(config.audio.input.format.type)
        prompt = None
        if first or old.instructions != config.instructions:
            prompt = await self._prompt(session, config.instructions)
        voice = config.audio.output.voice
        session.dispatch(
            SessionUpdated(
                system_prompt=prompt,
                voice=voice.id if isinstance(voice, VoiceId) else voice,
                allow_recording=False,
            )
        )
        vad = config.audio.input.turn_detection
        idle = getattr(vad, "idle_timeout_ms", None)
        options = TurnOptions(
            greet=False,
            detect_turns=vad is not None,
            auto_respond=vad is not None and vad.create_response,
            barge_in=vad is not None and vad.interrupt_response,
            silence_timeout_s=idle / 1000 if idle is not None else None,
        )
        session.dispatch(TurnOptionsChanged(options))

    async def _prompt(self, session: SessionPort, instructions: str) -> str:
        # The server's voice-call frame around the client's instructions (or its default
        # character when there are none): spoken replies need the frame's rules.
        if instructions:
            return await session.system_prompt(ConstantInstructions(text=instructions))
        return await session.system_prompt(None)

    def _create_item(self, session: SessionPort, event: client.ConversationItemCreate) -> None:
        given = event.item
        item_id = given.id or self._ids.new_id("item")
        self._adding = item_id  # TurnAdded, presented during the dispatch, names its turn
        if isinstance(given, UserMessageInput):
            text = " ".join(p.text for p in given.content if isinstance(p, InputTextPart))
            session.dispatch(UserTextAdded(text))
        elif isinstance(given, FunctionCallOutputInput):
            session.dispatch(FunctionOutputAdded(given.call_id, given.output))
        else:
            message = "Only user text messages and function_call_output items can be added yet."
            self._error(session, "unsupported_value", message, "item.type", event.event_id)
            return
        item = item_from_input(given, item_id)
        previous = self._last_item
        self._remember(item)
        self._adding = None
        session.send(self._events.item_added(item, previous))
        session.send(self._events.item_done(item, previous))

    def _delete_item(self, session: SessionPort, event: client.ConversationItemDelete) -> None:
        item_id = event.item_id
        key = self._keys.get(item_id)
        if key is None:
            self._unknown_item(session, item_id, event.event_id)
            return
        active = self._responses.get(self._active_turn) if self._active_turn is not None else None
        if item_id == self._user_item or (active is not None and item_id == active.message_id):
            message = (
                f"Item '{item_id}' is still in progress; delete it once it is done "
                "(conversation.item.done or response.done)."
            )
            self._error(session, "item_in_progress", message, "item_id", event.event_id)
            return
        session.dispatch(TurnDeleteRequested(key))
        del self._keys[item_id]
        self._items.pop(item_id, None)
        if self._last_item == item_id:
            self._last_item = next(reversed(self._items), None)
        session.send(self._events.item_deleted(item_id))

    async def _create_response(self, session: SessionPort, event: client.ResponseCreate) -> None:
        if self._active_turn is not None:
            message = "A response is already in progress; cancel it or wait for response.done."
            self._error(
                session, "conversation_already_has_active_response", message, None, event.event_id
            )
            return
        config = resolve_response(self.config, event.response, event_id=event.event_id)
        if isinstance(config, ClientEventError):
            session.send(self._events.client_error(config))
            return
        prompt = None
        if config.instructions != self.config.instructions:
            prompt = await self._prompt(session, config.instructions)
        tools = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description or "",
                    "parameters": t.parameters or {"type": "object", "properties": {}},
                },
            }
            for t in config.tools
        ]
        choice: str | dict[str, Any] | None = None
        if isinstance(config.tool_choice, FunctionToolChoice):
            choice = {"type": "function", "function": {"name": config.tool_choice.name}}
        elif tools:
            choice = config.tool_choice
        spec = ResponseSpec(
            speak="audio" in config.output_modalities,
            system_prompt=prompt,
            tools=tools or None,
            tool_choice=choice,
            max_tokens=None if config.max_output_tokens == "inf" else config.max_output_tokens,
        )
        self._next_config = config
        session.dispatch(ResponseRequested(spec))

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
                out = []
                if note.opens_turn:
                    # Speech starts before its first word is transcribed: the GA order.
                    self._speech_started_ms = self._now_ms()
                    item = self._current_user_item()
                    if vad:
                        out.append(ev.speech_started(self._speech_started_ms, item))
                if note.text.strip() and transcribe:
                    out.append(ev.transcription_delta(self._current_user_item(), note.text))
                return out
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

    def audio_event(self, pcm: np.ndarray, turn_id: int) -> BaseModel | None:
        r = self._responses.get(turn_id)
        if r is None:
            return None
        audio = r.encoder.encode(pcm)
        return self._events.audio_delta(r.ref, audio) if audio else None

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
