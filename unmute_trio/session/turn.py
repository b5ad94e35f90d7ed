"""One bot turn: LLM words → TTS → paced audio and words → client writer.

A turn runs in its own cancel scope (owned by the session, cancelled on barge-in). Inside it:

```
turn scope
├── llm      stream whole words; report LlmWord / LlmDone; queue words for the TTS
├── tts      (once connected) send queued words, then Eos
└── playback receive TTS audio and words; release them on the playback clock
```

The LLM request starts at once, in parallel with the TTS connection (its words wait in a
bounded queue), so the two connection latencies overlap instead of adding up. The TTS
connection is retried (docs/architecture.md §5: 5 tries, 0.05 s backoff ×1.5 capped at 1 s) with a
``warning`` event after each failure; discovery inside each try falls through busy instances.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol

import numpy as np
import trio

from unmute_trio.conversation.events import (
    CustomVoiceMissing,
    Event,
    LlmDone,
    LlmToolCall,
    LlmWord,
    ServiceRetrying,
    StartTurn,
    TokenUsage,
    TtsWordSpoken,
    TurnAudioFinished,
)
from unmute_trio.errors import ServiceError
from unmute_trio.protocol.moshi import Audio, TextOut
from unmute_trio.protocol.ogg_opus import OpusPackets
from unmute_trio.protocol.openai_chat import ReplyOutcome
from unmute_trio.services.tts import TextToSpeech, TtsMessage
from unmute_trio.session import hops
from unmute_trio.session.context import LlmLink
from unmute_trio.session.links import ServiceLinks
from unmute_trio.session.pacer import PlaybackClock
from unmute_trio.session.writer import ClientWriter
from unmute_trio.settings import Settings
from unmute_trio.voice_store import CUSTOM_VOICE_PREFIX, VoiceStore, VoiceStoreUnavailable

log = logging.getLogger(__name__)

TTS_CONNECT_TRIES = 5
TTS_RETRY_FIRST_DELAY_S = 0.05
TTS_RETRY_BACKOFF = 1.5
TTS_RETRY_MAX_DELAY_S = 1.0
# Words from the LLM waiting for the TTS connection; a reply is rarely longer, and when it is,
# backpressure simply slows the LLM stream.
PENDING_WORDS = 256
# TTS messages received but not yet released by the pacer (~5 s of audio). The TTS runs faster
# than real time; past this, we stop reading and TCP backpressure holds the TTS back, so a long
# reply does not pile up in memory.
PLAYBACK_QUEUE = 64


class TurnHost(Protocol):
    """What a turn needs from its session."""

    settings: Settings
    llm: LlmLink
    links: ServiceLinks
    voice_store: VoiceStore
    writer: ClientWriter

    def dispatch(self, event: Event) -> None: ...

    @property
    def tts_opus(self) -> bool:
        """Whether the TTS is asked for Opus packets rather than PCM (the client's front)."""
        ...

    def tts_audio_arrived(self, num_samples: int) -> None: ...


async def run_turn(host: TurnHost, start: StartTurn) -> None:
    """Run a whole turn. ServiceErrors propagate to the caller (the session reports them)."""
    if not start.spec.speak:
        # A text reply: no TTS, and the machine ends the turn when the LLM is done.
        await _stream_llm(host, start, None)
        return
    words_send, words_receive = trio.open_memory_channel[str](PENDING_WORDS)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stream_llm, host, start, words_send)
        async with _connect_tts_with_retries(host, start) as tts:
            nursery.start_soon(_feed_tts, tts, words_receive)
            await _play(host, start.turn_id, tts)
    host.dispatch(TurnAudioFinished(start.turn_id))


async def _stream_llm(
    host: TurnHost, start: StartTurn, words_send: trio.MemorySendChannel[str] | None
) -> None:
    spec = start.spec
    outcome = ReplyOutcome()
    stream = host.llm.stream_words(
        start.messages,
        temperature=start.temperature,
        tools=spec.tools,
        tool_choice=spec.tool_choice,
        max_tokens=spec.max_tokens,
        outcome=outcome,
    )
    try:
        async with stream as words:
            async for word in words:
                host.dispatch(LlmWord(start.turn_id, word))
                if words_send is not None:
                    await words_send.send(word)
    finally:
        if words_send is not None:
            await words_send.aclose()  # the TTS gets its Eos once the words are sent
    for call in outcome.tool_calls:
        host.dispatch(LlmToolCall(start.turn_id, call.call_id, call.name, call.arguments))
    usage = None
    if outcome.prompt_tokens is not None and outcome.completion_tokens is not None:
        usage = TokenUsage(outcome.prompt_tokens, outcome.completion_tokens)
    host.dispatch(LlmDone(start.turn_id, outcome.finish_reason == "length", usage))


