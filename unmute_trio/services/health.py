"""Health of the four services, as ``GET /v1/health`` reports it (docs/protocol.md).

STT, TTS and voice cloning are probed at ``GET <http url>/api/build_info``; the LLM at
``GET <url>/v1/models`` with ``Authorization`` only when a key is configured (the original sent
``Bearer None``). The probes run concurrently, each bounded by a timeout, and the result is
cached briefly so that a burst of page loads costs one round of probes; concurrent callers during
a probe wait for that probe instead of starting their own.
"""

from __future__ import annotations

import dataclasses
import logging

import httpx
import trio

from unmute_trio.settings import Settings, ws_to_http

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Health:
    tts_up: bool
    stt_up: bool
    llm_up: bool
    voice_cloning_up: bool
    # Which engine answers each role (None when down or unnamed): the ``git_describe`` of a
    # moshi-server's build info ("v0.6.4", "v0.6.4-simulator", "local-stt-moonshine-base-en-…"),
    # the first model id the LLM lists. The page shows them, so a user can tell a simulator
    # (scripted words, a hum) from real engines.
    engines: dict[str, str | None] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        # Voice cloning is optional: conversations work without it.
        return self.tts_up and self.stt_up and self.llm_up

    def as_json(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "ok": self.ok}


class HealthChecker:
    def __init__(
        self, settings: Settings, http: httpx.AsyncClient, *, cache_s: float = 0.5
    ) -> None:
        self._settings = settings
        self._http = http
        self._cache_s = cache_s
        self._lock = trio.Lock()
        self._cached: Health | None = None
        self._cached_at = -float("inf")

    async def check(self) -> Health:
        async with self._lock:
            if self._cached is None or trio.current_time() - self._cached_at >= self._cache_s:
                self._cached = await self._probe_all()
                self._cached_at = trio.current_time()
            return self._cached

    async def _probe_all(self) -> Health:
        s = self._settings
        llm_headers = {"Authorization": f"Bearer {s.llm_api_key}"} if s.llm_api_key else {}
        targets = {
            "tts_up": (ws_to_http(s.tts_url) + "/api/build_info", {}),
            "stt_up": (ws_to_http(s.stt_url) + "/api/build_info", {}),
            "llm_up": (s.llm_url + "/v1/models", llm_headers),
            "voice_cloning_up": (s.voice_cloning_url + "/api/build_info", {}),
        }
        results = dict.fromkeys(targets, False)
        engines: dict[str, str | None] = {"stt": None, "tts": None, "llm": None}

        async def probe(key: str, url: str, headers: dict[str, str]) -> None:
            results[key], name = await self._probe(url, headers)
            role = key.removesuffix("_up")
            if role in engines:
                engines[role] = name

        async with trio.open_nursery() as nursery:
            for key, (url, headers) in targets.items():
                nursery.start_soon(probe, key, url, headers)
        return Health(**results, engines=engines)

    async def _probe(self, url: str, headers: dict[str, str]) -> tuple[bool, str | None]:
        """(up, engine name) of one service."""
        timeout = self._settings.health_timeout_s
        # httpx timeouts bound each phase separately; the cancel scope bounds the whole probe.
        with trio.move_on_after(timeout):
            try:
                response = await self._http.get(url, headers=headers, timeout=timeout)
            except httpx.HTTPError as e:
                log.debug("health probe %s failed: %r", url, e)
                return False, None
            if response.status_code != 200:
                return False, None
            return True, _engine_name(response)
        log.debug("health probe %s timed out after %.2f s", url, timeout)
        return False, None


def _engine_name(response: httpx.Response) -> str | None:
    """``git_describe`` of a build info, or the first model id of a ``/v1/models`` list."""
    try:
        body = response.json()
    except ValueError:
        return None
    name: object = None
    if isinstance(body, dict):
        name = body.get("git_describe")
        data = body.get("data")
        if name is None and isinstance(data, list) and data and isinstance(data[0], dict):
            name = data[0].get("id")
    return name[:200] if isinstance(name, str) else None
