"""A whole deployment in one trio nursery, for scenario tests and benchmarks: the STT, TTS and
LLM simulators on loopback sockets and the server with the real conversation engine on a real
hypercorn socket.

Usage (in a trio test)::

    async with conversation_stack() as stack:
        async with VoiceClient.connect(stack.realtime_url) as client:
            ...
        assert stack.stt.open_connections == 0

Service timeouts are long by default: under a mock clock with autojump, any wait on a thread
(DNS resolution) could otherwise jump virtual time past a short timeout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from unmute_trio.session.runner import run_conversation
from unmute_trio.settings import Settings
from unmute_trio.testing.llm_sim import LlmSimConfig, LlmSimulator
from unmute_trio.testing.server import serve_app
from unmute_trio.testing.sim_base import MoshiSimulator
from unmute_trio.testing.stt_sim import SttSimConfig, SttSimulator
from unmute_trio.testing.tts_sim import TtsSimConfig, TtsSimulator
from unmute_trio.web.app import create_app
from unmute_trio.web.realtime import MAX_CLIENT_FRAME_BYTES
from unmute_trio.web.state import AppState


@dataclasses.dataclass
class Stack:
    stt: SttSimulator | MoshiSimulator  # the simulator, or a local engine passed in
    tts: TtsSimulator | MoshiSimulator
    llm: LlmSimulator
    settings: Settings
    state: AppState
    base_url: str

    @property
    def realtime_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/v1/realtime"

    def open_service_connections(self) -> dict[str, int]:
        return {
            "stt": self.stt.open_connections,
            "tts": self.tts.open_connections,
            "llm": self.llm.open_connections,
        }


@asynccontextmanager
async def conversation_stack(
    *,
    stt: SttSimConfig | None = None,
    tts: TtsSimConfig | None = None,
    llm: LlmSimConfig | None = None,
    stt_server: MoshiSimulator | None = None,
    tts_server: MoshiSimulator | None = None,
    **settings_overrides: Any,
) -> AsyncIterator[Stack]:
    """``stt_server`` / ``tts_server`` replace the simulators (e.g. the local engines)."""
    stt_sim = stt_server or SttSimulator(stt or SttSimConfig())
    tts_sim = tts_server or TtsSimulator(tts or TtsSimConfig())
    llm_sim = LlmSimulator(llm or LlmSimConfig())
    async with trio.open_nursery() as nursery:
        stt_port = await nursery.start(stt_sim.serve)
        tts_port = await nursery.start(tts_sim.serve)
        llm_port = await nursery.start(llm_sim.serve)
        options: dict[str, Any] = {
            "stt_url": f"ws://127.0.0.1:{stt_port}",
            "tts_url": f"ws://127.0.0.1:{tts_port}",
            "llm_url": f"http://127.0.0.1:{llm_port}",
            "voice_cloning_url": "http://127.0.0.1:9",
            "service_connect_timeout_s": 30.0,
            "health_timeout_s": 30.0,
            **settings_overrides,
        }
        settings = Settings(**options)
        app = create_app(settings, session_runner=run_conversation)
        port = await nursery.start(
            lambda task_status: serve_app(
                app, task_status=task_status, websocket_max_message_size=MAX_CLIENT_FRAME_BYTES
            )
        )
        yield Stack(
            stt=stt_sim,
            tts=tts_sim,
            llm=llm_sim,
            settings=settings,
            state=app.extensions["unmute"],
            base_url=f"http://127.0.0.1:{port}",
        )
        nursery.cancel_scope.cancel()
