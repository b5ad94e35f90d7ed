"""The OpenAI Realtime API (GA) through the official ``openai`` SDK, against a real hypercorn
server on the STT/TTS/LLM simulators.

The SDK's realtime client runs on asyncio (``websockets``), so each client script runs with
``asyncio.run`` in a worker thread while the server runs in the test's trio loop. Every event the
server sends is validated against the SDK's own pydantic ``RealtimeServerEvent`` union.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import trio
from openai import AsyncOpenAI
from openai.types import realtime as sdk
from pydantic import TypeAdapter
from trio_websocket import open_websocket_url

from unmute_trio.protocol.g711 import (
    Downsampler24To8,
    float32_to_int16,
    float32_to_pcm16,
    ulaw_decode,
    ulaw_encode,
)
from unmute_trio.testing.harness import conversation_stack
from unmute_trio.testing.llm_sim import LlmSimConfig
from unmute_trio.testing.speech import silence, speech_like

SDK_SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(sdk.RealtimeServerEvent)
QUESTION = "What is the weather in Paris?"
WEATHER = "sunny, 21 degrees"
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather now in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
LLM = LlmSimConfig(
    tool_calls={QUESTION: ("get_weather", {"city": "Paris"})},
    replies={WEATHER: "It is sunny in Paris, twenty one degrees."},
)


class Client:
    """An SDK connection plus every server event received, each validated by the SDK."""

    def __init__(self, connection: Any) -> None:
        self.conn = connection
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.conn.send(event)

    async def next(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv_bytes(), 30)
        event = json.loads(raw)
        SDK_SERVER_EVENT.validate_python(event)  # raises on any shape the SDK would not accept
        self.events.append(event)
        return event

    async def until(self, kind: str, **fields: Any) -> dict[str, Any]:
        while True:
            event = await self.next()
            if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event

    async def speak(self, pcm: np.ndarray, chunk_s: float = 0.04, *, ulaw: bool = False) -> None:
        """Append audio (24 kHz float32) as PCM16, or as 8 kHz G.711 μ-law, in real-time-sized
        chunks, a bit faster than real time."""
        if ulaw:
            pcm8 = Downsampler24To8().process(pcm)
            codes = ulaw_encode(float32_to_int16(pcm8)).tobytes()
            step = int(8_000 * chunk_s)
            chunks = [codes[i : i + step] for i in range(0, len(codes), step)]
        else:
            step = int(24_000 * chunk_s)
            chunks = [float32_to_pcm16(pcm[i : i + step]) for i in range(0, len(pcm), step)]
        for chunk in chunks:
            audio = base64.b64encode(chunk).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": audio})
            await asyncio.sleep(chunk_s / 2)


async def run_sdk(base_url: str, script: Callable[[Client], Awaitable[None]]) -> list[dict]:
    """Run ``script`` on a fresh SDK realtime connection in a worker thread."""

    async def main() -> list[dict]:
        openai = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-test")
        async with openai.realtime.connect(model="sim-model") as connection:
            client = Client(connection)
            try:
                await script(client)
            finally:
                await connection.close()
            return client.events

    return await trio.to_thread.run_sync(lambda: asyncio.run(main()))


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


async def test_spoken_conversation_with_a_tool_call() -> None:
    """Text question → function call → tool result → spoken answer; then a spoken turn with
    server VAD and transcription; then barge-in over the reply."""
    seen: dict[str, Any] = {}

    async def script(c: Client) -> None:
        created = await c.until("session.created")
        seen["model"] = created["session"]["model"]
        await c.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "You are a weather assistant.",
                    "tools": [TOOL],
                    "audio": {"input": {"transcription": {"model": "any"}}},
                },
            }
        )
        updated = await c.until("session.updated")
        seen["tools"] = updated["session"]["tools"]

        # A typed question: the LLM asks for the tool.
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": QUESTION}],
        }
        await c.send({"type": "conversation.item.create", "item": item})
        await c.send({"type": "response.create"})
        call = await c.until("response.function_call_arguments.done")
        done = await c.until("response.done")
        seen["call"] = call
        seen["call_response"] = done["response"]

        # The client runs the tool and asks for the answer, which is spoken.
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": WEATHER}
        await c.send({"type": "conversation.item.create", "item": output})
        await c.send({"type": "response.create"})
        done = await c.until("response.done")
        seen["answer"] = done["response"]

        # A spoken turn: server VAD ends it, transcription is reported, the reply starts.
        start = len(c.events)
        speak = asyncio.create_task(c.speak(np.concatenate([speech_like(1.5), silence(3.0)])))
        await c.until("response.created")
        await c.until("response.output_audio.delta")
        seen["spoken_turn"] = c.events[start:]
        # Talk over the reply: it is cancelled, and nothing of it follows its response.done.
        await speak
        cut_at = len(c.events)
        speak = asyncio.create_task(c.speak(np.concatenate([speech_like(1.5), silence(1.0)])))
        cancelled = await c.until("response.done")
        seen["barge_in"] = cancelled["response"]
        seen["barge_in_id"] = cancelled["response"]["id"]
        await speak
        await asyncio.sleep(1.0)
        # A client error is answered with the client's event id, and the session goes on.
        await c.send({"type": "no.such.event", "event_id": "evt_client_1"})
        seen["error"] = await c.until("error")
        seen["after_cut"] = c.events[cut_at:]

    async with conversation_stack(llm=LLM) as stack:
        with trio.fail_after(90):
            events = await run_sdk(stack.base_url, script)
        llm_requests = [r.body for r in stack.llm.requests if r.path == "/v1/chat/completions"]

    assert seen["model"] == "sim-model"
    assert [t["name"] for t in seen["tools"]] == ["get_weather"]
    # The function call, as the SDK sees it.
    assert seen["call"]["name"] == "get_weather"
    assert json.loads(seen["call"]["arguments"]) == {"city": "Paris"}
    outputs = seen["call_response"]["output"]
    assert seen["call_response"]["status"] == "completed"
    assert [o["type"] for o in outputs][-1] == "function_call"
    # The tools went to the LLM in the chat-completions shape, and the result came back.
    assert llm_requests[0]["tools"][0]["function"]["name"] == "get_weather"
    tool_messages = [m for m in llm_requests[1]["messages"] if m["role"] == "tool"]
    assert tool_messages == [
        {"role": "tool", "tool_call_id": seen["call"]["call_id"], "content": WEATHER}
    ]
    answer = seen["answer"]
    assert answer["status"] == "completed"
    transcript = answer["output"][0]["content"][0]["transcript"]
    assert transcript == "It is sunny in Paris, twenty one degrees."
    # The spoken turn: VAD and transcription events in GA order, then the reply.
    spoken = types(seen["spoken_turn"])
    for kind in (
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
    ):
        assert kind in spoken, (kind, spoken)
    assert (
        spoken.index("input_audio_buffer.speech_started")
        < spoken.index("conversation.item.input_audio_transcription.delta")
        < spoken.index("input_audio_buffer.committed")
        < spoken.index("response.created")
    )
    # Barge-in: cancelled by the user's speech, and silence from that response afterwards.
    assert seen["barge_in"]["status"] == "cancelled"
    assert seen["barge_in"]["status_details"]["reason"] == "turn_detected"
    done_at = next(
        i
        for i, e in enumerate(seen["after_cut"])
        if e["type"] == "response.done" and e["response"]["id"] == seen["barge_in_id"]
    )
    late = [
        e for e in seen["after_cut"][done_at + 1 :] if e.get("response_id") == seen["barge_in_id"]
    ]
    assert late == []
    # The error shape.
    error = seen["error"]["error"]
    assert error["type"] == "invalid_request_error" and error["event_id"] == "evt_client_1"
    assert error["code"] and error["message"]
    assert all(e["type"] != "error" or e is seen["error"] for e in events), types(events)


async def test_text_only_manual_turns_and_cancel() -> None:
    """``turn_detection: null``: audio is committed by hand and the reply asked for; a text-only
    reply; ``response.cancel``."""
    seen: dict[str, Any] = {}

    async def script(c: Client) -> None:
        await c.until("session.created")
        session = {
            "type": "realtime",
            "output_modalities": ["text"],
            "audio": {"input": {"turn_detection": None}},
        }
        await c.send({"type": "session.update", "session": session})
        await c.until("session.updated")
        await c.speak(np.concatenate([speech_like(1.2), silence(0.5)]))
        await c.send({"type": "input_audio_buffer.commit"})
        await c.send({"type": "response.create"})
        seen["committed"] = await c.until("input_audio_buffer.committed")
        start = len(c.events)
        seen["done"] = (await c.until("response.done"))["response"]
        seen["reply_events"] = c.events[start:]
        # Cancel a reply right after asking for it.
        await c.send({"type": "response.create"})
        await c.until("response.created")
        await c.send({"type": "response.cancel"})
        seen["cancelled"] = (await c.until("response.done"))["response"]
        # Cancelling when nothing runs is an error.
        await c.send({"type": "response.cancel", "event_id": "evt_2"})
        seen["error"] = (await c.until("error"))["error"]

    async with conversation_stack(llm=LlmSimConfig(tokens_per_s=20)) as stack:
        with trio.fail_after(60):
            await run_sdk(stack.base_url, script)
        llm_requests = [r.body for r in stack.llm.requests if r.path == "/v1/chat/completions"]

    done = seen["done"]
    assert done["status"] == "completed"
    text = done["output"][0]["content"][0]["text"]
    assert text.startswith("You said:"), text
    reply = types(seen["reply_events"])
    assert "response.output_text.delta" in reply
    assert "response.output_audio.delta" not in reply
    # The committed words reached the LLM as the user's message.
    user = [m for m in llm_requests[0]["messages"] if m["role"] == "user"]
    assert user and user[-1]["content"] != "Hello!", llm_requests[0]["messages"]
    cancelled = seen["cancelled"]
    assert cancelled["status"] == "cancelled"
    assert cancelled["status_details"]["reason"] == "client_cancelled"
    assert seen["error"]["code"] == "response_cancel_not_active"
    assert seen["error"]["event_id"] == "evt_2"


async def test_token_limit_and_usage_in_response_done() -> None:
    """``max_output_tokens`` reaches the LLM; a reply cut by it ends ``incomplete`` with reason
    ``max_output_tokens``; ``usage`` carries the LLM server's token counts."""
    seen: dict[str, Any] = {}

    async def script(c: Client) -> None:
        await c.until("session.created")
        text = [{"type": "input_text", "text": "Tell me about the sea."}]
        item = {"type": "message", "role": "user", "content": text}
        await c.send({"type": "conversation.item.create", "item": item})
        limited = {"output_modalities": ["text"], "max_output_tokens": 4}
        await c.send({"type": "response.create", "response": limited})
        seen["limited"] = (await c.until("response.done"))["response"]
        await c.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        seen["full"] = (await c.until("response.done"))["response"]

    async with conversation_stack() as stack:
        with trio.fail_after(60):
            await run_sdk(stack.base_url, script)
        llm_requests = [r.body for r in stack.llm.requests if r.path == "/v1/chat/completions"]

    limited, full = seen["limited"], seen["full"]
    assert llm_requests[0]["max_tokens"] == 4 and "max_tokens" not in llm_requests[1]
    assert limited["status"] == "incomplete", limited
    assert limited["status_details"]["reason"] == "max_output_tokens"
    assert limited["output"][0]["status"] == "incomplete"
    assert limited["usage"]["output_tokens"] == 4
    assert full["status"] == "completed" and full["output"][0]["status"] == "completed"
    usage = full["usage"]
    assert usage["output_tokens"] > 4 and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_telephone_audio_and_items_after_a_reply() -> None:
    """G.711 μ-law at 8 kHz both ways through a spoken turn; then the reply's item is retrieved,
    truncated and deleted (the next LLM request no longer has it)."""
    seen: dict[str, Any] = {}

    async def script(c: Client) -> None:
        await c.until("session.created")
        ulaw = {"type": "audio/pcmu"}
        audio = {"input": {"format": ulaw}, "output": {"format": ulaw}}
        await c.send({"type": "session.update", "session": {"type": "realtime", "audio": audio}})
        seen["session"] = (await c.until("session.updated"))["session"]
        start = len(c.events)
        await c.speak(np.concatenate([speech_like(1.5), silence(3.0)]), ulaw=True)
        seen["done"] = (await c.until("response.done"))["response"]
        seen["audio"] = b"".join(
            base64.b64decode(e["delta"])
            for e in c.events[start:]
            if e["type"] == "response.output_audio.delta"
        )
        item_id = seen["done"]["output"][0]["id"]
        await c.send({"type": "conversation.item.retrieve", "item_id": item_id})
        seen["retrieved"] = (await c.until("conversation.item.retrieved"))["item"]
        truncate = {"item_id": item_id, "content_index": 0, "audio_end_ms": 500}
        await c.send({"type": "conversation.item.truncate", **truncate})
        seen["truncated"] = await c.until("conversation.item.truncated")
        # Deleting the reply takes it out of the LLM's context; an unknown item is an error.
        await c.send({"type": "conversation.item.delete", "item_id": item_id})
        seen["deleted"] = await c.until("conversation.item.deleted")
        await c.send({"type": "conversation.item.delete", "item_id": item_id, "event_id": "e3"})
        seen["delete_again"] = (await c.until("error"))["error"]
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Hi"}],
        }
        await c.send({"type": "conversation.item.create", "item": item})
        await c.send({"type": "response.create"})
        await c.until("response.done")

    async with conversation_stack() as stack:
        with trio.fail_after(60):
            await run_sdk(stack.base_url, script)
        # The first reply's frames (the second reply, after the deletion, has its own stream).
        frames = next(r.frames_sent for r in stack.tts.connections_log if r.frames_sent)
        # PCM from the TTS even though UNMUTE_TTS_AUDIO defaults to opus (Unmute dialect only).
        assert {r.format for r in stack.tts.connections_log} == {"PcmMessagePack"}
        llm_requests = [r.body for r in stack.llm.requests if r.path == "/v1/chat/completions"]

    assert seen["session"]["audio"]["output"]["format"]["type"] == "audio/pcmu"
    done = seen["done"]
    assert done["status"] == "completed"
    transcript = done["output"][0]["content"][0]["transcript"]
    assert transcript.startswith("You said"), transcript  # the simulated STT heard a turn
    # μ-law is one byte per 8 kHz sample: the bytes are the audio's length at 8 kHz, and they
    # decode to speech-level audio, not silence.
    # Every 80 ms TTS frame gives 640 codes (plus the resampling filter's tail at the end).
    assert abs(len(seen["audio"]) - frames * 640) <= 64, (len(seen["audio"]), frames)
    level = np.sqrt(np.mean((ulaw_decode(seen["audio"]).astype(np.float64) / 32768) ** 2))
    assert level > 0.01, level
    assert seen["retrieved"]["content"][0]["transcript"] == transcript
    assert seen["truncated"]["audio_end_ms"] == 500
    assert seen["deleted"]["item_id"] == done["output"][0]["id"]
    assert seen["delete_again"]["event_id"] == "e3"
    assert seen["delete_again"]["code"] == "item_not_found"
    # The request after the deletion: the user's two turns, merged, and no reply between them.
    after = llm_requests[-1]["messages"]
    assert [m["role"] for m in after] == ["system", "user"], after
    assert after[-1]["content"].endswith(" Hi"), after


