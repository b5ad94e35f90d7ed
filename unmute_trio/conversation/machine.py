"""The turn-taking state machine: ``handle(event) -> list[Action]``, nothing else.

States (``ConversationState``):

- ``WAITING_FOR_USER``: nobody speaks. The first audio after instructions arrive starts the
  greeting; 7 s of received audio without a word turn into a silence-marker user turn.
- ``USER_SPEAKING``: a user turn is open. When the pause prediction rises above 0.6 the
  machine tells the browser (``speech_stopped``) and flushes the STT.
- ``FLUSHING_STT``: the pause was detected; late words still join the user turn. Once the STT
  clock passes the end of the flush, the bot turn starts.
- ``BOT_SPEAKING``: a bot turn runs. A transcribed user word, or (after the first 3 s of the
  session) a pause prediction below 0.4, interrupts it.
- ``CLOSED``: the session is ending; every event is ignored.

Turn-taking decisions (silence, pause, VAD barge-in) are taken when audio arrives, the
machine's clock tick; the end of a flush is noticed on the STT step that passes it. The
session layer forwards each audio frame to the STT *before* handing ``AudioReceived`` to the
machine, so a ``FlushStt`` follows the frame in which the pause was seen, as in the original.

Where it deliberately differs from the original (and why): docs/architecture.md, section 10
("Turn-taking"). The states and transitions in full: section 5.
"""

from __future__ import annotations

import enum

from unmute_trio.conversation import events as ev
from unmute_trio.conversation.bot_turn import BotTurn, ReplyEvent
from unmute_trio.conversation.events import (
    Action,
    AudioReceived,
    CancelTurn,
    CloseSession,
    CustomVoiceMissing,
    Event,
    FlushStt,
    LlmDone,
    LlmToolCall,
    LlmWord,
    Notify,
    ResponseFinished,
    ResponseInterrupted,
    ResponseSpec,
    ResponseStarted,
    ServiceFailed,
    ServiceRetrying,
    SessionFailed,
    SessionUpdated,
    SetRecording,
    StartTurn,
    SttStep,
    SttWord,
    TtsWordSpoken,
    TurnAdded,
    TurnAudioFinished,
    TurnOptions,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscriptDelta,
    UserTurnEnded,
)
from unmute_trio.conversation.messages import (
    CANCELLED_BY_CLIENT,
    GOODBYE_CLOSE_REASON,
    GOODBYE_SUFFIX,
    INTERRUPTED_BY_VAD,
    INTERRUPTED_BY_WORD,
    fatal_message,
)
from unmute_trio.conversation.pause import PausePredictor
from unmute_trio.conversation.policy import TurnTakingPolicy
from unmute_trio.conversation.status import status_report
from unmute_trio.conversation.transcript import USER_SILENCE_MARKER, Transcript
from unmute_trio.protocol.close_codes import CloseCode

_TurnEvent = ReplyEvent | LlmDone | TurnAudioFinished


class ConversationState(enum.Enum):
    WAITING_FOR_USER = "waiting_for_user"
    USER_SPEAKING = "user_speaking"
    FLUSHING_STT = "flushing_stt"
    BOT_SPEAKING = "bot_speaking"
    CLOSED = "closed"


