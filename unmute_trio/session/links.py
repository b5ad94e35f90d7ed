"""How a session reaches its speech services: the STT stream it holds for its whole life and
a TTS stream per bot turn.

:class:`NetworkLinks` is the real one (discovery, then moshi-server WebSockets). A session can
be given any other :class:`ServiceLinks`: ``testing.in_memory`` runs the simulators' models
in-process, over the same wire bytes but without sockets, so whole sessions run on trio's
virtual clock and tests can assert exact times. The LLM is reached through
``SessionContext.llm`` (any object with ``LLMClient``'s ``model`` and ``stream_words``).
"""

from __future__ import annotations

import functools
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from unmute_trio.services.discovery import open_service
from unmute_trio.services.stt import SpeechToText, connect_stt
from unmute_trio.services.tts import TextToSpeech, connect_tts
from unmute_trio.settings import Settings


class ServiceLinks(Protocol):
    def open_stt(self) -> AbstractAsyncContextManager[SpeechToText]:
        """One STT stream; ``ServiceError`` when no instance takes it."""
        ...

    def open_tts(
        self, voice: str | None, custom_voice_message: bytes | None, *, opus: bool = False
    ) -> AbstractAsyncContextManager[TextToSpeech]:
        """One TTS stream for one reply, in ``voice``, sending Opus packets (``opus``) or PCM;
        ``ServiceError`` when no instance takes it."""
        ...


class NetworkLinks:
    """The services of ``settings``, found by discovery (``services/discovery.py``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def open_stt(self) -> AbstractAsyncContextManager[SpeechToText]:
        s = self._settings
        return open_service(
            "stt",
            s.stt_url,
            functools.partial(connect_stt, api_key=s.kyutai_api_key),
            attempt_timeout_s=s.service_connect_timeout_s,
        )

    def open_tts(
        self, voice: str | None, custom_voice_message: bytes | None, *, opus: bool = False
    ) -> AbstractAsyncContextManager[TextToSpeech]:
        s = self._settings
        connect = functools.partial(
            connect_tts,
            voice=voice,
            custom_voice_message=custom_voice_message,
            api_key=s.kyutai_api_key,
            opus=opus,
        )
        return open_service(
            "tts", s.tts_url, connect, attempt_timeout_s=s.service_connect_timeout_s
        )
