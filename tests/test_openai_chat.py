"""Server-sent events and chat.completion.chunk parsing (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.openai_chat import (
    ChatStreamError,
    ChatStreamParser,
    SseDecoder,
    SseEvent,
    parse_chunk,
)


def chunk(content: Any = None, *, role: str | None = None, finish: str | None = None) -> str:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None or role is None:
        delta["content"] = content
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [choice]})


def parse_all(text: str, pieces: int = 1) -> tuple[list[str], ChatStreamParser]:
    """Feed ``text`` in ``pieces`` roughly equal parts, then finish."""
    parser = ChatStreamParser()
    step = max(1, len(text) // pieces)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += parser.feed(text[i : i + step])
    out += parser.finish()
    return out, parser


# ------------------------------------------------------------------ SSE decoder


def test_sse_events_are_dispatched_on_blank_lines() -> None:
    decoder = SseDecoder()
    assert decoder.feed("data: a\n") == []
    assert decoder.feed("\n") == [SseEvent("a")]
    assert decoder.feed("data: b\n\ndata: c\n\n") == [SseEvent("b"), SseEvent("c")]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_sse_line_endings(newline: str) -> None:
    text = f"data: one{newline}{newline}data: two{newline}{newline}"
    assert SseDecoder().feed(text) == [SseEvent("one"), SseEvent("two")]
    decoder = SseDecoder()  # the same text one character at a time
    events = [e for ch in text for e in decoder.feed(ch)]
    assert events == [SseEvent("one"), SseEvent("two")]


def test_sse_crlf_split_across_pieces_is_one_line_end() -> None:
    decoder = SseDecoder()
    assert decoder.feed("data: a\r") == []
    assert decoder.feed("\n\r") == [SseEvent("a")]
    assert decoder.feed("\ndata: b\r\n\r\n") == [SseEvent("b")]


def test_sse_field_rules() -> None:
    text = (
        "\ufeff: a comment\n"
        "data:no-space\n\n"
        "data:  two spaces\n\n"
        "event: error\ndata: x\n\n"
        "id: 7\nretry: 10\nunknown: y\ndata: z\n\n"
        "data: first\ndata: second\n\n"
        "data\n\n"
        "id: only\n\n"
    )
    assert SseDecoder().feed(text) == [
        SseEvent("no-space"),
        SseEvent(" two spaces"),
        SseEvent("x", "error"),
        SseEvent("z"),
        SseEvent("first\nsecond"),
        SseEvent(""),  # a bare "data" line is an event with empty data
    ]


def test_sse_finish_flushes_an_unterminated_event() -> None:
    decoder = SseDecoder()
    assert decoder.feed("data: last") == []
    assert decoder.finish() == [SseEvent("last")]


def test_sse_line_length_is_bounded() -> None:
    decoder = SseDecoder(max_line_chars=100)
    decoder.feed("data: " + "x" * 90)
    with pytest.raises(WireFormatError):
        decoder.feed("x" * 20)


# ------------------------------------------------------------------ chunks


def test_parse_chunk_fields_and_extras() -> None:
    c = parse_chunk(
        '{"id":"c1","object":"chat.completion.chunk","model":"m","system_fingerprint":"f",'
        '"choices":[{"index":0,"delta":{"content":"Hi","reasoning_content":null},'
        '"finish_reason":null}],"usage":null}'
    )
    assert (c.id, c.model, c.content, c.finish_reason) == ("c1", "m", "Hi", None)


@pytest.mark.parametrize(
    "data",
    [
        '{"choices":[]}',
        '{"choices":[{"delta":{"role":"assistant"}}]}',
        '{"choices":[{"delta":{"content":null}}]}',
        '{"choices":[{"delta":{"content":""}}]}',
        '{"choices":[{"delta":{},"finish_reason":"stop"}]}',
        '{"object":"chat.completion.chunk"}',
    ],
)
def test_chunks_without_content(data: str) -> None:
    assert parse_chunk(data).content == ""


@pytest.mark.parametrize("data", ["not json", "[1, 2]", '{"choices": "nope"}', "null"])
def test_invalid_chunks(data: str) -> None:
    with pytest.raises(WireFormatError):
        parse_chunk(data)


@pytest.mark.parametrize(
    "data",
    [
        '{"error":{"message":"Rate limit","type":"rate_limit","code":429}}',
        '{"id":"x","choices":[{"delta":{"content":""},"finish_reason":"error"}],'
        '"error":{"code":502,"message":"Provider returned error"}}',
        '{"error":"plain text error"}',
    ],
)
def test_error_objects_raise_chat_stream_error(data: str) -> None:
    with pytest.raises(ChatStreamError) as info:
        parse_chunk(data)
    assert info.value.details is not None


# ------------------------------------------------------------------ whole streams

VLLM_LIKE = (
    ": OPENROUTER PROCESSING\n\n"
    f"data: {chunk('', role='assistant')}\n\n"
    f"data: {chunk('Hel')}\n\n"
    f"data:{chunk('lo wo')}\n\n"
    f"data: {chunk(None)}\n\n"
    '{"choices":[]}\n\n'  # a line without a field name: ignored
    "data:\n\n"  # an empty event: skipped
    'data: {"choices":[],"usage":{"total_tokens":3}}\n\n'
    f"data: {chunk('rld!')}\n\n"
    f"data: {chunk(None, finish='stop')}\n\n"
    "data: [DONE]\n\n"
)


@pytest.mark.parametrize("pieces", [1, 3, 17, len(VLLM_LIKE)])
def test_whole_stream_in_any_pieces(pieces: int) -> None:
    contents, parser = parse_all(VLLM_LIKE, pieces)
    assert contents == ["Hel", "lo wo", "rld!"]
    assert parser.done
    assert parser.finish_reason == "stop"


def test_everything_after_done_is_ignored() -> None:
    contents, parser = parse_all(f"data: {chunk('a')}\n\ndata: [DONE]\n\ndata: {chunk('b')}\n\n")
    assert contents == ["a"]
    assert parser.done


def test_stream_without_done_ends_at_finish() -> None:
    contents, parser = parse_all(f"data: {chunk('a')}\n\ndata: {chunk('b')}")
    assert contents == ["a", "b"]
    assert not parser.done


def test_error_event_type_raises() -> None:
    parser = ChatStreamParser()
    with pytest.raises(ChatStreamError):
        parser.feed('event: error\ndata: {"message": "overloaded"}\n\n')


def test_error_object_mid_stream_raises() -> None:
    parser = ChatStreamParser()
    assert parser.feed(f"data: {chunk('ok')}\n\n") == ["ok"]
    with pytest.raises(ChatStreamError):
        parser.feed('data: {"error": {"message": "boom"}}\n\n')


def test_broken_json_raises_wire_format_error() -> None:
    parser = ChatStreamParser()
    with pytest.raises(WireFormatError):
        parser.feed('data: {"choices": [\n\n')
