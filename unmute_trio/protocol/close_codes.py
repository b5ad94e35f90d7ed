"""The WebSocket close codes this server sends (RFC 6455 section 7.4.1), in one place."""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    NORMAL = 1000  # the conversation ended (goodbye, or the client left)
    GOING_AWAY = 1001  # the server is shutting down (drain)
    POLICY_VIOLATION = 1008  # the client broke a rule (oversized frame, ...)
    INTERNAL_ERROR = 1011  # a service failed for good, or a bug
    TRY_AGAIN_LATER = 1013  # full, or draining: another replica may take the session
