"""Client of an OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, OpenRouter...).

Contract 1.2: the base URL is the server root *without* ``/v1`` (``http://localhost:8091``,
``https://openrouter.ai/api``); requests go to ``{base}/v1/models`` and
``{base}/v1/chat/completions`` with ``"stream": true``; ``Authorization: Bearer <key>`` is sent
only when a key is configured. A base URL ending in ``/v1``, the way OpenAI's SDKs take it
(``http://localhost:8000/v1``), is accepted: the ``/v1`` is dropped (:func:`server_root`) and
logged once, instead of every request going to ``/v1/v1/...`` and failing with 404. The model is
``KYUTAI_LLM_MODEL`` or, when unset, the one model the server lists (detected once,
asynchronously, unlike the original's blocking call); :meth:`LLMClient.check_model` also checks
that a configured model is one the server lists (:func:`model_problem`).

Usage (one bot reply)::

    async with llm.stream_words(messages, temperature=0.7) as words:
        async for word in words:      # "Hello", " there,", " how"...
            ...
    # Reaching this line means the LLM finished its reply.

Failures are raised as :mod:`unmute_trio.errors` with service ``"llm"``: connection refused or
reset → ServiceDisconnected, connect/read timeout → ServiceTimeout, HTTP error status or a
broken event stream → ServiceProtocolError (:class:`LLMConfigError` for an ambiguous model).
A stream whose body ends before the reply does (no chunk with a ``finish_reason`` and no
``data: [DONE]``: the server or a proxy cut it short) → ServiceDisconnected, so a truncated
reply is never taken for a whole one.
"""

from __future__ import annotations

import codecs
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import Any, cast

import httpx
import trio
from pydantic import ValidationError

from unmute_trio import metrics
from unmute_trio.errors import (
    ServiceDisconnected,
    ServiceError,
    ServiceProtocolError,
    ServiceTimeout,
)
from unmute_trio.exception_groups import raise_sole_failure
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.openai_chat import ChatStreamParser, ReplyOutcome
from unmute_trio.protocol.words import WordChunker
from unmute_trio.services.llm_models import (
    ModelList,
    ServedModel,
    model_problem,
    not_found_hint,
    server_root,
)

logger = logging.getLogger(__name__)

SERVICE = "llm"
# Words read ahead of the consumer. The consumer (the TTS sender) is normally faster than the
# LLM; a few words smooth out its pauses, and past that TCP backpressure reaches the LLM server
# instead of the reply piling up here.
WORD_BUFFER = 16
# No spoken word is this long; a server that never sends whitespace cannot grow the buffer.
MAX_WORD_CHARS = 1000
# /v1/models of a big router (OpenRouter) lists hundreds of models with descriptions.
MAX_MODELS_BODY_BYTES = 8 * 1024 * 1024
ERROR_EXCERPT_BYTES = 300
# After [DONE], the rest of the body is read so the connection can be reused, within these
# bounds; past them the connection is simply closed.
DRAIN_TIMEOUT_S = 0.5
DRAIN_MAX_BYTES = 64 * 1024
# Closing a response is a socket close (plus a TLS close_notify); never wait long for it.
CLOSE_TIMEOUT_S = 1.0


class LLMConfigError(ServiceProtocolError):
    """The LLM server offers zero or several models and ``KYUTAI_LLM_MODEL`` is not set.

    A ServiceProtocolError, so a session handles it like any unusable LLM answer; a distinct
    class so ``serve`` can report the misconfiguration clearly at start-up.
    """


