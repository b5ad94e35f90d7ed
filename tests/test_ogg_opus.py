"""Ogg/Opus framing without a codec (protocol/ogg_opus.py), checked against sphn's own streams."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import sphn

from unmute_trio.protocol.ogg_opus import (
    DEFAULT_PRE_SKIP,
    MAX_PACKET_SIZE,
    OggFormatError,
    OggOpusWriter,
    OggPacketReader,
    OpusAudioReader,
    OpusPackets,
    ogg_crc,
    opus_packet_samples,
    split_pages,
)
from unmute_trio.testing.speech import speech_like


def sphn_stream(pcm: np.ndarray) -> bytes:
    """One Ogg/Opus stream, as the TTS (sphn, like moshi-server) writes it, 1920 samples a call."""
    writer = sphn.OpusStreamWriter(24_000)
    return b"".join(writer.append_pcm(pcm[i : i + 1920]) for i in range(0, len(pcm), 1920))


def decode(stream: bytes) -> np.ndarray:
    return np.asarray(sphn.OpusStreamReader(24_000).append_bytes(stream), np.float32).reshape(-1)


def page_fields(page: bytes) -> tuple[int, int, int, int, int]:
    """(flags, granule, serial, sequence, crc)"""
    _, _, flags, granule, serial, sequence, crc, _ = struct.unpack_from("<4sBBqIIIB", page)
    return flags, granule, serial, sequence, crc


def test_reader_gives_sphn_packets_and_the_writer_rebuilds_an_identical_decode() -> None:
    source = sphn_stream(speech_like(2.0, seed=3))
    packets = OpusAudioReader().feed(source)
    assert len(packets) == 50  # 2 s of 40 ms packets, headers dropped
    assert sum(map(opus_packet_samples, packets)) == 48_000
    out = OggOpusWriter(serial=7)
    stream = out.pages(packets)
    # Same packets, fresh decoder: the same samples, bit for bit.
    np.testing.assert_array_equal(decode(stream), decode(source))
    assert out.samples_written == 48_000


def test_writer_pages_are_valid_ogg() -> None:
    packets = OpusAudioReader().feed(sphn_stream(speech_like(1.0, seed=1)))
    writer = OggOpusWriter(serial=0xDEADBEEF)
    stream = writer.pages(packets[:10]) + writer.pages(packets[10:]) + writer.pages([])
    pages = split_pages(stream)
    assert len(pages) == 4  # OpusHead, OpusTags, one page per call with packets
    for index, page in enumerate(pages):
        flags, _, serial, sequence, crc = page_fields(page)
        assert crc == ogg_crc(page[:22] + bytes(4) + page[26:])
        assert (serial, sequence) == (0xDEADBEEF, index)
        assert flags == (0x02 if index == 0 else 0)  # BOS on the first page only
    assert [page_fields(p)[1] for p in pages] == [
        0,
        0,
        DEFAULT_PRE_SKIP + 2 * 10 * 960,
        DEFAULT_PRE_SKIP + 2 * 25 * 960,
    ]
    head = pages[0][28:]
    assert head[:8] == b"OpusHead" and head[9] == 1  # mono
    assert struct.unpack_from("<HI", head, 10) == (DEFAULT_PRE_SKIP, 24_000)
    assert pages[1][28:36] == b"OpusTags"


def test_packets_of_two_encoders_make_one_decodable_stream() -> None:
    """What a session does: each reply's TTS stream (its own encoder) goes into one stream."""
    first = OpusAudioReader().feed(sphn_stream(speech_like(1.0, seed=1)))
    second_source = sphn_stream(speech_like(1.0, seed=2))
    reader = OpusAudioReader()
    second = reader.feed(second_source)
    writer = OggOpusWriter()
    decoded = decode(writer.pages(first) + writer.pages(second))
    assert len(decoded) == 48_000
    # The second reply decodes as it would alone, once the decoder has left the first behind.
    alone = decode(second_source)
    tail = slice(24_000 + 2400, 48_000)
    assert np.corrcoef(decoded[tail], alone[tail.start - 24_000 :])[0, 1] > 0.99


