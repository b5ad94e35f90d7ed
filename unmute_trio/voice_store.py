"""In-process store of cloned voices: ``custom:<uuid4>`` → the raw ``Voice`` message.

Entries expire after a TTL (1 hour by default, as the original promises its users) and the store
holds at most ``max_entries`` voices (each ~320 KB), evicting the oldest first, so uploads cannot
grow memory without bound. Like the original without Redis, the store is per process: with several
workers or replicas, a session must land on the process that took the upload (see
docs/deployment.md).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable

CUSTOM_VOICE_PREFIX = "custom:"


class VoiceStore:
    def __init__(self, *, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def add(self, voice_message: bytes) -> str:
        self._purge()
        name = CUSTOM_VOICE_PREFIX + str(uuid.uuid4())
        self._entries[name] = (voice_message, self._clock() + self._ttl_s)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return name

    def get(self, name: str) -> bytes | None:
        entry = self._entries.get(name)
        if entry is None:
            return None
        message, expires_at = entry
        if self._clock() >= expires_at:
            del self._entries[name]
            return None
        return message

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
