# The unmute-trio backend: `docker build -t unmute-trio .`
# Slim, non-root, one hypercorn process per container (scale with replicas, docs/deployment.md).
# The same image runs the simulators: `docker run unmute-trio unmute-trio sim --host 0.0.0.0`.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
# Only what the package needs, so code changes elsewhere do not invalidate this layer.
COPY pyproject.toml README.md /src/
COPY unmute_trio /src/unmute_trio
RUN /opt/venv/bin/pip install /src

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UNMUTE_VOICES_FILE=/app/voices.yaml
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home unmute
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY voices.yaml hypercorn.toml /app/
USER unmute
EXPOSE 8000
# Liveness only: "/" answers without probing STT/TTS/LLM (a backend is not restarted because a
# GPU service is down). It answers 503 while draining; the proxy's own, faster health check on
# the same path is what takes a draining replica out of rotation.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/', timeout=2)"]
# SIGTERM drains: sessions finish their reply and close with 1001 (UNMUTE_DRAIN_TIMEOUT_S, then
# hypercorn's graceful_timeout). Give the container more than both: stop_grace_period >= 30s.
STOPSIGNAL SIGTERM
CMD ["unmute-trio", "serve", "--config", "/app/hypercorn.toml"]
