"""One conversation: the session nursery and the glue between sockets and the turn-taking core.

```
session nursery                     (one per WebSocket)
├── writer       bounded queue → audio encode → JSON → WebSocket  (the only sender)
├── recorder     (when KYUTAI_RECORDINGS_DIR is set) batches JSONL lines to disk
├── drain watch  when the server shuts down: let the running reply end, then close with 1001
├── idle watch   a client that sends nothing: close with 1008 (first event, then idle limit)
└── main
    ├── client reader  the front (protocol): frames → session calls and machine events
    ├── stt link       connect (discovery), then:
    │   ├── sender       STT queue → STT (1920-sample messages; flushes in order)
    │   └── receiver     words, steps → machine
    └── turn N         one cancel scope per bot reply (see turn.py)
```

Every event goes through :meth:`Session.dispatch`: the pure conversation machine decides, and
the resulting actions are carried out synchronously (queue an event, queue a flush, start or
cancel a turn, close). Nothing awaits inside ``dispatch``, so actions of one event are never
interleaved with another's.

What the client speaks is the front's business (``session/front.py``): the Unmute dialect or
the OpenAI Realtime API. The session only knows notes, PCM and :class:`BaseModel` events.
"""

from __future__ import annotations

import datetime
import logging
import random

import numpy as np
import trio
from pydantic import BaseModel

from unmute_trio import metrics
from unmute_trio.conversation import prompts
from unmute_trio.conversation.events import (
    Action,
    AudioReceived,
    CancelTurn,
    CloseSession,
    DrainStarted,
    Event,
    FlushStt,
    Notify,
    ServiceFailed,
    SetRecording,
    StartTurn,
    SttStep,
    SttWord,
)
from unmute_trio.conversation.machine import ConversationMachine
from unmute_trio.errors import ServiceAtCapacity, ServiceError, ServiceTimeout
from unmute_trio.exception_groups import first_leaf
from unmute_trio.protocol import browser, moshi
from unmute_trio.protocol.close_codes import CloseCode
from unmute_trio.protocol.dialects import Dialect
from unmute_trio.protocol.instructions import Instructions
from unmute_trio.services.stt import SpeechToText
from unmute_trio.session.context import LlmLink, RealtimeSocket, SessionContext
from unmute_trio.session.drain import CLOSE_REASON, RunningCount
from unmute_trio.session.front import ClientFront
from unmute_trio.session.idle import ClientSilence, SilenceClose
from unmute_trio.session.links import NetworkLinks, ServiceLinks
from unmute_trio.session.openai_front import OpenAIFront
from unmute_trio.session.recorder import Recorder
from unmute_trio.session.stt_feed import SttFeed
from unmute_trio.session.turn import run_turn
from unmute_trio.session.unmute_front import UnmuteFront
from unmute_trio.session.writer import ClientTooSlow, ClientWriter

log = logging.getLogger(__name__)

# Model auto-detection is one request, cached for the process; a session start does not wait
# longer than this for it (the prompt then names the model generically).
MODEL_NAME_WAIT_S = 1.0
GENERIC_LLM_NAME = "an open-weights language model"
INTERNAL_ERROR_MESSAGE = "Something went wrong on the server. Please try again later."


async def run_conversation(
    socket: RealtimeSocket, state: SessionContext, dialect: Dialect = "unmute"
) -> None:
    """The :data:`~unmute_trio.web.state.SessionRunner` of the real conversation engine."""
    await Session(socket, state, make_front(dialect, state, socket)).run()


def make_front(dialect: Dialect, state: SessionContext, socket: RealtimeSocket) -> ClientFront:
    if dialect == "openai":
        # The query's ``model`` is reported back in session.created.
        return OpenAIFront(state, dict(socket.query))
    return UnmuteFront(tts_opus=state.settings.tts_audio == "opus")


