"""The Quart-Trio application factory, and the logging set-up of the processes that serve it."""

from __future__ import annotations

import errno
import logging
import sys
import time
from typing import Any, cast

import httpx
import trio
from hypercorn.protocol import http_stream
from hypercorn.protocol.events import StreamClosed
from quart_trio import QuartTrio

from unmute_trio.errors import ServiceError
from unmute_trio.services.health import HealthChecker
from unmute_trio.services.llm import LLMClient, LLMConfigError
from unmute_trio.services.news import NewsClient
from unmute_trio.services.redis_voices import RedisVoiceStore
from unmute_trio.session.runner import run_conversation
from unmute_trio.settings import Settings
from unmute_trio.voice_store import MemoryVoiceStore, VoiceStore
from unmute_trio.voices import VoiceSample, load_voices
from unmute_trio.web import hypercorn_fixes
from unmute_trio.web.cors import install_cors
from unmute_trio.web.drain import Drain, install_drain
from unmute_trio.web.proxy import ASGIApp, ProxyHeadersMiddleware
from unmute_trio.web.realtime import with_realtime
from unmute_trio.web.routes import install_routes
from unmute_trio.web.state import AppState, SessionRunner

# The shared HTTP client's pool: httpx's 100 connections, all of which may stay open between
# requests (httpx keeps 20: with more sessions than that, replies opened new connections to the
# LLM). An idle connection is dropped after 4 s, before the servers an LLM usually runs behind
# close it (uvicorn for vLLM, hypercorn, llama.cpp's server: 5 s). With httpx's default of 5 s,
# a request sent at the moment the server closed the connection failed with "Server disconnected
# without sending a response" (seen in a capacity run, where sessions reach the LLM every ~7 s).
HTTP_KEEPALIVE_EXPIRY_S = 4.0
HTTP_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=100, keepalive_expiry=HTTP_KEEPALIVE_EXPIRY_S
)

log = logging.getLogger(__name__)

MODEL_DETECTION_TIMEOUT_S = 10.0

