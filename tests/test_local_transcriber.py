"""The local STT's streaming rules (engines/transcriber.py), driven with made-up VAD
probabilities and transcriptions: plain synchronous tests, no model, no socket."""

from __future__ import annotations

import numpy as np
import pytest

from unmute_trio.engines.transcriber import (
    MAX_PENDING_MARKERS,
    DecodeJob,
    StreamingTranscriber,
    TranscriberPolicy,
    reads_finished,
)
from unmute_trio.protocol.moshi import SAMPLES_PER_FRAME, EndWord, Marker, Step, Word

PCM16_PER_FRAME = 1280  # 1920 samples at 24 kHz


class Driver:
    """Feeds frames whose VAD windows all have one probability; collects what comes out."""

    def __init__(self, policy: TranscriberPolicy | None = None) -> None:
        self.t = StreamingTranscriber(policy)
        self.out: list[Step | Word | EndWord | Marker] = []
        self._samples16 = 0

    def frames(self, n: int, prob: float) -> None:
        for _ in range(n):
            before = self._samples16 // 512
            self._samples16 += PCM16_PER_FRAME
            windows = self._samples16 // 512 - before
            self.t.note_received(SAMPLES_PER_FRAME)
            pcm = np.full(PCM16_PER_FRAME, 0.1 if prob > 0.5 else 0.0, dtype=np.float32)
            self.t.frame(np.full(windows, prob, dtype=np.float32), pcm)
            self.out += self.t.drain()

    def decode(self, text: str) -> DecodeJob:
        job = self.t.next_decode()
        assert job is not None
        self.t.decoded(job, text)
        self.out += self.t.drain()
        return job

    def steps(self) -> list[Step]:
        return [m for m in self.out if isinstance(m, Step)]

    def words(self) -> list[str]:
        return [m.text for m in self.out if isinstance(m, Word)]


def test_silence_gives_one_step_per_frame_and_no_words() -> None:
    d = Driver()
    d.frames(20, 0.01)
    steps = d.steps()
    assert [s.step_idx for s in steps] == list(range(20))
    assert all(s.prs[2] > 0.95 for s in steps)  # nothing said yet: "paused" on every head
    assert d.words() == []
    assert d.t.next_decode() is None


def test_interim_decodes_commit_only_words_two_decodes_agree_on() -> None:
    d = Driver()
    d.frames(3, 0.01)
    d.frames(10, 0.9)  # 0.8 s of speech
    d.decode("Hello there")  # first interim: nothing to agree with yet
    assert d.words() == []
    d.frames(10, 0.9)
    d.decode("Hello there, how are you doing")  # agrees on "Hello there,"
    assert d.words() == ["Hello", "there,"]
    d.frames(10, 0.9)
    d.decode("Hello there, who are")  # "how" changed: not committed
    assert d.words() == ["Hello", "there,"]


def test_interim_words_near_the_end_of_the_decoded_audio_wait() -> None:
    d = Driver()
    d.frames(10, 0.9)
    d.decode("What time does the")
    d.frames(10, 0.9)
    # Both decodes agree on all four words, but "the" lies in the last 0.4 s of the audio
    # decoded (where the audio may cut a word): it waits.
    d.decode("What time does the ph")
    assert d.words() == ["What", "time", "does"]


def test_final_decode_realigns_with_words_already_sent() -> None:
    d = Driver()
    d.frames(25, 0.9)
    d.decode("What time does the pharmacy close")
    d.frames(10, 0.9)
    d.decode("What time does the farm")  # "the" is agreed on and sent
    assert d.words() == ["What", "time", "does", "the"]
    d.frames(20, 0.01)
    # The final decode has no "the": cutting it by count would drop "pharmacy"; aligned on the
    # words it shares with what was sent, everything after "does" follows.
    d.decode("What time does pharmacy close tonight?")
    assert d.words() == ["What", "time", "does", "the", "pharmacy", "close", "tonight?"]


def test_final_decode_commits_the_rest_before_the_steps_it_holds() -> None:
    d = Driver()
    d.frames(3, 0.01)
    d.frames(12, 0.9)
    d.frames(30, 0.01)  # the segment closes after the hangover; later steps are held
    released = len(d.steps())
    assert released < 45
    d.decode("What is the capital of France?")
    assert d.words() == ["What", "is", "the", "capital", "of", "France?"]
    assert len(d.steps()) == 45  # everything released once the words are out
    # Words come before every Step whose audio ends 0.5 s after the segment's end.
    first_word = next(i for i, m in enumerate(d.out) if isinstance(m, Word))
    steps_before = [m for m in d.out[:first_word] if isinstance(m, Step)]
    assert steps_before == d.steps()[:released]
    last_step_time = (steps_before[-1].step_idx + 1) * 0.08
    assert last_step_time < (15 * 0.08) + 0.15 + 0.5 + 1e-9
    times = [m.start_time for m in d.out if isinstance(m, Word)]
    assert times == sorted(times)
    assert 0.2 <= times[0] and times[-1] < 15 * 0.08
    stops = [m.stop_time for m in d.out if isinstance(m, EndWord)]
    assert all(a <= b for a, b in zip(times, stops, strict=True))


