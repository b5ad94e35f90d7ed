"""Each OpenAI Realtime server event the builder makes, field by field on the wire.

``tests/test_openai_realtime_protocol.py`` checks that every builder's output is valid for the
official SDK; this checks that each one carries the values it was given, in the fields OpenAI
names, with a fresh event id each: a swapped or dropped argument is still a valid event, so
only the exact values catch it. Every event is also parsed by the SDK's own
``RealtimeServerEvent`` union, and the values are read back from the SDK's model too.

The events are built inside the tests (not at import), so each test exercises the builder code
as it is when the test runs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types import realtime as sdk
from pydantic import BaseModel, TypeAdapter

from unmute_trio.protocol.openai_errors import ClientEventError
from unmute_trio.protocol.openai_event_builder import PartRef, ServerEvents
from unmute_trio.protocol.openai_items import (
    FunctionCallItem,
    assistant_message,
    user_audio_message,
)
from unmute_trio.protocol.openai_response_config import ResponseConfig
from unmute_trio.protocol.openai_server_events import (
    ResponseFailure,
    SequentialIds,
    Usage,
    encode_server_event,
)
from unmute_trio.protocol.openai_session import PcmaFormat, default_session

SDK_SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(sdk.RealtimeServerEvent)

# A part that is not at the start of anything, so no index happens to equal a default.
REF = PartRef("resp_7", "item_8", output_index=2, content_index=3)
REF_FIELDS = {"response_id": "resp_7", "item_id": "item_8", "output_index": 2, "content_index": 3}


def _wire(event: BaseModel) -> dict[str, Any]:
    """The JSON the client receives, after checking that the SDK parses it as the same type."""
    data: dict[str, Any] = json.loads(encode_server_event(event))
    parsed = SDK_SERVER_EVENT.validate_python(data)
    assert parsed.type == data["type"]
    if "session" not in data:  # the SDK types the echoed session as the request shape
        assert _without_nulls(json.loads(parsed.model_dump_json())) == _without_nulls(data)
    return data


def _without_nulls(value: Any) -> Any:
    """Our JSON keeps nulls; the SDK's models have more optional fields, null by default."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _item(item: BaseModel) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(item.model_dump_json())
    return result


def _config(**changes: Any) -> ResponseConfig:
    fields: dict[str, Any] = {
        "instructions": "Be brief.",
        "output_modalities": ["text"],
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": 300,
        "output_format": PcmaFormat(),
        "voice": "cedar",
        "metadata": {"topic": "weather"},
    }
    return ResponseConfig(**(fields | changes))


def test_session_and_error_events() -> None:
    ev = ServerEvents(SequentialIds())
    session = default_session("sess_4", model="gemma", voice="marin", instructions="Hi.")
    created = _wire(ev.session_created(session))
    assert created == {
        "event_id": "event_1",
        "type": "session.created",
        "session": json.loads(session.model_dump_json()),
    }
    changed = session.model_copy(update={"instructions": "Bye."})
    updated = _wire(ev.session_updated(changed))
    assert updated["type"] == "session.updated" and updated["event_id"] == "event_2"
    assert updated["session"]["instructions"] == "Bye."

    assert _wire(ev.error("llm_unavailable", "The LLM is down.")) == {
        "event_id": "event_3",
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "code": "llm_unavailable",
            "message": "The LLM is down.",
            "param": None,
            "event_id": None,
        },
    }
    server = ev.error(None, "STT gone", param="p", event_id="c9", error_type="server_error")
    assert _wire(server)["error"] == {
        "type": "server_error",
        "code": None,
        "message": "STT gone",
        "param": "p",
        "event_id": "c9",
    }
    refused = ClientEventError("unknown_parameter", "Unknown parameter: 'x'.", "session.x", "c1")
    assert _wire(ev.client_error(refused)) == {
        "event_id": "event_5",
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "code": "unknown_parameter",
            "message": "Unknown parameter: 'x'.",
            "param": "session.x",
            "event_id": "c1",
        },
    }


def test_input_audio_buffer_events() -> None:
    ev = ServerEvents(SequentialIds())
    assert _wire(ev.speech_started(1_200, "item_1")) == {
        "event_id": "event_1",
        "type": "input_audio_buffer.speech_started",
        "audio_start_ms": 1_200,
        "item_id": "item_1",
    }
    assert _wire(ev.speech_stopped(2_640, "item_1")) == {
        "event_id": "event_2",
        "type": "input_audio_buffer.speech_stopped",
        "audio_end_ms": 2_640,
        "item_id": "item_1",
    }
    assert _wire(ev.audio_committed("item_5", "item_4")) == {
        "event_id": "event_3",
        "type": "input_audio_buffer.committed",
        "item_id": "item_5",
        "previous_item_id": "item_4",
    }
    assert _wire(ev.audio_committed("item_1", None))["previous_item_id"] is None
    assert _wire(ev.audio_cleared()) == {
        "event_id": "event_5",
        "type": "input_audio_buffer.cleared",
    }
    assert _wire(ev.idle_timeout(9_000, 15_000, "item_6")) == {
        "event_id": "event_6",
        "type": "input_audio_buffer.timeout_triggered",
        "audio_start_ms": 9_000,
        "audio_end_ms": 15_000,
        "item_id": "item_6",
    }


