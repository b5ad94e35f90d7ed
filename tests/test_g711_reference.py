"""G.711 against per-sample reference code written from the ITU-T sources, for every input.

``tests/test_g711.py`` checks properties (round trips, symmetry, quantisation intervals) and,
where Python still has it, the standard library's ``audioop``; ``audioop`` is gone in Python
3.13, so these references stand on their own: the μ-law and A-law encoders as in the ITU-T
G.191 STL ``g711.c`` (ones' complement for negative samples), the decoders from G.711's
tables of decoder output values, one sample at a time in plain Python.

The codec's lookup tables and the resampling filter are built once, when the module is
imported. The tests call the builders too (``_ulaw_encode_table()`` ...), not only the public
functions: that is what checks the building code itself (a mutation tester, for one, imports
the module before it switches a mutant on, so the module-level tables are always the original
ones).
"""

from __future__ import annotations

import numpy as np
import pytest

from unmute_trio.protocol import g711

# Every 16-bit pattern, in the order of the encode tables: index i is the sample whose int16
# bit pattern is i (so 0..32767 are themselves and 32768..65535 are -32768..-1).
SAMPLES = [i - 65536 if i >= 32768 else i for i in range(65536)]

# Ends of μ-law's eight segments, in 14-bit magnitudes biased by 33 (G.711 Table 2a).
_ULAW_SEGMENT_ENDS = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]


def ulaw_compress(x: int) -> int:
    """One 16-bit sample to its μ-law code, as G.191's ``ulaw_compress``."""
    magnitude = ((~x) >> 2) if x < 0 else (x >> 2)  # ones' complement: -1 is "negative zero"
    magnitude = min(magnitude + 33, 0x1FFF)
    segment = next(s for s, end in enumerate(_ULAW_SEGMENT_ENDS) if magnitude <= end)
    step = (magnitude >> (segment + 1)) & 0xF
    code = (segment << 4) | step
    code ^= 0x7F  # μ-law sends segment and step inverted ...
    return code | 0x80 if x >= 0 else code  # ... and sets the sign bit for positive samples


def ulaw_expand(code: int) -> int:
    """One μ-law code to its decoder output value (G.711 Table 2a, in 16-bit units)."""
    inverted = ~code & 0xFF
    segment = (inverted >> 4) & 0x7
    step = inverted & 0xF
    magnitude = (((2 * step + 33) << segment) - 33) * 4
    return -magnitude if inverted & 0x80 else magnitude


def alaw_compress(x: int) -> int:
    """One 16-bit sample to its A-law code, as G.191's ``alaw_compress``."""
    ix = ((~x) >> 4) if x < 0 else (x >> 4)  # 12-bit magnitude, ones' complement
    if ix > 15:
        exponent = 1
        while ix > 16 + 15:
            ix >>= 1
            exponent += 1
        ix -= 16
        ix += exponent << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55  # even bits inverted on the line


def alaw_expand(code: int) -> int:
    """One A-law code to its decoder output value (G.711 Table 1a, in 16-bit units)."""
    ix = (code ^ 0x55) & 0x7F
    segment = ix >> 4
    step = ix & 0xF
    if segment == 0:
        magnitude = (2 * step + 1) * 8
    else:
        magnitude = ((2 * step + 33) << (segment - 1)) * 8
    return magnitude if code & 0x80 else -magnitude


ULAW_CODES = [ulaw_compress(x) for x in SAMPLES]
ALAW_CODES = [alaw_compress(x) for x in SAMPLES]
ULAW_LEVELS = [ulaw_expand(c) for c in range(256)]
ALAW_LEVELS = [alaw_expand(c) for c in range(256)]