async def _feed_tts(tts: TextToSpeech, words: trio.MemoryReceiveChannel[str]) -> None:
    async with words:
        async for word in words:
            await tts.send_text(word)
    await tts.send_eos()


@asynccontextmanager
async def _connect_tts_with_retries(
    host: TurnHost, start: StartTurn
) -> AsyncIterator[TextToSpeech]:
    voice = start.voice
    custom = None
    if voice is not None and voice.startswith(CUSTOM_VOICE_PREFIX):
        custom = await _custom_voice(host, start.turn_id, voice)
    delay = TTS_RETRY_FIRST_DELAY_S
    async with AsyncExitStack() as stack:
        for attempt in range(1, TTS_CONNECT_TRIES + 1):
            try:
                tts = await stack.enter_async_context(
                    host.links.open_tts(voice, custom, opus=host.tts_opus)
                )
                break
            except ServiceError as e:
                if attempt == TTS_CONNECT_TRIES:
                    raise
                log.info("TTS try %d/%d failed (%s); retrying", attempt, TTS_CONNECT_TRIES, e)
                host.dispatch(ServiceRetrying(start.turn_id, "tts"))
                await trio.sleep(delay)
                delay = min(delay * TTS_RETRY_BACKOFF, TTS_RETRY_MAX_DELAY_S)
        yield tts


async def _custom_voice(host: TurnHost, turn_id: int, voice: str) -> bytes | None:
    """The cloned voice's message; None (the TTS's default voice, and a warning to the
    client) when it is unknown or the store cannot be reached. Looked up for every turn, so a
    voice expires mid-conversation as in the original, and a store that comes back is used
    again at once."""
    try:
        message = await host.voice_store.get(voice)
    except VoiceStoreUnavailable as e:
        log.warning("custom voice %s: %s; using the default voice", voice, e)
        host.dispatch(CustomVoiceMissing(turn_id, voice, store_unavailable=True))
        return None
    if message is None:
        host.dispatch(CustomVoiceMissing(turn_id, voice, store_unavailable=False))
    return message


async def _play(host: TurnHost, turn_id: int, tts: TextToSpeech) -> None:
    """Receive TTS output and release it on the playback clock until the TTS closes."""
    send, receive = trio.open_memory_channel[TtsMessage](PLAYBACK_QUEUE)

    async def receive_tts() -> None:
        async with send:
            while (message := await tts.receive()) is not None:
                if isinstance(message, Audio):
                    host.tts_audio_arrived(len(message.pcm))
                elif isinstance(message, OpusPackets):
                    host.tts_audio_arrived(message.samples)
                await hops.send(send, message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_tts)
        await _release(host, turn_id, receive)


async def _release(
    host: TurnHost, turn_id: int, messages: trio.MemoryReceiveChannel[TtsMessage]
) -> None:
    clock = PlaybackClock()

    def release_words() -> None:
        for word in clock.pop_due_words(trio.current_time()):
            host.dispatch(TtsWordSpoken(turn_id, word))

    async def sleep_releasing_words(until: float) -> None:
        # Words may fall due while we wait for the next frame's slot.
        while (due := clock.next_word_due()) is not None and due < until:
            await trio.sleep_until(due)
            release_words()
        await trio.sleep_until(until)
        release_words()

    async with messages:
        while True:
            try:
                message = await hops.receive(messages)
            except trio.EndOfChannel:
                break
            if isinstance(message, TextOut):
                clock.add_word(message.start_s, message.text)
                release_words()
                continue
            await sleep_releasing_words(clock.next_frame_due(trio.current_time()))
            if isinstance(message, OpusPackets):
                host.writer.send_audio(message, turn_id)
                clock.frame_released(trio.current_time(), message.samples)
            else:
                pcm: np.ndarray = message.pcm
                host.writer.send_audio(pcm, turn_id)
                clock.frame_released(trio.current_time(), len(pcm))
            release_words()
    # The TTS has closed: the words still waiting are released as playback reaches them.
    while (due := clock.next_word_due()) is not None:
        await trio.sleep_until(due)
        release_words()
