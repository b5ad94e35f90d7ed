"""An OpenAI Agents SDK realtime agent with a function tool, talking to unmute-trio.

The agent gets a typed question, calls ``get_weather`` (a Python function the SDK runs), and
the server speaks the answer. The script prints what happens and writes the spoken answer to a
WAV file, so it needs no sound card.

    .venv/bin/pip install "openai-agents==0.24.0"       # in the dev extra already
    make run &                                          # or: unmute-trio serve with your services
    .venv/bin/python examples/realtime_agent.py [--url http://localhost:8000] [--key KEY]
        [--question "What is the weather in Paris?"] [--wav answer.wav]

Tool calls need an LLM that makes them: the default local 0.5B model usually answers without
calling the tool (docs/local-llm.md); an OpenAI-compatible server with tool support does
(``KYUTAI_LLM_URL``: Ollama, vLLM, llama.cpp ``--jinja`` with a larger model, OpenAI).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import wave

from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner


@function_tool
def get_weather(city: str) -> str:
    """The weather now in a city."""
    print(f"  [tool] get_weather(city={city!r})")
    return f"Sunny and 21 degrees in {city}."


async def main(args: argparse.Namespace) -> int:
    agent = RealtimeAgent(
        name="Weather",
        instructions="You answer questions about the weather. Use the get_weather tool.",
        tools=[get_weather],
    )
    url = args.url.rstrip("/").replace("http", "ws", 1) + "/v1/realtime?model=unmute-trio"
    session = await RealtimeRunner(agent).run(model_config={"url": url, "api_key": args.key})
    audio = bytearray()
    async with session:
        print(f"connected to {url}\nuser: {args.question}")
        await session.send_message(args.question)
        async for event in session:
            if event.type == "tool_start":
                print(f"  [tool call] {event.tool.name} {event.arguments}")
            elif event.type == "audio":
                audio += event.audio.data  # PCM16, 24 kHz, mono
            elif event.type == "error":
                print(f"error: {event.error}", file=sys.stderr)
                return 1
            elif event.type == "history_updated":
                last = event.history[-1] if event.history else None
                if last is not None and last.type == "message" and last.role == "assistant":
                    # The SDK fills the transcript once the reply's item is done.
                    text = "".join(getattr(c, "transcript", None) or "" for c in last.content)
                    if text and len(audio) > 0:
                        print(f"assistant: {text}")
                        break
    with wave.open(args.wav, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(24_000)
        out.writeframes(bytes(audio))
    print(f"{len(audio) / 48_000:.1f} s of speech written to {args.wav}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://localhost:8000")
    parser.add_argument("--key", default="unused", help="one of UNMUTE_API_KEYS, if set")
    parser.add_argument("--question", default="What is the weather in Paris?")
    parser.add_argument("--wav", default="answer.wav")
    sys.exit(asyncio.run(main(parser.parse_args())))
