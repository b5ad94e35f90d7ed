"""Small parts of the conversation core, value by value: the status report's debug values, the
failure an error becomes, which notes a cancelled turn drops, and the warnings users read."""

from __future__ import annotations

from types import SimpleNamespace

from unmute_trio.conversation.events import (
    ResponseFinished,
    ResponseInterrupted,
    ResponseStarted,
    ResponseTextComplete,
    ResponseToolCall,
    ResponseWordPlanned,
    ResponseWordSpoken,
    ServiceFailed,
    ServiceWarning,
    StatusReport,
    UserTranscriptDelta,
    dropped_with_turn,
    failure_kind,
)
from unmute_trio.conversation.machine import ConversationState
from unmute_trio.conversation.messages import custom_voice_warning
from unmute_trio.conversation.status import status_report
from unmute_trio.errors import (
    ServiceAtCapacity,
    ServiceDisconnected,
    ServiceProtocolError,
    ServiceTimeout,
)


def _machine(voice: str | None) -> SimpleNamespace:
    history = [{"role": "user", "content": "hello"}]
    return SimpleNamespace(
        state=ConversationState.BOT_SPEAKING,
        pause_prediction=0.25,
        stt_time=3.5,
        audio_time_s=4.0,
        voice=voice,
        active_turn_id=7,
        transcript=SimpleNamespace(chat_history=lambda: history),
    )


def test_the_status_report_holds_the_chat_and_the_debug_values_by_name() -> None:
    report = status_report(_machine("marin"))  # type: ignore[arg-type]
    assert isinstance(report, StatusReport)
    assert report.chat_history == [{"role": "user", "content": "hello"}]
    assert report.debug == {
        "conversation_state": ConversationState.BOT_SPEAKING.value,
        "stt_pause_prediction": 0.25,
        "stt_time": 3.5,
        "audio_received_s": 4.0,
        "tts_voice": "marin",
        "turn_id": 7,
    }


def test_the_status_report_says_none_without_a_voice() -> None:
    for voice in (None, ""):
        report = status_report(_machine(voice))  # type: ignore[arg-type]
        assert report.debug["tts_voice"] == "none"


def test_a_service_error_becomes_a_failure_of_its_kind_for_its_turn() -> None:
    assert ServiceFailed.from_error(ServiceAtCapacity("tts"), turn_id=4) == ServiceFailed(
        "tts", "capacity", 4
    )
    assert ServiceFailed.from_error(ServiceTimeout("llm", "read")) == ServiceFailed(
        "llm", "timeout", None
    )
    assert ServiceFailed.from_error(ServiceDisconnected("stt"), 2) == ServiceFailed(
        "stt", "other", 2
    )
    assert failure_kind(ServiceProtocolError("llm", "bad frame")) == "other"
    assert failure_kind(ServiceDisconnected("tts")) == "other"


def test_a_cancelled_turn_drops_its_content_but_not_its_start_or_interruption() -> None:
    content = [
        ResponseWordPlanned(5, "hi"),
        ResponseTextComplete(5, "hi there"),
        ResponseWordSpoken(5, "hi"),
        ResponseToolCall(5, "call_1", "get_weather", "{}"),
        ResponseFinished(5),
        ServiceWarning(5, "slow"),
    ]
    assert [dropped_with_turn(note) for note in content] == [5] * 6
    kept = [
        ResponseStarted(5, "marin", []),
        ResponseInterrupted(5, "the user spoke over the bot"),
        UserTranscriptDelta("hi", 1.0),
    ]
    assert [dropped_with_turn(note) for note in kept] == [None, None, None]


def test_the_cloned_voice_warnings_word_for_word() -> None:
    assert custom_voice_warning("custom:abc", store_unavailable=True) == (
        "The voice store is unavailable, so the cloned voice 'custom:abc' cannot be used; "
        "the default voice speaks instead."
    )
    assert custom_voice_warning("custom:abc", store_unavailable=False) == (
        "The cloned voice 'custom:abc' is not known (cloned voices expire); "
        "the default voice speaks instead."
    )
