"""Release bot audio and words on the playback clock (docs/services.md).

The TTS produces audio faster than real time. Audio frames (1920 samples of PCM, or the Opus
packets of one TTS message, usually as long) are released at most :data:`AUDIO_LEAD_S` (4
frames, 320 ms) ahead of playback, which keeps the browser's buffer
short (an interruption cuts the bot off quickly) while riding out network jitter. A word is
released when playback reaches its ``start_s`` — and never before the frame holding its start
has been sent — so the transcript follows the voice, and after an interruption holds exactly
the words whose audio reached the client.

Pure scheduling logic: the caller supplies times (``trio.current_time()`` in the turn runner).
"""

from __future__ import annotations

import collections

from unmute_trio.protocol.moshi import FRAME_TIME_S, SAMPLE_RATE, SAMPLES_PER_FRAME

AUDIO_LEAD_S = 4 * FRAME_TIME_S


class PlaybackClock:
    """Where playback of one bot turn is, given when its first frame was released."""

    def __init__(self, *, lead_s: float = AUDIO_LEAD_S, sample_rate: int = SAMPLE_RATE) -> None:
        self._lead_s = lead_s
        self._sample_rate = sample_rate
        self.started_at: float | None = None
        self.samples_released = 0
        self._words: collections.deque[tuple[float, str]] = collections.deque()

    @property
    def audio_released_s(self) -> float:
        return self.samples_released / self._sample_rate

    def next_frame_due(self, now: float) -> float:
        """When the next audio frame may be released (``now`` for the first frame)."""
        if self.started_at is None:
            return now
        return self.started_at + self.audio_released_s - self._lead_s

    def frame_released(self, now: float, samples: int = SAMPLES_PER_FRAME) -> None:
        """A frame of ``samples`` (at the clock's sample rate) was released at ``now``."""
        if self.started_at is None:
            self.started_at = now
        self.samples_released += samples

    def add_word(self, start_s: float, text: str) -> None:
        self._words.append((start_s, text))

    @property
    def has_words(self) -> bool:
        return bool(self._words)

    def next_word_due(self) -> float | None:
        """When the oldest waiting word may be released, or None if it must wait for audio."""
        if not self._words or self.started_at is None:
            return None
        start_s = self._words[0][0]
        if start_s >= self.audio_released_s:
            return None  # its audio has not been sent yet
        return self.started_at + start_s

    def pop_due_words(self, now: float) -> list[str]:
        released = []
        while self._words:
            due = self.next_word_due()
            if due is None or due > now:
                break
            released.append(self._words.popleft()[1])
        return released
