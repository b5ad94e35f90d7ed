"""What an OpenAI-compatible server serves, as the LLM client and the health probe both need it:
its ``/v1/models`` list, the root URL that ``/v1/...`` paths go under, and whether the
configured model (``KYUTAI_LLM_MODEL``) can work there."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict


class ServedModel(BaseModel):
    """One entry of ``/v1/models``."""

    model_config = ConfigDict(extra="ignore")
    id: str
    owned_by: str | None = None
    status: object = None  # llama.cpp's router mode (several models) reports each one's state


class ModelList(BaseModel):
    """The body of ``/v1/models``."""

    model_config = ConfigDict(extra="ignore")
    data: list[ServedModel]


def server_root(url: str) -> str:
    """``KYUTAI_LLM_URL`` as the server root that ``/v1/...`` paths are added to: without a
    trailing slash, and without a trailing ``/v1`` (OpenAI's SDKs take the base URL with it)."""
    root = url.rstrip("/")
    return root.removesuffix("/v1") if root.endswith("/v1") else root


def model_problem(configured: str | None, served: Sequence[ServedModel], where: str) -> str | None:
    """Why no reply can work with ``configured`` (``KYUTAI_LLM_MODEL``, or None) against a
    server listing ``served`` at ``where``; None when it can.

    A configured model must be listed, or be a listed Ollama model without its ``:latest`` tag
    (Ollama answers for ``llama3.2`` when it lists ``llama3.2:latest``). A llama.cpp server
    with one model (not in router mode) answers whatever the request names, so any name goes
    there. Without a configured model, the server must list exactly one.
    """
    ids = [m.id for m in served]
    shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    if configured is not None:
        if configured in ids or f"{configured}:latest" in ids:
            return None
        if len(served) == 1 and served[0].owned_by == "llamacpp" and served[0].status is None:
            return None
        if not ids:
            return f"KYUTAI_LLM_MODEL={configured}, but no model is served at {where}: load it"
        return (
            f"KYUTAI_LLM_MODEL={configured} is not a model served at {where} (it lists "
            f"{shown}): set KYUTAI_LLM_MODEL to one of them"
        )
    if not ids:
        return f"no model is served at {where}; load one or set KYUTAI_LLM_MODEL"
    if len(ids) > 1:
        return (
            f"{len(ids)} models are served at {where} ({shown}); set KYUTAI_LLM_MODEL to choose one"
        )
    return None


def not_found_hint(url: str) -> str:
    """What to change when ``{root}/v1/models`` answers 404."""
    return (
        f"nothing answers at {url}: KYUTAI_LLM_URL must be the LLM server's root, the part "
        "before /v1 (http://host:port, or https://openrouter.ai/api)"
    )
