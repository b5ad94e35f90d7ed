"""POST /v1/voices: limits, forwarding to the voice-cloning service, and its failures."""

from __future__ import annotations

import io
import wave

import httpx
import numpy as np
import trio
from quart import request
from quart_trio import QuartTrio

from tests.conftest import replace
from unmute_trio.protocol import moshi


def small_wav(seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes((np.sin(np.arange(int(24000 * seconds)) / 5) * 8000).astype("<i2").tobytes())
    return buf.getvalue()


def cloning_service(*, answer: bytes | None = None, status: int = 200, delay_s: float = 0.0):
    """An HTTP endpoint speaking the cloning protocol: raw bytes in, msgpack Voice out."""
    app = QuartTrio("cloning")
    app.config["bodies"] = []

    @app.post("/api/voice")
    async def voice():
        body = await request.get_data()
        app.config["bodies"].append(body)
        await trio.sleep(delay_s)
        if answer is None:
            embeddings = np.linspace(0, 1, 512 * 125, dtype=np.float32)
            voice_msg = moshi.Voice(embeddings=embeddings, shape=[1, 512, 125])
            return moshi.encode(voice_msg), status
        return answer, status

    return app


async def test_upload_forwards_raw_bytes_and_returns_custom_name(
    serve, serve_stub, all_down_settings
) -> None:
    service = cloning_service()
    settings = replace(all_down_settings, voice_cloning_url=await serve_stub(service))
    base = await serve(settings)
    wav = small_wav()
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post("/v1/voices", files={"file": ("me.wav", wav, "audio/wav")})
    assert r.status_code == 200, r.text
    name = r.json()["name"]
    prefix, _, uid = name.partition(":")
    assert prefix == "custom" and len(uid) == 36
    assert service.config["bodies"] == [wav]  # the raw file, not the multipart envelope


async def test_upload_without_content_length_is_411(serve, all_down_settings) -> None:
    base = await serve(all_down_settings)

    async def chunks():
        yield b"--x\r\n"

    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post("/v1/voices", content=chunks())
    assert r.status_code == 411
    assert "Content-Length" in r.json()["detail"]


async def test_upload_over_the_limit_is_413(serve, serve_stub, all_down_settings) -> None:
    service = cloning_service()
    settings = replace(
        all_down_settings, max_upload_bytes=10_000, voice_cloning_url=await serve_stub(service)
    )
    base = await serve(settings)
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post("/v1/voices", files={"file": ("big.wav", b"\0" * 20_000)})
    assert r.status_code == 413
    assert "10000" in r.json()["detail"]
    assert service.config["bodies"] == []


async def test_upload_without_file_field_is_400(serve, all_down_settings) -> None:
    base = await serve(all_down_settings)
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.post("/v1/voices", files={"audio": ("x.wav", b"abc")})
    assert r.status_code == 400
    assert "'file'" in r.json()["detail"]


async def test_upload_with_cloning_down_is_503(serve, all_down_settings) -> None:
    base = await serve(all_down_settings)
    async with httpx.AsyncClient(base_url=base) as c:
        with trio.fail_after(3):
            r = await c.post("/v1/voices", files={"file": ("me.wav", small_wav())})
    assert r.status_code == 503
    assert "unavailable" in r.json()["detail"]


async def test_upload_with_cloning_too_slow_is_503_not_a_hang(
    serve, serve_stub, all_down_settings
) -> None:
    service = cloning_service(delay_s=30)
    settings = replace(
        all_down_settings,
        voice_cloning_url=await serve_stub(service),
        voice_cloning_timeout_s=0.3,
    )
    base = await serve(settings)
    async with httpx.AsyncClient(base_url=base) as c:
        with trio.fail_after(3):
            r = await c.post("/v1/voices", files={"file": ("me.wav", small_wav())})
    assert r.status_code == 503
    assert "0.3 s" in r.json()["detail"]


async def test_upload_with_cloning_failing_is_502(serve, serve_stub, all_down_settings) -> None:
    failing = await serve_stub(cloning_service(answer=b"", status=500))
    junk = await serve_stub(cloning_service(answer=b"not msgpack at all"))
    async with httpx.AsyncClient() as c:
        for url, expected in ((failing, "HTTP 500"), (junk, "not a Voice")):
            base = await serve(replace(all_down_settings, voice_cloning_url=url))
            r = await c.post(base + "/v1/voices", files={"file": ("me.wav", small_wav())})
            assert r.status_code == 502
            assert expected in r.json()["detail"]
