"""Cloned voices in Redis (``UNMUTE_REDIS_URL``), so that every replica can use a voice that any
replica cloned, and a restart loses none.

One key per voice, ``unmute-trio:voice:<uuid4>``, holding the raw ``Voice`` message, written
with ``SET … PX <ttl>``: Redis expires it, so no replica has to sweep. There is no count limit
as in the memory store; the TTL and Redis's own ``maxmemory`` bound it (docs/deployment.md).

Why the blocking client in threads: redis-py is the well-kept client, but its async client
needs asyncio and this server runs on trio. Voices are read once per bot turn that uses a
cloned voice and written once per upload, so a thread per call costs nothing that matters
(``bench/redis_voices.py``: a 320 KB GET through this store against redis-py called directly).
Bounded everywhere: at most ``max_connections`` calls run at once (a trio
``CapacityLimiter`` in front of a pool of that size, so no call waits inside the pool), each
socket operation has ``timeout_s``, and the caller waits at most ``timeout_s`` overall (a
thread still blocked on a dead socket is abandoned and ends by its own socket timeout, still
holding its slot of the limiter until then).

Failures: any Redis error or timeout raises :class:`VoiceStoreUnavailable` and counts in
``worker_voice_store_errors{operation}``. Nothing is cached: when Redis is back, the next call
works (redis-py reconnects; one retry covers a pooled connection that died with a restart).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import TypeVar

import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from unmute_trio import metrics
from unmute_trio.settings import redacted_url
from unmute_trio.voice_store import CUSTOM_VOICE_PREFIX, VoiceStoreUnavailable, new_voice_name

log = logging.getLogger(__name__)

KEY_PREFIX = "unmute-trio:voice:"

T = TypeVar("T")


def voice_key(name: str) -> str | None:
    """The Redis key of ``custom:<uuid4>``; None for any other name (never looked up)."""
    suffix = name.removeprefix(CUSTOM_VOICE_PREFIX)
    if suffix == name:
        return None
    try:
        return KEY_PREFIX + str(uuid.UUID(suffix))
    except ValueError:
        return None


class RedisVoiceStore:
    kind = "redis"

    def __init__(self, url: str, *, ttl_s: float, timeout_s: float, max_connections: int) -> None:
        self.where = redacted_url(url)
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._timeout_s = timeout_s
        self._limiter = trio.CapacityLimiter(max_connections)
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,  # waiting for a pooled connection (never, given the limiter)
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
        )
        self._client = redis.Redis(connection_pool=pool)

    async def add(self, voice_message: bytes) -> str:
        name = new_voice_name()
        key = voice_key(name)
        assert key is not None
        await self._call(
            "add", functools.partial(self._client.set, key, voice_message, px=self._ttl_ms)
        )
        return name

    async def get(self, name: str) -> bytes | None:
        key = voice_key(name)
        if key is None:
            return None
        value = await self._call("get", functools.partial(self._client.get, key))
        return value if isinstance(value, bytes) else None

    async def check(self) -> str | None:
        try:
            await self._call("check", self._client.ping)
        except VoiceStoreUnavailable as e:
            return str(e)
        return None

    async def aclose(self) -> None:
        # Closes the pool's idle sockets; a thread still abandoned on one ends by its timeout.
        await trio.to_thread.run_sync(self._client.close)

    async def _call(self, operation: str, call: Callable[[], T]) -> T:
        try:
            with trio.fail_after(self._timeout_s):
                return await trio.to_thread.run_sync(
                    call, limiter=self._limiter, abandon_on_cancel=True
                )
        except trio.TooSlowError:
            problem = f"Redis at {self.where} did not answer within {self._timeout_s:g} s"
        except redis.RedisError as e:
            problem = f"Redis at {self.where}: {e}"
        metrics.VOICE_STORE_ERRORS.labels(operation).inc()
        log.debug("voice store %s failed: %s", operation, problem)
        raise VoiceStoreUnavailable(problem)
