"""Text to 24 kHz speech with per-word timings, using Piper (VITS) and the en_US "joe" voice.

Pure and synchronous: :meth:`PiperSynthesizer.synthesize` may be called from several worker
threads at once (onnxruntime sessions are thread-safe and Piper serialises its espeak-ng calls
behind a lock), and nothing here touches the disk after loading.

Words. ``Synthesis.words`` holds every whitespace-split word of the input text, in order, exactly
once, with its text unchanged, so the caller can match them to what it sent; the one exception
is a text with nothing to say (empty, only punctuation or markdown): empty audio and no words.
Before Piper sees a word, markdown symbols (``* _ ` # ~ | [ ] \\``) are replaced by spaces: LLM
output is full of them, espeak would read them aloud ("asterisk"), and ``[[`` would switch Piper
to raw phoneme input. A word left with nothing to say (only markdown, like ``**`` or ``#``, or a
word espeak-ng skips, like a lone dash) gets a zero-length timing at the stop of the word before
it (or at the start of the first spoken word).

Timings come from Piper's phoneme alignments (samples per phoneme, exposed by marking the
model's duration tensor as an output, patched in memory at load time). The phonemes between two
``' '`` phonemes (or a sentence boundary) are one spoken group; a group spans its first to its
last non-punctuation phoneme, so a comma's pause belongs to neither word. Groups are mapped to
words in three steps, each used only if the previous one does not fit:

1. as many groups as spoken words: one group per word;
2. espeak-ng run on each word alone predicts how many groups it becomes ("25" -> "twenty five",
   "e.g." -> one); if those counts add up to the number of groups, each word takes its share;
3. otherwise (words merged, e.g. "Well... maybe" -> one group) the words are spread over the
   speech, from the first group's start to the last group's stop, in proportion to their length
   in characters.

Audio is the model's own level (no per-sentence peak normalisation, so consecutive sentences
keep the same loudness; speech is around -23 dBFS RMS) resampled from 22,050 to 24,000 Hz in
the frequency domain (see :func:`resample`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from unmute_trio.engines.weights import weight_path

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000

# Replaced by a space (not deleted) so that "snake_case" is read as two words, not "snakecase".
_MARKDOWN = re.compile(r"[*_`#~|\[\]\\]")
# What separates spoken groups in Piper's alignments: the space phoneme, sentence start and end.
_BOUNDARIES = frozenset({" ", "^", "$"})


@dataclass(frozen=True)
class WordTiming:
    text: str
    start_s: float  # relative to the start of this synthesis' audio
    stop_s: float


@dataclass(frozen=True)
class Synthesis:
    audio: np.ndarray  # float32 mono at SAMPLE_RATE, in [-1, 1]
    words: list[WordTiming]


def clean_word(word: str) -> str:
    """What Piper is given for ``word``: markdown symbols removed; "" if nothing is left."""
    return " ".join(_MARKDOWN.sub(" ", word).split())


def phoneme_groups(
    phonemes: Sequence[str], samples: Sequence[int], offset: int = 0
) -> list[tuple[int, int]]:
    """(start, stop) sample spans of the spoken groups: runs of phonemes between spaces or
    sentence boundaries, trimmed to their non-punctuation phonemes; runs of only punctuation
    (a lone "." or ",") are pauses, not words."""
    groups: list[tuple[int, int]] = []
    start: int | None = None
    stop = pos = offset
    for phoneme, n in zip(phonemes, samples, strict=True):
        if phoneme in _BOUNDARIES:
            if start is not None:
                groups.append((start, stop))
            start = None
        elif not unicodedata.category(phoneme[0]).startswith("P"):
            if start is None:
                start = pos
            stop = pos + int(n)
        pos += int(n)
    if start is not None:
        groups.append((start, stop))
    return groups


def align_words(
    words: Sequence[str],
    spoken: Sequence[str],
    groups: Sequence[tuple[float, float]] | None,
    span: tuple[float, float],
    groups_per_word: Callable[[str], int],
) -> list[WordTiming]:
    """Timings for ``words`` given the spoken groups' times (None: alignments unavailable).

    ``spoken[i]`` is what was synthesised for ``words[i]`` ("" if nothing); ``span`` is the
    (start, stop) of the speech for the proportional fallback; ``groups_per_word`` predicts how
    many groups a spoken word becomes. See the module docstring for the three steps."""
    if len(spoken) != len(words):
        raise ValueError("spoken must have one entry per word")
    said = [i for i, s in enumerate(spoken) if s]
    times: list[tuple[float, float] | None] = [None] * len(words)
    counts: list[int] | None = None
    if groups is not None:
        counts = [1] * len(said)
        if len(groups) != len(said):
            counts = [groups_per_word(spoken[i]) for i in said]
            if sum(counts) != len(groups):
                counts = None
    if groups is not None and counts is not None:
        g = 0
        for i, n in zip(said, counts, strict=True):
            if n:  # a word espeak skips (a lone dash) is filled in below like a markdown one
                times[i] = (groups[g][0], groups[g + n - 1][1])
            g += n
    elif said:
        # Characters are a rough proxy for duration, but they keep the order and the total.
        weights = np.array([len(spoken[i].replace(" ", "")) for i in said], dtype=np.float64)
        fractions = np.concatenate(([0.0], np.cumsum(weights))) / weights.sum()
        edges = span[0] + (span[1] - span[0]) * fractions
        for k, i in enumerate(said):
            times[i] = (float(edges[k]), float(edges[k + 1]))
    # Words with nothing said sit at the previous word's stop (or the next word's start).
    known = [t for t in times if t is not None]
    cursor = known[0][0] if known else span[0]
    out: list[WordTiming] = []
    for word, t in zip(words, times, strict=True):
        if t is None:
            t = (cursor, cursor)
        cursor = t[1]
        out.append(WordTiming(word, t[0], t[1]))
    return out


def _smooth(n: int) -> int:
    """The smallest 2-3-5-smooth integer >= n: FFT sizes with only small factors are fast."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def resample(audio: np.ndarray, src_rate: int, dst_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling of a whole clip in the frequency domain (float32 out, clipped).

    The clip is zero-padded so the FFT's circular wrap meets silence, and to a length that is a
    multiple of ``src/gcd`` so the output grid lines up exactly with the input (no drift), then
    its spectrum is cut or zero-extended below the lower Nyquist frequency and inverted. For
    22,050 -> 24,000 Hz nothing is cut: the output has exactly the input's frequency content."""
    x = np.asarray(audio, dtype=np.float64)
    if src_rate == dst_rate or x.size == 0:
        return np.clip(x, -1.0, 1.0).astype(np.float32)
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    out_len = round(x.size * up / down)
    # The guard is a whole number of `down` blocks so the output can be cut at a whole sample.
    guard = down * max(1, math.ceil(64 / down))
    blocks = _smooth(math.ceil((x.size + 2 * guard) / down))
    n_in, n_out = blocks * down, blocks * up
    padded = np.zeros(n_in)
    padded[guard : guard + x.size] = x
    spectrum = np.fft.rfft(padded)
    keep = min(n_in, n_out) // 2  # bins strictly below the lower Nyquist: no ambiguous bin
    out_spectrum = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    out_spectrum[:keep] = spectrum[:keep]
    y = np.fft.irfft(out_spectrum, n_out) * (n_out / n_in)
    start = guard * up // down
    return np.clip(y[start : start + out_len], -1.0, 1.0).astype(np.float32)


