"""Health of the four services, as ``GET /v1/health`` reports it (docs/protocol.md).

STT, TTS and voice cloning are probed at ``GET <http url>/api/build_info``; the LLM at
``GET <url>/v1/models`` (``<url>`` as the LLM client uses it: a trailing ``/v1`` is dropped) with
``Authorization`` only when a key is configured (the original sent ``Bearer None``). The probes
run concurrently, each bounded by a timeout, and the result is cached briefly so that a burst of
page loads costs one round of probes; concurrent callers during a probe wait for that probe
instead of starting their own.

The voice store (memory, or Redis when ``UNMUTE_REDIS_URL`` is set) is probed too: a Redis
``PING`` within the same timeout; ``problems["voice_store"]`` says why when it fails.

The LLM counts as up only if replies can work: the server answers with a model list, and it
serves ``KYUTAI_LLM_MODEL`` (or, when that is unset, exactly one model). Otherwise it is down and
``problems["llm"]`` says what to change (a server that cannot be reached has no entry: "down"
says it all).
"""

from __future__ import annotations

import dataclasses
import logging

import httpx
import trio

from unmute_trio.services.llm_models import ModelList, model_problem, not_found_hint, server_root
from unmute_trio.settings import Settings, ws_to_http
from unmute_trio.voice_store import VoiceStore

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
    # What to change, by role, for a service that answers but cannot work as configured (only
    # the LLM so far: a KYUTAI_LLM_MODEL it does not serve, a URL that is not its root). In the
    # JSON only when not empty, so a healthy or unreachable setup answers as before.
    problems: dict[str, str] = dataclasses.field(default_factory=dict)
    # Where cloned voices are kept ("memory" or "redis"), and whether it answers. A store that
    # is down costs only cloned voices (uploads answer 503, their sessions speak with the
    # default voice), so like voice cloning it does not make the server unready.
    voice_store: str = "memory"
    voice_store_up: bool = True

    @property
    def ok(self) -> bool:
        # Voice cloning and the voice store are optional: conversations work without them.
        return self.tts_up and self.stt_up and self.llm_up

    def as_json(self) -> dict[str, object]:
        body = {**dataclasses.asdict(self), "ok": self.ok}
        if not self.problems:
            del body["problems"]
        return body


class HealthChecker:
    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        voice_store: VoiceStore,
        *,
        cache_s: float = 0.5,
    ) -> None:
        self._settings = settings
        self._http = http
        self._voice_store = voice_store
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
            "llm_up": (server_root(s.llm_url) + "/v1/models", llm_headers),
            "voice_cloning_up": (s.voice_cloning_url + "/api/build_info", {}),
        }
        results = dict.fromkeys(targets, False)
        engines: dict[str, str | None] = {"stt": None, "tts": None, "llm": None}
        problems: dict[str, str] = {}

        async def probe(key: str, url: str, headers: dict[str, str]) -> None:
            response = await self._probe(url, headers)
            role = key.removesuffix("_up")
            if role == "llm":
                results[key], name, problem = self._judge_llm(url, response)
                if problem is not None:
                    problems[role] = problem
            elif response is not None and response.status_code == 200:
                results[key], name = True, _engine_name(response)
            else:
                results[key], name = False, None
            if role in engines:
                engines[role] = name

        async def probe_voice_store() -> None:
            with trio.move_on_after(s.health_timeout_s):
                problem = await self._voice_store.check()
                if problem is not None:
                    problems["voice_store"] = problem
                results["voice_store_up"] = problem is None
                return
            problems["voice_store"] = f"no answer within {s.health_timeout_s:g} s"

        results["voice_store_up"] = False
        async with trio.open_nursery() as nursery:
            for key, (url, headers) in targets.items():
                nursery.start_soon(probe, key, url, headers)
            nursery.start_soon(probe_voice_store)
        return Health(
            **results, engines=engines, problems=problems, voice_store=self._voice_store.kind
        )

    async def _probe(self, url: str, headers: dict[str, str]) -> httpx.Response | None:
        """The answer of one service, or None if it could not be reached in time."""
        timeout = self._settings.health_timeout_s
        # httpx timeouts bound each phase separately; the cancel scope bounds the whole probe.
        with trio.move_on_after(timeout):
            try:
                return await self._http.get(url, headers=headers, timeout=timeout)
            except httpx.HTTPError as e:
                log.debug("health probe %s failed: %r", url, e)
                return None
        log.debug("health probe %s timed out after %.2f s", url, timeout)
        return None

    def _judge_llm(
        self, url: str, response: httpx.Response | None
    ) -> tuple[bool, str | None, str | None]:
        """(up, model name, problem) of the LLM from its ``/v1/models`` answer."""
        if response is None:
            return False, None, None
        if response.status_code == 404:
            return False, None, not_found_hint(url)
        if response.status_code in (401, 403):
            return (
                False,
                None,
                f"{url} answered HTTP {response.status_code}: check KYUTAI_LLM_API_KEY",
            )
        if response.status_code != 200:
            return False, None, f"{url} answered HTTP {response.status_code}"
        configured = self._settings.llm_model
        try:
            served = ModelList.model_validate_json(response.content).data
        except ValueError:
            if configured is not None:
                return True, configured, None  # not checkable; replies may still work
            return False, None, f"{url} is not an OpenAI model list (set KYUTAI_LLM_MODEL)"
        problem = model_problem(configured, served, url)
        if problem is not None:
            return False, None, problem
        return True, (configured or served[0].id)[:200], None


def _engine_name(response: httpx.Response) -> str | None:
    """``git_describe`` of a build info."""
    try:
        body = response.json()
    except ValueError:
        return None
    name = body.get("git_describe") if isinstance(body, dict) else None
    return name[:200] if isinstance(name, str) else None
