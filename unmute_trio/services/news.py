"""Technology headlines for the ``news`` instructions kind (docs/protocol.md), from newsapi.org.

``GET {base_url}/v2/everything?sources=the-verge`` with the key in the ``Authorization``
header, as the original. Differences from the original, which fetched synchronously without a
timeout inside ``session.update``:

- the request is async (httpx on trio) and bounded by ``timeout_s`` as a whole;
- the articles are cached for ``ttl_s`` in process memory, and concurrent callers share one
  fetch (the original used Redis or a per-process cache);
- after a failure no request is made for ``retry_after_failure_s``, so a down or rate-limiting
  API is not hit by every new session; callers get ``None`` meanwhile and the prompt falls
  back to smalltalk.

Without a key (``NEWSAPI_API_KEY`` unset) :meth:`NewsClient.headlines` returns ``None`` and
makes no request.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import httpx
import trio
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

NEWS_PATH = "/v2/everything"
NEWS_QUERY = {"sources": "the-verge"}
# newsapi.org answers at most 100 articles per page; the prompt uses 10. Capping what is kept
# bounds the cache whatever the server sends.
MAX_ARTICLES = 100


class _Source(BaseModel):
    id: str | None = None
    name: str | None = None


class _Article(BaseModel):
    """The fields the prompt may use; URLs and images are dropped."""

    source: _Source
    author: str | None = None
    title: str | None = None
    description: str | None = None
    publishedAt: str | None = None  # newsapi.org's spelling
    content: str | None = None


class _NewsResponse(BaseModel):
    status: str
    totalResults: int | None = None  # newsapi.org's spelling
    articles: list[_Article]


class NewsClient:
    """Cached access to newsapi.org's The Verge headlines; one instance per process."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_key: str | None,
        *,
        base_url: str = "https://newsapi.org",
        ttl_s: float = 4 * 3600,
        timeout_s: float = 3.0,
        retry_after_failure_s: float = 60.0,
    ) -> None:
        self._http = http
        self._api_key = api_key
        self._url = base_url.rstrip("/") + NEWS_PATH
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._retry_after_failure_s = retry_after_failure_s
        self._lock = trio.Lock()  # one fetch at a time; the others wait and read the cache
        self._articles: list[dict[str, Any]] | None = None
        self._fetched_at = -float("inf")
        self._failed_at = -float("inf")
        self.requests_made = 0

    @property
    def enabled(self) -> bool:
        return self._api_key is not None

    async def headlines(self) -> list[dict[str, Any]] | None:
        """The articles (``source{id,name}``, ``author``, ``title``, ``description``,
        ``publishedAt``, ``content``) or ``None`` when news is disabled or unavailable.

        Never raises for a network or API failure; it is logged as a warning instead. Each call
        returns its own copy, so callers may shuffle or edit it.
        """
        if self._api_key is None:
            return None
        async with self._lock:
            now = trio.current_time()
            if self._articles is not None and now - self._fetched_at < self._ttl_s:
                return copy.deepcopy(self._articles)
            if now - self._failed_at < self._retry_after_failure_s:
                return None
            articles = await self._fetch(self._api_key)
            if articles is None:
                self._failed_at = trio.current_time()
                return None
            self._articles = articles
            self._fetched_at = trio.current_time()
            return copy.deepcopy(articles)

    async def _fetch(self, api_key: str) -> list[dict[str, Any]] | None:
        self.requests_made += 1
        with trio.move_on_after(self._timeout_s):
            try:
                response = await self._http.get(
                    self._url,
                    params=NEWS_QUERY,
                    headers={"Authorization": api_key},
                    timeout=self._timeout_s,
                )
                response.raise_for_status()
                parsed = _NewsResponse.model_validate_json(response.content)
            except httpx.HTTPStatusError as e:
                log.warning(
                    "newsapi.org answered HTTP %d; news disabled for now", e.response.status_code
                )
                return None
            except httpx.HTTPError as e:
                log.warning("newsapi.org request failed (%r); news disabled for now", e)
                return None
            except ValidationError as e:
                log.warning("newsapi.org sent an unexpected response (%d errors)", e.error_count())
                return None
            if parsed.status != "ok":
                log.warning("newsapi.org answered status %r; news disabled for now", parsed.status)
                return None
            return [article.model_dump() for article in parsed.articles[:MAX_ARTICLES]]
        log.warning(
            "newsapi.org did not answer within %.1f s; news disabled for now", self._timeout_s
        )
        return None