# ------------------------------------------------------------------ logging

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Libraries that log every WebSocket frame, HTTP/2 header or pooled connection at DEBUG (under
# UNMUTE_LOG_LEVEL=DEBUG, nearly all lines were trio-websocket's frames) and every outgoing
# request at INFO (httpx: each health probe and LLM request). They stay at WARNING whatever
# UNMUTE_LOG_LEVEL says, unless a logging configuration set their level first or sets it after
# (docs/deployment.md, "Logs and metrics", shows a hypercorn logconfig_dict that does).
QUIET_LOGGERS = ("trio-websocket", "wsproto", "hpack", "httpcore", "httpx")
_quieted: set[str] = set()


def configure_logging(level: str) -> None:
    """Log to standard error at ``level`` (``UNMUTE_LOG_LEVEL``), the same way under
    ``unmute-trio serve`` and under ``hypercorn … unmute_trio.asgi:app``.

    Like :func:`logging.basicConfig`, it adds a handler only if the root logger has none (an
    application that configured logging keeps its handlers); it always sets the root level.
    hypercorn's own ``errorlog = "-"`` prints its lines itself and also passes them on to the
    root logger: those are not printed a second time. Calling it again changes the level.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(_not_printed_by_hypercorn)
        root.addHandler(handler)
    root.setLevel(level)
    quiet = max(logging.WARNING, logging.getLevelName(level))
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or name in _quieted:
            logger.setLevel(quiet)
            _quieted.add(name)


def _not_printed_by_hypercorn(record: logging.LogRecord) -> bool:
    # hypercorn's errorlog "-" gives "hypercorn.error" a stream handler of its own and leaves
    # propagation on: without this, each of its lines ("Running on ...") came out twice.
    return not (record.name == "hypercorn.error" and logging.getLogger(record.name).handlers)


def cannot_listen_message(bind: str, error: OSError, option: str) -> str:
    """One line for a server that cannot listen on ``bind`` (``host:port``): what is wrong and
    what to change; ``option`` is the command-line option that picks another port."""
    host, _, port = bind.rpartition(":")
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} is in use (on {host}): stop the other server there or choose another"
            f" port with {option}"
        )
    if error.errno == errno.EACCES:
        return f"no permission to listen on port {port}: use a port above 1023 with {option}"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {bind}: {host} is not an address of this machine"
    return f"cannot listen on {bind}: {error.strerror or error}"


# ------------------------------------------------------------------ hypercorn's access log

_LOGGED_ONCE_MARK = "_unmute_trio_logs_once"
_UNLOGGED = "_unmute_trio_unlogged"


def log_each_request_once() -> None:
    """hypercorn (checked on 0.18.0) logs some HTTP requests twice: first with status "-",
    then with the real status.

    When the client closes its connection as soon as it has the whole response (curl, a health
    check), the close can arrive before the app's last ``http.response.body`` message has been
    handled: hypercorn then logs the request as unanswered at once, and logs it again with its
    status when that message completes the response. Here the request is logged once: with the
    status if the app completed the response, else with "-" when the app has finished.
    Idempotent; applied by :func:`create_app`.
    """
    stream = http_stream.HTTPStream
    handle, app_send = stream.handle, stream.app_send
    if getattr(handle, _LOGGED_ONCE_MARK, False):
        return
    closed = http_stream.ASGIHTTPState.CLOSED

    async def handle_logged_once(self: Any, event: Any) -> None:
        if not (isinstance(event, StreamClosed) and self.state != closed and self.app_put):
            await handle(self, event)
            return
        # hypercorn's own handling of this event, minus its early access-log line.
        self.closed = True
        setattr(self, _UNLOGGED, True)
        await self.app_put({"type": "http.disconnect"})

    async def app_send_logged_once(self: Any, message: Any) -> None:
        await app_send(self, message)
        if message is None and getattr(self, _UNLOGGED, False) and self.state != closed:
            setattr(self, _UNLOGGED, False)
            await self.config.log.access(self.scope, None, time.time() - self.start_time)

    setattr(handle_logged_once, _LOGGED_ONCE_MARK, True)
    stream.handle = handle_logged_once  # type: ignore[method-assign]  # the patch
    stream.app_send = app_send_logged_once  # type: ignore[method-assign]  # the patch


# ------------------------------------------------------------------ the app


async def _detect_llm_model(llm: LLMClient) -> None:
    """Find the LLM's model once at start and check that the server serves it: sessions then
    never wait for it, and a wrong setup (no model, several models, a KYUTAI_LLM_MODEL the
    server does not list, server down) shows in the log before the first conversation."""
    with trio.move_on_after(MODEL_DETECTION_TIMEOUT_S):
        try:
            log.info("LLM model: %s", await llm.check_model())
        except LLMConfigError as e:
            log.warning("LLM misconfigured, every reply will fail: %s", e.detail)
        except ServiceError as e:
            if llm.known_model is not None:  # configured: replies may work all the same
                log.warning("cannot check that the LLM serves %s: %s", llm.known_model, e)
            else:
                log.warning("LLM model not known yet (sessions will retry): %s", e)


def make_voice_store(settings: Settings) -> VoiceStore:
    """Redis when ``UNMUTE_REDIS_URL`` is set (shared by replicas), else this process's memory."""
    if settings.redis_url is not None:
        store = RedisVoiceStore(
            settings.redis_url,
            ttl_s=settings.custom_voice_ttl_s,
            timeout_s=settings.redis_timeout_s,
            max_connections=settings.redis_max_connections,
        )
        log.info("cloned voices are kept in Redis at %s", store.where)
        return store
    return MemoryVoiceStore(
        ttl_s=settings.custom_voice_ttl_s,
        max_entries=settings.max_custom_voices,
        clock=trio.current_time,
    )


def create_app(
    settings: Settings,
    *,
    voices: list[VoiceSample] | None = None,
    session_runner: SessionRunner | None = None,
) -> QuartTrio:
    """Build the app.

    ``voices`` defaults to ``settings.voices_file``, read now (at start), so that a broken file
    fails before the server accepts anyone (:class:`~unmute_trio.voices.VoiceFileError`).
    """
    hypercorn_fixes.apply()
    log_each_request_once()
    if voices is None:
        voices = load_voices(settings.voices_file)
    app = QuartTrio("unmute_trio")
    # Quart enforces this on the body as it is read (e.g. chunked uploads with no length).
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    st = AppState(
        settings=settings,
        voices=voices,
        voice_store=make_voice_store(settings),
        run_session=session_runner or run_conversation,
        drain=Drain(settings.drain_timeout_s),
    )
    app.extensions["unmute"] = st

    @app.before_serving
    async def open_clients() -> None:
        # One pooled client for health probes, voice cloning and the LLM. Per-request timeouts
        # are always given explicitly; this default only bounds anything that forgets to.
        st.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=HTTP_LIMITS)
        st.health = HealthChecker(settings, st.http, st.voice_store)
        st.llm = LLMClient(
            settings.llm_url,
            api_key=settings.llm_api_key,
            model=settings.llm_model,
            http=st.http,
            connect_timeout_s=settings.llm_connect_timeout_s,
            read_timeout_s=settings.llm_read_timeout_s,
        )
        st.news = NewsClient(st.http, settings.newsapi_api_key)
        app.nursery.start_soon(_detect_llm_model, st.llm)
        log.info(
            "serving; STT %s, TTS %s, LLM %s, voice cloning %s, at most %d sessions",
            settings.stt_url,
            settings.tts_url,
            settings.llm_url,
            settings.voice_cloning_url,
            settings.max_sessions,
        )

    @app.after_serving
    async def close_clients() -> None:
        if st.http is not None:
            await st.http.aclose()
        await st.voice_store.aclose()

    install_cors(app, settings.cors_origins)
    install_routes(app)
    install_drain(app, st.drain)
    # Forwarding headers and path prefixes (docs/deployment.md); wrapping asgi_app keeps `app`
    # a QuartTrio for hypercorn and the tests.
    # Quart types asgi_app with hypercorn's scope TypedDicts; the middleware is a plain ASGI app.
    # /v1/realtime is served in front of Quart (web/realtime.py says why), behind the proxy
    # middleware so that it sees the client's scheme, host and path as the others do.
    app.asgi_app = ProxyHeadersMiddleware(  # type: ignore[method-assign, assignment]  # see above
        with_realtime(cast(ASGIApp, app.asgi_app), st),
        trusted_hops=settings.trusted_proxy_hops,
        mode=settings.proxy_headers,
    )
    return app
