"""What goes into the conversation machine (events) and what comes out (actions and notes).

Events are facts the session layer observed; actions are what it must do next, in the order
given. Only control flows through here: audio frames go from the browser to the STT and from
the TTS to the browser without passing through the machine, which only hears how much audio
arrived (``AudioReceived``) and which words were actually played (``TtsWordSpoken``).

Every event of a bot turn carries the ``turn_id`` the machine gave in ``StartTurn``. Once a
turn is cancelled or over, events with its id change nothing and produce no action, so a late
LLM word or TTS text of an interrupted reply can never reach the browser through the machine.

What the client should be told comes out as :class:`Notify` actions carrying *notes*: plain
facts of the conversation ("the user started speaking", "this word of reply 3 is being played")
with no wire format. Each protocol front-end (the Unmute dialect, the OpenAI Realtime API)
turns notes into its own events, so the machine decides once for every protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from unmute_trio.errors import ServiceAtCapacity, ServiceError, ServiceTimeout

FailureKind = Literal["capacity", "timeout", "other"]

# ------------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class SessionUpdated:
    """The client sent ``session.update``.

    ``system_prompt`` is the prompt the session layer built from the new instructions (built
    once per update, because prompts are random), or ``None`` if the update carried no
    instructions. ``voice`` is ``None`` when the update does not change the voice. The
    ``session.updated`` echo is the session layer's job: it is a plain protocol echo of the
    config it received, and the machine never sees the raw config.
    """

    system_prompt: str | None
    voice: str | None
    allow_recording: bool


@dataclass(frozen=True)
class AudioReceived:
    """``num_samples`` samples of microphone audio were decoded (the machine's clock)."""

    num_samples: int


@dataclass(frozen=True)
class SttWord:
    """A word from the STT. ``start_time`` is in seconds on the STT's clock."""

    text: str
    start_time: float


@dataclass(frozen=True)
class SttStep:
    """The STT processed one frame.

    ``stt_time`` is the STT clock after this step (it starts at minus the STT delay and
    advances one frame per step); ``pause_prediction`` is the smoothed probability that the
    user has finished their turn (the STT client owns the smoothing and the warm-up).
    """

    stt_time: float
    pause_prediction: float


@dataclass(frozen=True)
class LlmWord:
    """A whole word of the reply (the first without a leading space, the others with one)."""

    turn_id: int
    word: str


@dataclass(frozen=True)
class TokenUsage:
    """What the LLM server counted for one reply."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class LlmDone:
    """The LLM stream of this turn ended normally. ``truncated``: it stopped at its token
    limit, not because the reply was complete; ``usage`` when the server reported it."""

    turn_id: int
    truncated: bool = False
    usage: TokenUsage | None = None


@dataclass(frozen=True)
class TtsWordSpoken:
    """The audio of this TTS word is being sent to the browser now (released by the pacer)."""

    turn_id: int
    text: str


@dataclass(frozen=True)
class TurnAudioFinished:
    """The TTS of this turn closed and all of its audio was sent."""

    turn_id: int


@dataclass(frozen=True)
class ServiceRetrying:
    """A service of this turn could not be reached yet; the turn runner tries again."""

    turn_id: int
    service: str


@dataclass(frozen=True)
class ServiceFailed:
    """A service failed for good. ``turn_id`` is ``None`` for session-wide services (STT)."""

    service: str
    kind: FailureKind
    turn_id: int | None = None

    @classmethod
    def from_error(cls, error: ServiceError, turn_id: int | None = None) -> ServiceFailed:
        return cls(service=error.service, kind=failure_kind(error), turn_id=turn_id)


@dataclass(frozen=True)
class TurnOptions:
    """How turns are taken; the Unmute dialect uses the defaults, OpenAI Realtime clients set
    them through ``session.update`` (``turn_detection``)."""

    greet: bool = True
    """The bot speaks first, on the first audio after instructions arrive."""
    detect_turns: bool = True
    """The pause prediction ends user turns; otherwise only ``AudioCommitted`` does."""
    auto_respond: bool = True
    """A reply starts when a user turn ends; otherwise only on ``ResponseRequested``."""
    barge_in: bool = True
    """User speech interrupts the bot."""
    silence_timeout_s: float | None = 7.0
    """After this long waiting for the user, the silence marker is sent as their message."""


@dataclass(frozen=True)
class TurnOptionsChanged:
    options: TurnOptions


@dataclass(frozen=True)
class ResponseSpec:
    """What a reply the client asked for runs with (OpenAI ``response.create``)."""

    speak: bool = True
    """Speak the reply (audio and transcript); otherwise text only, no TTS."""
    system_prompt: str | None = None
    """This reply's system prompt, instead of the session's."""
    tools: list[dict[str, Any]] | None = field(default=None, hash=False)
    tool_choice: str | dict[str, Any] | None = field(default=None, hash=False)
    max_tokens: int | None = None


@dataclass(frozen=True)
class ResponseRequested:
    """The client asked for a reply now (after the user turn being flushed, if any)."""

    spec: ResponseSpec = ResponseSpec()


@dataclass(frozen=True)
class ResponseCancelRequested:
    """The client asked to stop the reply in progress."""


@dataclass(frozen=True)
class AudioCommitted:
    """The client ended the user's turn (OpenAI ``input_audio_buffer.commit``)."""


@dataclass(frozen=True)
class UserTextAdded:
    """The client added a user message as text."""

    text: str


@dataclass(frozen=True)
class FunctionOutputAdded:
    """The client gave the result of a function call."""

    call_id: str
    output: str


@dataclass(frozen=True)
class TurnDeleteRequested:
    """The client deleted a turn of the conversation (its transcript ``key``). The reply being
    written and the user turn being transcribed cannot be deleted; an unknown key is ignored."""

    key: int


@dataclass(frozen=True)
class LlmToolCall:
    """The LLM of this turn asked for a function call (arguments: JSON text)."""

    turn_id: int
    call_id: str
    name: str
    arguments: str


Event = (
    SessionUpdated
    | AudioReceived
    | SttWord
    | SttStep
    | LlmWord
    | LlmDone
    | TtsWordSpoken
    | TurnAudioFinished
    | ServiceRetrying
    | ServiceFailed
    | TurnOptionsChanged
    | ResponseRequested
    | ResponseCancelRequested
    | AudioCommitted
    | UserTextAdded
    | FunctionOutputAdded
    | TurnDeleteRequested
    | LlmToolCall
)


def failure_kind(error: ServiceError) -> FailureKind:
    if isinstance(error, ServiceAtCapacity):
        return "capacity"
    if isinstance(error, ServiceTimeout):
        return "timeout"
    return "other"


# ------------------------------------------------------------------------------------ notes


@dataclass(frozen=True)
class UserTranscriptDelta:
    """A word of the user's speech as the STT transcribed it (sent as it arrives, before the
    turn is decided; ``start_time`` is on the STT's clock). ``opens_turn``: this is the first
    word of a user turn, and a ``UserSpeechStarted`` follows it (the Unmute dialect reports the
    word first, as the original does; the OpenAI protocol starts the speech first)."""

    text: str
    start_time: float
    opens_turn: bool = False


@dataclass(frozen=True)
class UserSpeechStarted:
    """The first real word of a user turn arrived."""


@dataclass(frozen=True)
class UserSpeechStopped:
    """The user's turn is over (the pause was detected); the STT is being flushed."""


@dataclass(frozen=True)
class TurnAdded:
    """The client's text message or function result is turn ``key`` of the transcript."""

    key: int


@dataclass(frozen=True)
class UserTurnEnded:
    """The user's turn is complete: every word of it has been transcribed. ``key``: its turn
    in the transcript (``None`` if there is none)."""

    text: str
    key: int | None = None


@dataclass(frozen=True)
class ResponseStarted:
    """Bot turn ``turn_id`` starts; ``chat_history`` is the conversation so far as the client
    sees it (one message per turn, no system prompt)."""

    turn_id: int
    voice: str | None
    chat_history: list[dict[str, Any]] = field(hash=False)
    speak: bool = True
    key: int = 0  # its assistant message in the transcript


@dataclass(frozen=True)
class ResponseWordPlanned:
    """The LLM wrote this word of the reply (it has not been spoken yet)."""

    turn_id: int
    word: str


@dataclass(frozen=True)
class ResponseTextComplete:
    """The LLM finished the reply; ``text`` is all it wrote."""

    turn_id: int
    text: str


@dataclass(frozen=True)
class ResponseWordSpoken:
    """The audio of this word of the reply is being played to the client now."""

    turn_id: int
    text: str


@dataclass(frozen=True)
class ResponseToolCall:
    """The reply asks the client to call a function (``key``: the call's transcript turn)."""

    turn_id: int
    call_id: str
    name: str
    arguments: str
    key: int = 0


@dataclass(frozen=True)
class ResponseFinished:
    """All of the reply's audio was sent (``truncated`` and ``usage`` as in ``LlmDone``)."""

    turn_id: int
    truncated: bool = False
    usage: TokenUsage | None = None


@dataclass(frozen=True)
class ResponseInterrupted:
    """The user cut the reply off; nothing more of it will be sent."""

    turn_id: int
    reason: str


@dataclass(frozen=True)
class StatusReport:
    """Periodic state for debugging clients (the Unmute dialect's ``additional_outputs``)."""

    chat_history: list[dict[str, str]] = field(hash=False)
    debug: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class ServiceWarning:
    """A service problem the session survives (a reply may be late)."""

    turn_id: int
    message: str


@dataclass(frozen=True)
class SessionFailed:
    """The session cannot go on (a service failed for good); it is being closed."""

    message: str


Note = (
    TurnAdded
    | UserTranscriptDelta
    | UserSpeechStarted
    | UserSpeechStopped
    | UserTurnEnded
    | ResponseStarted
    | ResponseWordPlanned
    | ResponseTextComplete
    | ResponseWordSpoken
    | ResponseToolCall
    | ResponseFinished
    | ResponseInterrupted
    | StatusReport
    | ServiceWarning
    | SessionFailed
)


_TURN_CONTENT = (
    ResponseWordPlanned,
    ResponseTextComplete,
    ResponseWordSpoken,
    ResponseToolCall,
    ResponseFinished,
    ServiceWarning,
)


def dropped_with_turn(note: Note) -> int | None:
    """The bot turn whose cancellation drops this note if it has not been sent yet: the
    reply's own content. ``ResponseStarted`` and ``ResponseInterrupted`` are about the turn but
    must reach the client even when it is cancelled, so they belong to none."""
    return note.turn_id if isinstance(note, _TURN_CONTENT) else None


# ----------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Notify:
    """Tell the client this (through the session's protocol front-end).

    ``droppable`` notes are periodic status updates: the client writer may skip one when its
    queue is full instead of waiting, since the next one supersedes it.
    """

    note: Note
    droppable: bool = False


@dataclass(frozen=True)
class FlushStt:
    """Send ``num_frames`` frames of silence (1920 zero samples each) to the STT at once, so it
    emits the user's last words without waiting for more real audio."""

    num_frames: int


@dataclass(frozen=True)
class ResetPausePrediction:
    """Set the STT client's smoothed pause prediction to 0 (a new user turn has started, so a
    stale high value must not end it after its first word)."""


@dataclass(frozen=True)
class StartTurn:
    """Start bot turn ``turn_id``: stream the LLM with these messages into a TTS speaking with
    ``voice`` (``None``: the default voice).

    The turn runner feeds LLM words to the TTS itself, sends the TTS ``Eos`` once the LLM is
    done, and reports ``LlmWord``/``LlmDone``/``TtsWordSpoken``/``TurnAudioFinished``.
    """

    turn_id: int
    messages: list[dict[str, Any]] = field(hash=False)
    temperature: float
    voice: str | None
    spec: ResponseSpec = ResponseSpec()


@dataclass(frozen=True)
class CancelTurn:
    """Cancel turn ``turn_id`` now (its LLM stream, TTS connection and unsent audio)."""

    turn_id: int
    reason: str


@dataclass(frozen=True)
class SetRecording:
    """Start (``True``) or stop and delete (``False``) the recording of this session."""

    enabled: bool


@dataclass(frozen=True)
class CloseSession:
    """Close the browser WebSocket with this code and reason after ``delay_s`` seconds.

    After this action the machine ignores every event.
    """

    code: int
    reason: str
    delay_s: float = 0.0


Action = (
    Notify | FlushStt | ResetPausePrediction | StartTurn | CancelTurn | SetRecording | CloseSession
)
