"""The load generator against the whole stack in one process (simulators + server on loopback
sockets), on virtual time: conversations complete and the report holds every measurement."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import sphn
import trio
import trio.testing

from tests.conftest import closed_port
from tests.session_helpers import greet
from unmute_trio.loadtest.floor import (
    SimulatorLatencies,
    frame_aligned_length,
    llm_tts_floor,
    pause_detection_delay,
)
from unmute_trio.loadtest.microphone import OggStream, encode_microphone, split_pages
from unmute_trio.loadtest.report import (
    LATENCY_SERIES,
    ConversationResult,
    LoadTestReport,
    TurnTiming,
    load_report,
    merge_reports,
    summarize,
)
from unmute_trio.loadtest.runner import LoadTestConfig, LoadTestError, http_base, run_load_test
from unmute_trio.loadtest.table import format_summary
from unmute_trio.loadtest.timing import TurnProblem, measure_turn
from unmute_trio.protocol.ogg_opus import ogg_crc
from unmute_trio.testing.harness import conversation_stack
from unmute_trio.testing.speech import speech_like
from unmute_trio.testing.tts_sim import TtsSimConfig
from unmute_trio.testing.voice_client import VoiceClient


async def test_two_users_complete_with_every_measurement(virtual_clock) -> None:
    # Short bot words keep the virtual-time run short; both users start together so their
    # microphone pages share wake-ups.
    async with conversation_stack(tts=TtsSimConfig(seconds_per_word=0.1)) as stack:
        config = LoadTestConfig(
            url=stack.realtime_url,
            users=2,
            turns=1,
            speech_s=1.0,
            ramp_s=0.0,
            simulators=SimulatorLatencies(),
        )
        with trio.fail_after(120):
            report = await run_load_test(config)
    assert report.ok_fraction == 1.0, report.errors
    assert len(report.conversations) == 2
    assert not report.interrupted
    for conversation in report.conversations:
        assert conversation.close_code is None  # the client closed; the server never did
        assert [t.index for t in conversation.turns] == [0, 1]
        greeting, reply = conversation.turns
        assert greeting.user_audio_start is None and greeting.audio_s > 1.0  # 13 words
        assert reply.user_text  # the simulated STT transcribed the speech-like audio
        assert reply.reply_text.startswith("You said")
        assert reply.frames > 0 and reply.audio_gaps_s
        for name in LATENCY_SERIES:
            assert getattr(reply, name) is not None, name
    summary = report.summary
    assert summary["voice_to_voice"].count == 2
    assert summary["stt_latency"].count == 2
    assert summary["llm_latency"].count == 4  # greetings included
    assert summary["audio_gap"].count > 10
    # The JSON report round-trips and carries the derived figures.
    text = report.model_dump_json()
    data = json.loads(text)
    assert data["ok_fraction"] == 1.0
    assert set(LATENCY_SERIES) <= set(data["summary"])
    assert "voice_to_voice" in data["conversations"][0]["turns"][1]
    assert load_report(text).summary == summary
    table = format_summary(report)
    assert "voice-to-voice (ms)" in table and "OK fraction 1.00 (2/2" in table


async def test_unhealthy_server_is_refused_before_any_conversation(virtual_clock) -> None:
    # The voice-cloning URL is closed in this stack; health only needs STT, TTS and LLM, so
    # point the STT somewhere closed instead.
    async with conversation_stack(stt_url=f"ws://127.0.0.1:{closed_port()}") as stack:
        config = LoadTestConfig(url=stack.realtime_url, users=1)
        with trio.fail_after(60), pytest.raises(LoadTestError, match="not up"):
            await run_load_test(config)


def test_http_base_strips_the_realtime_path() -> None:
    assert http_base("ws://h:1/v1/realtime") == "http://h:1"
    assert http_base("wss://h/api/v1/realtime/") == "https://h/api"
    with pytest.raises(LoadTestError):
        http_base("http://h/v1/realtime")


def _event(kind: str, **fields: object) -> dict[str, object]:
    return {"type": kind, **fields}


def test_measure_turn_definitions_and_late_frames() -> None:
    events = [
        _event("conversation.item.input_audio_transcription.delta", delta="Hi"),
        _event("input_audio_buffer.speech_stopped"),
        _event("response.created"),
        _event("unmute.response.text.delta.ready", delta="Hello"),
        _event("response.audio.delta"),
        _event("response.audio.delta"),
        _event("response.audio.delta"),
        _event("response.audio.done"),
    ]
    at = [10.5, 12.0, 12.1, 12.3, 12.4, 12.45, 12.7, 12.8]
    # 1920 samples = 80 ms each: the third frame is due at 12.4 + 0.16 = 12.56, arrives 12.7.
    samples = [0, 0, 0, 0, 1920, 1920, 1920, 0]
    t = measure_turn(1, events, at, samples, origin=10.0, user_audio=(10.2, 11.7))
    assert t.stt_latency == pytest.approx(0.3)
    assert t.vad_latency == pytest.approx(0.4)
    assert t.llm_latency == pytest.approx(0.2)
    assert t.tts_start_latency == pytest.approx(0.1)
    assert t.voice_to_voice == pytest.approx(0.7)
    assert t.tts_realtime_factor == pytest.approx(0.24 / 0.4)
    assert t.audio_gaps_s == pytest.approx([0.05, 0.25])
    assert (t.frames, t.late_frames) == (3, 1)
    assert t.max_lateness_s == pytest.approx(0.14)
    t.pause_floor_s, t.reply_floor_s = 0.25, 0.3
    assert t.backend_added == pytest.approx(0.7 - 0.55)
    assert t.pause_added == pytest.approx(0.3 - 0.25)  # speech_stopped 0.3 s after the end
    assert t.reply_added == pytest.approx(0.4 - 0.3)  # first audio 0.4 s after speech_stopped


def test_measure_turn_rejects_an_interrupted_reply() -> None:
    events = [_event("response.created"), _event("unmute.interrupted_by_vad")]
    with pytest.raises(TurnProblem, match="interrupted"):
        measure_turn(0, events, [1.0, 2.0], [0, 0], origin=0.0)


def test_pause_floor_is_the_simulated_stt_delay() -> None:
    clip = speech_like(frame_aligned_length(1.5) / 24000, seed=0)
    microphone = encode_microphone([clip])
    delay = pause_detection_delay(microphone, 0)
    # The 2-second pause head passes 0.6 after ~1.1 s of silence at the model's 0.5 s delay;
    # the result is a whole number of 40 ms pages.
    assert 1.5 <= delay <= 1.8
    assert delay / 0.04 == pytest.approx(round(delay / 0.04))
    with pytest.raises(ValueError):  # half a frame
        pause_detection_delay(encode_microphone([clip[:960]]), 0)


def test_microphone_pages_form_one_valid_ogg_stream() -> None:
    # sphn's own pages carry the CRC our implementation computes.
    writer = sphn.OpusStreamWriter(24000)
    for page in split_pages(writer.append_pcm(speech_like(0.2, seed=1))):
        zeroed = page[:22] + bytes(4) + page[26:]
        assert ogg_crc(zeroed) == int.from_bytes(page[22:26], "little")
    clip = speech_like(0.16, seed=2)  # 4 pages
    microphone = encode_microphone([clip])
    stream = OggStream(microphone)
    sources = [None, None, *microphone.utterances[0], None]
    pages = [stream.next_page(source) for source in sources]
    assert pages[0].startswith(microphone.headers)  # the stream begins with its headers
    data = b"".join(pages)
    numbered = split_pages(data)[2:]
    assert [int.from_bytes(p[18:22], "little") for p in numbered] == [2, 3, 4, 5, 6, 7, 8]
    assert [int.from_bytes(p[6:14], "little") for p in numbered] == [1920 * k for k in range(1, 8)]
    pcm = sphn.OpusStreamReader(24000).append_bytes(data)
    assert len(pcm) == 7 * 960
    assert np.abs(pcm[2 * 960 : 6 * 960]).max() > 0.1  # the utterance is there


def test_llm_tts_floor_waits_for_the_tts_lookahead() -> None:
    # "You| sa|id:| He|..." : the TTS speaks word 1 once word 2 is complete, i.e. once the token
    # starting word 3 (index 3) has arrived.
    floor = llm_tts_floor("You said: Hello there", ttft_s=0.15, tokens_per_s=50, lookahead_words=1)
    assert floor == pytest.approx(0.15 + 3 / 50)
    assert llm_tts_floor("Hi", ttft_s=0.1, tokens_per_s=50, lookahead_words=1) == 0.1


def test_summary_and_merge() -> None:
    s = summarize([1.0, 2.0, 3.0, None, float("nan")])  # type: ignore[list-item]
    assert (s.count, s.mean, s.median, s.max) == (3, 2.0, 2.0, 3.0)
    assert summarize([]).count == 0

    def report(start: float, ok: bool) -> LoadTestReport:
        turn = TurnTiming(index=0, response_created=0.1, first_audio=0.2, audio_done=1.0)
        c = ConversationResult(
            index=0, user=0, started_at_unix=start, duration_s=1.0, ok=ok, turns=[turn]
        )
        return LoadTestReport(url="ws://x", started_at_unix=start, wall_s=2.0, conversations=[c])

    merged = merge_reports([report(100.0, True), report(99.0, False)])
    assert merged.started_at_unix == 99.0 and merged.wall_s == 3.0
    assert [c.index for c in merged.conversations] == [0, 1]
    assert merged.ok_fraction == 0.5
    assert merged.concurrency() == (1, 1.0)  # [99, 100] then [100, 101]: never two at once
    assert len(merged.turns()) == 2


async def test_a_session_the_server_ends_is_recorded_as_an_error(virtual_clock) -> None:
    async with conversation_stack(tts=TtsSimConfig(seconds_per_word=0.1)) as stack:
        config = LoadTestConfig(url=stack.realtime_url, users=1, turns=1, ramp_s=0.0)
        async with trio.open_nursery() as nursery:

            async def kill_the_stt_once_connected() -> None:
                while stack.stt.open_connections == 0:
                    await trio.sleep(0.01)
                await stack.stt.kill_connections()  # the server then ends the session

            nursery.start_soon(kill_the_stt_once_connected)
            with trio.fail_after(60):
                report = await run_load_test(config)
    assert report.ok_fraction == 0.0
    [conversation] = report.conversations
    assert conversation.error is not None and "closed the connection" in conversation.error
    assert conversation.close_code is not None and conversation.close_code != 1000
    assert conversation.server_errors  # the server said why before closing
    assert report.errors == [f"conversation 0: {conversation.error}"]


async def test_stopping_early_keeps_the_turns_measured_so_far(virtual_clock) -> None:
    async with conversation_stack(tts=TtsSimConfig(seconds_per_word=0.1)) as stack:
        config = LoadTestConfig(url=stack.realtime_url, users=1, turns=20, ramp_s=0.0)
        scopes: list[trio.CancelScope] = []

        async def stop_later() -> None:
            # What Ctrl-C does: the greeting (1.3 s of audio) is long over by then, twenty
            # turns are far from done.
            await trio.sleep(4.0)
            scopes[0].cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_later)
            with trio.fail_after(60):
                report = await run_load_test(config, cancel_scope_ready=scopes.append)
    assert report.interrupted
    [conversation] = report.conversations
    assert not conversation.ok and conversation.error == "interrupted before it finished"
    assert 1 <= len(conversation.turns) < 21
    assert report.turns()[0].audio_done is not None
    assert "INTERRUPTED" in format_summary(report)


def _bitwise_ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 the slow, obvious way (RFC 3533: polynomial 0x04C11DB7, MSB first)."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def test_ogg_crc_is_the_bitwise_crc() -> None:
    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 27, 28, 255, 1000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert ogg_crc(data) == _bitwise_ogg_crc(data)
        assert ogg_crc(bytearray(data)) == _bitwise_ogg_crc(data)


def test_microphone_appends_are_the_json_of_the_event() -> None:
    """The pump's preformatted append text is what json.dumps of the event gave."""
    from unmute_trio.loadtest.conversation import _APPEND_HEAD, _APPEND_TAIL

    stream = OggStream(encode_microphone([speech_like(0.16)]))
    for source in (None, None, stream._microphone.utterances[0][0]):
        audio = base64.b64encode(stream.next_page(source)).decode("ascii")
        event = {"type": "input_audio_buffer.append", "audio": audio}
        assert _APPEND_HEAD + audio + _APPEND_TAIL == json.dumps(event)


