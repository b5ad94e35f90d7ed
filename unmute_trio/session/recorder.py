"""Session recordings (docs/protocol.md): the events of one session as JSON Lines on disk.

Enabled only when ``KYUTAI_RECORDINGS_DIR`` is set (``Settings.recordings_dir``). One file per
session, ``{dir}/{YYYY-MM-DD_HH-MM-SS}_{4 hex chars}.jsonl`` (local time at session start), one
line per event::

    {"timestamp_wall": <unix seconds>, "event_sender": "client" | "server", "data": <event>}

What the session records: every valid client event, except that the user's audio
(``input_audio_buffer.append``) is never stored: the session records
``unmute.input_audio_buffer.append_anonymized {number_of_samples}`` in its place, and
:meth:`Recorder.record` refuses the raw event; every server event when it is sent (including
``response.audio.delta``, the bot's audio); ``unmute.response.audio.delta.ready
{number_of_samples}`` when TTS audio arrives, before real-time pacing.

Consent: recording starts before the client has said whether it may. A client
``session.update`` with ``allow_recording: false`` (seen by :meth:`Recorder.record`, or reported
with :meth:`Recorder.delete`) ends the recording: the file is closed and deleted, and nothing
more is recorded for the session. A later ``allow_recording: true`` does not resume it: the
events in between are gone, and a recording with a hole would misrepresent the session.

I/O: :meth:`Recorder.record` is synchronous and never waits: it serialises the event and puts
the line into a bounded buffer. The :meth:`Recorder.run` task (a child of the session nursery)
writes everything buffered in one worker-thread call per batch, so a busy session costs one
thread hop per batch, not per line. When the buffer is full (the disk is stalled), new events
are dropped and counted, with one warning per session. If the directory or file cannot be
written, one error is logged and recording stops for the session; the session carries on.
Differences from the original: the directory is created with its parents, and an existing file
is never appended to (a name collision picks a new suffix).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

import trio
from pydantic import BaseModel

log = logging.getLogger(__name__)

EventSender = Literal["client", "server"]

# Lines recorded but not yet written. A session produces ~50 lines/s (25 audio pages in,
# 12.5 audio deltas out, words) of ~1 KB at most, so 512 lines ride out ~10 s of a stalled disk
# in under 1 MB per session before events are dropped.
MAX_PENDING_LINES = 512
# At session end the last lines are written and the file closed (or deleted) under a shield;
# a disk that hangs longer than this does not hold the session's teardown.
FINAL_FLUSH_TIMEOUT_S = 5.0
_NAME_ATTEMPTS = 8  # fresh suffixes tried when a file of the same name exists

_RAW_AUDIO_EVENT = "input_audio_buffer.append"


def recording_file_name(now: datetime | None = None) -> str:
    """``YYYY-MM-DD_HH-MM-SS_xxxx.jsonl`` for ``now`` (local time), with a random suffix."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    return f"{stamp}_{uuid.uuid4().hex[:4]}.jsonl"


def _refuses_recording(event: BaseModel | Mapping[str, Any]) -> bool:
    if isinstance(event, BaseModel):
        if getattr(event, "type", None) != "session.update":
            return False
        return getattr(getattr(event, "session", None), "allow_recording", None) is False
    session = event.get("session")
    return (
        event.get("type") == "session.update"
        and isinstance(session, Mapping)
        and session.get("allow_recording") is False
    )


