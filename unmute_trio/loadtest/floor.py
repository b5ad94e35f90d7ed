"""The latency the simulated services add by design, so a load test can tell it apart from the
latency the backend adds.

Against ``unmute-trio sim`` the voice-to-voice latency of a reply (end of the user's audio →
first bot audio frame) is the sum of

1. the **pause-detection delay** of the simulated STT: its deterministic model only reports a
   pause once enough silence has followed the speech, and the server only notices it on the next
   microphone page it receives;
2. the **LLM and TTS lead time**: the simulated LLM's time to first token plus one token gap per
   token until the server has completed enough whole words for the simulated TTS to speak the
   first one (the TTS waits for ``lookahead_words`` more words);
3. everything else: sockets, queues, the server's own work, and the simulators' CPU time.

Items 1 and 2 are computed here exactly, by replaying the same pure models the simulators and
the server run (:class:`~unmute_trio.testing.speech.SimulatedAsr`,
:class:`~unmute_trio.conversation.pause.PausePredictor`,
:func:`~unmute_trio.testing.llm_sim.split_tokens`,
:class:`~unmute_trio.protocol.words.WordChunker`) on the audio and reply of the turn. Item 3 is
the **backend-added latency**: ``voice_to_voice - floor``. It is an upper bound of the server's
own contribution, since it also holds loopback hops and the simulators' processing.

Timeline conventions (the load generator follows them): microphone page ``j`` (samples
``[960 j, 960 (j+1))`` of the stream) is sent at ``t0 + 0.04 j``; a clip starts on a
1920-sample frame boundary and lasts a whole number of frames; "end of user audio" is the
clip's start plus its duration.
"""

from __future__ import annotations

import dataclasses
import math

import sphn

from unmute_trio.conversation.pause import PausePredictor
from unmute_trio.conversation.policy import TurnTakingPolicy
from unmute_trio.loadtest.microphone import PAGE_S, PAGE_SAMPLES, EncodedMicrophone, OggStream
from unmute_trio.protocol.moshi import SAMPLE_RATE, SAMPLES_PER_FRAME, Step, Word
from unmute_trio.protocol.words import WordChunker
from unmute_trio.testing.llm_sim import LlmSimConfig, split_tokens
from unmute_trio.testing.speech import EnergyDetector, SimulatedAsr
from unmute_trio.testing.stt_sim import SttSimConfig
from unmute_trio.testing.tts_sim import TtsSimConfig

# Silence before the clip in the replay: more than the pause predictor's 12-step warm-up, and
# long enough for the Opus encoder to settle as it has in a real stream.
_LEAD_FRAMES = 20
# Silence after the clip in the replay: the simulated STT reports a pause well within this.
_TAIL_S = 4.0


@dataclasses.dataclass(frozen=True)
class SimulatorLatencies:
    """What the simulators were configured with (defaults: ``unmute-trio sim``'s)."""

    llm_ttft_s: float = LlmSimConfig().ttft_s
    llm_tokens_per_s: float = LlmSimConfig().tokens_per_s
    tts_lookahead_words: int = TtsSimConfig().lookahead_words
    stt_word_pace_s: float = SttSimConfig().word_pace_s
    stt_energy_threshold_rms: float = SttSimConfig().energy_threshold_rms

    def reply_floor(self, reply_text: str) -> float:
        return llm_tts_floor(
            reply_text,
            ttft_s=self.llm_ttft_s,
            tokens_per_s=self.llm_tokens_per_s,
            lookahead_words=self.tts_lookahead_words,
        )


def frame_aligned_length(seconds: float) -> int:
    """Samples in a clip of about ``seconds``, rounded up to whole 1920-sample frames."""
    frames = max(1, math.ceil(round(seconds * SAMPLE_RATE) / SAMPLES_PER_FRAME))
    return frames * SAMPLES_PER_FRAME


def pause_detection_delay(
    microphone: EncodedMicrophone, utterance: int, latencies: SimulatorLatencies | None = None
) -> float:
    """Seconds from the end of utterance number ``utterance`` to the moment the server can first
    see the simulated STT's pause, if every hop took no time.

    The utterance must be a whole number of frames and start on a frame boundary of the stream.
    Raises ``ValueError`` if the replay never detects a pause (the utterance is not speech).
    """
    pages = microphone.utterances[utterance]
    if len(pages) % (SAMPLES_PER_FRAME // PAGE_SAMPLES):
        raise ValueError("the utterance must be a whole number of 1920-sample frames")
    latencies = latencies or SimulatorLatencies()
    lead_pages = _LEAD_FRAMES * SAMPLES_PER_FRAME // PAGE_SAMPLES
    tail_pages = round(_TAIL_S / PAGE_S)
    sources: list[bytes | None] = [None] * lead_pages + list(pages) + [None] * tail_pages
    clip_end_s = (lead_pages + len(pages)) * PAGE_S
    threshold = TurnTakingPolicy().pause_threshold

    # What the server's STT stream holds: this client's Ogg pages, decoded.
    stream = OggStream(microphone)
    decoder = sphn.OpusStreamReader(SAMPLE_RATE)
    asr = SimulatedAsr(
        word_pace_s=latencies.stt_word_pace_s,
        detector=EnergyDetector(latencies.stt_energy_threshold_rms),
    )
    predictor = PausePredictor()
    user_speaking = False
    for index, source in enumerate(sources):
        # The machine checks the pause when a page arrives, with the steps of earlier pages.
        if user_speaking and predictor.value > threshold:
            return index * PAGE_S - clip_end_s
        asr.push_pcm(decoder.append_bytes(stream.next_page(source)))
        while asr.has_frame():
            for message in asr.step():
                if isinstance(message, Step):
                    predictor.update(message.prs)
                elif isinstance(message, Word) and message.text.strip() and not user_speaking:
                    user_speaking = True  # the first word opens the user turn...
                    predictor.reset()  # ...and resets the prediction, as the session does
    raise ValueError("the simulated STT never detected a pause after this utterance")


def llm_tts_floor(
    reply_text: str, *, ttft_s: float, tokens_per_s: float, lookahead_words: int
) -> float:
    """Seconds from the LLM request to the simulated TTS's first audio frame for this reply.

    The simulated LLM streams :func:`split_tokens` pieces, the first after ``ttft_s`` and then
    one every ``1 / tokens_per_s``; the server passes a word on once the whitespace after it has
    arrived (:class:`WordChunker`); the simulated TTS speaks its first word once
    ``lookahead_words`` more words are queued, or at the end of the reply.
    """
    gap_s = 0.0 if math.isinf(tokens_per_s) else 1.0 / tokens_per_s
    tokens = split_tokens(reply_text)
    chunker = WordChunker()
    words_needed = lookahead_words + 1
    words = 0
    for index, token in enumerate(tokens):
        words += sum(len(w.split()) for w in chunker.feed(token))
        if words >= words_needed:
            return ttft_s + index * gap_s
    # Fewer words than the lookahead: the end of the reply releases them (no gap after the last
    # token: the stop chunk and [DONE] follow it at once).
    return ttft_s + max(0, len(tokens) - 1) * gap_s
