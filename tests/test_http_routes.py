"""Every HTTP route through a real hypercorn bound to 127.0.0.1:0."""

from __future__ import annotations

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_stub_service, replace
from unmute_trio.services.health import HealthChecker
from unmute_trio.settings import Settings
from unmute_trio.voice_store import MemoryVoiceStore


async def test_root_greets_with_json(serve, all_down_settings: Settings) -> None:
    base = await serve(all_down_settings)
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get("/")
    assert r.status_code == 200
    assert "message" in r.json()


async def test_metrics_exposes_the_original_names(serve, all_down_settings: Settings) -> None:
    base = await serve(all_down_settings)
    async with httpx.AsyncClient(base_url=base) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(r.text)}
    for name in (
        "worker_sessions",
        "worker_active_sessions",
        "worker_session_duration",
        "worker_stt_ttft",
        "worker_tts_ttft",
        "worker_hard_tts_misses",
        "worker_vllm_ttft",
        "worker_vllm_gen_duration",
    ):
        assert name in names, name


async def test_health_with_no_service_running(serve, all_down_settings: Settings) -> None:
    base = await serve(all_down_settings)
    async with httpx.AsyncClient(base_url=base) as c:
        with trio.fail_after(2):
            r = await c.get("/v1/health")
    assert r.status_code == 200
    assert r.json() == {
        "tts_up": False,
        "stt_up": False,
        "llm_up": False,
        "voice_cloning_up": False,
        "engines": {"stt": None, "tts": None, "llm": None},
        "voice_store": "memory",
        "voice_store_up": True,
        "ok": False,
        "api_key_required": False,
    }


async def test_health_with_every_service_up(serve, serve_stub) -> None:
    stub = await serve_stub(make_stub_service())
    ws = stub.replace("http://", "ws://")
    settings = Settings(stt_url=ws, tts_url=ws, llm_url=stub, voice_cloning_url=stub)
    base = await serve(settings)
    async with httpx.AsyncClient(base_url=base) as c:
        body = (await c.get("/v1/health")).json()
    assert body == {
        "tts_up": True,
        "stt_up": True,
        "llm_up": True,
        "voice_cloning_up": True,
        "engines": {"stt": None, "tts": None, "llm": "stub-model"},
        "voice_store": "memory",
        "voice_store_up": True,
        "ok": True,
        "api_key_required": False,
    }


async def test_health_ok_ignores_voice_cloning(serve, serve_stub, all_down_settings) -> None:
    stub = await serve_stub(make_stub_service())
    ws = stub.replace("http://", "ws://")
    settings = replace(all_down_settings, stt_url=ws, tts_url=ws, llm_url=stub)
    base = await serve(settings)
    async with httpx.AsyncClient(base_url=base) as c:
        body = (await c.get("/v1/health")).json()
    assert body["voice_cloning_up"] is False
    assert body["ok"] is True


async def test_health_counts_a_slow_service_as_down(serve, serve_stub, all_down_settings) -> None:
    up = await serve_stub(make_stub_service())
    slow = await serve_stub(make_stub_service(delay_s=5.0))
    settings = replace(
        all_down_settings,
        stt_url=up.replace("http", "ws"),
        tts_url=up.replace("http", "ws"),
        llm_url=slow,
        health_timeout_s=0.3,
    )
    base = await serve(settings)
    async with httpx.AsyncClient(base_url=base) as c:
        with trio.fail_after(2):  # bounded by the probe timeout, not by the slow service
            body = (await c.get("/v1/health")).json()
    assert (body["stt_up"], body["tts_up"], body["llm_up"], body["ok"]) == (
        True,
        True,
        False,
        False,
    )


async def test_health_counts_an_error_status_as_down(serve, serve_stub, all_down_settings) -> None:
    broken = await serve_stub(make_stub_service(status=503))
    settings = replace(all_down_settings, stt_url=broken.replace("http", "ws"))
    base = await serve(settings)
    async with httpx.AsyncClient(base_url=base) as c:
        assert (await c.get("/v1/health")).json()["stt_up"] is False