class Recorder:
    """The recording of one session; see the module docstring for what and how."""

    @classmethod
    def for_session(cls, recordings_dir: Path | None) -> Recorder | None:
        """A recorder when recordings are enabled (a directory is configured), else ``None``."""
        return None if recordings_dir is None else cls(recordings_dir)

    def __init__(
        self,
        recordings_dir: Path,
        *,
        max_pending_lines: int = MAX_PENDING_LINES,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._dir = recordings_dir
        self._session_start = datetime.now()
        self._path = recordings_dir / recording_file_name(self._session_start)
        self._wall_clock = wall_clock
        self._max_pending_lines = max_pending_lines
        self._send, self._receive = trio.open_memory_channel[str](max_pending_lines)
        self._file: TextIO | None = None  # only touched from worker threads, one at a time
        self._deleting = False  # consent was refused: delete the file, record nothing more
        self._failed = False  # the file could not be written: record nothing more
        self.dropped_events = 0
        self.lines_written = 0

    @property
    def path(self) -> Path:
        """The recording's file (it exists once the first batch is written)."""
        return self._path

    @property
    def active(self) -> bool:
        """Whether events are still being recorded."""
        return not (self._deleting or self._failed)

    def record(self, sender: EventSender, event: BaseModel | Mapping[str, Any]) -> None:
        """Record one event, a pydantic model or its JSON object; never blocks.

        Raises ``ValueError`` for an ``input_audio_buffer.append`` event: user audio is never
        recorded, record ``unmute.input_audio_buffer.append_anonymized`` instead.
        """
        if isinstance(event, BaseModel):
            self.record_json(sender, getattr(event, "type", None), event.model_dump_json())
        else:
            data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
            self.record_json(sender, event.get("type"), data)
        if sender == "client" and _refuses_recording(event):
            self.delete()

    def record_json(self, sender: EventSender, event_type: str | None, data: str) -> None:
        """Record an event already serialised (``data``: its JSON object as sent)."""
        if sender not in ("client", "server"):
            raise ValueError(f"event_sender must be 'client' or 'server', not {sender!r}")
        if event_type == _RAW_AUDIO_EVENT:
            raise ValueError("user audio is never recorded; record the anonymized event instead")
        if not self.active:
            return
        timestamp = json.dumps(self._wall_clock())
        line = f'{{"timestamp_wall":{timestamp},"event_sender":"{sender}","data":{data}}}\n'
        try:
            self._send.send_nowait(line)
        except trio.WouldBlock:
            self.dropped_events += 1
            if self.dropped_events == 1:
                log.warning(
                    "recording %s cannot keep up (%d lines waiting); dropping events",
                    self._path,
                    self._max_pending_lines,
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # run() has ended: the session is over

    def delete(self) -> None:
        """The client refused recording: delete the file and record nothing more. Idempotent."""
        if self._deleting:
            return
        self._deleting = True
        # Ends run()'s loop once it has taken what is buffered; it then deletes the file.
        self._send.close()

    async def run(self) -> None:
        """Write batches until cancelled (the session ended) or recording stops; then write
        what is left and close the file, or delete it if consent was refused."""
        # The batch being written. ``_write`` empties it once written, so whatever it still
        # holds when a cancellation arrives (possibly before the thread started) is written
        # at the end, not lost.
        batch: list[str] = []
        try:
            async for first_line in self._receive:
                batch.append(first_line)
                self._take_buffered(batch)
                if self._deleting:
                    break
                if not await trio.to_thread.run_sync(self._write, batch):
                    self._failed = True
                    break
        finally:
            self._take_buffered(batch)
            self._receive.close()
            with trio.CancelScope(shield=True), trio.move_on_after(FINAL_FLUSH_TIMEOUT_S):
                await trio.to_thread.run_sync(self._finish, batch, abandon_on_cancel=True)

    def _take_buffered(self, batch: list[str]) -> None:
        while True:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return

    # ---------------------------------------------------------------- worker-thread side

    def _write(self, lines: list[str]) -> bool:
        """Append ``lines`` and empty the list; ``False`` (after logging why) if the recording
        cannot be written."""
        try:
            if self._file is None:
                self._file = self._create_file()
            self._file.write("".join(lines))
            self._file.flush()
        except OSError as e:
            log.error(
                "cannot write recording %s, recording disabled for this session: %s", self._path, e
            )
            self._close_quietly()
            return False
        self.lines_written += len(lines)
        lines.clear()
        return True

    def _create_file(self) -> TextIO:
        self._dir.mkdir(parents=True, exist_ok=True)
        for _ in range(_NAME_ATTEMPTS):
            try:
                file = self._path.open("x", encoding="utf-8")
            except FileExistsError:
                self._path = self._dir / recording_file_name(self._session_start)
                continue
            log.info("recording session to %s", self._path)
            return file
        raise FileExistsError(f"no free recording file name in {self._dir}")

    def _finish(self, leftover: list[str]) -> None:
        """Write ``leftover`` and close the file, or delete it if consent was refused."""
        if self._deleting:
            self._close_quietly()
            try:
                self._path.unlink(missing_ok=True)
            except OSError as e:
                log.error("cannot delete recording %s after consent was refused: %s", self._path, e)
            return
        if leftover and not self._failed:
            self._write(leftover)
        self._close_quietly()
        if self.dropped_events:
            log.warning("recording %s: %d events dropped", self._path, self.dropped_events)

    def _close_quietly(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError as e:
                log.error("cannot close recording %s: %s", self._path, e)
