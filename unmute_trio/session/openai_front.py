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

import logging
from typing import Any

from unmute_trio.conversation.events import (
    AudioCommitted,
    FunctionOutputAdded,
    ResponseCancelRequested,
    ResponseRequested,
    ResponseSpec,
    SessionUpdated,
    TurnDeleteRequested,
    TurnOptions,
    TurnOptionsChanged,
    UserTextAdded,
)
from unmute_trio.protocol import openai_client_events as client
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.g711 import InputAudioDecoder
from unmute_trio.protocol.instructions import ConstantInstructions
from unmute_trio.protocol.openai_errors import INVALID_FRAME, ClientEventError
from unmute_trio.protocol.openai_items import (
    FunctionCallOutputInput,
    InputTextPart,
    UserMessageInput,
    item_from_input,
)
from unmute_trio.protocol.openai_response_config import resolve_response
from unmute_trio.protocol.openai_session import (
    FunctionToolChoice,
    SessionConfig,
    VoiceId,
    apply_session_update,
)
from unmute_trio.session.front import SessionPort
from unmute_trio.session.openai_presenter import OpenAIPresenter

log = logging.getLogger(__name__)


class OpenAIFront(OpenAIPresenter):
    """An OpenAI Realtime client: its frames → session calls and core events (this class);
    core notes → GA events (:class:`OpenAIPresenter`)."""

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
