"""Configuration read from environment variables.

The variable names and defaults of the original Unmute (``KYUTAI_*``) are kept so existing
deployments work unchanged; our own additions use the ``UNMUTE_`` prefix. Every variable is
documented in ``docs/configuration.md``. An invalid value raises :class:`SettingsError` naming the
variable, so the server fails at start instead of at the first session.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import SplitResult, urlsplit

# The repository root holds voices.yaml; an editable install (``make run``) finds it here.
# Which forwarding headers a trusted proxy sets (docs/deployment.md).
ProxyMode = Literal["x-forwarded", "forwarded"]
# What an Unmute-dialect session asks the TTS for (docs/configuration.md).
TtsAudio = Literal["opus", "pcm"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A configuration variable has a value the server cannot use."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


def http_to_ws(url: str) -> str:
    """``http://`` → ``ws://`` and ``https://`` → ``wss://``; other URLs unchanged."""
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    return url


def ws_to_http(url: str) -> str:
    """The inverse of :func:`http_to_ws`, for probing a WebSocket service over HTTP."""
    if url.startswith("ws://"):
        return "http://" + url[len("ws://") :]
    if url.startswith("wss://"):
        return "https://" + url[len("wss://") :]
    return url


@dataclasses.dataclass(frozen=True)
class Settings:
    stt_url: str = "ws://localhost:8090"
    tts_url: str = "ws://localhost:8089"
    llm_url: str = "http://localhost:8091"
    llm_model: str | None = None
    llm_api_key: str | None = None
    voice_cloning_url: str = "http://localhost:8092"
    recordings_dir: Path | None = None
    newsapi_api_key: str | None = None
    kyutai_api_key: str = "public_token"
    max_sessions: int = 64
    # Keys a realtime client must present (either protocol); empty: no key needed.
    api_keys: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ("http://localhost", "http://localhost:3000")
    max_upload_bytes: int = 4 * 1024 * 1024
    voices_file: Path = _REPO_ROOT / "voices.yaml"
    health_timeout_s: float = 1.0
    service_connect_timeout_s: float = 0.5
    llm_connect_timeout_s: float = 5.0
    llm_read_timeout_s: float = 30.0
    voice_cloning_timeout_s: float = 15.0
    custom_voice_ttl_s: float = 3600.0
    max_custom_voices: int = 256
    # The shared voice store (services/redis_voices.py): unset keeps voices in this process.
    # Each Redis call is bounded by redis_timeout_s (connect, then the answer): long enough for a
    # 320 KB voice on a loaded network, short enough that an upload answers 503 in a few
    # seconds and a turn with a custom voice starts at most this late when Redis hangs.
    redis_url: str | None = None
    redis_timeout_s: float = 2.0
    redis_max_connections: int = 8
    log_level: str = "INFO"
    # Behind reverse proxies (web/proxy.py): how many to trust, and which headers they write.
    trusted_proxy_hops: int = 0
    proxy_headers: ProxyMode = "x-forwarded"
    # Graceful shutdown (web/drain.py): how long a running bot reply may go on after SIGTERM.
    drain_timeout_s: float = 10.0
    # Idle clients on /v1/realtime (session/idle.py, docs/configuration.md): each session holds
    # one of UNMUTE_MAX_SESSIONS slots, so a client that sends nothing must not keep one.
    # - first_event_timeout_s, from the upgrade to the Unmute dialect's session.update (in the
    #   OpenAI dialect to any client event: its clients need not send session.update). The
    #   Unmute frontend sends session.update the moment the socket opens, SDKs send their first
    #   event right after session.created: 15 s is ample for a slow network, and 64 silent
    #   sockets give their slots back in 15 s instead of holding them for minutes.
    # - client_idle_timeout_s, afterwards: the longest the server waits for any client frame
    #   while no bot reply is in progress. A browser sends audio every 40 ms, so a silent one is
    #   gone; but an OpenAI text or agent client may be silent while its user reads and types or
    #   while it runs a tool: 2 minutes covers a slow tool call, and a client that may think
    #   longer can send any event now and then (or the limit can be raised).
    first_event_timeout_s: float = 15.0
    client_idle_timeout_s: float = 120.0
    # POST /v1/voices (web/routes.py): the whole request body must arrive within this time,
    # else 408 and the connection closes (a stalled or dripping upload holds a connection).
    # 10 s moves a 4 MiB body (UNMUTE_MAX_UPLOAD_BYTES) at 3.4 Mbit/s and the page's recorded
    # sample (~10 s of 24 kHz WAV, ~0.5 MB) at 0.4 Mbit/s.
    upload_body_timeout_s: float = 10.0
    # Unmute-dialect sessions ask the TTS for Opus (OggOpusMessagePack) and pass its packets to
    # the browser without decoding them; "pcm" asks for PcmMessagePack and encodes here, as the
    # original does (for a TTS that cannot send Opus). OpenAI-dialect sessions always take PCM.
    tts_audio: TtsAudio = "opus"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        d = cls()
        return cls(
            stt_url=_service_url(env, "KYUTAI_STT_URL", d.stt_url, websocket=True),
            tts_url=_service_url(env, "KYUTAI_TTS_URL", d.tts_url, websocket=True),
            llm_url=_service_url(env, "KYUTAI_LLM_URL", d.llm_url, websocket=False),
            llm_model=_optional(env, "KYUTAI_LLM_MODEL"),
            llm_api_key=_optional(env, "KYUTAI_LLM_API_KEY"),
            voice_cloning_url=_service_url(
                env, "KYUTAI_VOICE_CLONING_URL", d.voice_cloning_url, websocket=False
            ),
            recordings_dir=_optional_path(env, "KYUTAI_RECORDINGS_DIR"),
            newsapi_api_key=_optional(env, "NEWSAPI_API_KEY"),
            kyutai_api_key=_optional(env, "UNMUTE_KYUTAI_API_KEY") or d.kyutai_api_key,
            max_sessions=_int(env, "UNMUTE_MAX_SESSIONS", d.max_sessions, minimum=1),
            api_keys=_api_keys(env, "UNMUTE_API_KEYS"),
            cors_origins=_origins(env, "UNMUTE_CORS_ORIGINS", d.cors_origins),
            max_upload_bytes=_int(env, "UNMUTE_MAX_UPLOAD_BYTES", d.max_upload_bytes, minimum=1),
            voices_file=_optional_path(env, "UNMUTE_VOICES_FILE") or d.voices_file,
            health_timeout_s=_float(env, "UNMUTE_HEALTH_TIMEOUT_S", d.health_timeout_s),
            service_connect_timeout_s=_float(
                env, "UNMUTE_SERVICE_CONNECT_TIMEOUT_S", d.service_connect_timeout_s
            ),
            llm_connect_timeout_s=_float(
                env, "UNMUTE_LLM_CONNECT_TIMEOUT_S", d.llm_connect_timeout_s
            ),
            llm_read_timeout_s=_float(env, "UNMUTE_LLM_READ_TIMEOUT_S", d.llm_read_timeout_s),
            voice_cloning_timeout_s=_float(
                env, "UNMUTE_VOICE_CLONING_TIMEOUT_S", d.voice_cloning_timeout_s
            ),
            custom_voice_ttl_s=_float(env, "UNMUTE_CUSTOM_VOICE_TTL_S", d.custom_voice_ttl_s),
            max_custom_voices=_int(env, "UNMUTE_MAX_CUSTOM_VOICES", d.max_custom_voices, minimum=1),
            redis_url=_redis_url(env, "UNMUTE_REDIS_URL"),
            redis_timeout_s=_float(env, "UNMUTE_REDIS_TIMEOUT_S", d.redis_timeout_s),
            redis_max_connections=_int(
                env, "UNMUTE_REDIS_MAX_CONNECTIONS", d.redis_max_connections, minimum=1
            ),
            log_level=_log_level(env, "UNMUTE_LOG_LEVEL", d.log_level),
            trusted_proxy_hops=_int(
                env, "UNMUTE_TRUSTED_PROXY_HOPS", d.trusted_proxy_hops, minimum=0
            ),
            proxy_headers=_choice(
                env, "UNMUTE_PROXY_HEADERS", d.proxy_headers, ("x-forwarded", "forwarded")
            ),
            tts_audio=_choice(env, "UNMUTE_TTS_AUDIO", d.tts_audio, ("opus", "pcm")),
            drain_timeout_s=_float(env, "UNMUTE_DRAIN_TIMEOUT_S", d.drain_timeout_s),
            first_event_timeout_s=_float(
                env, "UNMUTE_FIRST_EVENT_TIMEOUT_S", d.first_event_timeout_s
            ),
            client_idle_timeout_s=_float(
                env, "UNMUTE_CLIENT_IDLE_TIMEOUT_S", d.client_idle_timeout_s
            ),
            upload_body_timeout_s=_float(
                env, "UNMUTE_UPLOAD_BODY_TIMEOUT_S", d.upload_body_timeout_s
            ),
        )


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _optional_path(env: Mapping[str, str], name: str) -> Path | None:
    value = _optional(env, name)
    return Path(value) if value else None


