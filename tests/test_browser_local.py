"""What a newcomer does after ``make run``: the built-in page in headless Chromium, against
``unmute-trio up`` with the local engines and the local LLM, and a spoken question from the
microphone (Chromium's fake microphone plays espeak-ng speech written here).

Timeline of the fake microphone (seconds after Connect; the real engines' timing varies, so the
checks look for outcomes, not instants):
- 0-8: silence while the bot greets;
- the question "What is the capital of France?", then 8 s of silence for the answer (the gaps
  stay under the session's 7 s user-silence timeout once the bot has finished: a small LLM may
  answer a silence prompt with "Bye!", which ends the call);
- "Tell me a long story about a dragon and a knight.", then 4 s while the story starts;
- "Stop, please stop talking now." over the story → the server interrupts the bot;
- silence until the end of the file (Chromium loops it; it is longer than the test).
"""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import trio

from tests.browser.cdp import Page, launch_chromium
from tests.browser.stack import (
    ARTIFACTS_DIR,
    FAKE_MEDIA_FLAGS,
    FAKE_MIC_RATE,
    require_chromium,
    skip_on_request,
)
from tests.local_engines import espeak, normalise_words, resample, word_errors
from tests.test_local_stack import running_up
from unmute_trio.testing.speech import silence

pytestmark = skip_on_request

QUESTION = "What is the capital of France?"
STATE = "({stats: window.__unmuteStats, turns: window.__unmuteTranscript?.turns()})"


def write_microphone(path: Path) -> None:
    pieces = [
        silence(8.0),
        espeak(QUESTION),
        silence(8.0),
        espeak("Tell me a long story about a dragon and a knight."),
        silence(4.0),
        espeak("Stop, please stop talking now."),
        silence(60.0),
    ]
    pcm48 = resample(np.concatenate(pieces), 24_000, FAKE_MIC_RATE)
    samples = np.round(np.clip(pcm48, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(FAKE_MIC_RATE)
        out.writeframes(samples.tobytes())


async def test_page_talks_with_the_local_stack(tmp_path: Path) -> None:
    require_chromium()
    wav = tmp_path / "microphone.wav"
    write_microphone(wav)
    lines: list[str] = []
    flags = (*FAKE_MEDIA_FLAGS, f"--use-file-for-fake-audio-capture={wav}")
    with trio.fail_after(240):
        async with (
            running_up(lines) as (_, port),
            launch_chromium(
                tmp_path / "profile", extra_args=flags, stderr_path=tmp_path / "chromium.log"
            ) as page,
        ):
            try:
                await _converse(page, f"http://127.0.0.1:{port}/")
            except BaseException:
                await page.screenshot(ARTIFACTS_DIR / "browser-local-failure.png")
                raise


async def _converse(page: Page, url: str) -> None:
    await page.navigate(url)
    await page.wait_for(
        "window.__unmuteStats?.health?.ok === true && !document.querySelector('#connect').disabled",
        timeout_s=30,
        what="the page to see a healthy local stack",
    )
    engines = await page.evaluate("document.querySelector('#engines').textContent")
    await page.click("#connect")
    await page.wait_for(
        "__unmuteTranscript.turns().some(t => t.role === 'assistant' && /paris/i.test(t.text))",
        timeout_s=60,
        what="an answer about Paris",
        diagnostics=STATE,
    )
    # The user then asks for a story and talks over it: a (new) VAD interruption.
    before = await page.evaluate("__unmuteStats.events['unmute.interrupted_by_vad'] ?? 0")
    await page.wait_for(
        f"(__unmuteStats.events['unmute.interrupted_by_vad'] ?? 0) > {before}",
        timeout_s=60,
        what="the bot to be interrupted by the user talking over it",
        diagnostics=STATE,
    )
    stats: dict[str, Any] = await page.evaluate("JSON.parse(JSON.stringify(window.__unmuteStats))")
    turns: list[dict[str, Any]] = await page.evaluate("window.__unmuteTranscript.turns()")
    await page.screenshot(ARTIFACTS_DIR / "browser-local.png")
    await trio.Path(ARTIFACTS_DIR / "browser-local.json").write_text(
        json.dumps([stats, turns], indent=1)
    )
    why = f"stats: {json.dumps(stats)}\nturns: {json.dumps(turns)}\n{page.console_dump()}"

    assert "local-stt-moonshine" in engines and "local-tts-piper" in engines, engines
    # The question opens a user turn (the story request joins it when it cuts a long answer).
    asked = len(normalise_words(QUESTION))
    users = [" ".join(normalise_words(t["text"])[:asked]) for t in turns if t["role"] == "user"]
    assert any(word_errors(QUESTION, text) <= 1 for text in users), why
    # Real audio came out of the page's player (the greeting and the answer, ~2 s at least;
    # the real engines' greeting can be a single word), and the barge-in flushed the story.
    assert stats["playback"]["nonSilentSamples"] > 1.5 * 48_000, why
    assert stats["playback"]["flushes"] >= 1, why
    assert stats["events"].get("unmute.interrupted_by_vad", 0) >= 1, why
    assert stats["errors"] == [], why
