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

from unmute_trio.conversation.notes import (
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
    TokenUsage,
    TurnAdded,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscriptDelta,
    UserTurnEnded,
    dropped_with_turn,
)
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
    """The STT processed one frame (one ``Step`` message): ``prs`` are its pause heads as the
    STT sent them (``prs[2]``: the user has paused for 2 s). The machine keeps the STT clock
    (minus the STT delay at first, one frame per step) and smooths the pause head
    (``conversation/pause.py``)."""

    prs: tuple[float, ...]


@dataclass(frozen=True)
class LlmWord:
    """A whole word of the reply (the first without a leading space, the others with one)."""

    turn_id: int
    word: str


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
class CustomVoiceMissing:
    """The turn's cloned voice could not be had, so the TTS speaks with its default voice:
    unknown or expired, or (``store_unavailable``) the voice store could not be reached."""

    turn_id: int
    voice: str
    store_unavailable: bool


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
class DrainStarted:
    """The server is shutting down: no new reply starts (the one being spoken may finish);
    the session closes once it is over."""


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
    | CustomVoiceMissing
    | ServiceFailed
    | TurnOptionsChanged
    | ResponseRequested
    | ResponseCancelRequested
    | AudioCommitted
    | UserTextAdded
    | FunctionOutputAdded
    | TurnDeleteRequested
    | DrainStarted
    | LlmToolCall
)


def failure_kind(error: ServiceError) -> FailureKind:
    if isinstance(error, ServiceAtCapacity):
        return "capacity"
    if isinstance(error, ServiceTimeout):
        return "timeout"
    return "other"


# ----------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Notify:
    """Tell the client this (through the session's protocol front-end).

    ``droppable`` notes are periodic status updates: the client writer may skip one when its
    queue is full instead of waiting, since the next one supersedes it.
    """

    note: Note
    droppable: bool = False

    @property
    def turn_id(self) -> int | None:
        """The bot turn whose cancellation drops this note if it is not sent yet (the core
        decides which notes are a reply's own content: ``notes.dropped_with_turn``)."""
        return dropped_with_turn(self.note)


@dataclass(frozen=True)
class FlushStt:
    """Send ``num_frames`` frames of silence (1920 zero samples each) to the STT at once, so it
    emits the user's last words without waiting for more real audio."""

    num_frames: int


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


Action = Notify | FlushStt | StartTurn | CancelTurn | SetRecording | CloseSession

# The notes are defined in conversation/notes.py and exported from here too.
__all__ = [
    "Action",
    "AudioCommitted",
    "AudioReceived",
    "CancelTurn",
    "CloseSession",
    "CustomVoiceMissing",
    "DrainStarted",
    "Event",
    "FailureKind",
    "FlushStt",
    "FunctionOutputAdded",
    "LlmDone",
    "LlmToolCall",
    "LlmWord",
    "Note",
    "Notify",
    "ResponseCancelRequested",
    "ResponseFinished",
    "ResponseInterrupted",
    "ResponseRequested",
    "ResponseSpec",
    "ResponseStarted",
    "ResponseTextComplete",
    "ResponseToolCall",
    "ResponseWordPlanned",
    "ResponseWordSpoken",
    "ServiceFailed",
    "ServiceRetrying",
    "ServiceWarning",
    "SessionFailed",
    "SessionUpdated",
    "SetRecording",
    "StartTurn",
    "StatusReport",
    "SttStep",
    "SttWord",
    "TokenUsage",
    "TtsWordSpoken",
    "TurnAdded",
    "TurnAudioFinished",
    "TurnDeleteRequested",
    "TurnOptions",
    "TurnOptionsChanged",
    "UserSpeechStarted",
    "UserSpeechStopped",
    "UserTextAdded",
    "UserTranscriptDelta",
    "UserTurnEnded",
    "dropped_with_turn",
    "failure_kind",
]
