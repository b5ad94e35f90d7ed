"""What the routes share within one process: settings, voices, HTTP client, health, sessions."""

from __future__ import annotations

import dataclasses

import httpx

from unmute_trio.services.health import HealthChecker
from unmute_trio.services.llm import LLMClient
from unmute_trio.services.news import NewsClient
from unmute_trio.session.context import RealtimeSocket, SessionContext, SessionRunner
from unmute_trio.session.drain import Drain
from unmute_trio.settings import Settings
from unmute_trio.voice_store import VoiceStore
from unmute_trio.voices import VoiceSample

__all__ = ["AppState", "RealtimeSocket", "SessionContext", "SessionRunner"]


@dataclasses.dataclass
class AppState:
    """The process-wide state; a session sees it as a ``SessionContext``."""

    settings: Settings
    voices: list[VoiceSample]
    voice_store: VoiceStore
    run_session: SessionRunner
    http: httpx.AsyncClient | None = None
    health: HealthChecker | None = None
    llm: LLMClient | None = None
    news: NewsClient | None = None
    # Set when the server shuts down gracefully (web/drain.py); sessions watch it. It also
    # counts the sessions running (``drain.sessions``), the one count of them.
    drain: Drain = dataclasses.field(default_factory=Drain)

    @property
    def active_sessions(self) -> int:
        return self.drain.sessions.count
