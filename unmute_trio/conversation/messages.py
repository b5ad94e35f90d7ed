"""What the machine says in words: the reasons it gives for closing or interrupting, and the
messages users see when a service fails or is slow."""

from __future__ import annotations

from unmute_trio.conversation.events import FailureKind

GOODBYE_SUFFIX = "bye!"
GOODBYE_CLOSE_REASON = "The assistant said goodbye."
INTERRUPTED_BY_WORD = "the user spoke over the bot"
INTERRUPTED_BY_VAD = "voice activity while the bot was speaking"
CANCELLED_BY_CLIENT = "the client cancelled the reply"


def fatal_message(service: str, kind: FailureKind) -> str:
    """The user-facing text of a fatal service failure (the original's wording for the first
    two, which clients may display)."""
    if kind == "capacity":
        return f"Too many people are connected to service '{service}'. Please try again later."
    if kind == "timeout":
        return f"Service '{service}' timed out. Please try again later."
    # The original said only "internal server error" here; naming the service tells the user
    # (and whoever runs the server) where to look.
    return f"Service '{service}' is not working right now. Please try again later."


def retry_warning(service: str) -> str:
    return f"Still looking for a free '{service}' server; the reply may be a bit late."


def custom_voice_warning(voice: str, store_unavailable: bool) -> str:
    if store_unavailable:
        return (
            f"The voice store is unavailable, so the cloned voice '{voice}' cannot be used; "
            "the default voice speaks instead."
        )
    return (
        f"The cloned voice '{voice}' is not known (cloned voices expire); "
        "the default voice speaks instead."
    )
