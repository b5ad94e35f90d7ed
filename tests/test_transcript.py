"""Transcript: turns, word joining, and the LLM and browser views (contract 1.1, 1.2, 5.3)."""

from __future__ import annotations

import pytest

from unmute_trio.conversation.transcript import Transcript, Turn, join_words

SYSTEM = {"role": "system", "content": "SYS"}


def make(*turns: Turn) -> Transcript:
    transcript = Transcript()
    for turn in turns:
        index = transcript.start_turn(turn.role, turn.text)
        if turn.interrupted:
            transcript.interrupt(index)
    return transcript


def user(text: str) -> Turn:
    return Turn("user", text)


def bot(text: str, interrupted: bool = False) -> Turn:
    return Turn("assistant", text, interrupted)


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


# ------------------------------------------------------------------------ word joining


@pytest.mark.parametrize(
    ("text", "word", "joined"),
    [
        ("Hi", "there", "Hi there"),
        ("Hi ", "there", "Hi there"),
        ("Hi", " there", "Hi there"),
        ("", "hello", "hello"),
        ("...", "hello", "... hello"),
        ("Hi", "", "Hi"),
        ("Hi  ", "there", "Hi  there"),  # existing spacing is not normalised
    ],
)
def test_join_words_adds_one_space_only_when_needed(text: str, word: str, joined: str) -> None:
    assert join_words(text, word) == joined


def test_words_accumulate_in_the_current_turn() -> None:
    transcript = Transcript()
    transcript.start_turn("user")
    for word in ["How", "are", "you?"]:
        transcript.extend_current(word)
    transcript.start_turn("assistant")
    transcript.extend_current("Fine.")
    assert transcript.turns == (user("How are you?"), bot("Fine."))
    assert transcript.current == bot("Fine.")


def test_only_an_assistant_turn_can_be_interrupted() -> None:
    transcript = make(user("hi"))
    with pytest.raises(ValueError):
        transcript.interrupt(transcript.turns[0].key)
    with pytest.raises(ValueError):
        Transcript().extend_current("word")


def test_turns_are_named_by_keys_that_survive_deletion() -> None:
    transcript = Transcript()
    first = transcript.start_turn("user", "one")
    reply = transcript.start_turn("assistant")
    call = transcript.add_function_call("c1", "f", "{}")
    assert [first, reply, call] == [1, 2, 3]
    assert transcript.remove(first) and not transcript.remove(first)
    transcript.extend(reply, "Still")  # the reply's key still finds it after the deletion
    transcript.interrupt(reply)
    assert transcript.get(reply) == bot("Still", interrupted=True)
    assert transcript.start_turn("user") == 4  # keys are never reused
    with pytest.raises(KeyError):
        transcript.extend(first, "gone")
    assert transcript.llm_messages("SYS")[1:3] == [
        msg("user", "Hello."),
        {"role": "assistant", "content": "Still —"},
    ]


# ------------------------------------------------------------------------ LLM messages


def test_no_turn_at_all_is_the_greeting_request() -> None:
    assert Transcript().llm_messages("SYS") == [SYSTEM, msg("user", "Hello!")]


def test_plain_conversation_is_passed_through() -> None:
    transcript = make(user("Hi there"), bot("Hello! How are you?"), user("Good"))
    assert transcript.llm_messages("SYS") == [
        SYSTEM,
        msg("user", "Hi there"),
        msg("assistant", "Hello! How are you?"),
        msg("user", "Good"),
    ]


def test_assistant_first_gets_a_hello_before_it() -> None:
    transcript = make(bot("Hi, I'm here."), user("Great"))
    assert transcript.llm_messages("SYS") == [
        SYSTEM,
        msg("user", "Hello."),
        msg("assistant", "Hi, I'm here."),
        msg("user", "Great"),
    ]


def test_only_empty_turns_leave_just_the_hello() -> None:
    transcript = make(bot("", interrupted=True), user("   "))
    assert transcript.llm_messages("SYS") == [SYSTEM, msg("user", "Hello.")]


def test_empty_and_whitespace_only_turns_are_dropped() -> None:
    # Fixed bug (5.3): the original kept whitespace-only messages as empty strings.
    transcript = make(user("hi"), bot(""), user(" \t "), bot("Yes?"))
    assert transcript.llm_messages("SYS") == [
        SYSTEM,
        msg("user", "hi"),
        msg("assistant", "Yes?"),
    ]


def test_interrupted_turn_keeps_spoken_words_and_a_clean_mark() -> None:
    # Fixed bug (5.3): no trailing space where the original removed the dash.
    transcript = make(user("Tell me a story"), bot("Once upon a", interrupted=True), user("Stop"))
    assert transcript.llm_messages("SYS") == [
        SYSTEM,
        msg("user", "Tell me a story"),
        msg("assistant", "Once upon a —"),
        msg("user", "Stop"),
    ]


