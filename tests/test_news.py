"""The newsapi.org client against a local stand-in speaking the same JSON over a real socket."""

from __future__ import annotations

import copy
import logging
import socket
from typing import Any

import httpx
import pytest
import trio
from quart import request
from quart_trio import QuartTrio

from unmute_trio.services.news import NewsClient
from unmute_trio.testing.server import serve_app

ARTICLE = {
    "source": {"id": "the-verge", "name": "The Verge"},
    "author": "A. Writer",
    "title": "A new phone folds twice",
    "description": "It is thin.",
    "url": "https://example.com/phone",
    "urlToImage": "https://example.com/phone.jpg",
    "publishedAt": "2025-06-01T10:00:00Z",
    "content": "Lorem ipsum… [+1234 chars]",
}
SECOND = {
    **ARTICLE,
    "source": {"id": None, "name": "The Verge"},
    "author": None,
    "title": "Robots learn to fold laundry",
    "content": None,
}


class NewsApiStandIn:
    """Answers /v2/everything like newsapi.org; records each request's query and key."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {"status": "ok", "totalResults": 2, "articles": [ARTICLE, SECOND]}
        self.delay_s = 0.0
        self.requests: list[tuple[dict[str, str], str | None]] = []
        self.app = QuartTrio("newsapi-stand-in")
        self.app.add_url_rule("/v2/everything", view_func=self._everything)

    async def _everything(self) -> tuple[Any, int]:
        self.requests.append((dict(request.args), request.headers.get("Authorization")))
        await trio.sleep(self.delay_s)
        return self.body, self.status


@pytest.fixture
async def stand_in(nursery: trio.Nursery) -> tuple[NewsApiStandIn, str]:
    server = NewsApiStandIn()
    port = await nursery.start(serve_app, server.app)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient() as client:
        yield client


async def test_headlines_are_fetched_validated_and_cached(
    stand_in: tuple[NewsApiStandIn, str], http: httpx.AsyncClient
) -> None:
    server, url = stand_in
    news = NewsClient(http, "secret-key", base_url=url)
    with trio.fail_after(2):
        first = await news.headlines()
        second = await news.headlines()
    assert server.requests == [({"sources": "the-verge"}, "secret-key")]
    assert first == second
    assert first is not None
    assert [a["title"] for a in first] == [ARTICLE["title"], SECOND["title"]]
    assert first[0] == {
        "source": {"id": "the-verge", "name": "The Verge"},
        "author": "A. Writer",
        "title": "A new phone folds twice",
        "description": "It is thin.",
        "publishedAt": "2025-06-01T10:00:00Z",
        "content": "Lorem ipsum… [+1234 chars]",
    }
    assert first[1]["source"] == {"id": None, "name": "The Verge"}
    # Callers get copies: editing one does not change what the next caller sees.
    assert first is not second and first[0]["source"] is not second[0]["source"]
    snapshot = copy.deepcopy(first)
    first[0]["source"]["name"] = "edited"
    first.clear()
    assert (await news.headlines()) == snapshot


async def test_concurrent_callers_share_one_request(
    stand_in: tuple[NewsApiStandIn, str], http: httpx.AsyncClient
) -> None:
    server, url = stand_in
    server.delay_s = 0.1
    news = NewsClient(http, "k", base_url=url)
    results: list[Any] = []

    async def call() -> None:
        results.append(await news.headlines())

    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
    assert len(server.requests) == 1
    assert all(r is not None and len(r) == 2 for r in results)


async def test_no_key_means_no_request(
    stand_in: tuple[NewsApiStandIn, str], http: httpx.AsyncClient
) -> None:
    server, url = stand_in
    news = NewsClient(http, None, base_url=url)
    assert not news.enabled
    assert await news.headlines() is None
    assert server.requests == []


async def test_cache_expires_after_ttl(
    stand_in: tuple[NewsApiStandIn, str], http: httpx.AsyncClient
) -> None:
    server, url = stand_in
    news = NewsClient(http, "k", base_url=url, ttl_s=0.05)
    with trio.fail_after(2):
        await news.headlines()
        await trio.sleep(0.06)
        await news.headlines()
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"status": "error"}),
        (401, {"status": "error", "code": "apiKeyInvalid", "message": "bad key"}),
        (200, {"status": "error", "code": "rateLimited", "articles": []}),
        (200, {"status": "ok", "articles": [{"title": "no source"}]}),
        (200, "<html>not json</html>"),
    ],
)
async def test_failures_give_none_and_pause_requests(
    stand_in: tuple[NewsApiStandIn, str],
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: Any,
) -> None:
    server, url = stand_in
    server.status, server.body = status, body
    news = NewsClient(http, "k", base_url=url)
    with caplog.at_level(logging.WARNING, logger="unmute_trio.services.news"):
        with trio.fail_after(2):
            assert await news.headlines() is None
            # Within the retry pause, even a recovered API is not asked again.
            server.status = 200
            server.body = {"status": "ok", "articles": [ARTICLE]}
            assert await news.headlines() is None
    assert len(server.requests) == 1
    assert any("newsapi.org" in r.getMessage() for r in caplog.records)


async def test_requests_resume_after_the_retry_pause(
    stand_in: tuple[NewsApiStandIn, str], http: httpx.AsyncClient
) -> None:
    server, url = stand_in
    server.status = 500
    news = NewsClient(http, "k", base_url=url, retry_after_failure_s=0.05)
    with trio.fail_after(2):
        assert await news.headlines() is None
        server.status = 200
        await trio.sleep(0.06)
        result = await news.headlines()
    assert result is not None and len(result) == 2
    assert len(server.requests) == 2


async def test_a_slow_api_times_out_quickly(
    stand_in: tuple[NewsApiStandIn, str], http: httpx.AsyncClient
) -> None:
    server, url = stand_in
    server.delay_s = 10.0
    news = NewsClient(http, "k", base_url=url, timeout_s=0.1)
    with trio.fail_after(2):
        assert await news.headlines() is None
    assert len(server.requests) == 1


async def test_an_unreachable_api_gives_none(http: httpx.AsyncClient) -> None:
    with socket.socket() as s:  # a loopback port with nothing listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    news = NewsClient(http, "k", base_url=f"http://127.0.0.1:{port}", timeout_s=0.5)
    with trio.fail_after(2):
        assert await news.headlines() is None
