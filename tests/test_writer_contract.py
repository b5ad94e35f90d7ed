"""The client writer's promises held value by value: what a full queue says, what a close
ignores, what the recording callback receives, and audio the encoder is still buffering."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trio
import trio.testing
from pydantic import BaseModel

from unmute_trio.protocol.browser import ResponseAudioDelta, ResponseTextDelta
from unmute_trio.session.unmute_front import UnmuteFront
from unmute_trio.session.writer import QUEUE_CAPACITY, ClientTooSlow, ClientWriter


class Socket:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: list[tuple[int, str]] = []

    async def receive(self) -> str:
        await trio.sleep_forever()
        raise AssertionError

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed.append((code, reason))


class BufferingFront(UnmuteFront):
    """An encoder that waits for two frames before it gives a packet."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    def audio_event(self, pcm: np.ndarray, turn_id: int) -> BaseModel | None:
        self.frames += 1
        if self.frames % 2:
            return None
        return ResponseAudioDelta(delta=f"packet {self.frames // 2} of turn {turn_id}")


def _delta(text: str) -> ResponseTextDelta:
    return ResponseTextDelta(delta=text)


def _frame() -> np.ndarray:
    return np.zeros(1920, dtype=np.float32)


def _writer(socket: Socket | None = None, **kwargs) -> ClientWriter:
    return ClientWriter(
        socket or Socket(), UnmuteFront(), is_cancelled=lambda turn: False, **kwargs
    )


def test_a_full_queue_refuses_an_event_and_says_how_many_wait() -> None:
    writer = _writer()
    for i in range(QUEUE_CAPACITY):
        writer.send_event(_delta(str(i)))  # exactly the capacity fits
    with pytest.raises(ClientTooSlow) as refused:
        writer.send_event(_delta("one too many"))  # not droppable by default
    assert str(refused.value) == "128 messages waiting for the client"
    assert QUEUE_CAPACITY == 128
    writer.send_event(_delta("status"), droppable=True)  # skipped, no error


def test_a_full_queue_refuses_audio_and_says_how_many_wait() -> None:
    writer = _writer()
    for _ in range(QUEUE_CAPACITY):
        writer.send_audio(_frame(), turn_id=1)
    with pytest.raises(ClientTooSlow) as refused:
        writer.send_audio(_frame(), turn_id=1)
    assert str(refused.value) == "128 messages waiting for the client"


def test_a_close_that_finds_no_room_says_so() -> None:
    writer = _writer()
    for i in range(QUEUE_CAPACITY):
        writer.send_event(_delta(str(i)))
    with pytest.raises(ClientTooSlow) as refused:
        writer.close(1000, "bye")
    assert str(refused.value) == "no room left to close the session"


async def test_after_a_close_events_audio_and_other_closes_are_ignored() -> None:
    socket = Socket()
    writer = _writer(socket)
    writer.send_event(_delta("before"))
    writer.close(4000, "first")
    # Nothing after the close takes room in the queue: far more than it holds raises nothing.
    for i in range(QUEUE_CAPACITY + 5):
        writer.send_event(_delta(f"after {i}"))
        writer.send_audio(_frame(), turn_id=1)
        writer.close(1000, "second")
    with trio.fail_after(2):
        assert await writer.run() == (4000, "first")
    assert [json.loads(text)["delta"] for text in socket.sent] == ["before"]
    assert socket.closed == [(4000, "first")]


async def test_the_recording_callback_gets_each_sent_event_and_its_exact_text() -> None:
    socket = Socket()
    seen: list[tuple[BaseModel, str]] = []
    writer = _writer(socket, on_sent=lambda event, text: seen.append((event, text)))
    first, second = _delta("one"), _delta("two")
    writer.send_event(first, turn_id=3)
    writer.send_event(second)
    writer.close(1000, "")
    with trio.fail_after(2):
        await writer.run()
    assert [event for event, _ in seen] == [first, second]
    assert [text for _, text in seen] == socket.sent
    assert [json.loads(text)["delta"] for _, text in seen] == ["one", "two"]


async def test_audio_the_encoder_still_buffers_sends_nothing_and_the_writer_goes_on() -> None:
    socket = Socket()
    seen: list[BaseModel] = []
    writer = ClientWriter(
        socket,
        BufferingFront(),
        is_cancelled=lambda turn: False,
        on_sent=lambda event, text: seen.append(event),
    )
    for _ in range(4):
        writer.send_audio(_frame(), turn_id=7)
    writer.send_event(_delta("after the audio"), turn_id=7)
    writer.close(1000, "done")
    with trio.fail_after(2):
        assert await writer.run() == (1000, "done")
    sent = [json.loads(text) for text in socket.sent]
    assert [e["delta"] for e in sent] == [
        "packet 1 of turn 7",
        "packet 2 of turn 7",
        "after the audio",
    ]
    assert [e["type"] for e in sent] == ["response.audio.delta"] * 2 + ["response.text.delta"]
    assert len(seen) == 3
    assert socket.closed == [(1000, "done")]