def _service_url(env: Mapping[str, str], name: str, default: str, *, websocket: bool) -> str:
    raw = _optional(env, name) or default
    url = http_to_ws(raw) if websocket else raw
    allowed = ("ws", "wss") if websocket else ("http", "https")
    parts = urlsplit(url)
    if parts.scheme not in allowed:
        expected = " or ".join(
            f"{s}://" for s in (*allowed, *(("http", "https") if websocket else ()))
        )
        raise SettingsError(name, f"{raw!r} must start with {expected}")
    _check_host_and_port(name, raw, parts)
    if parts.query or parts.fragment:
        raise SettingsError(name, f"{raw!r} must not have a query string or fragment")
    return url.rstrip("/")


def _check_host_and_port(name: str, shown: str, parts: SplitResult) -> None:
    """``shown``: the URL as a message may quote it (without a password)."""
    if not parts.hostname:
        raise SettingsError(name, f"{shown!r} has no host name")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as e:
        raise SettingsError(name, f"{shown!r} has an invalid port: {e}") from None


def _redis_url(env: Mapping[str, str], name: str) -> str | None:
    raw = _optional(env, name)
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss"):
        raise SettingsError(name, f"{redacted_url(raw)!r} must start with redis:// or rediss://")
    _check_host_and_port(name, redacted_url(raw), parts)
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise SettingsError(name, f"{redacted_url(raw)!r}: the path must be a database number")
    return raw


