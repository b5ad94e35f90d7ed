"""The playback clock (pure) and the client writer (bounded, drops cancelled turns)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import sphn
import trio
import trio.testing

from unmute_trio.protocol.browser import ResponseTextDelta, SessionUpdated
from unmute_trio.session.pacer import AUDIO_LEAD_S, PlaybackClock
from unmute_trio.session.unmute_front import UnmuteFront
from unmute_trio.session.writer import QUEUE_CAPACITY, ClientTooSlow, ClientWriter


def test_audio_is_released_at_most_four_frames_ahead() -> None:
    clock = PlaybackClock()
    assert clock.next_frame_due(10.0) == 10.0
    for _ in range(5):
        clock.frame_released(10.0)
    # 5 frames (400 ms) released at t=10: the 6th is due when playback is 320 ms behind it.
    assert clock.next_frame_due(10.0) == pytest.approx(10.0 + 0.4 - AUDIO_LEAD_S)
    assert AUDIO_LEAD_S == pytest.approx(0.32)


def test_words_wait_for_playback_and_for_their_audio() -> None:
    clock = PlaybackClock()
    clock.add_word(0.0, "Hello")
    clock.add_word(0.5, "there")
    assert clock.next_word_due() is None  # no audio yet
    clock.frame_released(0.0)
    assert clock.pop_due_words(0.0) == ["Hello"]
    # "there" starts at 0.5 s, beyond the 80 ms of audio released: held.
    assert clock.next_word_due() is None
    for _ in range(7):
        clock.frame_released(0.0)
    assert clock.next_word_due() == pytest.approx(0.5)
    assert clock.pop_due_words(0.4) == []
    assert clock.pop_due_words(0.5) == ["there"]


class RecordingSocket:
    def __init__(self, block_after: int | None = None) -> None:
        self.sent: list[dict] = []
        self.closed: tuple[int, str] | None = None
        self.block_after = block_after

    async def receive(self) -> str:
        await trio.sleep_forever()
        raise AssertionError

    async def send(self, text: str) -> None:
        if self.block_after is not None and len(self.sent) >= self.block_after:
            await trio.sleep_forever()
        self.sent.append(json.loads(text))

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)


def frame(value: float = 0.1) -> np.ndarray:
    return np.full(1920, value, dtype=np.float32)


async def test_writer_sends_in_order_encodes_audio_and_closes() -> None:
    socket = RecordingSocket()
    writer = ClientWriter(socket, UnmuteFront(), is_cancelled=lambda turn: False)
    session = {"allow_recording": False, "instructions": None, "voice": None}
    writer.send_event(SessionUpdated.model_validate({"session": session}))
    for _ in range(3):
        writer.send_audio(frame(), turn_id=1)
    writer.send_event(ResponseTextDelta(delta="hi"), turn_id=1)
    writer.close(1000, "bye")
    writer.send_event(ResponseTextDelta(delta="too late"))
    with trio.fail_after(2):
        assert await writer.run() == (1000, "bye")
    types = [e["type"] for e in socket.sent]
    assert types[0] == "session.updated" and types[-1] == "response.text.delta"
    assert socket.sent[-1]["delta"] == "hi"
    audio = b"".join(base64.b64decode(e["delta"]) for e in socket.sent if "audio" in e["type"])
    assert audio.startswith(b"OggS")
    decoded = sphn.OpusStreamReader(24000).append_bytes(audio)
    assert len(decoded) > 0
    assert socket.closed == (1000, "bye")


async def test_writer_drops_items_of_cancelled_turns() -> None:
    socket = RecordingSocket()
    cancelled: set[int] = set()
    writer = ClientWriter(socket, UnmuteFront(), is_cancelled=cancelled.__contains__)
    writer.send_event(ResponseTextDelta(delta="old"), turn_id=1)
    writer.send_audio(frame(), turn_id=1)
    writer.send_event(ResponseTextDelta(delta="new"), turn_id=2)
    cancelled.add(1)  # the interrupt decision, before the writer got to them
    writer.close(1000, "")
    with trio.fail_after(2):
        await writer.run()
    assert [e["delta"] for e in socket.sent] == ["new"]


async def test_a_client_that_stops_reading_is_detected() -> None:
    socket = RecordingSocket(block_after=2)
    writer = ClientWriter(socket, UnmuteFront(), is_cancelled=lambda turn: False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(ClientTooSlow):
            for _ in range(QUEUE_CAPACITY + 10):
                writer.send_audio(frame(), turn_id=1)
                await trio.testing.wait_all_tasks_blocked()
        # Droppable status updates never raise: they are skipped.
        writer.send_event(ResponseTextDelta(delta="status"), droppable=True)
        nursery.cancel_scope.cancel()
    assert len(socket.sent) == 2
