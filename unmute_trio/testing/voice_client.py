"""A voice client for tests, examples and load generation: a real WebSocket client of
``/v1/realtime`` that streams Ogg/Opus audio the way the browser frontend does.

Audio is encoded with one streaming Opus writer into 40 ms Ogg pages (960 samples at 24 kHz,
what the Unmute frontend sends), one ``input_audio_buffer.append`` per page, the
beginning-of-stream header page first, paced on the trio clock (so under a mock clock a session
runs on virtual time). Received events are kept in order; bot audio is decoded, so a test can
check that audio was really heard (the load generator, with ``decode_audio=False``, only counts
its samples from the Opus packet headers: :class:`OggOpusSampleCounter`).

Usage::

    async with VoiceClient.connect("ws://localhost:8000/v1/realtime") as client:
        await client.update_session({"type": "smalltalk"}, voice=None)
        await client.stream(speech_like(1.5))       # real-time paced
        await client.stream(silence(3.0))
        await client.wait_for("response.audio.done")
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import sphn
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from unmute_trio.protocol.moshi import SAMPLE_RATE
from unmute_trio.protocol.ogg_opus import OpusAudioReader, opus_packet_samples

PAGE_SAMPLES = 960  # 40 ms, like the browser frontend (2 Opus frames of 20 ms per page)
PAGE_S = PAGE_SAMPLES / SAMPLE_RATE


# Bot audio kept by a client made with ``keep_audio=True``: at most this many seconds (older audio
# is dropped first), so a long session cannot grow a test's memory without limit.
MAX_KEPT_AUDIO_S = 120.0


class OggOpusSampleCounter:
    """How many samples an ``OpusStreamReader`` would return for each chunk of one Ogg/Opus
    stream, read from the Opus packets' headers instead of decoding them (decoding the bot's
    audio was the load generator's largest own cost). Pages and packets may span chunks; the
    OpusHead and OpusTags packets count nothing. For a load generator, which only times the
    audio: tests check it against sphn's decoder on the server's encoder output."""

    def __init__(self) -> None:
        self._reader = OpusAudioReader(channels=None)

    def append_bytes(self, data: bytes) -> int:
        return sum(map(opus_packet_samples, self._reader.feed(data)))


class VoiceClient:
    def __init__(
        self, ws: WebSocketConnection, *, keep_audio: bool = False, decode_audio: bool = True
    ) -> None:
        self.ws = ws
        # Decoded bot audio with the index of the event that carried it (keep_audio only).
        self.bot_audio: list[tuple[int, np.ndarray]] = []
        self._keep_audio = keep_audio
        self._kept_samples = 0
        self.events: list[dict[str, Any]] = []
        # Parallel to ``events``: when each arrived (trio clock) and how many bot samples it
        # decoded to (0 for events without audio). The load generator times turns with these.
        self.received_at: list[float] = []
        self.samples_in_event: list[int] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.bot_samples_heard = 0
        self.bot_peak = 0.0
        self._encoder = sphn.OpusStreamWriter(SAMPLE_RATE)
        self._decoder = sphn.OpusStreamReader(SAMPLE_RATE)
        # Without decoding (``decode_audio=False``, the load generator): samples are counted
        # from the packets' headers, bot_peak stays 0 and no audio can be kept.
        self._counter = None if decode_audio or keep_audio else OggOpusSampleCounter()
        self._changed = trio.Event()
        self._pending = np.zeros(0, dtype=np.float32)
        self._next_page_at: float | None = None
        self.pages_sent = 0

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        subprotocols: tuple[str, ...] = ("realtime",),
        keep_audio: bool = False,
        decode_audio: bool = True,
    ) -> AsyncIterator[VoiceClient]:
        async with open_websocket_url(url, subprotocols=list(subprotocols)) as ws:
            client = cls(ws, keep_audio=keep_audio, decode_audio=decode_audio)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client._receive_loop)
                yield client
                nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ sending

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(event))

    async def send_text(self, text: str) -> None:
        """Send an event already serialised as JSON text (the load generator's appends)."""
        await self.ws.send_message(text)

    async def update_session(
        self,
        instructions: dict[str, Any] | None,
        *,
        voice: str | None = None,
        allow_recording: bool = False,
    ) -> None:
        await self.send(
            {
                "type": "session.update",
                "session": {
                    "instructions": instructions,
                    "voice": voice,
                    "allow_recording": allow_recording,
                },
            }
        )

    async def stream(self, pcm: np.ndarray, *, realtime: bool = True) -> None:
        """Send ``pcm`` (float32, 24 kHz) as Ogg pages, one every 40 ms of audio."""
        self._pending = np.concatenate([self._pending, pcm.astype(np.float32)])
        while len(self._pending) >= PAGE_SAMPLES:
            page_pcm, self._pending = (
                self._pending[:PAGE_SAMPLES],
                self._pending[PAGE_SAMPLES:],
            )
            if realtime:
                now = trio.current_time()
                if self._next_page_at is None or self._next_page_at < now - 1.0:
                    self._next_page_at = now  # (re)start the pacing clock after a long gap
                await trio.sleep_until(self._next_page_at)
                self._next_page_at += PAGE_S
            ogg = self._encoder.append_pcm(page_pcm)
            if ogg:
                await self.send(
                    {"type": "input_audio_buffer.append", "audio": base64.b64encode(ogg).decode()}
                )
                self.pages_sent += 1

    # ------------------------------------------------------------------ receiving

    async def _receive_loop(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                arrived_at = trio.current_time()
                event = json.loads(message)
                samples = 0
                if event.get("type") == "response.audio.delta" and self._counter is not None:
                    samples = self._counter.append_bytes(base64.b64decode(event["delta"]))
                    self.bot_samples_heard += samples
                elif event.get("type") == "response.audio.delta":
                    pcm = self._decoder.append_bytes(base64.b64decode(event["delta"]))
                    samples = len(pcm)
                    self.bot_samples_heard += len(pcm)
                    if len(pcm):
                        # max |x| without the temporary array of np.abs
                        peak = max(float(pcm.max()), -float(pcm.min()))
                        self.bot_peak = max(self.bot_peak, peak)
                        if self._keep_audio:
                            self._keep(len(self.events), pcm)
                self.events.append(event)
                self.received_at.append(arrived_at)
                self.samples_in_event.append(samples)
                self._wake()
        except ConnectionClosed as e:
            # trio-websocket sets the close reason before it ends get_message()'s channel.
            assert e.reason is not None
            self.close_code = e.reason.code
            self.close_reason = e.reason.reason
            self._wake()

    def _keep(self, index: int, pcm: np.ndarray) -> None:
        self.bot_audio.append((index, np.asarray(pcm, dtype=np.float32).reshape(-1)))
        self._kept_samples += len(self.bot_audio[-1][1])
        while self._kept_samples > MAX_KEPT_AUDIO_S * SAMPLE_RATE:
            self._kept_samples -= len(self.bot_audio.pop(0)[1])

    def bot_audio_between(self, start: int, stop: int | None = None) -> np.ndarray:
        """Bot audio carried by events ``start`` (inclusive) to ``stop`` (exclusive)."""
        chunks = [pcm for i, pcm in self.bot_audio if i >= start and (stop is None or i < stop)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == event_type]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def wait_for(
        self,
        event_type: str | None = None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first event (from index ``after``) of this type matching ``predicate``.

        Raises ``ConnectionClosed``-like ``RuntimeError`` if the socket closes first. Callers
        bound the wait with ``trio.fail_after``.
        """
        events = self.events  # only ever appended to: look at each event once
        index = after if after >= 0 else max(0, len(events) + after)  # as events[after:]
        while True:
            while index < len(events):
                event = events[index]
                index += 1
                if (event_type is None or event.get("type") == event_type) and (
                    predicate is None or predicate(event)
                ):
                    return event
            if self.closed:
                raise RuntimeError(
                    f"closed ({self.close_code} {self.close_reason}) before {event_type}"
                )
            await self._changed.wait()

    async def wait_closed(self) -> int:
        while not self.closed:
            await self._changed.wait()
        assert self.close_code is not None
        return self.close_code

    def transcript(self, role: str) -> str:
        """What the client saw: user words from transcription deltas, bot words as spoken."""
        kind = (
            "conversation.item.input_audio_transcription.delta"
            if role == "user"
            else "response.text.delta"
        )
        return " ".join(e["delta"].strip() for e in self.of_type(kind) if e["delta"].strip())
