"""The session's audio on its way to the STT: the client reader puts microphone audio and flush
silence in, the STT sender task takes them out and sends them (``services/stt.py``).

The reader holds microphone audio back until it completes a 1920-sample frame of the STT
stream, then hands it over through a bounded queue: the STT client sends nothing shorter anyway,
so nothing goes out later than it would page by page, and the sender wakes once per 80 ms frame
instead of once per 40 ms browser page. "Of the STT stream": after a flush or audio of odd
lengths the stream may be part way into a frame, and a frame is complete when the held audio
fills what is left of it (counting it from the held audio alone, as a first version did, sent
every frame one page late after a flush that left half a frame in the STT client).
"""

from __future__ import annotations

import numpy as np
import trio

from unmute_trio.protocol.moshi import SAMPLES_PER_FRAME
from unmute_trio.services.stt import SpeechToText
from unmute_trio.session import hops

# Audio waiting for the STT: items hold at least one frame (two browser pages), or a flush's
# silence, so ~2.5 s. The reader waits when it is full, which pushes back on the client's socket.
STT_QUEUE = 32
# After this long without client audio, one silent frame keeps the STT stream open.
STT_KEEPALIVE_S = 10.0
# The sender pushes the keep-alive deadline back at most this often: each move of a cancel
# scope's deadline is an entry in trio's deadline heap, and audio comes 12.5 times a second.
STT_KEEPALIVE_RESOLUTION_S = 1.0


class SttFeed:
    """One session's audio path to the STT: :meth:`audio` and :meth:`silence` from the client
    reader, :meth:`send_to` as the sender task. The queue is never closed: when the STT fails
    and the sender ends, the reader keeps putting audio in until the session closes (and waits
    when it is full) instead of hitting a closed channel."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[np.ndarray](STT_QUEUE)
        self._held: list[np.ndarray] = []
        self._held_samples = 0
        # Where the stream is within its current frame: the samples handed over, modulo 1920
        # (flushes and keep-alives add whole frames and do not move it).
        self._frame_offset = 0

    async def audio(self, pcm: np.ndarray) -> None:
        """Microphone audio, handed over once it completes a frame of the stream."""
        self._held.append(pcm)
        self._held_samples += len(pcm)
        if self._frame_offset + self._held_samples >= SAMPLES_PER_FRAME:
            await hops.send(self._send, self._take_held(()))

    async def silence(self, frames: int) -> None:
        """A flush: ``frames`` frames of zeros, after everything the user said (held audio
        included), waiting for room like any audio."""
        silence = np.zeros(frames * SAMPLES_PER_FRAME, dtype=np.float32)
        await self._send.send(self._take_held((silence,)))

    def _take_held(self, then: tuple[np.ndarray, ...]) -> np.ndarray:
        parts = [*self._held, *then]
        self._frame_offset = (self._frame_offset + sum(map(len, parts))) % SAMPLES_PER_FRAME
        self._held.clear()
        self._held_samples = 0
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def send_to(self, stt: SpeechToText) -> None:
        """The sender task: the queue's items to the STT, and a silent frame after
        :data:`STT_KEEPALIVE_S` without any (OpenAI clients may talk by text alone, and
        moshi-server closes a stream that receives nothing for 20 s)."""
        while True:
            # One cancel scope for as long as audio flows, its deadline pushed back now and
            # then (a scope per frame cost ~4 % of the server's CPU under load).
            with trio.move_on_after(STT_KEEPALIVE_S) as keepalive:
                while True:
                    await stt.send_audio(await hops.receive(self._receive))
                    now = trio.current_time()
                    if keepalive.deadline - now < STT_KEEPALIVE_S - STT_KEEPALIVE_RESOLUTION_S:
                        keepalive.deadline = now + STT_KEEPALIVE_S
            # The queue is empty (the wait timed out): audio still held goes out before the
            # silent frame, in stream order, instead of being glued to the next utterance.
            await stt.send_audio(self._take_held((np.zeros(SAMPLES_PER_FRAME, dtype=np.float32),)))
