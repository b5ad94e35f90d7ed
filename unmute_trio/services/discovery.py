"""Finding a service instance with a free slot (docs/services.md).

moshi-server instances have a fixed number of slots and say so only when one connects
(``Error("no free channels")``). :func:`open_service` therefore resolves the service's host
name to all its addresses (IPv4 and IPv6; Docker Swarm's ``tasks.<service>`` name has one
address per replica, which gives client-side load balancing), shuffles them, and tries up to
``max_attempts`` of them in turn, each with its own connect + handshake deadline::

    connect = functools.partial(connect_stt, api_key=settings.kyutai_api_key)
    async with open_service("stt", settings.stt_url, connect) as stt:
        ...

``connect(url, address=..., handshake_timeout_s=...)`` must return an async context manager
that dials ``address`` for ``url`` and enforces the deadline itself, raising ``ServiceTimeout``:
its connection owns a nursery, and a nursery opened inside a timeout scope would have to close
before that scope ends, so the deadline cannot be imposed from out here. ``connect_stt`` and
``connect_tts`` qualify. A connection that succeeds stays open for the body of the ``async
with``; every failed attempt has closed its socket before the next one starts.

Outcome of an attempt:
- ``ServiceAtCapacity``: observe ``worker_<svc>_ping_time``; try the next address.
- any other ``ServiceError`` (timeout, refused, protocol): count ``worker_hard_service_misses``
  and the per-service hard-miss counter; try the next address.
- success: observe ``worker_<svc>_ping_time`` (this attempt) and ``worker_<svc>_find_time``
  (the whole search, resolution included).
When no attempt succeeds, ``worker_service_misses`` and the per-service miss counter are
counted and the search raises the ``ServiceAtCapacity`` of an at-capacity attempt if there was
one (the user is told to come back later), else the last attempt's error. Anything that is not a
``ServiceError`` (a bug, a cancellation) propagates at once.

Resolution is not cached: it runs in a worker thread (``trio.socket.getaddrinfo``; IP literals
are answered without one), costs well under a millisecond against a local resolver, and a
cache would hide replicas that came or went.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import trio

from unmute_trio import metrics
from unmute_trio.errors import ServiceAtCapacity, ServiceDisconnected, ServiceError, ServiceTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

DEFAULT_ATTEMPT_TIMEOUT_S = 0.5
DEFAULT_MAX_ATTEMPTS = 3
# A resolver that does not answer within this long is as good as down.
DEFAULT_RESOLVE_TIMEOUT_S = 2.0

Resolver = Callable[[str, int], Awaitable[list[str]]]


class ServiceConnector(Protocol[T_co]):
    def __call__(
        self, url: str, *, address: str | None, handshake_timeout_s: float
    ) -> AbstractAsyncContextManager[T_co]: ...


async def resolve_addresses(host: str, port: int) -> list[str]:
    """All IPv4 and IPv6 addresses of ``host``, in resolver order, without duplicates.

    Raises ``OSError`` (``socket.gaierror``) when the name does not resolve.
    """
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def url_host_port(url: str) -> tuple[str, int]:
    """Host name and port of a ``ws://`` / ``wss://`` (or http) service URL."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"service URL without a host: {url!r}")
    secure = parts.scheme in ("wss", "https")
    return parts.hostname, parts.port or (443 if secure else 80)


@asynccontextmanager
async def open_service(
    service: str,
    url: str,
    connect: ServiceConnector[T],
    *,
    attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S,
    resolve: Resolver = resolve_addresses,
    shuffle: Callable[[list[str]], None] = random.shuffle,
) -> AsyncIterator[T]:
    """Connect to an instance of ``service`` with a free slot; see the module docstring.

    ``resolve`` and ``shuffle`` exist for tests (fixed addresses, fixed order).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    search_started = trio.current_time()
    addresses = await _resolve(service, url, resolve, resolve_timeout_s)
    shuffle(addresses)
    at_capacity: ServiceAtCapacity | None = None
    last_error: ServiceError | None = None
    async with AsyncExitStack() as stack:
        for address in addresses[:max_attempts]:
            attempt_started = trio.current_time()
            try:
                client = await stack.enter_async_context(
                    connect(url, address=address, handshake_timeout_s=attempt_timeout_s)
                )
            except ServiceAtCapacity as e:
                _ping_time(service, trio.current_time() - attempt_started)
                log.info("%s at %s is at capacity", service, address)
                at_capacity = last_error = e
                continue
            except ServiceError as e:
                metrics.HARD_SERVICE_MISSES.inc()
                if service in metrics.HARD_MISSES_BY_SERVICE:
                    metrics.HARD_MISSES_BY_SERVICE[service].inc()
                log.warning("%s at %s failed: %s", service, address, e)
                last_error = e
                continue
            now = trio.current_time()
            _ping_time(service, now - attempt_started)
            if service in metrics.FIND_TIME_BY_SERVICE:
                metrics.FIND_TIME_BY_SERVICE[service].observe(now - search_started)
            break
        else:
            _count_miss(service)
            assert last_error is not None  # at least one address was tried
            raise at_capacity or last_error
        yield client


async def _resolve(service: str, url: str, resolve: Resolver, timeout_s: float) -> list[str]:
    host, port = url_host_port(url)
    try:
        with trio.fail_after(timeout_s):
            addresses = await resolve(host, port)
    except trio.TooSlowError:
        _count_miss(service)
        raise ServiceTimeout(service, f"resolving {host!r} took over {timeout_s:g} s") from None
    except OSError as e:
        _count_miss(service)
        raise ServiceDisconnected(service, f"cannot resolve {host!r}: {e}") from e
    if not addresses:
        _count_miss(service)
        raise ServiceDisconnected(service, f"{host!r} resolved to no address")
    return list(addresses)


def _ping_time(service: str, seconds: float) -> None:
    if service in metrics.PING_TIME_BY_SERVICE:
        metrics.PING_TIME_BY_SERVICE[service].observe(seconds)


def _count_miss(service: str) -> None:
    metrics.SERVICE_MISSES.inc()
    if service in metrics.MISSES_BY_SERVICE:
        metrics.MISSES_BY_SERVICE[service].inc()
