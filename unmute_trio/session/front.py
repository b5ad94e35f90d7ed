"""The seam between a session and its client's wire protocol.

A session holds one conversation whatever its client speaks; a *front* is the protocol half:
it reads the client's frames and turns them into session calls and core events, and it turns
the core's notes (``conversation.events.Note``) and the bot's audio into that protocol's
events. ``unmute_front`` speaks the Unmute dialect, ``openai_front`` the OpenAI Realtime API.

The front runs inside the session: :meth:`ClientFront.serve` is the session's client reader
task, and everything else is called synchronously from the session's tasks. It never sends on
the socket itself: events go through the session's client writer (:class:`SessionPort.send`),
which keeps them in order with the audio.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from pydantic import BaseModel

from unmute_trio.conversation.events import Event, Note
from unmute_trio.protocol.instructions import Instructions
from unmute_trio.protocol.ogg_opus import OpusPackets


class SessionPort(Protocol):
    """What a front may ask of its session."""

    async def receive(self) -> str | bytes:
        """The client's next frame (text as ``str``, binary as ``bytes``)."""

    def dispatch(self, event: Event) -> None:
        """Hand an event to the conversation machine and carry out its actions."""

    def send(self, event: BaseModel) -> None:
        """Queue an event for the client (not tied to any bot turn)."""

    async def audio_in(self, pcm: np.ndarray) -> None:
        """Microphone audio (float32 mono, 24 kHz) for the STT and the machine's clock."""

    async def system_prompt(self, instructions: Instructions | None) -> str:
        """The system prompt for these instructions (built once; prompts are random)."""

    def record_client(self, event: BaseModel) -> None:
        """Write a client event to the session's recording, if there is one."""

    @property
    def recording(self) -> bool:
        """Whether there is a recording: an event made only for it need not be built."""


class ClientFront(Protocol):
    # Whether bot turns ask the TTS for Opus (``OggOpusMessagePack``) rather than PCM: a front
    # that sends Opus to its client passes the TTS's packets on without decoding them.
    tts_opus: bool

    async def serve(self, session: SessionPort) -> None:
        """Read the client's frames until the session ends (the task is cancelled then)."""

    def present(self, note: Note) -> list[BaseModel]:
        """The events that tell the client this note (possibly none)."""

    def audio_event(self, audio: np.ndarray | OpusPackets, turn_id: int) -> BaseModel | None:
        """The event carrying this audio of bot turn ``turn_id`` (PCM, or Opus packets when
        :attr:`tts_opus`), or ``None`` while the encoder waits for more. Called by the writer,
        in sending order."""

    def encode(self, event: BaseModel) -> str:
        """The text frame for an event."""

    def fatal(self, message: str, code: str | None = None) -> BaseModel:
        """An error event that ends the session (sent right before the close)."""
