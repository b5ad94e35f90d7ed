"""The Ogg/Opus codec of one session: browser microphone pages in, bot audio pages out.

Both directions are one streaming sphn object per session at 24 kHz mono, used from a single
task and called inline on the trio thread: an 80 ms frame costs a fraction of a millisecond,
less than a hop to a worker thread (measured: docs/benchmarks.md).

Input (:class:`OpusInput`, docs/protocol.md): the browser sends each Ogg page of its encoder as
one ``input_audio_buffer.append`` (base64). Its WebSocket library replays messages
queued during an earlier connection, so input is ignored until a page that begins a new logical
stream (the Ogg beginning-of-stream flag). Unlike the original, the Ogg page framing is checked
here before any byte reaches the decoder, because sphn's reader, once given non-Ogg bytes, fails
on every later call ("unexpected ogg capture pattern") and cannot be repaired.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import numpy as np
import sphn

from unmute_trio.protocol.moshi import SAMPLE_RATE
from unmute_trio.protocol.ogg_opus import OggOpusWriter, OpusAudioReader, OpusPackets

# Ogg page header (RFC 3533 §6): "OggS", version 0, header type flags, granule position (8),
# serial number (4), page sequence number (4), CRC (4), number of segments, then the segment
# table (one length byte per segment) and the segment data.
_CAPTURE_PATTERN = b"OggS"
_VERSION_OFFSET = 4
_HEADER_TYPE_OFFSET = 5
_BEGINNING_OF_STREAM = 0x02
_SEGMENT_COUNT_OFFSET = 26
_FIXED_HEADER_SIZE = 27
# The largest possible page: 255 segments of 255 bytes. It bounds the bytes held back between
# messages while waiting for the rest of a page.
MAX_OGG_PAGE_SIZE = _FIXED_HEADER_SIZE + 255 + 255 * 255

_EMPTY = np.zeros(0, dtype=np.float32)


class AudioInputError(ValueError):
    """The client sent audio the server cannot decode; the message says what and what to do."""


def _page_size(data: bytes | bytearray, start: int) -> int | None:
    """The size of the Ogg page at ``start``, or ``None`` if ``data`` ends before its header does.

    Raises :class:`AudioInputError` if the bytes at ``start`` are not an Ogg page header.
    """
    available = len(data) - start
    prefix = bytes(data[start : start + len(_CAPTURE_PATTERN)])
    if not _CAPTURE_PATTERN.startswith(prefix):
        raise AudioInputError("audio is not an Ogg stream (no Ogg page starts here)")
    if available > _VERSION_OFFSET and data[start + _VERSION_OFFSET] != 0:
        raise AudioInputError(f"unsupported Ogg version {data[start + _VERSION_OFFSET]}")
    if available < _FIXED_HEADER_SIZE:
        return None
    segments = data[start + _SEGMENT_COUNT_OFFSET]
    if available < _FIXED_HEADER_SIZE + segments:
        return None
    table_start = start + _FIXED_HEADER_SIZE
    return _FIXED_HEADER_SIZE + segments + sum(data[table_start : table_start + segments])


def _is_stream_start(data: bytes | bytearray, start: int) -> bool:
    return bool(data[start + _HEADER_TYPE_OFFSET] & _BEGINNING_OF_STREAM)


class OpusInput:
    """Decodes the browser's base64 Ogg/Opus pages to float32 mono PCM at 24 kHz.

    :meth:`feed` takes the ``audio`` field of one ``input_audio_buffer.append``:

    - Until a stream has started, each message is looked at on its own, as replayed messages of
      an old stream must not be glued to a new one: whole pages are skipped unless they carry
      the Ogg beginning-of-stream (BOS) flag, and the stream starts at the first BOS page (it
      holds the OpusHead header). The message must hold at least the first 6 bytes of that page
      (the header flags); an incomplete page without the flag is dropped.
    - Once started, pages may be split across messages in any way; bytes of an incomplete page
      are held back (at most :data:`MAX_OGG_PAGE_SIZE`). A new BOS page starts a new stream with
      a fresh decoder.
    - Invalid base64 raises :class:`AudioInputError` and changes nothing.
    - Bytes that are not Ogg pages, or pages the decoder rejects, raise :class:`AudioInputError`
      and reset the decoder: everything up to the next BOS page is then skipped. To recover, a
      client sends a new Ogg stream that starts with its BOS page (as the browser does when it
      reconnects). The session may go on; the audio in between is lost.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self._sample_rate = sample_rate
        self._reader: sphn.OpusStreamReader | None = None  # None: waiting for a BOS page
        self._reader_used = False  # whether the current decoder has been given any page
        self._pending = bytearray()  # the start of a page whose end has not arrived yet
        self.samples_decoded = 0
        self.pages_skipped = 0  # whole pages ignored while waiting for a BOS page

    @property
    def started(self) -> bool:
        """Whether a stream has begun (a BOS page was seen since the last reset)."""
        return self._reader is not None

    def feed(self, b64: str) -> np.ndarray:
        """Decode one message's base64 Ogg bytes; returns the new samples (possibly none)."""
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise AudioInputError(f"audio is not valid base64: {e}") from None
        try:
            return self._feed_bytes(data)
        except AudioInputError:
            self.reset()
            raise

    def reset(self) -> None:
        """Forget the current stream: wait for the next BOS page."""
        self._reader = None
        self._pending.clear()

    def _feed_bytes(self, data: bytes) -> np.ndarray:
        if self._reader is None:
            start = self._find_stream_start(data)
            if start is None:
                return _EMPTY
            self._reader = sphn.OpusStreamReader(self._sample_rate)
            self._reader_used = False
            data = data[start:]
        self._pending += data
        decoded: list[np.ndarray] = []
        position = 0
        batch_start = 0  # whole pages from here to ``position`` go to the decoder together
        while (size := _page_size(self._pending, position)) is not None:
            if position + size > len(self._pending):
                break
            if _is_stream_start(self._pending, position) and (
                position > batch_start or self._reader_used
            ):
                # A new logical stream (e.g. the client restarted its encoder): decode what
                # belongs to the old one, then start over with a fresh decoder.
                decoded.append(self._decode(self._pending[batch_start:position]))
                self._reader = sphn.OpusStreamReader(self._sample_rate)
                self._reader_used = False
                batch_start = position
            position += size
        decoded.append(self._decode(self._pending[batch_start:position]))
        del self._pending[:position]
        pcm = np.concatenate(decoded) if len(decoded) > 1 else decoded[0]
        self.samples_decoded += len(pcm)
        return pcm

    def _find_stream_start(self, data: bytes) -> int | None:
        """The offset of the first BOS page in ``data``, whole or not (its header flags are
        enough to know); whole pages before it are skipped."""
        position = 0
        while len(data) - position > _HEADER_TYPE_OFFSET:
            size = _page_size(data, position)
            if _is_stream_start(data, position):
                return position
            if size is None or position + size > len(data):
                return None
            self.pages_skipped += 1
            position += size
        return None

    def _decode(self, pages: bytearray) -> np.ndarray:
        if not pages:
            return _EMPTY
        assert self._reader is not None
        self._reader_used = True
        try:
            pcm = self._reader.append_bytes(bytes(pages))
        except ValueError as e:
            raise AudioInputError(f"the Opus decoder rejected the audio: {e}") from None
        return np.asarray(pcm, dtype=np.float32).reshape(-1)