async def test_wait_for_finds_events_in_order_whenever_they_arrive() -> None:
    client = VoiceClient(None)  # type: ignore[arg-type]  # no socket: events are fed by hand
    client.events += [{"type": "a"}, {"type": "b"}]
    assert await client.wait_for("b") is client.events[1]
    assert await client.wait_for("a", after=-2) is client.events[0]
    found: list[dict] = []

    async def waiter() -> None:
        found.append(await client.wait_for("c", lambda e: e.get("n") == 2, after=1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        for n in range(4):
            await trio.testing.wait_all_tasks_blocked()  # the waiter is waiting again
            client.events.append({"type": "c", "n": n})
            client._wake()
    assert found == [{"type": "c", "n": 2}]


def test_sample_counter_matches_the_decoder_on_the_servers_audio() -> None:
    """The load generator counts the bot's samples from the Opus headers instead of decoding:
    for every delta the server's encoder writes, the same count as sphn's decoder."""
    from unmute_trio.session.audio import OpusOutput
    from unmute_trio.testing.voice_client import OggOpusSampleCounter

    rng = np.random.default_rng(11)
    audio = np.concatenate(
        [speech_like(2.0, seed=1), np.zeros(24_000, np.float32), speech_like(3.3, seed=2)]
    )
    audio = np.concatenate([audio, 0.9 * rng.standard_normal(30_000).astype(np.float32)])
    encoder, decoder = OpusOutput(), sphn.OpusStreamReader(24_000)
    counter = OggOpusSampleCounter()
    whole = OggOpusSampleCounter()
    stream = b""
    position = deltas = decoded = 0
    while position < len(audio):
        size = int(rng.choice([240, 960, 1920, 1920, 3840, 5000]))
        delta = encoder.encode(audio[position : position + size])
        position += size
        stream += delta
        samples = len(decoder.append_bytes(delta))
        assert counter.append_bytes(delta) == samples
        deltas += bool(delta)
        decoded += samples
    assert deltas > 50
    # Pages split anywhere across chunks: the same total.
    total, at = 0, 0
    while at < len(stream):
        step = int(rng.integers(1, 700))
        total += whole.append_bytes(stream[at : at + step])
        at += step
    assert total == decoded


async def test_counted_samples_equal_decoded_samples_in_a_session(virtual_clock) -> None:
    """End to end: the greeting's audio deltas from a real server, counted as the load
    generator does, give each event the sample count the decoding client gives it."""
    from unmute_trio.testing.voice_client import OggOpusSampleCounter

    async with conversation_stack(tts=TtsSimConfig(seconds_per_word=0.1)) as stack:
        with trio.fail_after(60):
            async with VoiceClient.connect(stack.realtime_url) as client:
                await greet(client)  # the greeting, with silence from the microphone
    counter = OggOpusSampleCounter()
    counted = [
        counter.append_bytes(base64.b64decode(e["delta"]))
        if e["type"] == "response.audio.delta"
        else 0
        for e in client.events
    ]
    assert counted == client.samples_in_event and sum(counted) > 24_000
