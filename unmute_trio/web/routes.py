"""HTTP routes: greeting, metrics, health, voice list and voice upload (docs/protocol.md)."""

from __future__ import annotations

import logging
import os

import trio
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from quart import Quart, Response, current_app, jsonify, request

from unmute_trio import metrics
from unmute_trio.errors import ServiceError, ServiceProtocolError
from unmute_trio.services.voice_cloning import clone_voice
from unmute_trio.voice_store import VoiceStoreUnavailable
from unmute_trio.voices import public_voices
from unmute_trio.web.page import index_response, install_page, wants_html
from unmute_trio.web.state import AppState

log = logging.getLogger(__name__)


def state() -> AppState:
    return current_app.extensions["unmute"]


def error_response(status: int, detail: str) -> tuple[dict[str, str], int]:
    # FastAPI's shape ({"detail": ...}), which clients of the original already understand.
    return {"detail": detail}, status


# What an upload that stalls gets (docs/configuration.md, UNMUTE_UPLOAD_BODY_TIMEOUT_S).
UploadAnswer = tuple[dict[str, str], int] | tuple[dict[str, str], int, dict[str, str]]


def install_routes(app: Quart) -> None:
    install_page(app)

    @app.get("/")
    async def root() -> dict[str, str] | Response:
        if wants_html(request.accept_mimetypes):
            return await index_response()  # the built-in browser client (web/page.py)
        return {"message": "unmute-trio: connect a voice client to /v1/realtime"}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Several hypercorn workers: sum the per-process files (docs/deployment.md).
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)
        else:
            registry = REGISTRY
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/health")
    async def health() -> dict[str, object]:
        st = state()
        assert st.health is not None
        result = await st.health.check()
        metrics.HEALTH_OK.observe(1.0 if result.ok else 0.0)
        # The built-in page shows its API key field only when a key is needed.
        return {**result.as_json(), "api_key_required": bool(st.settings.api_keys)}

    @app.get("/v1/voices")
    async def list_voices() -> Response:
        return jsonify(public_voices(state().voices))

    @app.post("/v1/voices")
    async def upload_voice() -> UploadAnswer | dict[str, str]:
        st = state()
        limit = st.settings.max_upload_bytes
        length = request.content_length
        if length is None:
            return error_response(411, "Content-Length header required")
        if length > limit:
            return error_response(
                413, f"File too large: {length} bytes, the limit is {limit} bytes"
            )
        # The whole body must arrive in time: a client that announces more than it sends (or
        # drips it) would otherwise hold the connection for Quart's BODY_TIMEOUT (60 s), or
        # forever with it disabled. Ours replaces Quart's for this request; when it runs out,
        # the answer is 408 and hypercorn closes the connection, since the request is
        # unfinished (that close needs web/hypercorn_fixes.py).
        body_timeout_s = st.settings.upload_body_timeout_s
        request.body_timeout = None
        with trio.move_on_after(body_timeout_s) as body_wait:
            files = await request.files
        if body_wait.cancelled_caught:
            log.info("voice upload: the request body did not arrive within %g s", body_timeout_s)
            detail = f"The request body did not arrive within {body_timeout_s:g} s"
            return {"detail": detail}, 408, {"Connection": "close"}
        upload = files.get("file")
        if upload is None:
            return error_response(400, "Expected a multipart/form-data field named 'file'")
        audio = upload.read()
        if not audio:
            return error_response(400, "The uploaded file is empty")
        assert st.http is not None
        try:
            voice_message = await clone_voice(
                st.http,
                st.settings.voice_cloning_url,
                audio,
                timeout_s=st.settings.voice_cloning_timeout_s,
            )
        except ServiceProtocolError as e:
            log.warning("voice cloning failed: %s", e)
            return error_response(502, f"Voice cloning failed: {e.detail}")
        except ServiceError as e:
            log.warning("voice cloning unavailable: %s", e)
            return error_response(
                503,
                f"Voice cloning is unavailable: {e.detail}. It needs Kyutai's voice-cloning "
                "server at KYUTAI_VOICE_CLONING_URL; the local CPU engines cannot clone voices.",
            )
        try:
            name = await st.voice_store.add(voice_message)
        except VoiceStoreUnavailable as e:
            log.warning("voice upload: the voice store is unavailable: %s", e)
            return error_response(
                503, f"The voice store is unavailable, so the voice cannot be kept: {e}"
            )
        log.info("cloned voice %s from %d bytes of audio", name, len(audio))
        return {"name": name}
