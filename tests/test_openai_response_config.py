"""One response's own settings laid over the session's (``resolve_response``), value by value: its
audio format and voice, its metadata, and the refusals of its ``tool_choice`` and
``conversation``. Everything is built inside the tests (see docs/testing.md, mutation testing)."""

from __future__ import annotations

import json
from typing import Any

from unmute_trio.protocol.openai_client_events import parse_client_event
from unmute_trio.protocol.openai_errors import ClientEventError
from unmute_trio.protocol.openai_response_config import (
    ResponseConfig,
    ResponseParams,
    resolve_response,
)
from unmute_trio.protocol.openai_session import (
    SessionConfig,
    SessionPatch,
    apply_session_update,
    default_session,
)


def _session(**changes: Any) -> SessionConfig:
    base = default_session("sess_1", model="gemma-3-1b", voice="marin", instructions="Be brief.")
    patch = SessionPatch.model_validate({"type": "realtime", **changes})
    result = apply_session_update(base, patch)
    assert isinstance(result, SessionConfig), result
    return result


def _tool(name: str) -> dict[str, Any]:
    return {"type": "function", "name": name, "parameters": {"type": "object"}}


def _resolve(session: SessionConfig, response: dict[str, Any] | None, **kw: Any) -> Any:
    params = None if response is None else ResponseParams.model_validate(response)
    return resolve_response(session, params, **kw)


def _config(session: SessionConfig, response: dict[str, Any] | None) -> ResponseConfig:
    config = _resolve(session, response)
    assert isinstance(config, ResponseConfig), config
    return config


def _formats(config: ResponseConfig) -> str:
    return config.output_format.type


def test_a_response_speaks_in_its_own_audio_format_else_the_sessions() -> None:
    session = _session(audio={"output": {"format": {"type": "audio/pcmu"}, "voice": "cedar"}})
    own = _config(session, {"audio": {"output": {"format": {"type": "audio/pcma"}}}})
    assert (_formats(own), own.voice) == ("audio/pcma", "cedar")
    own_pcm = _config(session, {"audio": {"output": {"format": {"type": "audio/pcm"}}}})
    assert own_pcm.output_format.model_dump() == {"type": "audio/pcm", "rate": 24000}
    # A voice alone, an empty output or empty audio keep the session's format.
    voice_only = _config(session, {"audio": {"output": {"voice": "marin"}}})
    assert (_formats(voice_only), voice_only.voice) == ("audio/pcmu", "marin")
    for response in ({"audio": {"output": {}}}, {"audio": {}}, {}, None):
        config = _config(session, response)
        assert (_formats(config), config.voice) == ("audio/pcmu", "cedar"), response


def test_a_responses_metadata_is_kept_exactly_and_is_none_without_it() -> None:
    metadata = {"topic": "weather", "turn": "3", "": ""}
    config = _config(_session(), {"metadata": metadata})
    assert config.metadata == metadata
    assert config.model_dump()["metadata"] == {"topic": "weather", "turn": "3", "": ""}
    assert _config(_session(), {}).metadata is None
    assert _config(_session(), None).metadata is None


def test_a_function_choice_naming_no_tool_is_refused_with_its_event_id() -> None:
    session = _session(tools=[_tool("get_weather")])
    error = _resolve(
        session, {"tool_choice": {"type": "function", "name": "get_time"}}, event_id="evt_12"
    )
    assert error == ClientEventError(
        code="invalid_value",
        message="tool_choice names the function 'get_time', which is not among the tools.",
        param="response.tool_choice",
        event_id="evt_12",
        type="invalid_request_error",
    )
    without_id = _resolve(session, {"tool_choice": {"type": "function", "name": "get_time"}})
    assert isinstance(without_id, ClientEventError) and without_id.event_id is None


def test_required_without_tools_is_refused_and_with_the_responses_tools_is_not() -> None:
    error = _resolve(_session(), {"tool_choice": "required"}, event_id="evt_3")
    assert error == ClientEventError(
        code="invalid_value",
        message="tool_choice is 'required' but there are no tools.",
        param="response.tool_choice",
        event_id="evt_3",
    )
    # The response's own tools count, and so do the session's.
    own = _config(_session(), {"tool_choice": "required", "tools": [_tool("get_weather")]})
    assert own.tool_choice == "required" and [t.name for t in own.tools] == ["get_weather"]
    session = _session(tools=[_tool("get_weather")])
    assert _config(session, {"tool_choice": "required"}).tool_choice == "required"
    # A function choice naming one of the response's own tools is taken, not refused.
    named = _config(
        _session(),
        {"tool_choice": {"type": "function", "name": "lookup"}, "tools": [_tool("lookup")]},
    )
    assert named.tool_choice.model_dump() == {"type": "function", "name": "lookup"}
    # The response's tools replace the session's: "required" with none of its own fails.
    emptied = _resolve(session, {"tool_choice": "required", "tools": []})
    assert isinstance(emptied, ClientEventError)
    assert emptied.message == "tool_choice is 'required' but there are no tools."


def test_only_the_default_conversation_is_accepted_and_the_refusal_says_why() -> None:
    def create(response: dict[str, Any]) -> Any:
        frame = {"type": "response.create", "event_id": "evt_1", "response": response}
        return parse_client_event(json.dumps(frame))

    refused = create({"conversation": "none"})
    assert refused == ClientEventError(
        code="unsupported_value",
        message=(
            "Only conversation 'auto' is supported: out-of-band responses are not implemented."
        ),
        param="response.conversation",
        event_id="evt_1",
    )
    assert not isinstance(create({"conversation": "auto"}), ClientEventError)
    assert not isinstance(create({}), ClientEventError)