async def test_a_client_that_sends_no_audio_keeps_its_session(virtual_clock) -> None:
    """moshi-server closes an STT stream that receives nothing for 20 s; a text-only OpenAI
    client sends no audio at all, so the server keeps the stream alive with silent frames.
    (Its first event comes at once: a client that sends none for UNMUTE_FIRST_EVENT_TIMEOUT_S
    is closed, see test_client_timeouts.py.)"""
    async with conversation_stack() as stack:
        url = stack.realtime_url + "?model=sim-model"
        async with open_websocket_url(url) as ws:
            with trio.fail_after(300):
                created = json.loads(await ws.get_message())
                assert created["type"] == "session.created"
                session = {"type": "realtime", "output_modalities": ["text"]}
                await ws.send_message(json.dumps({"type": "session.update", "session": session}))
                await trio.sleep(60)  # virtual time: three STT idle timeouts
                item = {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Still there?"}],
                }
                await ws.send_message(
                    json.dumps({"type": "conversation.item.create", "item": item})
                )
                await ws.send_message(json.dumps({"type": "response.create"}))
                while (event := json.loads(await ws.get_message()))["type"] != "response.done":
                    assert event["type"] != "error", event
        assert event["response"]["status"] == "completed"
        assert [r.end for r in stack.stt.connections_log] == ["client"]  # one stream, still open
