"""A simulated OpenAI-compatible LLM server (the subset Unmute uses, docs/services.md).

- ``GET /v1/models`` → ``{"object": "list", "data": [{"id": ...}, ...]}``.
- ``POST /v1/chat/completions`` with ``"stream": true`` → ``text/event-stream`` shaped like
  vLLM's and OpenRouter's: a ``:`` comment line at once (OpenRouter-style keep-alive), then after
  ``ttft_s`` a role-only chunk, content chunks at ``tokens_per_s`` (3-character pieces, so words
  are split across chunks), a chunk with ``finish_reason: "stop"`` (``"length"`` when
  ``max_tokens`` cut the reply; a token is a 3-character piece), a ``usage`` chunk with empty
  ``choices`` (prompt tokens counted the same way), and ``data: [DONE]``. With
  ``truncate_after_tokens`` = N the body ends after N content chunks, cleanly but with no
  ``finish_reason`` chunk, no ``usage`` and no ``[DONE]`` (a reply cut short upstream).
- ``"stream": false`` (or absent) gets a minimal ``chat.completion`` object after ``ttft_s``, so
  ad-hoc ``curl`` checks work; Unmute itself only streams.
- ``GET /health`` → 200 (vLLM has it).
- Function calling: when the request has ``tools`` and the last message is a user message
  listed in ``tool_calls``, the reply is that call, streamed as OpenAI and vLLM do (a first
  ``tool_calls`` delta with ``id``, ``type`` and the function ``name``, then the ``arguments``
  in pieces, then ``finish_reason: "tool_calls"``). After a ``tool`` message the reply is the
  ``replies`` entry for its content, else "The result is <content>.".

The reply depends only on the last user message: an exact entry of ``replies``, else
:func:`default_reply` (a greeting, an echo with a follow-up question, and a goodbye ending in
``"Bye!"`` when the user says bye). Errors use OpenAI's ``{"error": {...}}`` shape: 401 without
the right ``Authorization: Bearer`` when ``api_key`` is set, 400 for a malformed body, 404 for an
unknown model, ``fail_status`` to force a failure.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import math
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from unmute_trio.testing.sim_base import ServedSimulator

# Enough history for a test to inspect a whole conversation; old entries are dropped.
MAX_RECORDED_REQUESTS = 256
_TOKEN = re.compile(r"\s*\S{1,3}")
_BYE = re.compile(r"\bbye\b", re.IGNORECASE)


@dataclasses.dataclass
class LlmSimConfig:
    model: str = "sim-llm"
    models: list[str] | None = None  # the list /v1/models shows; None means [model]
    ttft_s: float = 0.15
    tokens_per_s: float = 50.0  # math.inf sends all tokens at once
    replies: Mapping[str, str] | None = None  # exact last user message → reply
    # exact last user message → (function name, arguments), answered when tools are given
    tool_calls: Mapping[str, tuple[str, dict[str, Any]]] | None = None
    api_key: str | None = None  # when set, requests need "Authorization: Bearer <api_key>"
    fail_status: int | None = None  # when set, chat completions answer this HTTP status
    # when set, a streamed reply's body ends after this many content chunks, with no
    # finish_reason chunk and no [DONE] (as a server or proxy that cut the stream short)
    truncate_after_tokens: int | None = None
    # After [DONE], keep the body open this long, sending an SSE comment (": keep-alive")
    # every 0.1 s, as some proxies and servers do; and first send this many bytes of
    # comment lines at once (a misbehaving tail). The client must end the reply at [DONE].
    after_done_open_s: float = 0.0
    after_done_bytes: int = 0

    def __post_init__(self) -> None:
        if self.ttft_s < 0:
            raise ValueError("ttft_s must not be negative")
        if not self.tokens_per_s > 0:
            raise ValueError("tokens_per_s must be positive")
        if self.truncate_after_tokens is not None and self.truncate_after_tokens < 0:
            raise ValueError("truncate_after_tokens must not be negative")

    @property
    def listed_models(self) -> list[str]:
        return [self.model] if self.models is None else list(self.models)


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # the parsed JSON body, or None
    client_port: int | None  # the client's TCP port: equal ports mean a reused connection


def default_reply(last_user_message: str | None) -> str:
    """The simulator's deterministic answer to a user message."""
    text = (last_user_message or "").strip()
    if text in ("", "Hello.", "Hello!"):
        return "Hello! I am a simulated assistant. What would you like to talk about?"
    if text == "...":
        return "Are you still there?"
    if _BYE.search(text):
        return "It was nice talking to you. Bye!"
    return f"You said: {text.rstrip('.!?')}. Tell me more. What happened next?"


