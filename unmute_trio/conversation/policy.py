"""Every number that shapes turn-taking, in one place (docs/architecture.md §5).

The machine never reads a clock: "now" is the amount of microphone audio received so far
(samples ÷ sample rate), and the STT's own clock arrives inside ``SttStep`` events. So every
duration below is measured in seconds of audio, not wall time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from unmute_trio.protocol.moshi import FRAME_TIME_S, SAMPLE_RATE, STT_DELAY_S


@dataclass(frozen=True)
class TurnTakingPolicy:
    """Turn-taking constants. The defaults are the original's values."""

    sample_rate: int = SAMPLE_RATE
    """Samples per second of the microphone audio counted by ``AudioReceived``."""

    pause_threshold: float = 0.6
    """The user's turn is over once the STT's pause prediction rises above this."""

    vad_interrupt_threshold: float = 0.4
    """While the bot speaks, a pause prediction below this means the user talks over it."""

    uninterruptible_by_vad_s: float = 3.0
    """No VAD barge-in during the first seconds of a session: echo cancellation in some
    browsers needs a moment, and until then the STT hears the bot itself. A transcribed word
    can still interrupt."""

    user_silence_timeout_s: float = 7.0
    """After this long waiting for the user, a silence marker is sent as their message."""

    stt_delay_s: float = STT_DELAY_S
    """How far the STT's text lags behind its audio; also the length of the flush."""

    stt_frame_s: float = FRAME_TIME_S
    """Duration of one STT step (one frame of 1920 samples)."""

    first_reply_temperature: float = 0.7
    """LLM temperature of the first assistant message (a varied greeting)."""

    later_reply_temperature: float = 0.3
    """LLM temperature of every later assistant message."""

    goodbye_close_delay_s: float = 1.0
    """After a reply that ends with "bye!", close the session this much later, so the last
    audio frames reach the browser."""

    status_interval_s: float = 1.0
    """``unmute.additional_outputs`` status updates: at most one per this much received audio
    (besides the one sent at each turn end)."""

    @property
    def flush_frames(self) -> int:
        """Frames of silence pushed to the STT to make it emit the last words at once.

        One delay's worth of frames plus one for safety: ceil(0.5 / 0.08) + 1 = 8.
        """
        return math.ceil(self.stt_delay_s / self.stt_frame_s) + 1

    @property
    def initial_stt_time(self) -> float:
        """The STT clock before its first step: it starts one delay in the past."""
        return -self.stt_delay_s