def test_pause_heads_low_while_speaking_and_rise_past_half_their_horizon() -> None:
    d = Driver()
    d.frames(5, 0.01)
    d.frames(20, 0.9)
    speaking = d.steps()[-10:]
    assert all(s.prs[2] < 0.1 and s.prs[0] < 0.1 for s in speaking)
    d.frames(25, 0.01)  # 2 s of silence
    d.decode("Some words here")
    silent = d.steps()[25:]
    # prs[2] (2 s horizon) crosses 0.5 about 1 s after the last voiced window.
    crossing = next(i for i, s in enumerate(silent) if s.prs[2] > 0.5)
    assert 0.9 <= (crossing + 1) * 0.08 <= 1.2
    assert silent[-1].prs[2] > 0.9
    heads = silent[8].prs
    assert heads[0] > heads[1] > heads[2] > heads[3]  # shorter horizons fire first


def _pause_after(text: str) -> float:
    """Seconds of silence after the last voiced window until prs[2] passes the session's 0.6,
    with the segment's final decode answered as soon as it is asked for."""
    d = Driver()
    d.frames(5, 0.01)
    d.frames(20, 0.9)
    voiced = len(d.steps())
    for _ in range(40):
        d.frames(1, 0.01)
        if (job := d.t.next_decode()) is not None:  # an interim decode, then the final one
            d.t.decoded(job, text)
            d.out += d.t.drain()
    silent = d.steps()[voiced:]
    return next(i + 1 for i, s in enumerate(silent) if s.prs[2] > 0.6) * 0.08


@pytest.mark.parametrize("text", ["What is the capital of France?", "My name is John.", "Yes!"])
def test_a_finished_sentence_ends_the_turn_sooner(text: str) -> None:
    # The segment closes after the 0.3 s hangover; the next step after its final decode is
    # already past 0.6 (0.43 s of silence counted 2.5 times over).
    assert 0.3 < _pause_after(text) <= 0.5


@pytest.mark.parametrize(
    "text", ["I would like to know", "I need help with...", "Um.", "So.", "", "And then…"]
)
def test_an_unfinished_phrase_waits_the_whole_pause_curve(text: str) -> None:
    assert 1.0 <= _pause_after(text) <= 1.2


def test_reads_finished() -> None:
    assert reads_finished("Is it?") and reads_finished('He said "yes."')
    assert not reads_finished("Well.") and not reads_finished("wait..") and not reads_finished(" ")


def test_speech_after_a_finished_sentence_resets_the_pause_heads() -> None:
    d = Driver()
    d.frames(20, 0.9)
    d.frames(6, 0.01)
    d.decode("Tell me a joke.")
    d.frames(10, 0.9)  # the user goes on: the next pause waits the whole curve again
    before = len(d.steps())
    d.frames(12, 0.01)  # 0.96 s of silence, no decode of the new segment yet
    assert all(s.prs[2] < 0.6 for s in d.steps()[before:])


def test_marker_in_silence_is_echoed_half_a_second_later() -> None:
    d = Driver()
    d.frames(10, 0.01)
    d.t.add_marker(7)
    d.frames(10, 0.01)
    marker_at = next(i for i, m in enumerate(d.out) if isinstance(m, Marker))
    steps_before = [m for m in d.out[:marker_at] if isinstance(m, Step)]
    assert len(steps_before) == 10 + 7  # ceil(0.5 / 0.08) frames after the audio before it


def test_marker_during_speech_cuts_the_segment_and_waits_for_its_words() -> None:
    d = Driver()
    d.frames(3, 0.01)
    d.frames(10, 0.9)
    d.t.add_marker(1)
    d.frames(10, 0.9)  # still speaking: the segment is cut where the marker is
    assert not any(isinstance(m, Marker) for m in d.out)
    job = d.decode("I am still talking")
    assert job.final
    words_end = max(i for i, m in enumerate(d.out) if isinstance(m, Word | EndWord))
    marker_at = next(i for i, m in enumerate(d.out) if isinstance(m, Marker))
    assert marker_at > words_end
    assert d.words() == ["I", "am", "still", "talking"]


def test_a_failed_decode_loses_words_but_releases_the_steps() -> None:
    d = Driver()
    d.frames(12, 0.9)
    d.frames(20, 0.01)
    d.decode("")
    assert d.words() == []
    assert len(d.steps()) == 32


def test_long_speech_is_cut_into_bounded_segments() -> None:
    d = Driver(TranscriberPolicy(max_segment_s=2.0))
    d.frames(40, 0.9)  # 3.2 s without a pause
    job = d.t.next_decode()
    assert job is not None and job.final
    assert len(job.audio) / 16_000 <= 2.0 + 0.08 + 1e-9


def test_too_many_pending_markers_is_an_error() -> None:
    t = StreamingTranscriber()
    for i in range(MAX_PENDING_MARKERS):
        t.add_marker(i)
    with pytest.raises(OverflowError):
        t.add_marker(-1)


def test_speech_after_a_marker_is_not_cut_for_it() -> None:
    d = Driver()
    d.frames(5, 0.01)
    d.t.add_marker(3)
    d.frames(3, 0.01)
    d.frames(20, 0.9)  # the user starts talking after the marker
    job = d.t.next_decode()
    assert job is not None and not job.final  # an interim of the open segment, not a cut
    assert [m.id for m in d.out if isinstance(m, Marker)] == [3]