def split_tokens(reply: str) -> list[str]:
    """Cut a reply into 1-3 character pieces, whitespace attached to the next piece."""
    return _TOKEN.findall(reply)


def _last_user_message(messages: list[Any]) -> str | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content")
    return None


def _error(status: int, message: str, kind: str) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return Response(json.dumps(body), status=status, content_type="application/json")


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


class LlmSimulator(ServedSimulator):
    """The simulator: ``app`` (Quart-Trio), ``serve()``, and what tests inspect.

    ``open_connections`` counts chat completions in progress (streams not yet finished or
    cancelled); ``requests`` keeps the last :data:`MAX_RECORDED_REQUESTS` requests received,
    headers included.
    """

    def __init__(self, config: LlmSimConfig | None = None) -> None:
        self.config = config or LlmSimConfig()
        self.open_connections = 0
        self.requests: collections.deque[RecordedRequest] = collections.deque(
            maxlen=MAX_RECORDED_REQUESTS
        )
        self._ids = itertools.count(1)
        self.app = self._make_app()

    def tool_call_for(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The function call to answer this request with, if any."""
        last = body["messages"][-1]
        if not body.get("tools") or body.get("tool_choice") == "none":
            return None
        if last.get("role") != "user":
            return None
        return (self.config.tool_calls or {}).get(last.get("content"))

    def reply_to(self, messages: list[Any]) -> str:
        if messages[-1].get("role") == "tool":
            result = str(messages[-1].get("content"))
            return (self.config.replies or {}).get(result, f"The result is {result}.")
        last = _last_user_message(messages)
        replies = self.config.replies or {}
        if last is not None and last in replies:
            return replies[last]
        return default_reply(last)

    def _make_app(self) -> QuartTrio:
        app = QuartTrio(__name__)
        app.config["RESPONSE_TIMEOUT"] = None  # a stream lasts as long as its reply

        @app.get("/health")
        async def health() -> Response:
            return Response("", status=200)

        @app.get("/v1/models")
        async def models() -> Response:
            self._record(None)
            if (denied := self._check_auth()) is not None:
                return denied
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "unmute-trio-sim"}
                for m in self.config.listed_models
            ]
            return Response(
                json.dumps({"object": "list", "data": data}), content_type="application/json"
            )

        @app.post("/v1/chat/completions")
        async def chat_completions() -> Response:
            body = await request.get_json(force=True, silent=True)
            self._record(body)
            if (denied := self._check_auth()) is not None:
                return denied
            if self.config.fail_status is not None:
                return _error(self.config.fail_status, "simulated failure", "server_error")
            problem = _validate(body)
            if problem is not None:
                return _error(400, problem, "invalid_request_error")
            if body["model"] not in self.config.listed_models:
                return _error(404, f"The model `{body['model']}` does not exist.", "NotFoundError")
            reply = self.reply_to(body["messages"])
            call = self.tool_call_for(body)
            completion_id = f"chatcmpl-sim-{next(self._ids)}"
            if not body.get("stream"):
                return await self._complete(body["model"], completion_id, reply)
            if call is not None:
                stream = self._stream_call(body["model"], completion_id, *call)
                headers = {"Content-Type": "text/event-stream; charset=utf-8"}
                return Response(stream, headers=headers)
            headers = {
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
            prompt_tokens = sum(len(split_tokens(m.get("content") or "")) for m in body["messages"])
            stream = self._stream(
                body["model"], completion_id, reply, prompt_tokens, body.get("max_tokens")
            )
            return Response(stream, headers=headers)

        return app

    def _record(self, body: Any) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        client = request.scope.get("client")
        port = client[1] if client else None
        self.requests.append(RecordedRequest(request.method, request.path, headers, body, port))

    def _check_auth(self) -> Response | None:
        if self.config.api_key is None:
            return None
        if request.headers.get("Authorization") == f"Bearer {self.config.api_key}":
            return None
        return _error(401, "Incorrect API key provided.", "invalid_request_error")

    async def _complete(self, model: str, completion_id: str, reply: str) -> Response:
        self.open_connections += 1
        try:
            await trio.sleep(self.config.ttft_s)
        finally:
            self.open_connections -= 1
        body = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                }
            ],
        }
        return Response(json.dumps(body), content_type="application/json")

    async def _stream(
        self,
        model: str,
        completion_id: str,
        reply: str,
        prompt_tokens: int,
        max_tokens: int | None,
    ) -> AsyncIterator[str]:
        # Quart iterates this in the request's nursery; a client disconnect cancels it there.
        self.open_connections += 1
        try:
            created = int(time.time())

            def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
                return _sse(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": choices,
                        **extra,
                    }
                )

            def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
                return {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }

            yield ": sim-llm processing\n\n"
            await trio.sleep(self.config.ttft_s)
            yield chunk([choice({"role": "assistant"})])
            tokens = split_tokens(reply)
            finish = "stop"
            if isinstance(max_tokens, int) and 0 < max_tokens < len(tokens):
                tokens, finish = tokens[:max_tokens], "length"
            gap_s = 0.0 if math.isinf(self.config.tokens_per_s) else 1 / self.config.tokens_per_s
            truncate_after = self.config.truncate_after_tokens
            for i, token in enumerate(tokens):
                if i == truncate_after:
                    return  # the body ends here: no finish_reason, no usage, no [DONE]
                if i > 0 and gap_s > 0:
                    await trio.sleep(gap_s)
                yield chunk([choice({"content": token})])
            if truncate_after is not None and truncate_after >= len(tokens):
                return
            yield chunk([choice({}, finish)])
            n = len(tokens)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n}
            yield chunk([], usage={**usage, "total_tokens": prompt_tokens + n})
            yield "data: [DONE]\n\n"
            async for tail in self._after_done():
                yield tail
        finally:
            self.open_connections -= 1

    async def _after_done(self) -> AsyncIterator[str]:
        padding = self.config.after_done_bytes
        while padding > 0:
            line = ": " + "x" * min(1000, padding) + "\n\n"
            padding -= len(line)
            yield line
        deadline = trio.current_time() + self.config.after_done_open_s
        while trio.current_time() < deadline:
            await trio.sleep(0.1)
            yield ": keep-alive\n\n"

    async def _stream_call(
        self, model: str, completion_id: str, name: str, arguments: dict[str, Any]
    ) -> AsyncIterator[str]:
        self.open_connections += 1
        try:
            created = int(time.time())

            def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
                choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
                return _sse(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [choice],
                    }
                )

            await trio.sleep(self.config.ttft_s)
            call_id = f"call_sim_{next(self._ids)}"
            first = {"index": 0, "id": call_id, "type": "function"}
            first["function"] = {"name": name, "arguments": ""}
            yield chunk({"role": "assistant", "content": None, "tool_calls": [first]})
            text = json.dumps(arguments)
            for piece in (text[i : i + 8] for i in range(0, len(text), 8)):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            yield chunk({}, "tool_calls")
            yield "data: [DONE]\n\n"
        finally:
            self.open_connections -= 1


def _validate(body: Any) -> str | None:
    """Why a chat completion request is malformed, or None."""
    if not isinstance(body, dict):
        return "The body must be a JSON object."
    if not isinstance(body.get("model"), str):
        return "'model' must be a string."
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list."
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return "Each message needs a 'role'."
        if message.get("role") == "tool" and not isinstance(message.get("tool_call_id"), str):
            return "A 'tool' message needs its 'tool_call_id'."
        if message.get("tool_calls") is not None:
            continue  # an assistant function call: its content may be empty or null
        if not isinstance(message.get("content"), str):
            return "Each message needs a string 'content'."
    return None
