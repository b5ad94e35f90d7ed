"""The STT client against the STT simulator over real loopback sockets."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import socket
from collections.abc import Callable

import numpy as np
import pytest
import trio
from prometheus_client import REGISTRY

from unmute_trio.conversation.pause import WARMUP_STEPS, PausePredictor
from unmute_trio.errors import (
    ServiceAtCapacity,
    ServiceDisconnected,
    ServiceProtocolError,
    ServiceTimeout,
)
from unmute_trio.protocol.moshi import SAMPLES_PER_FRAME, EndWord, Marker, Step, Word
from unmute_trio.services.moshi_ws import endpoint_url
from unmute_trio.services.stt import SpeechToText, connect_stt
from unmute_trio.testing.speech import silence, speech_like
from unmute_trio.testing.stt_sim import DEFAULT_STT_SCRIPT, SttSimConfig, SttSimulator


async def start_sim(nursery: trio.Nursery, host: str = "127.0.0.1", **config: object) -> tuple:
    sim = SttSimulator(SttSimConfig(**config))  # type: ignore[arg-type]
    port = await nursery.start(sim.serve, host)
    netloc = f"[{host}]" if ":" in host else host
    return sim, f"ws://{netloc}:{port}"


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 1.0) -> None:
    with trio.fail_after(timeout_s):
        # Polling: the simulator's connection count has no event to wait on.
        while not predicate():
            await trio.sleep(0.005)


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def receive_steps(stt: SpeechToText, n_steps: int) -> list[Word | EndWord | Step | Marker]:
    messages: list[Word | EndWord | Step | Marker] = []
    steps = 0
    with trio.fail_after(2):
        while steps < n_steps:
            message = await stt.receive()
            messages.append(message)
            steps += isinstance(message, Step)
    return messages


async def test_happy_path_words_clock_pause_and_rechunking(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    audio = np.concatenate([silence(0.4), speech_like(1.5, seed=3), silence(2.5)])
    n_frames = len(audio) // SAMPLES_PER_FRAME
    assert n_frames * SAMPLES_PER_FRAME == len(audio) == 105_600
    sent_before = counter("worker_stt_sent_frames_total")
    async with connect_stt(url) as stt:
        assert sim.open_connections == 1
        # What the Steps mean is the core's (conversation/pause.py): run its predictor here.
        predictor = PausePredictor()
        assert predictor.value == 1.0

        async def send_like_a_browser() -> None:
            for start in range(0, len(audio), 1000):  # chunks that are not frames
                await stt.send_audio(audio[start : start + 1000])

        pause_values: list[float] = []
        messages: list[Word | EndWord | Step | Marker] = []
        async with trio.open_nursery() as inner:
            inner.start_soon(send_like_a_browser)
            with trio.fail_after(2):
                while len(pause_values) < n_frames:
                    message = await stt.receive()
                    messages.append(message)
                    if isinstance(message, Step):
                        pause_values.append(predictor.update(message.prs))
        assert stt.buffered_samples == 0
        assert stt.sent_samples == len(audio)
    # Whole 1920-sample messages only: one per frame, not one per chunk.
    assert counter("worker_stt_sent_frames_total") - sent_before == n_frames
    assert sim.connections_log[-1].binary_messages == n_frames
    steps = [m for m in messages if isinstance(m, Step)]
    assert [s.step_idx for s in steps] == list(range(n_frames))
    words = [m.text for m in messages if isinstance(m, Word)]
    assert words == DEFAULT_STT_SCRIPT[0].split()
    assert any(isinstance(m, EndWord) for m in messages)
    # Warm-up: unchanged for 12 steps; then low while speaking, high after a long silence.
    assert pause_values[:WARMUP_STEPS] == [1.0] * WARMUP_STEPS
    assert min(pause_values[WARMUP_STEPS:]) < 0.4
    assert pause_values[-1] > 0.6
    await wait_until(lambda: sim.open_connections == 0)


async def test_silence_frames_and_marker(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    async with connect_stt(url) as stt:
        await stt.send_audio(speech_like(0.5)[:1000])
        assert stt.buffered_samples == 1000
        sent_before = counter("worker_stt_sent_frames_total")
        await stt.send_silence_frames(8)
        # The 1000 buffered samples went out first, in the same single message as the 8 frames;
        # the leftover zeros wait.
        assert counter("worker_stt_sent_frames_total") - sent_before == 8
        assert stt.buffered_samples == 1000
        assert stt.sent_samples == 8 * SAMPLES_PER_FRAME
        await wait_until(lambda: sim.connections_log[-1].frames_processed == 8)
        assert sim.connections_log[-1].binary_messages == 1
        await stt.send_marker(42)
        await stt.send_silence_frames(8)  # keep the stream advancing past the model delay
        messages = await receive_steps(stt, 16)
        assert sum(isinstance(m, Step) for m in messages) == 16
    assert Marker(id=42) in messages
    await wait_until(lambda: sim.open_connections == 0)


async def test_at_capacity(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery, capacity=1)
    async with connect_stt(url) as first:
        with pytest.raises(ServiceAtCapacity) as info:
            async with connect_stt(url):
                pytest.fail("connected beyond capacity")
        assert info.value.service == "stt"
        await first.send_silence_frames(1)  # the first stream is unaffected
        assert isinstance(await first.receive(), Step)
    await wait_until(lambda: sim.open_connections == 0)


async def test_bad_api_key_is_a_protocol_error(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery, api_key="secret")
    with pytest.raises(ServiceProtocolError) as info:
        async with connect_stt(url, api_key="public_token"):
            pytest.fail("connected with a bad key")
    assert info.value.service == "stt"
    assert "401" in info.value.detail
    async with connect_stt(url, api_key="secret"):
        pass
    await wait_until(lambda: sim.open_connections == 0)


async def test_handshake_timeout_closes_the_socket(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery, handshake_delay_s=30.0)
    with pytest.raises(ServiceTimeout) as info:
        async with connect_stt(url, handshake_timeout_s=0.2):
            pytest.fail("no Ready was sent")
    assert info.value.service == "stt"
    await wait_until(lambda: sim.open_connections == 0)


async def _silent_server(
    listener: trio.socket.SocketType,
    requests: list[bytes],
    *,
    upgrade: bool,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept one connection; answer the upgrade (or not); then never send a byte.

    Records the upgrade request and returns when the client has closed the connection.
    """
    task_status.started()
    conn, _ = await listener.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await conn.recv(4096)
        requests.append(request)
        if upgrade:
            key = re.search(rb"(?i)sec-websocket-key: *(\S+)", request)
            assert key is not None
            digest = hashlib.sha1(key.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            await conn.send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + base64.b64encode(digest)
                + b"\r\n\r\n"
            )
        while await conn.recv(4096):  # a close frame may come; then EOF
            pass


