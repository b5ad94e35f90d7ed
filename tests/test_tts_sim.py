"""The TTS simulator against raw trio-websocket clients over loopback: moshi-server 0.6.4's
``/api/tts_streaming`` protocol byte for byte."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
import sphn
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from tests.local_engines import config_fields, local_tts_engine
from unmute_trio.protocol.ogg_opus import OpusAudioReader
from unmute_trio.testing import tts_sim
from unmute_trio.testing.sim_base import BUILD_INFO
from unmute_trio.testing.speech import speech_like
from unmute_trio.testing.tts_sim import TtsSimConfig, TtsSimulator

KEY = [("kyutai-api-key", "public_token")]
TIMEOUT_S = 5  # every wait is bounded so a hang fails fast
PCM_MSGPACK = "?format=PcmMessagePack"
AUDIO_HEADER = b"\x82\xa4type\xa5Audio\xa3pcm\xdc\x07\x80"  # map(2), "pcm": array16(1920)

StartSim = Callable[..., Awaitable[tuple[TtsSimulator, str]]]


@pytest.fixture(params=["simulator", "local"])
def start_sim(request: pytest.FixtureRequest, nursery: trio.Nursery) -> StartSim:
    """One protocol suite, two implementations: the simulator and the local engine (real
    models). Tests marked ``simulator_only`` check the simulator's scripted behaviour; a test
    that sets a simulator-only option is skipped for the engine."""
    local = request.param == "local"
    if local and request.node.get_closest_marker("simulator_only"):
        pytest.skip("checks the simulator's scripted behaviour")

    async def _start(**config: Any) -> tuple[TtsSimulator, str]:
        if local:
            from unmute_trio.engines.tts_server import LocalTtsConfig

            options = set(config) - config_fields(LocalTtsConfig)
            if options:
                pytest.skip(f"simulator-only options: {sorted(options)}")
            sim: Any = local_tts_engine(**config)
        else:
            config.setdefault("realtime_factor", 1000.0)  # keep tests fast
            sim = TtsSimulator(TtsSimConfig(**config))
        port = await nursery.start(sim.serve)
        return sim, f"ws://127.0.0.1:{port}/api/tts_streaming"

    return _start


def packb(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message)


async def read_until_closed(
    ws: WebSocketConnection,
) -> tuple[list[dict[str, Any]], list[bytes], int]:
    """Every message until the server closes, their raw bytes, and the close code."""
    messages: list[dict[str, Any]] = []
    raws: list[bytes] = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            raw = await ws.get_message()
            assert isinstance(raw, bytes)
            raws.append(raw)
            messages.append(msgpack.unpackb(raw))
    return messages, raws, closed.value.reason.code


async def speak(url: str, texts: list[str]) -> tuple[list[dict[str, Any]], list[bytes], int]:
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url + PCM_MSGPACK, extra_headers=KEY) as ws:
            assert msgpack.unpackb(await ws.get_message()) == {"type": "Ready"}
            for text in texts:
                await ws.send_message(packb({"type": "Text", "text": text}))
            await ws.send_message(packb({"type": "Eos"}))
            return await read_until_closed(ws)


async def wait_for_no_connections(sim: TtsSimulator) -> None:
    with trio.fail_after(TIMEOUT_S):
        while sim.open_connections:
            await trio.sleep(0.01)


async def test_build_info_needs_no_auth(start_sim: StartSim) -> None:
    _, url = await start_sim()
    http_url = url.replace("ws://", "http://").replace("/api/tts_streaming", "/api/build_info")
    async with httpx.AsyncClient() as client:
        response = await client.get(http_url)
    assert response.status_code == 200
    assert set(response.json()) == set(BUILD_INFO)


@pytest.mark.parametrize("headers", [[], [("kyutai-api-key", "wrong")]])
async def test_rejects_missing_or_wrong_key_with_401(
    start_sim: StartSim, headers: list[tuple[str, str]]
) -> None:
    sim, url = await start_sim()
    with trio.fail_after(TIMEOUT_S), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(url + PCM_MSGPACK, extra_headers=headers):
            pass
    assert rejected.value.status_code == 401
    await wait_for_no_connections(sim)


async def test_unknown_format_is_rejected_with_400(start_sim: StartSim) -> None:
    _, url = await start_sim()
    with trio.fail_after(TIMEOUT_S), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(url + "?format=Wav", extra_headers=KEY):
            pass
    assert rejected.value.status_code == 400


async def test_speaks_words_with_timed_text_then_closes(start_sim: StartSim) -> None:
    sim, url = await start_sim(seconds_per_word=0.3)
    messages, raws, code = await speak(url, ["Hello there,", " how are you?"])
    assert code == 1000  # the server closes once everything is generated
    texts = [m for m in messages if m["type"] == "Text"]
    assert [t["text"] for t in texts] == ["Hello", "there,", "how", "are", "you?"]
    starts = [t["start_s"] for t in texts]
    assert starts == sorted(starts) and starts[0] == 0.0
    assert all(abs(t["stop_s"] - t["start_s"] - 0.3) < 1e-9 for t in texts)
    # Text runs ahead of audio: a word's Text precedes the frame holding its first sample.
    for i, message in enumerate(messages):
        if message["type"] == "Text":
            audio_before = sum(m["type"] == "Audio" for m in messages[:i])
            assert audio_before * 0.08 <= message["start_s"] + 1e-9

    audio = [(m, raw) for m, raw in zip(messages, raws, strict=True) if m["type"] == "Audio"]
    assert len(audio) == 19  # ceil(5 × 0.3 s / 0.08 s)
    for message, raw in audio:
        assert list(message) == ["type", "pcm"] and len(message["pcm"]) == 1920
        assert raw.startswith(AUDIO_HEADER) and len(raw) == len(AUDIO_HEADER) + 1920 * 5
        assert raw[len(AUDIO_HEADER) :: 5] == b"\xca" * 1920  # every sample a float32
        pcm = np.asarray(message["pcm"], dtype=np.float32)
        assert np.sqrt(np.mean(pcm**2)) > 0.01 and np.max(np.abs(pcm)) <= 0.99
    for message, raw in zip(messages, raws, strict=True):
        if message["type"] == "Text":
            assert list(message) == ["type", "text", "start_s", "stop_s"]
            assert raw == msgpack.packb(message)  # times are float64
    record = sim.connections_log[-1]
    assert record.eos and record.end == "finished" and record.frames_sent == 19
    await wait_for_no_connections(sim)


async def test_duration_grows_with_word_count(start_sim: StartSim) -> None:
    _, url = await start_sim(seconds_per_word=0.24)
    short, _, _ = await speak(url, ["one two"])
    long, _, _ = await speak(url, ["one two three four five six"])
    assert [m["type"] for m in short].count("Audio") == 6
    assert [m["type"] for m in long].count("Audio") == 18


async def test_eos_before_text_closes_without_audio(start_sim: StartSim) -> None:
    sim, url = await start_sim()
    messages, _, code = await speak(url, [])
    assert messages == [] and code == 1000
    assert sim.connections_log[-1].end == "eos_without_text"


async def test_text_frames_and_nul_byte_eos(start_sim: StartSim) -> None:
    _, url = await start_sim()
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url + PCM_MSGPACK, extra_headers=KEY) as ws:
            await ws.get_message()
            await ws.send_message("good morning")
            await ws.send_message(b"\x00")
            messages, _, _ = await read_until_closed(ws)
    assert [m["text"] for m in messages if m["type"] == "Text"] == ["good", "morning"]


@pytest.mark.simulator_only
async def test_last_word_waits_for_lookahead_or_eos(start_sim: StartSim) -> None:
    _, url = await start_sim()
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url + PCM_MSGPACK, extra_headers=KEY) as ws:
            await ws.get_message()
            await ws.send_message(packb({"type": "Text", "text": "first second"}))
            first = msgpack.unpackb(await ws.get_message())
            assert first["type"] == "Text" and first["text"] == "first"
            seen = [first]
            with trio.move_on_after(0.2):  # "second" has no lookahead yet: nothing about it
                while True:
                    seen.append(msgpack.unpackb(await ws.get_message()))
            assert all(m.get("text") != "second" for m in seen)
            await ws.send_message(packb({"type": "Eos"}))
            rest, _, _ = await read_until_closed(ws)
    assert [m["text"] for m in rest if m["type"] == "Text"] == ["second"]


async def test_records_voice_param_and_voice_message(start_sim: StartSim) -> None:
    sim, url = await start_sim()
    voice = {"type": "Voice", "embeddings": [0.5] * 6, "shape": [1, 2, 3]}
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url + PCM_MSGPACK, extra_headers=KEY) as ws:
            await ws.get_message()
            await ws.send_message(msgpack.packb(voice, use_single_float=True))
            await ws.send_message(packb({"type": "Eos"}))
            await read_until_closed(ws)
        async with open_websocket_url(
            url + PCM_MSGPACK + "&voice=unmute-prod-website%2Fp329_022.wav", extra_headers=KEY
        ) as ws:
            await ws.get_message()
    custom, named = sim.connections_log
    assert custom.voice is None and custom.voice_message and custom.voice_shape == [1, 2, 3]
    assert named.voice == "unmute-prod-website/p329_022.wav" and not named.voice_message
    assert named.format == "PcmMessagePack"


async def test_capacity_error_then_close(start_sim: StartSim) -> None:
    sim, url = await start_sim(capacity=1)
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url + PCM_MSGPACK, extra_headers=KEY) as first:
            await first.get_message()
            async with open_websocket_url(url + PCM_MSGPACK, extra_headers=KEY) as second:
                messages, _, code = await read_until_closed(second)
            assert messages == [{"type": "Error", "message": "no free channels"}]
            assert code == 1000
    assert sim.connections_log[-1].at_capacity
    await wait_for_no_connections(sim)


async def test_ogg_opus_messagepack_format(start_sim: StartSim) -> None:
    _, url = await start_sim()
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url + "?format=OggOpusMessagePack", extra_headers=KEY) as ws:
            assert msgpack.unpackb(await ws.get_message()) == {"type": "Ready"}
            header = msgpack.unpackb(await ws.get_message())
            assert header["type"] == "OggOpus" and header["data"].startswith(b"OggS")
            await ws.send_message(packb({"type": "Text", "text": "hi"}))
            await ws.send_message(packb({"type": "Eos"}))
            messages, _, _ = await read_until_closed(ws)
    assert {m["type"] for m in messages} == {"Text", "OggOpus"}


async def test_kill_connections_drops_streams(start_sim: StartSim) -> None:
    sim, url = await start_sim(realtime_factor=1.0)  # slow enough to be killed mid-stream
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url + PCM_MSGPACK, extra_headers=KEY) as ws:
            await ws.get_message()
            await ws.send_message(packb({"type": "Text", "text": "a long answer " * 20}))
            await ws.send_message(packb({"type": "Eos"}))
            assert msgpack.unpackb(await ws.get_message())["type"] == "Text"
            assert sim.open_connections == 1
            await sim.kill_connections()
            assert sim.open_connections == 0
            _, _, code = await read_until_closed(ws)
    assert code == 1011
    assert sim.connections_log[-1].end == "killed"


async def test_pacing_follows_realtime_factor(start_sim: StartSim) -> None:
    """Frames are spaced by 80 ms / realtime_factor (a lower bound: the pacing is deliberate)."""
    _, url = await start_sim(realtime_factor=4.0, seconds_per_word=0.4)
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url + PCM_MSGPACK, extra_headers=KEY) as ws:
            await ws.get_message()
            await ws.send_message(packb({"type": "Text", "text": "one two"}))
            await ws.send_message(packb({"type": "Eos"}))
            times = []
            with pytest.raises(ConnectionClosed):
                while True:
                    if msgpack.unpackb(await ws.get_message())["type"] == "Audio":
                        times.append(trio.current_time())
    assert len(times) == 10
    assert times[-1] - times[0] >= 9 * 0.02 - 0.005


@pytest.mark.simulator_only
async def test_raw_pcm_format_sends_audio_only(start_sim: StartSim) -> None:
    sim, url = await start_sim()
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url + "?format=Pcm", extra_headers=KEY) as ws:
            await ws.send_message("hello world")
            await ws.send_message(b"\x00")
            frames: list[bytes | str] = []
            with pytest.raises(ConnectionClosed):
                while True:
                    frames.append(await ws.get_message())
    assert len(frames) == 8  # no Ready, no Text: 2 × 0.3 s of little-endian f32
    assert all(isinstance(f, bytes) and len(f) == 1920 * 4 for f in frames)
    assert np.abs(np.frombuffer(frames[0], dtype="<f4")).max() > 0.1
    assert sim.connections_log[-1].words_spoken == ["hello", "world"]


def test_word_audio_is_synthesised_once_and_cannot_be_changed() -> None:
    """The simulator keeps the audio of recent words (load tests repeat the same replies): the
    samples are those of ``speech_like`` for the word's seed, and nobody can write into them."""
    tts_sim._word_audio.cache_clear()
    first = tts_sim._word_audio(7200, 1234)
    assert tts_sim._word_audio(7200, 1234) is first
    np.testing.assert_array_equal(first, speech_like(0.3, seed=1234))
    assert not np.array_equal(tts_sim._word_audio(7200, 1235), first)
    with pytest.raises(ValueError):
        first[0] = 0.5