def test_conversation_item_events() -> None:
    ev = ServerEvents(SequentialIds())
    heard = user_audio_message("item_1", "What's the weather?")
    assert _wire(ev.item_added(heard, "item_0")) == {
        "event_id": "event_1",
        "type": "conversation.item.added",
        "item": _item(heard),
        "previous_item_id": "item_0",
    }
    assert _wire(ev.item_done(heard, "item_0")) == {
        "event_id": "event_2",
        "type": "conversation.item.done",
        "item": _item(heard),
        "previous_item_id": "item_0",
    }
    assert _wire(ev.item_added(heard, None))["previous_item_id"] is None
    assert _wire(ev.item_done(heard, None))["previous_item_id"] is None
    assert _wire(ev.item_retrieved(heard)) == {
        "event_id": "event_5",
        "type": "conversation.item.retrieved",
        "item": _item(heard),
    }
    assert _wire(ev.item_deleted("item_2")) == {
        "event_id": "event_6",
        "type": "conversation.item.deleted",
        "item_id": "item_2",
    }
    assert _wire(ev.item_truncated("item_2", 1, 1_500)) == {
        "event_id": "event_7",
        "type": "conversation.item.truncated",
        "item_id": "item_2",
        "content_index": 1,
        "audio_end_ms": 1_500,
    }


def test_transcription_events() -> None:
    ev = ServerEvents(SequentialIds())
    kind = "conversation.item.input_audio_transcription"
    assert _wire(ev.transcription_delta("item_1", "What's")) == {
        "event_id": "event_1",
        "type": f"{kind}.delta",
        "item_id": "item_1",
        "content_index": 0,
        "delta": "What's",
    }
    assert _wire(ev.transcription_delta("item_1", " the", content_index=2))["content_index"] == 2
    assert _wire(ev.transcription_completed("item_1", "What's the weather?", 1.44)) == {
        "event_id": "event_3",
        "type": f"{kind}.completed",
        "item_id": "item_1",
        "content_index": 0,
        "transcript": "What's the weather?",
        "usage": {"type": "duration", "seconds": 1.44},
    }
    later = ev.transcription_completed("item_1", "x", 2.0, content_index=1)
    assert _wire(later)["content_index"] == 1
    assert _wire(ev.transcription_failed("item_1", "stt_error", "STT closed")) == {
        "event_id": "event_5",
        "type": f"{kind}.failed",
        "item_id": "item_1",
        "content_index": 0,
        "error": {
            "type": "transcription_error",
            "code": "stt_error",
            "message": "STT closed",
            "param": None,
        },
    }
    failed = ev.transcription_failed("item_1", "stt_error", "STT closed", content_index=4)
    assert _wire(failed)["content_index"] == 4


def _response(
    response_id: str, status: str, details: Any = None, output: Any = (), usage: Any = None
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": details,
        "output": list(output),
        "conversation_id": "conv_1",
        "output_modalities": ["text"],
        "max_output_tokens": 300,
        "audio": {"output": {"format": {"type": "audio/pcma"}, "voice": "cedar"}},
        "usage": usage,
        "metadata": {"topic": "weather"},
    }


def test_response_created_and_done_carry_the_responses_settings() -> None:
    ev = ServerEvents(SequentialIds())
    config = _config()
    assert _wire(ev.response_created("resp_1", config, "conv_1")) == {
        "event_id": "event_1",
        "type": "response.created",
        "response": _response("resp_1", "in_progress"),
    }
    no_conversation = _wire(ev.response_created("resp_1", _config(max_output_tokens="inf")))
    assert no_conversation["response"]["conversation_id"] is None
    assert no_conversation["response"]["max_output_tokens"] == "inf"

    spoken = assistant_message("item_2", "text", "Sunny.")
    usage = Usage(total_tokens=120, input_tokens=100, output_tokens=20)
    done = ev.response_done("resp_1", config, "completed", [spoken], usage=usage,
                            conversation_id="conv_1")  # fmt: skip
    assert _wire(done) == {
        "event_id": "event_3",
        "type": "response.done",
        "response": _response(
            "resp_1",
            "completed",
            output=[_item(spoken)],
            usage={"total_tokens": 120, "input_tokens": 100, "output_tokens": 20},
        ),
    }
    cancelled = ev.response_done("resp_2", config, "cancelled", [spoken],
                                 reason="turn_detected", conversation_id="conv_1")  # fmt: skip
    assert _wire(cancelled)["response"] == _response(
        "resp_2",
        "cancelled",
        {"type": "cancelled", "reason": "turn_detected", "error": None},
        output=[_item(spoken)],
    )
    incomplete = ev.response_done("resp_3", config, "incomplete", [],
                                  reason="max_output_tokens", conversation_id="conv_1")  # fmt: skip
    assert _wire(incomplete)["response"]["status_details"] == {
        "type": "incomplete",
        "reason": "max_output_tokens",
        "error": None,
    }
    failure = ResponseFailure(type="server_error", code="llm_unavailable", message="LLM down")
    failed = ev.response_done("resp_4", config, "failed", [], failure=failure)
    assert _wire(failed)["response"]["status_details"] == {
        "type": "failed",
        "reason": None,
        "error": {"type": "server_error", "code": "llm_unavailable", "message": "LLM down"},
    }
    assert _wire(failed)["response"]["status"] == "failed"


