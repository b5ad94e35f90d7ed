"""The page's transcript (static/transcript.js) in headless Chromium, fed synthetic server events.

No conversation runs: the module is imported into the served page and each scenario replays the
events a reply and its interruption produce, in the orders the server can send them. One
Chromium serves every scenario, so the file takes a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.cdp import Page, launch_chromium
from tests.browser.stack import require_chromium, skip_on_request
from unmute_trio.settings import Settings

pytestmark = skip_on_request

# The events as app.js's onServerEvent hands them to the transcript.
REPLAY = """
async (events) => {
  const { Transcript } = await import('./static/transcript.js');
  const container = document.createElement('div');
  document.body.append(container);
  const transcript = new Transcript(container);
  transcript.clear();
  for (const [type, delta] of events) {
    if (type === 'conversation.item.input_audio_transcription.delta') transcript.userWord(delta);
    else if (type === 'response.created') transcript.botTurnStarted();
    else if (type === 'response.text.delta') transcript.botWord(delta);
    else if (type === 'unmute.interrupted_by_vad') transcript.botInterrupted();
    else throw new Error(`unknown event ${type}`);
  }
  container.remove();
  return transcript.turns();
}
"""

USER = "conversation.item.input_audio_transcription.delta"
CREATED = "response.created"
BOT = "response.text.delta"
INTERRUPTED = "unmute.interrupted_by_vad"

GREETING = [(USER, ""), (CREATED, None), (BOT, "Hello"), (BOT, "there,"), (BOT, "how")]

SCENARIOS: dict[str, tuple[list[tuple[str, str | None]], list[dict[str, Any]]]] = {
    # A transcribed word interrupts: the server sends the word, then the interruption.
    "word before interruption": (
        [*GREETING, (USER, "Wait"), (INTERRUPTED, None), (USER, "a"), (USER, "second")],
        [
            {"role": "assistant", "text": "Hello there, how", "interrupted": True},
            {"role": "user", "text": "Wait a second", "interrupted": False},
        ],
    ),
    # Voice activity interrupts: the interruption comes first, the words after.
    "interruption before word": (
        [*GREETING, (INTERRUPTED, None), (USER, "Wait")],
        [
            {"role": "assistant", "text": "Hello there, how", "interrupted": True},
            {"role": "user", "text": "Wait", "interrupted": False},
        ],
    ),
    # A reply interrupted before any of its words was spoken leaves the previous one alone.
    "interrupted before its first word": (
        [
            *GREETING,
            (USER, "Hi."),
            (CREATED, None),
            (USER, "Stop"),
            (INTERRUPTED, None),
            (CREATED, None),
            (BOT, "Sure."),
        ],
        [
            {"role": "assistant", "text": "Hello there, how", "interrupted": False},
            {"role": "user", "text": "Hi. Stop", "interrupted": False},
            {"role": "assistant", "text": "Sure.", "interrupted": False},
        ],
    ),
    # Two replies in a row: only the one being spoken is marked.
    "second reply interrupted": (
        [
            *GREETING,
            (USER, "Tell"),
            (USER, "me"),
            (CREATED, None),
            (BOT, "Once"),
            (BOT, "upon"),
            (USER, "No"),
            (INTERRUPTED, None),
        ],
        [
            {"role": "assistant", "text": "Hello there, how", "interrupted": False},
            {"role": "user", "text": "Tell me", "interrupted": False},
            {"role": "assistant", "text": "Once upon", "interrupted": True},
            {"role": "user", "text": "No", "interrupted": False},
        ],
    ),
}


async def replay(page: Page, events: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
    return await page.evaluate(f"({REPLAY})({json.dumps(events)})")


async def test_the_interrupted_reply_is_marked_whatever_the_order(
    serve, all_down_settings: Settings, tmp_path: Path
) -> None:
    require_chromium()
    base = await serve(all_down_settings)
    async with launch_chromium(tmp_path / "profile") as page:
        await page.navigate(base + "/")
        failures = []
        for name, (events, expected) in SCENARIOS.items():
            turns = await replay(page, events)
            if turns != expected:
                failures.append(f"{name}:\n  got      {turns}\n  expected {expected}")
        if failures:
            pytest.fail("\n".join(failures) + "\n" + page.console_dump())
