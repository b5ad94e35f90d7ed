"""Prometheus metrics, with the exact names of the original Unmute (docs/services.md).

Existing Grafana dashboards query these names, so they are kept even where they are
inconsistent (``worker_hard_tts_misses`` vs ``worker_stt_hard_misses``). Counters are exposed
with the ``_total`` suffix by prometheus_client. Gauges declare ``multiprocess_mode="livesum"`` so
that with several hypercorn workers (``PROMETHEUS_MULTIPROC_DIR`` set) ``/metrics`` reports the
sum over live workers.

Metric updates are synchronous and take a threading lock without awaiting, so they are safe to
call from trio tasks. The decorator forms (``@histogram.time()``) do not work on coroutines: time
explicitly instead.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Summary

SESSION_DURATION_BINS = [1.0, 10.0, 30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0]
TURN_DURATION_BINS = [0.5, 1.0, 5.0, 10.0, 20.0, 40.0, 60.0]
GENERATION_DURATION_BINS = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
PING_BINS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2]
TTFT_BINS_STT = [0.010, 0.015, 0.025, 0.050, 0.075, 0.100]
TTFT_BINS_TTS = [0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.55]
TTFT_BINS_VLLM = [0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0]
NUM_WORDS_REQUEST_BINS = [50, 100, 200, 500, 1000, 2000, 4000, 6000, 8000]
NUM_WORDS_STT_BINS = [0, 50, 100, 200, 500, 1000, 2000, 4000]
NUM_WORDS_REPLY_BINS = [5, 10, 25, 50, 100, 200]


def _gauge(name: str) -> Gauge:
    return Gauge(name, "", multiprocess_mode="livesum")


# Sessions
SESSIONS = Counter("worker_sessions", "")
SERVICE_MISSES = Counter("worker_service_misses", "")
HARD_SERVICE_MISSES = Counter("worker_hard_service_misses", "")
FORCE_DISCONNECTS = Counter("worker_force_disconnects", "")
FATAL_SERVICE_MISSES = Counter("worker_fatal_service_misses", "")
HARD_ERRORS = Counter("worker_hard_errors", "")
ACTIVE_SESSIONS = _gauge("worker_active_sessions")
SESSION_DURATION = Histogram("worker_session_duration", "", buckets=SESSION_DURATION_BINS)
HEALTH_OK = Summary("worker_health_ok", "")

# Speech-to-text
STT_SESSIONS = Counter("worker_stt_sessions", "")
STT_ACTIVE_SESSIONS = _gauge("worker_stt_active_sessions")
STT_MISSES = Counter("worker_stt_misses", "")
STT_HARD_MISSES = Counter("worker_stt_hard_misses", "")
STT_SENT_FRAMES = Counter("worker_stt_sent_frames", "")
STT_RECV_FRAMES = Counter("worker_stt_recv_frames", "")
STT_RECV_WORDS = Counter("worker_stt_recv_words", "")
STT_PING_TIME = Histogram("worker_stt_ping_time", "", buckets=PING_BINS)
STT_FIND_TIME = Histogram("worker_stt_find_time", "", buckets=PING_BINS)
STT_SESSION_DURATION = Histogram("worker_stt_session_duration", "", buckets=SESSION_DURATION_BINS)
STT_AUDIO_DURATION = Histogram("worker_stt_audio_duration", "", buckets=SESSION_DURATION_BINS)
STT_NUM_WORDS = Histogram("worker_stt_num_words", "", buckets=NUM_WORDS_STT_BINS)
STT_TTFT = Histogram("worker_stt_ttft", "", buckets=TTFT_BINS_STT)

# Text-to-speech
TTS_SESSIONS = Counter("worker_tts_sessions", "")
TTS_ACTIVE_SESSIONS = _gauge("worker_tts_active_sessions")
TTS_MISSES = Counter("worker_tts_misses", "")
TTS_HARD_MISSES = Counter("worker_hard_tts_misses", "")  # sic: the original's name
TTS_INTERRUPT = Counter("worker_tts_interrupt", "")
TTS_SENT_FRAMES = Counter("worker_tts_sent_frames", "")
TTS_RECV_FRAMES = Counter("worker_tts_recv_frames", "")
TTS_RECV_WORDS = Counter("worker_tts_recv_words", "")
TTS_PING_TIME = Histogram("worker_tts_ping_time", "", buckets=PING_BINS)
TTS_FIND_TIME = Histogram("worker_tts_find_time", "", buckets=PING_BINS)
TTS_TTFT = Histogram("worker_tts_ttft", "", buckets=TTFT_BINS_TTS)
TTS_AUDIO_DURATION = Histogram("worker_tts_audio_duration", "", buckets=TURN_DURATION_BINS)
TTS_GEN_DURATION = Histogram("worker_tts_gen_duration", "", buckets=GENERATION_DURATION_BINS)

# LLM (named vllm in the original whatever the server is)
VLLM_SESSIONS = Counter("worker_vllm_sessions", "")
VLLM_ACTIVE_SESSIONS = _gauge("worker_vllm_active_sessions")
VLLM_INTERRUPTS = Counter("worker_vllm_interrupt", "")
VLLM_HARD_ERRORS = Counter("worker_vllm_hard_errors", "")
VLLM_SENT_WORDS = Counter("worker_vllm_sent_words", "")
VLLM_RECV_WORDS = Counter("worker_vllm_recv_words", "")
VLLM_TTFT = Histogram("worker_vllm_ttft", "", buckets=TTFT_BINS_VLLM)
VLLM_REQUEST_LENGTH = Histogram("worker_vllm_request_length", "", buckets=NUM_WORDS_REQUEST_BINS)
VLLM_REPLY_LENGTH = Histogram("worker_vllm_reply_length", "", buckets=NUM_WORDS_REPLY_BINS)
VLLM_GEN_DURATION = Histogram("worker_vllm_gen_duration", "", buckets=GENERATION_DURATION_BINS)

# Kept for dashboard compatibility; voice donation is not implemented (the project closed).
VOICE_DONATION_SUBMISSIONS = Counter("worker_voice_donation_submissions", "")

# Ours (not in the original): failed calls to the shared voice store (Redis), by operation:
# add (an upload), get (a turn with a cloned voice), check (a health probe).
VOICE_STORE_ERRORS = Counter(
    "worker_voice_store_errors", "Failed voice store calls", labelnames=["operation"]
)

# Per-service lookup counters, used by service discovery.
MISSES_BY_SERVICE = {"stt": STT_MISSES, "tts": TTS_MISSES}
HARD_MISSES_BY_SERVICE = {"stt": STT_HARD_MISSES, "tts": TTS_HARD_MISSES}
PING_TIME_BY_SERVICE = {"stt": STT_PING_TIME, "tts": TTS_PING_TIME}
FIND_TIME_BY_SERVICE = {"stt": STT_FIND_TIME, "tts": TTS_FIND_TIME}
