"""The sans-I/O conversation core: turn-taking, transcript, LLM messages and system prompts.

Nothing here awaits, reads a clock, draws unseeded randomness or touches a file or socket.
The session layer feeds :class:`ConversationMachine` events and carries out the actions it
returns, in order.
"""

from unmute_trio.conversation.events import (
    Action,
    AudioReceived,
    CancelTurn,
    CloseSession,
    Emit,
    Event,
    FailureKind,
    FlushStt,
    LlmDone,
    LlmWord,
    ResetPausePrediction,
    ServiceFailed,
    ServiceRetrying,
    SessionUpdated,
    SetRecording,
    StartTurn,
    SttStep,
    SttWord,
    TtsWordSpoken,
    TurnAudioFinished,
    failure_kind,
)
from unmute_trio.conversation.machine import ConversationMachine, ConversationState, fatal_message
from unmute_trio.conversation.policy import TurnTakingPolicy
from unmute_trio.conversation.prompts import build_system_prompt, llm_name_from_model
from unmute_trio.conversation.transcript import Transcript, Turn

__all__ = [
    "Action",
    "AudioReceived",
    "CancelTurn",
    "CloseSession",
    "ConversationMachine",
    "ConversationState",
    "Emit",
    "Event",
    "FailureKind",
    "FlushStt",
    "LlmDone",
    "LlmWord",
    "ResetPausePrediction",
    "ServiceFailed",
    "ServiceRetrying",
    "SessionUpdated",
    "SetRecording",
    "StartTurn",
    "SttStep",
    "SttWord",
    "Transcript",
    "TtsWordSpoken",
    "Turn",
    "TurnAudioFinished",
    "TurnTakingPolicy",
    "build_system_prompt",
    "failure_kind",
    "fatal_message",
    "llm_name_from_model",
]
