"""``WS /v1/realtime``: subprotocol negotiation, the per-process session limit, and the seam to
the session engine.

Served as a plain ASGI app in front of Quart (:func:`with_realtime`), not as a Quart route:
Quart-Trio relays every incoming WebSocket message through a task of its own, a memory channel
and two signals before the handler sees it, ~25 µs of CPU per message measured under hypercorn
(a browser sends 25 a second per session). Here the session's reader takes hypercorn's ASGI
messages itself. Everything else on the server (HTTP, other paths) stays with Quart.

Subprotocol: a client that offers ``realtime`` (browsers, the Unmute frontend) is accepted with
it; a client that offers none (OpenAI's SDKs) is accepted without one. We never answer with a
subprotocol the client did not offer — the original always answered ``realtime``, which
RFC 6455 forbids and which strict clients reject.

Origin: a browser sends the page's ``Origin`` with the upgrade, and WebSockets are not subject
to CORS, so any web page could otherwise open conversations on this server with its visitors'
microphones. A request whose ``Origin`` is neither the server's own (same scheme, host and port
as the request, after trusted proxy headers) nor in ``UNMUTE_CORS_ORIGINS`` (``*`` allows any) is
refused with HTTP 403 before the upgrade. Clients that send no ``Origin`` (SDKs, the load
generator) are not concerned.

Session limit: beyond ``UNMUTE_MAX_SESSIONS`` a client is accepted, told why in an ``error``
event of type ``fatal``, and closed with 1013 (Try Again Later) at once. The original made extra
clients wait before the handshake with no feedback. While the server drains (web/drain.py), every
new client is refused the same way.

A client that goes away cancels its session (:class:`AsgiRealtimeSocket`), as Quart-Trio did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from itertools import count
from typing import Any
from urllib.parse import parse_qsl

import trio

from unmute_trio import metrics
from unmute_trio.protocol.close_codes import CloseCode
from unmute_trio.protocol.dialects import (
    UNMUTE_SUBPROTOCOL,
    Dialect,
    UnknownDialect,
    choose_dialect,
)
from unmute_trio.session import hops
from unmute_trio.session.runner import make_front
from unmute_trio.web.auth import is_allowed, presented_keys
from unmute_trio.web.cors import allows_origin, is_same_origin
from unmute_trio.web.proxy import ASGIApp, Scope
from unmute_trio.web.state import AppState

log = logging.getLogger(__name__)

REALTIME_PATH = "/v1/realtime"
# Largest client frame accepted (hypercorn's websocket_max_message_size; larger → close 1009).
# One 40 ms Ogg page is a few hundred bytes of base64, so 1 MiB is generous while bounding what
# a single frame can make the server buffer. hypercorn.toml sets the same value.
MAX_CLIENT_FRAME_BYTES = 1024 * 1024
# Longest Origin header quoted in the log line of a refusal.
MAX_LOGGED_ORIGIN_CHARS = 100
# Longest wait for the client's close frame after ours (see AsgiRealtimeSocket.finish_close).
CLOSE_HANDSHAKE_TIMEOUT_S = 2.0

Receive = Callable[[], Any]
Send = Callable[[Mapping[str, Any]], Any]


class AsgiRealtimeSocket:
    """:class:`~unmute_trio.session.context.RealtimeSocket` over hypercorn's ASGI messages.

    ``query`` holds the URL's query parameters (the OpenAI front reports ``model`` back), and
    ``request`` how the request reached us (scheme, host, client, root path and path, after
    trusted proxy headers). When the client goes away, :meth:`receive` cancels
    ``session_scope`` (the scope the session runs in), so the session ends the way it did under
    Quart-Trio, by cancellation."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        query: dict[str, str],
        request: dict[str, str],
        session_scope: trio.CancelScope,
    ) -> None:
        self.query = query
        self.request = request
        self.close_sent = False
        self.disconnected = False
        self._receive = receive
        self._send = send
        self._session_scope = session_scope
        # hypercorn hands us its queue's bound ``receive``: reading the queue directly skips a
        # scheduling round per client message when one is waiting (session/hops.py).
        queue = getattr(receive, "__self__", None)
        self._queue = (
            queue
            if isinstance(queue, trio.MemoryReceiveChannel) and receive == queue.receive
            else None
        )

    async def receive(self) -> str | bytes:
        if self._queue is not None:
            message = await hops.receive(self._queue)
        else:
            message = await self._receive()
        if message["type"] == "websocket.receive":
            text: str | None = message.get("text")
            return text if text is not None else bytes(message.get("bytes") or b"")
        self.disconnected = True  # websocket.disconnect
        self._session_scope.cancel(reason="the client disconnected")
        await trio.lowlevel.checkpoint()  # raises Cancelled
        raise AssertionError("cancelled above")

    async def send(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str = "") -> None:
        self.close_sent = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def finish_close(self) -> None:
        """After our close frame, read (and drop) what the client still sends until its own
        close frame arrives; hypercorn then closes TCP.

        Returning at once would let hypercorn close the TCP connection while the client's
        microphone audio sits unread in the kernel's buffer. The kernel then answers with a
        reset instead of a clean close, and a browser whose next write fails on that reset
        reports close 1006, without the code and reason we sent (issue 15, item 9).
        Bounded: a client that never answers our close is dropped after
        :data:`CLOSE_HANDSHAKE_TIMEOUT_S`."""
        with trio.move_on_after(CLOSE_HANDSHAKE_TIMEOUT_S):
            while not self.disconnected:
                if (await self._receive())["type"] == "websocket.disconnect":
                    self.disconnected = True