def test_many_packets_are_split_over_pages_of_at_most_255_segments() -> None:
    packets = [bytes([0xF8]) + bytes(300)] * 200  # CELT 20 ms, 2 segments each
    stream = OggOpusWriter().pages(packets)
    pages = split_pages(stream)[2:]
    assert [p[26] for p in pages] == [254, 146]
    assert OpusAudioReader().feed(stream) == packets
    with pytest.raises(OggFormatError):
        OggOpusWriter().pages([bytes(255 * 255)])


def test_reader_joins_packets_across_pages_and_any_chunking() -> None:
    big = bytes([0xF8]) + bytes(range(256)) * 3  # 769 bytes: 255, 255, 255, 4
    stream = OggOpusWriter(serial=1).pages([b"\xf8\x01", big, b"\xf8\x02"])
    # Rewrite the audio page as two: the big packet continues on the second one.
    head_and_tags = b"".join(split_pages(stream)[:2])
    first = _page(2, 0, [2, 255, 255], b"\xf8\x01" + big[:510])
    second = _page(3, 0x01, [255, 4, 2], big[510:] + b"\xf8\x02")
    joined = head_and_tags + first + second
    expected = [b"\xf8\x01", big, b"\xf8\x02"]
    assert OpusAudioReader().feed(joined) == expected
    for cut in range(0, len(joined), 7):
        reader = OpusAudioReader()
        assert reader.feed(joined[:cut]) + reader.feed(joined[cut:]) == expected
    # The same bytes one at a time.
    reader = OpusAudioReader()
    assert [p for i in range(len(joined)) for p in reader.feed(joined[i : i + 1])] == expected


def _page(sequence: int, flags: int, table: list[int], body: bytes) -> bytes:
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, -1, 1, sequence, 0, len(table))
    page = bytearray(header + bytes(table) + body)
    page[22:26] = ogg_crc(page).to_bytes(4, "little")
    return bytes(page)


def test_a_new_stream_after_the_first_drops_its_headers_too() -> None:
    one = sphn_stream(speech_like(0.24, seed=1))
    two = sphn_stream(speech_like(0.24, seed=2))
    reader = OpusAudioReader()
    assert len(reader.feed(one)) == 6
    assert len(reader.feed(two)) == 6  # OpusHead and OpusTags of the second stream dropped


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RIFF" + bytes(40), "not an Ogg page"),
        (b"OggS\x01" + bytes(40), "unsupported Ogg version 1"),
    ],
)
def test_reader_refuses_what_is_not_ogg(data: bytes, message: str) -> None:
    with pytest.raises(OggFormatError, match=message):
        OggPacketReader().feed(data)


def test_audio_reader_refuses_a_stream_without_opus_head_or_with_two_channels() -> None:
    stream = OggOpusWriter().pages([b"\xf8\x01"])
    tags_and_audio = b"".join(split_pages(stream)[1:])
    with pytest.raises(OggFormatError, match="does not start with its BOS page"):
        OpusAudioReader().feed(tags_and_audio)
    head = bytearray(split_pages(stream)[0])
    head[28 + 9] = 2  # channel count
    head[22:26] = bytes(4)
    head[22:26] = ogg_crc(head).to_bytes(4, "little")
    with pytest.raises(OggFormatError, match="2 audio channels, expected 1"):
        OpusAudioReader().feed(bytes(head))
    assert OpusAudioReader(channels=None).feed(bytes(head) + tags_and_audio) == [b"\xf8\x01"]


