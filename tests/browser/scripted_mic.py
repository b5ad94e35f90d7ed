"""A microphone the test speaks into when it decides to, instead of a file on a fixed timeline.

Chromium's fake capture device plays a WAV file on a loop from the moment the page opens the
microphone, so a test scripted that way must guess how long the engines will take: on a slower
machine the bot is still answering when the next sentence starts and cuts it off. Here the
page's own ``getUserMedia`` call still goes to Chromium's fake device (fed a silent file, so the
permission path and the constraints are the real ones), and its track is mixed in a Web Audio
graph with clips the test schedules through :func:`say` — after it has seen what it waits for.
The page receives the mix as its microphone and captures, encodes and sends it as usual.
"""

from __future__ import annotations

import base64
import wave
from pathlib import Path

import numpy as np

from tests.browser.cdp import Page
from tests.browser.stack import FAKE_MEDIA_FLAGS, FAKE_MIC_RATE

# Runs in the page before its own scripts (Page.addScriptToEvaluateOnNewDocument).
_INSTALL = r"""
(() => {
  const devices = navigator.mediaDevices;
  const openDevice = devices.getUserMedia.bind(devices);
  const mic = { context: null, destination: null, endsAt: 0 };
  devices.getUserMedia = async (constraints) => {
    const device = await openDevice(constraints);
    if (!constraints || !constraints.audio) return device;
    mic.context = new AudioContext({ sampleRate: 24000 });
    await mic.context.resume();
    mic.destination = mic.context.createMediaStreamDestination();
    mic.context.createMediaStreamSource(device).connect(mic.destination);
    const [track] = mic.destination.stream.getAudioTracks();
    const stop = track.stop.bind(track);
    track.stop = () => {  // the page stops the mix: release the device and the graph too
      stop();
      for (const t of device.getTracks()) t.stop();
      if (mic.context.state !== "closed") mic.context.close();
    };
    return mic.destination.stream;
  };
  window.__scriptedMic = {
    ready: () => mic.context !== null && mic.context.state === "running",
    // Queue a clip (base64 little-endian float32, 24 kHz) after anything still playing;
    // returns the seconds until it has been played entirely.
    say(clip) {
      const bytes = Uint8Array.from(atob(clip), (c) => c.charCodeAt(0));
      const samples = new Float32Array(bytes.buffer);
      const buffer = mic.context.createBuffer(1, samples.length, 24000);
      buffer.copyToChannel(samples, 0);
      const source = mic.context.createBufferSource();
      source.buffer = buffer;
      source.connect(mic.destination);
      const start = Math.max(mic.context.currentTime + 0.05, mic.endsAt);
      source.start(start);
      mic.endsAt = start + buffer.duration;
      return mic.endsAt - mic.context.currentTime;
    },
  };
})();
"""


def write_silent_device_file(path: Path, seconds: float = 2.0) -> None:
    """The WAV Chromium's fake device loops: silence (its default is a beep)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(FAKE_MIC_RATE)
        out.writeframes(b"\0\0" * int(seconds * FAKE_MIC_RATE))


def chromium_flags(device_file: Path) -> tuple[str, ...]:
    return (*FAKE_MEDIA_FLAGS, f"--use-file-for-fake-audio-capture={device_file}")


async def install(page: Page) -> None:
    """Make every document the page opens from now on use the scripted microphone."""
    await page.send("Page.addScriptToEvaluateOnNewDocument", {"source": _INSTALL})


async def say(page: Page, pcm24k: np.ndarray) -> float:
    """Speak ``pcm24k`` (float32 mono, 24 kHz) into the microphone once the page has opened it;
    returns the seconds until the clip has been played."""
    await page.wait_for(
        "window.__scriptedMic?.ready()", timeout_s=20, what="the page to open the microphone"
    )
    clip = base64.b64encode(np.asarray(pcm24k, dtype="<f4").tobytes()).decode("ascii")
    seconds: float = await page.evaluate(f"window.__scriptedMic.say('{clip}')")
    return seconds
