"""Client of the moshi-server streaming speech-to-text (``/api/asr-streaming``, docs/services.md).

Usage (one task sends, another receives)::

    async with connect_stt(settings.stt_url, api_key=settings.kyutai_api_key) as stt:
        await stt.send_audio(pcm)             # any length; sent as whole 1920-sample frames
        message = await stt.receive()         # Word | EndWord | Step | Marker

API
- :func:`connect_stt` ``(url, *, address=None, api_key="public_token", handshake_timeout_s=0.5)``:
  async context manager; connects to ``<url>/api/asr-streaming`` (``url`` may carry a path
  prefix), waits for ``Ready`` and yields a :class:`SpeechToText`. Raises ``ServiceAtCapacity``,
  ``ServiceTimeout``, ``ServiceDisconnected`` or ``ServiceProtocolError`` (service ``"stt"``).
  The socket is closed on every exit. Its signature fits ``services.discovery.open_service``.
- :meth:`SpeechToText.send_audio`: re-chunks into whole 1920-sample frames (the server steps on
  1920-sample frames and takes one message per step, so 960-sample pages would need two
  messages per step). The frames a call completes go out as one ``Audio`` message: a flush's
  eight frames are one message, not eight (the server then takes one buffered frame per step,
  as fast as eight messages; each message costs a send here and a receive there). At most 1919
  samples stay buffered between calls.
- :meth:`SpeechToText.send_silence_frames`: appends ``n × 1920`` zeros to the stream at once
  (the flush after a detected pause), in one message.
- :meth:`SpeechToText.receive`: the next ``Word``, ``EndWord``, ``Step`` or ``Marker``; a
  ``Step`` whose pause heads are malformed is a ``ServiceProtocolError``. What the Steps mean
  (the STT clock, the smoothed pause prediction) is the conversation core's business
  (``conversation/machine.py``, ``conversation/pause.py``). The STT never ends a stream by
  itself, so any close raises ``ServiceDisconnected``.

Metrics (docs/services.md): ``worker_stt_sessions`` and ``worker_stt_active_sessions`` on Ready;
``worker_stt_sent_frames`` per 1920-sample frame sent; ``worker_stt_recv_frames`` per Step;
``worker_stt_recv_words`` (words in each Word); ``worker_stt_ttft`` (first Step after the first
audio); at close, if audio was sent, ``worker_stt_session_duration`` (from the first audio),
``worker_stt_audio_duration`` and ``worker_stt_num_words``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import trio

from unmute_trio import metrics
from unmute_trio.conversation.pause import check_prs
from unmute_trio.errors import ServiceDisconnected, ServiceProtocolError
from unmute_trio.protocol.moshi import (
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    EndWord,
    Error,
    Marker,
    Ready,
    Step,
    Word,
    decode_stt_server,
    encode,
    encode_audio,
)
from unmute_trio.services.moshi_ws import MoshiTransport, endpoint_url, open_moshi_socket

SERVICE = "stt"
STT_PATH = "/api/asr-streaming"

SttMessage = Word | EndWord | Step | Marker
_ServerMessage = Ready | Error | Word | EndWord | Step | Marker


class SpeechToText:
    """One open STT stream. Create it with :func:`connect_stt`.

    After a send or receive was cancelled or failed, the stream is in an unknown state: close it.
    """

    def __init__(self, socket: MoshiTransport[_ServerMessage]) -> None:
        self._socket = socket
        # Re-chunking buffer: fewer than SAMPLES_PER_FRAME samples between calls.
        self._pending = np.zeros(SAMPLES_PER_FRAME, dtype=np.float32)
        self._pending_len = 0
        self._sending = False
        self.sent_samples = 0
        self.received_words = 0
        self._first_audio_at: float | None = None
        self._first_step_seen = False

    @property
    def buffered_samples(self) -> int:
        """Samples waiting in the re-chunking buffer for a full frame (always < 1920)."""
        return self._pending_len

    async def send_audio(self, pcm: np.ndarray) -> None:
        """Queue 24 kHz mono samples; the complete 1920-sample frames go out now, as one
        ``Audio`` message (two or more only when a call completes several frames: a flush)."""
        pcm = np.asarray(pcm, dtype=np.float32)
        if pcm.ndim != 1:
            raise ValueError(f"expected 1-D audio, got shape {pcm.shape}")
        with self._send_guard():
            held = self._pending_len
            frames = (held + len(pcm)) // SAMPLES_PER_FRAME
            if frames == 0:
                self._pending[held : held + len(pcm)] = pcm
                self._pending_len += len(pcm)
                return
            take = frames * SAMPLES_PER_FRAME - held  # samples of pcm that go out now
            out = np.concatenate((self._pending[:held], pcm[:take])) if held else pcm[:take]
            rest = len(pcm) - take
            self._pending[:rest] = pcm[take:]
            self._pending_len = rest
            await self._send_frames(out, frames)

    async def send_silence_frames(self, n: int) -> None:
        """Append ``n × 1920`` zeros to the stream: buffered samples go out first, completed with
        zeros, in the same message; the remaining zeros of the last frame stay buffered."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        await self.send_audio(np.zeros(n * SAMPLES_PER_FRAME, dtype=np.float32))

    async def send_marker(self, marker_id: int) -> None:
        """Ask for ``Marker(marker_id)`` back once all audio sent so far has been processed."""
        with self._send_guard():
            await self._socket.send(encode(Marker(id=marker_id)))

    async def receive(self) -> SttMessage:
        """The next Word, EndWord, Step or Marker; ``Ready`` repeats are skipped."""
        while True:
            message = await self._socket.receive()
            if message is None:
                raise ServiceDisconnected(SERVICE, "the server closed the stream")
            if isinstance(message, Step):
                self._on_step(message)
                return message
            if isinstance(message, Word):
                metrics.STT_RECV_WORDS.inc(len(message.text.split()))
                self.received_words += 1
                return message
            if isinstance(message, EndWord | Marker):
                return message
            if isinstance(message, Error):
                raise ServiceProtocolError(SERVICE, f"error from the server: {message.message}")
            # Ready again: harmless, nothing to report.

    def _on_step(self, step: Step) -> None:
        metrics.STT_RECV_FRAMES.inc()
        if not self._first_step_seen and self._first_audio_at is not None:
            self._first_step_seen = True
            metrics.STT_TTFT.observe(trio.current_time() - self._first_audio_at)
        try:
            check_prs(step.prs)
        except ValueError as e:
            raise ServiceProtocolError(SERVICE, f"bad Step: {e}") from None

    async def _send_frames(self, pcm: np.ndarray, frames: int) -> None:
        data = encode_audio(pcm)  # copies the samples: the buffers may be reused now
        if self._first_audio_at is None:
            self._first_audio_at = trio.current_time()
        self.sent_samples += len(pcm)
        metrics.STT_SENT_FRAMES.inc(frames)
        await self._socket.send(data)

    def _send_guard(self) -> _SendGuard:
        return _SendGuard(self)

    def _observe_close(self) -> None:
        metrics.STT_ACTIVE_SESSIONS.dec()
        if self._first_audio_at is not None:
            metrics.STT_SESSION_DURATION.observe(trio.current_time() - self._first_audio_at)
            metrics.STT_AUDIO_DURATION.observe(self.sent_samples / SAMPLE_RATE)
            metrics.STT_NUM_WORDS.observe(self.received_words)


class _SendGuard:
    """Two tasks sending at once would interleave the re-chunking buffer: refuse it loudly."""

    def __init__(self, stt: SpeechToText) -> None:
        self._stt = stt

    def __enter__(self) -> None:
        if self._stt._sending:
            raise trio.BusyResourceError("another task is already sending to the STT")
        self._stt._sending = True

    def __exit__(self, *exc_info: object) -> None:
        self._stt._sending = False


@asynccontextmanager
async def connect_stt(
    url: str,
    *,
    address: str | None = None,
    api_key: str = "public_token",
    handshake_timeout_s: float = 0.5,
) -> AsyncIterator[SpeechToText]:
    """Open an STT stream at ``url`` (e.g. ``ws://stt:8080``); see the module docstring."""
    async with open_moshi_socket(
        SERVICE,
        endpoint_url(url, STT_PATH),
        decode_stt_server,
        api_key=api_key,
        handshake_timeout_s=handshake_timeout_s,
        address=address,
    ) as socket:
        stt = SpeechToText(socket)
        metrics.STT_SESSIONS.inc()
        metrics.STT_ACTIVE_SESSIONS.inc()
        try:
            yield stt
        finally:
            stt._observe_close()
