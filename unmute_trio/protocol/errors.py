from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class WireFormatError(ValueError):
    """Bytes or text that are not a valid message of the protocol being decoded.

    ``details`` is JSON-serialisable (pydantic's error list, or a short dict) so it can be sent
    back to a browser client inside an ``error`` event.
    """

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @classmethod
    def from_validation(cls, what: str, err: ValidationError) -> WireFormatError:
        details = err.errors(include_url=False, include_context=False, include_input=False)
        return cls(f"Invalid {what}: {err.error_count()} validation error(s)", details)
