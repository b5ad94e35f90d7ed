"""A simulated moshi-server voice-cloning endpoint (docs/services.md).

- ``POST /api/voice`` with an audio file as the raw body (Content-Type ignored, no auth, 16 MiB
  limit) → 200 with a msgpack ``{"type": "Voice", "embeddings": [f32...], "shape": [1, 512,
  125]}``, the shape of a Mimi latent of 10 s of audio. The embedding is pseudo-random, seeded
  by a hash of the body, so the same file always gives the same voice.
- A body the real server could not decode → HTTP 500 with an empty body, as the real one. The
  real server decodes with symphonia, which reads WAV, MP3, FLAC, Ogg Vorbis/FLAC, MP4/AAC/ALAC
  and AIFF but has no Opus decoder; the simulator checks the container's magic bytes (and the
  codec inside Ogg) instead of decoding.
- ``GET /api/build_info`` (the health probe) → moshi-server's build-info JSON.

``delay_s`` delays every answer (to exercise client timeouts); ``fail`` forces the 500.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import trio
from quart import Response, request
from quart_trio import QuartTrio

from unmute_trio.protocol import moshi
from unmute_trio.testing.sim_base import ServedSimulator

VOICE_SHAPE = (1, 512, 125)  # Mimi latent: batch, channels, 12.5 Hz frames over 10 s
MAX_BODY_BYTES = 16 * 1024 * 1024  # moshi-server's body limit for this endpoint

BUILD_INFO = {
    "build_timestamp": "1970-01-01T00:00:00Z",
    "build_date": "1970-01-01",
    "git_branch": "sim",
    "git_timestamp": "1970-01-01T00:00:00Z",
    "git_date": "1970-01-01",
    "git_hash": "0000000",
    "git_describe": "unmute-trio-sim",
    "rustc_host_triple": "sim",
    "rustc_version": "sim",
    "cargo_target_triple": "sim",
}


@dataclasses.dataclass
class VoiceCloningSimConfig:
    delay_s: float = 0.0  # wait this long before every answer
    fail: bool = False  # answer every request with HTTP 500


def is_decodable_audio(data: bytes) -> bool:
    """Whether the real service (symphonia, no Opus) could decode ``data``, by magic bytes."""
    if len(data) < 12:
        return False
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return True
    if data[:4] == b"FORM" and data[8:12] in (b"AIFF", b"AIFC"):
        return True
    if data[:4] == b"fLaC" or data[:3] == b"ID3" or data[4:8] == b"ftyp":
        return True
    if data[0] == 0xFF and data[1] & 0xE0 == 0xE0:  # an MPEG audio / ADTS frame header
        return True
    if data[:4] == b"OggS":
        # The first page carries the codec's identification header right after the segment
        # table: Vorbis and FLAC are supported, Opus ("OpusHead") is not.
        header_end = 27 + data[26]
        ident = data[header_end : header_end + 8]
        return ident[:7] == b"\x01vorbis" or ident[:5] == b"\x7fFLAC"
    return False


def voice_embedding(data: bytes) -> np.ndarray:
    """The deterministic pseudo-embedding of an audio file, flattened, float32."""
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    size = int(np.prod(VOICE_SHAPE))
    return rng.standard_normal(size, dtype=np.float32)


class VoiceCloningSimulator(ServedSimulator):
    """The simulator: ``app`` (Quart-Trio), ``serve()``; ``open_connections`` counts requests
    in progress and ``received`` how many ``/api/voice`` requests arrived."""

    def __init__(self, config: VoiceCloningSimConfig | None = None) -> None:
        self.config = config or VoiceCloningSimConfig()
        self.open_connections = 0
        self.received = 0
        self.app = self._make_app()

    def _make_app(self) -> QuartTrio:
        app = QuartTrio(__name__)
        app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

        @app.get("/api/build_info")
        async def build_info() -> Response:
            return Response(json.dumps(BUILD_INFO), content_type="application/json")

        @app.post("/api/voice")
        async def voice() -> Response:
            self.received += 1
            self.open_connections += 1
            try:
                body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
                await trio.sleep(self.config.delay_s)
                if self.config.fail or not is_decodable_audio(body):
                    return Response(b"", status=500)
                shape = list(VOICE_SHAPE)
                message = moshi.Voice(embeddings=voice_embedding(body), shape=shape)
                return Response(moshi.encode(message), content_type="application/octet-stream")
            finally:
                self.open_connections -= 1

        return app
