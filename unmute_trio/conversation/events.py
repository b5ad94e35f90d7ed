"""What goes into the conversation machine (events) and what comes out (actions).

Events are facts the session layer observed; actions are what it must do next, in the order
given. Only control flows through here: audio frames go from the browser to the STT and from
the TTS to the browser without passing through the machine, which only hears how much audio
arrived (``AudioReceived``) and which words were actually played (``TtsWordSpoken``).

Every event of a bot turn carries the ``turn_id`` the machine gave in ``StartTurn``. Once a
turn is cancelled or over, events with its id change nothing and produce no action, so a late
LLM word or TTS text of an interrupted reply can never reach the browser through the machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

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
class LlmDone:
    """The LLM stream of this turn ended normally."""

    turn_id: int


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
)


def failure_kind(error: ServiceError) -> FailureKind:
    if isinstance(error, ServiceAtCapacity):
        return "capacity"
    if isinstance(error, ServiceTimeout):
        return "timeout"
    return "other"


# ----------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Emit:
    """Send this server event to the browser.

    ``droppable`` events are periodic status updates: the client writer may skip one when
    its queue is full instead of waiting, since the next one supersedes it.
    """

    event: BaseModel
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
    messages: list[dict[str, str]] = field(hash=False)
    temperature: float
    voice: str | None


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
    Emit | FlushStt | ResetPausePrediction | StartTurn | CancelTurn | SetRecording | CloseSession
)
