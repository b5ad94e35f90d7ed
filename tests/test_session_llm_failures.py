"""An LLM reply cut short, through a whole session (real hypercorn socket, simulators, virtual
time): the user is told the LLM failed, as for any other LLM failure, instead of hearing the
start of the reply as if it were all of it."""

from __future__ import annotations

import trio

from tests.session_helpers import SMALLTALK, closed_while_silent, wait_service_connections_closed
from unmute_trio.testing.harness import conversation_stack
from unmute_trio.testing.llm_sim import LlmSimConfig
from unmute_trio.testing.voice_client import VoiceClient

GREETING = "Hello there, my friend. How are you doing today?"


async def test_a_truncated_llm_stream_is_fatal_like_other_llm_failures(virtual_clock) -> None:
    # The body ends after "Hel", "lo", " th", "ere", ",", " my": no finish_reason, no [DONE].
    llm = LlmSimConfig(replies={"Hello!": GREETING}, truncate_after_tokens=6)
    async with conversation_stack(llm=llm) as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await client.update_session(SMALLTALK)
                assert await closed_while_silent(client) == 1011
            [error] = client.of_type("error")
            assert error["error"]["type"] == "fatal"
            assert error["error"]["message"] == (
                "Service 'llm' is not working right now. Please try again later."
            )
            # The reply had started; it is not presented as complete.
            assert client.of_type("response.created")
            planned = "".join(
                e["delta"] for e in client.of_type("unmute.response.text.delta.ready")
            )
            assert GREETING.startswith(planned) and planned != GREETING
            assert not client.of_type("response.text.done")
            assert not client.of_type("response.audio.done")
        await wait_service_connections_closed(stack)
