"""The built-in browser client: ``GET /`` for browsers and its files under ``/static/``.

The page is plain HTML, CSS and ES modules shipped inside the package (``unmute_trio/static``),
with no build step. ``GET /`` answers the page only when the client prefers HTML (a browser's
``Accept`` header); API clients (``*/*``, ``application/json``) keep the JSON greeting.

Static files are served by name from that one flat directory, with ``Cache-Control: no-cache``
and an ETag: a browser revalidates each file (a cheap 304) instead of running modules from an
older release next to newer ones. This replaces Quart's default static view, which lets
browsers cache files for 12 hours.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import trio
from quart import Quart, Response, abort, request
from werkzeug.datastructures import MIMEAccept

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
INDEX_FILE = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# Names that may be served: one plain file name in STATIC_DIR, no directories, no dot files.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
# The page talks only to its own origin; workers/worklets load from it too.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'none'"
)


def wants_html(accept: MIMEAccept) -> bool:
    """Whether the client prefers the page to the JSON greeting (``*/*`` means JSON)."""
    return accept.best_match(["application/json", "text/html"]) == "text/html"


async def static_file_response(name: str) -> Response:
    """The file ``name`` of the static directory, or 404."""
    suffix = Path(name).suffix
    if not _SAFE_NAME.match(name) or suffix not in CONTENT_TYPES:
        abort(404)
    path = trio.Path(STATIC_DIR / name)
    try:
        body = await path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        abort(404)
    etag = hashlib.sha256(body).hexdigest()[:32]
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if suffix == ".html":
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    if etag in request.if_none_match:
        response = Response(b"", status=304, headers=headers)
    else:
        response = Response(body, content_type=CONTENT_TYPES[suffix], headers=headers)
    response.set_etag(etag)
    return response


async def index_response() -> Response:
    return await static_file_response(INDEX_FILE)


def install_page(app: Quart) -> None:
    """Serve ``/static/<name>`` from the package with revalidation (see the module doc)."""

    async def static_file(filename: str) -> Response:
        return await static_file_response(filename)

    if "static" in app.view_functions:
        app.view_functions["static"] = static_file  # Quart's rule, our view
    else:
        app.add_url_rule("/static/<path:filename>", "static", static_file)
