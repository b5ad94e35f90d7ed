"""Audio codecs of the OpenAI Realtime dialect: PCM16 24 kHz and G.711 μ-law / A-law 8 kHz.

The server works in float32 mono at 24 kHz (what STT and TTS speak). Clients send and receive
base64 in the session's format: ``audio/pcm`` (PCM16 little-endian, 24 kHz), ``audio/pcmu``
(μ-law, 8 kHz) or ``audio/pcma`` (A-law, 8 kHz), the last two for telephony.

G.711 follows the ITU-T reference implementation (G.191 STL ``g711.c``): μ-law keeps the 14
most significant bits with the 33 bias and ones' complement for negatives, A-law keeps 13 bits;
both are 256/65536-entry lookup tables built once at import. The 8 ↔ 24 kHz resamplers are
polyphase FIR filters (Kaiser-windowed sinc, passband to 3.4 kHz, which is all G.711 telephony
carries) that keep their history between chunks, so a stream cut into any chunks comes out
sample for sample as if it had been processed whole.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from unmute_trio.protocol.errors import WireFormatError

SAMPLE_RATE = 24_000  # the server's internal rate, and OpenAI's PCM16 rate
G711_RATE = 8_000
_RATIO = SAMPLE_RATE // G711_RATE

AudioFormatName = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]

# ---------------------------------------------------------------- G.711 tables


def _bit_length(values: np.ndarray) -> np.ndarray:
    return np.frexp(values.astype(np.float64))[1]  # frexp(0) gives 0, as int.bit_length does


def _every_int16() -> np.ndarray:
    """All 65536 int16 values, ordered so that ``table[pcm.view(np.uint16)]`` looks ``pcm`` up."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> np.ndarray:
    x = _every_int16()
    magnitude = np.where(x < 0, (~x) >> 2, x >> 2) + 33  # 14 bits, biased by 33
    magnitude = np.minimum(magnitude, 0x1FFF)
    segment = 1 + _bit_length(magnitude >> 6)  # 1..8
    code: np.ndarray = ((8 - segment) << 4) | (15 - ((magnitude >> segment) & 0xF))
    return np.where(x >= 0, code | 0x80, code).astype(np.uint8)


def _ulaw_decode_table() -> np.ndarray:
    inverted = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (inverted >> 4) & 0x7
    mantissa = inverted & 0xF
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(inverted & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_encode_table() -> np.ndarray:
    x = _every_int16()
    ix = np.where(x < 0, (~x) >> 4, x >> 4)  # 12-bit magnitude, ones' complement for negatives
    exponent = np.maximum(_bit_length(ix) - 4, 1)
    segmented = ((ix >> (exponent - 1)) - 16) + (exponent << 4)
    value = np.where(ix > 15, segmented, ix)
    value = np.where(x >= 0, value | 0x80, value)
    return (value ^ 0x55).astype(np.uint8)


def _alaw_decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32)
    ix = (codes ^ 0x55) & 0x7F
    exponent = ix >> 4
    mantissa = np.where(exponent > 0, (ix & 0xF) + 16, ix & 0xF)
    magnitude = (mantissa << 4) + 8
    magnitude = np.where(exponent > 1, magnitude << np.maximum(exponent - 1, 0), magnitude)
    return np.where(codes > 127, magnitude, -magnitude).astype(np.int16)


_ULAW_ENCODE = _ulaw_encode_table()
_ULAW_DECODE = _ulaw_decode_table()
_ALAW_ENCODE = _alaw_encode_table()
_ALAW_DECODE = _alaw_decode_table()


def ulaw_encode(pcm: np.ndarray) -> np.ndarray:
    """int16 samples → μ-law codes (uint8)."""
    return _ULAW_ENCODE[np.ascontiguousarray(pcm, dtype=np.int16).view(np.uint16)]


def ulaw_decode(codes: bytes | np.ndarray) -> np.ndarray:
    """μ-law codes → int16 samples (0xFF and 0x7F, the two zeros, both give 0)."""
    return _ULAW_DECODE[np.frombuffer(codes, dtype=np.uint8)]


def alaw_encode(pcm: np.ndarray) -> np.ndarray:
    """int16 samples → A-law codes (uint8)."""
    return _ALAW_ENCODE[np.ascontiguousarray(pcm, dtype=np.int16).view(np.uint16)]


def alaw_decode(codes: bytes | np.ndarray) -> np.ndarray:
    """A-law codes → int16 samples."""
    return _ALAW_DECODE[np.frombuffer(codes, dtype=np.uint8)]


# ---------------------------------------------------------------- 8 kHz ↔ 24 kHz

# 193 taps at 24 kHz: linear phase with a whole-sample delay of 96 (4 ms), which is 32 samples
# at 8 kHz, so a round trip is delayed by exactly 64 samples at 8 kHz. Cutoff 3.7 kHz, Kaiser
# β = 7: within 0.01 dB of flat up to 3.4 kHz (all that telephony carries) and at least 70 dB
# down from 4 kHz (what would alias at 8 kHz).
FILTER_TAPS = 193
FILTER_DELAY = (FILTER_TAPS - 1) // 2  # samples at 24 kHz
_CUTOFF_HZ = 3_700
_KAISER_BETA = 7.0


