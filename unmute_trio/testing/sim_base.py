"""What the simulators share: serving on a real socket, and for the two moshi-server
simulators (STT, TTS) the build-info route, API-key check, capacity slots, kill switch and
bounded connection log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
from quart import websocket
from quart_trio import QuartTrio

from unmute_trio.protocol.close_codes import CloseCode
from unmute_trio.testing.server import serve_app

# GET /api/build_info: the keys of moshi-server's BuildInfo, fake values.
BUILD_INFO: dict[str, str] = {
    "build_timestamp": "2025-01-01T00:00:00.000000000Z",
    "build_date": "2025-01-01",
    "git_branch": "simulator",
    "git_timestamp": "2025-01-01T00:00:00.000000000Z",
    "git_date": "2025-01-01",
    "git_hash": "0000000000000000000000000000000000000000",
    "git_describe": "v0.6.4-simulator",
    "rustc_host_triple": "x86_64-unknown-linux-gnu",
    "rustc_version": "1.85.0",
    "cargo_target_triple": "x86_64-unknown-linux-gnu",
}
# Killed streams and undecodable messages close with CloseCode.INTERNAL_ERROR (the real server
# drops TCP); an orderly end with CloseCode.NORMAL.
_CLOSE_TIMEOUT_S = 1.0  # a client that stops reading must not hold a closing handler forever


def is_authorized(api_key: str) -> bool:
    """moshi-server auth: header ``kyutai-api-key``, else query ``auth_id``."""
    supplied = websocket.headers.get("kyutai-api-key")
    if supplied is None:
        supplied = websocket.args.get("auth_id")
    return supplied == api_key


async def close_websocket(code: int) -> None:
    with trio.move_on_after(_CLOSE_TIMEOUT_S):
        await websocket.close(code)


@dataclass(eq=False)
class StreamHandle:
    """One accepted stream holding a slot; ``scope`` wraps its work so it can be killed."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    killed: bool = False
    done: trio.Event = field(default_factory=trio.Event)


async def first_to_return(*tasks: Callable[[], Awaitable[str]]) -> str:
    """Run the tasks concurrently; when one returns (a stream's reason to end), cancel the
    others and return that reason."""
    ended: list[str] = []
    async with trio.open_nursery() as nursery:

        async def run(task: Callable[[], Awaitable[str]]) -> None:
            reason = await task()
            if not ended:
                ended.append(reason)
            nursery.cancel_scope.cancel()

        for task in tasks:
            nursery.start_soon(run, task)
    return ended[0]


class SimConnections:
    """Open-connection count, capacity slots and kill switch of one simulator."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.open = 0
        self._streams: set[StreamHandle] = set()  # bounded by capacity

    @contextmanager
    def connection(self) -> Iterator[None]:
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1

    @contextmanager
    def slot(self) -> Iterator[StreamHandle | None]:
        """A free slot, or ``None`` when all ``capacity`` slots are taken."""
        if len(self._streams) >= self.capacity:
            yield None
            return
        handle = StreamHandle()
        self._streams.add(handle)
        try:
            yield handle
        finally:
            self._streams.discard(handle)
            handle.done.set()

    async def kill_all(self) -> None:
        """Cancel every stream's work and wait until each has closed its socket."""
        handles = list(self._streams)
        for handle in handles:
            handle.killed = True
            handle.scope.cancel()
        for handle in handles:
            await handle.done.wait()


# Connection records kept for tests; the oldest are dropped so a long load test stays bounded.
LOG_LENGTH = 1000


class StreamRecord(Protocol):
    """The fields every connection record has (``SttConnectionRecord``, ``TtsConnectionRecord``)."""

    at_capacity: bool
    end: str | None


async def run_accepted_stream(
    connections: SimConnections,
    record: StreamRecord,
    *,
    refusal: bytes | None,
    run: Callable[[], Awaitable[str]],
    close_code: Callable[[str], int],
) -> None:
    """The part of a moshi-server stream that follows the auth check, the same for the
    simulators and the local engines: accept; with no free slot send ``refusal`` (the protocol's
    ``Error("no free channels")``) and close normally; else ``run`` the stream (its ``Ready``
    included) in the slot's kill scope, note how it ended in ``record.end``, and close with
    ``close_code(record.end)``."""
    await websocket.accept()
    with connections.slot() as handle:
        if handle is None:
            record.at_capacity = True
            record.end = "at_capacity"
            if refusal is not None:
                await websocket.send(refusal)
            await close_websocket(CloseCode.NORMAL)
            return
        # Stays "client" when the client goes away: quart-trio then cancels the handler.
        record.end = "client"
        with handle.scope:
            record.end = await run()
        if handle.killed:
            record.end = "killed"
        await close_websocket(close_code(record.end))


class ServedSimulator:
    """A simulator whose Quart-Trio ``app`` is served on a real loopback socket."""

    app: QuartTrio

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started`` receives the bound port."""
        await serve_app(self.app, host, port, task_status=task_status)


class MoshiSimulator(ServedSimulator):
    """Base of the STT and TTS simulators: one WebSocket route plus ``GET /api/build_info``.

    Serve with ``port = await nursery.start(sim.serve)``; URL ``ws://127.0.0.1:{port}``.
    """

    def __init__(
        self,
        *,
        name: str,
        capacity: int,
        path: str,
        handler: Callable[[], Awaitable[Any]],
        build_info: dict[str, str] | None = None,
    ) -> None:
        self._connections = SimConnections(capacity)
        # What /api/build_info says: a server tells which engine it is through git_describe.
        self.build_info = dict(build_info or BUILD_INFO)
        self.app = QuartTrio(name)
        self.app.get("/api/build_info")(self._build_info)
        self.app.websocket(path)(handler)

    @property
    def open_connections(self) -> int:
        return self._connections.open

    async def kill_connections(self) -> None:
        await self._connections.kill_all()

    async def _build_info(self) -> dict[str, str]:
        return dict(self.build_info)
