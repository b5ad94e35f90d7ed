"""The voice-cloning simulator over a real socket (contract 2.4)."""

from __future__ import annotations

import io
import struct
import wave
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import sphn
import trio

from unmute_trio.protocol.moshi import Voice, decode_tts_client
from unmute_trio.testing.voice_cloning_sim import (
    VoiceCloningSimConfig,
    VoiceCloningSimulator,
    is_decodable_audio,
)


def wav_bytes(seconds: float = 0.2, freq: float = 220.0) -> bytes:
    t = np.arange(int(24_000 * seconds)) / 24_000
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24_000)
        w.writeframes(pcm.tobytes())
    return out.getvalue()


def ogg_page(payload: bytes) -> bytes:
    """A first Ogg page holding one packet (the CRC is not checked by the simulator)."""
    header = b"OggS" + bytes([0, 2]) + bytes(8) + struct.pack("<III", 1, 0, 0)
    return header + bytes([1, len(payload)]) + payload


def ogg_opus_bytes() -> bytes:
    writer = sphn.OpusStreamWriter(24_000)
    data = b""
    for _ in range(10):
        data += writer.append_pcm(np.zeros(960, dtype=np.float32))
    return data


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2) as client:
        yield client


async def start(nursery: trio.Nursery, **config: object) -> tuple[VoiceCloningSimulator, str]:
    sim = VoiceCloningSimulator(VoiceCloningSimConfig(**config))  # type: ignore[arg-type]
    port = await nursery.start(sim.serve)
    return sim, f"http://127.0.0.1:{port}/api/voice"


async def test_wav_gives_a_decodable_voice_of_the_mimi_shape(nursery: trio.Nursery, http) -> None:
    sim, url = await start(nursery)
    with trio.fail_after(2):
        response = await http.post(url, content=wav_bytes())
    assert response.status_code == 200
    voice = decode_tts_client(response.content)
    assert isinstance(voice, Voice)
    assert voice.shape == [1, 512, 125]
    assert voice.embeddings.dtype == np.float32
    assert voice.embeddings.size == 1 * 512 * 125
    assert np.isfinite(voice.embeddings).all()
    assert sim.received == 1
    assert sim.open_connections == 0


async def test_the_voice_is_a_function_of_the_file(nursery: trio.Nursery, http) -> None:
    _, url = await start(nursery)
    with trio.fail_after(2):
        a1 = (await http.post(url, content=wav_bytes(freq=220))).content
        a2 = (await http.post(url, content=wav_bytes(freq=220))).content
        b = (await http.post(url, content=wav_bytes(freq=330))).content
    assert a1 == a2
    assert a1 != b


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"this is not audio at all",
        b"RIFF\x00\x00\x00\x00AVI LIST",
        b"\x1aE\xdf\xa3" + bytes(40),  # WebM from a browser's MediaRecorder (Opus)
    ],
)
async def test_undecodable_body_is_500_with_empty_body(
    nursery: trio.Nursery, http, body: bytes
) -> None:
    _, url = await start(nursery)
    with trio.fail_after(2):
        response = await http.post(url, content=body)
    assert response.status_code == 500
    assert response.content == b""


async def test_ogg_opus_is_rejected_like_the_real_service(nursery: trio.Nursery, http) -> None:
    _, url = await start(nursery)
    opus = ogg_opus_bytes()
    assert opus.startswith(b"OggS")
    with trio.fail_after(2):
        response = await http.post(url, content=opus)
    assert response.status_code == 500
    assert response.content == b""


async def test_forced_failure(nursery: trio.Nursery, http) -> None:
    _, url = await start(nursery, fail=True)
    with trio.fail_after(2):
        response = await http.post(url, content=wav_bytes())
    assert (response.status_code, response.content) == (500, b"")


async def test_delay_provokes_client_timeouts_and_the_request_is_dropped(
    nursery: trio.Nursery,
) -> None:
    sim, url = await start(nursery, delay_s=30)
    async with httpx.AsyncClient(timeout=0.2) as http:
        with trio.fail_after(2), pytest.raises(httpx.ReadTimeout):
            await http.post(url, content=wav_bytes())
    with trio.fail_after(2):
        while sim.open_connections:
            await trio.sleep(0.01)
    assert sim.received == 1


async def test_body_over_16_mib_is_refused(nursery: trio.Nursery, http) -> None:
    _, url = await start(nursery)
    body = wav_bytes() + bytes(16 * 1024 * 1024)
    with trio.fail_after(2):
        response = await http.post(url, content=body)
    assert response.status_code == 413


async def test_build_info_for_health_checks(nursery: trio.Nursery, http) -> None:
    _, url = await start(nursery)
    with trio.fail_after(2):
        response = await http.get(url.replace("/api/voice", "/api/build_info"))
    assert response.status_code == 200
    assert {"git_hash", "rustc_version", "cargo_target_triple"} <= set(response.json())


@pytest.mark.parametrize(
    ("data", "decodable"),
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", True),
        (b"ID3\x04\x00" + bytes(20), True),
        (b"\xff\xfb\x90\x64" + bytes(20), True),  # bare MPEG layer 3 frame
        (b"fLaC\x00\x00\x00\x22" + bytes(20), True),
        (b"\x00\x00\x00\x20ftypM4A " + bytes(20), True),
        (b"FORM\x00\x00\x00\x10AIFFCOMM", True),
        (ogg_page(b"\x01vorbis" + bytes(22)), True),
        (ogg_page(b"\x7fFLAC\x01\x00" + bytes(10)), True),
        (ogg_page(b"OpusHead\x01\x01" + bytes(9)), False),
        (b"OggS", False),
        (b"RIFF", False),
        (b"", False),
        (b"<html>not audio</html>", False),
    ],
)
def test_is_decodable_audio(data: bytes, decodable: bool) -> None:
    assert is_decodable_audio(data) is decodable
