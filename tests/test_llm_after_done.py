"""The end of an LLM reply is ``data: [DONE]``, not the end of the connection (issue 17): a
server may keep the stream open after it (keep-alive comments) or send bytes after it. The
reply must end at ``[DONE]`` and what follows be read within the client's limits
(``DRAIN_TIMEOUT_S``, ``DRAIN_MAX_BYTES``), so the connection can be reused or is closed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from unmute_trio.services.llm import DRAIN_MAX_BYTES, DRAIN_TIMEOUT_S, LLMClient
from unmute_trio.testing.llm_sim import LlmSimConfig, LlmSimulator

MESSAGES = [{"role": "user", "content": "I like trains"}]
REPLY = "You said: I like trains. Tell me more. What happened next?"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def reply_times(
    nursery: trio.Nursery, http: httpx.AsyncClient, **config: object
) -> tuple[list[str], float, float, float]:
    """The words, when the last arrived, when the channel ended, when the block was left."""
    sim = LlmSimulator(LlmSimConfig(ttft_s=0.0, tokens_per_s=100.0, **config))
    port = await nursery.start(sim.serve)
    llm = LLMClient(f"http://127.0.0.1:{port}", http=http, api_key=None, model="sim-llm")
    words: list[str] = []
    with trio.fail_after(10):
        async with llm.stream_words(MESSAGES, temperature=0.3) as channel:
            async for word in channel:
                words.append(word)
                last_word_at = trio.current_time()
            ended_at = trio.current_time()
        left_at = trio.current_time()
    return words, last_word_at, ended_at, left_at


async def test_a_stream_held_open_after_done_ends_the_reply_at_done(
    nursery: trio.Nursery, http: httpx.AsyncClient, virtual_clock: trio.testing.MockClock
) -> None:
    words, last_word_at, ended_at, left_at = await reply_times(
        nursery, http, after_done_open_s=30.0
    )
    assert "".join(words) == REPLY
    # The reply ended with [DONE], right after its last word, not 30 s later at the close...
    assert ended_at - last_word_at < 0.05
    # ...and reading the keep-alives that follow stops at DRAIN_TIMEOUT_S.
    assert DRAIN_TIMEOUT_S - 0.05 <= left_at - ended_at <= DRAIN_TIMEOUT_S + 0.1


async def test_bytes_after_done_are_read_up_to_the_limit_only(
    nursery: trio.Nursery, http: httpx.AsyncClient
) -> None:
    # Real time: a quarter of a megabyte through loopback is quick, and a virtual clock only
    # jumps when every task is idle, which a server that keeps sending never is.
    words, _, ended_at, left_at = await reply_times(
        nursery, http, after_done_bytes=4 * DRAIN_MAX_BYTES, after_done_open_s=30.0
    )
    assert "".join(words) == REPLY
    # Past DRAIN_MAX_BYTES the client stops reading at once (and closes the connection)
    # instead of waiting out DRAIN_TIMEOUT_S on a server that keeps sending.
    assert left_at - ended_at < DRAIN_TIMEOUT_S / 2