@pytest.mark.parametrize("status", ["cancelled", "incomplete"])
def test_a_cancelled_or_incomplete_response_needs_its_reason(status: str) -> None:
    ev = ServerEvents(SequentialIds())
    with pytest.raises(ValueError, match=f"^a {status} response needs a reason$"):
        ev.response_done("resp_1", _config(), status, [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^a failed response needs a failure$"):
        ev.response_done("resp_1", _config(), "failed", [], reason="turn_detected")
    # A completed response needs neither.
    assert ev.response_done("resp_1", _config(), "completed", []).response.status_details is None


def test_output_items_and_content_parts() -> None:
    ev = ServerEvents(SequentialIds())
    empty = assistant_message("item_8", "audio", None, "in_progress")
    assert _wire(ev.output_item_added("resp_7", 2, empty)) == {
        "event_id": "event_1",
        "type": "response.output_item.added",
        "response_id": "resp_7",
        "output_index": 2,
        "item": _item(empty),
    }
    spoken = assistant_message("item_8", "audio", "Sunny.")
    assert _wire(ev.output_item_done("resp_7", 2, spoken)) == {
        "event_id": "event_2",
        "type": "response.output_item.done",
        "response_id": "resp_7",
        "output_index": 2,
        "item": _item(spoken),
    }
    part_events = [
        (ev.content_part_added(REF, "audio"), "response.content_part.added",
         {"part": {"type": "audio", "transcript": "", "text": None}}),
        (ev.content_part_added(REF, "text"), "response.content_part.added",
         {"part": {"type": "text", "transcript": None, "text": ""}}),
        (ev.content_part_done(REF, "audio", "Sunny."), "response.content_part.done",
         {"part": {"type": "audio", "transcript": "Sunny.", "text": None}}),
        (ev.content_part_done(REF, "text", "Sunny."), "response.content_part.done",
         {"part": {"type": "text", "transcript": None, "text": "Sunny."}}),
        (ev.audio_delta(REF, "/39/fw=="), "response.output_audio.delta", {"delta": "/39/fw=="}),
        (ev.audio_done(REF), "response.output_audio.done", {}),
        (ev.transcript_delta(REF, "Sun"), "response.output_audio_transcript.delta",
         {"delta": "Sun"}),
        (ev.transcript_done(REF, "Sunny."), "response.output_audio_transcript.done",
         {"transcript": "Sunny."}),
        (ev.text_delta(REF, "Sun"), "response.output_text.delta", {"delta": "Sun"}),
        (ev.text_done(REF, "Sunny."), "response.output_text.done", {"text": "Sunny."}),
    ]  # fmt: skip
    for n, (event, kind, fields) in enumerate(part_events, start=3):
        expected = {"event_id": f"event_{n}", "type": kind} | REF_FIELDS | fields
        assert _wire(event) == expected, kind


def test_a_part_reference_starts_at_the_first_output_and_content() -> None:
    ref = PartRef("resp_1", "item_1")
    assert (ref.output_index, ref.content_index) == (0, 0)
    event = _wire(ServerEvents(SequentialIds()).audio_done(ref))
    assert (event["output_index"], event["content_index"]) == (0, 0)


def test_function_call_argument_events() -> None:
    ev = ServerEvents(SequentialIds())
    assert _wire(ev.function_arguments_delta("resp_7", "item_9", 1, "call_3", '{"ci')) == {
        "event_id": "event_1",
        "type": "response.function_call_arguments.delta",
        "response_id": "resp_7",
        "item_id": "item_9",
        "output_index": 1,
        "call_id": "call_3",
        "delta": '{"ci',
    }
    done = ev.function_arguments_done(
        "resp_7", "item_9", 1, "call_3", "get_weather", '{"city":"Paris"}'
    )
    assert _wire(done) == {
        "event_id": "event_2",
        "type": "response.function_call_arguments.done",
        "response_id": "resp_7",
        "item_id": "item_9",
        "output_index": 1,
        "call_id": "call_3",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    call = FunctionCallItem(id="item_9", call_id="call_3", name="get_weather", arguments="{}")
    assert _wire(ev.output_item_done("resp_7", 1, call))["item"]["call_id"] == "call_3"
