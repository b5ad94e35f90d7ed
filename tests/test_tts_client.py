"""The TTS client against the TTS simulator over real loopback sockets."""

from __future__ import annotations

import socket
from collections.abc import Callable

import numpy as np
import pytest
import sphn
import trio

from unmute_trio.errors import (
    ServiceAtCapacity,
    ServiceDisconnected,
    ServiceProtocolError,
    ServiceTimeout,
)
from unmute_trio.protocol.moshi import (
    SAMPLES_PER_FRAME,
    Audio,
    OggOpus,
    TextOut,
    Voice,
    decode_tts_server,
    encode,
)
from unmute_trio.protocol.ogg_opus import OggOpusWriter, OpusPackets
from unmute_trio.services.tts import TextToSpeech, TtsMessage, connect_tts, tts_query
from unmute_trio.testing.tts_sim import TtsSimConfig, TtsSimulator


async def start_sim(nursery: trio.Nursery, **config: object) -> tuple[TtsSimulator, str]:
    config.setdefault("realtime_factor", 0.0)  # no pacing: tests need no real-time audio
    sim = TtsSimulator(TtsSimConfig(**config))  # type: ignore[arg-type]
    port = await nursery.start(sim.serve)
    return sim, f"ws://127.0.0.1:{port}"


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 1.0) -> None:
    with trio.fail_after(timeout_s):
        # Polling: the simulator's connection count has no event to wait on.
        while not predicate():
            await trio.sleep(0.005)


async def receive_all(tts: TextToSpeech) -> list[Audio | TextOut]:
    messages: list[Audio | TextOut] = []
    with trio.fail_after(2):
        while (message := await tts.receive()) is not None:
            messages.append(message)
    return messages


async def test_happy_path(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery, seconds_per_word=0.16)
    voice = "unmute-prod-website/p329 022.wav"
    async with connect_tts(url, voice=voice) as tts:
        assert await tts.send_text("Hello **there**, “friend” : how") is True
        assert await tts.send_text("  * _ ") is False  # cleans to nothing: not sent
        assert await tts.send_text("are you?") is True
        await tts.send_eos()
        messages = await receive_all(tts)
        assert await tts.receive() is None  # stays finished
        with pytest.raises(RuntimeError):
            await tts.send_text("too late")
    record = sim.connections_log[-1]
    assert record.voice == voice  # escaped in the URL, decoded by the server
    assert record.format == "PcmMessagePack"
    assert record.texts == ['Hello there, "friend" how', "are you?"]
    assert record.end == "finished"
    words = [m for m in messages if isinstance(m, TextOut)]
    audio = [m for m in messages if isinstance(m, Audio)]
    assert [w.text for w in words] == ["Hello", "there,", '"friend"', "how", "are", "you?"]
    assert [w.start_s for w in words] == pytest.approx([0.16 * i for i in range(6)])
    assert all(w.stop_s > w.start_s for w in words)
    assert len(audio) == record.frames_sent == 12
    assert all(len(a.pcm) == SAMPLES_PER_FRAME and a.pcm.dtype == np.float32 for a in audio)
    assert tts.received_samples == 12 * SAMPLES_PER_FRAME
    await wait_until(lambda: sim.open_connections == 0)


