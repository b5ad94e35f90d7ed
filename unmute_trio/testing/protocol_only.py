"""A session runner that speaks the Unmute dialect's session protocol and holds no conversation:
for tests of the web layer (routes, limits, drain, keys) that need no STT, LLM or TTS."""

from __future__ import annotations

from unmute_trio.protocol.browser import (
    InputAudioBufferAppend,
    SessionUpdate,
    SessionUpdated,
    encode_event,
    invalid_request_error,
    parse_client_event,
)
from unmute_trio.protocol.dialects import Dialect
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.session.context import RealtimeSocket, SessionContext


async def protocol_only_session(
    socket: RealtimeSocket, st: SessionContext, dialect: Dialect = "unmute"
) -> None:
    """A session that speaks the browser protocol but holds no conversation.

    It validates every frame (invalid JSON or events get an ``invalid_request_error`` and the
    session continues) and answers ``session.update`` with ``session.updated``. Audio is
    validated and dropped. A test double for the web layer's tests (``session_runner=`` of
    ``create_app``), and the smallest example of a ``session.context.SessionRunner``.
    """
    while True:
        try:
            event = parse_client_event(await socket.receive())
        except WireFormatError as e:
            await socket.send(encode_event(invalid_request_error(e)))
            continue
        if isinstance(event, SessionUpdate):
            await socket.send(encode_event(SessionUpdated(session=event.session)))
        elif isinstance(event, InputAudioBufferAppend):
            pass