class ConversationMachine:
    """One conversation. ``system_prompt`` is used until a ``session.update`` brings
    instructions (the session layer builds it from the default instructions)."""

    def __init__(self, system_prompt: str, *, policy: TurnTakingPolicy | None = None) -> None:
        self.policy = policy or TurnTakingPolicy()
        self.transcript = Transcript()
        self._state = ConversationState.WAITING_FOR_USER
        self._system_prompt = system_prompt
        self._instructions_given = False
        self._voice: str | None = None
        self._recording: bool | None = None
        self._samples_received = 0
        self._stt_steps = 0
        self._pause = PausePredictor()
        self._flush_end_stt_time: float | None = None
        # Times on the audio clock are kept in samples, so comparisons are exact.
        self._waiting_since = 0
        self._last_status_at = 0
        self._next_turn_id = 1
        self._bot_turn: BotTurn | None = None
        self._user_turn_has_words = False
        self._options = TurnOptions(silence_timeout_s=self.policy.user_silence_timeout_s)
        # A reply the client asked for while the user's last words were still being flushed.
        self._requested: ResponseSpec | None = None
        self._draining = False  # the server shuts down: no new reply

    # ------------------------------------------------------------------ read-only views

    @property
    def state(self) -> ConversationState:
        return self._state

    @property
    def audio_time_s(self) -> float:
        """Seconds of microphone audio received: the machine's notion of "now"."""
        return self._samples_received / self.policy.sample_rate

    @property
    def system_prompt(self) -> str:
        return self._system_prompt

    @property
    def voice(self) -> str | None:
        return self._voice

    @property
    def active_turn_id(self) -> int | None:
        return self._bot_turn.turn_id if self._bot_turn else None

    @property
    def pause_prediction(self) -> float:
        """The smoothed pause head (1.0 while the STT warms up)."""
        return self._pause.value

    @property
    def stt_time(self) -> float:
        """Seconds of input the STT has finished with: minus its delay, plus a frame a step."""
        return self.policy.initial_stt_time + self._stt_steps * self.policy.stt_frame_s

    # ------------------------------------------------------------------ the one entry point

    def handle(self, event: Event) -> list[Action]:
        if self._state is ConversationState.CLOSED:
            return []
        match event:
            case AudioReceived():
                return self._on_audio(event)
            case SttStep():
                return self._on_stt_step(event)
            case SttWord():
                return self._on_stt_word(event)
            case SessionUpdated():
                return self._on_session_updated(event)
            case ServiceFailed():
                return self._on_service_failed(event)
            case (
                LlmWord()
                | LlmDone()
                | LlmToolCall()
                | TtsWordSpoken()
                | TurnAudioFinished()
                | ServiceRetrying()
                | CustomVoiceMissing()
            ):
                return self._on_turn_event(event)
            case ev.TurnOptionsChanged():
                self._options = event.options
                return []
            case ev.ResponseRequested():
                return self._on_response_requested(event.spec)
            case ev.ResponseCancelRequested():
                return self._on_cancel_requested()
            case ev.AudioCommitted():
                return self._on_audio_committed()
            case ev.UserTextAdded():
                return [Notify(TurnAdded(self.transcript.start_turn("user", event.text)))]
            case ev.FunctionOutputAdded():
                key = self.transcript.add_function_output(event.call_id, event.output)
                return [Notify(TurnAdded(key))]
            case ev.TurnDeleteRequested():
                return self._on_delete_requested(event.key)
            case ev.DrainStarted():
                self._draining = True
                return []
        raise TypeError(f"not a conversation event: {event!r}")

    # ------------------------------------------------------------------ handlers

    def _on_session_updated(self, event: SessionUpdated) -> list[Action]:
        if event.system_prompt is not None:
            self._system_prompt = event.system_prompt
            self._instructions_given = True
        if event.voice is not None:
            self._voice = event.voice  # used by the next turn; a running turn keeps its voice
        if event.allow_recording == self._recording:
            return []
        self._recording = event.allow_recording
        return [SetRecording(enabled=event.allow_recording)]

    def _on_audio(self, event: AudioReceived) -> list[Action]:
        if event.num_samples < 0:
            raise ValueError(f"negative sample count: {event.num_samples}")
        self._samples_received += event.num_samples
        now = self._samples_received
        state = ConversationState
        options = self._options
        if (
            self._state is state.WAITING_FOR_USER
            and options.greet
            and self._instructions_given
            and len(self.transcript) == 0
        ):
            return self._start_bot_turn() + self._status_if_due()

        actions: list[Action] = []
        timeout = options.silence_timeout_s
        if (
            self._state is state.WAITING_FOR_USER
            and timeout is not None
            and now - self._waiting_since > self._samples(timeout)
        ):
            # The user said nothing for too long: answer the silence itself. The marker opens a
            # user turn, so the pause check below can end it in this very frame.
            self.transcript.start_turn("user", USER_SILENCE_MARKER)
            self._user_turn_has_words = False
            self._state = state.USER_SPEAKING

        if (
            self._state is state.USER_SPEAKING
            and options.detect_turns
            and self._pause.value > self.policy.pause_threshold
        ):
            actions += self._end_user_turn()
        elif (
            self._state is state.BOT_SPEAKING
            and options.barge_in
            and self._pause.value < self.policy.vad_interrupt_threshold
            and now > self._samples(self.policy.uninterruptible_by_vad_s)
        ):
            actions += self._interrupt(INTERRUPTED_BY_VAD)
            # Nobody has said a word yet: wait for the user, and count the silence from now.
            self._state = state.WAITING_FOR_USER
            self._waiting_since = now
        return actions + self._status_if_due()

    def _on_stt_step(self, event: SttStep) -> list[Action]:
        self._stt_steps += 1
        self._pause.update(event.prs)
        if (
            self._state is ConversationState.FLUSHING_STT
            and self._flush_end_stt_time is not None
            and self.stt_time > self._flush_end_stt_time
        ):
            # The STT has now transcribed everything the user said before the pause.
            self._flush_end_stt_time = None
            current = self.transcript.current
            ended: list[Action] = [
                Notify(UserTurnEnded(current.text, current.key) if current else UserTurnEnded(""))
            ]
            requested, self._requested = self._requested, None
            if requested is not None or self._options.auto_respond:
                return ended + self._start_bot_turn(requested)
            self._state = ConversationState.WAITING_FOR_USER
            self._waiting_since = self._samples_received
            return ended
        return []

    def _on_stt_word(self, event: SttWord) -> list[Action]:
        actions = self._on_stt_word_heard(event)
        opens = any(
            isinstance(a, Notify) and isinstance(a.note, UserSpeechStarted) for a in actions
        )
        delta = UserTranscriptDelta(event.text, event.start_time, opens_turn=opens)
        return [Notify(delta), *actions]

    def _on_stt_word_heard(self, event: SttWord) -> list[Action]:
        """What a word does besides being reported (the delta, which comes first)."""
        actions: list[Action] = []
        if not event.text.strip():
            # The STT sends an empty word at its start; it must not open a user turn (a
            # turn with no speech could be ended by the next high pause prediction).
            return actions
        if self._state is ConversationState.BOT_SPEAKING:
            if not self._options.barge_in:
                return actions  # heard over the bot: shown, but neither a turn nor a cut
            actions += self._interrupt(INTERRUPTED_BY_WORD)
        if self._state not in (ConversationState.USER_SPEAKING, ConversationState.FLUSHING_STT):
            self.transcript.start_turn("user")
            self._user_turn_has_words = False
            self._state = ConversationState.USER_SPEAKING
        self.transcript.extend_current(event.text)
        if not self._user_turn_has_words:
            # First word of this user turn. The pause prediction may still be high from the
            # silence before it; reset it so the turn is not ended after one word.
            self._user_turn_has_words = True
            self._pause.reset()
            actions.append(Notify(UserSpeechStarted()))
        return actions

    def _on_turn_event(self, event: _TurnEvent) -> list[Action]:
        turn = self._bot_turn
        if turn is None or event.turn_id != turn.turn_id:
            return []  # the turn was cancelled or is over: whatever it still says is dropped
        match event:
            case LlmDone():
                done = turn.on_llm_done(event)
                if not turn.spec.speak:
                    done += self._on_turn_audio_finished(turn)  # no audio to wait for
                return done
            case TurnAudioFinished():
                return self._on_turn_audio_finished(turn)
            case _:
                return turn.on_event(event, self.transcript)

    def _on_turn_audio_finished(self, turn: BotTurn) -> list[Action]:
        done = turn.llm_done or LlmDone(turn.turn_id)
        self._bot_turn = None
        self._state = ConversationState.WAITING_FOR_USER
        self._waiting_since = self._samples_received
        self._last_status_at = self._samples_received
        actions: list[Action] = [
            Notify(status_report(self)),
            Notify(ResponseFinished(turn.turn_id, done.truncated, done.usage)),
        ]
        spoken = self.transcript.get(turn.key)
        if spoken.text.rstrip().lower().endswith(GOODBYE_SUFFIX):
            self._state = ConversationState.CLOSED
            actions.append(
                CloseSession(
                    code=CloseCode.NORMAL,
                    reason=GOODBYE_CLOSE_REASON,
                    delay_s=self.policy.goodbye_close_delay_s,
                )
            )
        return actions

    def _on_service_failed(self, event: ServiceFailed) -> list[Action]:
        if event.turn_id is not None and event.turn_id != self.active_turn_id:
            return []  # a turn that was already cancelled or over: its failure is moot
        message = fatal_message(event.service, event.kind)
        self._state = ConversationState.CLOSED
        self._bot_turn = None
        return [
            Notify(SessionFailed(message)),
            CloseSession(code=CloseCode.INTERNAL_ERROR, reason=message),
        ]

    # ------------------------------------------------------------------ transitions

    def _end_user_turn(self) -> list[Action]:
        """The user is done (pause detected, or the client committed): flush the STT."""
        self._flush_end_stt_time = self.stt_time + self.policy.stt_delay_s
        self._state = ConversationState.FLUSHING_STT
        return [Notify(UserSpeechStopped()), FlushStt(num_frames=self.policy.flush_frames)]

    def _on_audio_committed(self) -> list[Action]:
        state = ConversationState
        if self._state is state.WAITING_FOR_USER:
            # Words of the committed audio may still be inside the STT: open the turn now.
            self.transcript.start_turn("user")
            self._user_turn_has_words = False
            self._state = state.USER_SPEAKING
        if self._state is state.USER_SPEAKING:
            return self._end_user_turn()
        return []  # already flushing, or the bot speaks: nothing of the user's to end

    def _on_response_requested(self, spec: ResponseSpec) -> list[Action]:
        if self._state is ConversationState.FLUSHING_STT:
            self._requested = spec  # starts once the user's last words are in
            return []
        if self._state is ConversationState.BOT_SPEAKING:
            return []  # the front refuses a second response before asking
        return self._start_bot_turn(spec)

    def _on_delete_requested(self, key: int) -> list[Action]:
        # The reply being written and the user turn being transcribed still grow: the front
        # refuses to delete them, and so does the machine.
        live = self._bot_turn.key if self._bot_turn else None
        if key == live:
            return []
        current = self.transcript.current
        listening = (ConversationState.USER_SPEAKING, ConversationState.FLUSHING_STT)
        if self._state in listening and current is not None and current.key == key:
            return []
        self.transcript.remove(key)
        return []

    def _on_cancel_requested(self) -> list[Action]:
        if self._state is not ConversationState.BOT_SPEAKING:
            return []
        actions = self._interrupt(CANCELLED_BY_CLIENT)
        self._state = ConversationState.WAITING_FOR_USER
        self._waiting_since = self._samples_received
        return actions

    def _start_bot_turn(self, spec: ResponseSpec | None = None) -> list[Action]:
        if self._draining:
            # Not started, so never announced: the session closes once the reply being
            # spoken (if any) is over.
            self._state = ConversationState.WAITING_FOR_USER
            self._waiting_since = self._samples_received
            return []
        spec = spec or ResponseSpec()
        messages = self.transcript.llm_messages(spec.system_prompt or self._system_prompt)
        temperature = (
            self.policy.later_reply_temperature
            if self.transcript.has_assistant_turn()
            else self.policy.first_reply_temperature
        )
        turn_id = self._next_turn_id
        self._next_turn_id += 1
        key = self.transcript.start_turn("assistant")
        self._bot_turn = BotTurn(turn_id, key, spec)
        self._state = ConversationState.BOT_SPEAKING
        history = self.transcript.chat_history()
        created = ResponseStarted(turn_id, self._voice, history, speak=spec.speak, key=key)
        start = StartTurn(turn_id, messages, temperature, self._voice, spec)
        return [Notify(created), start]

    def _interrupt(self, reason: str) -> list[Action]:
        """Stop the live bot turn. Its assistant turn keeps only the words already heard."""
        assert self._bot_turn is not None, "BOT_SPEAKING always has a live turn"
        turn_id = self._bot_turn.turn_id
        self.transcript.interrupt(self._bot_turn.key)
        self._bot_turn = None
        # Cancel first, so the session drops the turn's unsent audio before telling the client.
        return [
            CancelTurn(turn_id=turn_id, reason=reason),
            Notify(ResponseInterrupted(turn_id, reason)),
        ]

    # ------------------------------------------------------------------ status updates

    def _samples(self, seconds: float) -> int:
        return round(seconds * self.policy.sample_rate)

    def _status_if_due(self) -> list[Action]:
        now = self._samples_received
        if now - self._last_status_at <= self._samples(self.policy.status_interval_s):
            return []
        self._last_status_at = now
        return [Notify(status_report(self), droppable=True)]