class LLMClient:
    """Streams chat completions as whole words. One instance per process, shared by sessions.

    ``base_url`` is the server root (a trailing ``/v1`` is dropped, see :func:`server_root`).
    ``api_key`` (``KYUTAI_LLM_API_KEY``), when set, is sent as ``Authorization: Bearer``.
    ``model`` (``KYUTAI_LLM_MODEL``), when ``None``, is auto-detected on first use. ``http`` is
    owned by the caller (shared connection pool). ``connect_timeout_s`` bounds connecting (and
    waiting for a pooled connection); ``read_timeout_s`` bounds every wait for bytes, so it must
    exceed the LLM's time to first token.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        model: str | None,
        http: httpx.AsyncClient,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
    ) -> None:
        self.base_url = server_root(base_url)
        if self.base_url != base_url.rstrip("/"):
            logger.info(
                "the LLM URL %s ends in /v1: using %s as the server's root (requests go to "
                "its /v1/chat/completions); set KYUTAI_LLM_URL without /v1 to silence this",
                base_url,
                self.base_url,
            )
        self._api_key = api_key or None
        self._model = model or None
        self._http = http
        self._timeout = httpx.Timeout(
            connect=connect_timeout_s,
            read=read_timeout_s,
            write=read_timeout_s,
            pool=connect_timeout_s,
        )
        # Concurrent first sessions share one /v1/models request.
        self._model_lock = trio.Lock()

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    async def list_models(self) -> list[str]:
        """The model ids listed by ``GET {base}/v1/models``."""
        return [m.id for m in await self.served_models()]

    async def served_models(self) -> list[ServedModel]:
        """The models listed by ``GET {base}/v1/models``."""
        url = f"{self.base_url}/v1/models"
        request = self._http.build_request(
            "GET", url, headers=self._headers("application/json"), timeout=self._timeout
        )
        with _translate_httpx_errors(url):
            response = await self._http.send(request, stream=True)
        try:
            if response.status_code == 404:
                excerpt = await _read_excerpt(response)
                raise ServiceProtocolError(
                    SERVICE, f"HTTP 404 from {url}: {excerpt}; {not_found_hint(url)}"
                )
            await _raise_for_status(response, url)
            body = await _read_capped(response, MAX_MODELS_BODY_BYTES, url)
        finally:
            await _close_response(response)
        try:
            return ModelList.model_validate_json(body).data
        except ValidationError as e:
            raise ServiceProtocolError(SERVICE, f"{url} is not an OpenAI model list: {e}") from e

    async def check_model(self) -> str:
        """The model replies will use, after checking it against the server's list: the
        configured one if the server serves it, else the only one it lists (then remembered,
        as :meth:`model` does). Raises :class:`LLMConfigError` saying what to change."""
        served = await self.served_models()
        problem = model_problem(self._model, served, f"{self.base_url}/v1/models")
        if problem is not None:
            raise LLMConfigError(SERVICE, problem)
        if self._model is None:
            self._model = served[0].id
            logger.info("LLM model auto-detected: %s", self._model)
        return self._model

    @property
    def known_model(self) -> str | None:
        """The model if configured or already detected; never waits."""
        return self._model

    async def model(self) -> str:
        """The configured model, or the only model the server lists (detected once)."""
        if self._model is not None:
            return self._model
        async with self._model_lock:
            if self._model is None:  # another task may have detected it while we waited
                return await self.check_model()
        return self._model

    @asynccontextmanager
    async def stream_words(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        max_tokens: int | None = None,
        outcome: ReplyOutcome | None = None,
    ) -> AsyncIterator[trio.MemoryReceiveChannel[str]]:
        """Stream the reply to ``messages`` as whole words (docs/services.md re-chunking).

        The first word has no leading space unless the LLM sent one; later words start with
        ``" "``. The request runs in a background task reading at most :data:`WORD_BUFFER` words
        ahead. The channel ends (``EndOfChannel``) only when the LLM finished its reply; on a
        failure the body of the ``async with`` is cancelled and the ServiceError is raised when
        the block exits. Leaving the block early, or cancelling it, closes the HTTP stream;
        leaving it after the end waits for the rest of the body (normally already there, at most
        :data:`DRAIN_TIMEOUT_S`) so the connection goes back to the pool.

        ``tools``, ``tool_choice`` and ``max_tokens`` go into the request as the chat-completions
        API has them. Once the reply is complete, ``outcome`` gets the function calls the LLM
        asked for (each with a ``call_id``, made up if the server sent none), the finish reason
        and the token counts if the server reported them.
        """
        options: dict[str, Any] = {}
        if tools:
            options["tools"] = tools
            if tool_choice is not None:
                options["tool_choice"] = tool_choice
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        send_words, receive_words = trio.open_memory_channel[str](WORD_BUFFER)
        failure: ServiceError | None = None
        reply_complete = trio.Event()

        async def produce() -> None:
            nonlocal failure
            try:
                await self._produce_words(
                    messages, temperature, options, send_words, reply_complete, outcome
                )
            except ServiceError as e:
                failure = e
                # Cancel before closing the channel, so the consumer never mistakes a failure
                # for the end of the reply.
                nursery.cancel_scope.cancel()
            finally:
                send_words.close()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                with receive_words:
                    yield receive_words
                if not reply_complete.is_set():
                    nursery.cancel_scope.cancel()  # the consumer left early: stop reading
                # Otherwise the producer is only draining the body after [DONE] (bounded by
                # DRAIN_TIMEOUT_S) so the connection can be reused: let it finish.
        except BaseExceptionGroup as group:
            raise_sole_failure(group)
        if failure is not None:
            raise failure

    async def _produce_words(
        self,
        messages: Sequence[Mapping[str, Any]],
        temperature: float,
        options: dict[str, Any],
        send_words: trio.MemorySendChannel[str],
        reply_complete: trio.Event,
        outcome: ReplyOutcome | None,
    ) -> None:
        num_words_sent = sum(len(str(m.get("content") or "").split()) for m in messages)
        metrics.VLLM_SENT_WORDS.inc(num_words_sent)
        metrics.VLLM_REQUEST_LENGTH.observe(num_words_sent)
        metrics.VLLM_SESSIONS.inc()
        metrics.VLLM_ACTIVE_SESSIONS.inc()
        started = trio.current_time()
        finished_at: float | None = None
        num_words = 0

        async def emit(words: list[str]) -> None:
            nonlocal num_words
            for word in words:
                if num_words == 0:
                    metrics.VLLM_TTFT.observe(trio.current_time() - started)
                num_words += 1
                metrics.VLLM_RECV_WORDS.inc()
                try:  # no scheduling round when there is room: reading the body checkpoints
                    send_words.send_nowait(word)
                except trio.WouldBlock:
                    await send_words.send(word)

        try:
            model = await self.model()
            url = f"{self.base_url}/v1/chat/completions"
            payload = {
                "model": model,
                "messages": [dict(m) for m in messages],
                "stream": True,
                "temperature": temperature,
                **options,
            }
            request = self._http.build_request(
                "POST",
                url,
                json=payload,
                headers=self._headers("text/event-stream"),
                timeout=self._timeout,
            )
            with _translate_httpx_errors(url):
                response = await self._http.send(request, stream=True)
            try:
                await _raise_for_status(response, url)
                content_type = response.headers.get("content-type", "")
                if not content_type.startswith("text/event-stream"):
                    excerpt = await _read_excerpt(response)
                    raise ServiceProtocolError(
                        SERVICE, f"{url} answered {content_type!r}, not an event stream: {excerpt}"
                    )
                body = _body(response)
                parser = ChatStreamParser()
                chunker = WordChunker(max_word_chars=MAX_WORD_CHARS)
                text = codecs.getincrementaldecoder("utf-8")(errors="replace")
                try:
                    while not parser.done:
                        with _translate_httpx_errors(url):
                            data = await anext(body, None)
                        at_end = data is None
                        deltas = _parse(parser, text.decode(data or b"", final=at_end), at_end)
                        for delta in deltas:
                            await emit(chunker.feed(delta))
                        if data is None:
                            break
                    if not parser.done and parser.finish_reason is None:
                        # Either one marks a finished reply; a body ending without both was cut.
                        raise ServiceDisconnected(
                            SERVICE,
                            f"the reply stream from {url} ended early, after {num_words} words,"
                            " without a finish_reason or data: [DONE]",
                        )
                    await emit(chunker.finish())
                    if outcome is not None:
                        for call in parser.tool_calls:
                            call.call_id = call.call_id or f"call_{secrets.token_hex(12)}"
                            outcome.tool_calls.append(call)
                        outcome.finish_reason = parser.finish_reason
                        if parser.usage is not None:
                            outcome.prompt_tokens = parser.usage.prompt_tokens
                            outcome.completion_tokens = parser.usage.completion_tokens
                    finished_at = trio.current_time()
                    reply_complete.set()
                    send_words.close()  # the consumer may finish while we drain
                    await _drain(body)
                finally:
                    with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                        await body.aclose()
            finally:
                await _close_response(response)
        except trio.Cancelled:
            if finished_at is None:
                metrics.VLLM_INTERRUPTS.inc()
            raise
        except Exception:
            metrics.VLLM_HARD_ERRORS.inc()
            raise
        finally:
            metrics.VLLM_ACTIVE_SESSIONS.dec()
            metrics.VLLM_REPLY_LENGTH.observe(num_words)
            end = finished_at if finished_at is not None else trio.current_time()
            metrics.VLLM_GEN_DURATION.observe(end - started)


def _parse(parser: ChatStreamParser, text: str, at_end: bool) -> list[str]:
    try:
        deltas = parser.feed(text)
        if at_end and not parser.done:  # end of body without [DONE]: flush a last event
            deltas += parser.finish()
    except WireFormatError as e:
        raise ServiceProtocolError(SERVICE, f"broken event stream: {e.message}") from e
    return deltas


def _body(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The response body's chunks, to be closed with ``aclose()`` when no longer read.

    httpx annotates ``aiter_bytes()`` as an ``AsyncIterator``, but it is an async generator.
    """
    return cast("AsyncGenerator[bytes, None]", response.aiter_bytes())


