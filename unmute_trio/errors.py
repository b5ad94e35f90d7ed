"""The typed family of service failures.

Library exceptions (trio-websocket, httpx, OSError, msgpack) are translated into these at the
``services`` boundary, so the session layer handles exactly four cases and never matches on
message strings. Each carries the name of the service (``"stt"``, ``"tts"``, ``"llm"``,
``"voice_cloning"``) because the user-facing messages name it.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A service could not be used. Subclasses say why."""

    def __init__(self, service: str, detail: str = "") -> None:
        self.service = service
        self.detail = detail
        super().__init__(f"{service}: {detail}" if detail else service)


class ServiceAtCapacity(ServiceError):
    """The service answered that it has no free slot (moshi-server: "no free channels")."""


class ServiceTimeout(ServiceError):
    """The service did not answer (connect, handshake or a read) within its time limit."""


class ServiceDisconnected(ServiceError):
    """The connection to the service was refused, reset or closed unexpectedly."""


class ServiceProtocolError(ServiceError):
    """The service answered, but not in the protocol we speak (bad message, HTTP error)."""
