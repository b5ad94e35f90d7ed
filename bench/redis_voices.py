"""What the Redis voice store costs: a cloned voice (~320 KB) written and read through
``RedisVoiceStore`` (redis-py's blocking client in a trio worker thread), against redis-py
called directly on the main thread, and the in-process memory store.

Starts its own ``redis-server`` (Debian's package) on a free port with no persistence.

    .venv/bin/python bench/redis_voices.py [--calls 300]

Prints the median and 90th percentile per call, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import redis
import trio

from unmute_trio.services.redis_voices import RedisVoiceStore
from unmute_trio.voice_store import MemoryVoiceStore

VOICE = os.urandom(320 * 1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[int(len(ms) * 0.9)]
    return f"{label:<44} median {statistics.median(ms):7.3f} ms   p90 {p90:7.3f} ms"


async def time_async(calls: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return times


def time_sync(calls: int, call: Callable[[], object]) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


async def run(url: str, calls: int) -> None:
    store = RedisVoiceStore(url, ttl_s=600, timeout_s=2.0, max_connections=8)
    memory = MemoryVoiceStore(ttl_s=600, max_entries=256, clock=trio.current_time)
    direct = redis.Redis.from_url(url)
    name = await store.add(VOICE)
    memory_name = await memory.add(VOICE)
    key = "unmute-trio:voice:" + name.removeprefix("custom:")
    assert direct.get(key) == VOICE
    print(f"{calls} calls each, a {len(VOICE) // 1024} KB voice, redis-server on localhost")
    print(
        summary(
            "get, RedisVoiceStore (trio thread)", await time_async(calls, lambda: store.get(name))
        )
    )
    print(
        summary(
            "get, redis-py direct (blocking the loop)", time_sync(calls, lambda: direct.get(key))
        )
    )
    print(
        summary(
            "add, RedisVoiceStore (trio thread)", await time_async(calls, lambda: store.add(VOICE))
        )
    )
    print(
        summary(
            "set, redis-py direct (blocking the loop)",
            time_sync(calls, lambda: direct.set(key, VOICE, px=600_000)),
        )
    )
    print(
        summary("get, MemoryVoiceStore", await time_async(calls, lambda: memory.get(memory_name)))
    )

    # While the store's calls run in threads, the event loop stays free: measure how late a
    # 1 ms timer fires during a burst of 8 concurrent gets, against a blocking direct call.
    async def timer_lateness(during: Callable[[], Awaitable[None]]) -> float:
        worst = 0.0
        done = trio.Event()

        async def tick() -> None:
            nonlocal worst
            while not done.is_set():
                start = trio.current_time()
                await trio.sleep(0.001)
                worst = max(worst, trio.current_time() - start - 0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            await trio.sleep(0.01)
            await during()
            done.set()
        return worst

    async def threaded_burst() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(store.get, name)

    async def blocking_burst() -> None:
        for _ in range(8):
            direct.get(key)

    threaded = await timer_lateness(threaded_burst) * 1000
    blocking = await timer_lateness(blocking_burst) * 1000
    print(f"{'worst 1 ms timer lateness, 8 gets via the store':<44} {threaded:7.3f} ms")
    print(f"{'worst 1 ms timer lateness, 8 blocking gets':<44} {blocking:7.3f} ms")
    direct.close()
    await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: apt-get install redis-server (or make test)")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", workdir]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            for _ in range(200):
                try:
                    redis.Redis.from_url(url).ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.02)
            trio.run(run, url, args.calls)
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