class Session:
    def __init__(
        self,
        socket: RealtimeSocket,
        state: SessionContext,
        front: ClientFront | None = None,
        links: ServiceLinks | None = None,
    ) -> None:
        assert state.llm is not None, "the app's before_serving hook creates the LLM client"
        self.settings = state.settings
        self.llm: LlmLink = state.llm
        self.links: ServiceLinks = links or NetworkLinks(state.settings)
        self.voice_store = state.voice_store
        self._state = state
        self._socket = socket
        self.front: ClientFront = front or UnmuteFront()
        self._rng = random.Random()
        self._cancelled_turns: set[int] = set()
        self._turn_scopes: dict[int, trio.CancelScope] = {}
        # Turns spawned and not yet ended (counted from the spawn, before the task runs).
        self._running_turns = RunningCount()
        self._stt_feed = SttFeed()
        self._pending_flush_frames = 0
        self._drain_told = False  # DrainStarted was given to the machine
        # The idle watch (session/idle.py), and whether it is closing the session.
        opening = "session.update" if isinstance(self.front, UnmuteFront) else "client event"
        self._silence = ClientSilence(
            self.settings.first_event_timeout_s,
            self.settings.client_idle_timeout_s,
            opening_event=opening,
        )
        self._closing_idle = False
        self._in_audio_in = False
        self.recorder = Recorder.for_session(self.settings.recordings_dir)
        self.writer = ClientWriter(
            socket,
            self.front,
            is_cancelled=self._cancelled_turns.__contains__,
            on_sent=self._sent,
        )
        self.machine: ConversationMachine
        self._nursery: trio.Nursery | None = None
        self._main_nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        # The prompt used until the client's session.update brings instructions. Built without
        # waiting for the LLM (the model name is usually known since the app started).
        self.machine = ConversationMachine(self._build_prompt(None, self._known_llm_name()))
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.recorder is not None:
                    nursery.start_soon(self.recorder.run)
                nursery.start_soon(self._write_then_end, nursery.cancel_scope)
                nursery.start_soon(self._main)
                nursery.start_soon(self._close_when_draining)
                nursery.start_soon(self._close_when_idle)
        except* Exception as group:
            await self._end_after_exception(group)

    async def _end_after_exception(self, group: BaseExceptionGroup[Exception]) -> None:
        """One close for the whole group (a slow client can also break a turn's channels)."""
        metrics.FORCE_DISCONNECTS.inc()
        too_slow, others = group.split(ClientTooSlow)
        with trio.move_on_after(1) as scope:
            scope.shield = True
            if too_slow is not None:
                # The client is not reading: nothing more can be sent, only closed.
                log.warning("closing a session whose client stopped reading: %s", too_slow)
                await self._socket.close(CloseCode.POLICY_VIOLATION, "client too slow")
                return
            log.error("session failed unexpectedly", exc_info=others)
            metrics.HARD_ERRORS.inc()
            error = self.front.fatal(INTERNAL_ERROR_MESSAGE)
            await self._socket.send(self.front.encode(error))
            await self._socket.close(CloseCode.INTERNAL_ERROR, "internal error")

    async def _write_then_end(self, session_scope: trio.CancelScope) -> None:
        code, reason = await self.writer.run()
        log.info("session closed with %d (%s)", code, reason)
        session_scope.cancel(reason=f"the client connection closed with {code}")

    async def _main(self) -> None:
        # The client reader starts at once: session.update is answered (and its prompt built)
        # while the STT connects; audio waits in the bounded STT queue meanwhile.
        async with trio.open_nursery() as nursery:
            self._main_nursery = nursery
            nursery.start_soon(self.front.serve, self)
            nursery.start_soon(self._stt_link)

    async def _stt_link(self) -> None:
        try:
            async with self.links.open_stt() as stt:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._stt_feed.send_to, stt)
                    nursery.start_soon(self._stt_receiver, stt)
        except* ServiceError as group:
            self._service_failed(first_leaf(group), turn_id=None)

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, event: Event) -> None:
        if self._closing_idle:
            return  # the session is being closed for the client's silence; nothing new starts
        if self._state.drain.started and not self._drain_told:
            # Before anything else that happens after the drain began, even in the same
            # scheduler pass as its start: the machine then starts no reply it cannot finish.
            self._drain_told = True
            self._apply_all(self.machine.handle(DrainStarted()))
        self._apply_all(self.machine.handle(event))

    def _apply_all(self, actions: list[Action]) -> None:
        for action in actions:
            self._apply(action)

    def send(self, event: BaseModel) -> None:
        self.writer.send_event(event)

    async def receive(self) -> str | bytes:
        self._silence.reading_started()
        try:
            return await self._socket.receive()
        finally:
            self._silence.reading_ended()

    def _apply(self, action: Action) -> None:
        if isinstance(action, Notify):
            turn_id = action.turn_id
            for event in self.front.present(action.note):
                self.writer.send_event(event, turn_id=turn_id, droppable=action.droppable)
        elif isinstance(action, FlushStt):
            # Sent by the client reader right after the frame that triggered it (pauses are
            # decided on AudioReceived), waiting for room like any audio. A flush decided
            # elsewhere (a client's commit) has no frame to follow: it goes out now.
            self._pending_flush_frames += action.num_frames
            if not self._in_audio_in:
                assert self._main_nursery is not None
                self._main_nursery.start_soon(self._send_pending_flush)
        elif isinstance(action, StartTurn):
            assert self._main_nursery is not None
            # Created now, so a CancelTurn applied before the task runs is honoured by it.
            self._turn_scopes[action.turn_id] = trio.CancelScope()
            self._running_turns.started()
            self._main_nursery.start_soon(self._run_turn, action)
        elif isinstance(action, CancelTurn):
            self._cancelled_turns.add(action.turn_id)
            scope = self._turn_scopes.get(action.turn_id)
            if scope is not None:
                log.info("cancelling turn %d: %s", action.turn_id, action.reason)
                # The reason shows in trio's Cancelled of every task of the turn (tracebacks,
                # logs); the LLM client counts worker_vllm_interrupt itself.
                scope.cancel(reason=f"turn {action.turn_id}: {action.reason}")
        elif isinstance(action, SetRecording):
            if self.recorder is not None and not action.enabled:
                self.recorder.delete()
        elif isinstance(action, CloseSession):
            if action.code != CloseCode.NORMAL:
                # A failure: whatever the running turns still queue must not follow the error.
                self._cancelled_turns.update(self._turn_scopes)
            for scope in self._turn_scopes.values():
                scope.cancel(reason=f"the session closes: {action.reason}")
            if action.delay_s > 0:
                assert self._nursery is not None
                self._nursery.start_soon(self._close_later, action)
            else:
                self.writer.close(action.code, action.reason)

    async def _close_later(self, action: CloseSession) -> None:
        await trio.sleep(action.delay_s)
        self.writer.close(action.code, action.reason)

    async def _close_when_draining(self) -> None:
        """The server is shutting down: let the reply being spoken end, then say goodbye."""
        drain = self._state.drain
        await drain.wait_started()
        if not self._drain_told:
            self._drain_told = True
            self._apply_all(self.machine.handle(DrainStarted()))
        with trio.move_on_at(drain.deadline):
            await self._running_turns.wait_idle()
        self.writer.send_event(self.front.fatal(drain.goodbye_message, drain.error_code))
        self.writer.close(CloseCode.GOING_AWAY, CLOSE_REASON)

    async def _close_when_idle(self) -> None:
        """A client that sends nothing gives its slot back (session/idle.py has the rules)."""
        close = await self._silence.wait_expired(
            opened=self._client_opened, replying=lambda: self._running_turns.count > 0
        )
        self._close_for_silence(close)

    def _client_opened(self) -> bool:
        # Unmute dialect: its session.update (set before the front handles it); OpenAI: any.
        if isinstance(self.front, UnmuteFront):
            return self.front.session_update_received
        return self._silence.frames > 0

    def _close_for_silence(self, close: SilenceClose) -> None:
        """Like a failure's CloseSession: nothing a running turn queued follows the error."""
        log.info("closing a session: %s", close.reason)
        metrics.FORCE_DISCONNECTS.inc()
        self._closing_idle = True
        self._cancelled_turns.update(self._turn_scopes)
        for scope in self._turn_scopes.values():
            scope.cancel(reason=f"the session closes: {close.reason}")
        self.writer.send_event(self.front.fatal(close.message, close.error_code))
        self.writer.close(CloseCode.POLICY_VIOLATION, close.reason)

    def _service_failed(self, error: ServiceError, *, turn_id: int | None) -> None:
        log.warning("service failure (turn %s): %r", turn_id, error)
        actions = self.machine.handle(ServiceFailed.from_error(error, turn_id=turn_id))
        # The machine ignores failures of stale turns; only one that ends the session counts.
        if any(isinstance(action, CloseSession) for action in actions):
            metrics.FORCE_DISCONNECTS.inc()
            if isinstance(error, (ServiceAtCapacity, ServiceTimeout)):
                metrics.FATAL_SERVICE_MISSES.inc()
        for action in actions:
            self._apply(action)

    # ------------------------------------------------------------------ turns

    async def _run_turn(self, start: StartTurn) -> None:
        with self._turn_scopes[start.turn_id] as scope:
            try:
                await run_turn(self, start)
            except* ServiceError as group:
                # Nested nurseries wrap it; several (LLM and TTS) count as one failure.
                self._service_failed(first_leaf(group), turn_id=start.turn_id)
            finally:
                del self._turn_scopes[start.turn_id]
                self._running_turns.finished()
                self._silence.reply_ended()
        if scope.cancelled_caught:
            log.debug("turn %d ended by its cancellation", start.turn_id)

    @property
    def tts_opus(self) -> bool:
        return self.front.tts_opus

    def tts_audio_arrived(self, num_samples: int) -> None:
        if self.recorder is not None:
            event = browser.UnmuteResponseAudioDeltaReady(number_of_samples=num_samples)
            self.recorder.record("server", event)

    # ------------------------------------------------------------------ STT

    async def _stt_receiver(self, stt: SpeechToText) -> None:
        while True:
            message = await stt.receive()
            if isinstance(message, moshi.Word):
                self.dispatch(SttWord(message.text, message.start_time))
            elif isinstance(message, moshi.Step):
                self.dispatch(SttStep(tuple(message.prs)))

    # ------------------------------------------------------------------ client (for the front)

    async def audio_in(self, pcm: np.ndarray) -> None:
        # The audio goes to the STT before the machine hears of it, so a flush it triggers
        # follows it (session/stt_feed.py).
        await self._stt_feed.audio(pcm)
        self._in_audio_in = True
        try:
            self.dispatch(AudioReceived(len(pcm)))
        finally:
            self._in_audio_in = False
        await self._send_pending_flush()

    async def _send_pending_flush(self) -> None:
        if self._pending_flush_frames:
            frames, self._pending_flush_frames = self._pending_flush_frames, 0
            await self._stt_feed.silence(frames)

    async def system_prompt(self, instructions: Instructions | None) -> str:
        news = None
        if instructions is not None and instructions.type == "news":
            if self._state.news is not None:
                news = await self._state.news.headlines()
        return self._build_prompt(instructions, await self._llm_name(), news)

    def _build_prompt(
        self, instructions: Instructions | None, llm_name: str, news: list[dict] | None = None
    ) -> str:
        return prompts.build_system_prompt(
            instructions,
            llm_name=llm_name,
            rng=self._rng,
            now=datetime.datetime.now().astimezone(),
            news=news,
        )

    def _known_llm_name(self) -> str:
        model = self.llm.known_model
        return prompts.llm_name_from_model(model) if model else GENERIC_LLM_NAME

    async def _llm_name(self) -> str:
        """The model's name for the prompt; detection failures surface later, at the turn."""
        with trio.move_on_after(MODEL_NAME_WAIT_S):
            try:
                return prompts.llm_name_from_model(await self.llm.model())
            except ServiceError as e:
                log.info("LLM model not known yet (%s)", e)
        return GENERIC_LLM_NAME

    def record_client(self, event: BaseModel) -> None:
        if self.recorder is not None:
            self.recorder.record("client", event)

    @property
    def recording(self) -> bool:
        return self.recorder is not None

    def _sent(self, event: BaseModel, text: str) -> None:
        if self.recorder is not None:
            self.recorder.record_json("server", getattr(event, "type", None), text)
