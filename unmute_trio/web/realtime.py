"""``WS /v1/realtime``: subprotocol negotiation, the per-process session limit, and the seam to
the session engine.

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
"""

from __future__ import annotations

import logging

import trio
from quart import Quart, Response, websocket

from unmute_trio import metrics
from unmute_trio.protocol.close_codes import CloseCode
from unmute_trio.protocol.dialects import (
    UNMUTE_SUBPROTOCOL,
    Dialect,
    UnknownDialect,
    choose_dialect,
)
from unmute_trio.session.runner import make_front
from unmute_trio.web.auth import is_allowed, presented_keys
from unmute_trio.web.cors import allows_origin, is_same_origin
from unmute_trio.web.routes import state

log = logging.getLogger(__name__)

# Largest client frame accepted (hypercorn's websocket_max_message_size; larger → close 1009).
# One 40 ms Ogg page is a few hundred bytes of base64, so 1 MiB is generous while bounding what
# a single frame can make the server buffer. hypercorn.toml sets the same value.
MAX_CLIENT_FRAME_BYTES = 1024 * 1024
# Longest Origin header quoted in the log line of a refusal.
MAX_LOGGED_ORIGIN_CHARS = 100
# Longest wait for the client's close frame after ours (see QuartRealtimeSocket.finish_close).
CLOSE_HANDSHAKE_TIMEOUT_S = 2.0


class QuartRealtimeSocket:
    """:class:`RealtimeSocket` over Quart's websocket context; ``query`` holds the URL's
    query parameters (the OpenAI front reports ``model`` back)."""

    def __init__(self, query: dict[str, str]) -> None:
        self.query = query
        self.close_sent = False

    async def receive(self) -> str | bytes:
        return await websocket.receive()

    async def send(self, text: str) -> None:
        await websocket.send(text)

    async def close(self, code: int, reason: str = "") -> None:
        self.close_sent = True
        await websocket.close(code, reason)

    async def finish_close(self) -> None:
        """After our close frame, read (and drop) what the client still sends until its own
        close frame arrives; Quart-Trio then cancels the handler and hypercorn closes TCP.

        Returning at once would let hypercorn close the TCP connection while the client's
        microphone audio sits unread in the kernel's buffer. The kernel then answers with a
        reset instead of a clean close, and a browser whose next write fails on that reset
        reports close 1006, without the code and reason we sent (issue 15, item 9).
        Bounded: a client that never answers our close is dropped after
        :data:`CLOSE_HANDSHAKE_TIMEOUT_S`."""
        with trio.move_on_after(CLOSE_HANDSHAKE_TIMEOUT_S):
            while True:
                await websocket.receive()


def install_realtime(app: Quart) -> None:
    @app.websocket("/v1/realtime")
    async def realtime() -> None:
        st = state()
        origin = websocket.headers.get("Origin")
        if origin is not None and not origin_allowed(origin, st.settings.cors_origins):
            log.info(
                "refusing a realtime connection from origin %r",
                origin[:MAX_LOGGED_ORIGIN_CHARS],
            )
            message = (
                "WebSocket connections from this page's origin are not allowed; the server's"
                " UNMUTE_CORS_ORIGINS lists the origins it accepts."
            )
            return Response(message, status=403, content_type="text/plain")  # type: ignore[return-value]  # Quart answers a websocket route with HTTP this way
        offered = websocket.requested_subprotocols
        if st.settings.api_keys:
            presented = presented_keys(
                websocket.headers.get("Authorization"), offered, websocket.args
            )
            if not is_allowed(presented, st.settings.api_keys):
                log.info(
                    "refusing a realtime connection: %s API key", "wrong" if presented else "no"
                )
                message = (
                    "This server needs an API key: send 'Authorization: Bearer <key>', the "
                    "subprotocol 'openai-insecure-api-key.<key>' or '?api_key=<key>'."
                )
                headers = {"WWW-Authenticate": "Bearer"}
                return Response(message, status=401, headers=headers)  # type: ignore[return-value]  # Quart answers a websocket route with HTTP this way
        try:
            dialect: Dialect = choose_dialect(websocket.args, offered)
        except UnknownDialect as e:
            # Before the upgrade: a plain HTTP answer says what is wrong.
            return Response(str(e), status=400)  # type: ignore[return-value]  # as above
        subprotocol = UNMUTE_SUBPROTOCOL if UNMUTE_SUBPROTOCOL in offered else None
        await websocket.accept(subprotocol=subprotocol)
        socket = QuartRealtimeSocket(dict(websocket.args))
        front = make_front(dialect, st, socket)
        if st.drain.started:
            # Shutting down (web/drain.py): the client should reconnect, landing elsewhere.
            log.info("refusing a session: the server is draining")
            refusal = front.fatal(st.drain.refusal_message, st.drain.error_code)
            await socket.send(front.encode(refusal))
            await socket.close(CloseCode.TRY_AGAIN_LATER, "server shutting down")
            await socket.finish_close()
            return
        if st.active_sessions >= st.settings.max_sessions:
            log.warning("refusing a session: %d sessions already open", st.active_sessions)
            message = (
                f"This server is at its limit of {st.settings.max_sessions} simultaneous "
                "conversations. Please try again later."
            )
            await socket.send(front.encode(front.fatal(message, "server_full")))
            await socket.close(CloseCode.TRY_AGAIN_LATER, "server full")
            await socket.finish_close()
            return
        metrics.SESSIONS.inc()
        metrics.ACTIVE_SESSIONS.inc()
        started = trio.current_time()
        try:
            with st.drain.sessions.running():
                await st.run_session(socket, st, dialect)
        finally:
            metrics.ACTIVE_SESSIONS.dec()
            metrics.SESSION_DURATION.observe(trio.current_time() - started)
        # The session's slot is free already; only the socket waits for the client's close.
        if socket.close_sent:
            await socket.finish_close()


def origin_allowed(origin: str, cors_origins: tuple[str, ...]) -> bool:
    """Whether the page at ``origin`` may open a conversation: it is the server's own origin
    (as the request reached it) or ``UNMUTE_CORS_ORIGINS`` allows it."""
    return is_same_origin(origin, scheme=websocket.scheme, host=websocket.host) or allows_origin(
        origin, cors_origins
    )
