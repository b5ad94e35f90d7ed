"""The server, the simulators and a headless Chromium with a fake microphone, for browser tests.

The fake microphone plays a WAV file that the test writes (Chromium loops it). Chromium's
console is kept for failure messages, its stderr goes to ``chromium.log`` in the test's
temporary directory, and screenshots go to ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import dataclasses
import json
import os
import wave
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from tests.browser.cdp import Page, chromium_path, launch_chromium
from unmute_trio.testing.harness import Stack, conversation_stack
from unmute_trio.testing.speech import silence, speech_like
from unmute_trio.testing.voice_cloning_sim import VoiceCloningSimConfig, VoiceCloningSimulator

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "test-artifacts"
FAKE_MIC_RATE = 48_000  # what Chromium's fake capture device runs at; no resampling needed
# Flags that replace the microphone and its permission prompt.
FAKE_MEDIA_FLAGS = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")


# Browser tests are skipped only on request; see require_chromium.
skip_on_request = pytest.mark.skipif(
    os.environ.get("UNMUTE_SKIP_BROWSER_TESTS") == "1",
    reason="UNMUTE_SKIP_BROWSER_TESTS=1: browser tests skipped on request",
)


def require_chromium() -> None:
    """Fail if Chromium is missing: ``make test`` installs it (scripts/test-deps.sh), so a
    missing browser is a setup error, not a reason to skip quietly."""
    if chromium_path() is None:
        pytest.fail(
            "Chromium is not installed: run `bash scripts/test-deps.sh` (as root, installs "
            "Debian's chromium) or set UNMUTE_SKIP_BROWSER_TESTS=1 to skip browser tests"
        )


@dataclasses.dataclass(frozen=True)
class Segment:
    """A piece of the fake microphone's audio: speech (with a seed) or silence."""

    seconds: float
    speech_seed: int | None = None


def write_fake_microphone(path: Path, segments: Sequence[Segment]) -> float:
    """Write the segments as a 48 kHz 16-bit mono WAV; returns its duration in seconds."""
    pieces = [
        silence(s.seconds, FAKE_MIC_RATE)
        if s.speech_seed is None
        else speech_like(s.seconds, seed=s.speech_seed, sample_rate=FAKE_MIC_RATE)
        for s in segments
    ]
    samples = np.concatenate(pieces)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(FAKE_MIC_RATE)
        out.writeframes(pcm.tobytes())
    return len(samples) / FAKE_MIC_RATE


@dataclasses.dataclass
class BrowserStack:
    stack: Stack
    page: Page
    voice_cloning: VoiceCloningSimulator

    async def screenshot(self, name: str) -> Path:
        path = ARTIFACTS_DIR / name
        await self.page.screenshot(path)
        return path

    async def save_json(self, name: str, *values: Any) -> None:
        """Keep the page's counters next to the screenshot, for whoever reads a CI run."""
        text = json.dumps(values, indent=1)
        await trio.Path(ARTIFACTS_DIR / name).write_text(text)


@asynccontextmanager
async def browser_stack(
    tmp_path: Path, microphone_wav: Path, **settings_overrides: Any
) -> AsyncIterator[BrowserStack]:
    """Simulators (voice cloning included), the server with the real engine, and Chromium on
    the page with ``microphone_wav`` as its microphone; all on real time."""
    voice_cloning = VoiceCloningSimulator(VoiceCloningSimConfig())
    async with trio.open_nursery() as nursery:
        cloning_port = await nursery.start(voice_cloning.serve)
        settings: dict[str, Any] = {
            "voice_cloning_url": f"http://127.0.0.1:{cloning_port}",
            "health_timeout_s": 2.0,
            **settings_overrides,
        }
        async with conversation_stack(**settings) as stack:
            flags = (*FAKE_MEDIA_FLAGS, f"--use-file-for-fake-audio-capture={microphone_wav}")
            async with launch_chromium(
                tmp_path / "profile", extra_args=flags, stderr_path=tmp_path / "chromium.log"
            ) as page:
                yield BrowserStack(stack, page, voice_cloning)
        nursery.cancel_scope.cancel()


async def open_page(bs: BrowserStack) -> None:
    """Load the page and wait until it has read the health and the voices."""
    await bs.page.navigate(bs.stack.base_url + "/")
    await bs.page.wait_for(
        "window.__unmuteStats?.health?.ok === true && window.__unmuteStats.voices > 0"
        " && !document.querySelector('#connect').disabled",
        timeout_s=15,
        what="the page to load health and voices and enable Connect",
    )
