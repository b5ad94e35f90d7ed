"""The Quart-Trio application factory."""

from __future__ import annotations

import logging
from typing import cast

import httpx
import trio
from quart_trio import QuartTrio

from unmute_trio.errors import ServiceError
from unmute_trio.services.health import HealthChecker
from unmute_trio.services.llm import LLMClient
from unmute_trio.services.news import NewsClient
from unmute_trio.session.runner import run_conversation
from unmute_trio.settings import Settings
from unmute_trio.voice_store import VoiceStore
from unmute_trio.voices import VoiceSample, load_voices
from unmute_trio.web import hypercorn_fixes
from unmute_trio.web.cors import install_cors
from unmute_trio.web.drain import Drain, install_drain
from unmute_trio.web.proxy import ASGIApp, ProxyHeadersMiddleware
from unmute_trio.web.realtime import install_realtime
from unmute_trio.web.routes import install_routes
from unmute_trio.web.state import AppState, SessionRunner

log = logging.getLogger(__name__)

MODEL_DETECTION_TIMEOUT_S = 10.0


async def _detect_llm_model(llm: LLMClient) -> None:
    """Find the LLM's model once at start: sessions then never wait for it, and a wrong setup
    (no model, several models, server down) shows in the log before the first conversation."""
    with trio.move_on_after(MODEL_DETECTION_TIMEOUT_S):
        try:
            log.info("LLM model: %s", await llm.model())
        except ServiceError as e:
            log.warning("LLM model not known yet (sessions will retry): %s", e)


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
    if voices is None:
        voices = load_voices(settings.voices_file)
    app = QuartTrio("unmute_trio")
    # Quart enforces this on the body as it is read (e.g. chunked uploads with no length).
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    st = AppState(
        settings=settings,
        voices=voices,
        voice_store=VoiceStore(
            ttl_s=settings.custom_voice_ttl_s,
            max_entries=settings.max_custom_voices,
            clock=trio.current_time,
        ),
        run_session=session_runner or run_conversation,
        drain=Drain(settings.drain_timeout_s),
    )
    app.extensions["unmute"] = st

    @app.before_serving
    async def open_clients() -> None:
        # One pooled client for health probes, voice cloning and the LLM. Per-request timeouts
        # are always given explicitly; this default only bounds anything that forgets to.
        st.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
        st.health = HealthChecker(settings, st.http)
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

    install_cors(app, settings.cors_origins)
    install_routes(app)
    install_realtime(app)
    install_drain(app, st.drain)
    # Forwarding headers and path prefixes (docs/deployment.md); wrapping asgi_app keeps `app`
    # a QuartTrio for hypercorn and the tests.
    # Quart types asgi_app with hypercorn's scope TypedDicts; the middleware is a plain ASGI app.
    app.asgi_app = ProxyHeadersMiddleware(  # type: ignore[method-assign, assignment]  # see above
        cast(ASGIApp, app.asgi_app),
        trusted_hops=settings.trusted_proxy_hops,
        mode=settings.proxy_headers,
    )
    return app
