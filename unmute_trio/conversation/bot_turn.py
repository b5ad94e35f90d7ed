"""One bot reply inside the conversation machine: what the LLM wrote, what was heard, and the
notes that follow from the reply's own events. The machine decides when a reply starts, ends
or is cut; this decides what each of its words and calls means for the transcript."""

from __future__ import annotations

from dataclasses import dataclass, field

from unmute_trio.conversation.events import (
    Action,
    CustomVoiceMissing,
    LlmDone,
    LlmToolCall,
    LlmWord,
    Notify,
    ResponseSpec,
    ResponseTextComplete,
    ResponseToolCall,
    ResponseWordPlanned,
    ResponseWordSpoken,
    ServiceRetrying,
    ServiceWarning,
    TtsWordSpoken,
)
from unmute_trio.conversation.messages import custom_voice_warning, retry_warning
from unmute_trio.conversation.transcript import Transcript

# The events of a running reply that concern only the reply itself.
ReplyEvent = LlmWord | LlmToolCall | TtsWordSpoken | ServiceRetrying | CustomVoiceMissing


@dataclass
class BotTurn:
    turn_id: int
    key: int  # of its assistant message in the transcript
    spec: ResponseSpec
    llm_words: list[str] = field(default_factory=list)
    llm_done: LlmDone | None = None

    def on_event(self, event: ReplyEvent, transcript: Transcript) -> list[Action]:
        match event:
            case LlmWord():
                self.llm_words.append(event.word)
                if not self.spec.speak:
                    transcript.extend(self.key, event.word)  # text: what is written is shown
                return [Notify(ResponseWordPlanned(self.turn_id, event.word))]
            case LlmToolCall():
                key = transcript.add_function_call(event.call_id, event.name, event.arguments)
                call = ResponseToolCall(
                    self.turn_id, event.call_id, event.name, event.arguments, key
                )
                return [Notify(call)]
            case TtsWordSpoken():
                # Only words whose audio is being played join the transcript.
                transcript.extend(self.key, event.text)
                return [Notify(ResponseWordSpoken(self.turn_id, event.text))]
            case ServiceRetrying():
                return [Notify(ServiceWarning(self.turn_id, retry_warning(event.service)))]
            case CustomVoiceMissing():
                message = custom_voice_warning(event.voice, event.store_unavailable)
                return [Notify(ServiceWarning(self.turn_id, message))]

    def on_llm_done(self, event: LlmDone) -> list[Action]:
        if self.llm_done is not None:
            return []
        self.llm_done = event
        # The words carry their own leading spaces, so joining them gives the text.
        return [Notify(ResponseTextComplete(self.turn_id, "".join(self.llm_words)))]
