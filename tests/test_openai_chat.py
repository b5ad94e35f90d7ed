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


# ------------------------------------------------------------------ edges, exactly


def test_a_bom_is_dropped_only_at_the_very_start_even_after_an_empty_piece() -> None:
    decoder = SseDecoder()
    assert decoder.feed("") == []
    assert decoder.feed("\ufeffdata: a\n\n") == [SseEvent("a")]
    # Later, a BOM is just a character: here it makes the field name unknown.
    assert decoder.feed("\ufeffdata: b\n\ndata: c\ufeff\n\n") == [SseEvent("c\ufeff")]


def test_only_the_lf_right_after_a_cr_pairs_with_it() -> None:
    decoder = SseDecoder()
    assert decoder.feed("data: a\r") == []
    assert decoder.feed("\ndata: b\n\n") == [SseEvent("a\nb")]  # CR LF: one line end
    decoder = SseDecoder()
    assert decoder.feed("data: a\n") == []
    assert decoder.feed("") == []
    assert decoder.feed("\ndata: b\n\n") == [SseEvent("a"), SseEvent("b")]  # LF LF: two


def test_line_and_event_limits_are_inclusive_and_say_so() -> None:
    decoder = SseDecoder(max_line_chars=10)
    assert decoder.feed("data: " + "x" * 4) == []  # a 10-character unterminated line
    with pytest.raises(WireFormatError) as e:
        decoder.feed("x")
    assert e.value.message == "Invalid event stream: a line exceeds 10"
    decoder = SseDecoder(max_line_chars=10)
    assert decoder.feed("data: 12345\ndata: 12345\n\n") == [SseEvent("12345\n12345")]
    with pytest.raises(WireFormatError) as e:
        decoder.feed("data: 12345\ndata: 123456\n")
    assert e.value.message == "Invalid event stream: an event exceeds 10 characters"


def test_chunk_errors_say_what_was_wrong() -> None:
    with pytest.raises(WireFormatError) as e:
        parse_chunk("not json")
    assert e.value.message.startswith("Invalid chat completion chunk: not JSON (Expecting value")
    with pytest.raises(WireFormatError) as e:
        parse_chunk("[" + "1," * 100 + "1]")
    shown = repr(("[" + "1," * 100)[:80])
    assert e.value.message == f"Invalid chat completion chunk: expected an object: {shown}"
    with pytest.raises(WireFormatError) as e:
        parse_chunk('{"choices": "nope"}')
    assert e.value.message == "Invalid chat completion chunk: 1 validation error(s)"


@pytest.mark.parametrize(
    "data,message",
    [
        ('{"error":{"message":"Rate limit","code":429}}', "LLM server error: Rate limit"),
        ('{"error":"plain text error"}', "LLM server error: plain text error"),
        ('{"error":{"code":502}}', "LLM server error: None"),
    ],
)
def test_an_error_object_is_quoted(data: str, message: str) -> None:
    with pytest.raises(ChatStreamError) as e:
        parse_chunk(data)
    assert e.value.message == message
    assert e.value.details == json.loads(data)["error"]


def test_an_error_event_is_quoted_up_to_200_characters() -> None:
    parser = ChatStreamParser()
    body = "o" * 300
    with pytest.raises(ChatStreamError) as e:
        parser.feed(f"event: error\ndata: {body}\n\n")
    assert e.value.message == "LLM server error: " + "o" * 200
    assert e.value.details == body


def test_a_reply_without_finish_reason_usage_or_calls() -> None:
    contents, parser = parse_all(f"data: {chunk('a')}\n\n")
    assert contents == ["a"]
    assert (parser.done, parser.finish_reason, parser.usage, parser.tool_calls) == (
        False,
        None,
        None,
        [],
    )


def test_usage_and_finish_reason_keep_the_last_seen() -> None:
    text = (
        'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}\n\n'
        f"data: {chunk('a', finish='length')}\n\n"
        'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
        f"data: {chunk('b')}\n\n"
    )
    contents, parser = parse_all(text)
    assert contents == ["a", "b"]
    assert parser.finish_reason == "length"
    assert parser.usage is not None
    assert (parser.usage.prompt_tokens, parser.usage.completion_tokens) == (5, 2)


def test_after_done_later_pieces_give_nothing() -> None:
    parser = ChatStreamParser()
    assert parser.feed(f"data: {chunk('a')}\n\ndata: [DONE]\n\n") == ["a"]
    assert parser.feed(f"data: {chunk('b')}\n\n") == []
    assert parser.finish() == []


def _call_chunk(*calls: dict[str, Any]) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": list(calls)}}]})


def test_streamed_tool_calls_are_assembled_by_index() -> None:
    text = "".join(
        f"data: {c}\n\n"
        for c in [
            _call_chunk({"index": 1, "id": "call_b", "function": {"name": "b", "arguments": ""}}),
            _call_chunk({"index": 0, "id": "call_a", "function": {"name": "a", "arguments": "{"}}),
            _call_chunk({"index": 0, "function": {"arguments": '"x":1'}}),
            # A repeated id or name does not replace the first one.
            _call_chunk({"index": 0, "id": "call_z", "function": {"name": "z", "arguments": "}"}}),
            # A piece with no function yet (index 2) does not stop the pieces after it.
            _call_chunk({"index": 2}, {"index": 1, "function": {"arguments": "{}"}}),
        ]
    )
    contents, parser = parse_all(text)
    assert contents == []
    assert [(c.call_id, c.name, c.arguments) for c in parser.tool_calls] == [
        ("call_a", "a", '{"x":1}'),
        ("call_b", "b", "{}"),
        ("", "", ""),
    ]


def test_an_id_or_name_arriving_after_the_first_piece_is_taken() -> None:
    parser = ChatStreamParser()
    parser.feed(f"data: {_call_chunk({'index': 0, 'function': {'arguments': '{'}})}\n\n")
    parser.feed(f"data: {_call_chunk({'index': 0, 'id': 'c', 'function': {'name': 'n'}})}\n\n")
    assert [(c.call_id, c.name, c.arguments) for c in parser.tool_calls] == [("c", "n", "{")]


def test_at_most_16_tool_calls_in_one_reply() -> None:
    parser = ChatStreamParser()
    for i in range(16):
        parser.feed(f"data: {_call_chunk({'index': i, 'id': f'c{i}'})}\n\n")
    assert len(parser.tool_calls) == 16
    parser.feed(f"data: {_call_chunk({'index': 3, 'function': {'arguments': '{}'}})}\n\n")
    with pytest.raises(WireFormatError) as e:
        parser.feed(f"data: {_call_chunk({'index': 16, 'id': 'c16'})}\n\n")
    assert e.value.message == "more than 16 tool calls in one reply"


def test_tool_call_arguments_are_bounded_inclusively() -> None:
    parser = ChatStreamParser()
    half = "x" * 32_768
    for _ in range(2):
        parser.feed(f"data: {_call_chunk({'index': 0, 'function': {'arguments': half}})}\n\n")
    assert len(parser.tool_calls[0].arguments) == 65_536
    with pytest.raises(WireFormatError) as e:
        parser.feed(f"data: {_call_chunk({'index': 0, 'function': {'arguments': 'x'}})}\n\n")
    assert e.value.message == "tool call arguments longer than 65536 characters"
