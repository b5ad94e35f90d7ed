"""Session features beyond turn-taking: recordings, cloned voices, a client that stops reading."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import sphn
import trio

from tests.session_helpers import SMALLTALK, greet, wait_service_connections_closed
from unmute_trio.protocol import moshi
from unmute_trio.session.runner import run_conversation
from unmute_trio.testing.harness import conversation_stack
from unmute_trio.testing.llm_sim import LlmSimConfig
from unmute_trio.testing.tts_sim import TtsSimConfig
from unmute_trio.testing.voice_client import VoiceClient


async def test_recording_is_written_with_anonymised_audio(virtual_clock, tmp_path: Path) -> None:
    async with conversation_stack(recordings_dir=tmp_path / "rec") as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await greet(client, allow_recording=True)
        await wait_service_connections_closed(stack)
    [path] = list((tmp_path / "rec").glob("*.jsonl"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {line["event_sender"] for line in lines} == {"client", "server"}
    types = [line["data"]["type"] for line in lines]
    assert "input_audio_buffer.append" not in types
    assert "unmute.input_audio_buffer.append_anonymized" in types
    assert "unmute.response.audio.delta.ready" in types
    assert "response.audio.delta" in types and "session.updated" in types
    assert all(isinstance(line["timestamp_wall"], float) for line in lines)


async def test_recording_is_deleted_without_consent(virtual_clock, tmp_path: Path) -> None:
    async with conversation_stack(recordings_dir=tmp_path / "rec") as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await greet(client, allow_recording=False)
        await wait_service_connections_closed(stack)
    assert list((tmp_path / "rec").glob("*.jsonl")) == []


async def test_cloned_voice_is_sent_to_the_tts_before_any_text(virtual_clock) -> None:
    async with conversation_stack() as stack:
        embeddings = np.linspace(-1, 1, 512 * 125, dtype=np.float32)
        message = moshi.encode(moshi.Voice(embeddings=embeddings, shape=[1, 512, 125]))
        name = await stack.state.voice_store.add(message)
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await greet(client, voice=name)
        await wait_service_connections_closed(stack)
    [record] = [c for c in stack.tts.connections_log if c.words_spoken]
    assert record.voice is None  # a custom voice never goes into the URL
    assert record.voice_message and record.voice_shape == [1, 512, 125]


async def test_an_unknown_cloned_voice_is_spoken_with_the_default_voice_and_a_warning(
    virtual_clock,
) -> None:
    unknown = "custom:7b0a4b53-7d8e-4a34-9d77-52b1ad3f4f0e"  # expired, or from another process
    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            with trio.fail_after(60):
                await greet(client, voice=unknown)
        await wait_service_connections_closed(stack)
    [record] = [c for c in stack.tts.connections_log if c.words_spoken]
    assert record.voice is None and not record.voice_message
    warnings = [(e["error"]["type"], e["error"]["message"]) for e in client.of_type("error")]
    message = (
        f"The cloned voice '{unknown}' is not known (cloned voices expire); "
        "the default voice speaks instead."
    )
    assert warnings == [("warning", message)]


class StalledSocket:
    """A client that sends a session.update and microphone audio but stops reading after a
    few server messages (its ``send`` never returns, like a full TCP window)."""

    def __init__(self, read_messages: int) -> None:
        self.read_messages = read_messages
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self._encoder = sphn.OpusStreamWriter(24000)
        self._script = [
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"instructions": SMALLTALK, "voice": None, "allow_recording": False},
                }
            )
        ]

    async def receive(self) -> str:
        if self._script:
            return self._script.pop(0)
        while True:
            await trio.sleep(0.04)
            ogg = self._encoder.append_pcm(np.zeros(960, dtype=np.float32))
            if ogg:
                audio = base64.b64encode(ogg).decode()
                return json.dumps({"type": "input_audio_buffer.append", "audio": audio})

    async def send(self, text: str) -> None:
        if len(self.sent) >= self.read_messages:
            await trio.sleep_forever()
        self.sent.append(text)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)


async def test_a_client_that_stops_reading_is_disconnected(virtual_clock) -> None:
    # A long greeting, so the writer queue fills while the client is not reading.
    llm_reply = " ".join(["word"] * 300)

    async with conversation_stack(
        llm=LlmSimConfig(replies={"Hello!": llm_reply}, tokens_per_s=1000),
        tts=TtsSimConfig(seconds_per_word=0.3),
    ) as stack:
        socket = StalledSocket(read_messages=3)
        with trio.fail_after(120):
            await run_conversation(socket, stack.state)
        assert socket.closed == (1008, "client too slow")
        await wait_service_connections_closed(stack)
