"""The Unmute (browser) dialect's codec, unit by unit: what each refusal says, both sides of
each limit, and the defaults of the events (protocol.browser, docs/protocol.md).

``tests/test_hostile_clients.py`` sends the same hostile frames through a real server; these
check the codec alone, exactly: the message a client reads and the ``details`` it gets.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from unmute_trio.protocol import browser, json_limits
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.instructions import ConstantInstructions

EVENT_ID = re.compile(r"event_[A-Za-z0-9]{21}")


def session_update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"allow_recording": False, **session}}


def refusal(frame: str | bytes) -> WireFormatError:
    with pytest.raises(WireFormatError) as e:
        browser.parse_client_event(frame)
    return e.value


# ---------------------------------------------------------------- ids


def test_event_ids_are_event_and_21_letters_or_digits_and_distinct() -> None:
    ids = {browser.random_event_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(EVENT_ID.fullmatch(i) for i in ids)
    # All 62 characters are used, and only they.
    letters = set("".join(i[len("event_") :] for i in ids))
    assert len(letters) == 62 and letters <= set(browser._ID_ALPHABET)
    event = browser.parse_client_event('{"type": "input_audio_buffer.append", "audio": ""}')
    assert EVENT_ID.fullmatch(event.event_id)
    assert EVENT_ID.fullmatch(browser.ResponseAudioDone().event_id)


# ---------------------------------------------------------------- frames that are not events


def test_a_binary_frame_is_refused_with_a_hint() -> None:
    error = refusal(b'{"type": "input_audio_buffer.append", "audio": ""}')
    assert error.message == "Binary frames are not supported: send JSON events as text frames"
    assert error.details is None


def test_invalid_json_says_where() -> None:
    error = refusal('{"type": "session.update",')
    assert error.message.startswith("Invalid JSON: Expecting property name")
    assert error.details == {"position": 26}


@pytest.mark.parametrize("frame,got", [("[1, 2]", "list"), ("3", "int"), ('"x"', "str")])
def test_an_event_must_be_an_object(frame: str, got: str) -> None:
    error = refusal(frame)
    assert error.message == "An event must be a JSON object"
    assert error.details == {"got": got}


def test_an_invalid_event_counts_its_errors_without_echoing_the_input() -> None:
    error = refusal('{"type": "unmute.input_audio_buffer.append_anonymized"}')
    assert error.message == "Invalid client event: 1 validation error(s)"
    assert error.details == [
        {"type": "missing", "loc": ("unmute.input_audio_buffer.append_anonymized",
                                    "number_of_samples"), "msg": "Field required"},
    ]  # fmt: skip
    two = refusal('{"type": "session.update", "session": {"voice": 3}}')
    assert two.message == "Invalid client event: 2 validation error(s)"
    assert "input" not in two.details[0] and "url" not in two.details[0]


# ---------------------------------------------------------------- json_limits, in this dialect


def test_the_frame_size_limit_is_inclusive() -> None:
    empty = '{"type": "input_audio_buffer.append", "audio": ""}'
    padding = json_limits.MAX_FRAME_CHARS - len(empty)
    at_limit = empty[:-2] + "A" * padding + '"}'
    assert len(at_limit) == json_limits.MAX_FRAME_CHARS == 1_048_576
    event = browser.parse_client_event(at_limit)
    assert isinstance(event, browser.InputAudioBufferAppend) and len(event.audio) == padding
    error = refusal(at_limit[:-2] + 'A"}')
    assert error.message == (
        "Invalid client event: the event is 1048577 characters long; the limit is 1048576."
        " Send audio in smaller chunks"
    )
    assert error.details == [
        {
            "type": "frame_too_large",
            "loc": [],
            "msg": "The event is 1048577 characters long; the limit is 1048576."
            " Send audio in smaller chunks.",
        }
    ]


def _nested(depth: int) -> str:
    """An event whose ``extra`` field makes the whole frame ``depth`` levels deep."""
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return '{"type": "input_audio_buffer.append", "audio": "", "extra": ' + inner + "}"


def test_the_nesting_limit_is_inclusive_and_the_refusal_has_no_path() -> None:
    assert isinstance(browser.parse_client_event(_nested(64)), browser.InputAudioBufferAppend)
    error = refusal(_nested(65))
    assert error.message == (
        "Invalid client event: the event nests deeper than 64 levels of objects and arrays"
    )
    assert error.details == [
        {
            "type": "nesting_too_deep",
            "loc": [],
            "msg": "The event nests deeper than 64 levels of objects and arrays.",
        }
    ]


def test_a_huge_integer_is_refused() -> None:
    error = refusal('{"type": "input_audio_buffer.append", "audio": "", "n": 1' + "0" * 5000 + "}")
    assert error.message == "Invalid client event: a number in the event has more than 4300 digits"
    assert error.details[0]["type"] == "number_too_long" and error.details[0]["loc"] == []


def test_a_lone_surrogate_is_refused_at_its_path() -> None:
    frame = '{"type": "session.update", "session": {"voice": "\\ud800", "allow_recording": false}}'
    error = refusal(frame)
    assert error.message == (
        "Invalid client event (at 'session.voice'): the string contains a lone UTF-16 surrogate"
        " (an unpaired \\ud800-\\udfff escape), which is not valid Unicode text"
    )
    assert error.details == [
        {
            "type": "invalid_string",
            "loc": ["session", "voice"],
            "msg": json_limits.surrogate_message("The string"),
        }
    ]


@pytest.mark.parametrize("length,shown", [(200, True), (201, False)])
def test_a_path_is_quoted_up_to_200_characters(length: int, shown: bool) -> None:
    key = "k" * length
    error = refusal('{"type": "session.update", "' + key + '": "\\udc00"}')
    if shown:
        assert error.message.startswith(f"Invalid client event (at '{key}'): the string")
        assert error.details[0]["loc"] == [key]
    else:
        assert error.message.startswith("Invalid client event: the string contains")
        assert error.details[0]["loc"] == []


# ---------------------------------------------------------------- string limits


@pytest.mark.parametrize(
    "path,limit,make",
    [
        (["event_id"], 512, lambda s: {**session_update(), "event_id": s}),
        (["session", "voice"], 256, lambda s: session_update(voice=s)),
        (
            ["session", "instructions", "text"],
            20_000,
            lambda s: session_update(instructions={"type": "constant", "text": s}),
        ),
    ],
    ids=["event_id", "voice", "instructions"],
)
def test_client_strings_are_limited_inclusively(path: list[str], limit: int, make: Any) -> None:
    event = browser.parse_client_event(json.dumps(make("x" * limit)))
    assert isinstance(event, browser.SessionUpdate)
    error = refusal(json.dumps(make("x" * (limit + 1))))
    field = ".".join(path)
    assert error.message == (
        f"Invalid client event: '{field}' is {limit + 1} characters long; the limit is {limit}"
    )
    assert error.details == [
        {"type": "string_too_long", "loc": path,
         "msg": f"String should have at most {limit} characters"},
    ]  # fmt: skip


def test_the_limits_are_those_documented() -> None:
    assert browser.MAX_EVENT_ID_CHARS == 512
    assert browser.MAX_VOICE_CHARS == 256
    assert browser.MAX_INSTRUCTIONS_CHARS == 20_000


def test_only_constant_instructions_carry_a_text_to_limit() -> None:
    event = browser.parse_client_event(
        json.dumps(session_update(instructions={"type": "smalltalk", "language": "fr"}))
    )
    assert isinstance(event, browser.SessionUpdate) and event.session.voice is None
    constant = browser.parse_client_event(
        json.dumps(session_update(instructions={"type": "constant", "text": "Be a pirate."}))
    )
    assert isinstance(constant, browser.SessionUpdate)
    assert isinstance(constant.session.instructions, ConstantInstructions)


# ---------------------------------------------------------------- server events


def test_defaults_of_the_session_and_response() -> None:
    config = browser.SessionConfig(allow_recording=True)
    assert (config.instructions, config.voice) == (None, None)
    response = browser.Response(status="in_progress", voice="v")
    assert json.loads(browser.encode_event(browser.ResponseCreated(response=response)))[
        "response"
    ] == {"object": "realtime.response", "status": "in_progress", "voice": "v", "chat_history": []}


def test_an_invalid_server_event_is_a_wire_format_error() -> None:
    with pytest.raises(WireFormatError) as e:
        browser.parse_server_event('{"type": "response.text.delta", "event_id": "e"}')
    assert e.value.message == "Invalid server event: 1 validation error(s)"
    assert e.value.details[0]["loc"] == ("response.text.delta", "delta")


def test_an_invalid_request_error_carries_the_refusal() -> None:
    refused = refusal("[]")
    event = json.loads(browser.encode_event(browser.invalid_request_error(refused)))
    assert EVENT_ID.fullmatch(event.pop("event_id"))
    assert event == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "code": None,
            "message": "An event must be a JSON object",
            "param": None,
            "details": {"got": "list"},
        },
    }


def test_an_error_may_have_a_code() -> None:
    error = browser.make_error("fatal", "The LLM is down.", code="llm_unavailable")
    assert error.error.model_dump() == {
        "type": "fatal",
        "code": "llm_unavailable",
        "message": "The LLM is down.",
        "param": None,
        "details": None,
    }


# ---------------------------------------------------------------- json_limits, directly


def _objects(depth: int) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for _ in range(depth - 1):
        tree = {"a": tree}
    return tree


def _arrays(depth: int) -> list[Any]:
    tree: list[Any] = []
    for _ in range(depth - 1):
        tree = [tree]
    return tree


@pytest.mark.parametrize("make", [_objects, _arrays], ids=["objects", "arrays"])
def test_check_tree_allows_64_levels_of_objects_or_arrays_and_no_more(make: Any) -> None:
    json_limits.check_tree(make(64))
    with pytest.raises(json_limits.JsonLimitError) as e:
        json_limits.check_tree(make(65))
    assert (e.value.code, e.value.path) == ("nesting_too_deep", ())
    assert str(e.value) == e.value.message == json_limits.nesting_message()


def test_a_key_with_a_lone_surrogate_is_refused_at_its_objects_path() -> None:
    with pytest.raises(json_limits.JsonLimitError) as e:
        json_limits.check_tree({"session": {"tools": [{"ok": 1, "\ud800": 2}]}})
    assert (e.value.code, e.value.path) == ("invalid_string", ("session", "tools", 0))
    assert e.value.message == (
        "A key contains a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is"
        " not valid Unicode text."
    )
    assert str(e.value) == e.value.message


def test_details_are_type_loc_and_msg_only() -> None:
    """Pydantic's context and input are left out of what the client gets back."""
    frame = json.dumps(session_update(instructions={"type": "smalltalk", "language": "de"}))
    assert refusal(frame).details == [
        {
            "type": "literal_error",
            "loc": ("session.update", "session", "instructions", "smalltalk", "language"),
            "msg": "Input should be 'en', 'fr', 'en/fr' or 'fr/en'",
        }
    ]


def test_an_id_is_drawn_even_when_the_pool_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool is filled on demand (at the first id of a process, and every BATCH ids)."""
    from unmute_trio.protocol import ids

    monkeypatch.setattr(ids, "_pool", [])
    assert re.fullmatch(r"[A-Za-z0-9]{21}", ids.random_chars())
    assert len(ids._pool) == ids.BATCH - 1