class OpusOutput:
    """The bot's audio as one streaming Ogg/Opus stream for the whole connection.

    Two sources feed the same stream (:class:`~unmute_trio.protocol.ogg_opus.OggOpusWriter`):
    Opus packets from the TTS (:meth:`packets`, re-framed without decoding) and float32 mono
    PCM at 24 kHz (:meth:`encode`, through one sphn encoder whose packets are taken out of its
    own Ogg pages). The first non-empty result starts with the OpusHead and OpusTags pages;
    later ones hold the audio pages of the new packets, or ``b""`` while the encoder waits for a
    whole packet. Every non-empty result is sent as is: the concatenation is one valid Ogg
    stream, which is what the browser's decoder expects for the whole connection.

    Cost, measured on the project's 2-core box (sphn 0.2.1, 10 s of ``speech_like`` audio in
    1920-sample frames): about 190 µs of CPU per 80 ms frame to encode PCM, i.e. ~0.24 % of one
    core while the bot speaks; re-framing the TTS's packets costs a few µs (docs/benchmarks.md).
    Decoding the browser's input costs about 55 µs per 80 ms.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self._sample_rate = sample_rate
        self._stream = OggOpusWriter()
        self._encoder: sphn.OpusStreamWriter | None = None  # made for the first PCM
        self._encoded = OpusAudioReader()
        self.samples_encoded = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        if pcm.ndim != 1:
            raise ValueError(f"expected mono PCM (a 1-D array), got shape {pcm.shape}")
        if len(pcm) == 0:
            return b""
        if self._encoder is None:
            self._encoder = sphn.OpusStreamWriter(self._sample_rate)
        # sphn refuses anything but a contiguous 1-D float32 array.
        samples = np.ascontiguousarray(pcm, dtype=np.float32)
        self.samples_encoded += len(samples)
        return self._stream.pages(self._encoded.feed(self._encoder.append_pcm(samples)))

    def packets(self, packets: Sequence[bytes]) -> bytes:
        return self._stream.pages(packets)

    def encode_base64(self, audio: np.ndarray | OpusPackets) -> str | None:
        """The base64 text of ``response.audio.delta`` for PCM or packets; ``None`` if empty."""
        if isinstance(audio, OpusPackets):
            ogg = self.packets(audio.packets)
        else:
            ogg = self.encode(audio)
        return base64.b64encode(ogg).decode("ascii") if ogg else None
