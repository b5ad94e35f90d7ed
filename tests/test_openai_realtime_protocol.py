"""The OpenAI Realtime (GA) codec against the official SDK's own models (a dev dependency).

Server events: every builder's output, for realistic arguments, validates against the SDK's
``RealtimeServerEvent`` union with no field the SDK does not know. Client events: what the SDK
constructs parses. Bad frames: the error shape (type, code, message, param, event_id).
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from openai.types import realtime as sdk
from openai.types.realtime.realtime_audio_formats import AudioPCM, AudioPCMU
from openai.types.realtime.realtime_audio_input_turn_detection import SemanticVad, ServerVad
from openai.types.realtime.realtime_conversation_item_user_message import (
    Content as UserContent,
)
from openai.types.responses import ToolChoiceFunction
from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticCustomError

from unmute_trio.protocol import openai_client_events as ce
from unmute_trio.protocol.openai_errors import ClientEventError
from unmute_trio.protocol.openai_event_builder import PartRef, ServerEvents
from unmute_trio.protocol.openai_items import (
    FunctionCallItem,
    FunctionCallOutputItem,
    Item,
    assistant_message,
    item_from_input,
    user_audio_message,
)
from unmute_trio.protocol.openai_response_config import ResponseParams, resolve_response
from unmute_trio.protocol.openai_server_events import (
    RandomIds,
    ResponseFailure,
    SequentialIds,
    ServerEvent,
    Usage,
    encode_server_event,
    parse_server_event,
)
from unmute_trio.protocol.openai_session import (
    FunctionToolChoice,
    PcmuFormat,
    SessionConfig,
    SessionPatch,
    apply_session_update,
    default_session,
    unsupported_if_set,
)
from unmute_trio.protocol.openai_session import (
    SemanticVad as OurSemanticVad,
)

SDK_SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(sdk.RealtimeServerEvent)
DOC = Path(__file__).resolve().parent.parent / "docs" / "openai-realtime.md"

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def _session(**changes: Any) -> SessionConfig:
    base = default_session("sess_1", model="gemma-3-1b", voice="marin", instructions="Be brief.")
    if not changes:
        return base
    result = apply_session_update(
        base, SessionPatch.model_validate({"type": "realtime", **changes})
    )
    assert isinstance(result, SessionConfig), result
    return result


def _assert_no_extras(model: Any, path: str = "") -> None:
    """The SDK models allow unknown fields; any here means we misnamed one."""
    if isinstance(model, BaseModel):
        assert not model.model_extra, (
            f"fields unknown to the SDK at {path or '.'}: {model.model_extra}"
        )
        for name in type(model).model_fields:
            _assert_no_extras(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list):
        for i, value in enumerate(model):
            _assert_no_extras(value, f"{path}[{i}]")


def _sdk_accepts(event: BaseModel) -> BaseModel:
    data = json.loads(encode_server_event(event))
    parsed = SDK_SERVER_EVENT.validate_python(data)
    assert parsed.type == data["type"]
    if "session" in data:
        # The SDK types the echoed session as the *request* shape, which lacks the id and
        # object OpenAI sends; the response shape has them and is checked field by field.
        _assert_no_extras(sdk.RealtimeSessionCreateResponse.model_validate(data["session"]))
        parsed = parsed.model_copy(update={"session": None})
    _assert_no_extras(parsed)
    assert parse_server_event(json.dumps(data)) == event  # our own decoder round-trips it
    return parsed


def _all_server_events() -> list[tuple[str, BaseModel]]:
    ev = ServerEvents(SequentialIds())
    session = _session(
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        audio={
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": "cedar", "speed": 1.1},
        },
    )
    config = resolve_response(session, ResponseParams(metadata={"topic": "weather"}))
    assert not isinstance(config, ClientEventError)
    ref = PartRef("resp_1", "item_2", output_index=0, content_index=0)
    heard = user_audio_message("item_1", "What's the weather in Paris?")
    spoken = assistant_message("item_2", "audio", "Sunny, 24 degrees.")
    call = FunctionCallItem(
        id="item_3", call_id="call_1", name="get_weather", arguments='{"city":"Paris"}'
    )
    result = FunctionCallOutputItem(id="item_4", call_id="call_1", output='{"temp_c":24}')
    failure = ResponseFailure(type="server_error", code="llm_unavailable", message="LLM down")
    err = ClientEventError(
        "unknown_parameter", "Unknown parameter: 'session.x'.", "session.x", "e1"
    )
    return [
        ("session.created", ev.session_created(_session())),
        ("session.updated", ev.session_updated(session)),
        ("error", ev.client_error(err)),
        ("error/server", ev.error(None, "STT unavailable", error_type="server_error")),
        ("speech_started", ev.speech_started(1_200, "item_1")),
        ("speech_stopped", ev.speech_stopped(2_640, "item_1")),
        ("committed", ev.audio_committed("item_1", None)),
        ("committed/previous", ev.audio_committed("item_5", "item_4")),
        ("cleared", ev.audio_cleared()),
        ("timeout_triggered", ev.idle_timeout(9_000, 15_000, "item_6")),
        ("item.added/user", ev.item_added(user_audio_message("item_1", None, "in_progress"), None)),
        ("item.done/user", ev.item_done(heard, None)),
        ("item.added/text", ev.item_added(item_from_input(_user_text_input(), "item_7"), "item_1")),
        ("item.done/call_output", ev.item_done(result, "item_3")),
        ("item.retrieved", ev.item_retrieved(spoken)),
        ("item.deleted", ev.item_deleted("item_2")),
        ("item.truncated", ev.item_truncated("item_2", 0, 1_500)),
        ("transcription.delta", ev.transcription_delta("item_1", "What's the")),
        ("transcription.completed", ev.transcription_completed("item_1", heard_text(), 1.44)),
        ("transcription.failed", ev.transcription_failed("item_1", "stt_error", "STT closed")),
        ("response.created", ev.response_created("resp_1", config, "conv_1")),
        ("output_item.added", ev.output_item_added("resp_1", 0, assistant_message(
            "item_2", "audio", None, "in_progress"))),
        ("content_part.added/audio", ev.content_part_added(ref, "audio")),
        ("audio.delta", ev.audio_delta(ref, "/39/fw==")),
        ("transcript.delta", ev.transcript_delta(ref, "Sunny, ")),
        ("audio.done", ev.audio_done(ref)),
        ("transcript.done", ev.transcript_done(ref, "Sunny, 24 degrees.")),
        ("content_part.done/audio", ev.content_part_done(ref, "audio", "Sunny, 24 degrees.")),
        ("content_part.added/text", ev.content_part_added(ref, "text")),
        ("text.delta", ev.text_delta(ref, "Sunny")),
        ("text.done", ev.text_done(ref, "Sunny, 24 degrees.")),
        ("content_part.done/text", ev.content_part_done(ref, "text", "Sunny, 24 degrees.")),
        ("output_item.done", ev.output_item_done("resp_1", 0, spoken)),
        ("output_item.added/call", ev.output_item_added("resp_1", 1, call.model_copy(
            update={"status": "in_progress", "arguments": ""}))),
        ("arguments.delta", ev.function_arguments_delta("resp_1", "item_3", 1, "call_1", '{"ci')),
        ("arguments.done", ev.function_arguments_done(
            "resp_1", "item_3", 1, "call_1", "get_weather", '{"city":"Paris"}')),
        ("response.done/completed", ev.response_done(
            "resp_1", config, "completed", [spoken, call],
            usage=Usage(total_tokens=120, input_tokens=100, output_tokens=20))),
        ("response.done/turn_detected", ev.response_done(
            "resp_2", config, "cancelled", [spoken], reason="turn_detected")),
        ("response.done/client_cancelled", ev.response_done(
            "resp_3", config, "cancelled", [], reason="client_cancelled")),
        ("response.done/incomplete", ev.response_done(
            "resp_4", config, "incomplete", [spoken], reason="max_output_tokens")),
        ("response.done/failed", ev.response_done(
            "resp_5", config, "failed", [], failure=failure)),
    ]  # fmt: skip


def heard_text() -> str:
    return "What's the weather in Paris?"


def _user_text_input() -> Any:
    event = ce.parse_client_event(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "And tomorrow?"}],
                },
            }
        )
    )
    assert isinstance(event, ce.ConversationItemCreate)
    return event.item


SERVER_EVENTS = _all_server_events()


@pytest.mark.parametrize("name,event", SERVER_EVENTS, ids=[n for n, _ in SERVER_EVENTS])
def test_server_event_validates_against_the_sdk(name: str, event: BaseModel) -> None:
    _sdk_accepts(event)


def test_every_server_event_model_is_built_and_checked() -> None:
    built = {type(event) for _, event in SERVER_EVENTS}
    declared = set(typing.get_args(typing.get_args(ServerEvent)[0]))
    assert declared <= built, declared - built


def test_response_done_reports_cancellation_and_usage_like_openai() -> None:
    by_name = dict(SERVER_EVENTS)
    done = json.loads(encode_server_event(by_name["response.done/turn_detected"]))["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected", "error": None}
    done = json.loads(encode_server_event(by_name["response.done/completed"]))["response"]
    assert done["status_details"] is None and done["usage"]["total_tokens"] == 120
    assert done["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "cedar"}
    assert [item["type"] for item in done["output"]] == ["message", "function_call"]
    with pytest.raises(ValueError):
        ServerEvents(SequentialIds()).response_done("r", _resolved(), "cancelled", [])


def _resolved() -> Any:
    config = resolve_response(_session(), None)
    assert not isinstance(config, ClientEventError)
    return config


def test_ids_are_injected_and_deterministic_in_tests() -> None:
    ev = ServerEvents(SequentialIds())
    assert [ev.audio_cleared().event_id for _ in range(3)] == ["event_1", "event_2", "event_3"]
    ids = SequentialIds()
    assert (ids.new_id("item"), ids.new_id("resp"), ids.new_id("item")) == (
        "item_1",
        "resp_1",
        "item_2",
    )
    assert re.fullmatch(r"call_[A-Za-z0-9]{21}", RandomIds().new_id("call"))


# ---------------------------------------------------------------- client events from the SDK


def _sdk_client_events() -> list[tuple[BaseModel, type]]:
    session = sdk.RealtimeSessionCreateRequest(
        type="realtime",
        instructions="You are a weather assistant.",
        output_modalities=["audio"],
        max_output_tokens=512,
        tools=[sdk.RealtimeFunctionTool(**WEATHER_TOOL)],
        tool_choice=ToolChoiceFunction(type="function", name="get_weather"),
        audio=sdk.RealtimeAudioConfig(
            input=sdk.RealtimeAudioConfigInput(
                format=AudioPCM(type="audio/pcm", rate=24000),
                transcription=sdk.AudioTranscription(model="gpt-4o-mini-transcribe"),
                turn_detection=ServerVad(
                    type="server_vad",
                    threshold=0.6,
                    prefix_padding_ms=300,
                    silence_duration_ms=400,
                    create_response=True,
                    interrupt_response=True,
                    idle_timeout_ms=6000,
                ),
            ),
            output=sdk.RealtimeAudioConfigOutput(
                format=AudioPCMU(type="audio/pcmu"), voice="marin", speed=1.0
            ),
        ),
    )
    semantic = sdk.RealtimeSessionCreateRequest(
        type="realtime",
        output_modalities=["text"],
        audio=sdk.RealtimeAudioConfig(
            input=sdk.RealtimeAudioConfigInput(
                turn_detection=SemanticVad(type="semantic_vad", eagerness="low")
            )
        ),
    )
    user_text = sdk.RealtimeConversationItemUserMessage(
        type="message", role="user", content=[UserContent(type="input_text", text="Hi there")]
    )
    output = sdk.RealtimeConversationItemFunctionCallOutput(
        type="function_call_output", call_id="call_1", output='{"temp_c": 24}'
    )
    return [
        (sdk.SessionUpdateEvent(type="session.update", session=session, event_id="c1"),
         ce.SessionUpdate),
        (sdk.SessionUpdateEvent(type="session.update", session=semantic), ce.SessionUpdate),
        (sdk.InputAudioBufferAppendEvent(type="input_audio_buffer.append", audio="AAD/fw=="),
         ce.InputAudioBufferAppend),
        (sdk.InputAudioBufferCommitEvent(type="input_audio_buffer.commit"),
         ce.InputAudioBufferCommit),
        (sdk.InputAudioBufferClearEvent(type="input_audio_buffer.clear"),
         ce.InputAudioBufferClear),
        (sdk.ConversationItemCreateEvent(type="conversation.item.create", item=user_text),
         ce.ConversationItemCreate),
        (sdk.ConversationItemCreateEvent(
            type="conversation.item.create", item=output, previous_item_id="item_3"),
         ce.ConversationItemCreate),
        (sdk.ConversationItemRetrieveEvent(type="conversation.item.retrieve", item_id="item_2"),
         ce.ConversationItemRetrieve),
        (sdk.ConversationItemDeleteEvent(type="conversation.item.delete", item_id="item_2"),
         ce.ConversationItemDelete),
        (sdk.ConversationItemTruncateEvent(
            type="conversation.item.truncate", item_id="item_2", content_index=0,
            audio_end_ms=1500),
         ce.ConversationItemTruncate),
        (sdk.ResponseCreateEvent(type="response.create"), ce.ResponseCreate),
        (sdk.ResponseCreateEvent(type="response.create", response=sdk.RealtimeResponseCreateParams(
            instructions="Answer in French.", output_modalities=["text"],
            tools=[sdk.RealtimeFunctionTool(**WEATHER_TOOL)], tool_choice="required",
            max_output_tokens="inf", conversation="auto", metadata={"turn": "3"})),
         ce.ResponseCreate),
        (sdk.ResponseCancelEvent(type="response.cancel"), ce.ResponseCancel),
        (sdk.ResponseCancelEvent(type="response.cancel", response_id="resp_1"),
         ce.ResponseCancel),
    ]  # fmt: skip


SDK_CLIENT_EVENTS = _sdk_client_events()


@pytest.mark.parametrize(
    "sdk_event,expected", SDK_CLIENT_EVENTS, ids=[e.type for e, _ in SDK_CLIENT_EVENTS]
)
def test_sdk_client_event_parses(sdk_event: BaseModel, expected: type) -> None:
    text = json.dumps(sdk_event.model_dump(exclude_none=True))
    event = ce.parse_client_event(text)
    assert isinstance(event, expected), event
    assert event.event_id == getattr(sdk_event, "event_id", None)


def test_a_parsed_sdk_session_update_becomes_the_session_it_describes() -> None:
    event = ce.parse_client_event(json.dumps(SDK_CLIENT_EVENTS[0][0].model_dump(exclude_none=True)))
    assert isinstance(event, ce.SessionUpdate)
    session = apply_session_update(_session(), event.session)
    assert isinstance(session, SessionConfig)
    vad = session.audio.input.turn_detection
    assert vad is not None and vad.type == "server_vad"
    assert (vad.threshold, vad.silence_duration_ms, vad.idle_timeout_ms) == (0.6, 400, 6000)
    assert session.audio.output.format == PcmuFormat()
    assert session.tool_choice == FunctionToolChoice(type="function", name="get_weather")
    assert session.tools[0].parameters == WEATHER_TOOL["parameters"]
    assert session.max_output_tokens == 512 and session.id == "sess_1"


# ---------------------------------------------------------------- session configuration


def test_default_session_matches_openai_defaults() -> None:
    dumped = _session().model_dump()
    assert dumped["output_modalities"] == ["audio"]
    assert dumped["tool_choice"] == "auto" and dumped["max_output_tokens"] == "inf"
    assert dumped["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert dumped["audio"]["input"]["transcription"] is None
    vad = dumped["audio"]["input"]["turn_detection"]
    assert (vad["type"], vad["threshold"], vad["prefix_padding_ms"]) == ("server_vad", 0.5, 300)
    assert (vad["silence_duration_ms"], vad["create_response"], vad["interrupt_response"]) == (
        500,
        True,
        True,
    )
    assert dumped["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "marin",
        "speed": 1.0,
    }


def test_session_updates_merge_field_by_field() -> None:
    tuned = _session(audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 0.8}}})
    again = apply_session_update(
        tuned,
        SessionPatch.model_validate(
            {
                "type": "realtime",
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 900}}
                },
            }
        ),
    )
    assert isinstance(again, SessionConfig)
    vad = again.audio.input.turn_detection
    assert vad is not None and vad.type == "server_vad"
    assert (vad.threshold, vad.silence_duration_ms, vad.prefix_padding_ms) == (0.8, 900, 300)
    assert again.instructions == "Be brief." and again.audio.output.voice == "marin"
    # A new type replaces the object, its other fields taking their defaults.
    semantic = apply_session_update(
        again,
        SessionPatch.model_validate(
            {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}}
        ),
    )
    assert isinstance(semantic, SessionConfig)
    assert semantic.audio.input.turn_detection == OurSemanticVad()
    # null turns VAD off; model, tracing and noise reduction are accepted and ignored.
    manual = _session(
        model="gpt-realtime",
        tracing="auto",
        audio={"input": {"turn_detection": None, "noise_reduction": {"type": "near_field"}}},
    )
    assert manual.audio.input.turn_detection is None and manual.model == "gemma-3-1b"
    assert "noise_reduction" not in manual.model_dump()["audio"]["input"]


def test_tool_choice_must_name_a_declared_tool() -> None:
    patch = SessionPatch.model_validate(
        {"type": "realtime", "tool_choice": {"type": "function", "name": "nope"}}
    )
    err = apply_session_update(_session(), patch, event_id="evt_7")
    assert isinstance(err, ClientEventError)
    assert (err.code, err.param, err.event_id) == ("invalid_value", "session.tool_choice", "evt_7")
    required = resolve_response(_session(), ResponseParams(tool_choice="required"))
    assert isinstance(required, ClientEventError) and required.param == "response.tool_choice"


def test_response_overrides_the_session_for_one_response() -> None:
    session = _session(tools=[WEATHER_TOOL])
    params = ResponseParams.model_validate(
        {
            "instructions": "Answer in French.",
            "output_modalities": ["text"],
            "tools": [],
            "tool_choice": "none",
            "audio": {"output": {"voice": "cedar"}},
        }
    )
    config = resolve_response(session, params)
    assert not isinstance(config, ClientEventError)
    assert (config.instructions, config.output_modalities, config.tools) == (
        "Answer in French.",
        ["text"],
        [],
    )
    assert config.voice == "cedar" and config.output_format == session.audio.output.format
    plain = resolve_response(session, None)
    assert not isinstance(plain, ClientEventError)
    assert plain.instructions == "Be brief." and plain.tools == session.tools


def test_client_items_become_server_items() -> None:
    item: Item = item_from_input(_user_text_input(), "item_9")
    assert item.model_dump() == {
        "id": "item_9",
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_text", "text": "And tomorrow?"}],
    }


# ---------------------------------------------------------------- bad frames


def _frame(**fields: Any) -> str:
    return json.dumps(fields)


BAD_FRAMES = [
    # (frame, code, param, event_id)
    (b'{"type": "input_audio_buffer.commit"}', "invalid_frame", None, None),
    ("{not json", "invalid_json", None, None),
    ("[" * 100_000, "nesting_too_deep", None, None),
    ('{"event_id": "e1", "type": "session.update", "session": '
     + '{"a": ' * 70 + "1" + "}" * 71, "nesting_too_deep", None, "e1"),
    ("x" * (ce.MAX_FRAME_CHARS + 1), "frame_too_large", None, None),
    ('["input_audio_buffer.commit"]', "invalid_type", None, None),
    ('{"type": "input_audio_buffer.append", "event_id": "e2", "audio": "\\udc00"}',
     "invalid_string", "audio", "e2"),
    ('{"type": "conversation.item.create", "item": {"type": "message", "role": "user", '
     '"content": [{"type": "input_text", "text": "a\\ud800b"}]}}',
     "invalid_string", "item.content[0].text", None),
    (_frame(event_id="e3"), "missing_required_parameter", "type", "e3"),
    (_frame(type=7), "invalid_type", "type", None),
    (_frame(type="response.audio.delta", event_id="e4"), "invalid_value", "type", "e4"),
    (_frame(type="t" * 5_000), "invalid_value", "type", None),  # not echoed in full
    (_frame(type="output_audio_buffer.clear"), "unsupported_event", "type", None),
    (_frame(type="input_audio_buffer.commit", extra=1), "unknown_parameter", "extra", None),
    (_frame(type="input_audio_buffer.append"), "missing_required_parameter", "audio", None),
    (_frame(type="session.update", session={"instructions": "x"}),
     "missing_required_parameter", "session.type", None),
    (_frame(type="session.update", session={"type": "transcription"}),
     "unsupported_value", "session.type", None),
    (_frame(type="session.update", event_id="e5", session={"type": "realtime", "voice": "ash"}),
     "unknown_parameter", "session.voice", "e5"),
    (_frame(type="session.update", session={"type": "realtime", "instructions": None}),
     "invalid_type", "session.instructions", None),
    (_frame(type="session.update", session={"type": "realtime", "instructions": "x" * 70_000}),
     "string_above_max_length", "session.instructions", None),
    (_frame(type="session.update", session={"type": "realtime", "max_output_tokens": "5"}),
     "invalid_type", "session.max_output_tokens", None),
    (_frame(type="session.update", session={"type": "realtime", "max_output_tokens": 5000}),
     "integer_above_max_value", "session.max_output_tokens", None),
    (_frame(type="session.update",
            session={"type": "realtime", "output_modalities": ["text", "audio"]}),
     "invalid_value", "session.output_modalities", None),
    (_frame(type="session.update", session={"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "server_vad", "threshold": 1.5}}}}),
     "decimal_above_max_value", "session.audio.input.turn_detection.threshold", None),
    (_frame(type="session.update", session={"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "push_to_talk"}}}}),
     "invalid_value", "session.audio.input.turn_detection.type", None),
    (_frame(type="session.update", session={"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "v" * 5_000}}}}),
     "invalid_value", "session.audio.input.turn_detection.type", None),
    (_frame(type="session.update", session={"type": "realtime", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000}}}}),
     "invalid_value", "session.audio.input.format.rate", None),
    (_frame(type="session.update", session={"type": "realtime", "audio": {"output": {
        "voice": {"name": "x"}}}}),
     "missing_required_parameter", "session.audio.output.voice.id", None),
    (_frame(type="session.update", session={"type": "realtime", "tools": [
        WEATHER_TOOL, {"type": "mcp", "server_label": "deepwiki"}]}),
     "unsupported_value", "session.tools[1].type", None),
    (_frame(type="session.update", session={"type": "realtime", "tools": [
        {"type": "function", "name": "get weather"}]}),
     "invalid_value", "session.tools[0].name", None),
    (_frame(type="session.update", session={"type": "realtime", "tools": [
        WEATHER_TOOL, WEATHER_TOOL]}),
     "invalid_value", "session.tools", None),
    (_frame(type="conversation.item.create", item={"type": "message", "role": "user",
            "content": [{"type": "input_audio", "audio": "AAAA"}]}),
     "unsupported_value", "item.content[0].type", None),
    (_frame(type="conversation.item.create", item={"type": "message", "role": "robot",
            "content": []}),
     "invalid_value", "item.role", None),
    (_frame(type="conversation.item.create", item={"type": "function_call_output",
            "output": "{}"}),
     "missing_required_parameter", "item.call_id", None),
    (_frame(type="conversation.item.truncate", item_id="i", content_index=-1, audio_end_ms=0),
     "integer_below_min_value", "content_index", None),
    (_frame(type="response.create", response={"conversation": "none"}),
     "unsupported_value", "response.conversation", None),
    (_frame(type="response.create", response={"input": []}),
     "unsupported_parameter", "response.input", None),
    (_frame(type="response.create", response={"modalities": ["text"]}),
     "unknown_parameter", "response.modalities", None),
    (_frame(type="response.cancel", event_id="x" * 600),
     "string_above_max_length", "event_id", None),
]  # fmt: skip


@pytest.mark.parametrize("frame,code,param,event_id", BAD_FRAMES, ids=[b[1] for b in BAD_FRAMES])
def test_bad_frames_become_openai_shaped_errors(
    frame: str | bytes, code: str, param: str | None, event_id: str | None
) -> None:
    err = ce.parse_client_event(frame)
    assert isinstance(err, ClientEventError), err
    assert (err.type, err.code, err.param, err.event_id) == (
        "invalid_request_error",
        code,
        param,
        event_id,
    ), err.message
    assert err.message and len(err.message) < 600
    # The answer is a valid GA error event.
    parsed = _sdk_accepts(ServerEvents(SequentialIds()).client_error(err))
    assert parsed.error.code == code  # type: ignore[attr-defined]


def test_beta_field_names_get_a_hint() -> None:
    err = ce.parse_client_event(
        _frame(type="session.update", session={"type": "realtime", "modalities": ["text"]})
    )
    assert isinstance(err, ClientEventError) and "output_modalities" in err.message


def test_an_integer_too_long_to_convert_is_refused_not_raised() -> None:
    # json.loads raises a plain ValueError (not JSONDecodeError) past 4300 digits.
    err = ce.parse_client_event('{"type": "input_audio_buffer.commit", "n": 1' + "0" * 5_000 + "}")
    assert isinstance(err, ClientEventError), err
    assert err.code == "number_too_long" and "4300" in err.message
    _sdk_accepts(ServerEvents(SequentialIds()).client_error(err))


def test_a_paired_surrogate_escape_is_fine() -> None:
    event = ce.parse_client_event(
        '{"type": "input_audio_buffer.append", "audio": "\\ud83d\\ude00"}'
    )
    assert isinstance(event, ce.InputAudioBufferAppend) and event.audio == "\U0001f600"


def test_doc_lists_every_ga_event_of_the_sdk() -> None:
    text = DOC.read_text()
    for union in (sdk.RealtimeClientEvent, sdk.RealtimeServerEvent):
        for model in typing.get_args(typing.get_args(union)[0]):
            (name,) = typing.get_args(model.model_fields["type"].annotation)
            assert f"`{name}`" in text, name


# ---------------------------------------------------------------- what a refused client reads


def _session_update(**session: Any) -> str:
    return _frame(type="session.update", session={"type": "realtime", **session})


def _turn_detection(**vad: Any) -> str:
    return _session_update(audio={"input": {"turn_detection": vad}})


REFUSALS = [
    # (frame, code, param, message)
    (b"{}", "invalid_frame", None,
     "Binary frames are not supported: send JSON events as text frames."),
    ("[1]", "invalid_type", None, "An event must be a JSON object."),
    ('{"type": ', "invalid_json", None, "Invalid JSON: Expecting value (line 1, column 10)."),
    (_frame(event_id="e3"), "missing_required_parameter", "type",
     "Missing required parameter: 'type'."),
    (_frame(type=7), "invalid_type", "type", "Invalid type for 'type': expected a string."),
    ('{"type": "session.update", "session": {"\\ud800": 1}}', "invalid_string", "session",
     "A key contains a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is"
     " not valid Unicode text."),
    ('{"type": "input_audio_buffer.append", "audio": "\\udc00"}', "invalid_string", "audio",
     "The string contains a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which"
     " is not valid Unicode text."),
    ("x" * (ce.MAX_FRAME_CHARS + 1), "frame_too_large", None,
     "The event is 1048577 characters long; the limit is 1048576. Send audio in smaller"
     " chunks."),
    ('{"type": "x", "n": 1' + "0" * 5_000 + "}", "number_too_long", None,
     "A number in the event has more than 4300 digits."),
    (_session_update(foo=1), "unknown_parameter", "session.foo",
     "Unknown parameter: 'session.foo'."),
    (_session_update(voice="ash"), "unknown_parameter", "session.voice",
     "Unknown parameter: 'session.voice'. This is a Realtime beta name: use"
     " 'audio.output.voice' (GA)."),
    # A beta name deeper down is not the beta field: no hint.
    (_session_update(audio={"input": {"temperature": 1}}), "unknown_parameter",
     "session.audio.input.temperature",
     "Unknown parameter: 'session.audio.input.temperature'."),
    (_frame(type="response.create", response={"modalities": ["text"]}), "unknown_parameter",
     "response.modalities",
     "Unknown parameter: 'response.modalities'. This is a Realtime beta name: use"
     " 'output_modalities' (GA)."),
    (_session_update(instructions=None), "invalid_type", "session.instructions",
     "Invalid type: null is not allowed here (leave the field out instead)."),
    (_session_update(max_output_tokens="5"), "invalid_type", "session.max_output_tokens",
     "Invalid type for 'session.max_output_tokens': input should be a valid integer."),
    (_session_update(max_output_tokens=5000), "integer_above_max_value",
     "session.max_output_tokens",
     "Invalid value for 'session.max_output_tokens': input should be less than or equal to"
     " 4096."),
    (_session_update(max_output_tokens=0), "integer_below_min_value",
     "session.max_output_tokens",
     "Invalid value for 'session.max_output_tokens': input should be greater than or equal"
     " to 1."),
    (_frame(type="conversation.item.truncate", item_id="i", content_index=16, audio_end_ms=0),
     "integer_above_max_value", "content_index",
     "Invalid value for 'content_index': input should be less than 16."),
    (_session_update(audio={"output": {"speed": 0.1}}), "decimal_below_min_value",
     "session.audio.output.speed",
     "Invalid value for 'session.audio.output.speed': input should be greater than or equal"
     " to 0.25."),
    (_turn_detection(threshold=0.5), "missing_required_parameter",
     "session.audio.input.turn_detection.type",
     "Missing required parameter: 'session.audio.input.turn_detection.type'."),
    (_turn_detection(type="push_to_talk"), "invalid_value",
     "session.audio.input.turn_detection.type",
     "Invalid value for 'session.audio.input.turn_detection.type': input tag 'push_to_talk'"
     " found using 'type' does not match any of the expected tags: 'server_vad',"
     " 'semantic_vad'."),
    # pydantic's message is quoted up to 200 characters: this one is exactly 200 ...
    (_turn_detection(type="v" * 99), "invalid_value", "session.audio.input.turn_detection.type",
     "Invalid value for 'session.audio.input.turn_detection.type': input tag '" + "v" * 99
     + "' found using 'type' does not match any of the expected tags: 'server_vad',"
     " 'semantic_vad'."),
    # ... and this one, 201, is cut.
    (_turn_detection(type="v" * 100), "invalid_value", "session.audio.input.turn_detection.type",
     "Invalid value for 'session.audio.input.turn_detection.type': input tag '" + "v" * 100
     + "' found using 'type' does not match any of the expected tags: 'server_vad',"
     " 'semantic_vad…."),
    (_session_update(tools=[WEATHER_TOOL, {"type": "mcp", "server_label": "x"}]),
     "unsupported_value", "session.tools[1].type",
     "MCP tools are not supported by this server; declare function tools."),
    (_session_update(tools=[WEATHER_TOOL, WEATHER_TOOL]), "invalid_value", "session.tools",
     "Duplicate tool name 'get_weather'."),
    (_session_update(output_modalities=["text", "audio"]), "invalid_value",
     "session.output_modalities",
     "output_modalities must be ['audio'] (speech with its transcript) or ['text']; the GA API"
     " does not allow both."),
    (_frame(type="session.update", session={"type": "transcription"}), "unsupported_value",
     "session.type", "Transcription sessions are not supported yet; use 'realtime'."),
    (_frame(type="conversation.item.create", item={"type": "message", "role": "user",
            "content": [{"type": "input_audio", "audio": "AAAA"}]}),
     "unsupported_value", "item.content[0].type",
     "Content of type 'input_audio' is not supported in conversation.item.create yet; send"
     " text ('input_text' for user and system, 'output_text' for assistant)."),
    (_frame(type="conversation.item.create", item={"type": "message", "role": "user",
            "content": []}),
     "array_below_min_length", "item.content",
     "Invalid value for 'item.content': list should have at least 1 item after validation,"
     " not 0."),
    (_frame(type="conversation.item.create", item={"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "a"}] * 17}),
     "array_above_max_length", "item.content",
     "Invalid value for 'item.content': list should have at most 16 items after validation,"
     " not 17."),
    (_frame(type="input_audio_buffer.append", event_id=""), "string_below_min_length",
     "event_id", "Invalid value for 'event_id': string should have at least 1 character."),
    (_frame(type="output_audio_buffer.clear"), "unsupported_event", "type",
     "output_audio_buffer.clear is for WebRTC and SIP connections; over a WebSocket the client"
     " owns playback: stop it and send conversation.item.truncate."),
]  # fmt: skip


@pytest.mark.parametrize(
    "frame,code,param,message", REFUSALS, ids=[f"{r[1]}-{i}" for i, r in enumerate(REFUSALS)]
)
def test_a_refused_client_reads_what_was_wrong(
    frame: str | bytes, code: str, param: str | None, message: str
) -> None:
    err = ce.parse_client_event(frame)
    assert isinstance(err, ClientEventError), err
    assert (err.code, err.param, err.message) == (code, param, message)


@pytest.mark.parametrize(
    "frame",
    [
        _frame(event_id="e9"),
        _frame(type=7, event_id="e9"),
        _frame(type="output_audio_buffer.clear", event_id="e9"),
        _frame(type="no.such.event", event_id="e9"),
        '{"event_id": "e9", "type": "input_audio_buffer.append", "audio": "\\udc00"}',
        _frame(type="input_audio_buffer.append", event_id="e9"),
    ],
)
def test_every_refusal_after_the_json_repeats_the_clients_event_id(frame: str) -> None:
    err = ce.parse_client_event(frame)
    assert isinstance(err, ClientEventError) and err.event_id == "e9"


@pytest.mark.parametrize(
    "event_id,repeated",
    [("e", "e"), ("e" * 512, "e" * 512), ("", None), ("e" * 513, None), (7, None)],
    ids=["1 char", "512 chars", "empty", "513 chars", "not a string"],
)
def test_an_event_id_is_repeated_if_it_is_1_to_512_characters(
    event_id: Any, repeated: str | None
) -> None:
    err = ce.parse_client_event(_frame(type="input_audio_buffer.append", event_id=event_id))
    assert isinstance(err, ClientEventError)
    assert err.event_id == repeated


def test_an_unknown_event_type_is_shown_up_to_64_characters_with_the_supported_ones() -> None:
    err = ce.parse_client_event(_frame(type="t" * 100))
    assert isinstance(err, ClientEventError)
    supported = (
        "'session.update', 'input_audio_buffer.append', 'input_audio_buffer.commit',"
        " 'input_audio_buffer.clear', 'conversation.item.create', 'conversation.item.retrieve',"
        " 'conversation.item.delete', 'conversation.item.truncate', 'response.create',"
        " 'response.cancel'"
    )
    assert err.message == f"Invalid value: '{'t' * 64}'. Supported values are: {supported}."
    # Non-ASCII is escaped, and cut at 64 characters as well.
    escaped = ce.parse_client_event(_frame(type="é" * 100))
    assert isinstance(escaped, ClientEventError)
    assert "\\xe9" * 64 in escaped.message and "\\xe9" * 65 not in escaped.message
    assert "é" not in escaped.message


def test_required_tool_choice_without_tools_is_refused_with_a_reason() -> None:
    patch = SessionPatch.model_validate({"type": "realtime", "tool_choice": "required"})
    err = apply_session_update(_session(), patch, event_id="evt_8")
    assert err == ClientEventError(
        "invalid_value",
        "tool_choice is 'required' but there are no tools.",
        "session.tool_choice",
        "evt_8",
    )
    named = SessionPatch.model_validate(
        {"type": "realtime", "tool_choice": {"type": "function", "name": "nope"}}
    )
    err = apply_session_update(_session(), named)
    assert isinstance(err, ClientEventError)
    assert err.message == "tool_choice names the function 'nope', which is not among the tools."


def test_a_default_session_has_no_instructions() -> None:
    assert default_session("sess_1", model="m", voice="marin").instructions == ""


# ---------------------------------------------------------------- items, field by field


def test_server_items_from_helpers() -> None:
    assert user_audio_message("item_1", "Hi.", "incomplete").model_dump() == {
        "id": "item_1",
        "object": "realtime.item",
        "type": "message",
        "status": "incomplete",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": "Hi."}],
    }
    assert user_audio_message("item_1").content[0].model_dump() == {
        "type": "input_audio",
        "transcript": None,
    }
    text = assistant_message("item_2", "text", "Sunny.", "incomplete").model_dump()
    assert (text["status"], text["role"]) == ("incomplete", "assistant")
    assert text["content"] == [{"type": "output_text", "text": "Sunny."}]
    audio = assistant_message("item_2", "audio", "Sunny.").model_dump()
    assert audio["status"] == "completed"
    assert audio["content"] == [{"type": "output_audio", "transcript": "Sunny."}]
    empty = assistant_message("item_3", "audio", None, "in_progress").model_dump()
    assert (empty["status"], empty["content"]) == ("in_progress", [])
    assert assistant_message("item_3", "text").status == "completed"


def _created_item(item: dict[str, Any], item_id: str = "item_5") -> dict[str, Any]:
    event = ce.parse_client_event(_frame(type="conversation.item.create", item=item))
    assert isinstance(event, ce.ConversationItemCreate), event
    result: dict[str, Any] = item_from_input(event.item, item_id).model_dump()
    return result


def test_client_items_keep_every_field() -> None:
    call = {"type": "function_call", "call_id": "call_7", "name": "get_weather",
            "arguments": '{"city":"Paris"}'}  # fmt: skip
    assert _created_item(call) == {
        "id": "item_5",
        "object": "realtime.item",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_7",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    output = {"type": "function_call_output", "call_id": "call_7", "output": '{"temp_c":24}'}
    assert _created_item(output, "item_6") == {
        "id": "item_6",
        "object": "realtime.item",
        "type": "function_call_output",
        "status": "completed",
        "call_id": "call_7",
        "output": '{"temp_c":24}',
    }
    said = {"type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": "Sunny."},
                        {"type": "output_text", "text": " 24 degrees."}]}  # fmt: skip
    assert _created_item(said)["content"] == [
        {"type": "output_text", "text": "Sunny."},
        {"type": "output_text", "text": " 24 degrees."},
    ]
    system = {"type": "message", "role": "system",
              "content": [{"type": "input_text", "text": "Be brief."}]}  # fmt: skip
    made = _created_item(system)
    assert (made["role"], made["content"]) == (
        "system",
        [{"type": "input_text", "text": "Be brief."}],
    )


def test_fields_that_cannot_be_honoured_are_refused_only_when_set() -> None:
    err = ce.parse_client_event(_frame(type="response.create", response={"input": []}))
    assert isinstance(err, ClientEventError)
    assert (err.code, err.param, err.message) == (
        "unsupported_parameter",
        "response.input",
        "A custom 'input' context is not supported yet.",
    )
    err = ce.parse_client_event(_session_update(prompt={"id": "pmpt_1"}))
    assert isinstance(err, ClientEventError)
    assert (err.code, err.param, err.message) == (
        "unsupported_parameter",
        "session.prompt",
        "Stored prompts are not supported; send 'instructions'.",
    )
    assert isinstance(ce.parse_client_event(_session_update(prompt=None)), ce.SessionUpdate)
    # The validator factory itself (the models call it once, at import).
    check = unsupported_if_set("Not here.")
    assert check(None) is None
    with pytest.raises(PydanticCustomError) as e:
        check(0)
    assert (e.value.type, e.value.message()) == ("unsupported_parameter", "Not here.")
