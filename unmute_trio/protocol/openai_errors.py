"""Errors about OpenAI Realtime (GA) client events, in the shape of the API's ``error`` event.

A client event that cannot be accepted becomes a :class:`ClientEventError` *value* (never an
exception across the session): the session answers it with an ``error`` server event and goes
on, as OpenAI does. The ``code`` strings follow OpenAI's where it has one
(``missing_required_parameter``, ``unknown_parameter``, ``invalid_type``, ``invalid_value``,
``string_above_max_length``, ...); the others are ours and listed in docs/openai-realtime.md.
``param`` is the offending field as a path (``session.audio.input.turn_detection.threshold``,
``session.tools[2].name``), like OpenAI's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from unmute_trio.protocol.json_limits import format_path as format_path  # re-exported

# Longest pydantic message quoted in an error: a few of them repeat the client's value.
MAX_DETAIL_CHARS = 200

# Codes of our own (OpenAI has no equivalent, or none documented).
# frame_too_large, nesting_too_deep and invalid_string (a lone UTF-16 surrogate) are in
# protocol.json_limits, whose checks both dialects share.
INVALID_FRAME = "invalid_frame"  # a binary WebSocket frame
INVALID_JSON = "invalid_json"
UNSUPPORTED_EVENT = "unsupported_event"  # a GA event this server does not implement
UNSUPPORTED_PARAMETER = "unsupported_parameter"  # a GA field this server cannot honour
UNSUPPORTED_VALUE = "unsupported_value"  # a GA value this server cannot honour
# Codes OpenAI uses.
MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
UNKNOWN_PARAMETER = "unknown_parameter"
INVALID_TYPE = "invalid_type"
INVALID_VALUE = "invalid_value"

# Our validators raise PydanticCustomError with one of these as its type; it becomes the code.
CUSTOM_CODES = frozenset({UNSUPPORTED_PARAMETER, UNSUPPORTED_VALUE, INVALID_VALUE, INVALID_TYPE})

_TYPE_ERRORS = frozenset(
    {
        "string_type",
        "int_type",
        "float_type",
        "bool_type",
        "list_type",
        "dict_type",
        "model_type",
        "model_attributes_type",
        "int_from_float",
        "none_required",
    }
)

# Realtime *beta* field names that GA renamed or dropped: an unknown-parameter error for one of
# them says where the GA field lives, since beta clients are the usual source of these.
BETA_FIELD_HINTS = {
    "modalities": "use 'output_modalities' (GA)",
    "voice": "use 'audio.output.voice' (GA)",
    "input_audio_format": "use 'audio.input.format' (GA)",
    "output_audio_format": "use 'audio.output.format' (GA)",
    "turn_detection": "use 'audio.input.turn_detection' (GA)",
    "input_audio_transcription": "use 'audio.input.transcription' (GA)",
    "input_audio_noise_reduction": "use 'audio.input.noise_reduction' (GA)",
    "max_response_output_tokens": "use 'max_output_tokens' (GA)",
    "temperature": "the GA API has no temperature",
}


@dataclass(frozen=True, slots=True)
class ClientEventError:
    """Why a client event was refused: the payload of the ``error`` server event."""

    code: str
    message: str
    param: str | None = None
    event_id: str | None = None  # the client's, when it could be read
    type: Literal["invalid_request_error"] = "invalid_request_error"


def error_from_validation(
    err: ValidationError, data: Any, *, event_id: str | None = None
) -> ClientEventError:
    """Turn pydantic's errors about ``data`` into one OpenAI-style error (like OpenAI, one each).

    Of several errors the one with the deepest path wins: for a union (``voice``: a name or
    ``{"id": ...}``) pydantic reports one error per branch, and the deepest is the branch the
    client meant. On a tie, our own validators' errors win: they say more than "not a string".
    """
    errors = err.errors(include_url=False, include_input=False)
    best = max(errors, key=lambda e: (len(_input_path(data, e)), e["type"] in CUSTOM_CODES))
    return _error_from_details(best, _input_path(data, best), event_id)


def _input_path(data: Any, error: ErrorDetails) -> list[str | int]:
    """The error's location in the client's JSON, without pydantic's union-branch labels.

    Pydantic puts the tag of a discriminated union (``"server_vad"``) or the name of a union
    branch (``"str"``) into ``loc``; walking the input alongside ``loc`` keeps only the parts
    that really are keys or indexes. A missing or unknown key is the last part, kept as is.
    """
    path: list[str | int] = []
    node = data
    loc = error["loc"]
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif i == len(loc) - 1 and error["type"] == "missing":
            path.append(part)
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        # The discriminator's name, from the context pydantic gives as a quoted string.
        path.append(str(error.get("ctx", {}).get("discriminator", "'type'")).strip("'"))
    return path


def _error_from_details(
    error: ErrorDetails, path: list[str | int], event_id: str | None
) -> ClientEventError:
    param = format_path(path) or None
    kind = error["type"]
    msg = error["msg"]
    if len(msg) > MAX_DETAIL_CHARS:  # pydantic quotes some inputs (a union tag) in full
        msg = msg[:MAX_DETAIL_CHARS] + "…"
    ctx = error.get("ctx") or {}
    if kind == "missing" or kind == "union_tag_not_found":
        code, message = MISSING_REQUIRED_PARAMETER, f"Missing required parameter: '{param}'."
    elif kind == "extra_forbidden":
        code, message = UNKNOWN_PARAMETER, f"Unknown parameter: '{param}'."
        hint = BETA_FIELD_HINTS.get(str(path[-1])) if len(path) == 2 else None
        if hint and path[0] in ("session", "response"):
            message += f" This is a Realtime beta name: {hint}."
    elif kind in _TYPE_ERRORS:
        code, message = INVALID_TYPE, f"Invalid type for '{param}': {_lower_first(msg)}."
    elif kind in CUSTOM_CODES:
        code, message = kind, msg
    else:
        code = _range_code(kind, ctx) or INVALID_VALUE
        message = f"Invalid value for '{param}': {_lower_first(msg)}."
    return ClientEventError(code=code, message=message, param=param, event_id=event_id)


def _range_code(kind: str, ctx: dict[str, Any]) -> str | None:
    if kind == "string_too_long":
        return "string_above_max_length"
    if kind == "string_too_short":
        return "string_below_min_length"
    if kind == "too_long":
        return "array_above_max_length"
    if kind == "too_short":
        return "array_below_min_length"
    bound = next((v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")), None)
    number = "integer" if isinstance(bound, int) else "decimal"
    if kind in ("less_than", "less_than_equal"):
        return f"{number}_above_max_value"
    if kind in ("greater_than", "greater_than_equal"):
        return f"{number}_below_min_value"
    return None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
