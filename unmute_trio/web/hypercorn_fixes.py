"""A fix for hypercorn (checked on 0.18.0): an oversized WebSocket message leaks the session.

When a client sends a message larger than ``websocket_max_message_size``, hypercorn sends close
1009 but never ends the stream: every further chunk of the message triggers another close, the
ASGI app is never told ``websocket.disconnect``, and even the client dropping TCP does not end
it. Each such message would hold a session (and its slot under the session limit) forever.

The fix ends the stream right after the 1009 close, the way hypercorn itself ends it after a
normal close handshake, so the app is cancelled and the connection closed. ``apply()`` is
idempotent and is called when the app is created.
"""

from __future__ import annotations

from typing import Any

from hypercorn.protocol import ws_stream
from hypercorn.protocol.events import StreamClosed
from wsproto.events import CloseConnection
from wsproto.frame_protocol import CloseReason

_APPLIED_MARK = "_unmute_trio_fixed"


def apply() -> None:
    original = ws_stream.WSStream._send_wsproto_event
    if getattr(original, _APPLIED_MARK, False):
        return

    async def send_and_end_on_too_big(self: Any, event: Any) -> None:
        await original(self, event)
        if (
            isinstance(event, CloseConnection)
            and event.code == CloseReason.MESSAGE_TOO_BIG
            and not self.closed
        ):
            await self.send(StreamClosed(stream_id=self.stream_id))

    setattr(send_and_end_on_too_big, _APPLIED_MARK, True)
    ws_stream.WSStream._send_wsproto_event = send_and_end_on_too_big  # type: ignore[method-assign]  # the patch
