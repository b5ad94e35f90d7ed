"""The notes of the conversation core: what the client should be told, as plain facts with no
wire format ("the user started speaking", "this word of reply 3 is being played"). The machine
returns them inside ``Notify`` actions (conversation/events.py); each protocol front turns them
into its own events (session/unmute_front.py, session/openai_presenter.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TokenUsage:
    """What the LLM server counted for one reply."""

    input_tokens: int
    output_tokens: int


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
