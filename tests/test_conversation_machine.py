"""The turn-taking machine, driven by scripted events (contract 0.3). Plain synchronous tests."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from unmute_trio.conversation import (
    Action,
    AudioReceived,
    CancelTurn,
    CloseSession,
    ConversationMachine,
    ConversationState,
    Event,
    FlushStt,
    LlmDone,
    LlmWord,
    Notify,
    ServiceFailed,
    ServiceRetrying,
    SessionUpdated,
    SetRecording,
    StartTurn,
    SttStep,
    SttWord,
    TtsWordSpoken,
    TurnAudioFinished,
)
from unmute_trio.conversation.events import (
    AudioCommitted,
    DrainStarted,
    FunctionOutputAdded,
    LlmToolCall,
    ResponseCancelRequested,
    ResponseFinished,
    ResponseInterrupted,
    ResponseRequested,
    ResponseSpec,
    ResponseStarted,
    ResponseToolCall,
    TokenUsage,
    TurnAdded,
    TurnDeleteRequested,
    TurnOptions,
    TurnOptionsChanged,
    UserSpeechStarted,
    UserTextAdded,
    UserTranscriptDelta,
    UserTurnEnded,
)
from unmute_trio.conversation.messages import (
    CANCELLED_BY_CLIENT,
    GOODBYE_CLOSE_REASON,
    INTERRUPTED_BY_VAD,
    INTERRUPTED_BY_WORD,
)
from unmute_trio.conversation.pause import WARMUP_STEPS
from unmute_trio.conversation.transcript import Turn
from unmute_trio.errors import ServiceAtCapacity, ServiceDisconnected, ServiceTimeout
from unmute_trio.session import unmute_front

PAGE = 960  # one 40 ms browser page at 24 kHz
PROMPT = "PROMPT"
SYS = {"role": "system", "content": PROMPT}
State = ConversationState


def norm(actions: list[Action]) -> list[Any]:
    """Actions in a comparable form: server events without their random ``event_id``, and
    status updates reduced to their chat history."""
    out: list[Any] = []
    for action in actions:
        if not isinstance(action, Notify):
            out.append(action)
            continue
        for event in unmute_front.present(action.note):
            fields = event.model_dump(exclude={"event_id", "type"})
            if event.type == "unmute.additional_outputs":  # type: ignore[attr-defined]
                fields = {"chat_history": fields["args"]["chat_history"]}
            out.append((event.type, fields))  # type: ignore[attr-defined]
    return out


def created(voice: str, chat_history: list[dict[str, str]]) -> tuple[str, dict[str, Any]]:
    return (
        "response.created",
        {
            "response": {
                "object": "realtime.response",
                "status": "in_progress",
                "voice": voice,
                "chat_history": chat_history,
            }
        },
    )


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def delta(text: str, start_time: float) -> tuple[str, dict[str, Any]]:
    return (
        "conversation.item.input_audio_transcription.delta",
        {"delta": text, "start_time": start_time},
    )


SPEECH_STARTED = ("input_audio_buffer.speech_started", {})
SPEECH_STOPPED = ("input_audio_buffer.speech_stopped", {})
INTERRUPTED = ("unmute.interrupted_by_vad", {})
AUDIO_DONE = ("response.audio.done", {})


class Script:
    """A machine plus helpers that feed it like the session layer would."""

    def __init__(self, **kwargs: Any) -> None:
        self.m = ConversationMachine("DEFAULT", **kwargs)
        # The STT's first 12 steps only warm the pause predictor up (conversation/pause.py),
        # as at the start of every session: after them the STT clock is at -0.5 + 0.96.
        for _ in range(WARMUP_STEPS):
            assert self.m.handle(SttStep((0.0, 0.0, 1.0, 0.0))) == []
        assert self.m.pause_prediction == 1.0

    def __call__(self, *events: Event) -> list[Any]:
        actions: list[Action] = []
        for event in events:
            actions += self.m.handle(event)
        return norm(actions)

    def audio(self, pages: int = 1) -> list[Any]:
        return self(*[AudioReceived(PAGE) for _ in range(pages)])

    def audio_until(self, seconds: float) -> list[Any]:
        out: list[Any] = []
        while self.m.audio_time_s < seconds - 1e-9:
            out += self.audio()
        return out

    def step(self, pause: float, steps: int = 1) -> list[Any]:
        """STT steps whose 2 s pause head is ``pause`` (the smoothing follows it within 0.01)."""
        out: list[Any] = []
        for _ in range(steps):
            out += self(SttStep((0.0, 0.0, pause, 0.0)))
        return out

    def setup(self, voice: str | None = "voice-a") -> None:
        assert self(SessionUpdated(PROMPT, voice, False)) == [SetRecording(False)]

    def greet(self, words: tuple[str, ...] = ("Hi", "there!")) -> None:
        """Setup, then the greeting of turn 1 spoken to the end."""
        self.setup()
        assert self.audio()[-1] == StartTurn(1, [SYS, msg("user", "Hello!")], 0.7, "voice-a")
        self.speak(1, words)
        self(LlmDone(1), TurnAudioFinished(1))

    def speak(self, turn_id: int, words: tuple[str, ...]) -> list[Any]:
        llm = [LlmWord(turn_id, w if i == 0 else " " + w) for i, w in enumerate(words)]
        return self(*llm, *[TtsWordSpoken(turn_id, w) for w in words])

    def user_says(self, *words: str) -> None:
        for i, word in enumerate(words):
            self(SttWord(word, 1.0 + i))

    def end_user_turn(self) -> list[Any]:
        """High pause prediction, the audio frame that notices it, then STT steps until the
        flush is over. Returns every action of that sequence."""
        out = self.step(0.9) + self.audio()
        out += self.step(0.9, steps=8)
        return out


# ------------------------------------------------------------------------ greeting


def test_greeting_starts_on_first_audio_after_instructions() -> None:
    s = Script()
    assert s.audio() == []  # no instructions yet: no greeting
    s.setup()
    assert s.audio() == [
        created("voice-a", []),
        StartTurn(1, [SYS, msg("user", "Hello!")], 0.7, "voice-a"),
    ]
    assert s.m.state is State.BOT_SPEAKING
    assert s.speak(1, ("Hi", "there!")) == [
        ("unmute.response.text.delta.ready", {"delta": "Hi"}),
        ("unmute.response.text.delta.ready", {"delta": " there!"}),
        ("response.text.delta", {"delta": "Hi"}),
        ("response.text.delta", {"delta": "there!"}),
    ]
    assert s(LlmDone(1)) == [("response.text.done", {"text": "Hi there!"})]
    assert s(TurnAudioFinished(1)) == [
        ("unmute.additional_outputs", {"chat_history": [msg("assistant", "Hi there!")]}),
        AUDIO_DONE,
    ]
    assert s.m.state is State.WAITING_FOR_USER
    assert s.audio() == []  # greeted once only


def test_update_without_instructions_does_not_greet() -> None:
    s = Script()
    assert s(SessionUpdated(None, "v", True)) == [SetRecording(True)]
    assert s.audio(5) == []
    assert s.m.system_prompt == "DEFAULT"


# ------------------------------------------------------------------------ full turns


def test_two_full_turns_with_temperatures() -> None:
    s = Script()
    s.greet()
    assert s(SttWord("", 0.0)) == [delta("", 0.0)]
    assert s(SttWord("How", 1.0)) == [delta("How", 1.0), SPEECH_STARTED]
    assert s(SttWord("are", 1.2), SttWord("you?", 1.4)) == [delta("are", 1.2), delta("you?", 1.4)]
    assert s.m.state is State.USER_SPEAKING
    assert s.end_user_turn() == [
        SPEECH_STOPPED,
        FlushStt(8),
        created("voice-a", [msg("assistant", "Hi there!"), msg("user", "How are you?")]),
        StartTurn(
            2,
            [
                SYS,
                msg("user", "Hello."),
                msg("assistant", "Hi there!"),
                msg("user", "How are you?"),
            ],
            0.3,
            "voice-a",
        ),
    ]
    s.speak(2, ("Fine,", "thanks."))
    assert s(LlmDone(2), TurnAudioFinished(2)) == [
        ("response.text.done", {"text": "Fine, thanks."}),
        (
            "unmute.additional_outputs",
            {
                "chat_history": [
                    msg("assistant", "Hi there!"),
                    msg("user", "How are you?"),
                    msg("assistant", "Fine, thanks."),
                ]
            },
        ),
        AUDIO_DONE,
    ]
    assert s.m.state is State.WAITING_FOR_USER


def test_answer_starts_only_after_stt_clock_passes_flush_end() -> None:
    s = Script()
    s.greet()
    s.user_says("Hello")
    s.step(0.3, steps=10)  # the user is still talking
    assert s.audio() == []
    assert s.step(0.9) == []  # decisions wait for audio
    stopped_at = s.m.stt_time
    assert s.audio() == [SPEECH_STOPPED, FlushStt(8)]  # the flush ends 0.5 s of STT time later
    assert s.m.state is State.FLUSHING_STT
    assert s.audio(3) == []  # no second flush while one is pending
    assert s.step(0.9, steps=6) == []  # 0.48 s of STT time: not yet past the end
    assert s(SttWord("again", 0.5)) == [delta("again", 0.5)]  # a late word joins the turn
    actions = s.step(0.9)  # 0.56 s: past it
    assert abs(s.m.stt_time - stopped_at - 0.56) < 1e-9
    assert actions[-1] == StartTurn(
        2, [SYS, msg("user", "Hello."), msg("assistant", "Hi there!"), msg("user", "Hello again")],
        0.3, "voice-a",
    )  # fmt: skip


def test_user_speaking_first_without_instructions_uses_default_prompt() -> None:
    s = Script()
    s.user_says("Hi")
    actions = s.end_user_turn()
    assert actions[-1] == StartTurn(
        1, [{"role": "system", "content": "DEFAULT"}, msg("user", "Hi")], 0.7, None
    )
    assert actions[-2] == created("missing", [msg("user", "Hi")])


def test_empty_stt_word_emits_a_delta_but_opens_no_user_turn() -> None:
    s = Script()
    s.greet()
    assert s(SttWord("", 0.3), SttWord(" ", 0.4)) == [delta("", 0.3), delta(" ", 0.4)]
    assert s.m.state is State.WAITING_FOR_USER
    assert len(s.m.transcript) == 1
    s.step(0.9)
    assert s.audio() == []  # no user turn, so nothing to end


# ------------------------------------------------------------------------ barge-in


def test_barge_in_by_word_keeps_only_spoken_words() -> None:
    s = Script()
    s.greet()
    s.user_says("Tell", "me", "a", "story")
    s.end_user_turn()
    s(LlmWord(2, "Once"), LlmWord(2, " upon"), LlmWord(2, " a"), LlmWord(2, " time"))
    s(TtsWordSpoken(2, "Once"), TtsWordSpoken(2, "upon"))
    assert s(SttWord("Stop", 9.0)) == [
        delta("Stop", 9.0),
        CancelTurn(2, INTERRUPTED_BY_WORD),
        INTERRUPTED,
        SPEECH_STARTED,
    ]
    assert s.m.state is State.USER_SPEAKING
    # Everything the cancelled turn still reports is dropped.
    assert s(LlmWord(2, " there"), LlmDone(2), TtsWordSpoken(2, "a"), TurnAudioFinished(2)) == []
    assert s(ServiceRetrying(2, "tts"), ServiceFailed("llm", "other", turn_id=2)) == []
    assert s.m.state is State.USER_SPEAKING
    messages = s.end_user_turn()[-1].messages
    assert messages[-2:] == [msg("assistant", "Once upon —"), msg("user", "Stop")]
    # Turn 3 is live now; turn 2's stragglers still change nothing.
    assert s.m.active_turn_id == 3
    assert s(LlmWord(2, " late"), TtsWordSpoken(2, "late"), TurnAudioFinished(2)) == []
    assert s(ServiceFailed("tts", "timeout", turn_id=2)) == []
    assert s.m.state is State.BOT_SPEAKING
    assert s(TtsWordSpoken(3, "Okay.")) == [("response.text.delta", {"delta": "Okay."})]
    assert s.m.transcript.chat_history()[-1] == msg("assistant", "Okay.")


def test_barge_in_by_vad_after_three_seconds() -> None:
    s = Script()
    s.greet()
    s.audio_until(3.2)
    s.user_says("Talk")
    s.end_user_turn()
    s.speak(2, ("Sure,", "so"))
    assert s.step(0.2) == []
    actions = s.audio()
    assert actions == [CancelTurn(2, INTERRUPTED_BY_VAD), INTERRUPTED]
    assert s.m.state is State.WAITING_FOR_USER
    assert s(TtsWordSpoken(2, "anyway")) == []
    assert s.m.transcript.chat_history()[-1] == msg("assistant", "Sure, so —")
    assert s(SttWord("wait", 5.0))[-1] == SPEECH_STARTED  # a fresh user turn


def test_no_vad_barge_in_during_first_three_seconds() -> None:
    s = Script()
    s.setup()
    s.audio()  # the greeting starts
    s.step(0.1)  # the STT thinks the user is talking (e.g. echo of the bot)
    before = s.audio_until(3.0)
    assert not [a for a in before if isinstance(a, CancelTurn)]
    assert s.m.state is State.BOT_SPEAKING
    assert s.audio()[0] == CancelTurn(1, INTERRUPTED_BY_VAD)


def test_word_barge_in_works_during_first_three_seconds() -> None:
    s = Script()
    s.setup()
    s.audio()
    assert s(SttWord("Hey", 0.1))[1] == CancelTurn(1, INTERRUPTED_BY_WORD)


# ------------------------------------------------------------------------ silence and goodbye


def without_status(actions: list[Any]) -> list[Any]:
    return [
        a for a in actions if not (isinstance(a, tuple) and a[0] == "unmute.additional_outputs")
    ]


def test_long_silence_becomes_a_silence_message_and_is_answered() -> None:
    s = Script()
    s.greet()  # the turn ends after 1 page (0.04 s) of audio
    s.step(0.9)  # silence: the pause prediction is high
    assert without_status(s.audio_until(7.04)) == []  # exactly 7 s of silence is not "more"
    assert s.m.state is State.WAITING_FOR_USER
    assert s.audio() == [SPEECH_STOPPED, FlushStt(8)]  # the marker turn ends at once
    actions = s.step(0.9, steps=8)
    assert actions == [
        created("voice-a", [msg("assistant", "Hi there!"), msg("user", "...")]),
        StartTurn(
            2,
            [SYS, msg("user", "Hello."), msg("assistant", "Hi there!"), msg("user", "...")],
            0.3,
            "voice-a",
        ),
    ]


def test_silence_is_counted_from_the_end_of_the_bot_turn() -> None:
    s = Script()
    s.setup()
    s.audio()
    s.step(0.9)
    s.audio_until(20.0)  # the bot speaks for 20 s: that is not the user's silence
    assert s.m.state is State.BOT_SPEAKING
    s(LlmDone(1), TurnAudioFinished(1))
    assert without_status(s.audio_until(27.0)) == []
    assert s.audio() == [SPEECH_STOPPED, FlushStt(8)]


def test_speech_after_silence_marker_starts_speech_and_drops_marker() -> None:
    s = Script()
    s.greet()
    s.step(0.3)  # the user makes a noise that keeps the pause prediction low
    s.audio_until(7.2)
    assert s.m.state is State.USER_SPEAKING  # the silence marker opened a user turn
    assert s(SttWord("sorry", 7.0)) == [delta("sorry", 7.0), SPEECH_STARTED]
    assert s.end_user_turn()[-1].messages[-1] == msg("user", "sorry")


@pytest.mark.parametrize("last_word", ["bye!", "BYE!", "Bye! "])
def test_goodbye_closes_the_session_after_a_second(last_word: str) -> None:
    s = Script()
    s.setup()
    s.audio()
    s.speak(1, ("Nice", "talking,", last_word))
    assert s(TurnAudioFinished(1)) == [
        (
            "unmute.additional_outputs",
            {"chat_history": [msg("assistant", f"Nice talking, {last_word}".strip())]},
        ),
        AUDIO_DONE,
        CloseSession(1000, GOODBYE_CLOSE_REASON, 1.0),
    ]
    assert s.m.state is State.CLOSED
    assert s.audio(50) == []
    assert s(SttWord("hi", 1.0), LlmDone(1)) == []


def test_goodbye_only_at_the_very_end_of_what_was_spoken() -> None:
    s = Script()
    s.greet(words=("Bye!", "Just", "kidding."))
    assert s.m.state is State.WAITING_FOR_USER
    s2 = Script()
    s2.setup()
    s2.audio()
    s2(LlmWord(1, "Bye!"))  # written by the LLM but never spoken
    s2.step(0.1)
    s2.audio_until(3.5)  # interrupted by VAD before the TTS played it
    assert s2.m.state is State.WAITING_FOR_USER
    s3 = Script()
    s3.setup()
    s3.audio()
    s3(LlmWord(1, "Bye!"))  # the LLM wrote it, the turn ended, but it was never spoken
    s3(LlmDone(1))
    actions = s3(TurnAudioFinished(1))
    assert AUDIO_DONE in actions  # the live turn really ended here
    assert not any(isinstance(a, CloseSession) for a in actions)
    assert s3.m.state is State.WAITING_FOR_USER


# ------------------------------------------------------------------------ session updates


def test_voice_and_prompt_change_apply_to_the_next_turn_only() -> None:
    s = Script()
    s.setup()
    s.audio()
    assert s(SessionUpdated("NEW PROMPT", "voice-b", False)) == []  # recording unchanged
    s.speak(1, ("Hi",))
    s(LlmDone(1), TurnAudioFinished(1))
    s.user_says("yo")
    actions = s.end_user_turn()
    assert actions[-2][1]["response"]["voice"] == "voice-b"
    start = actions[-1]
    assert (start.voice, start.messages[0]["content"]) == ("voice-b", "NEW PROMPT")


def test_recording_flag_changes_are_reported_once() -> None:
    s = Script()
    assert s(SessionUpdated(None, None, True)) == [SetRecording(True)]
    assert s(SessionUpdated(None, None, True)) == []
    assert s(SessionUpdated(None, None, False)) == [SetRecording(False)]


# ------------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            ServiceAtCapacity("tts"),
            "Too many people are connected to service 'tts'. Please try again later.",
        ),
        (ServiceTimeout("llm"), "Service 'llm' timed out. Please try again later."),
        (
            ServiceDisconnected("tts"),
            "Service 'tts' is not working right now. Please try again later.",
        ),
    ],
)
def test_turn_failure_is_fatal(error: Any, text: str) -> None:
    s = Script()
    s.setup()
    s.audio()
    assert s(ServiceFailed.from_error(error, turn_id=1)) == [
        ("error", {"error": {"type": "fatal", "code": None, "message": text, "param": None,
                             "details": None}}),
        CloseSession(1011, text),
    ]  # fmt: skip
    assert s.m.state is State.CLOSED
    assert s(LlmWord(1, "late"), SttWord("hi", 1.0), AudioReceived(PAGE)) == []


def test_stt_failure_closes_the_session_at_any_time() -> None:
    s = Script()
    actions = s(ServiceFailed("stt", "capacity"))
    assert actions[-1] == CloseSession(
        1011, "Too many people are connected to service 'stt'. Please try again later."
    )


def test_retry_warning_is_emitted_for_the_live_turn() -> None:
    s = Script()
    s.setup()
    s.audio()
    [(kind, fields)] = s(ServiceRetrying(1, "tts"))
    assert (kind, fields["error"]["type"]) == ("error", "warning")
    assert "tts" in fields["error"]["message"]


# ------------------------------------------------------------------------ status updates


def test_status_updates_at_most_once_per_second_of_audio() -> None:
    s = Script()
    actions: list[Action] = []
    for _ in range(100):  # 4 s of audio
        actions += s.m.handle(AudioReceived(PAGE))
    status = [a for a in actions if isinstance(a, Notify)]
    assert len(status) == 3  # after 1.04 s, 2.08 s and 3.12 s
    assert all(a.droppable for a in status)
    (event,) = unmute_front.present(status[0].note)
    debug = event.args["debug_dict"]  # type: ignore[attr-defined]
    assert debug["conversation_state"] == "waiting_for_user"
    assert event.args["debug_plot_data"] == []  # type: ignore[attr-defined]


def test_negative_sample_count_is_a_bug() -> None:
    with pytest.raises(ValueError):
        ConversationMachine("p").handle(AudioReceived(-1))


# ------------------------------------------------------------------------ OpenAI turn options


def manual(**changes: Any) -> Script:
    s = Script()
    options = TurnOptions(greet=False, detect_turns=False, auto_respond=False, barge_in=True)
    s(TurnOptionsChanged(dataclasses.replace(options, **changes)))
    s.setup()
    return s


def test_manual_turns_wait_for_commit_and_a_requested_response() -> None:
    s = manual(silence_timeout_s=None)
    s.audio_until(20.0)  # no greeting, no silence marker
    assert not any(isinstance(a, StartTurn) for a in s.audio())
    s.user_says("What", "time", "is", "it?")
    assert not any(isinstance(a, FlushStt) for a in s.step(0.95, steps=3) + s.audio())
    assert s.m.state is State.USER_SPEAKING  # a pause alone does not end a manual turn
    assert FlushStt(8) in s.m.handle(AudioCommitted())
    # Asked for while the flush runs: the reply starts once the last words are in.
    assert s.m.handle(ResponseRequested(ResponseSpec(speak=False))) == []
    actions = s.step(0.9, steps=8)
    starts = [a for a in actions if isinstance(a, StartTurn)]
    assert len(starts) == 1 and starts[0].spec.speak is False
    assert starts[0].messages[-1] == msg("user", "What time is it?")
    # A text reply ends with the LLM: its written words are the transcript.
    s(LlmWord(1, "Noon."))
    done = s.m.handle(LlmDone(1))
    assert any(isinstance(a, Notify) and isinstance(a.note, ResponseFinished) for a in done)
    assert s.m.transcript.chat_history()[-1] == msg("assistant", "Noon.")
    assert s.m.state is State.WAITING_FOR_USER


def test_without_barge_in_speech_over_the_bot_changes_nothing() -> None:
    s = manual(barge_in=False)
    s.m.handle(ResponseRequested())
    assert s.m.state is State.BOT_SPEAKING
    actions = s(SttWord("hey", 1.0)) + s.step(0.1, steps=60) + s.audio_until(4.0)
    assert not any(isinstance(a, CancelTurn) for a in actions)
    assert s.m.state is State.BOT_SPEAKING


def test_a_cancelled_request_interrupts_the_reply() -> None:
    s = manual()
    s.m.handle(ResponseRequested())
    actions = s.m.handle(ResponseCancelRequested())
    assert actions[0] == CancelTurn(1, reason=CANCELLED_BY_CLIENT)
    # The note says why, so the OpenAI front reports client_cancelled, not turn_detected.
    assert actions[1] == Notify(ResponseInterrupted(1, CANCELLED_BY_CLIENT))
    assert s.m.state is State.WAITING_FOR_USER
    assert s.m.handle(ResponseCancelRequested()) == []  # nothing left to cancel


def test_function_calls_and_outputs_reach_the_llm() -> None:
    s = manual()
    s(UserTextAdded("Weather in Paris?"))
    s.m.handle(ResponseRequested(ResponseSpec(tools=[{"type": "function"}])))
    calls = s.m.handle(LlmToolCall(1, "call_1", "get_weather", '{"city": "Paris"}'))
    assert [type(a.note) for a in calls if isinstance(a, Notify)] == [ResponseToolCall]
    s(LlmDone(1), TurnAudioFinished(1), FunctionOutputAdded("call_1", "sunny"))
    (start,) = [a for a in s.m.handle(ResponseRequested()) if isinstance(a, StartTurn)]
    assert start.messages[1:] == [
        msg("user", "Weather in Paris?"),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]


def notes(actions: list[Any]) -> list[Any]:
    return [a.note for a in actions if isinstance(a, Notify)]


def test_a_reply_cut_by_its_token_limit_says_so_with_the_usage() -> None:
    s = manual()
    s.m.handle(ResponseRequested(ResponseSpec(speak=False, max_tokens=2)))
    s(LlmWord(1, "Once"), LlmWord(1, " upon"))
    usage = TokenUsage(input_tokens=30, output_tokens=2)
    finished = [
        n for n in notes(s.m.handle(LlmDone(1, True, usage))) if isinstance(n, ResponseFinished)
    ]
    assert finished == [ResponseFinished(1, truncated=True, usage=usage)]
    s.m.handle(ResponseRequested(ResponseSpec(speak=False)))
    s(LlmWord(2, "Done."))
    assert ResponseFinished(2) in notes(s.m.handle(LlmDone(2)))


def test_deleted_turns_leave_the_llm_context_but_live_turns_stay() -> None:
    s = manual()
    (added,) = notes(s.m.handle(UserTextAdded("Forget this.")))
    assert isinstance(added, TurnAdded)
    s(UserTextAdded("Keep this."))
    s.m.handle(TurnDeleteRequested(added.key))
    (started,) = [
        n for n in notes(s.m.handle(ResponseRequested())) if isinstance(n, ResponseStarted)
    ]
    s.m.handle(TurnDeleteRequested(started.key))  # the reply being written: refused
    s(LlmWord(1, "Kept."), TtsWordSpoken(1, "Kept."), LlmDone(1), TurnAudioFinished(1))
    # The user's turn being transcribed cannot be deleted either.
    s.user_says("Hello")
    s.m.handle(TurnDeleteRequested(s.m.transcript.turns[-1].key))
    assert s.m.transcript.turns[-1].text == "Hello"
    s.m.handle(TurnDeleteRequested(999))  # unknown: ignored
    assert s.m.transcript.llm_messages("SYS")[1:] == [
        msg("user", "Keep this."),
        msg("assistant", "Kept."),
        msg("user", "Hello"),
    ]


def test_no_reply_starts_once_the_server_drains() -> None:
    s = Script()
    s.greet()
    s.user_says("Hello")
    s(DrainStarted())
    actions = s.end_user_turn()
    # The user's turn ends as usual, but no reply is started, so none is ever announced or
    # interrupted; the session closes once nothing is being spoken.
    assert not any(isinstance(a, StartTurn) for a in actions)
    assert not any(isinstance(a, tuple) and a[0] == "response.created" for a in actions)
    assert SPEECH_STOPPED in actions
    assert s.m.state is State.WAITING_FOR_USER
    assert s(SttWord("more", 9.0))[0] == delta("more", 9.0)
    assert not any(isinstance(a, CancelTurn) for a in s(SttWord("words", 9.5)))
    s.audio_until(30.0)  # the silence clock runs from when the reply was refused: no crash


def test_a_commit_with_nothing_heard_yet_opens_the_turn_its_late_words_join() -> None:
    """Manual turns: the client commits audio whose words are still inside the STT."""
    s = manual()
    committed = s.m.handle(AudioCommitted())
    assert FlushStt(8) in committed and s.m.state is State.FLUSHING_STT
    late = s.m.handle(SttWord("late", 1.0))
    # The first word of the turn opened by the commit is its first word: speech starts.
    assert [type(a.note) for a in late if isinstance(a, Notify)] == [
        UserTranscriptDelta,
        UserSpeechStarted,
    ]
    ended = s.step(0.9, steps=8)
    assert s.m.state is State.WAITING_FOR_USER  # no reply was asked for
    assert s.m.transcript.llm_messages("SYS")[1:] == [msg("user", "late")]
    assert ended == []  # the Unmute dialect has no event for the end of a user turn


def test_a_reply_announces_its_kind_and_its_transcript_turn() -> None:
    s = manual()
    actions = s.m.handle(ResponseRequested(ResponseSpec(speak=False)))
    [started] = [a.note for a in actions if isinstance(a, Notify)]
    assert isinstance(started, ResponseStarted)
    assert started.speak is False
    assert s.m.transcript.get(started.key).role == "assistant"


def test_the_same_events_give_the_same_actions() -> None:
    """The machine is deterministic: a recorded session replays to identical actions."""

    def run() -> list[Any]:
        s = Script()
        out = s.audio()
        s.greet()
        s.user_says("Hello", "there")
        out += s.end_user_turn()
        out += s.speak(2, ("Fine", "thanks."))
        out += s(SttWord("Stop", 9.0)) + s.audio_until(12.0)
        return out

    assert run() == run()


# ------------------------------------------------------------------------ mutation survivors


def _silence_turn_after(s: Script, seconds: float) -> None:
    """Waiting from now on: no silence turn at ``seconds`` of audio, one a page later."""
    start = s.m.audio_time_s
    assert s.m.state is State.WAITING_FOR_USER
    s.audio_until(start + seconds)
    assert s.m.state is State.WAITING_FOR_USER
    s.audio()
    assert s.m.state is State.USER_SPEAKING
    assert s.m.transcript.turns[-1] == Turn("user", "...")


def test_the_silence_clock_starts_when_a_cancelled_reply_stops() -> None:
    s = manual(silence_timeout_s=2.0)
    s.audio_until(5.0)  # long enough to time out, were the clock not reset below
    s.m.handle(ResponseRequested())
    s.m.handle(ResponseCancelRequested())
    _silence_turn_after(s, 2.0)


def test_the_silence_clock_starts_when_a_turn_ends_without_a_reply() -> None:
    s = manual(silence_timeout_s=2.0)
    s.user_says("Hello")
    s.m.handle(AudioCommitted())
    s.audio_until(5.0)
    s.step(0.9, steps=8)  # the flush ends: no reply is asked for, so the user has the floor
    _silence_turn_after(s, 2.0)


def test_the_silence_clock_starts_when_a_reply_is_refused_during_a_drain() -> None:
    s = manual(silence_timeout_s=2.0)
    s(DrainStarted())
    s.audio_until(5.0)
    assert s.m.handle(ResponseRequested()) == []
    _silence_turn_after(s, 2.0)


def test_a_function_output_is_a_turn_and_says_which() -> None:
    s = manual()
    (added,) = notes(s.m.handle(FunctionOutputAdded("call_1", '{"ok":true}')))
    assert added == TurnAdded(s.m.transcript.turns[-1].key)
    assert s.m.transcript.turns[-1].kind == "function_call_output"


def test_events_the_machine_cannot_take() -> None:
    m = ConversationMachine("p")
    assert m.handle(AudioReceived(0)) == []  # an empty page is fine
    with pytest.raises(ValueError, match=r"^negative sample count: -1$"):
        m.handle(AudioReceived(-1))
    with pytest.raises(TypeError, match=r"^not a conversation event: 'nonsense'$"):
        m.handle("nonsense")  # type: ignore[arg-type]


def test_the_stt_clock_starts_one_delay_in_the_past_and_advances_a_frame_a_step() -> None:
    m = ConversationMachine("p")
    assert m.stt_time == -0.5
    for _ in range(3):
        m.handle(SttStep((0.0, 0.0, 1.0, 0.0)))
    assert m.stt_time == pytest.approx(-0.5 + 3 * 0.08)


def test_words_of_a_turn_that_is_over_are_dropped() -> None:
    s = Script()
    assert s.m.handle(LlmWord(1, "early")) == []  # no turn yet
    s.greet()
    assert s.m.handle(LlmWord(1, "late")) == []  # turn 1 is over
    assert s.m.handle(TurnAudioFinished(1)) == []
    s.user_says("Hi")
    s.end_user_turn()
    s.m.handle(ServiceFailed("llm", ServiceTimeout("llm", 5.0), turn_id=2))
    assert s.m.state is State.CLOSED
    assert s.m.handle(LlmWord(2, "after the failure")) == []


def test_the_end_of_a_user_turn_names_its_transcript_turn() -> None:
    s = Script()
    s.greet()
    s.user_says("How", "are", "you?")
    key = s.m.transcript.turns[-1].key
    s.step(0.9)
    actions = s.m.handle(AudioReceived(PAGE))
    for _ in range(8):
        actions += s.m.handle(SttStep((0.0, 0.0, 0.9, 0.0)))
    (ended,) = [n for n in notes(actions) if isinstance(n, UserTurnEnded)]
    assert ended == UserTurnEnded("How are you?", key)


def test_the_last_turn_may_be_deleted_while_waiting_for_the_user() -> None:
    s = Script()
    s.greet()
    assert s.m.state is State.WAITING_FOR_USER
    greeting = s.m.transcript.turns[-1]
    assert greeting.role == "assistant"
    s.m.handle(TurnDeleteRequested(greeting.key))
    assert s.m.transcript.turns == ()


def test_every_note_of_a_reply_names_its_turn() -> None:
    """Notes are routed by turn id (a late note of a cancelled turn is dropped by it)."""
    from unmute_trio.conversation.bot_turn import BotTurn
    from unmute_trio.conversation.events import (
        CustomVoiceMissing,
        ResponseTextComplete,
        ResponseWordPlanned,
        ResponseWordSpoken,
        ServiceWarning,
    )
    from unmute_trio.conversation.messages import custom_voice_warning, retry_warning
    from unmute_trio.conversation.transcript import Transcript

    transcript = Transcript()
    key = transcript.start_turn("assistant")
    turn = BotTurn(7, key, ResponseSpec())
    assert notes(turn.on_event(LlmWord(7, "Hi"), transcript)) == [ResponseWordPlanned(7, "Hi")]
    assert notes(turn.on_event(TtsWordSpoken(7, "Hi"), transcript)) == [ResponseWordSpoken(7, "Hi")]
    (call,) = notes(turn.on_event(LlmToolCall(7, "call_1", "f", '{"a":1}'), transcript))
    assert call == ResponseToolCall(7, "call_1", "f", '{"a":1}', transcript.turns[-1].key)
    assert call.key != key and call.key == key + 1
    assert notes(turn.on_event(ServiceRetrying(7, "tts"), transcript)) == [
        ServiceWarning(7, retry_warning("tts"))
    ]
    for unavailable in (False, True):
        missing = CustomVoiceMissing(7, "custom:abc", unavailable)
        assert notes(turn.on_event(missing, transcript)) == [
            ServiceWarning(7, custom_voice_warning("custom:abc", unavailable))
        ]
    assert custom_voice_warning("custom:abc", True) != custom_voice_warning("custom:abc", False)
    assert notes(turn.on_llm_done(LlmDone(7))) == [ResponseTextComplete(7, "Hi")]


def test_a_text_reply_ends_with_its_text_then_its_end() -> None:
    """A reply without speech has no audio to wait for: the LLM's end is the reply's end."""
    from unmute_trio.conversation.events import ResponseTextComplete

    s = manual()
    s(UserTextAdded("Time?"))
    s.m.handle(ResponseRequested(ResponseSpec(speak=False)))
    s(LlmWord(1, "Noon."))
    done = notes(s.m.handle(LlmDone(1)))
    assert done[0] == ResponseTextComplete(1, "Noon.")
    assert [type(n) for n in done][-1] is ResponseFinished
    assert s.m.state is State.WAITING_FOR_USER