def test_turn_interrupted_before_any_audio_is_dropped_and_users_merge() -> None:
    transcript = make(user("hello"), bot("", interrupted=True), user("how are you"))
    assert transcript.llm_messages("SYS") == [SYSTEM, msg("user", "hello how are you")]


def test_consecutive_same_role_turns_are_merged_with_one_space() -> None:
    transcript = make(user("a "), user(" b"), bot("c", interrupted=True), bot("d"))
    assert transcript.llm_messages("SYS") == [
        SYSTEM,
        msg("user", "a b"),
        msg("assistant", "c — d"),
    ]


@pytest.mark.parametrize(
    ("said", "sent"),
    [
        ("... hello", "hello"),  # fixed bug (5.3): no leading space left behind
        ("...hello again", "hello again"),
        ("...", "..."),  # the marker alone is kept: the system prompt explains it
    ],
)
def test_silence_marker_prefix_is_removed_from_user_messages(said: str, sent: str) -> None:
    transcript = make(bot("Anyone there?"), user(said))
    assert transcript.llm_messages("SYS")[-1] == msg("user", sent)


def test_silence_marker_merged_with_later_speech_is_removed() -> None:
    transcript = make(bot("Hi"), user("..."), bot("", interrupted=True), user("sorry"))
    assert transcript.llm_messages("SYS")[-1] == msg("user", "sorry")


def test_silence_marker_is_only_removed_from_user_messages() -> None:
    transcript = make(user("hm"), bot("... right"))
    assert transcript.llm_messages("SYS")[-1] == msg("assistant", "... right")


def test_building_messages_changes_nothing() -> None:
    transcript = make(user("... hi"), bot("Hey", interrupted=True), user("x"))
    before = transcript.turns
    first = transcript.llm_messages("SYS")
    first[1]["content"] = "tampered"
    assert transcript.turns == before
    assert transcript.llm_messages("SYS")[1] == msg("user", "hi")


# ------------------------------------------------------------------------ browser view


def test_chat_history_shows_interruptions_as_the_original_did() -> None:
    transcript = make(
        bot("Hi there", interrupted=True),
        user("..."),
        bot("", interrupted=True),
        user("ok"),
        bot(""),  # a reply that has not spoken yet
    )
    assert transcript.chat_history() == [
        msg("assistant", "Hi there —"),
        msg("user", "..."),
        msg("assistant", "—"),
        msg("user", "ok"),
    ]


def test_chat_history_of_an_empty_transcript_is_empty() -> None:
    assert Transcript().chat_history() == []
    assert not Transcript().has_assistant_turn()


def test_function_calls_and_outputs_are_their_own_turns() -> None:
    transcript = make(user("Weather in Paris?"))
    call = transcript.add_function_call("call_1", "get_weather", '{"city":"Paris"}')
    output = transcript.add_function_output("call_1", '{"temp_c":24}')
    assert transcript.get(call) == Turn(
        "assistant", '{"city":"Paris"}', kind="function_call", call_id="call_1", name="get_weather"
    )
    assert transcript.get(output) == Turn(
        "user", '{"temp_c":24}', kind="function_call_output", call_id="call_1"
    )
    reply = transcript.start_turn("assistant")
    transcript.extend(reply, "Sunny.")
    # The reply after the call is a message of its own, not merged into the call.
    assert transcript.llm_messages("SYS") == [
        SYSTEM,
        msg("user", "Weather in Paris?"),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c":24}'},
        msg("assistant", "Sunny."),
    ]
    # The browser sees the words, not the call: and the words after it too.
    assert transcript.chat_history() == [
        msg("user", "Weather in Paris?"),
        msg("assistant", "Sunny."),
    ]


def test_an_assistant_message_right_after_a_call_is_not_merged_into_it() -> None:
    transcript = Transcript()
    transcript.start_turn("user", "Hi")
    transcript.add_function_call("call_1", "f", "{}")
    transcript.start_turn("assistant", "Done.")
    messages = transcript.llm_messages("SYS")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "assistant"]
    assert messages[2]["content"] == "" and messages[3] == msg("assistant", "Done.")


def test_misuse_is_refused_with_a_reason() -> None:
    transcript = Transcript()
    with pytest.raises(ValueError, match=r"^the transcript has no turn yet$"):
        transcript.extend_current("word")
    key = transcript.start_turn("user", "Hi")
    with pytest.raises(ValueError, match=r"^only an assistant message can be interrupted$"):
        transcript.interrupt(key)
    with pytest.raises(KeyError) as e:
        transcript.get(key + 1)
    assert e.value.args == (key + 1,)
