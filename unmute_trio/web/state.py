"""What the routes share within one process: settings, voices, HTTP client, health, sessions."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Protocol

import httpx

from unmute_trio.protocol.dialects import Dialect
from unmute_trio.services.health import HealthChecker
from unmute_trio.services.llm import LLMClient
from unmute_trio.services.news import NewsClient
from unmute_trio.settings import Settings
from unmute_trio.voice_store import VoiceStore
from unmute_trio.voices import VoiceSample
from unmute_trio.web.drain import Drain


class RealtimeSocket(Protocol):
    """The client WebSocket as the session engine sees it (one per session).

    ``receive`` returns a text frame as ``str`` and a binary frame as ``bytes``; when the client
    goes away the calling task is cancelled (that is how Quart-Trio reports a disconnect).
    """

    async def receive(self) -> str | bytes: ...

    async def send(self, text: str) -> None: ...

    async def close(self, code: int, reason: str = "") -> None: ...


# The session engine: runs one accepted session to its end. The seam between the web layer and
# the conversation engine; tests and later issues plug different runners in here.
# The third argument is the protocol the client speaks (protocol/dialects.py).
SessionRunner = Callable[[RealtimeSocket, "AppState", Dialect], Awaitable[None]]


@dataclasses.dataclass
class AppState:
    settings: Settings
    voices: list[VoiceSample]
    voice_store: VoiceStore
    run_session: SessionRunner
    http: httpx.AsyncClient | None = None
    health: HealthChecker | None = None
    llm: LLMClient | None = None
    news: NewsClient | None = None
    active_sessions: int = 0
    # Set when the server shuts down gracefully (web/drain.py); sessions watch it.
    drain: Drain = dataclasses.field(default_factory=Drain)
