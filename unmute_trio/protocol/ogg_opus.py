"""Ogg/Opus framing without a codec: read the Opus packets of an Ogg stream, write packets into one.

Why: the server sends the browser one Ogg/Opus stream per connection, and the TTS (moshi-server's
``format=OggOpusMessagePack``) can deliver its audio already in Opus, one Ogg stream per reply.
Moving the TTS's packets into the connection's stream costs a few microseconds a page, where
decoding and encoding them again costs hundreds (docs/benchmarks.md). An Opus packet carries its
own audio, so a decoder fed packets of several encoders in a row decodes each of them (its
state only smooths the joins), which is what makes this re-framing valid.

- :class:`OggPacketReader`: Ogg bytes in chunks of any size → whole packets. Packets that span
  pages are joined; a page that begins a stream (BOS) is reported so that a caller can tell its
  OpusHead and OpusTags packets apart.
- :class:`OpusAudioReader`: the audio packets of such a stream, its OpusHead (checked) and
  OpusTags packets dropped, at every stream start.
- :class:`OggOpusWriter`: packets → Ogg pages of one stream (its own serial number, page
  sequence and granule positions, CRC), starting with its OpusHead and OpusTags pages.
- :func:`opus_packet_samples`: the duration of a packet from its TOC byte (RFC 6716 §3.1).
- :func:`ogg_crc`: Ogg's CRC-32, at C speed; :func:`split_pages`: whole pages apart.

Pure: no I/O, no clock. Formats: RFC 3533 (Ogg), RFC 7845 (Opus in Ogg).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import struct
import zlib
from collections.abc import Sequence

SAMPLE_RATE = 24_000  # the sample rate every stream of this project is decoded at
GRANULE_RATE = 48_000  # Ogg Opus granule positions always count 48 kHz samples

CAPTURE_PATTERN = b"OggS"
HEADER_SIZE = 27  # the fixed part of a page header, before its segment table
MAX_PAGE_SIZE = HEADER_SIZE + 255 + 255 * 255
# The longest packet read or written: what one page can hold (255 segments of 255 bytes, the last
# one shorter), so that whatever the reader accepts the writer can write. An Opus packet is at
# most 120 ms of at most 1275-byte frames (RFC 6716 §3.2.5), ~61 KB; an OpusTags packet longer
# than this is refused too. Bounds the bytes held for a packet that spans pages.
MAX_PACKET_SIZE = 255 * 255 - 1
# The longest audio packet: 120 ms (RFC 6716 §3.2.5), in 24 kHz samples.
MAX_PACKET_SAMPLES = 2880
_CONTINUED = 0x01
_BEGINNING_OF_STREAM = 0x02

# granule position (8 bytes, offset 6), serial (14), sequence number (18), CRC (22)
_PAGE_HEADER = struct.Struct("<4sBBqIIIB")
_CRC_AT = 22
_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))

# Samples at 24 kHz of one Opus frame, by the TOC byte's configuration number (RFC 6716 §3.1):
# SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
_FRAME_SAMPLES = tuple(
    round(ms * SAMPLE_RATE / 1000)
    for ms in (*[10, 20, 40, 60] * 3, *[10, 20] * 2, *[2.5, 5, 10, 20] * 4)
)

OPUS_HEAD = b"OpusHead"
OPUS_TAGS = b"OpusTags"
# The encoder delay a decoder drops at the start of the stream, in 48 kHz samples: libopus's
# look-ahead (6.5 ms). (sphn writes 3840 in its own streams; the value only trims the start.)
DEFAULT_PRE_SKIP = 312
VENDOR = b"unmute-trio"


class OggFormatError(ValueError):
    """The bytes are not an Ogg stream, or not one of Opus packets we can use."""


def ogg_crc(page: bytes | bytearray) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, MSB first, no initial value or final xor) of a page
    whose CRC field is zero, computed with zlib's reflected CRC-32 on bit-reversed bytes: C
    speed, where a Python loop would cost more than the encoding it replaces."""
    linear = zlib.crc32(page.translate(_BIT_REVERSED)) ^ _zeros_crc(len(page))
    # Reverse the 32 bits: reverse the byte order and the bits of each byte.
    return int.from_bytes(linear.to_bytes(4, "little").translate(_BIT_REVERSED), "big")


@functools.lru_cache(maxsize=256)
def _zeros_crc(n: int) -> int:
    """zlib's CRC-32 of ``n`` zero bytes (pages come in a few sizes)."""
    return zlib.crc32(bytes(n))


