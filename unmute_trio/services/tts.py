"""Client of the moshi-server streaming text-to-speech (``/api/tts_streaming``, docs/services.md).

Usage (one task sends, another receives)::

    async with connect_tts(settings.tts_url, voice=voice, api_key=key) as tts:
        await tts.send_text("Hello there!")   # cleaned; nothing is sent if it cleans to ""
        await tts.send_eos()
        while (message := await tts.receive()) is not None:
            ...                               # Audio (1920 samples) or TextOut (start_s, stop_s)
                                              # (OpusPackets instead of Audio with opus=True)

API
- :func:`connect_tts` ``(url, *, voice=None, custom_voice_message=None, address=None,
  api_key="public_token", handshake_timeout_s=0.5, opus=False)``: async context manager.
  Connects to ``<url>/api/tts_streaming?format=PcmMessagePack&voice=<url-escaped voice>``
  (``format=OggOpusMessagePack`` with ``opus=True``), waits for
  ``Ready`` and yields a :class:`TextToSpeech`. A ``custom:`` voice is not put in the URL: its
  ``custom_voice_message`` (the raw msgpack ``Voice`` message stored from the voice-cloning
  service) is sent verbatim right after ``Ready``, before any text, within the handshake
  deadline. ``voice=None`` (or a ``custom:`` voice without its message) gets the server's
  default voice. Errors as for the STT, with service ``"tts"``. Fits ``open_service``.
- :meth:`TextToSpeech.send_text`, :meth:`TextToSpeech.send_eos`.
- :meth:`TextToSpeech.receive`: the next ``Audio`` or ``TextOut``; ``None`` once the server
  has finished after ``Eos`` and closed the stream in order. A close before ``Eos`` (or with an
  error code) raises ``ServiceDisconnected``. With ``opus=True`` the server's ``OggOpus`` pages
  are read here (``protocol/ogg_opus.py``) and their audio packets handed over as
  ``OpusPackets`` (one per message that completes a packet; the OpusHead is checked for one
  channel, OpusTags dropped); ``Audio`` is still accepted. Without it, ``OggOpus`` is a
  protocol error.

Pacing audio to real time is the session's job; this client hands messages over as they come.

Metrics (docs/services.md): ``worker_tts_sessions`` and ``worker_tts_active_sessions`` on Ready;
``worker_tts_sent_frames`` per non-empty Text; ``worker_tts_recv_frames`` per Audio;
``worker_tts_recv_words`` per Text received; ``worker_tts_ttft`` (first Audio after the first
Text); at close ``worker_tts_audio_duration`` and, if text was sent,
``worker_tts_gen_duration``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import trio

from unmute_trio import metrics
from unmute_trio.errors import ServiceDisconnected, ServiceProtocolError
from unmute_trio.protocol.moshi import (
    SAMPLE_RATE,
    Audio,
    Eos,
    Error,
    OggOpus,
    Ready,
    TextIn,
    TextOut,
    decode_tts_server,
    encode,
)
from unmute_trio.protocol.ogg_opus import OggFormatError, OpusAudioReader, OpusPackets
from unmute_trio.protocol.tts_text import clean_text_for_tts
from unmute_trio.services.moshi_ws import MoshiTransport, endpoint_url, open_moshi_socket
from unmute_trio.voice_store import CUSTOM_VOICE_PREFIX

log = logging.getLogger(__name__)

SERVICE = "tts"
TTS_PATH = "/api/tts_streaming"

TtsMessage = Audio | OpusPackets | TextOut
# Audio one OggOpus message may complete. moshi-server sends each 80 ms model step as it comes;
# the bound keeps a broken TTS from queueing, in the turn's 64-message playback queue, many
# thousand tiny packets per message (each a Python object) that the pacer would hold for hours.
MAX_OPUS_MESSAGE_SAMPLES = 2 * SAMPLE_RATE
_ServerMessage = Ready | Error | Audio | OggOpus | TextOut


def tts_query(voice: str | None, *, opus: bool = False) -> str:
    """The query string: ``format=PcmMessagePack`` (or ``OggOpusMessagePack``), plus the named
    voice if any."""
    query = "format=OggOpusMessagePack" if opus else "format=PcmMessagePack"
    if voice and not voice.startswith(CUSTOM_VOICE_PREFIX):
        query += "&voice=" + quote(voice, safe="")
    return query


class TextToSpeech:
    """One open TTS stream (one bot reply). Create it with :func:`connect_tts`."""

    def __init__(self, socket: MoshiTransport[_ServerMessage], *, opus: bool = False) -> None:
        self._socket = socket
        self._opus = OpusAudioReader() if opus else None
        self._eos_sent = False
        self.received_samples = 0
        self._first_text_at: float | None = None
        self._first_audio_seen = False

    async def send_text(self, text: str) -> bool:
        """Clean ``text`` and send it; return False (and send nothing) if nothing is left."""
        if self._eos_sent:
            raise RuntimeError("send_text() after send_eos()")
        cleaned = clean_text_for_tts(text)
        if not cleaned:
            return False
        if self._first_text_at is None:
            self._first_text_at = trio.current_time()
        metrics.TTS_SENT_FRAMES.inc()
        await self._socket.send(encode(TextIn(text=cleaned)))
        return True

    async def send_eos(self) -> None:
        """No more text: the server speaks what it has, then closes the stream."""
        if self._eos_sent:
            return
        self._eos_sent = True
        await self._socket.send(encode(Eos()))

    async def receive(self) -> TtsMessage | None:
        """The next Audio or TextOut, or None after the server finished (only after Eos)."""
        while True:
            message = await self._socket.receive()
            if message is None:
                if not self._eos_sent:
                    raise ServiceDisconnected(SERVICE, "the server closed the stream before Eos")
                return None
            if isinstance(message, Audio):
                self._on_audio(len(message.pcm))
                return message
            if isinstance(message, OggOpus):
                packets = self._read_opus(message.data)
                if packets is not None:
                    self._on_audio(packets.samples)
                    return packets
                continue
            if isinstance(message, TextOut):
                metrics.TTS_RECV_WORDS.inc()
                return message
            if isinstance(message, Error):
                raise ServiceProtocolError(SERVICE, f"error from the server: {message.message}")
            # Ready again: harmless, nothing to report.

    def _read_opus(self, data: bytes) -> OpusPackets | None:
        """The audio packets that ``data`` completes, or None (headers, part of a page)."""
        if self._opus is None:
            raise ServiceProtocolError(SERVICE, "OggOpus audio, but PcmMessagePack was asked")
        try:
            packets = self._opus.feed(data)
        except OggFormatError as e:
            raise ServiceProtocolError(SERVICE, f"broken Ogg/Opus audio: {e}") from None
        if not packets:
            return None
        audio = OpusPackets.of(packets)
        if audio.samples > MAX_OPUS_MESSAGE_SAMPLES:
            raise ServiceProtocolError(
                SERVICE, f"{audio.samples / SAMPLE_RATE:.1f} s of Opus audio in one message"
            )
        return audio

    def _on_audio(self, samples: int) -> None:
        metrics.TTS_RECV_FRAMES.inc()
        self.received_samples += samples
        if not self._first_audio_seen and self._first_text_at is not None:
            self._first_audio_seen = True
            metrics.TTS_TTFT.observe(trio.current_time() - self._first_text_at)

    def _observe_close(self) -> None:
        metrics.TTS_ACTIVE_SESSIONS.dec()
        metrics.TTS_AUDIO_DURATION.observe(self.received_samples / SAMPLE_RATE)
        if self._first_text_at is not None:
            metrics.TTS_GEN_DURATION.observe(trio.current_time() - self._first_text_at)


@asynccontextmanager
async def connect_tts(
    url: str,
    *,
    voice: str | None = None,
    custom_voice_message: bytes | None = None,
    address: str | None = None,
    api_key: str = "public_token",
    handshake_timeout_s: float = 0.5,
    opus: bool = False,
) -> AsyncIterator[TextToSpeech]:
    """Open a TTS stream at ``url`` (e.g. ``ws://tts:8080``); see the module docstring."""
    is_custom = voice is not None and voice.startswith(CUSTOM_VOICE_PREFIX)
    if custom_voice_message is not None and not is_custom:
        raise ValueError(f"custom_voice_message given for the non-custom voice {voice!r}")
    if is_custom and custom_voice_message is None:
        log.warning("Custom voice %s is not known (expired?); using the default voice", voice)
    async with open_moshi_socket(
        SERVICE,
        endpoint_url(url, TTS_PATH, tts_query(voice, opus=opus)),
        decode_tts_server,
        api_key=api_key,
        handshake_timeout_s=handshake_timeout_s,
        address=address,
        send_after_ready=custom_voice_message,
    ) as socket:
        tts = TextToSpeech(socket, opus=opus)
        metrics.TTS_SESSIONS.inc()
        metrics.TTS_ACTIVE_SESSIONS.inc()
        try:
            yield tts
        finally:
            tts._observe_close()