def with_realtime(app: ASGIApp, state: AppState) -> ASGIApp:
    """``app`` with ``/v1/realtime`` (under the root path, if any) served here."""
    numbers = count(1)  # of the sessions opened, for the log

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and _is_realtime(scope):
            await serve_realtime(scope, receive, send, state, numbers)
        else:
            await app(scope, receive, send)

    return dispatch


def _is_realtime(scope: Scope) -> bool:
    # As Quart routes: the path must be the root path (hypercorn's, or the proxy's prefix)
    # followed by ours (web/proxy.py puts a prefix stripped by a proxy back first).
    return bool(scope.get("path") == scope.get("root_path", "") + REALTIME_PATH)


async def serve_realtime(
    scope: Scope, receive: Receive, send: Send, st: AppState, numbers: Iterator[int]
) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    headers = _headers(scope)
    query = _query(scope)
    origin = headers.get("origin")
    if origin is not None and not origin_allowed(origin, scope, headers, st):
        log.info("refusing a realtime connection from origin %r", origin[:MAX_LOGGED_ORIGIN_CHARS])
        message = (
            "WebSocket connections from this page's origin are not allowed; the server's"
            " UNMUTE_CORS_ORIGINS lists the origins it accepts."
        )
        await _refuse(send, 403, message)
        return
    offered = [str(s) for s in scope.get("subprotocols") or ()]
    if st.settings.api_keys:
        presented = presented_keys(headers.get("authorization"), offered, query)
        if not is_allowed(presented, st.settings.api_keys):
            log.info("refusing a realtime connection: %s API key", "wrong" if presented else "no")
            message = (
                "This server needs an API key: send 'Authorization: Bearer <key>', the "
                "subprotocol 'openai-insecure-api-key.<key>' or '?api_key=<key>'."
            )
            await _refuse(send, 401, message, [(b"www-authenticate", b"Bearer")])
            return
    try:
        dialect: Dialect = choose_dialect(query, offered)
    except UnknownDialect as e:
        # Before the upgrade: a plain HTTP answer says what is wrong.
        await _refuse(send, 400, str(e))
        return
    subprotocol = UNMUTE_SUBPROTOCOL if UNMUTE_SUBPROTOCOL in offered else None
    await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": []})
    with trio.CancelScope() as session_scope:
        request = {
            "scheme": str(scope.get("scheme") or "ws"),
            "host": headers.get("host", ""),
            "client": _client(scope),
            "root_path": str(scope.get("root_path") or ""),
            "path": str(scope.get("path") or ""),
        }
        socket = AsgiRealtimeSocket(receive, send, query, request, session_scope)
        await _run(socket, st, dialect, numbers, request["client"])
        if socket.close_sent:
            await socket.finish_close()
        elif not socket.disconnected:
            await socket.close(CloseCode.NORMAL)  # as Quart did after a handler that did not


async def _run(
    socket: AsgiRealtimeSocket,
    st: AppState,
    dialect: Dialect,
    numbers: Iterator[int],
    client: str,
) -> None:
    front = make_front(dialect, st, socket)
    if st.drain.started:
        # Shutting down (web/drain.py): the client should reconnect, landing elsewhere.
        log.info("refusing a session: the server is draining")
        refusal = front.fatal(st.drain.refusal_message, st.drain.error_code)
        await socket.send(front.encode(refusal))
        await socket.close(CloseCode.TRY_AGAIN_LATER, "server shutting down")
        return
    if st.active_sessions >= st.settings.max_sessions:
        log.warning("refusing a session: %d sessions already open", st.active_sessions)
        message = (
            f"This server is at its limit of {st.settings.max_sessions} simultaneous "
            "conversations. Please try again later."
        )
        await socket.send(front.encode(front.fatal(message, "server_full")))
        await socket.close(CloseCode.TRY_AGAIN_LATER, "server full")
        return
    metrics.SESSIONS.inc()
    metrics.ACTIVE_SESSIONS.inc()
    started = trio.current_time()
    number = next(numbers)
    try:
        with st.drain.sessions.running():
            log.info(
                "session %d opened (%s protocol, client %s, %d open)",
                number,
                dialect,
                client,
                st.active_sessions,
            )
            await st.run_session(socket, st, dialect)
    finally:
        # The session's slot is free before the wait for the client's close frame.
        metrics.ACTIVE_SESSIONS.dec()
        metrics.SESSION_DURATION.observe(trio.current_time() - started)
        log.info("session %d ended after %.1f s", number, trio.current_time() - started)


def origin_allowed(origin: str, scope: Scope, headers: Mapping[str, str], st: AppState) -> bool:
    """Whether the page at ``origin`` may open a conversation: it is the server's own origin
    (as the request reached it) or ``UNMUTE_CORS_ORIGINS`` allows it."""
    scheme = str(scope.get("scheme") or "ws")
    host = headers.get("host", "")
    return is_same_origin(origin, scheme=scheme, host=host) or allows_origin(
        origin, st.settings.cors_origins
    )


async def _refuse(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """An HTTP answer instead of the upgrade (the ASGI WebSocket denial response)."""
    body = message.encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (the first of repeated ones)."""
    headers: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return headers


def _query(scope: Scope) -> dict[str, str]:
    """The URL's query parameters (the first of repeated ones), as Quart's ``args`` gave."""
    query: dict[str, str] = {}
    raw = scope.get("query_string") or b""
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        query.setdefault(name, value)
    return query


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
