"""CORS for the configured origins, with credentials, also on error responses.

Hand-written (a dozen lines) rather than a dependency: browsers only need the allow-origin echo,
credentials, and answers to preflight requests. ``*`` in the origin list allows any origin; the
origin is then echoed back (a literal ``*`` is not allowed together with credentials).
"""

from __future__ import annotations

from quart import Quart, Response, request


def install_cors(app: Quart, origins: tuple[str, ...]) -> None:
    allow_any = "*" in origins
    allowed = frozenset(origins)

    @app.after_request
    async def add_cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and (allow_any or origin in allowed):
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
