"""Shared pieces of the whole-conversation tests."""

from __future__ import annotations

from typing import Any

import trio

from unmute_trio.testing.speech import silence, speech_like
from unmute_trio.testing.voice_client import VoiceClient

SMALLTALK = {"type": "smalltalk", "language": None}


async def greet(client: VoiceClient, **kwargs: object) -> None:
    """Configure the session and stream silence until the greeting has been fully played."""
    await client.update_session(SMALLTALK, **kwargs)  # type: ignore[arg-type]
    await wait_while_silent(client, "response.audio.done")


async def wait_while_silent(
    client: VoiceClient, event_type: str, *, after: int = 0
) -> dict[str, Any]:
    """Stream silence (as a browser does while nobody talks) until this event arrives."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream_forever_silence, client)
        event = await client.wait_for(event_type, after=after)
        nursery.cancel_scope.cancel()
    return event


async def closed_while_silent(client: VoiceClient) -> int:
    """Stream silence until the server closes the session; returns the close code."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream_forever_silence, client)
        code = await client.wait_closed()
        nursery.cancel_scope.cancel()
    return code


async def stream_forever_silence(client: VoiceClient) -> None:
    while True:
        await client.stream(silence(0.4))


async def say(client: VoiceClient, seconds: float, *, seed: int = 0) -> None:
    await client.stream(speech_like(seconds, seed=seed))


async def wait_service_connections_closed(stack) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        while any(stack.open_service_connections().values()) or stack.state.active_sessions:
            await trio.sleep(0.05)
