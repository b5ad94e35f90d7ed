"""The Unmute dialect (docs/protocol.md): the original frontend's protocol, unchanged.

Client audio is base64 Ogg/Opus pages; the bot's audio goes out as one Ogg/Opus stream in
``response.audio.delta`` events; notes map one to one onto the events the original sent.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from unmute_trio.conversation.events import (
    Note,
    ResponseFinished,
    ResponseInterrupted,
    ResponseStarted,
    ResponseTextComplete,
    ResponseToolCall,
    ResponseWordPlanned,
    ResponseWordSpoken,
    ServiceWarning,
    SessionFailed,
    SessionUpdated,
    StatusReport,
    TurnAdded,
    UserSpeechStarted,
    UserSpeechStopped,
    UserTranscriptDelta,
    UserTurnEnded,
)
from unmute_trio.protocol import browser
from unmute_trio.protocol.errors import WireFormatError
from unmute_trio.protocol.ogg_opus import OpusPackets
from unmute_trio.session.audio import AudioInputError, OpusInput, OpusOutput
from unmute_trio.session.front import SessionPort

UNKNOWN_VOICE = "missing"  # what response.created shows when no voice was chosen


def present(note: Note) -> list[BaseModel]:
    """The Unmute-dialect events for a note (pure; also used by the machine's tests)."""
    match note:
        case UserTranscriptDelta():
            return [
                browser.ConversationItemInputAudioTranscriptionDelta(
                    delta=note.text, start_time=note.start_time
                )
            ]
        case UserSpeechStarted():
            return [browser.InputAudioBufferSpeechStarted()]
        case UserSpeechStopped():
            return [browser.InputAudioBufferSpeechStopped()]
        case ResponseStarted():
            response = browser.Response(
                status="in_progress",
                voice=note.voice or UNKNOWN_VOICE,
                chat_history=list(note.chat_history),
            )
            return [browser.ResponseCreated(response=response)]
        case ResponseWordPlanned():
            return [browser.UnmuteResponseTextDeltaReady(delta=note.word)]
        case ResponseTextComplete():
            return [browser.ResponseTextDone(text=note.text)]
        case ResponseWordSpoken():
            return [browser.ResponseTextDelta(delta=note.text)]
        case ResponseFinished():
            return [browser.ResponseAudioDone()]
        case ResponseInterrupted():
            return [browser.UnmuteInterruptedByVAD()]
        case StatusReport():
            args = {
                "chat_history": note.chat_history,
                "debug_dict": note.debug,
                "debug_plot_data": [],
            }
            return [browser.UnmuteAdditionalOutputs(args=args)]
        case ServiceWarning():
            return [browser.make_error("warning", note.message)]
        case SessionFailed():
            return [browser.make_error("fatal", note.message)]
        case UserTurnEnded() | ResponseToolCall() | TurnAdded():
            return []  # the dialect has no such event (and Unmute clients declare no tools)


class UnmuteFront:
    def __init__(self, *, tts_opus: bool = True) -> None:
        # The TTS's Opus packets go into the client's Ogg stream as they are (no decode and
        # encode); False asks the TTS for PCM and encodes it here (UNMUTE_TTS_AUDIO=pcm).
        self.tts_opus = tts_opus
        self._opus_in = OpusInput()
        self._opus_out = OpusOutput()  # one Ogg stream for the whole connection
        # A valid session.update arrived (set before it is handled, which may wait for the
        # prompt): the session's first-event timeout waits for it (session/idle.py).
        self.session_update_received = False

    async def serve(self, session: SessionPort) -> None:
        while True:
            try:
                event = browser.parse_client_event(await session.receive())
            except WireFormatError as e:
                session.send(browser.invalid_request_error(e))
                continue
            if isinstance(event, browser.InputAudioBufferAppend):
                await self._audio_in(session, event.audio)
            elif isinstance(event, browser.SessionUpdate):
                await self._session_update(session, event)
            else:
                session.record_client(event)

    async def _audio_in(self, session: SessionPort, b64: str) -> None:
        try:
            pcm = self._opus_in.feed(b64)
        except AudioInputError as e:
            session.send(browser.make_error("invalid_request_error", str(e)))
            return
        if session.recording:  # 25 messages a second: no model built for nothing
            session.record_client(
                browser.UnmuteInputAudioBufferAppendAnonymized(number_of_samples=len(pcm))
            )
        if len(pcm):
            await session.audio_in(pcm)

    async def _session_update(self, session: SessionPort, event: browser.SessionUpdate) -> None:
        self.session_update_received = True
        session.record_client(event)
        config = event.session
        system_prompt = None
        if config.instructions is not None:
            system_prompt = await session.system_prompt(config.instructions)
        session.send(browser.SessionUpdated(session=config))
        session.dispatch(SessionUpdated(system_prompt, config.voice, config.allow_recording))

    def present(self, note: Note) -> list[BaseModel]:
        return present(note)

    def audio_event(self, audio: np.ndarray | OpusPackets, turn_id: int) -> BaseModel | None:
        delta = self._opus_out.encode_base64(audio)
        return None if delta is None else browser.ResponseAudioDelta(delta=delta)

    def encode(self, event: BaseModel) -> str:
        return browser.encode_event(event)

    def fatal(self, message: str, code: str | None = None) -> BaseModel:
        return browser.make_error("fatal", message, code=code)
