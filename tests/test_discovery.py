"""Service discovery against several simulator instances over real loopback sockets.

Several instances of one service listen on the same port at different loopback addresses
(127.0.0.1, 127.0.0.2, ::1), and a host name resolves to all of them, as Docker Swarm's
``tasks.<service>`` does. The name is served by a trio custom hostname resolver, so the real
resolution path (``trio.socket.getaddrinfo``) is exercised.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio
from prometheus_client import REGISTRY

from unmute_trio.errors import (
    ServiceAtCapacity,
    ServiceDisconnected,
    ServiceTimeout,
)
from unmute_trio.protocol.moshi import Audio, Step
from unmute_trio.services.discovery import open_service, resolve_addresses, url_host_port
from unmute_trio.services.stt import SpeechToText, connect_stt
from unmute_trio.services.tts import connect_tts
from unmute_trio.testing.stt_sim import SttSimConfig, SttSimulator
from unmute_trio.testing.tts_sim import TtsSimConfig, TtsSimulator


class FakeDns(trio.abc.HostnameResolver):
    """Answers getaddrinfo for a few names with fixed addresses (v4 and v6)."""

    def __init__(self, names: dict[str, Sequence[str]]) -> None:
        self.names = names
        self.queries: list[str] = []

    async def getaddrinfo(  # type: ignore[override]
        self, host: bytes | str | None, port: Any, family: int = 0, type: int = 0, *args: Any
    ) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.queries.append(name)
        if name not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        infos: list[tuple[Any, ...]] = []
        for address in self.names[name]:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


def install_dns(names: dict[str, Sequence[str]]) -> FakeDns:
    dns = FakeDns(names)
    trio.socket.set_custom_hostname_resolver(dns)  # per trio run: no clean-up needed
    return dns


def keep_order(addresses: list[str]) -> None:
    """A ``shuffle`` that does nothing, so tests choose the order of attempts."""


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 1.0) -> None:
    with trio.fail_after(timeout_s):
        # Polling: the simulator's connection count has no event to wait on.
        while not predicate():
            await trio.sleep(0.005)


async def stt_instances(
    nursery: trio.Nursery, *configs: tuple[str, SttSimConfig]
) -> tuple[list[SttSimulator], int]:
    """One simulator per (address, config), all on the same port."""
    sims: list[SttSimulator] = []
    port = 0
    for host, config in configs:
        sim = SttSimulator(config)
        port = await nursery.start(sim.serve, host, port)
        sims.append(sim)
    return sims, port


async def assert_streams(stt: SpeechToText) -> None:
    await stt.send_silence_frames(1)
    with trio.fail_after(1):
        assert isinstance(await stt.receive(), Step)


async def test_falls_through_from_a_full_instance_to_a_free_one(nursery: trio.Nursery) -> None:
    (full, free), port = await stt_instances(
        nursery, ("127.0.0.1", SttSimConfig(capacity=0)), ("127.0.0.2", SttSimConfig())
    )
    dns = install_dns({"tasks.stt": ["127.0.0.1", "127.0.0.2"]})
    ping_before = sample("worker_stt_ping_time_count")
    find_before = sample("worker_stt_find_time_count")
    hard_before = sample("worker_hard_service_misses_total")
    async with open_service(
        "stt", f"ws://tasks.stt:{port}", connect_stt, shuffle=keep_order
    ) as stt:
        await assert_streams(stt)
        assert full.connections_log[-1].at_capacity
        assert free.open_connections == 1
    assert dns.queries == ["tasks.stt"]
    assert sample("worker_stt_ping_time_count") - ping_before == 2  # capacity answer + success
    assert sample("worker_stt_find_time_count") - find_before == 1
    assert sample("worker_hard_service_misses_total") == hard_before  # capacity is no hard miss
    await wait_until(lambda: full.open_connections == free.open_connections == 0)


async def test_ipv4_and_ipv6_addresses_of_one_name(nursery: trio.Nursery) -> None:
    (_full, free), port = await stt_instances(
        nursery, ("127.0.0.1", SttSimConfig(capacity=0)), ("::1", SttSimConfig())
    )
    install_dns({"tasks.stt": ["127.0.0.1", "::1"]})
    assert await resolve_addresses("tasks.stt", port) == ["127.0.0.1", "::1"]
    async with open_service(
        "stt", f"ws://tasks.stt:{port}", connect_stt, shuffle=keep_order
    ) as stt:
        await assert_streams(stt)
        assert free.open_connections == 1


async def test_every_instance_full_raises_at_capacity(nursery: trio.Nursery) -> None:
    sims, port = await stt_instances(
        nursery,
        ("127.0.0.1", SttSimConfig(capacity=0)),
        ("127.0.0.2", SttSimConfig(capacity=0)),
    )
    install_dns({"tasks.stt": ["127.0.0.1", "127.0.0.2"]})
    misses_before = sample("worker_service_misses_total")
    stt_misses_before = sample("worker_stt_misses_total")
    with pytest.raises(ServiceAtCapacity) as info:
        async with open_service("stt", f"ws://tasks.stt:{port}", connect_stt):
            pytest.fail("no instance had a free slot")
    assert info.value.service == "stt"
    assert all(sim.connections_log[-1].at_capacity for sim in sims)
    assert sample("worker_service_misses_total") - misses_before == 1
    assert sample("worker_stt_misses_total") - stt_misses_before == 1


async def test_a_slow_instance_is_closed_and_the_next_one_used(nursery: trio.Nursery) -> None:
    (slow, fine), port = await stt_instances(
        nursery,
        ("127.0.0.1", SttSimConfig(handshake_delay_s=30.0)),
        ("127.0.0.2", SttSimConfig()),
    )
    install_dns({"tasks.stt": ["127.0.0.1", "127.0.0.2"]})
    hard_before = sample("worker_hard_service_misses_total")
    stt_hard_before = sample("worker_stt_hard_misses_total")
    async with open_service(
        "stt", f"ws://tasks.stt:{port}", connect_stt, attempt_timeout_s=0.2, shuffle=keep_order
    ) as stt:
        await assert_streams(stt)
        await wait_until(lambda: slow.open_connections == 0)  # the timed-out attempt is closed
        assert fine.open_connections == 1
    assert sample("worker_hard_service_misses_total") - hard_before == 1
    assert sample("worker_stt_hard_misses_total") - stt_hard_before == 1


async def test_capacity_is_reported_over_a_later_timeout(nursery: trio.Nursery) -> None:
    (full, slow), port = await stt_instances(
        nursery,
        ("127.0.0.1", SttSimConfig(capacity=0)),
        ("127.0.0.2", SttSimConfig(handshake_delay_s=30.0)),
    )
    install_dns({"tasks.stt": ["127.0.0.1", "127.0.0.2"]})
    with pytest.raises(ServiceAtCapacity):
        async with open_service(
            "stt", f"ws://tasks.stt:{port}", connect_stt, attempt_timeout_s=0.2, shuffle=keep_order
        ):
            pytest.fail("no instance was usable")
    await wait_until(lambda: full.open_connections == slow.open_connections == 0)


async def test_timeouts_only_raise_a_timeout(nursery: trio.Nursery) -> None:
    (slow,), port = await stt_instances(
        nursery, ("127.0.0.1", SttSimConfig(handshake_delay_s=30.0))
    )
    with pytest.raises(ServiceTimeout):
        async with open_service(
            "stt", f"ws://127.0.0.1:{port}", connect_stt, attempt_timeout_s=0.2
        ):
            pytest.fail("no Ready")
    await wait_until(lambda: slow.open_connections == 0)


async def test_at_most_max_attempts_addresses_are_tried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]
    install_dns({"tasks.stt": addresses})
    tried: list[str | None] = []

    def connect(url: str, **kwargs: Any) -> AbstractAsyncContextManager[SpeechToText]:
        tried.append(kwargs["address"])
        return connect_stt(url, **kwargs)

    with pytest.raises(ServiceDisconnected):
        async with open_service("stt", f"ws://tasks.stt:{closed_port}", connect):
            pytest.fail("nothing listens")
    assert len(tried) == 3
    assert len(set(tried)) == 3 and set(tried) <= set(addresses)


async def test_resolution_failures() -> None:
    install_dns({})
    with pytest.raises(ServiceDisconnected) as info:
        async with open_service("stt", "ws://tasks.nothing:8080", connect_stt):
            pytest.fail("the name does not resolve")
    assert info.value.service == "stt"

    async def hanging_resolver(host: str, port: int) -> list[str]:
        await trio.sleep_forever()
        raise AssertionError

    with pytest.raises(ServiceTimeout):
        async with open_service(
            "stt", "ws://stt:8080", connect_stt, resolve=hanging_resolver, resolve_timeout_s=0.05
        ):
            pytest.fail("the resolver never answers")


async def test_errors_in_the_body_are_not_retried(nursery: trio.Nursery) -> None:
    (sim,), port = await stt_instances(nursery, ("127.0.0.1", SttSimConfig()))
    with pytest.raises(ServiceDisconnected):
        async with open_service("stt", f"ws://127.0.0.1:{port}", connect_stt):
            raise ServiceDisconnected("stt", "lost while streaming")
    assert len(sim.connections_log) == 1
    await wait_until(lambda: sim.open_connections == 0)


async def test_cancellation_during_the_search_closes_everything(nursery: trio.Nursery) -> None:
    (slow,), port = await stt_instances(
        nursery, ("127.0.0.1", SttSimConfig(handshake_delay_s=30.0))
    )
    with trio.move_on_after(0.1) as scope:
        async with open_service(
            "stt", f"ws://127.0.0.1:{port}", connect_stt, attempt_timeout_s=10.0
        ):
            pytest.fail("no Ready")
    assert scope.cancelled_caught
    await wait_until(lambda: slow.open_connections == 0)


async def test_tts_through_discovery_with_the_real_resolver(nursery: trio.Nursery) -> None:
    sim = TtsSimulator(TtsSimConfig(realtime_factor=0.0))
    port = await nursery.start(sim.serve)
    connect = functools.partial(connect_tts, voice="v.wav", api_key="public_token")
    async with open_service("tts", f"ws://localhost:{port}", connect) as tts:
        await tts.send_text("Hello")
        await tts.send_eos()
        messages = []
        with trio.fail_after(1):
            while (message := await tts.receive()) is not None:
                messages.append(message)
        assert any(isinstance(m, Audio) for m in messages)
    assert sim.connections_log[-1].voice == "v.wav"


@pytest.mark.parametrize(
    ("url", "host_port"),
    [
        ("ws://tasks.stt:8080", ("tasks.stt", 8080)),
        ("wss://example.com/stt-server", ("example.com", 443)),
        ("ws://stt", ("stt", 80)),
        ("ws://[::1]:9000/x", ("::1", 9000)),
    ],
)
def test_url_host_port(url: str, host_port: tuple[str, int]) -> None:
    assert url_host_port(url) == host_port
