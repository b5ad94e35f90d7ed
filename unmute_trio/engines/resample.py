"""Streaming 24 kHz -> 16 kHz resampling (numpy only), for feeding 24 kHz client audio to the
16 kHz speech models.

Rational 2/3 resampling: conceptually the input is zero-stuffed to 48 kHz, low-pass filtered
below the new Nyquist frequency (8 kHz) with a Kaiser-windowed sinc, and every 3rd sample kept.
It is computed in polyphase form: output sample m only needs the taps of one parity applied to
the input samples ending at index floor(3m / 2), so nothing is multiplied by the stuffed zeros.

The filter is causal, so the output lags the input by ~1.25 ms (60 samples at 48 kHz) and the
last ~1.25 ms of a one-shot call stays in the filter; neither matters for speech recognition.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

UP, DOWN = 2, 3
# 122 taps at 48 kHz (61 per phase): the pass band is flat to ~6.5 kHz and everything above
# ~8.3 kHz, which would alias into the 16 kHz output, is attenuated by more than 60 dB.
TAPS = 122
CUTOFF_HZ = 7_400.0
KAISER_BETA = 6.5
_RATE_UP = 48_000.0


def _design_filter() -> tuple[np.ndarray, np.ndarray]:
    """The two polyphase branches, each reversed so that a dot product with input samples in
    time order applies the filter."""
    t = np.arange(TAPS - 1) - (TAPS - 2) / 2  # 121 symmetric taps, then one zero to split evenly
    h = np.sinc(2 * CUTOFF_HZ / _RATE_UP * t) * np.kaiser(TAPS - 1, KAISER_BETA)
    h = np.append(h, 0.0)
    h *= UP / h.sum()  # zero-stuffing by 2 halves the level; the filter's gain restores it
    return h[0::2][::-1].astype(np.float32), h[1::2][::-1].astype(np.float32)


_EVEN, _ODD = _design_filter()
_PHASE_TAPS = TAPS // UP


class Resampler24To16:
    """Stateful 24 kHz -> 16 kHz resampler: chunks may have any size, the output is the same as
    for the concatenated input."""

    def __init__(self) -> None:
        # The last input samples the next outputs still need (zeros stand for "before start").
        self._history = np.zeros(_PHASE_TAPS - 1, dtype=np.float32)
        self._consumed = 0  # input samples seen, not counting the initial zero history
        self._produced = 0  # output samples emitted

    def process(self, pcm24: np.ndarray) -> np.ndarray:
        """Resample the next chunk of float32 mono 24 kHz audio; returns float32 16 kHz audio."""
        new = np.asarray(pcm24, dtype=np.float32).reshape(-1)
        buffer = np.concatenate([self._history, new])
        total = self._consumed + new.size
        # Output m needs input up to index floor(3m / 2): emit every m whose input has arrived.
        end = (UP * total - 1) // DOWN + 1  # 0 while nothing has arrived
        out = np.empty(end - self._produced, dtype=np.float32)
        if out.size:  # then ``buffer`` holds at least one whole window
            self._filter(buffer, end, out)
        self._history = buffer[buffer.size - (_PHASE_TAPS - 1) :].copy()
        self._consumed, self._produced = total, end
        return out

    def _filter(self, buffer: np.ndarray, end: int, out: np.ndarray) -> None:
        windows = sliding_window_view(buffer, _PHASE_TAPS)
        # Outputs alternate between the two phases, and two outputs advance three inputs, so
        # each phase reads every third window: strided views, no gather.
        for offset in (0, 1):
            m = self._produced + offset
            if m >= end:
                break
            # Window of output m in ``buffer``: it ends at global input index floor(3m / 2) and
            # ``buffer`` starts _PHASE_TAPS - 1 samples before the first new one.
            first = (DOWN * m) // UP - self._consumed
            taps = _EVEN if m % 2 == 0 else _ODD
            count = len(range(m, end, 2))
            out[offset::2] = windows[first::DOWN][:count] @ taps


def resample_24k_to_16k(pcm24: np.ndarray) -> np.ndarray:
    """One-shot 24 kHz -> 16 kHz resampling of a whole clip."""
    return Resampler24To16().process(pcm24)
