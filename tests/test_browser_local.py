"""What a newcomer does after ``make run``: the built-in page in headless Chromium, against
``unmute-trio up`` with the local engines and the local LLM, and spoken sentences from the
microphone (espeak-ng speech written here).

The test speaks when it has seen what it waits for (the scripted microphone of
``tests/browser/scripted_mic.py``), because the real engines' timing varies with the machine:
- after the greeting: "What is the capital of France?"; a spoken answer must follow (what the
  0.5B model answers is its own business: it has said "Oslo" at its sampling temperature, and
  that is no fault of the server's);
- once the answer has been played: "Explain in detail how a car engine works.";
- once that long answer is being spoken: "Stop, please stop talking now." → the server
  interrupts it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from tests.browser import scripted_mic
from tests.browser.cdp import BrowserError, Page, launch_chromium
from tests.browser.stack import ARTIFACTS_DIR, require_chromium, skip_on_request
from tests.local_engines import espeak, word_errors
from tests.test_local_stack import running_up

pytestmark = skip_on_request

QUESTION = "What is the capital of France?"
STATE = "({stats: window.__unmuteStats, turns: window.__unmuteTranscript?.turns()})"
AUDIO_DELTAS = "(__unmuteStats.events['response.audio.delta'] ?? 0)"
# A bot turn with words in it after the user's first turn.
ANSWER_AFTER_QUESTION = """(() => {
  const turns = __unmuteTranscript.turns();
  const asked = turns.findIndex(t => t.role === 'user');
  return asked >= 0 && turns.slice(asked + 1).some(t => t.role === 'assistant' && t.text.trim());
})()"""
# The bot has finished a reply when no audio came for this long and the player has drained
# (the server paces audio in real time, at most 0.32 s ahead of playback).
QUIET_S = 1.5
LONGEST_REPLY_S = 10.0


async def test_page_talks_with_the_local_stack(tmp_path: Path) -> None:
    require_chromium()
    device = tmp_path / "device.wav"
    scripted_mic.write_silent_device_file(device)
    lines: list[str] = []
    with trio.fail_after(240):
        async with (
            running_up(lines) as (_, port),
            launch_chromium(
                tmp_path / "profile",
                extra_args=scripted_mic.chromium_flags(device),
                stderr_path=tmp_path / "chromium.log",
            ) as page,
        ):
            try:
                await _converse(page, f"http://127.0.0.1:{port}/")
            except BaseException:
                await page.screenshot(ARTIFACTS_DIR / "browser-local-failure.png")
                raise


async def _wait_for_reply(page: Page, *, after: int, timeout_s: float, what: str) -> int:
    """Wait until the bot has sent audio beyond ``after`` deltas and then fallen quiet, or has
    spoken for ``LONGEST_REPLY_S`` (then the test talks over it, as a user would: the 0.5B
    model sometimes recites its prompt for a minute); return the number of deltas by then."""
    count, changed_at, started_at = -1, trio.current_time(), None
    with trio.move_on_after(timeout_s):
        while True:
            now_count, buffered = await page.evaluate(
                f"[{AUDIO_DELTAS}, __unmuteStats.playback?.bufferedSamples ?? 0]"
            )
            now = trio.current_time()
            if now_count > after and started_at is None:
                started_at = now
            if now_count != count:
                count, changed_at = now_count, now
            elif count > after and buffered == 0 and now - changed_at >= QUIET_S:
                return count
            if started_at is not None and now - started_at >= LONGEST_REPLY_S:
                return count
            await trio.sleep(0.1)
    state = json.dumps(await page.evaluate(STATE), indent=1)
    raise BrowserError(f"timed out after {timeout_s} s waiting for {what}\n{state}")


async def _converse(page: Page, url: str) -> None:
    await scripted_mic.install(page)
    await page.navigate(url)
    await page.wait_for(
        "window.__unmuteStats?.health?.ok === true && !document.querySelector('#connect').disabled",
        timeout_s=30,
        what="the page to see a healthy local stack",
    )
    engines = await page.evaluate("document.querySelector('#engines').textContent")
    await page.click("#connect")
    deltas = await _wait_for_reply(page, after=0, timeout_s=60, what="the greeting")

    await scripted_mic.say(page, espeak(QUESTION))
    await page.wait_for(
        ANSWER_AFTER_QUESTION,
        timeout_s=60,
        what="an answer to the question",
        diagnostics=STATE,
    )
    deltas = await _wait_for_reply(page, after=deltas, timeout_s=60, what="the answer's end")

    # The user asks for a long answer and talks over it once it is being spoken: a VAD
    # interruption.
    await scripted_mic.say(page, espeak("Explain in detail how a car engine works."))
    await page.wait_for(
        f"{AUDIO_DELTAS} > {deltas}",
        timeout_s=60,
        what="the long answer to be spoken",
        diagnostics=STATE,
    )
    await trio.sleep(1.0)
    before = await page.evaluate("__unmuteStats.events['unmute.interrupted_by_vad'] ?? 0")
    await scripted_mic.say(page, espeak("Stop, please stop talking now."))
    await page.wait_for(
        f"(__unmuteStats.events['unmute.interrupted_by_vad'] ?? 0) > {before}",
        timeout_s=30,
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
    # The question is the user's first turn, shown as said.
    users = [t["text"] for t in turns if t["role"] == "user"]
    assert users and word_errors(QUESTION, users[0]) <= 1, why
    # Real audio came out of the page's player (the greeting and the answer, ~2 s at least;
    # the real engines' greeting can be a single word), and the barge-in flushed the long answer.
    assert stats["playback"]["nonSilentSamples"] > 1.5 * 48_000, why
    assert stats["playback"]["flushes"] >= 1, why
    assert stats["events"].get("unmute.interrupted_by_vad", 0) >= 1, why
    assert stats["errors"] == [], why
