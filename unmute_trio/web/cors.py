"""CORS for the configured origins, with credentials, also on error responses.

Hand-written (a dozen lines) rather than a dependency: browsers only need the allow-origin echo,
credentials, and answers to preflight requests. ``*`` in the origin list allows any origin; the
origin is then echoed back (a literal ``*`` is not allowed together with credentials).

The same list guards ``/v1/realtime`` (web/realtime.py): a browser WebSocket is not subject to
CORS, so the route itself refuses an ``Origin`` that is neither the server's own
(:func:`is_same_origin`) nor allowed here (:func:`allows_origin`).
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from quart import Quart, Response, request

# The scheme of a page that opens a ws:// or wss:// connection to the same server.
_PAGE_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def allows_origin(origin: str, origins: Collection[str]) -> bool:
    """Whether ``UNMUTE_CORS_ORIGINS`` (``origins``) allows ``origin``: an exact match, or
    ``*`` for any origin."""
    return "*" in origins or origin in origins


def is_same_origin(origin: str, *, scheme: str, host: str) -> bool:
    """Whether an ``Origin`` header names the server as this request reached it.

    ``scheme`` is the request's (``http``, ``https``, ``ws``, ``wss``) and ``host`` its
    ``Host`` (``name`` or ``name:port``), both as rewritten from trusted proxy headers
    (web/proxy.py), so a page served through the proxy matches. Scheme, host name (without
    case) and port (the default one when absent) must all be equal.
    """
    page_scheme = _PAGE_SCHEMES.get(scheme.lower())
    if page_scheme is None:
        return False
    try:
        theirs = urlsplit(origin)
        ours = urlsplit("//" + host)
        their_port, our_port = theirs.port, ours.port
    except ValueError:  # a port that is not a number, or out of range
        return False
    if theirs.scheme != page_scheme or not theirs.hostname or theirs.hostname != ours.hostname:
        return False
    default = _DEFAULT_PORTS[page_scheme]
    return (their_port or default) == (our_port or default)


def install_cors(app: Quart, origins: tuple[str, ...]) -> None:
    allowed = frozenset(origins)

    @app.after_request
    async def add_cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and allows_origin(origin, allowed):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.vary.add("Origin")
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                requested = request.headers.get("Access-Control-Request-Headers")
                if requested:
                    response.headers["Access-Control-Allow-Headers"] = requested
                response.headers["Access-Control-Max-Age"] = "600"
        return response
