"""LLMClient against the LLM simulator (and a few deliberately broken servers) over loopback."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import REGISTRY
from quart import Response
from quart_trio import QuartTrio

from unmute_trio.errors import ServiceDisconnected, ServiceProtocolError, ServiceTimeout
from unmute_trio.services.llm import LLMClient, LLMConfigError
from unmute_trio.testing.llm_sim import LlmSimConfig, LlmSimulator, default_reply
from unmute_trio.testing.server import serve_app

FAST = {"ttft_s": 0.0, "tokens_per_s": math.inf}
MESSAGES = [
    {"role": "system", "content": "You are a test."},
    {"role": "user", "content": "I like trains"},
]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def start_sim(nursery: trio.Nursery, **config: Any) -> tuple[LlmSimulator, str]:
    sim = LlmSimulator(LlmSimConfig(**{**FAST, **config}))
    port = await nursery.start(sim.serve)
    return sim, f"http://127.0.0.1:{port}"


def client(url: str, http: httpx.AsyncClient, **kwargs: Any) -> LLMClient:
    kwargs.setdefault("api_key", None)
    kwargs.setdefault("model", None)
    return LLMClient(url, http=http, **kwargs)


async def collect(llm: LLMClient, messages: list[dict[str, str]] = MESSAGES) -> list[str]:
    with trio.fail_after(2):
        async with llm.stream_words(messages, temperature=0.7) as words:
            return [word async for word in words]


async def wait_until_closed(sim: LlmSimulator) -> None:
    with trio.fail_after(2):
        while sim.open_connections:
            await trio.sleep(0.01)


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def chat_requests(sim: LlmSimulator) -> list[Any]:
    return [r for r in sim.requests if r.path == "/v1/chat/completions"]


def model_requests(sim: LlmSimulator) -> list[Any]:
    return [r for r in sim.requests if r.path == "/v1/models"]


# ------------------------------------------------------------------ happy path


async def test_streams_the_reply_as_whole_words(nursery: trio.Nursery, http) -> None:
    sim, url = await start_sim(nursery, ttft_s=0.05, tokens_per_s=500)
    words = await collect(client(url, http))
    assert "".join(words) == default_reply("I like trains")
    assert words[:3] == ["You", " said:", " I"]
    assert all(w.startswith(" ") and " " not in w[1:] for w in words[1:])
    [request] = chat_requests(sim)
    assert request.body == {
        "model": "sim-llm",
        "messages": MESSAGES,
        "stream": True,
        "temperature": 0.7,
    }
    assert request.headers["accept"] == "text/event-stream"
    assert sim.open_connections == 0


async def test_scripted_reply_ending_in_bye(nursery: trio.Nursery, http) -> None:
    _, url = await start_sim(nursery, replies={"I like trains": "Trains are great. Bye!"})
    assert await collect(client(url, http)) == ["Trains", " are", " great.", " Bye!"]


async def test_the_default_reply_says_bye_when_the_user_does(nursery: trio.Nursery, http) -> None:
    _, url = await start_sim(nursery)
    words = await collect(client(url, http), [{"role": "user", "content": "OK, bye now."}])
    assert words[-1] == " Bye!"


async def test_metrics_are_updated(nursery: trio.Nursery, http) -> None:
    _, url = await start_sim(nursery)
    before = {
        name: metric(name)
        for name in (
            "worker_vllm_recv_words_total",
            "worker_vllm_sent_words_total",
            "worker_vllm_ttft_count",
            "worker_vllm_reply_length_sum",
            "worker_vllm_gen_duration_count",
            "worker_vllm_request_length_sum",
            "worker_vllm_active_sessions",
        )
    }
    words = await collect(client(url, http))
    sent = sum(len(m["content"].split()) for m in MESSAGES)
    assert metric("worker_vllm_recv_words_total") - before["worker_vllm_recv_words_total"] == len(
        words
    )
    assert metric("worker_vllm_sent_words_total") - before["worker_vllm_sent_words_total"] == sent
    assert metric("worker_vllm_request_length_sum") - before["worker_vllm_request_length_sum"] == (
        sent
    )
    assert metric("worker_vllm_reply_length_sum") - before["worker_vllm_reply_length_sum"] == len(
        words
    )
    assert metric("worker_vllm_ttft_count") - before["worker_vllm_ttft_count"] == 1
    assert metric("worker_vllm_gen_duration_count") - before["worker_vllm_gen_duration_count"] == 1
    assert metric("worker_vllm_active_sessions") == before["worker_vllm_active_sessions"]


async def test_connection_is_reused_after_a_complete_stream(nursery: trio.Nursery, http) -> None:
    sim, url = await start_sim(nursery)
    llm = client(url, http, model="sim-llm")
    for _ in range(3):
        await collect(llm)
    ports = {r.client_port for r in chat_requests(sim)}
    assert len(chat_requests(sim)) == 3
    assert len(ports) == 1


# ------------------------------------------------------------------ model detection


async def test_model_is_auto_detected_once_for_concurrent_callers(
    nursery: trio.Nursery, http
) -> None:
    sim, url = await start_sim(nursery, model="only-model")
    llm = client(url, http)
    found: list[str] = []

    async def ask() -> None:
        found.append(await llm.model())

    with trio.fail_after(2):
        async with trio.open_nursery() as callers:
            for _ in range(5):
                callers.start_soon(ask)
        await collect(llm)
    assert found == ["only-model"] * 5
    assert len(model_requests(sim)) == 1
    assert chat_requests(sim)[0].body["model"] == "only-model"


async def test_configured_model_skips_detection(nursery: trio.Nursery, http) -> None:
    sim, url = await start_sim(nursery, models=["a", "b"])
    await collect(client(url, http, model="b"))
    assert model_requests(sim) == []
    assert chat_requests(sim)[0].body["model"] == "b"


async def test_zero_models_is_a_clear_error(nursery: trio.Nursery, http) -> None:
    sim, url = await start_sim(nursery, models=[])
    with pytest.raises(LLMConfigError, match="no model"):
        await collect(client(url, http))
    assert chat_requests(sim) == []


async def test_several_models_is_a_clear_error_listing_them(nursery: trio.Nursery, http) -> None:
    _, url = await start_sim(nursery, models=["gemma-3-1b", "llama-3-8b"])
    llm = client(url, http)
    with trio.fail_after(2), pytest.raises(LLMConfigError) as info:
        await llm.model()
    assert "gemma-3-1b" in str(info.value)
    assert "llama-3-8b" in str(info.value)
    assert "KYUTAI_LLM_MODEL" in str(info.value)
    assert info.value.service == "llm"


# ------------------------------------------------------------------ authorization


async def test_bearer_key_is_sent_when_set(nursery: trio.Nursery, http) -> None:
    sim, url = await start_sim(nursery, api_key="sk-test")
    words = await collect(client(url, http, api_key="sk-test"))
    assert words
    assert [r.headers["authorization"] for r in sim.requests] == ["Bearer sk-test"] * 2


async def test_no_authorization_header_without_a_key(nursery: trio.Nursery, http) -> None:
    sim, url = await start_sim(nursery)
    await collect(client(url, http))
    assert len(sim.requests) == 2  # models + chat
    assert all("authorization" not in r.headers for r in sim.requests)


async def test_missing_key_is_rejected_by_a_server_requiring_one(
    nursery: trio.Nursery, http
) -> None:
    _, url = await start_sim(nursery, api_key="sk-test")
    with pytest.raises(ServiceProtocolError, match="401"):
        await collect(client(url, http, model="sim-llm"))


# ------------------------------------------------------------------ failures


async def test_http_500_is_a_protocol_error_with_the_status(nursery: trio.Nursery, http) -> None:
    _, url = await start_sim(nursery, fail_status=500)
    with pytest.raises(ServiceProtocolError) as info:
        await collect(client(url, http))
    assert "HTTP 500" in info.value.detail
    assert "simulated failure" in info.value.detail
    assert info.value.service == "llm"


async def test_server_not_running_is_disconnected(http) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServiceDisconnected):
        await collect(client(f"http://127.0.0.1:{port}", http, model="m"))


async def test_read_timeout(nursery: trio.Nursery, http) -> None:
    sim, url = await start_sim(nursery, ttft_s=60)
    llm = client(url, http, read_timeout_s=0.2)
    with pytest.raises(ServiceTimeout):
        await collect(llm)
    await wait_until_closed(sim)


# ------------------------------------------------------------------ cancellation


async def test_cancelling_mid_stream_closes_the_http_stream(nursery: trio.Nursery, http) -> None:
    sim, url = await start_sim(nursery, tokens_per_s=20)
    interrupts = metric("worker_vllm_interrupt_total")
    active = metric("worker_vllm_active_sessions")
    received: list[str] = []
    with trio.fail_after(2):
        with trio.CancelScope() as turn:
            async with client(url, http).stream_words(MESSAGES, temperature=0.3) as words:
                async for word in words:
                    received.append(word)
                    assert sim.open_connections == 1
                    turn.cancel()
    assert turn.cancelled_caught
    assert received == ["You"]
    await wait_until_closed(sim)
    assert metric("worker_vllm_interrupt_total") == interrupts + 1
    assert metric("worker_vllm_active_sessions") == active


async def test_leaving_the_block_early_closes_the_http_stream(nursery: trio.Nursery, http) -> None:
    sim, url = await start_sim(nursery, tokens_per_s=20)
    with trio.fail_after(2):
        async with client(url, http).stream_words(MESSAGES, temperature=0.3) as words:
            first = await words.receive()
    assert first == "You"
    await wait_until_closed(sim)


async def test_client_is_reusable_after_a_cancelled_stream(nursery: trio.Nursery, http) -> None:
    sim, url = await start_sim(nursery, tokens_per_s=20)
    llm = client(url, http)
    with trio.move_on_after(0.1) as scope:
        await collect(llm)
    assert scope.cancelled_caught  # the stream was really cut off mid-reply
    await wait_until_closed(sim)
    sim.config.tokens_per_s = math.inf
    assert "".join(await collect(llm)) == default_reply("I like trains")


# ------------------------------------------------------------------ broken servers


async def start_raw(nursery: trio.Nursery, body: list[str], content_type: str) -> str:
    """A server answering every chat completion with ``body`` (streamed piece by piece)."""
    app = QuartTrio("broken_llm")

    @app.post("/v1/chat/completions")
    async def chat() -> Response:
        async def stream() -> AsyncIterator[str]:
            for piece in body:
                if piece == "RAISE":
                    raise RuntimeError("simulated crash mid-body")
                yield piece
                await trio.sleep(0.01)

        return Response(stream(), content_type=content_type)

    port = await nursery.start(serve_app, app)
    return f"http://127.0.0.1:{port}"


def sse(content: str) -> str:
    return 'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n' % content  # noqa: UP031


async def test_broken_event_stream_fails_without_a_clean_end(nursery: trio.Nursery, http) -> None:
    url = await start_raw(nursery, [sse("Hello there "), "data: {broken\n\n"], "text/event-stream")
    received: list[str] = []
    ended_cleanly = False
    with trio.fail_after(2), pytest.raises(ServiceProtocolError, match="broken event stream"):
        async with client(url, http, model="m").stream_words(MESSAGES, temperature=1) as words:
            async for word in words:
                received.append(word)
            ended_cleanly = True
    assert received == ["Hello", " there"]
    assert not ended_cleanly


async def test_error_object_in_the_stream(nursery: trio.Nursery, http) -> None:
    body = [sse("Hi "), 'data: {"error": {"message": "upstream overloaded"}}\n\n']
    url = await start_raw(nursery, body, "text/event-stream")
    with pytest.raises(ServiceProtocolError, match="upstream overloaded"):
        await collect(client(url, http, model="m"))


async def test_stream_ending_without_done_is_complete(nursery: trio.Nursery, http) -> None:
    # A finish_reason ends the reply even when data: [DONE] never comes.
    finish = 'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n'
    url = await start_raw(nursery, [sse("All "), sse("good"), finish], "text/event-stream")
    assert await collect(client(url, http, model="m")) == ["All", " good"]


async def test_done_without_finish_reason_is_complete(nursery: trio.Nursery, http) -> None:
    url = await start_raw(
        nursery, [sse("All "), sse("good"), "data: [DONE]\n\n"], "text/event-stream"
    )
    assert await collect(client(url, http, model="m")) == ["All", " good"]


async def test_stream_cut_short_is_a_failure_not_a_whole_reply(nursery: trio.Nursery, http) -> None:
    """A body that ends cleanly after a few words, with no finish_reason and no [DONE], is a
    reply cut short (the server or a proxy gave up): it used to be taken for a whole reply."""
    sim, url = await start_sim(nursery, truncate_after_tokens=4)  # "You", " sa", "id:", " I"
    received: list[str] = []
    errors_before = metric("worker_vllm_hard_errors_total")
    ended_cleanly = False
    with trio.fail_after(2), pytest.raises(ServiceDisconnected, match="ended early") as info:
        async with client(url, http).stream_words(MESSAGES, temperature=1) as words:
            async for word in words:
                received.append(word)
            ended_cleanly = True
    assert info.value.service == "llm"
    assert not ended_cleanly
    assert received == ["You", " said:"]  # " I" was never followed by whitespace: not sent
    assert metric("worker_vllm_hard_errors_total") - errors_before == 1
    await wait_until_closed(sim)


async def test_sim_truncated_stream_shape(nursery: trio.Nursery, http) -> None:
    _, url = await start_sim(nursery, replies={"Hi": "Wonderful weather"}, truncate_after_tokens=2)
    body = {"model": "sim-llm", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with trio.fail_after(2):
        response = await http.post(url + "/v1/chat/completions", json=body)
    lines = [line for line in response.text.split("\n") if line]
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[1:]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == [None, "Won", "der"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


async def test_non_event_stream_answer_is_a_protocol_error(nursery: trio.Nursery, http) -> None:
    url = await start_raw(nursery, ['{"choices": []}'], "application/json")
    with pytest.raises(ServiceProtocolError, match="not an event stream"):
        await collect(client(url, http, model="m"))


async def test_connection_dropped_mid_body_is_disconnected(nursery: trio.Nursery, http) -> None:
    url = await start_raw(nursery, [sse("Hi "), "RAISE"], "text/event-stream")
    with pytest.raises(ServiceDisconnected):
        await collect(client(url, http, model="m"))


# ------------------------------------------------------------------ simulator details


async def test_sim_rejects_unknown_models_and_malformed_requests(
    nursery: trio.Nursery, http
) -> None:
    _, url = await start_sim(nursery)
    with pytest.raises(ServiceProtocolError, match="HTTP 404"):
        await collect(client(url, http, model="no-such-model"))
    with trio.fail_after(2):
        response = await http.post(url + "/v1/chat/completions", json={"model": "sim-llm"})
    assert response.status_code == 400
    assert "messages" in response.json()["error"]["message"]


async def test_sim_answers_non_streaming_requests(nursery: trio.Nursery, http) -> None:
    _, url = await start_sim(nursery)
    body = {"model": "sim-llm", "messages": [{"role": "user", "content": "Hi"}]}
    with trio.fail_after(2):
        response = await http.post(url + "/v1/chat/completions", json=body)
    assert response.status_code == 200
    message = response.json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": default_reply("Hi")}


async def test_sim_stream_shape(nursery: trio.Nursery, http) -> None:
    """Role-only first chunk, words split across chunks, finish_reason, usage, [DONE]."""
    _, url = await start_sim(nursery, replies={"Hi": "Wonderful weather"})
    body = {"model": "sim-llm", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with trio.fail_after(2):
        response = await http.post(url + "/v1/chat/completions", json=body)
    lines = [line for line in response.text.split("\n") if line]
    assert lines[0].startswith(":")
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[1:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert contents == ["Won", "der", "ful", " wea", "the", "r"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and "usage" in chunks[-1]


def test_pooled_connections_are_dropped_before_common_servers_close_them() -> None:
    """A connection the server closes while a request is being sent on it fails the request
    ("Server disconnected without sending a response"); it happened in a capacity run when
    httpx's 5 s expiry met the LLM server's 5 s keep-alive. The app's pool drops idle
    connections earlier than hypercorn (the simulators), uvicorn (vLLM) and llama.cpp's server."""
    from hypercorn.config import Config

    from unmute_trio.web.app import HTTP_LIMITS

    common_server_keep_alive_s = min(Config().keep_alive_timeout, 5.0)  # uvicorn, llama.cpp: 5 s
    assert HTTP_LIMITS.keepalive_expiry is not None
    assert HTTP_LIMITS.keepalive_expiry <= common_server_keep_alive_s - 0.5
    assert HTTP_LIMITS.max_keepalive_connections == HTTP_LIMITS.max_connections
