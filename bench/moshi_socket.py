"""Client CPU per message of the STT/TTS WebSocket client (services/moshi_ws.py).

A trio-websocket server in a child process answers the upgrade, sends ``Ready``, then either
sends ``--messages`` binary messages of ``--size`` bytes (receive test) or reads as many from
the client (send test, 9.6 KB: one 80 ms STT ``Audio`` frame). The client's CPU time
(``getrusage``) is divided by the number of messages. To compare two versions, run the script
with ``PYTHONPATH`` pointing at each checkout, alternating:

    git worktree add /tmp/before <commit>
    for i in 1 2 3; do
        PYTHONPATH=/tmp/before .venv/bin/python bench/moshi_socket.py
        .venv/bin/python bench/moshi_socket.py
    done
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import trio

READY = b"\x81\xa4type\xa5Ready"  # msgpack {"type": "Ready"}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(mode: str, messages: int, size: int) -> None:
    import trio_websocket

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(READY)
        if mode == "receive":
            payload = bytes(size)
            for _ in range(messages):
                await ws.send_message(payload)
            await ws.aclose()
        else:
            for _ in range(messages):
                await ws.get_message()
            await ws.send_message(b"done")
            await ws.aclose()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        print(server.port, flush=True)


async def client(port: int, mode: str, messages: int, size: int) -> float:
    from unmute_trio.protocol.moshi import Ready
    from unmute_trio.services.moshi_ws import open_moshi_socket

    def decode(data: bytes) -> object:
        return Ready() if data == READY else data  # the payload is not decoded: socket cost

    async with open_moshi_socket(
        "bench", f"ws://127.0.0.1:{port}/", decode, api_key="x", handshake_timeout_s=5
    ) as socket:
        started = cpu_s()
        if mode == "receive":
            got = 0
            while await socket.receive() is not None:
                got += 1
            assert got == messages, got
        else:
            payload = bytes(size)
            for _ in range(messages):
                await socket.send(payload)
            assert await socket.receive() == b"done"
        return cpu_s() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--serve", choices=["receive", "send"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.serve, args.messages, args.size)
        return
    import unmute_trio.services.moshi_ws as moshi_ws

    print(f"client: {moshi_ws.__file__}")
    for mode, size in [("receive", 200), ("receive", 7700), ("send", 9600)]:
        serve_args = ["--messages", str(args.messages), "--serve", mode, "--size", str(size)]
        child = subprocess.Popen(
            [sys.executable, __file__, *serve_args],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            wall = time.perf_counter()
            used = trio.run(client, port, mode, args.messages, size)
            wall = time.perf_counter() - wall
        finally:
            child.kill()
            child.wait()
        print(
            f"{mode:8} {size:5} B x {args.messages}: client CPU"
            f" {used / args.messages * 1e6:6.1f} µs per message (wall {wall:.1f} s)"
        )


if __name__ == "__main__":
    main()
