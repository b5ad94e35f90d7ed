"""A scripted voice conversation against a running unmute-trio server.

It does what a person at the browser would do, with synthetic speech-like audio in Ogg/Opus
streamed at real time: waits for the greeting, speaks, hears the answer, then speaks over the
next answer to interrupt it. Every step prints what was seen and when.

    unmute-trio sim &                 # simulated STT, TTS and LLM on the default ports
    unmute-trio serve &               # the server on http://localhost:8000
    .venv/bin/python examples/talk_client.py [--url ws://localhost:8000/v1/realtime]

Exit status 0 means every step happened; 1 means one did not (the message, one line, says
which: no server at the URL, the server ended the conversation with an error, a step timed out).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from unmute_trio.exception_groups import leaves
from unmute_trio.testing.speech import silence, speech_like
from unmute_trio.testing.voice_client import VoiceClient

STEP_TIMEOUT_S = 30.0


async def keep_silent(client: VoiceClient) -> None:
    while True:
        await client.stream(silence(0.2))


async def wait_while_silent(client: VoiceClient, event_type: str, *, after: int) -> dict:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_silent, client)
        with trio.fail_after(STEP_TIMEOUT_S):
            event = await client.wait_for(event_type, after=after)
        nursery.cancel_scope.cancel()
    return event


def said_since(client: VoiceClient, start: int, event_type: str) -> str:
    return " ".join(
        e["delta"].strip() for e in client.events[start:] if e["type"] == event_type
    ).strip()


async def main(url: str) -> int:
    t0 = trio.current_time()

    def log(message: str) -> None:
        print(f"[{trio.current_time() - t0:6.2f} s] {message}", flush=True)

    async with VoiceClient.connect(url) as client:
        try:
            return await converse(client, url, log)
        except (ConnectionClosed, RuntimeError, BaseExceptionGroup) as e:
            if not client.closed and not _closed_by_server(e):
                raise
        # The server ended the conversation (a fatal error): its last `error` event says why.
        with trio.move_on_after(1):
            await client.wait_closed()
        errors = [e["error"].get("message") for e in client.of_type("error") if e.get("error")]
        why = errors[-1] if errors else client.close_reason or "no reason given"
        print(
            f"FAILED: the server closed the conversation ({client.close_code}): {why}",
            file=sys.stderr,
        )
        return 1


def _closed_by_server(error: BaseException) -> bool:
    found = leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return any(isinstance(e, ConnectionClosed) for e in found)


async def converse(client: VoiceClient, url: str, log: Callable[[str], None]) -> int:
    log(f"connected to {url} (subprotocol {client.ws.subprotocol!r})")
    await client.update_session({"type": "smalltalk", "language": "en"}, allow_recording=False)

    await wait_while_silent(client, "response.audio.done", after=0)
    log(
        f"greeting heard ({client.bot_samples_heard / 24000:.1f} s of audio): "
        f"{said_since(client, 0, 'response.text.delta')!r}"
    )

    mark = len(client.events)
    spoke_at = trio.current_time()
    await client.stream(speech_like(1.5, seed=1))
    log("said 1.5 s of speech")
    await wait_while_silent(client, "response.audio.delta", after=mark)
    log(f"answer started {trio.current_time() - spoke_at - 1.5:.2f} s after the speech ended")
    await wait_while_silent(client, "response.audio.done", after=mark)
    user = said_since(client, mark, "conversation.item.input_audio_transcription.delta")
    log(f"transcribed: {user!r}")
    log(f"answer: {said_since(client, mark, 'response.text.delta')!r}")
    if not user:
        print("FAILED: the speech was not transcribed", file=sys.stderr)
        return 1

    mark = len(client.events)
    await client.stream(speech_like(1.5, seed=2))
    await wait_while_silent(client, "response.audio.delta", after=mark)
    log("second answer is playing: speaking over it")
    interrupt_mark = len(client.events)
    async with trio.open_nursery() as nursery:

        async def talk_over() -> None:
            await client.stream(speech_like(1.0, seed=3))
            await keep_silent(client)

        nursery.start_soon(talk_over)
        with trio.fail_after(STEP_TIMEOUT_S):
            await client.wait_for("unmute.interrupted_by_vad", after=interrupt_mark)
        log("the bot was interrupted (unmute.interrupted_by_vad)")
        with trio.fail_after(STEP_TIMEOUT_S):
            await client.wait_for("response.created", after=interrupt_mark)
        nursery.cancel_scope.cancel()
    log(
        f"heard {client.bot_samples_heard / 24000:.1f} s of bot audio in total; "
        f"{len(client.events)} events; {client.pages_sent} Ogg pages sent"
    )
    return 0


def failure_message(url: str, error: BaseException) -> str | None:
    """One line for a failure outside the conversation (no server, a timeout), else None."""
    found = leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    for e in found:
        if isinstance(e, trio.TooSlowError):
            return "FAILED: a step timed out (is `unmute-trio sim` running?)"
        if isinstance(e, HandshakeError):
            cause = e.__cause__ or e.__context__
            causes = leaves(cause) if isinstance(cause, BaseExceptionGroup) else [cause]
            reason = next((str(c) for c in causes if isinstance(c, OSError)), None)
            return (
                f"FAILED: cannot connect to {url}: {reason or 'the WebSocket handshake failed'}"
                " (is `unmute-trio serve` running there? see --url)"
            )
        if isinstance(e, OSError):
            return f"FAILED: cannot connect to {url}: {e} (is `unmute-trio serve` running there?)"
    return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://localhost:8000/v1/realtime")
    args = parser.parse_args()
    try:
        sys.exit(trio.run(main, args.url))
    except (trio.TooSlowError, OSError, HandshakeError, BaseExceptionGroup) as e:
        message = failure_message(args.url, e)
        if message is None:
            raise
        print(message, file=sys.stderr)
        sys.exit(1)
