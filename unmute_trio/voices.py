"""The voice list (``voices.yaml``, docs/protocol.md) and its loader.

A broken file fails at start with the file, the line and the reason (:class:`VoiceFileError`),
rather than at the first request. ``GET /v1/voices`` serves the ``good`` voices with ``comment``
removed and nulls kept, exactly as the original does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from unmute_trio.protocol.instructions import Instructions


class VoiceFileError(ValueError):
    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class FileVoiceSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_type: Literal["file"] = "file"
    path_on_server: str
    description: str | None = None
    description_link: str | None = None


class FreesoundInstance(BaseModel):
    id: int
    name: str
    username: str
    license: str


class FreesoundVoiceSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_type: Literal["freesound"] = "freesound"
    url: str
    start_time: int | None = None
    sound_instance: FreesoundInstance | None = None
    path_on_server: str


VoiceSource = Annotated[FileVoiceSource | FreesoundVoiceSource, Field(discriminator="source_type")]


class VoiceSample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    comment: str | None = None
    good: bool | None = None
    instructions: Instructions | None = None
    source: VoiceSource


_LIST_ADAPTER: TypeAdapter[list[VoiceSample]] = TypeAdapter(list[VoiceSample])


def load_voices(path: Path) -> list[VoiceSample]:
    """Read and validate a voices file. Blocking: call it off the trio thread or at start."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise VoiceFileError(path, None, f"cannot read the file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise VoiceFileError(path, None, f"not UTF-8 text: {e}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark is not None else None
        raise VoiceFileError(path, line, f"invalid YAML: {e.problem}") from None
    except yaml.YAMLError as e:
        raise VoiceFileError(path, None, f"invalid YAML: {e}") from None
    if not isinstance(data, list):
        raise VoiceFileError(path, 1, "the top level must be a list of voices")
    try:
        return _LIST_ADAPTER.validate_python(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = first["loc"]
        index = loc[0] if loc and isinstance(loc[0], int) else None
        line = None
        if index is not None and node is not None and index < len(node.value):
            line = node.value[index].start_mark.line + 1
        field = ".".join(str(p) for p in loc[1:]) or "entry"
        raise VoiceFileError(path, line, f"voice #{index}: {field}: {first['msg']}") from None


def public_voices(voices: list[VoiceSample]) -> list[dict[str, Any]]:
    """The JSON body of ``GET /v1/voices``: good voices, ``comment`` removed, nulls kept."""
    return [v.model_dump(mode="json", exclude={"comment"}) for v in voices if v.good]
