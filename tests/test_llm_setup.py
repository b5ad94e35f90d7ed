"""A wrong LLM configuration shows at once: in ``/v1/health`` (LLM down, and what to change), and
in the log when the server starts. A URL ending in ``/v1`` works. Against the LLM simulator."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import REGISTRY

from tests.conftest import replace
from unmute_trio.errors import ServiceProtocolError
from unmute_trio.services.llm import LLMClient, LLMConfigError
from unmute_trio.services.llm_models import ServedModel, model_problem
from unmute_trio.settings import Settings
from unmute_trio.testing.llm_sim import LlmSimConfig, LlmSimulator

FAST = {"ttft_s": 0.0, "tokens_per_s": math.inf}
MESSAGES = [{"role": "user", "content": "Hello!"}]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def start_sim(nursery: trio.Nursery, **config: Any) -> tuple[LlmSimulator, str]:
    sim = LlmSimulator(LlmSimConfig(**{**FAST, **config}))
    port = await nursery.start(sim.serve)
    return sim, f"http://127.0.0.1:{port}"


async def health(serve, settings: Settings) -> dict[str, Any]:
    base = await serve(settings)
    async with httpx.AsyncClient(base_url=base) as c:
        with trio.fail_after(5):
            return (await c.get("/v1/health")).json()


async def reply(llm: LLMClient) -> str:
    with trio.fail_after(5):
        async with llm.stream_words(MESSAGES, temperature=0.7) as words:
            return "".join([word async for word in words])


# ------------------------------------------------------------------ health


async def test_health_reports_a_model_the_server_does_not_serve(
    nursery: trio.Nursery, serve, all_down_settings: Settings
) -> None:
    _, url = await start_sim(nursery, models=["gemma-3-1b", "llama-3-8b"])
    body = await health(serve, replace(all_down_settings, llm_url=url, llm_model="mistral"))
    assert body["llm_up"] is False
    assert body["engines"]["llm"] is None
    problem = body["problems"]["llm"]
    assert problem.startswith("KYUTAI_LLM_MODEL=mistral is not a model served at " + url)
    assert "gemma-3-1b, llama-3-8b" in problem


async def test_health_of_a_served_model_is_unchanged(
    nursery: trio.Nursery, serve, all_down_settings: Settings
) -> None:
    _, url = await start_sim(nursery, models=["gemma-3-1b", "llama-3-8b"])
    body = await health(serve, replace(all_down_settings, llm_url=url, llm_model="llama-3-8b"))
    assert body["llm_up"] is True
    assert body["engines"]["llm"] == "llama-3-8b"
    assert "problems" not in body


async def test_an_ollama_model_may_be_named_without_its_latest_tag(
    nursery: trio.Nursery, serve, all_down_settings: Settings
) -> None:
    _, url = await start_sim(nursery, models=["llama3.2:latest"])
    body = await health(serve, replace(all_down_settings, llm_url=url, llm_model="llama3.2"))
    assert body["llm_up"] is True


async def test_health_reports_several_models_and_none_chosen(
    nursery: trio.Nursery, serve, all_down_settings: Settings
) -> None:
    _, url = await start_sim(nursery, models=["a", "b"])
    body = await health(serve, replace(all_down_settings, llm_url=url))
    assert body["llm_up"] is False
    assert "set KYUTAI_LLM_MODEL to choose one" in body["problems"]["llm"]


async def test_health_says_what_to_change_when_the_url_is_not_the_root(
    nursery: trio.Nursery, serve, all_down_settings: Settings
) -> None:
    _, url = await start_sim(nursery)
    body = await health(serve, replace(all_down_settings, llm_url=url + "/openai"))
    assert body["llm_up"] is False
    assert "KYUTAI_LLM_URL must be the LLM server's root" in body["problems"]["llm"]


LLAMA_CPP = {"id": "qwen", "owned_by": "llamacpp"}


@pytest.mark.parametrize(
    ("configured", "served", "works"),
    [
        ("b", [{"id": "a"}, {"id": "b"}], True),
        ("c", [{"id": "a"}, {"id": "b"}], False),
        ("c", [], False),
        (None, [{"id": "a"}], True),
        (None, [], False),
        (None, [{"id": "a"}, {"id": "b"}], False),
        ("llama3.2", [{"id": "llama3.2:latest"}], True),
        ("llama3.2:1b", [{"id": "llama3.2:latest"}], False),
        # llama-server with one model answers to any name; in router mode the name picks one.
        ("anything", [LLAMA_CPP], True),
        ("anything", [{**LLAMA_CPP, "status": {"value": "loaded"}}], False),
        ("anything", [LLAMA_CPP, {**LLAMA_CPP, "id": "gemma"}], False),
    ],
)
def test_which_configurations_can_work(
    configured: str | None, served: list[dict[str, Any]], works: bool
) -> None:
    models = [ServedModel.model_validate(m) for m in served]
    problem = model_problem(configured, models, "http://llm/v1/models")
    assert (problem is None) is works, problem
    if problem is not None:
        assert "KYUTAI_LLM_MODEL" in problem and "http://llm/v1/models" in problem


async def test_health_says_when_the_key_is_refused(
    nursery: trio.Nursery, serve, all_down_settings: Settings
) -> None:
    _, url = await start_sim(nursery, api_key="sk-right")
    body = await health(serve, replace(all_down_settings, llm_url=url, llm_api_key="sk-wrong"))
    assert body["llm_up"] is False
    assert body["problems"]["llm"].endswith(": check KYUTAI_LLM_API_KEY")


# ------------------------------------------------------------------ a URL ending in /v1


async def test_a_url_ending_in_v1_is_the_servers_root(
    nursery: trio.Nursery, serve, all_down_settings: Settings, http, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="unmute_trio.services.llm")
    sim, url = await start_sim(nursery)
    llm = LLMClient(url + "/v1/", api_key=None, model=None, http=http)
    assert llm.base_url == url
    assert (await reply(llm)).startswith("Hello!")
    assert {r.path for r in sim.requests} == {"/v1/models", "/v1/chat/completions"}
    said = [r.getMessage() for r in caplog.records if "ends in /v1" in r.getMessage()]
    assert len(said) == 1 and f"using {url} as the server's root" in said[0]
    body = await health(serve, replace(all_down_settings, llm_url=url + "/v1"))
    assert (body["llm_up"], body["engines"]["llm"]) == (True, "sim-llm")


async def test_a_wrong_path_says_what_to_change(nursery: trio.Nursery, http) -> None:
    _, url = await start_sim(nursery)
    llm = LLMClient(url + "/openai", api_key=None, model=None, http=http)
    with trio.fail_after(5), pytest.raises(ServiceProtocolError) as info:
        await llm.model()
    assert "HTTP 404" in str(info.value)
    assert "KYUTAI_LLM_URL must be the LLM server's root, the part before /v1" in str(info.value)


# ------------------------------------------------------------------ at start


async def test_check_model_verifies_a_configured_model(nursery: trio.Nursery, http) -> None:
    _, url = await start_sim(nursery, models=["a", "b"])
    assert await LLMClient(url, api_key=None, model="b", http=http).check_model() == "b"
    with pytest.raises(LLMConfigError, match="KYUTAI_LLM_MODEL=c is not a model served"):
        await LLMClient(url, api_key=None, model="c", http=http).check_model()
    _, single = await start_sim(nursery, models=["only"])
    llm = LLMClient(single, api_key=None, model=None, http=http)
    assert await llm.check_model() == "only"
    assert llm.known_model == "only"


async def test_the_server_logs_a_model_it_cannot_use_once_at_start(
    nursery: trio.Nursery, serve, all_down_settings: Settings, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="unmute_trio.web.app")
    _, url = await start_sim(nursery, models=["gemma-3-1b"])
    await serve(replace(all_down_settings, llm_url=url, llm_model="mistral"))

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "unmute_trio.web.app" and r.levelno == logging.WARNING
        ]

    with trio.fail_after(5):
        while not warnings():
            await trio.sleep(0.01)
    await trio.sleep(0.1)
    assert warnings() == [
        "LLM misconfigured, every reply will fail: KYUTAI_LLM_MODEL=mistral is not a model "
        f"served at {url}/v1/models (it lists gemma-3-1b): set KYUTAI_LLM_MODEL to one of them"
    ]


# ------------------------------------------------------------------ metrics


async def test_each_request_counts_in_worker_vllm_sessions(nursery: trio.Nursery, http) -> None:
    _, url = await start_sim(nursery)
    llm = LLMClient(url, api_key=None, model="sim-llm", http=http)
    before = REGISTRY.get_sample_value("worker_vllm_sessions_total") or 0.0
    await reply(llm)
    await reply(llm)
    assert REGISTRY.get_sample_value("worker_vllm_sessions_total") == before + 2
