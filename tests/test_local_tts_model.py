"""Piper text-to-speech with word timings (unmute_trio.engines.piper_voice).

The pure helpers (markdown cleanup, phoneme groups, word mapping, resampler) are tested
everywhere; the tests that load the real voice (~2 s once, then ~0.1-0.3 s per sentence) skip
with the reason when the ``local`` extra or its weights are not installed."""

from __future__ import annotations

import numpy as np
import pytest

from unmute_trio.engines.piper_voice import (
    SAMPLE_RATE,
    PiperSynthesizer,
    Synthesis,
    WordTiming,
    align_words,
    clean_word,
    phoneme_groups,
    resample,
)
from unmute_trio.engines.weights import WeightsError


@pytest.fixture(scope="module")
def synth() -> PiperSynthesizer:
    pytest.importorskip("piper")
    try:
        return PiperSynthesizer(threads=1)
    except WeightsError as e:
        pytest.skip(str(e))


def mean_square(audio: np.ndarray, start_s: float, stop_s: float) -> float:
    segment = audio[int(start_s * SAMPLE_RATE) : int(stop_s * SAMPLE_RATE)]
    return float(np.mean(segment.astype(np.float64) ** 2)) if segment.size else 0.0


def voiced_frames(audio: np.ndarray) -> np.ndarray:
    """Indices of the 10 ms frames louder than 5% of the loudest frame's RMS."""
    frame = SAMPLE_RATE // 100
    frames = audio[: audio.size // frame * frame].reshape(-1, frame)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return np.nonzero(rms > 0.05 * rms.max())[0]


def check_invariants(text: str, result: Synthesis) -> None:
    """What the TTS engine relies on: every word once, in order, monotonic, inside the audio."""
    assert result.audio.dtype == np.float32 and result.audio.ndim == 1
    assert [w.text for w in result.words] == text.split()
    duration = result.audio.size / SAMPLE_RATE
    previous = 0.0
    for word in result.words:
        assert previous <= word.start_s <= word.stop_s <= duration, (word, previous, duration)
        previous = word.stop_s


# --- the real voice ---


def test_sentence_audio_and_words(synth: PiperSynthesizer) -> None:
    text = "Paris is the capital of France."
    result = synth.synthesize(text)
    check_invariants(text, result)
    duration = result.audio.size / SAMPLE_RATE
    assert 1.0 <= duration <= 4.0
    assert np.abs(result.audio).max() <= 1.0
    assert np.sqrt(np.mean(result.audio**2)) > 0.01
    assert all(w.stop_s > w.start_s for w in result.words)  # every word here is spoken


def test_timings_follow_the_audio_energy(synth: PiperSynthesizer) -> None:
    text = "Yes, we can do it."
    result = synth.synthesize(text)
    check_invariants(text, result)
    audio, words = result.audio, result.words
    # The comma's pause lies between the first two words, and it is (nearly) silent.
    gap = mean_square(audio, words[0].stop_s, words[1].start_s)
    spoken = np.mean([mean_square(audio, w.start_s, w.stop_s) for w in words])
    assert words[1].start_s - words[0].stop_s > 0.1
    assert spoken > 100 * gap
    voiced = voiced_frames(audio)
    assert abs(voiced[0] * 0.01 - words[0].start_s) < 0.15
    assert abs((voiced[-1] + 1) * 0.01 - words[-1].stop_s) < 0.3


def test_words_that_espeak_expands_keep_their_own_timing(synth: PiperSynthesizer) -> None:
    # "25" is spoken as two groups ("twenty five"): per-word phonemisation assigns both to it.
    text = "It costs 25 dollars."
    words = synth.synthesize(text).words
    assert [w.text for w in words] == text.split()
    assert words[2].stop_s - words[2].start_s > words[0].stop_s - words[0].start_s
    assert words[2].start_s >= words[1].stop_s and words[3].start_s >= words[2].stop_s


@pytest.mark.parametrize(
    "text",
    [
        "Well... maybe.",  # espeak merges the two words into one group: proportional fallback
        "Dr. Smith met Mr. Jones at 3:30 p.m. on Jan. 5th.",  # several sentences for espeak
        "Hello there. How are you today?",
    ],
)
def test_hard_texts_still_give_every_word(synth: PiperSynthesizer, text: str) -> None:
    result = synth.synthesize(text)
    check_invariants(text, result)
    assert result.words[-1].stop_s > 0.5 * result.audio.size / SAMPLE_RATE


def test_markdown_is_not_read_but_its_words_are_kept(synth: PiperSynthesizer) -> None:
    text = "**Bold** and # heading"
    result = synth.synthesize(text)
    check_invariants(text, result)
    bold, _, hash_, heading = result.words
    assert bold.stop_s > bold.start_s
    assert hash_.start_s == hash_.stop_s == result.words[1].stop_s
    assert heading.start_s > hash_.stop_s
    # "asterisk asterisk bold ..." would last over 3 s.
    assert result.audio.size / SAMPLE_RATE < 2.5


@pytest.mark.parametrize("text", ["", "   ", "...", "**", "# --"])
def test_nothing_to_say(synth: PiperSynthesizer, text: str) -> None:
    result = synth.synthesize(text)
    assert result.audio.size == 0 and result.audio.dtype == np.float32
    assert result.words == []


# --- pure helpers ---


@pytest.mark.parametrize(
    ("word", "cleaned"),
    [
        ("**Bold**", "Bold"),
        ("`code`", "code"),
        ("snake_case", "snake case"),
        ("#", ""),
        ("[[x]]", "x"),
        ("don't", "don't"),
        ("3:30,", "3:30,"),
        ("well-known.", "well-known."),
    ],
)
def test_clean_word(word: str, cleaned: str) -> None:
    assert clean_word(word) == cleaned


def test_phoneme_groups_split_on_spaces_and_skip_punctuation() -> None:
    phonemes = ["^", "h", "ə", ",", " ", "w", "ɜ", " ", ".", " ", "ɪ", "t", "?", "$"]
    samples = [5, 1, 2, 4, 3, 1, 1, 2, 7, 1, 2, 2, 6, 9]
    # "hə," then "wɜ" then a lone "." (a pause, not a word) then "ɪt?"; offset shifts them all.
    assert phoneme_groups(phonemes, samples, offset=100) == [(105, 108), (115, 117), (127, 131)]
    assert phoneme_groups([], []) == []


def spans(times: list[WordTiming]) -> list[tuple[float, float]]:
    return [(round(t.start_s, 6), round(t.stop_s, 6)) for t in times]


def test_align_one_group_per_word() -> None:
    words = ["Hi", "there."]
    times = align_words(words, words, [(0.1, 0.3), (0.4, 0.8)], (0.1, 0.8), lambda w: 99)
    assert [t.text for t in times] == words
    assert spans(times) == [(0.1, 0.3), (0.4, 0.8)]


def test_align_uses_per_word_group_counts_when_counts_differ() -> None:
    words = ["It", "costs", "25", "dollars."]
    groups = [(0.0, 0.1), (0.2, 0.5), (0.6, 0.9), (1.0, 1.2), (1.3, 1.7)]
    times = align_words(words, words, groups, (0.0, 1.7), lambda w: 2 if w == "25" else 1)
    assert spans(times) == [(0.0, 0.1), (0.2, 0.5), (0.6, 1.2), (1.3, 1.7)]


def test_align_falls_back_to_character_proportions() -> None:
    words = ["ab", "abcd"]
    # One group for two words, and the per-word counts (1 + 1) do not explain it.
    times = align_words(words, words, [(1.0, 4.0)], (1.0, 4.0), lambda w: 1)
    assert spans(times) == [(1.0, 2.0), (2.0, 4.0)]
    # No alignments at all: the same spread over the given span.
    assert spans(align_words(words, words, None, (1.0, 4.0), lambda w: 1)) == spans(times)


def test_align_places_unspoken_words_at_a_neighbour_boundary() -> None:
    words = ["**", "Hi", "#", "—", "there."]
    spoken = ["", "Hi", "", "—", "there."]
    # "—" is given to espeak but yields no group: it is placed like the markdown words.
    counts = {"Hi": 1, "—": 0, "there.": 1}
    times = align_words(words, spoken, [(0.1, 0.3), (0.4, 0.8)], (0.1, 0.8), counts.__getitem__)
    assert [t.text for t in times] == words
    assert spans(times) == [(0.1, 0.1), (0.1, 0.3), (0.3, 0.3), (0.3, 0.3), (0.4, 0.8)]


def test_resample_sine_keeps_frequency_amplitude_and_length() -> None:
    n_in = 22_050 + 123  # not a multiple of 147: the length must still be exact
    t_in = np.arange(n_in) / 22_050
    out = resample(0.5 * np.sin(2 * np.pi * 1000 * t_in), 22_050, SAMPLE_RATE)
    assert out.dtype == np.float32
    assert abs(out.size - n_in * SAMPLE_RATE / 22_050) <= 1
    t_out = np.arange(out.size) / SAMPLE_RATE
    expected = 0.5 * np.sin(2 * np.pi * 1000 * t_out)
    middle = slice(SAMPLE_RATE // 10, out.size - SAMPLE_RATE // 10)  # away from the edges
    assert np.max(np.abs(out[middle] - expected[middle])) < 1e-3
    spectrum = np.abs(np.fft.rfft(out[middle] * np.hanning(out[middle].size)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / out[middle].size
    assert abs(peak_hz - 1000) < 2
    assert abs(np.max(np.abs(out[middle])) - 0.5) < 0.005


def test_resample_edge_cases() -> None:
    assert resample(np.zeros(0, dtype=np.float32), 22_050).size == 0
    assert resample(np.full(10, 2.0), SAMPLE_RATE, SAMPLE_RATE).max() == 1.0  # clipped
    assert resample(np.ones(1), 22_050).size == 1