async def _drain(body: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (normally nothing) so the connection returns to the pool."""
    drained = 0
    with trio.move_on_after(DRAIN_TIMEOUT_S):
        try:
            async for chunk in body:
                drained += len(chunk)
                if drained > DRAIN_MAX_BYTES:
                    return
        except httpx.HTTPError:
            return  # the reply is complete; a broken tail only costs the connection


@contextmanager
def _translate_httpx_errors(url: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as e:
        raise ServiceTimeout(SERVICE, f"{type(e).__name__} on {url}") from e
    except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError) as e:
        raise ServiceDisconnected(SERVICE, f"{type(e).__name__} on {url}: {e}") from e
    except httpx.HTTPError as e:  # local protocol, decoding, unsupported scheme, redirects
        raise ServiceProtocolError(SERVICE, f"{type(e).__name__} on {url}: {e}") from e


async def _raise_for_status(response: httpx.Response, url: str) -> None:
    if not response.is_success:
        excerpt = await _read_excerpt(response)
        raise ServiceProtocolError(SERVICE, f"HTTP {response.status_code} from {url}: {excerpt}")


async def _read_excerpt(response: httpx.Response) -> str:
    """The start of the body, for error messages; whatever arrived if reading fails."""
    data = b""
    try:
        async with aclosing(_body(response)) as body:
            async for chunk in body:
                data += chunk
                if len(data) >= ERROR_EXCERPT_BYTES:
                    break
    except httpx.HTTPError:
        pass
    text = data[:ERROR_EXCERPT_BYTES].decode("utf-8", errors="replace").strip()
    return repr(text) if text else "(empty body)"


async def _read_capped(response: httpx.Response, limit: int, url: str) -> bytes:
    data = bytearray()
    with _translate_httpx_errors(url):
        async with aclosing(_body(response)) as body:
            async for chunk in body:
                data += chunk
                if len(data) > limit:
                    raise ServiceProtocolError(SERVICE, f"{url} sent more than {limit} bytes")
    return bytes(data)


async def _close_response(response: httpx.Response) -> None:
    # Shielded so a cancelled stream still closes its connection (an unfinished HTTP/1.1
    # response cannot go back to the pool), bounded so a dead peer cannot hang us.
    with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
        try:
            await response.aclose()
        except httpx.HTTPError:
            pass  # the connection is discarded either way
