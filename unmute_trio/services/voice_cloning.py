"""Client of the voice-cloning service (moshi-server ``PyPost`` module, docs/services.md).

``POST <url>/api/voice`` with the raw uploaded bytes; the answer is a msgpack ``Voice`` message
that is later sent verbatim to the TTS as its first message. We decode it once here so that a
broken answer is reported now (HTTP 502 to the uploader) and not as a silent default voice later.
"""

from __future__ import annotations

import httpx
import trio

from unmute_trio.errors import ServiceDisconnected, ServiceProtocolError, ServiceTimeout
from unmute_trio.protocol import moshi
from unmute_trio.protocol.errors import WireFormatError

SERVICE = "voice_cloning"
# A Mimi latent of 1×512×125 float32 packs to ~320 KB; anything far larger is not a voice.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


async def clone_voice(
    http: httpx.AsyncClient, base_url: str, audio: bytes, *, timeout_s: float
) -> bytes:
    """Return the raw msgpack ``Voice`` message for ``audio``; raise a ServiceError otherwise."""
    url = base_url.rstrip("/") + "/api/voice"
    try:
        with trio.fail_after(timeout_s):
            async with http.stream(
                "POST",
                url,
                content=audio,
                headers={"Content-Type": "application/octet-stream"},
                timeout=timeout_s,
            ) as response:
                if response.status_code != 200:
                    raise ServiceProtocolError(
                        SERVICE, f"the service answered HTTP {response.status_code}"
                    )
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise ServiceProtocolError(SERVICE, "the answer is too large for a voice")
    except trio.TooSlowError:
        raise ServiceTimeout(SERVICE, f"no answer within {timeout_s:g} s") from None
    except httpx.TimeoutException as e:
        raise ServiceTimeout(SERVICE, f"no answer within {timeout_s:g} s ({e!r})") from None
    except httpx.TransportError as e:
        raise ServiceDisconnected(SERVICE, f"cannot reach {url}: {e!r}") from None
    except httpx.HTTPError as e:  # e.g. a body that fails to decode
        raise ServiceProtocolError(SERVICE, f"broken answer: {e!r}") from None
    try:
        msg = moshi.decode_tts_client(bytes(body))
    except WireFormatError as e:
        raise ServiceProtocolError(SERVICE, f"the answer is not a Voice message: {e}") from None
    if not isinstance(msg, moshi.Voice):
        raise ServiceProtocolError(SERVICE, f"expected a Voice message, got {msg.type}")
    return bytes(body)