async def test_health_sends_llm_key_only_when_configured(serve, serve_stub, all_down_settings):
    without_key = make_stub_service()
    with_key = make_stub_service()
    # Both the start-up model check (web/app.py) and the health probe ask /v1/models.
    settings = replace(all_down_settings, llm_model="stub-model")
    base_a = await serve(replace(settings, llm_url=await serve_stub(without_key)))
    base_b = await serve(
        replace(settings, llm_url=await serve_stub(with_key), llm_api_key="sk-test")
    )
    async with httpx.AsyncClient() as c:
        await c.get(base_a + "/v1/health")
        await c.get(base_b + "/v1/health")
    seen_a, seen_b = without_key.config["seen_headers"], with_key.config["seen_headers"]
    assert seen_a and all("authorization" not in {k.lower() for k in h} for h in seen_a)
    assert seen_b and all(h["Authorization"] == "Bearer sk-test" for h in seen_b)


async def test_health_result_is_cached_briefly(
    serve_stub, all_down_settings, virtual_clock
) -> None:
    # On virtual time, so the 0.5 s cache window does not depend on how loaded the machine is.
    stub = make_stub_service()
    settings = replace(all_down_settings, llm_url=await serve_stub(stub), health_timeout_s=30)
    async with httpx.AsyncClient() as http:
        store = MemoryVoiceStore(ttl_s=60, max_entries=1, clock=trio.current_time)
        checker = HealthChecker(settings, http, store)
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(checker.check)
        assert len(stub.config["seen_headers"]) == 1  # one probe served five concurrent callers
        await trio.sleep(0.4)
        await checker.check()
        assert len(stub.config["seen_headers"]) == 1  # still fresh
        await trio.sleep(0.2)
        await checker.check()
        assert len(stub.config["seen_headers"]) == 2  # expired after 0.5 s


async def test_voices_lists_good_voices_without_comment(serve, all_down_settings) -> None:
    base = await serve(all_down_settings)
    async with httpx.AsyncClient(base_url=base) as c:
        voices = (await c.get("/v1/voices")).json()
    assert len(voices) >= 5
    quiz = next(v for v in voices if v["name"] == "Quiz show")
    assert "comment" not in quiz
    assert quiz["good"] is True
    assert quiz["instructions"] == {"type": "quiz_show", "language": None}  # nulls kept
    assert quiz["source"]["source_type"] == "freesound"
    assert quiz["source"]["sound_instance"]["username"] == "InspectorJ"
    assert all(v["source"]["path_on_server"] for v in voices)


async def test_cors_allows_configured_origins_with_credentials(serve, all_down_settings) -> None:
    base = await serve(all_down_settings)
    async with httpx.AsyncClient(base_url=base) as c:
        ok = await c.get("/v1/voices", headers={"Origin": "http://localhost:3000"})
        other = await c.get("/v1/voices", headers={"Origin": "http://evil.example"})
        preflight = await c.options(
            "/v1/voices",
            headers={
                "Origin": "http://localhost",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
    assert ok.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in other.headers
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type"


async def test_cors_headers_kept_on_error_responses(serve, all_down_settings) -> None:
    settings = replace(all_down_settings, cors_origins=("https://app.example",))
    base = await serve(settings)
    async with httpx.AsyncClient(base_url=base) as c:
        missing = await c.get("/nope", headers={"Origin": "https://app.example"})
        bad_upload = await c.post(
            "/v1/voices", content=b"x", headers={"Origin": "https://app.example"}
        )
    assert missing.status_code == 404
    assert missing.headers["access-control-allow-origin"] == "https://app.example"
    assert bad_upload.status_code == 400
    assert bad_upload.headers["access-control-allow-origin"] == "https://app.example"
