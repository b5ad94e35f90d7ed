"""Where cloned voices live: ``custom:<uuid4>`` → the raw ``Voice`` message (~320 KB) that the
TTS receives before the reply's text.

Two stores share one interface, :class:`VoiceStore`:

- :class:`MemoryVoiceStore` (the default): in this process. Entries expire after a TTL (1 hour
  by default, as the original promises its users) and at most ``max_entries`` voices are kept,
  the oldest evicted first, so uploads cannot grow memory without bound. With several workers or
  replicas, a session must then land on the process that took the upload.
- ``services/redis_voices.RedisVoiceStore`` when ``UNMUTE_REDIS_URL`` is set: every replica
  sees every voice, and a restart loses nothing (docs/deployment.md, "Many hosts").

A store that cannot be reached raises :class:`VoiceStoreUnavailable`: an upload then answers
503, and a session asking for the voice speaks with the default one and is warned.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

CUSTOM_VOICE_PREFIX = "custom:"


class VoiceStoreUnavailable(Exception):
    """The store could not be reached in time; ``str()`` says why, for logs and answers."""


class VoiceStore(Protocol):
    # "memory" or "redis", as /v1/health reports it.
    kind: str

    async def add(self, voice_message: bytes) -> str:
        """Keep a voice; returns its new name ``custom:<uuid4>``."""
        ...

    async def get(self, name: str) -> bytes | None:
        """The voice's message, or None if it is unknown or expired."""
        ...

    async def check(self) -> str | None:
        """None if the store works, else what is wrong (for /v1/health)."""
        ...

    async def aclose(self) -> None: ...


def new_voice_name() -> str:
    return CUSTOM_VOICE_PREFIX + str(uuid.uuid4())


class MemoryVoiceStore:
    kind = "memory"

    def __init__(self, *, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    async def add(self, voice_message: bytes) -> str:
        self._purge()
        name = new_voice_name()
        self._entries[name] = (voice_message, self._clock() + self._ttl_s)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return name

    async def get(self, name: str) -> bytes | None:
        entry = self._entries.get(name)
        if entry is None:
            return None
        message, expires_at = entry
        if self._clock() >= expires_at:
            del self._entries[name]
            return None
        return message

    async def check(self) -> str | None:
        return None

    async def aclose(self) -> None:
        pass

    def __len__(self) -> int:
        self._purge()
        return len(self._entries)

    def _purge(self) -> None:
        now = self._clock()
        # Insertion order is expiry order (constant TTL), so expired entries are at the front.
        while self._entries:
            name, (_, expires_at) = next(iter(self._entries.items()))
            if expires_at > now:
                break
            del self._entries[name]
