"""The client writer: the only task that sends on the browser WebSocket.

Everything for the browser (events, bot audio, the final close) goes through one bounded queue,
so frames keep their order and a slow client cannot make the server buffer without limit.

Bound: :data:`QUEUE_CAPACITY` items. The pacer releases bot audio at most 320 ms ahead of
playback and the writer normally empties the queue at once, so it only fills when the client
stops reading (its TCP window is full and ``send`` blocks). Then producers, which never wait
(``put`` is synchronous), raise :class:`ClientTooSlow` and the session ends with a clear error.
128 items is ~10 s of bot audio with its events: far beyond any healthy network hiccup.

Audio is encoded here, right before sending, by the session's front (one streaming Ogg/Opus
stream in the Unmute dialect, into which the TTS's Opus packets go as they are; PCM16 or G.711
in the OpenAI one). Items of a cancelled turn still in the
queue are dropped: after the interrupt decision nothing of that turn reaches the client.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import trio
from pydantic import BaseModel

from unmute_trio.protocol.ogg_opus import OpusPackets
from unmute_trio.session import hops
from unmute_trio.session.context import RealtimeSocket
from unmute_trio.session.front import ClientFront

log = logging.getLogger(__name__)

QUEUE_CAPACITY = 128


class ClientTooSlow(Exception):
    """The client stopped reading: the writer queue is full."""


@dataclasses.dataclass(frozen=True)
class _Event:
    event: BaseModel
    turn_id: int | None


@dataclasses.dataclass(frozen=True)
class _Audio:
    audio: np.ndarray | OpusPackets  # PCM, or the TTS's Opus packets (front.tts_opus)
    turn_id: int


@dataclasses.dataclass(frozen=True)
class _Close:
    code: int
    reason: str


_Item = _Event | _Audio | _Close


class ClientWriter:
    def __init__(
        self,
        socket: RealtimeSocket,
        front: ClientFront,
        *,
        is_cancelled: Callable[[int], bool],
        on_sent: Callable[[BaseModel, str], None] | None = None,
    ) -> None:
        self._socket = socket
        self._is_cancelled = is_cancelled
        self._on_sent = on_sent
        self._send, self._receive = trio.open_memory_channel[_Item](QUEUE_CAPACITY)
        self._front = front
        self._closing = False

    def send_event(
        self, event: BaseModel, *, turn_id: int | None = None, droppable: bool = False
    ) -> None:
        if self._closing:
            return
        try:
            self._send.send_nowait(_Event(event, turn_id))
        except trio.WouldBlock:
            if droppable:
                return
            raise ClientTooSlow(f"{QUEUE_CAPACITY} messages waiting for the client") from None

    def send_audio(self, audio: np.ndarray | OpusPackets, turn_id: int) -> None:
        if self._closing:
            return
        try:
            self._send.send_nowait(_Audio(audio, turn_id))
        except trio.WouldBlock:
            raise ClientTooSlow(f"{QUEUE_CAPACITY} messages waiting for the client") from None

    def close(self, code: int, reason: str) -> None:
        """Close after everything queued so far has been sent; later items are ignored."""
        if self._closing:
            return
        self._closing = True
        try:
            self._send.send_nowait(_Close(code, reason))
        except trio.WouldBlock:
            raise ClientTooSlow("no room left to close the session") from None

    async def run(self) -> tuple[int, str]:
        """Send until a close was requested and sent; returns the close code and reason."""
        while True:
            # The channel is never closed; the socket's send checkpoints on every item.
            item = await hops.receive(self._receive)
            if isinstance(item, _Close):
                await self._socket.close(item.code, item.reason)
                return item.code, item.reason
            if item.turn_id is not None and self._is_cancelled(item.turn_id):
                continue
            if isinstance(item, _Audio):
                audio = self._front.audio_event(item.audio, item.turn_id)
                if audio is None:
                    continue  # the encoder buffers until it has a whole packet
                event: BaseModel = audio
            else:
                event = item.event
            text = self._front.encode(event)
            await self._socket.send(text)
            if self._on_sent is not None:
                self._on_sent(event, text)  # the text too: a recording need not encode it again
