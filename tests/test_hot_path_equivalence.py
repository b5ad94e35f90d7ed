"""The per-frame fast paths added for capacity (issue 14) accept, refuse and build exactly what
the general paths do: the microphone append parser and the batched random ids."""

from __future__ import annotations

import json
import re

import pytest

from unmute_trio.protocol import browser, ids
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.openai_server_events import RandomIds

APPEND = "input_audio_buffer.append"


def general_parse(frame: str) -> object:
    """parse_client_event without the fast path: pydantic validation, then the length checks."""
    data = json.loads(frame)
    try:
        event = browser._CLIENT_ADAPTER.validate_python(data)
        browser._check_lengths(event)
    except (ValueError, WireFormatError) as e:  # pydantic's ValidationError is a ValueError
        return type(e)
    return event


@pytest.mark.parametrize(
    "event",
    [
        {"type": APPEND, "audio": "T2dnUw=="},
        {"type": APPEND, "audio": ""},
        {"type": APPEND, "audio": "T2dnUw==", "event_id": "mine"},
        {"event_id": "x" * browser.MAX_EVENT_ID_CHARS, "audio": "AAAA", "type": APPEND},
    ],
)
def test_plain_appends_take_the_fast_path_and_equal_the_general_one(event: dict) -> None:
    frame = json.dumps(event)
    assert browser._plain_append(json.loads(frame)) is not None
    fast = browser.parse_client_event(frame)
    slow = general_parse(frame)
    assert type(fast) is type(slow) is browser.InputAudioBufferAppend
    if "event_id" in event:
        assert fast == slow
    else:
        assert fast.model_dump(exclude={"event_id"}) == slow.model_dump(exclude={"event_id"})
        assert re.fullmatch(r"event_[A-Za-z0-9]{21}", fast.event_id)
    # What the session does with it is the same too: the same JSON (recordings, logs).
    assert json.loads(fast.model_dump_json()).keys() == json.loads(slow.model_dump_json()).keys()


@pytest.mark.parametrize(
    "event",
    [
        {"type": APPEND, "audio": 12},
        {"type": APPEND, "audio": None},
        {"type": APPEND},
        {"type": APPEND, "audio": "AAAA", "event_id": None},
        {"type": APPEND, "audio": "AAAA", "event_id": 7},
        {"type": APPEND, "audio": "AAAA", "event_id": "x" * (browser.MAX_EVENT_ID_CHARS + 1)},
        {"type": APPEND, "audio": "AAAA", "extra": 1},
        {"type": APPEND, "audio": ["AAAA"]},
    ],
)
def test_anything_else_goes_the_general_way(event: dict) -> None:
    frame = json.dumps(event)
    assert browser._plain_append(json.loads(frame)) is None
    try:
        result: object = browser.parse_client_event(frame)
    except WireFormatError:
        result = WireFormatError
    slow = general_parse(frame)
    if isinstance(slow, type):
        assert result is WireFormatError  # refused either way
    else:
        assert type(result) is type(slow)


def test_ids_are_distinct_letters_and_digits_across_batches() -> None:
    drawn = [ids.random_chars() for _ in range(3 * ids.BATCH + 7)]
    assert len(set(drawn)) == len(drawn)
    assert all(re.fullmatch(r"[A-Za-z0-9]{21}", d) for d in drawn)
    assert set("".join(drawn)) == set(ids.ALPHABET)
    assert re.fullmatch(r"item_[A-Za-z0-9]{21}", RandomIds().new_id("item"))