def test_a_packet_left_unfinished_must_be_continued() -> None:
    stream = OggOpusWriter(serial=1).pages([b"\xf8\x01"])
    head_and_tags = b"".join(split_pages(stream)[:2])
    unfinished = _page(2, 0, [255], bytes(255))
    not_continued = _page(3, 0, [1], b"\xf8")
    with pytest.raises(OggFormatError, match="unfinished"):
        OpusAudioReader().feed(head_and_tags + unfinished + not_continued)


def test_reader_bounds_a_packet_that_never_ends() -> None:
    stream = OggOpusWriter(serial=1).pages([b"\xf8\x01"])
    data = b"".join(split_pages(stream)[:2])
    data += b"".join(
        _page(2 + i, 0x01 if i else 0, [255] * 255, bytes(255 * 255)) for i in range(2)
    )
    with pytest.raises(OggFormatError, match="over 65024 bytes"):
        OpusAudioReader().feed(data)


def test_opus_packets_count_their_samples() -> None:
    packets = OpusAudioReader().feed(sphn_stream(speech_like(0.16, seed=1)))
    audio = OpusPackets.of(packets)
    assert audio.samples == 3840 and audio.packets == tuple(packets)
    # code 3 (count byte), CELT 2.5 ms x 5 frames; code 1 SILK 60 ms x 2
    assert opus_packet_samples(bytes([(16 << 3) | 3, 5])) == 5 * 60
    assert opus_packet_samples(bytes([(3 << 3) | 1])) == 2 * 1440
    assert opus_packet_samples(b"") == 0


def test_what_the_reader_accepts_the_writer_can_write() -> None:
    """The packet size limit is one page, both ways: a TTS packet the client took cannot make
    the session's writer fail."""
    biggest = bytes([0xF8]) + bytes(MAX_PACKET_SIZE - 1)
    stream = OggOpusWriter(serial=1).pages([b"\xf8\x01"])
    head_and_tags = b"".join(split_pages(stream)[:2])
    writer = OggOpusWriter(serial=1)
    page = split_pages(writer.pages([biggest]))[2]
    assert OggPacketReader().feed(head_and_tags + page)[-1].data == biggest
    too_big = _page(2, 0, [255] * 255, bytes(255 * 255)) + _page(3, 0x01, [0], b"")
    with pytest.raises(OggFormatError, match="over 65024 bytes"):
        OggPacketReader().feed(head_and_tags + too_big)


def test_pages_of_another_stream_and_orphan_continuations_are_refused() -> None:
    stream = OggOpusWriter(serial=1).pages([b"\xf8\x01"])
    head_and_tags = b"".join(split_pages(stream)[:2])
    other = bytearray(_page(2, 0, [2], b"\xf8\x02"))
    other[14:18] = (2).to_bytes(4, "little")  # serial 2, no BOS page of its own
    with pytest.raises(OggFormatError, match="another logical stream"):
        OggPacketReader().feed(head_and_tags + bytes(other))
    orphan = _page(2, 0x01, [2], b"\xf8\x02")
    with pytest.raises(OggFormatError, match="never began"):
        OggPacketReader().feed(head_and_tags + orphan)


def test_audio_reader_checks_the_tags_and_each_packets_duration() -> None:
    stream = OggOpusWriter(serial=1).pages([b"\xf8\x01"])
    head = split_pages(stream)[0]
    with pytest.raises(OggFormatError, match="no OpusTags"):
        OpusAudioReader().feed(head + _page(1, 0, [2], b"\xf8\x01"))
    tags = split_pages(stream)[1]
    for packet, samples in ((b"", 0), (bytes([0x83, 0]), 0), (bytes([0x83, 49]), 2940)):
        with pytest.raises(OggFormatError, match=f"of {samples} samples"):
            OpusAudioReader().feed(head + tags + _page(2, 0, [len(packet)], packet))
    longest = bytes([0x83, 48])  # 48 frames of 2.5 ms: 120 ms, the most RFC 6716 allows
    assert OpusAudioReader().feed(head + tags + _page(2, 0, [2], longest)) == [longest]
