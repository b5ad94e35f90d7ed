"""The local speech-to-text models: Moonshine recognizer, Silero VAD, 24 -> 16 kHz resampler.

Real speech comes from espeak-ng (robotic, so a word may be misheard); the models are loaded
once per module. Skipped when onnxruntime or the pinned weights are not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from unmute_trio.engines.moonshine import (
    SAMPLE_RATE,
    MoonshineRecognizer,
    decode_tokens,
    load_vocabulary,
    tail_loop_start,
    token_budget,
)
from unmute_trio.engines.resample import Resampler24To16, resample_24k_to_16k
from unmute_trio.engines.vad import VAD_WINDOW, SileroVadModel
from unmute_trio.engines.weights import WeightsError, weight_path

SENTENCES = [
    "What is the capital of France?",
    "Can you recommend a good book to read?",
    "How many people live in New York City?",
]


@pytest.fixture(scope="module")
def recognizer() -> MoonshineRecognizer:
    try:
        return MoonshineRecognizer()
    except WeightsError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def vad_model() -> SileroVadModel:
    try:
        return SileroVadModel()
    except WeightsError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Each sentence spoken by espeak-ng, as float32 16 kHz."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng) to synthesise speech")
    folder = tmp_path_factory.mktemp("espeak")
    clips = {}
    for i, text in enumerate(SENTENCES):
        path = folder / f"{i}.wav"
        subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
        clips[text] = read_wav_16k(path)
    return clips


def read_wav_16k(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768.0
    n = round(pcm.size * SAMPLE_RATE / rate)
    spectrum = np.fft.rfft(pcm)[: n // 2 + 1]  # drop what is above the new Nyquist frequency
    return (np.fft.irfft(spectrum, n) * n / pcm.size).astype(np.float32)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_errors(expected: list[str], got: list[str]) -> int:
    """Word-level edit distance."""
    row = list(range(len(got) + 1))
    for i, e in enumerate(expected, 1):
        prev, row[0] = row[0], i
        for j, g in enumerate(got, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (e != g))
    return row[-1]


# --- Moonshine -----------------------------------------------------------------------------


def test_vocabulary_file() -> None:
    try:
        vocabulary = load_vocabulary(weight_path("moonshine_tokenizer"))
    except WeightsError as e:
        pytest.skip(str(e))
    # 32000 SentencePiece pieces; the decoder's 32768 logits include 768 unused padding rows.
    assert len(vocabulary) == 32000
    assert vocabulary[:3] == [b"<unk>", b"<s>", b"</s>"]
    assert vocabulary[3] == b"\x00" and vocabulary[258] == b"\xff"  # raw byte-fallback tokens
    # Ids of "What is the capital of France?" as the decoder produced them.
    assert decode_tokens(vocabulary, [1, 1724, 338, 278, 7483, 310, 3444, 29973, 2]) == (
        "What is the capital of France?"
    )


def test_vocabulary_format_edge_cases(tmp_path: Path) -> None:
    long = "\u2581".encode() + b"x" * 197  # 200 bytes
    path = tmp_path / "tokenizer.bin"
    specials = b"\x05<unk>\x03<s>\x04</s>"
    # An empty entry, a two-byte length (200 = 1 * 128 + (200 - 128)), a two-byte character and
    # a byte token spelled "<0x41>".
    path.write_bytes(specials + b"\x00" + bytes([200, 1]) + long + b"\x02\xc3\xa9\x06<0x41>")
    vocabulary = load_vocabulary(path)
    assert vocabulary[3:] == [b"", long, "é".encode(), b"<0x41>"]
    assert decode_tokens(vocabulary, [1, 5, 6, 3, 4, 2]) == "éA " + "x" * 197
    path.write_bytes(b"\x05abc")
    with pytest.raises(ValueError, match="truncated"):
        load_vocabulary(path)


def test_tail_loop_start() -> None:
    # "table for table for table for" -> keep one "table for".
    assert tail_loop_start([7, 8, 5, 6, 5, 6, 5, 6]) == 4
    assert tail_loop_start([1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]) == 4
    assert tail_loop_start([9, 1, 2, 3, 1, 2, 3]) is None  # two copies are allowed
    assert tail_loop_start([4, 4, 4]) is None  # "very very very"
    assert tail_loop_start([3, 4, 4, 4, 4]) == 2
    assert tail_loop_start([5, 6, 5, 6, 5, 7]) is None  # only the tail counts
    assert tail_loop_start([]) is None


def test_token_budget() -> None:
    assert token_budget(SAMPLE_RATE) == 7 + 6
    assert token_budget(SAMPLE_RATE * 4) == 26 + 6


@pytest.mark.parametrize("sentence", SENTENCES)
def test_transcribes_speech(
    recognizer: MoonshineRecognizer, speech: dict[str, np.ndarray], sentence: str
) -> None:
    text = recognizer.transcribe(speech[sentence])
    assert text == text.strip()
    assert word_errors(words(sentence), words(text)) <= 1, text


def test_silence_and_short_audio_give_nothing(
    recognizer: MoonshineRecognizer, speech: dict[str, np.ndarray]
) -> None:
    assert recognizer.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32)) == ""
    assert recognizer.transcribe(np.zeros(0, dtype=np.float32)) == ""
    noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE) * 10 ** (-50 / 20)
    assert not re.search(r"[A-Za-z]", recognizer.transcribe(noise.astype(np.float32)))
    clip = speech[SENTENCES[0]]
    start = int(np.argmax(np.abs(clip) > 0.05))
    assert recognizer.transcribe(clip[start : start + SAMPLE_RATE // 20]) == ""  # 50 ms


def test_generation_is_capped_by_audio_length(
    recognizer: MoonshineRecognizer, speech: dict[str, np.ndarray]
) -> None:
    clip = speech[SENTENCES[1]]
    for seconds in (0.4, 0.7):
        cut = clip[: int(seconds * SAMPLE_RATE)]
        assert len(recognizer.generate(cut)) <= token_budget(cut.size)


def test_concurrent_transcriptions_agree(
    recognizer: MoonshineRecognizer, speech: dict[str, np.ndarray]
) -> None:
    clips = [speech[s] for s in SENTENCES[:2]]
    expected = [recognizer.transcribe(c) for c in clips]
    results: dict[int, str] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, recognizer.transcribe(clips[i])))
        for i in range(len(clips))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(clips))] == expected


# --- Silero VAD ----------------------------------------------------------------------------


def test_vad_hears_speech_not_silence(
    vad_model: SileroVadModel, speech: dict[str, np.ndarray]
) -> None:
    clip = speech[SENTENCES[0]]
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    stream = vad_model.stream()
    probabilities = stream.probabilities(np.concatenate([gap, clip, gap]))
    assert probabilities.dtype == np.float32
    assert probabilities.size == (2 * gap.size + clip.size) // VAD_WINDOW
    lead = gap.size // VAD_WINDOW
    assert probabilities[: lead - 1].max() < 0.2
    speech_part = probabilities[lead : lead + clip.size // VAD_WINDOW]
    # Windows of clearly voiced audio (espeak leaves short pauses between words).
    windows = clip[: speech_part.size * VAD_WINDOW].reshape(-1, VAD_WINDOW)
    voiced = np.sqrt(np.mean(windows**2, axis=1)) > 0.05
    assert voiced.sum() > 20
    assert np.mean(speech_part[voiced] > 0.5) > 0.8

    stream.reset()
    noise = np.random.default_rng(1).standard_normal(3 * SAMPLE_RATE) * 10 ** (-40 / 20)
    assert stream.probabilities(noise.astype(np.float32)).max() < 0.2


def test_vad_chunking_and_reset(vad_model: SileroVadModel, speech: dict[str, np.ndarray]) -> None:
    clip = speech[SENTENCES[2]]
    whole = vad_model.stream().probabilities(clip)
    stream = vad_model.stream()
    rng = np.random.default_rng(2)
    parts, i = [], 0
    while i < clip.size:
        n = int(rng.integers(0, 1500))
        parts.append(stream.probabilities(clip[i : i + n]))
        i += n
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)
    assert stream.probabilities(np.zeros(3, dtype=np.float32)).size == 0
    stream.reset()
    np.testing.assert_allclose(stream.probabilities(clip), whole, atol=1e-6)


# --- Resampler -----------------------------------------------------------------------------


def test_resampler_chunks_match_one_shot() -> None:
    rng = np.random.default_rng(3)
    pcm = rng.standard_normal(24_000 * 2).astype(np.float32)
    whole = resample_24k_to_16k(pcm)
    assert whole.dtype == np.float32 and abs(whole.size - pcm.size * 2 / 3) <= 1
    resampler, parts, i = Resampler24To16(), [], 0
    while i < pcm.size:
        n = int(rng.integers(0, 800))
        parts.append(resampler.process(pcm[i : i + n]))
        i += n
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5)
    one_by_one = Resampler24To16()
    single = np.concatenate([one_by_one.process(pcm[i : i + 1]) for i in range(600)])
    np.testing.assert_allclose(single, whole[: single.size], atol=1e-5)


@pytest.mark.parametrize(
    ("frequency", "min_db", "max_db"), [(1000, -0.1, 0.1), (10_000, -200, -40)]
)
def test_resampler_frequency_response(frequency: int, min_db: float, max_db: float) -> None:
    t = np.arange(24_000) / 24_000
    out = resample_24k_to_16k(np.sin(2 * np.pi * frequency * t).astype(np.float32))
    steady = out[200:-200]  # past the filter's start-up
    gain_db = 20 * np.log10(np.sqrt(2 * np.mean(steady.astype(np.float64) ** 2)) + 1e-12)
    assert min_db < gain_db < max_db
