"""Silero VAD (v6 ONNX) on onnxruntime: one speech probability per 32 ms of 16 kHz audio.

One :class:`SileroVadModel` (one single-threaded InferenceSession) is shared by every stream of
the process; each audio stream gets a :class:`VadStream` holding the model's recurrent state, the
64-sample context and the samples that do not fill a window yet. ``run`` is thread-safe, so
streams may be driven from different worker threads; one stream must not be used by two threads
at once.

The model is called the way the Silero package calls it at 16 kHz: each call gets exactly 512
new samples with the previous call's last 64 samples in front (zeros for the first window), and
the state returned by one call is fed to the next.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from unmute_trio.engines.weights import weight_path

VAD_SAMPLE_RATE = 16_000
VAD_WINDOW = 512  # samples per probability (32 ms)
VAD_CONTEXT = 64  # samples of the previous window the model sees again
STATE_SHAPE = (2, 1, 128)


class SileroVadModel:
    """The loaded model, shared across streams."""

    def __init__(self, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        self._session = ort.InferenceSession(
            str(weight_path("silero_vad")), options, providers=["CPUExecutionProvider"]
        )
        self._sample_rate = np.array(VAD_SAMPLE_RATE, dtype=np.int64)

    def stream(self) -> VadStream:
        return VadStream(self)

    def _run(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """One call of the model: ``window`` is [1, 64 + 512] float32."""
        probability, new_state = self._session.run(
            None, {"input": window, "state": state, "sr": self._sample_rate}
        )
        return float(probability[0, 0]), new_state


class VadStream:
    """Per audio stream: recurrent state, context and the partial window."""

    def __init__(self, model: SileroVadModel) -> None:
        self._model = model
        # The model's input is built in place: [context | 512 new samples].
        self._window = np.zeros((1, VAD_CONTEXT + VAD_WINDOW), dtype=np.float32)
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def reset(self) -> None:
        """Forget everything heard so far, as for a new stream."""
        self._window[:] = 0.0
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def probabilities(self, audio_16k: np.ndarray) -> np.ndarray:
        """Speech probability of each 512-sample window completed by ``audio_16k`` (any length,
        float32 mono 16 kHz in [-1, 1]); the remainder waits for the next call."""
        audio = np.asarray(audio_16k, dtype=np.float32).reshape(-1)
        if self._pending.size:
            audio = np.concatenate([self._pending, audio])
        count = audio.size // VAD_WINDOW
        result = np.empty(count, dtype=np.float32)
        window = self._window
        for i in range(count):
            window[0, VAD_CONTEXT:] = audio[i * VAD_WINDOW : (i + 1) * VAD_WINDOW]
            result[i], self._state = self._model._run(window, self._state)
            # The next window's context is the end of this one; copied before it is overwritten.
            window[0, :VAD_CONTEXT] = window[0, -VAD_CONTEXT:]
        self._pending = audio[count * VAD_WINDOW :].copy()
        return result
