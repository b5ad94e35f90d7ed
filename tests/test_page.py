"""Serving the built-in browser client: ``GET /`` by ``Accept``, and ``/static/`` files, through
a real hypercorn socket. (The page itself runs in Chromium in test_browser_e2e.py.)"""

from __future__ import annotations

import re

import httpx
import pytest

from unmute_trio.settings import Settings
from unmute_trio.web.page import STATIC_DIR

# What Chromium sends when it opens a page.
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)


async def test_browsers_get_the_page(serve, all_down_settings: Settings) -> None:
    base = await serve(all_down_settings)
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="static/app.js">' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json, */*"])
async def test_api_clients_keep_the_json_greeting(
    serve, all_down_settings: Settings, accept: str | None
) -> None:
    base = await serve(all_down_settings)
    headers = {} if accept is None else {"Accept": accept}
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get("/", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert "message" in r.json()


def shipped_files() -> list[str]:
    return sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file())


async def test_every_static_file_is_served_with_its_type(
    serve, all_down_settings: Settings
) -> None:
    types = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
    base = await serve(all_down_settings)
    async with httpx.AsyncClient(base_url=base) as c:
        for name in shipped_files():
            r = await c.get(f"/static/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-type"].split(";")[0] == types[name[name.rindex(".") :]]
            assert r.content == (STATIC_DIR / name).read_bytes()
            assert r.headers["x-content-type-options"] == "nosniff"


async def test_static_files_are_revalidated_not_cached(serve, all_down_settings: Settings) -> None:
    base = await serve(all_down_settings)
    async with httpx.AsyncClient(base_url=base) as c:
        first = await c.get("/static/app.js")
        assert first.headers["cache-control"] == "no-cache"
        etag = first.headers["etag"]
        again = await c.get("/static/app.js", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        changed = await c.get("/static/app.js", headers={"If-None-Match": '"other"'})
        assert changed.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/static/missing.js",
        "/static/../web/page.py",
        "/static/%2e%2e/web/page.py",
        "/static/.hidden.js",
        "/static/sub/app.js",
        "/static/__init__.py",
    ],
)
async def test_only_shipped_page_files_are_served(
    serve, all_down_settings: Settings, path: str
) -> None:
    base = await serve(all_down_settings)
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get(path)
    assert r.status_code == 404


def test_every_module_the_page_loads_is_shipped() -> None:
    """Each relative import, worklet module and stylesheet named in the page exists."""
    files = set(shipped_files())
    referenced: set[str] = set()
    for name in files:
        text = (STATIC_DIR / name).read_text()
        for match in re.finditer(r"""from\s+["']\./([\w.-]+)["']""", text):
            referenced.add(match.group(1))
        for match in re.finditer(r"""new URL\(\s*["']([\w.-]+\.js)["']""", text):
            referenced.add(match.group(1))
        for match in re.finditer(r"""(?:src|href)="static/([\w.-]+)\"""", text):
            referenced.add(match.group(1))
    assert {"app.js", "style.css", "playback-worklet.js", "capture-worklet.js"} <= referenced
    assert referenced <= files, referenced - files
