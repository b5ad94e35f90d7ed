"""Server CPU per WebSocket message through hypercorn, with wsproto's frames or ours.

A child process serves a bare ASGI app under hypercorn with ``web/hypercorn_fixes`` applied
(``--frames ours``) or applied without fix 5 (``--frames wsproto``). The app answers every text
message with one text message of the same size, the way a session answers microphone frames
with audio deltas. A trio-websocket client sends ``--messages`` messages of ``--size`` bytes
and reads the answers; the server's CPU time (``getrusage`` in the child) is divided by the
messages. The two kinds of server alternate ``--rounds`` times.

    .venv/bin/python bench/realtime_socket.py --rounds 3
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
from typing import Any

import trio


async def serve(frames: str) -> None:
    from unmute_trio.testing.server import serve_app
    from unmute_trio.web import hypercorn_fixes

    if frames == "wsproto":
        hypercorn_fixes._serve_frames_with_our_codec = lambda: None  # type: ignore[assignment]
    hypercorn_fixes.apply()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                break
            if message["text"] == "usage":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                await send({"type": "websocket.send", "text": f"{usage.ru_utime + usage.ru_stime}"})
                continue
            await send({"type": "websocket.send", "text": message["text"]})

    async with trio.open_nursery() as nursery:
        print(await nursery.start(serve_app, app), flush=True)


async def client(port: int, messages: int, size: int) -> float:
    from trio_websocket import open_websocket_url

    payload = "x" * size
    async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send_message("usage")
        before = float(await ws.get_message())

        async def sender() -> None:
            for _ in range(messages):
                await ws.send_message(payload)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            for _ in range(messages):
                await ws.get_message()
        await ws.send_message("usage")
        return float(await ws.get_message()) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=330)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=["wsproto", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.serve)
        return
    for _ in range(args.rounds):
        for frames in ("wsproto", "ours"):
            child = subprocess.Popen(
                [sys.executable, __file__, "--serve", frames], stdout=subprocess.PIPE, text=True
            )
            try:
                assert child.stdout is not None
                port = int(child.stdout.readline())
                used = trio.run(client, port, args.messages, args.size)
            finally:
                child.kill()
                child.wait()
            print(
                f"frames {frames:8} {args.size} B x {args.messages} in and out: server CPU"
                f" {used / args.messages * 1e6:6.1f} µs per message in + answer"
            )


if __name__ == "__main__":
    main()