def _lowpass() -> np.ndarray:
    n = np.arange(FILTER_TAPS) - FILTER_DELAY
    fc = _CUTOFF_HZ / SAMPLE_RATE
    taps = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(FILTER_TAPS, _KAISER_BETA)
    normalised: np.ndarray = taps / taps.sum()  # unity gain at DC
    return normalised


_LOWPASS = _lowpass()


class Upsampler8To24:
    """8 kHz → 24 kHz, streaming. Output is delayed by :data:`FILTER_DELAY` samples (24 kHz)."""

    def __init__(self) -> None:
        per_phase = -(-FILTER_TAPS // _RATIO)
        padded = np.zeros(per_phase * _RATIO)
        # ×3: inserting two zeros after each sample divides the amplitude by three.
        padded[:FILTER_TAPS] = _LOWPASS * _RATIO
        # Output 3m + p is sum_j taps[3j + p] * x[m - j]; the window below runs oldest first.
        self._phases = padded.reshape(per_phase, _RATIO)[::-1].astype(np.float32)
        self._history = np.zeros(per_phase - 1, dtype=np.float32)

    def process(self, samples: np.ndarray) -> np.ndarray:
        if len(samples) == 0:
            return np.zeros(0, dtype=np.float32)
        buf = np.concatenate([self._history, np.asarray(samples, dtype=np.float32)])
        self._history = buf[len(buf) - len(self._history) :]
        windows = sliding_window_view(buf, len(self._phases))
        return (windows @ self._phases).reshape(-1)


class Downsampler24To8:
    """24 kHz → 8 kHz, streaming, low-passed first so nothing above 4 kHz aliases."""

    def __init__(self) -> None:
        self._taps = _LOWPASS[::-1].astype(np.float32)  # oldest sample first, as the windows
        self._history = np.zeros(FILTER_TAPS - 1, dtype=np.float32)
        self._offset = 0  # where, in the next chunk, the next output's newest sample falls

    def process(self, samples: np.ndarray) -> np.ndarray:
        chunk = np.asarray(samples, dtype=np.float32)
        if len(chunk) == 0:
            return np.zeros(0, dtype=np.float32)
        buf = np.concatenate([self._history, chunk])
        self._history = buf[len(buf) - len(self._history) :]
        windows = sliding_window_view(buf, FILTER_TAPS)[self._offset :: _RATIO]
        self._offset = (self._offset - len(chunk)) % _RATIO
        return windows @ self._taps


# ---------------------------------------------------------------- PCM16 and base64


def pcm16_to_float32(data: bytes) -> np.ndarray:
    """PCM16 little-endian → float32 in [-1, 1)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float32_to_int16(samples: np.ndarray) -> np.ndarray:
    """float32 → int16, rounded and clipped (so int16 → float32 → int16 is exact)."""
    return np.clip(np.rint(np.asarray(samples) * 32768.0), -32768, 32767).astype("<i2")


def float32_to_pcm16(samples: np.ndarray) -> bytes:
    return float32_to_int16(samples).tobytes()


def decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise WireFormatError(f"Invalid base64 audio: {e}") from e


class InputAudioDecoder:
    """Base64 client audio in one format → float32 mono 24 kHz, seamless across appends.

    One per session and input format (a format change starts a new one). A PCM16 append may end
    in the middle of a sample; the odd byte waits for the next append.
    """

    def __init__(self, audio_format: AudioFormatName) -> None:
        self.format = audio_format
        self._odd_byte = b""
        self._upsampler = Upsampler8To24()

    def decode(self, audio_b64: str) -> np.ndarray:
        """Raises :class:`WireFormatError` for invalid base64."""
        data = decode_base64(audio_b64)
        if self.format == "audio/pcm":
            data = self._odd_byte + data
            whole = len(data) - len(data) % 2
            self._odd_byte = data[whole:]
            return pcm16_to_float32(data[:whole])
        pcm = ulaw_decode(data) if self.format == "audio/pcmu" else alaw_decode(data)
        return self._upsampler.process(pcm.astype(np.float32) / 32768.0)


class OutputAudioEncoder:
    """float32 mono 24 kHz → base64 in one output format, seamless across chunks.

    One per response: G.711 output lags by :data:`FILTER_DELAY` samples, which
    :meth:`flush` pushes out at the end of the response (a cancelled response just drops it).
    """

    def __init__(self, audio_format: AudioFormatName) -> None:
        self.format = audio_format
        self._downsampler = Downsampler24To8()

    def encode(self, samples: np.ndarray) -> str:
        if self.format == "audio/pcm":
            return base64.b64encode(float32_to_pcm16(samples)).decode("ascii")
        pcm = float32_to_int16(self._downsampler.process(samples))
        codes = ulaw_encode(pcm) if self.format == "audio/pcmu" else alaw_encode(pcm)
        return base64.b64encode(codes.tobytes()).decode("ascii")

    def flush(self) -> str:
        """The audio still inside the resampling filter (empty for PCM16)."""
        if self.format == "audio/pcm":
            return ""
        return self.encode(np.zeros(FILTER_DELAY + _RATIO, dtype=np.float32))
