"""``UNMUTE_API_KEYS``: which key a realtime client presents, and whether it is one of them.

A client may present its key in any of the forms OpenAI clients use, in either protocol:
``Authorization: Bearer <key>`` (the SDKs), the subprotocol ``openai-insecure-api-key.<key>``
(browsers, which cannot set headers on a WebSocket), or the query parameter ``api_key``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
KEY_QUERY_PARAMETER = "api_key"


def presented_keys(
    authorization: str | None, subprotocols: Sequence[str], query: Mapping[str, str]
) -> list[str]:
    """Every key the handshake carries, in the order above."""
    keys: list[str] = []
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            keys.append(credentials.strip())
    keys += [
        p[len(KEY_SUBPROTOCOL_PREFIX) :]
        for p in subprotocols
        if p.startswith(KEY_SUBPROTOCOL_PREFIX)
    ]
    if query.get(KEY_QUERY_PARAMETER):
        keys.append(query[KEY_QUERY_PARAMETER])
    return keys


def is_allowed(presented: Sequence[str], allowed: Sequence[str]) -> bool:
    """Whether any presented key is allowed (compared in constant time)."""
    return any(
        hmac.compare_digest(key.encode(), good.encode()) for key in presented for good in allowed
    )