def opus_packet_samples(packet: bytes) -> int:
    """Samples (24 kHz) an Opus packet decodes to, from its TOC byte and frame count."""
    if not packet:
        return 0
    toc = packet[0]
    code = toc & 3
    frames = 1 if code == 0 else 2 if code < 3 else (packet[1] & 0x3F if len(packet) > 1 else 0)
    return frames * _FRAME_SAMPLES[toc >> 3]


def split_pages(data: bytes) -> list[bytes]:
    """The Ogg pages of ``data``, which must be whole pages and nothing else."""
    pages = []
    at = 0
    while at < len(data):
        if data[at : at + 4] != CAPTURE_PATTERN or len(data) - at < HEADER_SIZE:
            raise OggFormatError("not a whole Ogg page")
        segments = data[at + 26]
        size = HEADER_SIZE + segments + sum(data[at + HEADER_SIZE : at + HEADER_SIZE + segments])
        if at + size > len(data):
            raise OggFormatError("not a whole Ogg page")
        pages.append(data[at : at + size])
        at += size
    return pages


def opus_head_channels(packet: bytes) -> int:
    """The channel count of an OpusHead packet (RFC 7845 §5.1)."""
    if len(packet) < 19 or not packet.startswith(OPUS_HEAD):
        raise OggFormatError("the stream does not start with an OpusHead packet")
    return packet[9]


@dataclasses.dataclass(frozen=True)
class OpusPackets:
    """Opus audio packets in playing order, and the 24 kHz samples they decode to."""

    packets: tuple[bytes, ...]
    samples: int

    @classmethod
    def of(cls, packets: Sequence[bytes]) -> OpusPackets:
        return cls(tuple(packets), sum(map(opus_packet_samples, packets)))


@dataclasses.dataclass(frozen=True)
class OggPacket:
    data: bytes
    stream_start: bool  # the first packet of a page that began a logical stream (BOS)


class OggPacketReader:
    """Whole packets from Ogg bytes fed in chunks of any size (one logical stream at a time).

    Bounded: at most one page (:data:`MAX_PAGE_SIZE`) and one packet (:data:`MAX_PACKET_SIZE`)
    are held between calls. Bytes that are not an Ogg page raise :class:`OggFormatError`; the
    reader is then unusable (a caller ends the stream). CRCs are not checked: the bytes come over
    TCP, and a corrupt packet costs the decoder one frame, not the stream.
    """

    def __init__(self) -> None:
        # The start of a page that has not fully arrived; grown in place, so that a page sent a
        # few bytes per message costs its length, not its length squared.
        self._pending = bytearray()
        self._packet = bytearray()  # the start of a packet continued on the next page
        self._packet_starts_stream = False
        self._serial: int | None = None  # of the logical stream being read

    def feed(self, data: bytes) -> list[OggPacket]:
        buffer: bytes | bytearray = data
        if self._pending:
            self._pending += data
            buffer = self._pending
        packets: list[OggPacket] = []
        at = 0
        while len(buffer) - at >= HEADER_SIZE:
            if buffer[at : at + 4] != CAPTURE_PATTERN:
                raise OggFormatError("not an Ogg page (no capture pattern)")
            if buffer[at + 4] != 0:
                raise OggFormatError(f"unsupported Ogg version {buffer[at + 4]}")
            segments = buffer[at + 26]
            body = at + HEADER_SIZE + segments
            if len(buffer) < body:
                break
            table = buffer[at + HEADER_SIZE : body]
            end = body + sum(table)
            if len(buffer) < end:
                break
            flags = buffer[at + 5]
            serial = int.from_bytes(buffer[at + 14 : at + 18], "little")
            if flags & _BEGINNING_OF_STREAM:
                self._packet.clear()
                self._packet_starts_stream = True
                self._serial = serial
            elif self._serial is None:
                raise OggFormatError("the stream does not start with its BOS page")
            elif serial != self._serial:
                # Streams one after the other are read (chained); interleaved ones are not.
                raise OggFormatError("a page of another logical stream, without its BOS page")
            elif bool(flags & _CONTINUED) != bool(self._packet):
                if self._packet:
                    raise OggFormatError("a packet left unfinished by the page before")
                raise OggFormatError("a page continues a packet that never began")
            position = body
            for size in table:
                self._packet += buffer[position : position + size]
                position += size
                if len(self._packet) > MAX_PACKET_SIZE:
                    raise OggFormatError(f"an Ogg packet over {MAX_PACKET_SIZE} bytes")
                if size < 255:  # the packet ends here
                    packets.append(OggPacket(bytes(self._packet), self._packet_starts_stream))
                    self._packet.clear()
                    self._packet_starts_stream = False
            at = end
        if buffer is self._pending:
            del self._pending[:at]
        else:
            self._pending = bytearray(buffer[at:])
        return packets


