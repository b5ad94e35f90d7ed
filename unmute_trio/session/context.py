"""What a session gets from the process that runs it: its client's socket, and a narrow view of
the process-wide state. The web layer provides both (``web/realtime.py``'s socket over ASGI,
``web/state.AppState``, which has these attributes); tests may provide their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import trio

from unmute_trio.protocol.dialects import Dialect
from unmute_trio.protocol.openai_chat import ReplyOutcome
from unmute_trio.services.news import NewsClient
from unmute_trio.session.drain import Drain
from unmute_trio.settings import Settings
from unmute_trio.voice_store import VoiceStore
from unmute_trio.voices import VoiceSample


class RealtimeSocket(Protocol):
    """The client WebSocket as the session engine sees it (one per session).

    ``receive`` returns a text frame as ``str`` and a binary frame as ``bytes``; when the client
    goes away the session is cancelled (``web/realtime.AsgiRealtimeSocket`` cancels the scope the
    session runs in).
    """

    @property
    def query(self) -> Mapping[str, str]:
        """The query parameters of the URL the client opened (``model`` for OpenAI clients)."""
        ...

    async def receive(self) -> str | bytes: ...

    async def send(self, text: str) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...


class LlmLink(Protocol):
    """The LLM as a session uses it: ``services.llm.LLMClient``, or a test's stand-in."""

    @property
    def known_model(self) -> str | None: ...

    async def model(self) -> str: ...

    def stream_words(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        max_tokens: int | None = None,
        outcome: ReplyOutcome | None = None,
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[str]]: ...


class SessionContext(Protocol):
    """The process-wide state a session reads (read-only here)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def voices(self) -> Sequence[VoiceSample]: ...

    @property
    def voice_store(self) -> VoiceStore: ...

    @property
    def llm(self) -> LlmLink | None: ...

    @property
    def news(self) -> NewsClient | None: ...

    @property
    def drain(self) -> Drain: ...


# Runs one accepted session to its end: the seam between the web layer and the conversation
# engine (tests plug other runners in). The third argument is the protocol the client speaks.
SessionRunner = Callable[[RealtimeSocket, SessionContext, Dialect], Awaitable[None]]