def redacted_url(url: str) -> str:
    """``url`` without its password, for logs and messages."""
    parts = urlsplit(url)
    credentials, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = _optional(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(name, f"{raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(name, f"{value} is below the minimum of {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _optional(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"{raw!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(name, f"{raw!r} must be a positive, finite number of seconds")
    return value


def _origins(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None:
        return default
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise SettingsError(
                name, f"{origin!r} is not an origin like https://example.com or '*'"
            )
    return origins


def _api_keys(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    keys = tuple(k.strip() for k in env.get(name, "").split(",") if k.strip())
    for key in keys:
        if any(c.isspace() for c in key) or not key.isprintable():
            raise SettingsError(name, "a key may not contain spaces or control characters")
    return keys


def _log_level(env: Mapping[str, str], name: str, default: str) -> str:
    raw = (_optional(env, name) or default).upper()
    if raw not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise SettingsError(name, f"{raw!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return raw


_Choice = TypeVar("_Choice", bound=str)


def _choice(
    env: Mapping[str, str], name: str, default: _Choice, choices: tuple[_Choice, ...]
) -> _Choice:
    """One of ``choices``, case-insensitively; ``default`` when unset."""
    raw = (_optional(env, name) or default).lower()
    for choice in choices:
        if raw == choice:
            return choice
    raise SettingsError(name, f"{raw!r} is not one of {', '.join(choices)}")