@pytest.mark.simulator_only
@pytest.mark.parametrize("history_frames", [tts_sim.HISTORY_FRAMES, 4])
async def test_ogg_packets_from_the_cache_are_those_of_one_continuous_encoder(
    start_sim: StartSim, monkeypatch: pytest.MonkeyPatch, history_frames: int
) -> None:
    """The simulator reuses packets encoded for another stream given the same audio; a stream
    that then diverges, or has sent ``HISTORY_FRAMES`` from the cache, encodes on, caught up.
    Either way each stream's packets are exactly those one sphn encoder, fed the stream's whole
    audio, would write."""
    monkeypatch.setattr(tts_sim, "HISTORY_FRAMES", history_frames)
    _, url = await start_sim()
    tts_sim._opus_cache.clear()

    async def speak(text: str, fmt: str) -> list[dict[str, Any]]:
        with trio.fail_after(TIMEOUT_S):
            async with open_websocket_url(url + f"?format={fmt}", extra_headers=KEY) as ws:
                await ws.send_message(packb({"type": "Text", "text": text}))
                await ws.send_message(packb({"type": "Eos"}))
                messages, _, _ = await read_until_closed(ws)
        return messages

    # 0.3 s a word: "one two" is 8 frames (the last padded), the longer text 15, 7 shared.
    for text, cached in (("one two", 8), ("one two", 8), ("one two three four", 16)):
        pages = b"".join(m["data"] for m in await speak(text, "OggOpusMessagePack") if "data" in m)
        pcm = [m["pcm"] for m in await speak(text, "PcmMessagePack") if m["type"] == "Audio"]
        encoder = sphn.OpusStreamWriter(24_000)
        expected = b"".join(encoder.append_pcm(np.asarray(f, np.float32)) for f in pcm)
        assert OpusAudioReader().feed(pages) == OpusAudioReader().feed(expected)
        assert len(tts_sim._opus_cache) == cached  # the second "one two" encoded nothing
