"""Run an ASGI app (Quart-Trio) on a real hypercorn socket inside a trio nursery.

Used by the simulators, by ``unmute-trio sim`` and by the tests, which bind port 0 and read back
the port actually bound.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from unmute_trio.web import hypercorn_fixes


def hypercorn_config(host: str = "127.0.0.1", port: int = 0, **overrides: Any) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = 0.5
    config.accesslog = None
    # hypercorn logs every unclean disconnect at ERROR; the simulators see many by design.
    config.errorlog = logging.getLogger("hypercorn.error")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


async def serve_app(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    **config_overrides: Any,
) -> None:
    """Serve ``app`` until cancelled; ``task_status.started`` receives the bound port."""
    hypercorn_fixes.apply()  # the server's hypercorn: its fixes, its frame codec, its costs
    config = hypercorn_config(host, port, **config_overrides)

    async def _serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await serve(app, config, task_status=task_status)

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(_serve)
        bound_port = urlsplit(binds[0]).port
        assert bound_port is not None
        task_status.started(bound_port)
