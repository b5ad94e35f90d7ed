"""G.711 μ-law / A-law, 8 ↔ 24 kHz resampling and PCM16 base64 (protocol.g711)."""

from __future__ import annotations

import base64
import warnings

import numpy as np
import pytest

from unmute_trio.protocol import g711
from unmute_trio.protocol.errors import WireFormatError

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


def _audioop():  # type: ignore[no-untyped-def]
    """The standard library's G.711 (Python < 3.13) as an independent oracle, when present."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("audioop")


# ---------------------------------------------------------------- G.711


def test_known_ulaw_values() -> None:
    assert g711.ulaw_decode(bytes([0xFF, 0x00, 0x7F, 0x80])).tolist() == [0, -32124, 0, 32124]
    assert g711.ulaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)).tolist() == [
        0xFF,
        0x7F,  # G.191: ones' complement, so -1 is "negative zero", not -8 as in Sun's code
        0x80,
        0x00,
    ]


def test_known_alaw_values() -> None:
    assert g711.alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A])).tolist() == [8, -8, 32256, -32256]
    assert g711.alaw_encode(np.array([0, -1, 32767, -32768], dtype=np.int16)).tolist() == [
        0xD5,
        0x55,
        0xAA,
        0x2A,
    ]


def test_every_alaw_code_round_trips_exactly() -> None:
    assert np.array_equal(g711.alaw_encode(g711.alaw_decode(ALL_CODES)), ALL_CODES)


def test_every_ulaw_code_round_trips_but_negative_zero() -> None:
    back = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    differs = np.nonzero(back != ALL_CODES)[0].tolist()
    assert differs == [0x7F]  # μ-law has two zeros; 0 encodes as the positive one
    assert back[0x7F] == 0xFF
    # Every decoded value survives encode → decode.
    levels = g711.ulaw_decode(ALL_CODES)
    assert np.array_equal(g711.ulaw_decode(g711.ulaw_encode(levels)), levels)


@pytest.mark.parametrize(
    "encode,decode", [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)]
)
def test_encoding_is_symmetric_in_ones_complement(encode, decode) -> None:  # type: ignore[no-untyped-def]
    """G.191 codes -x-1 as x with the sign bit cleared; decoding is odd-symmetric."""
    positive = np.arange(0, 32768, dtype=np.int16)
    negative = (-positive.astype(np.int32) - 1).astype(np.int16)
    assert np.array_equal(encode(negative), encode(positive) & 0x7F)
    assert np.array_equal(decode(ALL_CODES & 0x7F), -decode(ALL_CODES | 0x80))


@pytest.mark.parametrize(
    "encode,decode,dropped_bits",
    [(g711.ulaw_encode, g711.ulaw_decode, 2), (g711.alaw_encode, g711.alaw_decode, 3)],
)
def test_each_sample_lands_in_its_quantisation_interval(encode, decode, dropped_bits) -> None:  # type: ignore[no-untyped-def]
    """Levels are the midpoints of G.711's intervals: a sample is at most half a step from the
    level it encodes to (plus the input bits G.711 ignores), the mapping is monotonic, and
    samples beyond the largest level clip to it."""
    levels = np.unique(decode(ALL_CODES).astype(np.int64))
    x = ALL_INT16.astype(np.int64)
    decoded = decode(encode(ALL_INT16)).astype(np.int64)
    assert np.all(np.diff(decoded) >= 0)
    inside = (x >= levels[0]) & (x <= levels[-1])
    index = np.searchsorted(levels, decoded)
    gaps = np.diff(levels)
    below = gaps[np.clip(index - 1, 0, len(gaps) - 1)]
    above = gaps[np.clip(index, 0, len(gaps) - 1)]
    half_step = np.maximum(below, above) // 2
    slack = 1 << dropped_bits
    assert np.all(np.abs(decoded - x)[inside] <= half_step[inside] + slack)
    assert set(decoded[~inside].tolist()) <= {levels[0], levels[-1]}


def test_matches_the_standard_library_where_it_follows_g711() -> None:
    audioop = _audioop()
    assert g711.ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES.tobytes(), 2)
    assert g711.alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES.tobytes(), 2)
    assert g711.alaw_encode(ALL_INT16).tobytes() == audioop.lin2alaw(ALL_INT16.tobytes(), 2)
    # audioop's μ-law encoder is Sun's, which shifts negatives in two's complement; G.191 uses
    # ones' complement. They agree on every non-negative sample.
    positive = ALL_INT16[ALL_INT16 >= 0]
    assert g711.ulaw_encode(positive).tobytes() == audioop.lin2ulaw(positive.tobytes(), 2)


# ---------------------------------------------------------------- resampling


def _tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x.astype(np.float64))) + 1e-30))


def test_a_1khz_tone_survives_8k_24k_8k() -> None:
    tone = _tone(1_000, 8_000, 1.0)
    back = g711.Downsampler24To8().process(g711.Upsampler8To24().process(tone))
    assert len(back) == len(tone)
    delay = 2 * g711.FILTER_DELAY // 3  # exactly 64 samples at 8 kHz
    settled = slice(200, None)
    error = back[delay:][settled] - tone[: len(tone) - delay][settled]
    assert _rms_db(tone) - _rms_db(error) > 60  # SNR in dB


def test_upsampling_gives_the_same_tone_at_24k_without_images() -> None:
    up = g711.Upsampler8To24().process(_tone(1_000, 8_000, 1.0))
    t = (np.arange(len(up)) - g711.FILTER_DELAY) / 24_000
    ideal = 0.5 * np.sin(2 * np.pi * 1_000 * t)
    settled = slice(600, None)
    assert _rms_db(ideal[settled]) - _rms_db(up[settled] - ideal[settled]) > 60
    # The images at 7 and 9 kHz that zero-stuffing creates are filtered out.
    window = up[600:]
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    freqs = np.fft.rfftfreq(len(window), 1 / 24_000)
    peak = spectrum.max()
    images = spectrum[(freqs > 4_500)].max()
    assert 20 * np.log10(images / peak) < -60


def test_downsampling_removes_what_would_alias() -> None:
    """5 kHz cannot be carried at 8 kHz; unfiltered it would come back as a 3 kHz tone."""
    out = g711.Downsampler24To8().process(_tone(5_000, 24_000, 1.0))
    assert _rms_db(out[100:]) - _rms_db(_tone(5_000, 24_000, 1.0)) < -60
    passband = g711.Downsampler24To8().process(_tone(3_000, 24_000, 1.0))
    assert abs(_rms_db(passband[100:]) - _rms_db(_tone(3_000, 8_000, 1.0))) < 0.1


@pytest.mark.parametrize("resampler", [g711.Upsampler8To24, g711.Downsampler24To8])
def test_chunk_boundaries_are_seamless(resampler) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    signal = rng.uniform(-0.5, 0.5, 5_000).astype(np.float32)
    whole = resampler().process(signal)
    streaming = resampler()
    pieces, pos = [], 0
    while pos < len(signal):
        size = int(rng.integers(0, 40))  # includes empty chunks and chunks of 1 and 2
        pieces.append(streaming.process(signal[pos : pos + size]))
        pos += size
    chunked = np.concatenate(pieces)
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


# ---------------------------------------------------------------- PCM16 and codecs


def test_pcm16_round_trips_every_sample() -> None:
    data = ALL_INT16.astype("<i2").tobytes()
    samples = g711.pcm16_to_float32(data)
    assert samples.dtype == np.float32 and samples.min() == -1.0 and samples.max() < 1.0
    assert g711.float32_to_pcm16(samples) == data
    assert (
        g711.float32_to_pcm16(np.array([2.0, -2.0], dtype=np.float32))
        == np.array([32767, -32768], dtype="<i2").tobytes()
    )


def test_pcm_input_keeps_an_odd_byte_for_the_next_append() -> None:
    data = np.array([1000, -2000, 3000], dtype="<i2").tobytes()
    decoder = g711.InputAudioDecoder("audio/pcm")
    first = decoder.decode(base64.b64encode(data[:3]).decode())
    second = decoder.decode(base64.b64encode(data[3:]).decode())
    assert np.array_equal(np.concatenate([first, second]) * 32768, [1000, -2000, 3000])


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
def test_g711_input_and_output_carry_a_tone(fmt) -> None:  # type: ignore[no-untyped-def]
    tone24 = _tone(440, 24_000, 0.5)
    encoder = g711.OutputAudioEncoder(fmt)
    # Each chunk is its own base64 string (padded), as each is its own audio delta.
    chunks = [encoder.encode(tone24[i : i + 480]) for i in range(0, len(tone24), 480)]
    chunks.append(encoder.flush())
    payload = b"".join(base64.b64decode(c) for c in chunks)
    assert len(payload) == (len(tone24) + g711.FILTER_DELAY + 3) // 3
    decoder = g711.InputAudioDecoder(fmt)
    back = decoder.decode(base64.b64encode(payload).decode())
    delay = 2 * g711.FILTER_DELAY
    settled = slice(1_000, len(tone24) - 1_000)
    error = back[delay:][settled] - tone24[settled]
    assert _rms_db(tone24) - _rms_db(error) > 30  # G.711's own SNR is about 38 dB


def test_pcm_output_is_plain_pcm16() -> None:
    encoder = g711.OutputAudioEncoder("audio/pcm")
    b64 = encoder.encode(np.array([0.5, -0.5], dtype=np.float32))
    assert base64.b64decode(b64) == np.array([16384, -16384], dtype="<i2").tobytes()
    assert encoder.flush() == ""


def test_invalid_base64_is_a_wire_format_error() -> None:
    with pytest.raises(WireFormatError):
        g711.InputAudioDecoder("audio/pcmu").decode("not base64!")


def test_base64_is_strict_and_the_error_says_what_was_wrong() -> None:
    """Characters outside the alphabet are refused, not skipped (skipping them would turn a
    corrupted append into shorter, shifted audio)."""
    assert g711.decode_base64("AAAAAAAA") == bytes(6)
    for text in ("AAAA*AAAA", "AAAA AAAA", "AAAA\nAAAA"):
        with pytest.raises(WireFormatError, match=r"^Invalid base64 audio: \S"):
            g711.InputAudioDecoder("audio/pcm").decode(text)


@pytest.mark.parametrize("resampler", [g711.Upsampler8To24, g711.Downsampler24To8])
def test_resamplers_give_float32_whatever_they_are_given(resampler) -> None:  # type: ignore[no-untyped-def]
    """The server's audio is float32 throughout; float64 in (or an empty chunk) is no
    exception."""
    r = resampler()
    assert r.process(np.zeros(0, dtype=np.float64)).dtype == np.float32
    first = r.process(np.linspace(-0.5, 0.5, 30, dtype=np.float64))
    second = r.process(np.linspace(0.5, -0.5, 30, dtype=np.float32))
    assert first.dtype == second.dtype == np.float32
    assert first.ndim == second.ndim == 1


@pytest.mark.parametrize("fmt", ["audio/pcm", "audio/pcmu", "audio/pcma"])
def test_decoded_input_is_float32(fmt) -> None:  # type: ignore[no-untyped-def]
    decoder = g711.InputAudioDecoder(fmt)
    for payload in (b"", bytes(range(0, 240, 3))):
        assert decoder.decode(base64.b64encode(payload).decode()).dtype == np.float32


@pytest.mark.parametrize(
    "fmt,decode", [("audio/pcmu", g711.ulaw_decode), ("audio/pcma", g711.alaw_decode)]
)
def test_a_g711_level_is_the_float_of_the_same_pcm16_sample(fmt, decode) -> None:  # type: ignore[no-untyped-def]
    """G.711 levels are scaled as PCM16 samples are (÷ 32768), then upsampled: every code
    gives what the same 16-bit sample sent as PCM16 at 8 kHz would give."""
    codes = np.arange(256, dtype=np.uint8).tobytes() * 2
    decoded = g711.InputAudioDecoder(fmt).decode(base64.b64encode(codes).decode())
    as_pcm16 = g711.pcm16_to_float32(decode(codes).astype("<i2").tobytes())
    assert np.array_equal(decoded, g711.Upsampler8To24().process(as_pcm16))


def test_encoders_convert_wider_integer_samples_first() -> None:
    """int32/int64 samples are converted to int16, not reinterpreted byte by byte."""
    wide = np.array([-32768, -1, 0, 1000, 32767], dtype=np.int64)
    narrow = wide.astype(np.int16)
    assert g711.alaw_encode(wide).tolist() == g711.alaw_encode(narrow).tolist()
    assert g711.ulaw_encode(wide.astype(np.int32)).tolist() == g711.ulaw_encode(narrow).tolist()
    assert len(g711.alaw_encode(wide)) == 5
