"""The periodic status of a conversation (``unmute.additional_outputs`` in the Unmute dialect):
the chat as the client sees it and a few debug values, read from the machine's public views."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unmute_trio.conversation.events import StatusReport

if TYPE_CHECKING:
    from unmute_trio.conversation.machine import ConversationMachine


def status_report(machine: ConversationMachine) -> StatusReport:
    debug: dict[str, Any] = {
        "conversation_state": machine.state.value,
        "stt_pause_prediction": machine.pause_prediction,
        "stt_time": machine.stt_time,
        "audio_received_s": machine.audio_time_s,
        "tts_voice": machine.voice or "none",
        "turn_id": machine.active_turn_id,
    }
    return StatusReport(machine.transcript.chat_history(), debug)
