"""The session's Ogg/Opus codec: real streams written by sphn, fed as the browser sends them."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import sphn

from unmute_trio.session.audio import MAX_OGG_PAGE_SIZE, AudioInputError, OpusInput, OpusOutput
from unmute_trio.testing.speech import speech_like

SAMPLE_RATE = 24_000
BOS = 0x02


def ogg_stream(pcm: np.ndarray, frame: int = 1920) -> bytes:
    writer = sphn.OpusStreamWriter(SAMPLE_RATE)
    return b"".join(writer.append_pcm(pcm[i : i + frame]) for i in range(0, len(pcm), frame))


def split_pages(data: bytes) -> list[bytes]:
    """Split an Ogg stream into its pages (independent of the code under test)."""
    pages = []
    position = 0
    while position < len(data):
        assert data[position : position + 4] == b"OggS"
        segments = data[position + 26]
        table = data[position + 27 : position + 27 + segments]
        size = 27 + segments + sum(table)
        pages.append(data[position : position + size])
        position += size
    return pages


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def feed_all(decoder: OpusInput, messages: list[bytes]) -> np.ndarray:
    return np.concatenate([decoder.feed(b64(m)) for m in messages])


def best_correlation(reference: np.ndarray, decoded: np.ndarray, max_delay: int = 400) -> float:
    """Correlation of ``decoded`` with ``reference`` at the best codec delay."""
    best = -1.0
    for delay in range(max_delay):
        n = min(len(reference), len(decoded) - delay)
        best = max(best, float(np.corrcoef(reference[:n], decoded[delay : delay + n])[0, 1]))
    return best


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speech_like(1.0)


@pytest.fixture(scope="module")
def pages(speech: np.ndarray) -> list[bytes]:
    result = split_pages(ogg_stream(speech))
    assert result[0][5] & BOS and not any(p[5] & BOS for p in result[1:])
    return result


def test_pages_fed_one_by_one_decode_to_the_input(speech: np.ndarray, pages: list[bytes]) -> None:
    decoder = OpusInput()
    assert not decoder.started
    decoded = feed_all(decoder, pages)
    assert decoder.started
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(len(decoded) - len(speech)) <= 1920
    assert decoder.samples_decoded == len(decoded)
    assert best_correlation(speech, decoded) > 0.8


def test_several_pages_in_one_message_and_pages_split_across_messages(
    speech: np.ndarray, pages: list[bytes]
) -> None:
    whole = feed_all(OpusInput(), pages)
    stream = b"".join(pages)
    # First message: the two header pages and half of the first audio page; then 100-byte bits.
    cut = len(pages[0]) + len(pages[1]) + len(pages[2]) // 2
    chunks = [stream[:cut]] + [stream[i : i + 100] for i in range(cut, len(stream), 100)]
    decoder = OpusInput()
    decoded = feed_all(decoder, chunks)
    np.testing.assert_array_equal(decoded, whole)


def test_pages_before_a_stream_start_are_skipped(speech: np.ndarray, pages: list[bytes]) -> None:
    old_stream = split_pages(ogg_stream(speech_like(0.5, seed=7)))
    decoder = OpusInput()
    # Audio pages of an earlier connection's stream, replayed before the new stream's BOS page.
    for page in old_stream[3:]:
        assert len(decoder.feed(b64(page))) == 0
    assert not decoder.started
    assert decoder.pages_skipped == len(old_stream) - 3
    decoded = feed_all(decoder, pages)
    np.testing.assert_array_equal(decoded, feed_all(OpusInput(), pages))


def test_a_message_holding_old_pages_then_a_bos_page_starts_at_the_bos(
    pages: list[bytes],
) -> None:
    old_stream = split_pages(ogg_stream(speech_like(0.5, seed=7)))
    decoder = OpusInput()
    first = decoder.feed(b64(old_stream[5] + old_stream[6] + pages[0] + pages[1] + pages[2]))
    rest = feed_all(decoder, pages[3:])
    np.testing.assert_array_equal(np.concatenate([first, rest]), feed_all(OpusInput(), pages))


def test_invalid_base64_raises_and_leaves_the_stream_intact(pages: list[bytes]) -> None:
    decoder = OpusInput()
    first = feed_all(decoder, pages[:6])
    with pytest.raises(AudioInputError, match="base64"):
        decoder.feed("this is not base64!")
    assert decoder.started
    rest = feed_all(decoder, pages[6:])
    np.testing.assert_array_equal(np.concatenate([first, rest]), feed_all(OpusInput(), pages))


def test_garbage_raises_then_a_new_stream_decodes(speech: np.ndarray, pages: list[bytes]) -> None:
    decoder = OpusInput()
    feed_all(decoder, pages[:6])
    with pytest.raises(AudioInputError, match="not an Ogg stream"):
        decoder.feed(b64(b"definitely not an ogg page, just some bytes"))
    assert not decoder.started
    # The rest of the broken stream is skipped: it has no BOS page.
    assert len(feed_all(decoder, pages[6:10])) == 0
    # A new stream, BOS first, decodes exactly as on a fresh decoder.
    decoded = feed_all(decoder, pages)
    np.testing.assert_array_equal(decoded, feed_all(OpusInput(), pages))
    assert best_correlation(speech, decoded) > 0.8


def test_garbage_after_a_whole_page_in_the_same_message_raises(pages: list[bytes]) -> None:
    decoder = OpusInput()
    feed_all(decoder, pages[:3])
    with pytest.raises(AudioInputError):
        decoder.feed(b64(pages[3] + b"\x00garbage-after-a-page" * 3))
    np.testing.assert_array_equal(feed_all(decoder, pages), feed_all(OpusInput(), pages))


def test_garbage_before_any_stream_raises(pages: list[bytes]) -> None:
    decoder = OpusInput()
    with pytest.raises(AudioInputError):
        decoder.feed(b64(b"\x01\x02\x03 hello"))
    np.testing.assert_array_equal(feed_all(decoder, pages), feed_all(OpusInput(), pages))


@pytest.mark.parametrize("fragment", [b"", b"O", b"Og", b"OggS", b"OggS\x00"])
def test_truncated_pages_do_not_crash(pages: list[bytes], fragment: bytes) -> None:
    decoder = OpusInput()
    assert len(decoder.feed(b64(fragment))) == 0
    assert not decoder.started
    np.testing.assert_array_equal(feed_all(decoder, pages), feed_all(OpusInput(), pages))


def test_truncated_pages_without_the_bos_flag_are_skipped(pages: list[bytes]) -> None:
    decoder = OpusInput()
    for cut in (6, 20, 40):
        assert len(decoder.feed(b64(pages[5][:cut]))) == 0
    assert not decoder.started
    np.testing.assert_array_equal(feed_all(decoder, pages), feed_all(OpusInput(), pages))


@pytest.mark.parametrize("chunk_size", [6, 17, 333])
def test_a_stream_split_anywhere_from_its_first_bytes_decodes(
    pages: list[bytes], chunk_size: int
) -> None:
    stream = b"".join(pages)
    chunks = [stream[i : i + chunk_size] for i in range(0, len(stream), chunk_size)]
    np.testing.assert_array_equal(feed_all(OpusInput(), chunks), feed_all(OpusInput(), pages))


def test_a_truncated_page_inside_a_stream_is_an_error_at_the_next_page(
    pages: list[bytes],
) -> None:
    decoder = OpusInput()
    feed_all(decoder, pages[:4])
    assert len(decoder.feed(b64(pages[4][:5]))) == 0  # may be the start of a split page
    with pytest.raises(AudioInputError):
        decoder.feed(b64(pages[5]))  # ...but it was not: the framing is broken


def test_a_new_bos_page_mid_stream_starts_a_fresh_decoder(pages: list[bytes]) -> None:
    second = split_pages(ogg_stream(speech_like(0.5, seed=3)))
    decoder = OpusInput()
    feed_all(decoder, pages[:8])
    decoded = feed_all(decoder, second)
    np.testing.assert_array_equal(decoded, feed_all(OpusInput(), second))


def test_held_back_bytes_are_bounded(pages: list[bytes]) -> None:
    decoder = OpusInput()
    feed_all(decoder, pages[:2])
    # A header announcing the largest possible page, then its body trickling in.
    header = bytearray(pages[2][:27])
    header[26] = 255
    decoder.feed(b64(bytes(header) + b"\xff" * 255 + b"\x00" * 1000))
    assert len(decoder._pending) <= MAX_OGG_PAGE_SIZE


def test_output_round_trips_through_input(speech: np.ndarray) -> None:
    encoder = OpusOutput()
    decoder = OpusInput()
    chunks = []
    for start in range(0, len(speech), 1920):
        delta = encoder.encode_base64(speech[start : start + 1920])
        if delta is not None:
            chunks.append(decoder.feed(delta))
    decoded = np.concatenate(chunks)
    assert encoder.samples_encoded == len(speech)
    assert abs(len(decoded) - len(speech)) <= 1920
    assert best_correlation(speech, decoded) > 0.8


def test_output_first_chunk_holds_the_stream_headers() -> None:
    first = OpusOutput().encode(speech_like(0.08))
    header_pages = split_pages(first)
    assert header_pages[0][5] & BOS
    assert header_pages[0][28:36] == b"OpusHead"
    assert header_pages[1][28:36] == b"OpusTags"


def test_output_accepts_float64_and_empty_input_but_not_stereo() -> None:
    encoder = OpusOutput()
    assert encoder.encode(np.zeros(0, dtype=np.float32)) == b""
    assert encoder.encode_base64(np.zeros(0)) is None
    assert encoder.encode(speech_like(0.2).astype(np.float64))
    with pytest.raises(ValueError, match="mono"):
        encoder.encode(np.zeros((2, 1920), dtype=np.float32))
