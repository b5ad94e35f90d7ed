"""OpenAI-compatible streamed chat completions: server-sent events and chunk models. Pure.

``POST {base}/v1/chat/completions`` with ``"stream": true`` answers ``text/event-stream``:
``data: {json chat.completion.chunk}`` events separated by blank lines, ending with
``data: [DONE]``. Servers differ in the details, all of which are accepted here:

- ``data:`` with or without the space after the colon, CR / LF / CRLF line ends, a leading BOM;
- comment lines starting with ``:`` (OpenRouter's ``: OPENROUTER PROCESSING`` keep-alives) and
  events with empty data;
- chunks with an empty ``choices`` list (keep-alives, the final ``usage`` chunk);
- a first chunk carrying only ``role``, and ``content`` that is ``null`` or ``""`` (llama.cpp);
- an ``error`` object instead of (or inside) a chunk, which raises :class:`ChatStreamError`;
- ``tool_calls`` pieces in the deltas (OpenAI, vLLM, llama.cpp ``--jinja``): gathered into
  whole :class:`ToolCall` objects, at most :data:`MAX_TOOL_CALLS` per reply.

Line lengths are capped (:data:`MAX_LINE_CHARS`) so a broken server cannot grow memory without
limit; anything that is not valid SSE/JSON raises :class:`WireFormatError`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from unmute_trio.protocol.errors import WireFormatError

DONE_SENTINEL = "[DONE]"
# Far above any real chunk (a few hundred bytes), small enough to bound a runaway line.
MAX_LINE_CHARS = 1 << 20
_LINE_END = re.compile(r"\r\n|\r|\n")
MAX_TOOL_CALLS = 16
MAX_TOOL_ARGUMENT_CHARS = 65_536


class ChatStreamError(WireFormatError):
    """The server reported an error inside the stream (an ``error`` object).

    ``details`` holds the error object as sent (usually ``{"message", "type", "code"}``).
    """


# ------------------------------------------------------------------ server-sent events


@dataclasses.dataclass(frozen=True)
class SseEvent:
    """One dispatched event: its ``event`` type (``"message"`` by default) and its data."""

    data: str
    event: str = "message"


class SseDecoder:
    """Incremental ``text/event-stream`` decoder following the WHATWG parsing rules.

    ``feed(text)`` takes decoded text in arbitrary pieces and returns the events completed by
    it; ``finish()`` flushes an event left without its closing blank line at end of stream
    (lenient: the standard would drop it, but a server closing right after its last line
    clearly meant it).
    """

    def __init__(self, *, max_line_chars: int = MAX_LINE_CHARS) -> None:
        self._max_line_chars = max_line_chars
        self._partial_line = ""
        self._after_cr = False  # a CR ended the previous piece: a LF right after it is its pair
        self._at_start = True
        self._data_lines: list[str] = []
        self._event_type = ""

    def feed(self, text: str) -> list[SseEvent]:
        if self._at_start and text:
            text = text.removeprefix("\ufeff")
            self._at_start = False
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across two pieces
        self._after_cr = False
        if not text:
            return []
        lines = _LINE_END.split(self._partial_line + text)
        # The last element is an unterminated line ("" when the text ended with a line end).
        self._partial_line = lines.pop()
        self._after_cr = text.endswith("\r")
        if len(self._partial_line) > self._max_line_chars:
            raise WireFormatError(f"Invalid event stream: a line exceeds {self._max_line_chars}")
        events: list[SseEvent] = []
        for line in lines:
            self._process_line(line, events)
        return events

    def finish(self) -> list[SseEvent]:
        events: list[SseEvent] = []
        if self._partial_line:
            self._process_line(self._partial_line, events)
            self._partial_line = ""
        self._process_line("", events)
        return events

    def _process_line(self, line: str, events: list[SseEvent]) -> None:
        if line == "":
            if self._data_lines:
                events.append(SseEvent("\n".join(self._data_lines), self._event_type or "message"))
            self._data_lines = []
            self._event_type = ""
            return
        if line.startswith(":"):
            return  # comment / keep-alive
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data_lines.append(value)
            if sum(len(d) for d in self._data_lines) > self._max_line_chars:
                raise WireFormatError(
                    f"Invalid event stream: an event exceeds {self._max_line_chars} characters"
                )
        elif field == "event":
            self._event_type = value
        # "id", "retry" and unknown fields carry nothing we use.


# ------------------------------------------------------------------ chunk models


class _Lenient(BaseModel):
    # Servers add fields freely (logprobs, usage, system_fingerprint, reasoning_content...).
    model_config = ConfigDict(extra="ignore")


class ToolCallFunctionDelta(_Lenient):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Lenient):
    """A piece of a streamed tool call: the first piece of each call (by ``index``) has its
    ``id`` and function ``name``, later ones add to ``arguments``."""

    index: int = 0
    id: str | None = None
    function: ToolCallFunctionDelta | None = None


class ChatDelta(_Lenient):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


@dataclasses.dataclass
class ToolCall:
    """A whole function call the LLM asked for; ``call_id`` may be empty if the server sent
    none (the caller names it then)."""

    call_id: str
    name: str
    arguments: str = ""


@dataclasses.dataclass
class ReplyOutcome:
    """How a streamed reply ended, filled in once it is complete: the function calls the LLM
    asked for, why it stopped (``"stop"``, ``"length"``, ``"tool_calls"``...) and the token
    counts when the server sent them."""

    tool_calls: list[ToolCall] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ChatChoice(_Lenient):
    index: int = 0
    delta: ChatDelta = ChatDelta()
    finish_reason: str | None = None


class ChatUsage(_Lenient):
    """Token counts, in the last chunk of a stream (llama.cpp always; OpenAI and vLLM when the
    request asks with ``stream_options``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatCompletionChunk(_Lenient):
    """One ``chat.completion.chunk``; only the fields the client reads are modelled."""

    id: str | None = None
    object: str | None = None
    model: str | None = None
    choices: list[ChatChoice] = []
    usage: ChatUsage | None = None

    @property
    def content(self) -> str:
        """The text of the first choice's delta, ``""`` when there is none."""
        if not self.choices:
            return ""
        return self.choices[0].delta.content or ""

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None


def parse_chunk(data: str) -> ChatCompletionChunk:
    """Parse the data of one event (not ``[DONE]``) into a chunk.

    Raises :class:`ChatStreamError` for an error object, :class:`WireFormatError` otherwise.
    """
    try:
        obj: Any = json.loads(data)
    except ValueError as e:
        raise WireFormatError(f"Invalid chat completion chunk: not JSON ({e})") from e
    if not isinstance(obj, dict):
        raise WireFormatError(f"Invalid chat completion chunk: expected an object: {data[:80]!r}")
    error = obj.get("error")
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise ChatStreamError(f"LLM server error: {message}", details=error)
    try:
        return ChatCompletionChunk.model_validate(obj)
    except ValidationError as e:
        raise WireFormatError.from_validation("chat completion chunk", e) from e


class ChatStreamParser:
    """Event stream text in, non-empty content deltas out.

    ``done`` becomes true at ``data: [DONE]``; everything after it is ignored (the client still
    reads to the end of the body so the connection can be reused). ``finish_reason`` keeps the
    last one seen (``"stop"``, ``"length"``...), ``usage`` the last token counts.
    """

    def __init__(self, *, max_line_chars: int = MAX_LINE_CHARS) -> None:
        self._sse = SseDecoder(max_line_chars=max_line_chars)
        self.done = False
        self.finish_reason: str | None = None
        self.usage: ChatUsage | None = None
        self._calls: dict[int, ToolCall] = {}

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The function calls streamed so far, in index order."""
        return [self._calls[i] for i in sorted(self._calls)]

    def feed(self, text: str) -> list[str]:
        return self._contents(self._sse.feed(text))

    def finish(self) -> list[str]:
        return self._contents(self._sse.finish())

    def _contents(self, events: list[SseEvent]) -> list[str]:
        contents: list[str] = []
        for event in events:
            if self.done:
                break
            if event.event == "error":
                raise ChatStreamError(f"LLM server error: {event.data[:200]}", details=event.data)
            data = event.data.strip()
            if not data:
                continue  # an empty event (some servers' keep-alive)
            if data == DONE_SENTINEL:
                self.done = True
                break
            chunk = parse_chunk(event.data)
            if chunk.finish_reason is not None:
                self.finish_reason = chunk.finish_reason
            if chunk.usage is not None:
                self.usage = chunk.usage
            if chunk.content:
                contents.append(chunk.content)
            if chunk.choices and chunk.choices[0].delta.tool_calls:
                self._add_tool_calls(chunk.choices[0].delta.tool_calls)
        return contents

    def _add_tool_calls(self, pieces: list[ToolCallDelta]) -> None:
        for piece in pieces:
            call = self._calls.get(piece.index)
            if call is None:
                if len(self._calls) >= MAX_TOOL_CALLS:
                    raise WireFormatError(f"more than {MAX_TOOL_CALLS} tool calls in one reply")
                call = self._calls[piece.index] = ToolCall(call_id="", name="")
            if piece.id and not call.call_id:
                call.call_id = piece.id
            function = piece.function
            if function is None:
                continue
            if function.name and not call.name:
                call.name = function.name
            if function.arguments:
                call.arguments += function.arguments
                if len(call.arguments) > MAX_TOOL_ARGUMENT_CHARS:
                    raise WireFormatError(
                        f"tool call arguments longer than {MAX_TOOL_ARGUMENT_CHARS} characters"
                    )