def test_the_references_agree_with_g711s_printed_values() -> None:
    """A few values read off G.711 and G.191, so the references are not only self-consistent."""
    # μ-law: 0xFF and 0x7F are the two zeros; 0x80 / 0x00 the largest levels, ±8031 × 4.
    assert [ULAW_LEVELS[c] for c in (0xFF, 0x7F, 0x80, 0x00)] == [0, 0, 32124, -32124]
    assert [ULAW_LEVELS[c] for c in (0xFE, 0xF0, 0xEF)] == [8, 120, 132]  # steps 2, then 4 (×4)
    # A-law: 0xD5 / 0x55 are ±1 (× 8); 0xAA / 0x2A the largest levels, ±4032 × 8.
    assert [ALAW_LEVELS[c] for c in (0xD5, 0x55, 0xAA, 0x2A)] == [8, -8, 32256, -32256]
    assert ULAW_CODES[0] == 0xFF and ULAW_CODES[65535] == 0x7F  # 0 and -1
    assert ULAW_CODES[32767] == 0x80 and ULAW_CODES[32768] == 0x00
    assert ALAW_CODES[0] == 0xD5 and ALAW_CODES[65535] == 0x55
    assert ALAW_CODES[32767] == 0xAA and ALAW_CODES[32768] == 0x2A


@pytest.mark.parametrize(
    "build,reference",
    [
        (g711._ulaw_encode_table, ULAW_CODES),
        (g711._alaw_encode_table, ALAW_CODES),
        (g711._ulaw_decode_table, ULAW_LEVELS),
        (g711._alaw_decode_table, ALAW_LEVELS),
    ],
    ids=["ulaw_encode", "alaw_encode", "ulaw_decode", "alaw_decode"],
)
def test_each_table_is_the_reference_entry_for_entry(build, reference) -> None:  # type: ignore[no-untyped-def]
    table = build()
    assert table.dtype == (np.uint8 if len(reference) == 65536 else np.int16)
    mismatches = np.nonzero(table.astype(np.int64) != np.array(reference, dtype=np.int64))[0]
    assert mismatches.tolist()[:10] == []


def test_the_public_codec_is_the_reference_for_all_65536_samples_and_256_codes() -> None:
    samples = np.array(SAMPLES, dtype=np.int64).astype(np.int16)
    assert g711.ulaw_encode(samples).tolist() == ULAW_CODES
    assert g711.alaw_encode(samples).tolist() == ALAW_CODES
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).tolist() == ULAW_LEVELS
    assert g711.alaw_decode(codes).tolist() == ALAW_LEVELS
    # Also from a uint8 array, and from samples given as a wider integer type.
    assert g711.alaw_decode(np.arange(256, dtype=np.uint8)).tolist() == ALAW_LEVELS
    wide = np.array([-32768, 100], dtype=np.int64)
    assert g711.ulaw_encode(wide).tolist() == [ULAW_CODES[32768], ULAW_CODES[100]]


def test_the_bit_length_helper_is_int_bit_length() -> None:
    values = np.array([0, 1, 2, 3, 4, 7, 8, 255, 256, 8191, 65535], dtype=np.int32)
    assert g711._bit_length(values).tolist() == [int(v).bit_length() for v in values]


# ---------------------------------------------------------------- the resampling filter


def _response_db(taps: np.ndarray, freq_hz: float) -> float:
    n = np.arange(len(taps))
    gain = abs(np.sum(taps * np.exp(-2j * np.pi * freq_hz / g711.SAMPLE_RATE * n)))
    return float(20 * np.log10(gain))


def test_the_lowpass_filter_is_what_the_module_promises() -> None:
    """193 taps, linear phase (symmetric), unity gain at DC, within 0.01 dB of flat up to
    3.4 kHz, at least 70 dB down from 4 kHz: a Kaiser-windowed sinc (β = 7) cut at 3.7 kHz."""
    taps = g711._lowpass()
    assert taps.shape == (g711.FILTER_TAPS,) == (193,)
    assert g711.FILTER_DELAY == 96
    assert np.allclose(taps, taps[::-1], rtol=0, atol=1e-15)
    assert int(np.argmax(taps)) == g711.FILTER_DELAY
    assert abs(taps.sum() - 1.0) < 1e-12
    for freq in (100, 1_000, 2_000, 3_000, 3_400):
        assert abs(_response_db(taps, freq)) < 0.01, freq
    for freq in (4_000, 5_000, 8_000, 11_900):
        assert _response_db(taps, freq) < -70, freq
    # The design itself, from the parameters above.
    n = np.arange(193) - 96
    ideal = np.sinc(2 * 3_700 / 24_000 * n) * np.kaiser(193, 7.0)
    np.testing.assert_allclose(taps, ideal / ideal.sum(), rtol=0, atol=1e-15)
    assert np.array_equal(g711._LOWPASS, taps)
