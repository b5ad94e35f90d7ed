"""The STT simulator against raw trio-websocket clients over loopback: moshi-server 0.6.4's
``/api/asr-streaming`` protocol byte for byte, and its deterministic transcription."""

from __future__ import annotations

import math
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

from tests.local_engines import config_fields, local_stt_engine
from unmute_trio.protocol.moshi import Step, encode
from unmute_trio.testing.sim_base import BUILD_INFO
from unmute_trio.testing.speech import EnergyDetector, silence, speech_like
from unmute_trio.testing.stt_sim import (
    DEFAULT_STT_SCRIPT,
    SimulatedAsr,
    SttSimConfig,
    SttSimulator,
    encode_step,
)

KEY = [("kyutai-api-key", "public_token")]
TIMEOUT_S = 5  # every wait is bounded so a hang fails fast

StartSim = Callable[..., Awaitable[tuple[SttSimulator, str]]]


@pytest.fixture(params=["simulator", "local"])
def start_sim(request: pytest.FixtureRequest, nursery: trio.Nursery) -> StartSim:
    """One protocol suite, two implementations: the simulator and the local engine (real
    models). Tests marked ``simulator_only`` check the simulator's scripted behaviour; a test
    that sets a simulator-only option is skipped for the engine."""
    local = request.param == "local"
    if local and request.node.get_closest_marker("simulator_only"):
        pytest.skip("checks the simulator's scripted behaviour")

    async def _start(**config: Any) -> tuple[SttSimulator, str]:
        if local:
            from unmute_trio.engines.stt_server import LocalSttConfig

            options = set(config) - config_fields(LocalSttConfig)
            if options:
                pytest.skip(f"simulator-only options: {sorted(options)}")
            sim: Any = local_stt_engine(**config)
        else:
            sim = SttSimulator(SttSimConfig(**config))
        port = await nursery.start(sim.serve)
        return sim, f"ws://127.0.0.1:{port}/api/asr-streaming"

    return _start


def audio_message(pcm: np.ndarray) -> bytes:
    return msgpack.packb({"type": "Audio", "pcm": pcm.tolist()}, use_single_float=True)


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    raw = await ws.get_message()
    assert isinstance(raw, bytes)
    return msgpack.unpackb(raw)


