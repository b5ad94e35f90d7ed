"""The conversation as a list of explicit turns, and its two views (LLM and browser).

The original kept a list of chat messages and encoded state in their text: an empty assistant
message meant "generating", an empty user message meant "waiting", an em dash meant
"interrupted". Here a turn says what it is (role, text, interrupted) and the conversation state
lives in the machine, so the text only ever holds words that were actually said:

- a user turn holds the STT words (or the silence marker when the user said nothing);
- an assistant turn holds only the words whose audio reached the browser, so after a barge-in
  the LLM sees what the user heard, not what the LLM had planned to say.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

Role = Literal["user", "assistant"]
TurnKind = Literal["message", "function_call", "function_call_output"]

USER_SILENCE_MARKER = "..."
"""Text of a user turn created because the user stayed silent; the system prompt explains it."""

INTERRUPTION_MARK = "—"
"""Appended (after a space) to an interrupted assistant turn, in both views: the browser shows
it as the original did, and the LLM learns where it was cut off (the system prompt says so)."""

GREETING_REQUEST = "Hello!"
"""The synthetic user message the LLM answers with the very first greeting."""

LEADING_USER_MESSAGE = "Hello."
"""Inserted when the LLM would otherwise see an assistant message first, which some chat
templates (Gemma's) reject."""

ChatMessage = dict[str, Any]


@dataclass(frozen=True)
class Turn:
    """A message, or (OpenAI Realtime clients) a function call the LLM made or its result.

    A ``function_call`` turn is the assistant's: ``call_id``, ``name``, and the JSON
    ``arguments`` in ``text``. A ``function_call_output`` turn is the user side's: the result
    in ``text``.
    """

    role: Role
    text: str = ""
    interrupted: bool = False
    kind: TurnKind = "message"
    call_id: str = ""
    name: str = ""
    # Given by the transcript: 1, 2, 3... in order of creation, never reused. Not part of a
    # turn's value: two turns that say the same are equal.
    key: int = field(default=0, compare=False)


def join_words(text: str, word: str) -> str:
    """Append a word, adding one space between them unless either side already has one."""
    if text and word and not text[-1].isspace() and not word[0].isspace():
        return f"{text} {word}"
    return text + word


class Transcript:
    """Every turn of one conversation, in order. Turns are appended; a client of the OpenAI
    protocol may delete one (``conversation.item.delete``), so turns are named by ``key``,
    not by position."""

    def __init__(self) -> None:
        self._turns: list[Turn] = []
        self._next_key = 1

    @property
    def turns(self) -> tuple[Turn, ...]:
        return tuple(self._turns)

    @property
    def current(self) -> Turn | None:
        """The last turn, the one words are appended to."""
        return self._turns[-1] if self._turns else None

    def __len__(self) -> int:
        return len(self._turns)

    def has_assistant_turn(self) -> bool:
        return any(turn.role == "assistant" for turn in self._turns)

    # ------------------------------------------------------------------ changes

    def _append(self, turn: Turn) -> int:
        key, self._next_key = self._next_key, self._next_key + 1
        self._turns.append(replace(turn, key=key))
        return key

    def start_turn(self, role: Role, text: str = "") -> int:
        """Append a message turn; returns its key."""
        return self._append(Turn(role, text))

    def add_function_call(self, call_id: str, name: str, arguments: str) -> int:
        return self._append(
            Turn("assistant", arguments, kind="function_call", call_id=call_id, name=name)
        )

    def add_function_output(self, call_id: str, output: str) -> int:
        return self._append(Turn("user", output, kind="function_call_output", call_id=call_id))

    def get(self, key: int) -> Turn:
        return self._turns[self._index(key)]

    def remove(self, key: int) -> bool:
        """Delete turn ``key``; ``False`` if there is none (already deleted)."""
        try:
            del self._turns[self._index(key)]
        except KeyError:
            return False
        return True

    def _index(self, key: int) -> int:
        # From the end: the turns being extended are the last ones.
        for i in range(len(self._turns) - 1, -1, -1):
            if self._turns[i].key == key:
                return i
        raise KeyError(key)

    def extend_current(self, word: str) -> None:
        """Append a word to the current turn (see :func:`join_words` for the spacing)."""
        self.extend(self._require_current().key, word)

    def extend(self, key: int, word: str) -> None:
        """Append a word to turn ``key`` (a reply keeps growing after a function call)."""
        index = self._index(key)
        turn = self._turns[index]
        self._turns[index] = replace(turn, text=join_words(turn.text, word))

    def interrupt(self, key: int) -> None:
        """Mark assistant message ``key`` as cut off by the user."""
        index = self._index(key)
        turn = self._turns[index]
        if turn.role != "assistant" or turn.kind != "message":
            raise ValueError("only an assistant message can be interrupted")
        self._turns[index] = replace(turn, interrupted=True)

    def _require_current(self) -> Turn:
        if not self._turns:
            raise ValueError("the transcript has no turn yet")
        return self._turns[-1]

    # ------------------------------------------------------------------ views

    def llm_messages(self, system_prompt: str) -> list[ChatMessage]:
        """The messages for the next LLM request, given the turns so far.

        The original's ``preprocess_messages_for_llm`` semantics, without its bugs:

        - no turn at all → the greeting request ``[system, user "Hello!"]``;
        - turns that are empty or whitespace-only are dropped (an assistant turn interrupted
          before any of its audio was played counts as empty: the user heard nothing);
        - an interrupted assistant turn keeps its spoken words plus `` —``;
        - consecutive turns of the same role are merged with one space;
        - if the first message after the system prompt is not the user's, ``"Hello."`` is
          inserted before it;
        - a user message that starts with the silence marker but says more loses the marker
          and the whitespace after it (``"... hello"`` → ``"hello"``); a message that is
          exactly the marker is kept.
        """
        if not self._turns:
            return [_message("system", system_prompt), _message("user", GREETING_REQUEST)]
        merged: list[ChatMessage] = []
        for turn in self._turns:
            if turn.kind != "message":
                merged.append(_tool_message(turn))
                continue
            text = turn.text.strip()
            if not text:
                continue
            if turn.interrupted:
                text = f"{text} {INTERRUPTION_MARK}"
            if merged and merged[-1]["role"] == turn.role and "tool_calls" not in merged[-1]:
                merged[-1]["content"] += " " + text
            else:
                merged.append(_message(turn.role, text))
        for message in merged:
            if message["role"] == "user":
                message["content"] = _without_silence_prefix(message["content"])
        if not merged or merged[0]["role"] != "user":
            merged.insert(0, _message("user", LEADING_USER_MESSAGE))
        return [_message("system", system_prompt), *merged]

    def chat_history(self) -> list[ChatMessage]:
        """The conversation as the browser sees it (``chat_history`` of ``response.created``
        and ``unmute.additional_outputs``): one message per turn, without the system prompt.

        Empty turns (a reply that has not spoken yet) are left out; an interrupted assistant
        turn ends with ``—`` (or is just ``—`` if nothing was heard), as the original shows it.
        """
        history: list[ChatMessage] = []
        for turn in self._turns:
            if turn.kind != "message":
                continue  # function calls are for the LLM, not the transcript shown
            text = turn.text.strip()
            if turn.interrupted:
                text = f"{text} {INTERRUPTION_MARK}" if text else INTERRUPTION_MARK
            if text:
                history.append(_message(turn.role, text))
        return history


def _message(role: str, content: str) -> ChatMessage:
    return {"role": role, "content": content}


def _tool_message(turn: Turn) -> ChatMessage:
    """A function call or its result, in the chat-completions shape."""
    if turn.kind == "function_call":
        call = {
            "id": turn.call_id,
            "type": "function",
            "function": {"name": turn.name, "arguments": turn.text},
        }
        return {"role": "assistant", "content": "", "tool_calls": [call]}
    return {"role": "tool", "tool_call_id": turn.call_id, "content": turn.text}


def _without_silence_prefix(content: str) -> str:
    if content != USER_SILENCE_MARKER and content.startswith(USER_SILENCE_MARKER):
        return content.removeprefix(USER_SILENCE_MARKER).lstrip()
    return content
