"""The OpenAI Agents SDK's realtime agent (``openai-agents``, pinned in the dev extra) against
``/v1/realtime`` on the simulators: the SDK configures the session its own way, the agent calls
a Python function tool, and the answer built from the tool's result is spoken.

Like the ``openai`` SDK tests, the client runs on asyncio in a worker thread while the server
runs in the test's trio loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import trio
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner

from unmute_trio.testing.harness import conversation_stack
from unmute_trio.testing.llm_sim import LlmSimConfig

QUESTION = "What is the weather in Paris?"
WEATHER = "sunny, 21 degrees"
ANSWER = "It is sunny in Paris, twenty one degrees."
LLM = LlmSimConfig(
    tool_calls={QUESTION: ("get_weather", {"city": "Paris"})},
    replies={WEATHER: ANSWER},
)


async def talk(base_url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {"cities": [], "events": [], "audio_bytes": 0, "errors": []}

    @function_tool
    def get_weather(city: str) -> str:
        """The weather now in a city."""
        seen["cities"].append(city)
        return WEATHER

    agent = RealtimeAgent(
        name="Weather", instructions="You are a weather assistant.", tools=[get_weather]
    )
    runner = RealtimeRunner(agent)
    url = base_url.replace("http://", "ws://") + "/v1/realtime?model=sim-model"
    session = await runner.run(model_config={"url": url, "api_key": "sk-test"})
    async with session:
        await session.send_message(QUESTION)
        tool_done = False
        async for event in session:
            seen["events"].append(event.type)
            if event.type == "error":
                seen["errors"].append(repr(event.error))
            elif event.type == "tool_end":
                tool_done = True
            elif event.type == "history_updated":
                seen["history"] = history = [item.model_dump() for item in event.history]
                last = history[-1] if history else {}
                spoken = [c.get("transcript") for c in last.get("content") or []]
                if tool_done and last.get("role") == "assistant" and any(spoken):
                    break  # the answer after the tool call is in the history: done
            elif event.type == "audio" and tool_done:
                seen["audio_bytes"] += len(event.audio.data)
    return seen


async def test_realtime_agent_calls_a_tool_and_speaks_the_answer() -> None:
    async with conversation_stack(llm=LLM) as stack:
        with trio.fail_after(60):
            seen = await trio.to_thread.run_sync(lambda: asyncio.run(talk(stack.base_url)))
        llm_requests = [r.body for r in stack.llm.requests if r.path == "/v1/chat/completions"]

    assert seen["errors"] == [], seen["errors"]
    assert seen["cities"] == ["Paris"]
    assert "tool_start" in seen["events"] and "tool_end" in seen["events"]
    assert seen["audio_bytes"] > 24_000 * 2  # more than a second of PCM16 speech
    # The SDK's tool became a chat-completions tool; its result reached the LLM.
    assert llm_requests[0]["tools"][0]["function"]["name"] == "get_weather"
    tool_messages = [m for m in llm_requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [WEATHER]
    # The SDK's own history: the question, the call with its output, the spoken answer.
    history = seen["history"]
    call = next(item for item in history if item["type"] == "function_call")
    assert (call["name"], call["output"]) == ("get_weather", WEATHER)
    assert history[-1]["role"] == "assistant"
    assert history[-1]["content"][0]["transcript"] == ANSWER
