"""The original Unmute frontend's Opus decoder plays the server's bot audio.

The frontend hands every ``response.audio.delta`` to opus-recorder's ``decoderWorker`` (8.0.5,
the version it pins), which keeps one Opus decoder for the whole connection, skips the pages
numbered 0 and 1 (the headers) and keeps nothing between messages. The server's stream is made
of the TTS's own Opus packets, one encoder per reply (``UNMUTE_TTS_AUDIO=opus``), re-framed
into one Ogg stream. Here the real worker, fetched from npm by ``scripts/opus-recorder.py``
(``make test`` runs it), decodes in headless Chromium the deltas of a real session with two
replies, as the frontend does, and must give the audio sphn decodes from the same deltas.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sphn
import trio

from tests.browser.cdp import launch_chromium
from tests.browser.stack import require_chromium, skip_on_request
from tests.session_helpers import greet, say, wait_while_silent
from unmute_trio.testing.harness import conversation_stack
from unmute_trio.testing.voice_client import VoiceClient

pytestmark = skip_on_request

FETCH_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "opus-recorder.py"
REQUIRED = os.environ.get("UNMUTE_REQUIRE_LOCAL_ENGINES") == "1"  # set by make test

# As useAudioProcessor.ts configures it (docs of the original: 960 × ctxRate / 24000).
DECODE = """(async () => {
  const worker = new Worker('decoderWorker.min.js');
  let samples = 0, energy = 0;
  const done = new Promise((resolve, reject) => {
    worker.onerror = (e) => reject(new Error('worker: ' + e.message));
    worker.onmessage = (e) => {
      if (e.data === null) { resolve(); return; }
      const channel = e.data[0];
      samples += channel.length;
      for (const v of channel) energy += v * v;
    };
  });
  worker.postMessage({command: 'init', decoderSampleRate: 24000,
                      outputBufferSampleRate: 48000, bufferLength: 1920, resampleQuality: 0});
  for (const delta of window.__deltas) {
    const pages = Uint8Array.from(atob(delta), (c) => c.charCodeAt(0));
    worker.postMessage({command: 'decode', pages});
  }
  worker.postMessage({command: 'done'});
  await done;
  return {samples, energy};
})()"""


def decoder_files() -> Path:
    """The cached worker (fetched by scripts/opus-recorder.py); skip or fail without it."""
    result = subprocess.run(
        [sys.executable, str(FETCH_SCRIPT)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        reason = f"opus-recorder could not be fetched: {result.stderr.strip()}"
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(result.stdout.strip())


async def serve_files(directory: Path, task_status: trio.TaskStatus[int]) -> None:
    """A minimal static HTTP server (GET only) for the page and the worker's two files."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                request += chunk
            name = request.split(b" ", 2)[1].decode().lstrip("/") or "index.html"
            path = directory / name
            if name == "index.html":
                body, kind = b"<!doctype html><title>decoder</title>", "text/html"
            elif "/" not in name and path.is_file():
                body = path.read_bytes()
                kind = "application/wasm" if name.endswith(".wasm") else mimetypes.types_map[".js"]
            else:
                await stream.send_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            head = f"HTTP/1.0 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
            await stream.send_all(head.encode() + body)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_the_original_frontend_decoder_plays_two_replies(tmp_path: Path) -> None:
    require_chromium()
    files = decoder_files()
    with trio.fail_after(90):
        async with conversation_stack() as stack:
            async with VoiceClient.connect(stack.realtime_url) as client:
                await greet(client)
                mark = len(client.events)
                await say(client, 1.5, seed=0)
                await wait_while_silent(client, "response.audio.done", after=mark)
            records = list(stack.tts.connections_log)
            assert [r.format for r in records] == ["OggOpusMessagePack"] * 2
        deltas = [event["delta"] for event in client.of_type("response.audio.delta")]
        reader = sphn.OpusStreamReader(24_000)
        reference = np.concatenate(
            [
                np.asarray(reader.append_bytes(base64.b64decode(d)), np.float32).reshape(-1)
                for d in deltas
            ]
        )
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_files, files)
            async with launch_chromium(
                tmp_path / "profile", stderr_path=tmp_path / "chromium.log"
            ) as page:
                await page.navigate(f"http://127.0.0.1:{port}/index.html")
                await page.evaluate(f"window.__deltas = {json.dumps(deltas)}")
                result = await page.evaluate(DECODE)
                why = f"{result}\n{page.console_dump()}"
            nursery.cancel_scope.cancel()
    # Every packet decoded: twice sphn's 24 kHz samples at 48 kHz, plus the zeros with which
    # the worker fills its last 1920-sample buffer (a whole one when the audio fills the others).
    expected = 2 * len(reference)
    assert expected < result["samples"] <= expected + 1920, why
    # Two replies (the greeting and an answer), every sample the TTS sent.
    assert len(reference) == sum(r.frames_sent for r in records) * 1920 > 3 * 24_000
    # The same sound: equal energy per 24 kHz sample (the 2x resampling keeps the level).
    ratio = result["energy"] / 2 / float(np.sum(reference.astype(np.float64) ** 2))
    assert 0.9 < ratio < 1.1, f"energy ratio {ratio:.3f}: {why}"