async def stream(
    ws: WebSocketConnection, pcm: np.ndarray, *, chunk: int = 960, marker_after: int | None = None
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Send ``pcm`` in ``chunk``-sample messages (a Marker after ``marker_after`` samples) while
    reading until one Step per complete frame (and the marker echo) arrived."""
    n_frames = len(pcm) // 1920
    messages: list[dict[str, Any]] = []
    raws: list[bytes] = []

    async def send() -> None:
        for i in range(0, len(pcm), chunk):
            await ws.send_message(audio_message(pcm[i : i + chunk]))
            if marker_after is not None and i + chunk == marker_after:
                await ws.send_message(msgpack.packb({"type": "Marker", "id": 42}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        steps = 0
        marker_seen = marker_after is None
        while steps < n_frames or not marker_seen:
            raw = await ws.get_message()
            assert isinstance(raw, bytes)
            raws.append(raw)
            messages.append(msgpack.unpackb(raw))
            steps += messages[-1]["type"] == "Step"
            marker_seen = marker_seen or messages[-1]["type"] == "Marker"
    return messages, raws


async def wait_for_no_connections(sim: SttSimulator) -> None:
    with trio.fail_after(TIMEOUT_S):
        while sim.open_connections:
            await trio.sleep(0.01)


async def test_build_info_needs_no_auth(start_sim: StartSim) -> None:
    _, url = await start_sim()
    http_url = url.replace("ws://", "http://").replace("/api/asr-streaming", "/api/build_info")
    async with httpx.AsyncClient() as client:
        response = await client.get(http_url)
    assert response.status_code == 200
    assert set(response.json()) == set(BUILD_INFO) and len(BUILD_INFO) == 10


@pytest.mark.parametrize("headers", [[], [("kyutai-api-key", "wrong")]])
async def test_rejects_missing_or_wrong_key_with_401(
    start_sim: StartSim, headers: list[tuple[str, str]]
) -> None:
    sim, url = await start_sim()
    with trio.fail_after(TIMEOUT_S), pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(url, extra_headers=headers):
            pass
    assert rejected.value.status_code == 401
    assert not sim.connections_log[-1].authorized
    await wait_for_no_connections(sim)


async def test_auth_id_query_parameter_and_ready_first(start_sim: StartSim) -> None:
    sim, url = await start_sim()
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url + "?auth_id=public_token") as ws:
            raw = await ws.get_message()
            assert raw == b"\x81\xa4type\xa5Ready"  # rmp_serde: {"type": "Ready"}
            assert sim.open_connections == 1
    await wait_for_no_connections(sim)


async def test_capacity_error_then_close(start_sim: StartSim) -> None:
    sim, url = await start_sim(capacity=1)
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url, extra_headers=KEY) as first:
            assert (await receive(first))["type"] == "Ready"
            async with open_websocket_url(url, extra_headers=KEY) as second:
                assert await receive(second) == {"type": "Error", "message": "no free channels"}
                with pytest.raises(ConnectionClosed) as closed:
                    await second.get_message()
                assert closed.value.reason.code == 1000
            assert sim.connections_log[-1].at_capacity
        # The slot is free again once the first client has left.
        await wait_for_no_connections(sim)
        async with open_websocket_url(url, extra_headers=KEY) as third:
            assert (await receive(third))["type"] == "Ready"


@pytest.mark.simulator_only
async def test_speech_then_silence_transcribes_first_utterance(start_sim: StartSim) -> None:
    sim, url = await start_sim()
    pcm = np.concatenate([speech_like(1.5, seed=3), silence(2.5)])  # 50 frames
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url, extra_headers=KEY) as ws:
            assert (await receive(ws))["type"] == "Ready"
            messages, _ = await stream(ws, pcm, chunk=1000)  # not a multiple of 1920
    steps = [m for m in messages if m["type"] == "Step"]
    assert [s["step_idx"] for s in steps] == list(range(50))
    assert all(len(s["prs"]) == 4 for s in steps)
    assert all(0 <= s["buffered_pcm"] < 1920 + 1000 for s in steps)

    words = [m for m in messages if m["type"] == "Word"]
    assert [w["text"] for w in words] == DEFAULT_STT_SCRIPT[0].split()
    starts = [w["start_time"] for w in words]
    assert starts == sorted(starts) and 0.0 <= starts[0] < 0.2 and starts[-1] < 1.5
    # Each Word comes only once the processed audio is 0.5 s past its start (the model delay).
    for i, message in enumerate(messages):
        if message["type"] == "Word":
            steps_before = sum(m["type"] == "Step" for m in messages[:i])
            assert steps_before * 0.08 >= message["start_time"] + 0.5 - 1e-6
    end_words = [m for m in messages if m["type"] == "EndWord"]
    assert len(end_words) == len(words)
    assert 1.4 <= end_words[-1]["stop_time"] <= 1.6

    prs2 = [s["prs"][2] for s in steps]
    delayed = [(s["step_idx"] + 1) * 0.08 - 0.5 for s in steps]
    assert all(p > 0.9 for p, t in zip(prs2, delayed, strict=True) if t < 0)  # before speech
    assert all(p < 0.1 for p, t in zip(prs2, delayed, strict=True) if 0.2 <= t <= 1.4)
    assert prs2[-1] > 0.6  # ~2 s of silence at the delayed position
    assert sim.connections_log[-1].words_sent == DEFAULT_STT_SCRIPT[0].split()


@pytest.mark.simulator_only
async def test_marker_echoed_after_audio_plus_delay(start_sim: StartSim) -> None:
    _, url = await start_sim()
    pcm = np.concatenate([speech_like(1.0), silence(1.0)])
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url, extra_headers=KEY) as ws:
            await receive(ws)
            messages, _ = await stream(ws, pcm, chunk=2400, marker_after=24000)
    types = [m["type"] for m in messages]
    marker_at = types.index("Marker")
    assert messages[marker_at] == {"type": "Marker", "id": 42}
    # 24000 samples before the marker: echoed after frame ceil((24000 + 12000) / 1920) = 19.
    assert types[:marker_at].count("Step") == 19
    words_before = [m["start_time"] for m in messages[:marker_at] if m["type"] == "Word"]
    assert words_before and max(words_before) <= 1.0


@pytest.mark.simulator_only
async def test_wire_format_is_byte_exact(start_sim: StartSim) -> None:
    _, url = await start_sim()
    pcm = np.concatenate([speech_like(1.0), silence(1.0)])
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url, extra_headers=KEY) as ws:
            await receive(ws)
            messages, raws = await stream(ws, pcm)
    seen = set()
    for message, raw in zip(messages, raws, strict=True):
        kind = message["type"]
        seen.add(kind)
        keys = {
            "Step": ["type", "step_idx", "prs", "buffered_pcm"],
            "Word": ["type", "text", "start_time"],
            "EndWord": ["type", "stop_time"],
        }[kind]
        assert list(message) == keys  # struct-as-map, "type" first, declaration order
        # prs is an f32 array (0xca items); times are f64 (0xcb): re-pack independently.
        assert raw == msgpack.packb(message, use_single_float=(kind == "Step"))
        if kind == "Step":
            assert raw.count(b"\xca") >= 4
        else:
            assert b"\xcb" in raw
    assert seen == {"Step", "Word", "EndWord"}


async def test_text_frames_ignored_and_garbage_closes(start_sim: StartSim) -> None:
    sim, url = await start_sim()
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url, extra_headers=KEY) as ws:
            await receive(ws)
            await ws.send_message("hello")  # text frames are ignored
            await ws.send_message(audio_message(silence(0.08)))
            assert (await receive(ws))["type"] == "Step"
            await ws.send_message(b"\x00")  # not msgpack
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1011
    assert sim.connections_log[-1].end == "invalid_message"


async def test_open_connections_back_to_zero_after_kill(start_sim: StartSim) -> None:
    sim, url = await start_sim()
    codes: list[int] = []

    async def client(task_status: trio.TaskStatus[None]) -> None:
        async with open_websocket_url(url, extra_headers=KEY) as ws:
            await receive(ws)
            task_status.started()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            codes.append(closed.value.reason.code)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(client)
            await nursery.start(client)
            assert sim.open_connections == 2
            await sim.kill_connections()
            assert sim.open_connections == 0
    assert codes == [1011, 1011]
    assert [r.end for r in sim.connections_log] == ["killed", "killed"]


async def test_idle_timeout_closes(start_sim: StartSim) -> None:
    sim, url = await start_sim(idle_timeout_s=0.1)
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url, extra_headers=KEY) as ws:
            await receive(ws)
            with pytest.raises(ConnectionClosed):
                await ws.get_message()
    assert sim.connections_log[-1].end == "idle_timeout"


# ------------------------------------------------------------------ pure parts, no sockets


def test_transcription_is_a_pure_function_of_the_samples() -> None:
    pcm = np.concatenate(
        [silence(0.4), speech_like(1.2, seed=1), silence(1.0), speech_like(2.0, seed=2)]
    )
    pcm = np.concatenate([pcm, silence(2.0)])

    def run(chunk: int) -> list[Any]:
        asr = SimulatedAsr(("one two three", "four five"))
        out: list[Any] = []
        for i in range(0, len(pcm), chunk):
            asr.push_pcm(pcm[i : i + chunk])
            while asr.has_frame():
                out.extend(m for m in asr.step() if m.type != "Step")
        return out

    first = run(1920)
    assert first == run(777)
    assert [m.text for m in first if m.type == "Word"] == ["one", "two", "three", "four", "five"]
    starts = [m.start_time for m in first if m.type == "Word"]
    assert 0.3 <= starts[0] <= 0.5 and 2.5 <= starts[3] <= 2.7  # inside their segments


def test_short_segment_still_gets_all_its_words() -> None:
    asr = SimulatedAsr(("a b c d e f g h",), word_pace_s=0.3)
    asr.push_pcm(np.concatenate([speech_like(0.4), silence(2.0)]))
    words = []
    while asr.has_frame():
        words += [m for m in asr.step() if m.type == "Word"]
    assert [w.text for w in words] == list("abcdefgh")
    starts = [w.start_time for w in words]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_pause_heads_follow_silence_length() -> None:
    asr = SimulatedAsr()
    asr.push_pcm(np.concatenate([speech_like(1.0), silence(4.0)]))
    heads = []
    while asr.has_frame():
        heads.append(asr.step()[0].prs)
    assert all(p > 0.95 for p in heads[0])  # before any speech
    during = heads[12]  # delayed position ≈ 0.5 s, inside the speech
    assert all(p < 0.05 for p in during)
    # 1.5 s of silence at the delayed position (processed 3.0 s): short horizons fire first.
    at_1_5 = heads[round(3.0 / 0.08) - 1]
    assert at_1_5[0] > 0.95 and at_1_5[1] > 0.95 and 0.6 < at_1_5[2] < 0.99 and at_1_5[3] < 0.6
    assert all(p > 0.95 for p in heads[-1][:3])
    assert all(math.isfinite(p) for h in heads for p in h)


def test_energy_detector_needs_onset_and_bridges_short_dips() -> None:
    detector = EnergyDetector(onset_frames=2, hangover_frames=3)
    click = np.concatenate([speech_like(0.08), silence(0.32)])
    assert not any(detector.push(f) for f in click.reshape(-1, 1920))
    pcm = np.concatenate([speech_like(0.4), silence(0.16), speech_like(0.4), silence(0.4)])
    decisions = [detector.push(f) for f in pcm.reshape(-1, 1920)]
    assert decisions.index(True) == 1  # onset confirmed on the 2nd energetic frame
    assert all(decisions[1:12])  # the 2-frame dip is bridged by the hangover
    assert not decisions[-1]
    assert detector.segment_start_frame == 5 + 0  # dated back to the first energetic frame


@pytest.mark.simulator_only
async def test_ogg_opus_input_is_transcribed(start_sim: StartSim) -> None:
    _, url = await start_sim()
    writer = sphn.OpusStreamWriter(24000)
    pcm = np.concatenate([speech_like(1.0), silence(1.5)])
    pages = [writer.append_pcm(pcm[i : i + 960]) for i in range(0, len(pcm), 960)]
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url, extra_headers=KEY) as ws:
            await receive(ws)
            for page in filter(None, pages):
                await ws.send_message(msgpack.packb({"type": "OggOpus", "data": page}))
            words: list[str] = []
            while len(words) < len(DEFAULT_STT_SCRIPT[0].split()):
                message = await receive(ws)
                if message["type"] == "Word":
                    words.append(message["text"])
    assert words == DEFAULT_STT_SCRIPT[0].split()


# ------------------------------------------------------------------ fast paths, same bytes


@pytest.mark.parametrize(
    "step_idx", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**40]
)
@pytest.mark.parametrize("buffered_pcm", [0, 1, 127, 128, 1919, 1920, 70000])
def test_encode_step_is_encode_of_the_step(step_idx: int, buffered_pcm: int) -> None:
    for prs in [(0.98, 0.98, 0.98, 0.98), (0.02, 0.02, 0.02, 0.02), (0.5, 1 / 3, 0.1, 0.97)]:
        general = encode(Step(step_idx=step_idx, prs=list(prs), buffered_pcm=buffered_pcm))
        assert encode_step(step_idx, prs, buffered_pcm) == general


def test_the_fast_step_path_sends_what_the_general_one_did() -> None:
    """step_parts + encode_step (the simulator) give, frame by frame, the bytes that
    encode(step()) gave before the fast path, for audio pushed in uneven chunks with markers."""
    rng = np.random.default_rng(3)
    pcm = np.concatenate(
        [
            silence(1.3),
            speech_like(1.5, seed=1),
            silence(0.7),
            speech_like(0.4, seed=2),
            silence(0.25),
            speech_like(2.2, seed=3),
            silence(4.1),
            speech_like(0.17, seed=4),
            silence(3.0),
        ]
    )
    general, fast = SimulatedAsr(), SimulatedAsr()
    position = marker = frames = 0
    while position < len(pcm):
        chunk = pcm[position : position + int(rng.integers(1, 5000))]
        position += len(chunk)
        for asr in (general, fast):
            asr.push_pcm(chunk)
        if rng.random() < 0.1:
            general.add_marker(marker)
            fast.add_marker(marker)
            marker += 1
        while general.has_frame():
            assert fast.has_frame()
            expected = [encode(m) for m in general.step()]
            step_idx, prs, buffered_pcm, due = fast.step_parts()
            got = [encode_step(step_idx, prs, buffered_pcm), *(encode(m) for m in due)]
            assert got == expected
            frames += 1
        assert not fast.has_frame()
    assert frames == len(pcm) // 1920 and marker > 0
