"""The session recorder writing real files under tmp_path."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from unmute_trio.protocol import browser
from unmute_trio.protocol.instructions import SmalltalkInstructions
from unmute_trio.session.recorder import Recorder

NAME = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_[0-9a-f]{4}\.jsonl$")


def session_update(allow_recording: bool) -> browser.SessionUpdate:
    return browser.SessionUpdate(
        session=browser.SessionConfig(
            instructions=SmalltalkInstructions(), voice="v.wav", allow_recording=allow_recording
        )
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def run_until_cancelled(recorder: Recorder, work: Any) -> None:
    """Run ``recorder.run`` beside ``work()``, then end it as the session nursery would."""
    with trio.fail_after(2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(recorder.run)
            await work()
            nursery.cancel_scope.cancel()


def test_disabled_without_a_directory() -> None:
    assert Recorder.for_session(None) is None


async def test_lines_have_the_recording_shape_and_order(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "recordings"  # parents are created
    clock = iter(float(t) for t in range(1000, 2000))
    recorder = Recorder(directory, wall_clock=lambda: next(clock))
    assert NAME.match(recorder.path.name) and recorder.path.parent == directory
    update = session_update(True)
    delta = browser.ResponseAudioDelta(delta="T2dnUw==")

    async def work() -> None:
        recorder.record("client", update)
        recorder.record(
            "client", browser.UnmuteInputAudioBufferAppendAnonymized(number_of_samples=960)
        )
        recorder.record("server", browser.SessionUpdated(session=update.session))
        await trio.sleep(0.05)  # some lines are written while the session runs...
        recorder.record("server", browser.UnmuteResponseAudioDeltaReady(number_of_samples=1920))
        recorder.record("server", delta)
        recorder.record("server", {"type": "response.audio.done", "event_id": "event_x"})

    await run_until_cancelled(recorder, work)  # ...the rest when the session ends
    lines = read_lines(recorder.path)
    assert [line["timestamp_wall"] for line in lines] == [1000.0 + i for i in range(6)]
    assert [line["event_sender"] for line in lines] == ["client"] * 2 + ["server"] * 4
    assert [line["data"]["type"] for line in lines] == [
        "session.update",
        "unmute.input_audio_buffer.append_anonymized",
        "session.updated",
        "unmute.response.audio.delta.ready",
        "response.audio.delta",
        "response.audio.done",
    ]
    assert all(set(line) == {"timestamp_wall", "event_sender", "data"} for line in lines)
    assert lines[0]["data"] == json.loads(update.model_dump_json())
    assert lines[1]["data"]["number_of_samples"] == 960
    assert lines[3]["data"]["number_of_samples"] == 1920
    assert lines[4]["data"] == {
        "type": "response.audio.delta",
        "event_id": delta.event_id,
        "delta": "T2dnUw==",
    }
    assert recorder.lines_written == 6


async def test_user_audio_is_never_recorded(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)
    raw = browser.InputAudioBufferAppend(audio="T2dnUwACAAAAAAAAAAA=")

    async def work() -> None:
        with pytest.raises(ValueError, match="never recorded"):
            recorder.record("client", raw)
        with pytest.raises(ValueError, match="never recorded"):
            recorder.record("client", raw.model_dump())
        recorder.record(
            "client", browser.UnmuteInputAudioBufferAppendAnonymized(number_of_samples=960)
        )

    await run_until_cancelled(recorder, work)
    text = recorder.path.read_text()
    assert "T2dnUwACAAAAAAAAAAA=" not in text
    assert [line["data"]["type"] for line in read_lines(recorder.path)] == [
        "unmute.input_audio_buffer.append_anonymized"
    ]


@pytest.mark.parametrize("as_json", [False, True])
async def test_refused_consent_deletes_the_file_and_stops_recording(
    tmp_path: Path, as_json: bool
) -> None:
    recorder = Recorder(tmp_path)

    async def work() -> None:
        recorder.record("client", session_update(True))
        recorder.record("server", browser.ResponseAudioDelta(delta="AAAA"))
        with trio.fail_after(1):
            while not recorder.path.exists():
                await trio.sleep(0.01)
        refusal = session_update(False)
        recorder.record("client", refusal.model_dump() if as_json else refusal)
        with trio.fail_after(1):
            while recorder.path.exists():
                await trio.sleep(0.01)
        # Nothing afterwards is recorded, even a renewed consent.
        recorder.record("client", session_update(True))
        recorder.record("server", browser.ResponseAudioDone())
        await trio.sleep(0.05)

    await run_until_cancelled(recorder, work)
    assert not recorder.active
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240 - test inspection


async def test_refusal_before_anything_was_written_creates_no_file(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "recordings")
    recorder.record("client", session_update(False))  # before run() wrote anything

    async def work() -> None:
        recorder.record("server", browser.ResponseAudioDone())

    await run_until_cancelled(recorder, work)
    assert not recorder.path.exists()
    assert not (tmp_path / "recordings").exists() or list((tmp_path / "recordings").iterdir()) == []


async def test_delete_is_idempotent_and_removes_a_written_file(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)

    async def work() -> None:
        recorder.record("server", browser.ResponseAudioDone())
        with trio.fail_after(1):
            while not recorder.path.exists():
                await trio.sleep(0.01)
        recorder.delete()
        recorder.delete()
        with trio.fail_after(1):
            while recorder.path.exists():
                await trio.sleep(0.01)

    await run_until_cancelled(recorder, work)
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240 - test inspection


async def test_a_full_buffer_drops_events_instead_of_blocking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(tmp_path, max_pending_lines=4)
    with caplog.at_level(logging.WARNING, logger="unmute_trio.session.recorder"):
        # run() is not running yet (a stalled disk looks the same): record() must not wait.
        for i in range(10):
            recorder.record("server", browser.ResponseTextDelta(delta=f"w{i}"))
    assert recorder.dropped_events == 6
    drop_warnings = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert len(drop_warnings) == 1

    async def work() -> None:
        pass

    await run_until_cancelled(recorder, work)
    assert [line["data"]["delta"] for line in read_lines(recorder.path)] == ["w0", "w1", "w2", "w3"]


async def test_an_unwritable_directory_disables_recording_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    recorder = Recorder(blocker / "recordings")

    with caplog.at_level(logging.ERROR, logger="unmute_trio.session.recorder"):
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(recorder.run)
                recorder.record("server", browser.ResponseAudioDone())
                # run() gives up by itself (without raising) once the file cannot be created.
        for _ in range(3):
            recorder.record("server", browser.ResponseAudioDone())  # still harmless
    assert not recorder.active
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert blocker.read_text() == "not a directory"


async def test_a_name_collision_picks_another_file(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)
    taken = recorder.path
    taken.write_text("another session\n")

    async def work() -> None:
        recorder.record("server", browser.ResponseAudioDone())

    await run_until_cancelled(recorder, work)
    assert taken.read_text() == "another session\n"
    assert recorder.path != taken and NAME.match(recorder.path.name)
    assert len(read_lines(recorder.path)) == 1


async def test_events_after_the_session_ended_are_ignored(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path)

    async def work() -> None:
        recorder.record("server", browser.ResponseAudioDone())

    await run_until_cancelled(recorder, work)
    recorder.record("server", browser.ResponseAudioDone())  # must not raise
    assert len(read_lines(recorder.path)) == 1