class OpusAudioReader:
    """The audio packets of an Ogg/Opus stream fed in chunks: the OpusHead packet that starts
    each logical stream is checked (``channels``, unless None) and dropped with the OpusTags
    packet after it. A new stream may follow the old one (each TTS reply is one). Each audio
    packet must decode to 2.5 to 120 ms (its TOC byte), as RFC 6716 allows."""

    def __init__(self, *, channels: int | None = 1) -> None:
        self._reader = OggPacketReader()
        self._channels = channels
        self._tags_next = False

    def feed(self, data: bytes) -> list[bytes]:
        audio = []
        for packet in self._reader.feed(data):
            # The reader refuses a stream that does not begin with a BOS page, so the first
            # packet always starts a stream.
            if packet.stream_start:
                channels = opus_head_channels(packet.data)
                if self._channels is not None and channels != self._channels:
                    raise OggFormatError(f"{channels} audio channels, expected {self._channels}")
                self._tags_next = True
            elif self._tags_next:
                if not packet.data.startswith(OPUS_TAGS):
                    raise OggFormatError("no OpusTags packet after the OpusHead")
                self._tags_next = False
            else:
                samples = opus_packet_samples(packet.data)
                if not 0 < samples <= MAX_PACKET_SAMPLES:
                    # Empty packets and impossible durations: pacing counts on the durations.
                    raise OggFormatError(f"an Opus packet of {samples} samples at 24 kHz")
                audio.append(packet.data)
        return audio


class OggOpusWriter:
    """One Ogg/Opus stream (mono, 24 kHz) built from Opus packets.

    The first non-empty :meth:`pages` result starts with the OpusHead and OpusTags pages (unless
    :meth:`header` gave them already); each
    call puts its packets in as few pages as the 255-segment limit allows, and the
    concatenation of all results is one valid stream. Granule positions count the 48 kHz
    samples of the packets written so far, plus the pre-skip.
    """

    def __init__(self, *, serial: int | None = None, pre_skip: int = DEFAULT_PRE_SKIP) -> None:
        self._serial = random.getrandbits(32) if serial is None else serial
        self._pre_skip = pre_skip
        self._sequence = 0
        self._granule = pre_skip
        self.samples_written = 0  # 24 kHz samples of the audio packets
        self.started = False

    def header(self) -> bytes:
        """The OpusHead and OpusTags pages, once: ``b""`` if the stream has started."""
        if self.started:
            return b""
        self.started = True
        head = OPUS_HEAD + struct.pack("<BBHIhB", 1, 1, self._pre_skip, SAMPLE_RATE, 0, 0)
        tags = OPUS_TAGS + struct.pack("<I", len(VENDOR)) + VENDOR + struct.pack("<I", 0)
        return self._page([head], _BEGINNING_OF_STREAM, 0) + self._page([tags], 0, 0)

    def pages(self, packets: Sequence[bytes]) -> bytes:
        if not packets:
            return b""
        out = self.header()
        batch: list[bytes] = []
        segments = 0
        for packet in packets:
            needed = len(packet) // 255 + 1
            if needed > 255:
                raise OggFormatError(f"an Opus packet of {len(packet)} bytes does not fit a page")
            if batch and segments + needed > 255:
                out += self._page(batch, 0, self._granule)
                batch, segments = [], 0
            samples = opus_packet_samples(packet)
            self.samples_written += samples
            self._granule += samples * (GRANULE_RATE // SAMPLE_RATE)
            batch.append(packet)
            segments += needed
        return out + self._page(batch, 0, self._granule)

    def _page(self, packets: list[bytes], flags: int, granule: int) -> bytes:
        table = bytearray()
        for packet in packets:
            table += b"\xff" * (len(packet) // 255) + bytes((len(packet) % 255,))
        header = _PAGE_HEADER.pack(
            CAPTURE_PATTERN, 0, flags, granule, self._serial, self._sequence, 0, len(table)
        )
        self._sequence += 1
        page = bytearray(header + table)
        for packet in packets:
            page += packet
        page[_CRC_AT : _CRC_AT + 4] = ogg_crc(page).to_bytes(4, "little")
        return bytes(page)