async def test_custom_voice_is_sent_as_a_message_not_in_the_url(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    voice_message = encode(Voice(embeddings=np.zeros(24, np.float32), shape=[1, 4, 6]))
    async with connect_tts(url, voice="custom:1234", custom_voice_message=voice_message) as tts:
        await tts.send_text("Hi")
        await tts.send_eos()
        await receive_all(tts)
    record = sim.connections_log[-1]
    assert record.voice is None
    assert record.voice_message is True
    assert record.voice_shape == [1, 4, 6]
    assert record.texts == ["Hi"]


async def test_custom_voice_without_its_message_uses_the_default(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    async with connect_tts(url, voice="custom:gone"):
        pass
    record = sim.connections_log[-1]
    assert record.voice is None and record.voice_message is False
    with pytest.raises(ValueError):
        async with connect_tts(url, voice="named.wav", custom_voice_message=b"\x80"):
            pass


async def test_at_capacity(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery, capacity=1)
    async with connect_tts(url) as first:
        with pytest.raises(ServiceAtCapacity) as info:
            async with connect_tts(url):
                pytest.fail("connected beyond capacity")
        assert info.value.service == "tts"
        await first.send_text("still works")
        await first.send_eos()
        assert any(isinstance(m, Audio) for m in await receive_all(first))
    await wait_until(lambda: sim.open_connections == 0)


async def test_bad_api_key(nursery: trio.Nursery) -> None:
    _sim, url = await start_sim(nursery, api_key="secret")
    with pytest.raises(ServiceProtocolError) as info:
        async with connect_tts(url):
            pytest.fail("connected with a bad key")
    assert info.value.service == "tts"
    assert "401" in info.value.detail
    async with connect_tts(url, api_key="secret"):
        pass


async def test_handshake_timeout_closes_the_socket(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery, handshake_delay_s=30.0)
    with pytest.raises(ServiceTimeout) as info:
        async with connect_tts(url, handshake_timeout_s=0.2):
            pytest.fail("no Ready was sent")
    assert info.value.service == "tts"
    await wait_until(lambda: sim.open_connections == 0)


async def test_server_dying_mid_stream(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    async with connect_tts(url) as tts:
        await tts.send_text("one two three four")
        with trio.fail_after(1):
            while not isinstance(await tts.receive(), Audio):
                pass
        await sim.kill_connections()
        with trio.fail_after(1), pytest.raises(ServiceDisconnected) as info:
            while True:
                await tts.receive()
        assert info.value.service == "tts"
    await wait_until(lambda: sim.open_connections == 0)


async def test_close_before_eos_is_a_disconnection(nursery: trio.Nursery) -> None:
    # The simulator closes idle streams in order (code 1000): before Eos that is still an error.
    _sim, url = await start_sim(nursery, idle_timeout_s=0.1)
    async with connect_tts(url) as tts:
        with trio.fail_after(1), pytest.raises(ServiceDisconnected):
            await tts.receive()


async def test_cancellation_mid_stream_closes_everything(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery, realtime_factor=1.0)  # slow enough to be mid-stream
    with trio.fail_after(1):
        with trio.CancelScope() as scope:
            async with connect_tts(url) as tts:
                await tts.send_text("a long answer that is interrupted")
                assert isinstance(await tts.receive(), TextOut | Audio)
                scope.cancel()
                await tts.receive()
                pytest.fail("not cancelled")
    assert scope.cancelled_caught
    await wait_until(lambda: sim.open_connections == 0)
    assert sim.connections_log[-1].end == "client"


async def test_refused_connection_is_disconnected() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(ServiceDisconnected):
        async with connect_tts(f"ws://127.0.0.1:{closed_port}"):
            pytest.fail("connected to a closed port")


@pytest.mark.parametrize(
    ("voice", "query"),
    [
        (None, "format=PcmMessagePack"),
        ("custom:abc", "format=PcmMessagePack"),
        ("a b/c.wav", "format=PcmMessagePack&voice=a%20b%2Fc.wav"),
        ("x&y=z", "format=PcmMessagePack&voice=x%26y%3Dz"),
    ],
)
def test_tts_query(voice: str | None, query: str) -> None:
    assert tts_query(voice) == query
    opus = query.replace("PcmMessagePack", "OggOpusMessagePack")
    assert tts_query(voice, opus=True) == opus


async def test_opus_packets_from_the_simulator(nursery: trio.Nursery) -> None:
    """format=OggOpusMessagePack: the OggOpus pages are read into whole audio packets."""
    sim, url = await start_sim(nursery, seconds_per_word=0.16)
    async with connect_tts(url, opus=True) as tts:
        await tts.send_text("one two three")
        await tts.send_eos()
        messages = await receive_all_opus(tts)
    record = sim.connections_log[-1]
    assert record.format == "OggOpusMessagePack" and record.end == "finished"
    audio = [m for m in messages if isinstance(m, OpusPackets)]
    assert [m.text for m in messages if isinstance(m, TextOut)] == ["one", "two", "three"]
    # One message per 1920-sample frame: two 40 ms packets each, the headers dropped.
    assert len(audio) == record.frames_sent == 6
    assert all(len(a.packets) == 2 and a.samples == SAMPLES_PER_FRAME for a in audio)
    assert tts.received_samples == 6 * SAMPLES_PER_FRAME
    # They are real Opus: a stream made of them decodes to that many samples of sound.
    pcm = sphn.OpusStreamReader(24_000).append_bytes(
        OggOpusWriter().pages([p for a in audio for p in a.packets])
    )
    assert np.asarray(pcm).size == 6 * SAMPLES_PER_FRAME and np.abs(pcm).max() > 0.1


async def receive_all_opus(tts: TextToSpeech) -> list[TtsMessage]:
    messages: list[TtsMessage] = []
    with trio.fail_after(2):
        while (message := await tts.receive()) is not None:
            messages.append(message)
    return messages


class _OneMessage:
    """A transport that delivers one encoded server message, as a socket would hand it over."""

    def __init__(self, message: OggOpus) -> None:
        self._pending = [encode(message)]

    async def send(self, data: bytes) -> None:
        pass

    async def receive(self) -> object:
        return decode_tts_server(self._pending.pop()) if self._pending else None


@pytest.mark.parametrize(
    ("opus", "data", "error"),
    [
        (False, OggOpusWriter().pages([b"\xf8\x01"]), "OggOpus audio, but PcmMessagePack"),
        (True, b"RIFF" + bytes(40), "broken Ogg/Opus audio: not an Ogg page"),
    ],
)
async def test_opus_that_cannot_be_used_is_a_protocol_error(
    opus: bool, data: bytes, error: str
) -> None:
    tts = TextToSpeech(_OneMessage(OggOpus(data=data)), opus=opus)  # type: ignore[arg-type]
    with pytest.raises(ServiceProtocolError, match=error):
        await tts.receive()


async def test_more_than_two_seconds_of_opus_in_one_message_is_refused() -> None:
    """A broken TTS cannot queue hours of tiny packets: each message holds at most 2 s."""
    packets = [bytes([(16 << 3) | 3, 48])] * 17  # 17 packets of 120 ms: 2.04 s
    data = OggOpusWriter().pages(packets)
    tts = TextToSpeech(_OneMessage(OggOpus(data=data)), opus=True)  # type: ignore[arg-type]
    with pytest.raises(ServiceProtocolError, match=r"2\.0 s of Opus audio in one message"):
        await tts.receive()
    two_seconds = OggOpus(data=OggOpusWriter().pages(packets[:16]))
    fine = TextToSpeech(_OneMessage(two_seconds), opus=True)  # type: ignore[arg-type]
    audio = await fine.receive()
    assert isinstance(audio, OpusPackets) and audio.samples == 16 * 2880