@pytest.mark.parametrize("upgrade", [False, True])
async def test_silent_server_handshake_timeout_closes_at_once(upgrade: bool) -> None:
    # The handshake times out before (or after) the upgrade; the client must close its socket
    # at once, not wait for a close handshake that will never come.
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    requests: list[bytes] = []
    with listener, trio.fail_after(0.8):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(_silent_server, upgrade=upgrade), listener, requests
            )
            with pytest.raises(ServiceTimeout):
                async with connect_stt(
                    f"ws://stt.example:{port}/prefix/", address="127.0.0.1", handshake_timeout_s=0.1
                ):
                    pytest.fail("the server never sends Ready")
        # The server task returned: it saw EOF.
    head = requests[0].decode().lower()
    assert head.startswith("get /prefix/api/asr-streaming http/1.1\r\n")
    assert f"host: stt.example:{port}\r\n" in head
    assert "kyutai-api-key: public_token\r\n" in head


async def test_cancellation_during_handshake_closes_the_socket(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery, handshake_delay_s=30.0)
    with trio.move_on_after(0.2) as scope:
        async with connect_stt(url, handshake_timeout_s=10.0):
            pytest.fail("no Ready was sent")
    assert scope.cancelled_caught
    await wait_until(lambda: sim.open_connections == 0)


async def test_server_dying_mid_stream(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    async with connect_stt(url) as stt:
        await stt.send_silence_frames(1)
        assert isinstance(await stt.receive(), Step)
        await sim.kill_connections()
        with trio.fail_after(1), pytest.raises(ServiceDisconnected) as info:
            while True:
                await stt.receive()
        assert info.value.service == "stt"
    await wait_until(lambda: sim.open_connections == 0)


async def test_cancellation_mid_stream_closes_everything(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    with trio.fail_after(1):
        with trio.CancelScope() as scope:
            async with connect_stt(url) as stt:
                await stt.send_silence_frames(3)
                assert isinstance(await stt.receive(), Step)
                scope.cancel()
                await stt.receive()  # cancelled here
                pytest.fail("not cancelled")
    assert scope.cancelled_caught
    await wait_until(lambda: sim.open_connections == 0)


async def test_refused_connection_is_disconnected() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(ServiceDisconnected):
        async with connect_stt(f"ws://127.0.0.1:{closed_port}"):
            pytest.fail("connected to a closed port")


async def test_body_exceptions_are_not_wrapped(nursery: trio.Nursery) -> None:
    sim, url = await start_sim(nursery)
    with pytest.raises(KeyError):
        async with connect_stt(url):
            raise KeyError("from the body")
    with pytest.raises(ServiceAtCapacity):
        async with connect_stt(url):
            raise ServiceAtCapacity("tts", "a nested service error passes through unchanged")
    await wait_until(lambda: sim.open_connections == 0)


async def test_explicit_address_keeps_the_url_host(nursery: trio.Nursery) -> None:
    _sim, url = await start_sim(nursery)
    port = url.rsplit(":", 1)[1]
    # The name does not resolve; the address is dialled instead.
    async with connect_stt(f"ws://stt.invalid:{port}", address="127.0.0.1") as stt:
        await stt.send_silence_frames(1)
        assert isinstance(await stt.receive(), Step)


async def test_ipv6_url(nursery: trio.Nursery) -> None:
    _sim, url = await start_sim(nursery, host="::1")
    assert url.startswith("ws://[::1]:")
    async with connect_stt(url) as stt:
        await stt.send_silence_frames(1)
        assert isinstance(await stt.receive(), Step)


async def test_two_concurrent_senders_are_refused(nursery: trio.Nursery) -> None:
    _sim, url = await start_sim(nursery)
    async with connect_stt(url) as stt:
        stt._sending = True  # as if another task were in the middle of a send
        with pytest.raises(trio.BusyResourceError):
            await stt.send_audio(silence(0.08))
        stt._sending = False


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("ws://localhost:8090", "ws://localhost:8090/api/asr-streaming"),
        ("ws://localhost:8090/", "ws://localhost:8090/api/asr-streaming"),
        ("wss://example.com/stt-server", "wss://example.com/stt-server/api/asr-streaming"),
        ("ws://[::1]:8090/x/", "ws://[::1]:8090/x/api/asr-streaming"),
    ],
)
def test_endpoint_url(base: str, expected: str) -> None:
    assert endpoint_url(base, "/api/asr-streaming") == expected
