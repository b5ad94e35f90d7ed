"""What the tests of the local engines share: the models (loaded once per test process), real
speech from Debian's espeak-ng, and word-error-rate scoring.

The engines need the ``local`` extra. Without it these tests skip, except under
``UNMUTE_REQUIRE_LOCAL_ENGINES=1`` (set by ``make test``), where a missing engine is a failure:
CI must not pass by skipping the real models.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REQUIRED = os.environ.get("UNMUTE_REQUIRE_LOCAL_ENGINES") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"local engines required (UNMUTE_REQUIRE_LOCAL_ENGINES=1): {reason}")
    pytest.skip(reason)


@functools.cache
def _load_stt_models() -> tuple[Any, Any] | str:
    try:
        from unmute_trio.engines.moonshine import MoonshineRecognizer
        from unmute_trio.engines.vad import SileroVadModel
        from unmute_trio.engines.weights import WeightsError
    except ModuleNotFoundError as e:
        return f"the local extra is not installed ({e.name})"
    try:
        return MoonshineRecognizer(), SileroVadModel()
    except WeightsError as e:
        return str(e)


@functools.cache
def _load_tts_model() -> Any:
    try:
        from unmute_trio.engines.piper_voice import PiperSynthesizer
        from unmute_trio.engines.weights import WeightsError
    except ModuleNotFoundError as e:
        return f"the local extra is not installed ({e.name})"
    try:
        return PiperSynthesizer()
    except WeightsError as e:
        return str(e)


def stt_models() -> tuple[Any, Any]:
    """(MoonshineRecognizer, SileroVadModel), loaded once; skips (or fails) if unavailable."""
    loaded = _load_stt_models()
    if isinstance(loaded, str):
        _unavailable(loaded)
    assert not isinstance(loaded, str)
    return loaded


def tts_model() -> Any:
    loaded = _load_tts_model()
    if isinstance(loaded, str):
        _unavailable(loaded)
    return loaded


def local_stt_engine(**config: Any) -> Any:
    from unmute_trio.engines.stt_server import LocalSttConfig, LocalSttEngine

    recognizer, vad = stt_models()
    return LocalSttEngine(LocalSttConfig(**config), recognizer=recognizer, vad=vad)


def local_tts_engine(**config: Any) -> Any:
    from unmute_trio.engines.tts_server import LocalTtsConfig, LocalTtsEngine

    return LocalTtsEngine(LocalTtsConfig(**config), synthesizer=tts_model())


def config_fields(config_class: type) -> set[str]:
    return set(config_class.__dataclass_fields__)


# ------------------------------------------------------------------ speech


def espeak(text: str, *, voice: str = "en-us", rate: int = 150) -> np.ndarray:
    """``text`` spoken by espeak-ng, as float32 mono 24 kHz."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        _unavailable("espeak-ng is not installed (scripts/test-deps.sh installs it)")
    assert binary is not None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(
            [binary, "-v", voice, "-s", str(rate), "-w", str(path), text],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return read_wav_24k(path)


def read_wav_24k(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2, "16-bit WAV expected"
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels())[:, 0]
    pcm = data.astype(np.float32) / 32768.0
    return resample(pcm, rate, 24_000)


def resample(pcm: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of a whole clip (FFT), good enough for test audio."""
    if rate_in == rate_out:
        return pcm.astype(np.float32)
    n_out = round(len(pcm) * rate_out / rate_in)
    spectrum = np.fft.rfft(pcm)
    return (np.fft.irfft(spectrum, n_out) * (n_out / len(pcm))).astype(np.float32)


def normalise_words(text: str) -> list[str]:
    return [w for w in re.sub(r"[^a-z0-9' ]", " ", text.lower()).split() if w]


def _edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Substitutions + insertions + deletions turning ``ref`` into ``hyp``."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level edit distance (substitutions + insertions + deletions)."""
    return _edit_distance(normalise_words(reference), normalise_words(hypothesis))


# What a reply spoken by Piper and transcribed back by Moonshine may differ by. Measured: 0.00 and
# 0.04 here, 0.08 on the CI machine ("The capital of Francis Parris."); a reply cut or garbled
# halfway scores about 0.5, unrelated speech about 0.9.
HEARD_LETTER_ERRORS = 0.25


def letter_error_rate(reference: str, hypothesis: str) -> float:
    """Edit distance between the letters of both texts (spaces and punctuation dropped), over the
    reference's letter count. For checking speech that was synthesised and transcribed back:
    near-homophones that move a word boundary ("France is" → "Francis") cost one or two letters
    instead of two or three words, while unintelligible audio still scores far above 0.3."""
    ref = "".join(normalise_words(reference))
    hyp = "".join(normalise_words(hypothesis))
    return _edit_distance(ref, hyp) / max(1, len(ref))