class PiperSynthesizer:
    """The joe voice on CPU, loaded once (~2 s); ``synthesize`` is thread-safe."""

    def __init__(self, threads: int = 1, length_scale: float | None = None) -> None:
        # Imported here so that the pure helpers above work without the `local` extra.
        import onnxruntime
        from piper.config import PiperConfig, SynthesisConfig
        from piper.voice import PiperVoice

        model_path = weight_path("piper_joe")
        with weight_path("piper_joe_config").open(encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # The engines share few cores with other processes: idle threads must sleep, not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(
            _model_with_alignments(str(model_path)),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        # PiperVoice.load would build its own session with default (all-core) options.
        self._voice = PiperVoice(session=session, config=config)
        # Peak normalisation per sentence would make loudness jump from sentence to sentence.
        self._config = SynthesisConfig(length_scale=length_scale, normalize_audio=False)
        self._source_rate: int = config.sample_rate

    def _groups_per_word(self, word: str) -> int:
        return sum(len(phoneme_groups(p, [1] * len(p))) for p in self._voice.phonemize(word))

    def synthesize(self, text: str) -> Synthesis:
        words = text.split()
        spoken = [clean_word(w) for w in words]
        piper_text = " ".join(s for s in spoken if s)
        chunks = []
        if piper_text:
            # One chunk per sentence as espeak-ng sees them ("Dr." may end one).
            chunks = list(self._voice.synthesize(piper_text, self._config, include_alignments=True))
        if not chunks:
            return Synthesis(np.zeros(0, dtype=np.float32), [])
        groups: list[tuple[int, int]] | None = []
        offset = 0
        for chunk in chunks:
            alignments = chunk.phoneme_alignments
            if alignments is None:  # a phoneme missing from the voice's map: no timings
                groups = None
            elif groups is not None:
                phonemes = [a.phoneme for a in alignments]
                samples = [a.num_samples for a in alignments]
                groups.extend(phoneme_groups(phonemes, samples, offset))
            offset += len(chunk.audio_float_array)
        audio = resample(
            np.concatenate([c.audio_float_array for c in chunks]), self._source_rate, SAMPLE_RATE
        )
        duration = len(audio) / SAMPLE_RATE
        rate = float(self._source_rate)
        group_s = None if groups is None else [(a / rate, b / rate) for a, b in groups]
        span = (group_s[0][0], group_s[-1][1]) if group_s else (0.0, duration)
        timings = align_words(words, spoken, group_s, span, self._groups_per_word)
        # Rounding of the resampled length may shave a fraction of a sample off the end.
        timings = [
            WordTiming(t.text, min(t.start_s, duration), min(t.stop_s, duration)) for t in timings
        ]
        return Synthesis(audio, timings)


def _model_with_alignments(model_path: str) -> str | bytes:
    """The model with its phoneme-duration tensor as an extra output, serialised in memory
    (0.2-0.8 s): nothing is written next to the weights, which must keep their checked hash."""
    try:
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output
    except ImportError:
        log.warning("the onnx package is missing: word timings will be approximate")
        return model_path
    model = onnx.load(model_path)
    try:
        add_alignment_output(model)
    except ValueError as e:  # already patched, or no duration tensor: use the model as it is
        log.info("not patching %s for alignments: %s", model_path, e)
    return model.SerializeToString()
