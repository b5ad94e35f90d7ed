"""OpenAI Realtime (GA) conversation items: what a client may create and what the server reports.

Two families, because the two directions differ:

- ``*Input`` models validate the ``item`` of a client's ``conversation.item.create``: strict,
  unknown fields refused, only the content this server can use (text; function calls and their
  outputs). Audio and image content are refused with ``unsupported_value`` until the session
  can transcribe or describe them.
- :data:`Item` models are the server's own items, echoed in ``conversation.item.*`` and
  ``response.output_item.*`` events and kept in the conversation. They hold no audio: the server
  keeps transcripts, not recordings, so ``conversation.item.retrieved`` has no ``audio`` field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from unmute_trio.protocol.openai_errors import UNSUPPORTED_VALUE
from unmute_trio.protocol.openai_session import FUNCTION_NAME, Id, StrictModel, Text

# Content parts in one client message: a real message has one or two; the bound stops a frame of
# ten thousand empty parts from becoming ten thousand objects.
MAX_CONTENT_PARTS = 16

ItemStatus = Literal["completed", "incomplete", "in_progress"]

# ---------------------------------------------------------------- server items


class InputTextContent(BaseModel):
    type: Literal["input_text"] = "input_text"
    text: str


class InputAudioContent(BaseModel):
    type: Literal["input_audio"] = "input_audio"
    transcript: str | None = None  # null until the transcription of the turn is complete


class OutputTextContent(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str


class OutputAudioContent(BaseModel):
    type: Literal["output_audio"] = "output_audio"
    transcript: str


ContentPart = Annotated[
    InputTextContent | InputAudioContent | OutputTextContent | OutputAudioContent,
    Field(discriminator="type"),
]


class MessageItem(BaseModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message"] = "message"
    status: ItemStatus = "completed"
    role: Literal["user", "assistant", "system"]
    content: list[ContentPart]


class FunctionCallItem(BaseModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["function_call"] = "function_call"
    status: ItemStatus = "completed"
    call_id: str
    name: str
    arguments: str  # JSON text, as the LLM produced it (it may be invalid JSON)


class FunctionCallOutputItem(BaseModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["function_call_output"] = "function_call_output"
    status: ItemStatus = "completed"
    call_id: str
    output: str


Item = Annotated[
    MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")
]


def user_audio_message(
    item_id: str, transcript: str | None = None, status: ItemStatus = "completed"
) -> MessageItem:
    """The item of a user turn heard through the microphone (the committed audio buffer)."""
    return MessageItem(
        id=item_id, status=status, role="user", content=[InputAudioContent(transcript=transcript)]
    )


def assistant_message(
    item_id: str,
    modality: Literal["audio", "text"],
    text: str | None = None,
    status: ItemStatus = "completed",
) -> MessageItem:
    """An assistant reply; ``text=None`` gives the empty item of ``response.output_item.added``."""
    if text is None:
        return MessageItem(id=item_id, status=status, role="assistant", content=[])
    part: ContentPart = (
        OutputAudioContent(transcript=text) if modality == "audio" else OutputTextContent(text=text)
    )
    return MessageItem(id=item_id, status=status, role="assistant", content=[part])


# ---------------------------------------------------------------- client-created items


class InputTextPart(StrictModel):
    type: Literal["input_text"]
    text: Text


class OutputTextPart(StrictModel):
    type: Literal["output_text"]
    text: Text


def _refuse_content(kind: Any) -> Any:
    raise PydanticCustomError(
        UNSUPPORTED_VALUE,
        "Content of type '{kind}' is not supported in conversation.item.create yet;"
        " send text ('input_text' for user and system, 'output_text' for assistant).",
        {"kind": kind},
    )


class UnsupportedPart(BaseModel):
    """GA content this server cannot use yet: refused, with a message that says so.

    Its other fields are not looked at (``extra="ignore"``), so the one error is about ``type``.
    """

    model_config = ConfigDict(extra="ignore")
    type: Annotated[
        Literal["input_audio", "input_image", "output_audio"], AfterValidator(_refuse_content)
    ]


UserPart = Annotated[InputTextPart | UnsupportedPart, Field(discriminator="type")]
AssistantPart = Annotated[OutputTextPart | UnsupportedPart, Field(discriminator="type")]


class _ClientItem(StrictModel):
    id: Id | None = None  # the server makes one up when it is missing
    object: Literal["realtime.item"] | None = None
    status: ItemStatus | None = None  # ignored: an item a client adds is complete


class UserMessageInput(_ClientItem):
    type: Literal["message"]
    role: Literal["user"]
    content: Annotated[list[UserPart], Field(min_length=1, max_length=MAX_CONTENT_PARTS)]


class SystemMessageInput(_ClientItem):
    type: Literal["message"]
    role: Literal["system"]
    content: Annotated[list[UserPart], Field(min_length=1, max_length=MAX_CONTENT_PARTS)]


class AssistantMessageInput(_ClientItem):
    type: Literal["message"]
    role: Literal["assistant"]
    content: Annotated[list[AssistantPart], Field(min_length=1, max_length=MAX_CONTENT_PARTS)]


MessageInput = Annotated[
    UserMessageInput | SystemMessageInput | AssistantMessageInput, Field(discriminator="role")
]


class FunctionCallInput(_ClientItem):
    """A past call, to seed a conversation's history."""

    type: Literal["function_call"]
    call_id: Id
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    arguments: Text


class FunctionCallOutputInput(_ClientItem):
    """The result of a function call the model asked for (its ``call_id``)."""

    type: Literal["function_call_output"]
    call_id: Id
    output: Text


ItemInput = Annotated[
    MessageInput | FunctionCallInput | FunctionCallOutputInput, Field(discriminator="type")
]


def item_from_input(item: ItemInput, item_id: str) -> Item:
    """The server's item for a client-created one (``item_id``: the client's id, or a new one)."""
    if isinstance(item, FunctionCallInput):
        return FunctionCallItem(
            id=item_id, call_id=item.call_id, name=item.name, arguments=item.arguments
        )
    if isinstance(item, FunctionCallOutputInput):
        return FunctionCallOutputItem(id=item_id, call_id=item.call_id, output=item.output)
    parts: list[ContentPart] = []
    for part in item.content:
        if isinstance(part, InputTextPart):
            parts.append(InputTextContent(text=part.text))
        elif isinstance(part, OutputTextPart):
            parts.append(OutputTextContent(text=part.text))
    return MessageItem(id=item_id, role=item.role, content=parts)
