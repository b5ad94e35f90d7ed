"""The deployment files (Docker cannot run here): they parse, refer to files that exist, to
pinned images, to our environment variables and metric names, and agree with each other."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypercorn.config import Config
from prometheus_client.metrics import MetricWrapperBase

from unmute_trio import metrics
from unmute_trio.settings import Settings
from unmute_trio.testing.sims import SimsConfig
from unmute_trio.web.realtime import MAX_CLIENT_FRAME_BYTES

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILES = ["docker-compose.yml", "swarm-deploy.yml"]


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / name).read_text())


def known_variables() -> set[str]:
    source = (REPO / "unmute_trio" / "settings.py").read_text()
    names = set(re.findall(r'"((?:KYUTAI|UNMUTE|NEWSAPI)_[A-Z_]+)"', source))
    return names | {"PROMETHEUS_MULTIPROC_DIR"}


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


def labels(service: dict[str, Any]) -> dict[str, str]:
    return {**service.get("labels", {}), **service.get("deploy", {}).get("labels", {})}


def test_every_variable_we_read_is_documented() -> None:
    documented = (REPO / "docs" / "configuration.md").read_text()
    for name in known_variables():
        assert f"`{name}`" in documented, name


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_local_paths_exist_and_images_are_pinned(name: str) -> None:
    spec = load(name)
    for service_name, service in spec["services"].items():
        build = service.get("build")
        if build is not None:
            context = REPO / (build if isinstance(build, str) else build["context"])
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
            assert (context / (dockerfile or "Dockerfile")).is_file(), service_name
        else:
            image = service["image"]
            tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
            assert tag and tag != "latest", f"{service_name}: pin {image}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{service_name}: {source}"
    for config in spec.get("configs", {}).values():
        assert (REPO / config["file"]).is_file(), config["file"]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_backend_is_configured_with_our_variables_behind_traefik(name: str) -> None:
    spec = load(name)
    backend = spec["services"]["backend"]
    environment = backend["environment"]
    assert set(environment) <= known_variables(), set(environment) - known_variables()
    assert environment["UNMUTE_TRUSTED_PROXY_HOPS"] == "1"  # Traefik, and only it
    routing = labels(backend)
    assert "PathPrefix(`/api`)" in routing["traefik.http.routers.backend.rule"]
    middleware = routing["traefik.http.routers.backend.middlewares"]
    assert routing[f"traefik.http.middlewares.{middleware}.stripprefix.prefixes"] == "/api"
    port = routing["traefik.http.services.backend.loadbalancer.server.port"]
    hypercorn = Config.from_toml(REPO / "hypercorn.toml")
    assert hypercorn.bind == [f"0.0.0.0:{port}"]
    assert routing["prometheus-port"] == port
    # Docker must not kill a draining backend: drain, then hypercorn's graceful window.
    drain = float(environment["UNMUTE_DRAIN_TIMEOUT_S"])
    assert seconds(backend["stop_grace_period"]) > drain + hypercorn.graceful_timeout


def test_compose_profiles_hold_the_simulators_and_the_gpu_services() -> None:
    services = load("docker-compose.yml")["services"]
    always = {name for name, s in services.items() if "profiles" not in s}
    assert always == {"traefik", "backend", "prometheus", "grafana"}
    assert services["sims"]["profiles"] == ["sim"]
    for name in ("stt", "tts", "llm"):
        assert services[name]["profiles"] == ["gpu"]
    backend_env = services["backend"]["environment"]
    assert backend_env["KYUTAI_STT_URL"].endswith("ws://stt:8080}")
    assert backend_env["KYUTAI_LLM_URL"].endswith("http://llm:8000}")
    # deploy/sim.env points the backend at the sims service on the simulators' ports.
    sim_env = dict(
        line.split("=", 1)
        for line in (REPO / "deploy" / "sim.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(sim_env) <= known_variables()
    d = SimsConfig()
    assert sim_env == {
        "KYUTAI_STT_URL": f"ws://sims:{d.stt_port}",
        "KYUTAI_TTS_URL": f"ws://sims:{d.tts_port}",
        "KYUTAI_LLM_URL": f"http://sims:{d.llm_port}",
        "KYUTAI_VOICE_CLONING_URL": f"http://sims:{d.voice_cloning_port}",
    }
    assert "--host" in services["sims"]["command"] and "0.0.0.0" in services["sims"]["command"]


def test_swarm_runs_several_backends_that_find_services_through_tasks() -> None:
    services = load("swarm-deploy.yml")["services"]
    backend = services["backend"]
    assert backend["deploy"]["replicas"] >= 2
    assert backend["environment"]["KYUTAI_STT_URL"] == "ws://tasks.stt:8080"
    assert backend["environment"]["KYUTAI_TTS_URL"] == "ws://tasks.tts:8080"
    assert {"stt", "tts"} <= set(services)
    # The swarm provider reads service labels from deploy.labels only.
    assert "labels" not in backend and backend["deploy"]["labels"]["traefik.enable"] == "true"
    prometheus = yaml.safe_load((REPO / "deploy/prometheus/prometheus-swarm.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "backend"]
    assert job["dns_sd_configs"][0]["names"] == ["tasks.backend"]


def test_compose_prometheus_scrapes_the_backend_service() -> None:
    prometheus = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "backend"]
    assert job["dns_sd_configs"][0]["names"] == ["backend"]
    assert job["dns_sd_configs"][0]["port"] == 8000


def metric_names() -> set[str]:
    """Names as declared (prometheus_client adds _total, _bucket, ... when exposing)."""
    return {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}


def test_the_grafana_dashboard_queries_our_metrics() -> None:
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/unmute-trio.json").read_text())
    datasource = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = datasource["datasources"][0]["uid"]
    ours = metric_names()
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == uid
            for name in re.findall(r"\bworker_\w+", target["expr"]):
                base = re.sub(r"_(total|bucket|sum|count)$", "", name)
                assert base in ours, name
                queried.add(base)
    for essential in ("worker_active_sessions", "worker_vllm_ttft", "worker_tts_ttft"):
        assert essential in queried
    # Provisioning loads the dashboards from where compose mounts them.
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/unmute-trio.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    grafana = load("docker-compose.yml")["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in grafana["volumes"]


def test_dockerfile_is_slim_non_root_with_a_healthcheck() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in dockerfile
    assert 'CMD ["unmute-trio", "serve", "--config", "/app/hypercorn.toml"]' in dockerfile
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for copy in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for source in copy.split():
            assert (REPO / source).exists(), source
            assert source not in ignored, source
    # Installed (not editable), the package cannot find voices.yaml next to itself.
    assert "UNMUTE_VOICES_FILE=/app/voices.yaml" in dockerfile
    assert "COPY voices.yaml hypercorn.toml /app/" in dockerfile


def test_hypercorn_toml_works_for_the_hypercorn_command() -> None:
    config = Config.from_toml(REPO / "hypercorn.toml")
    assert config.worker_class == "trio"
    assert config.workers == 1
    assert config.websocket_max_message_size == MAX_CLIENT_FRAME_BYTES
    # The drain runs inside graceful_timeout under the hypercorn command.
    assert config.graceful_timeout > Settings().drain_timeout_s


def test_moshi_server_files() -> None:
    directory = REPO / "deploy" / "moshi-server"
    assert os.access(directory / "start.sh", os.X_OK)
    assert "moshi-server@0.6.4" in (directory / "start.sh").read_text()
    api_key = Settings().kyutai_api_key
    stt = tomllib.loads((directory / "stt.toml").read_text())
    tts = tomllib.loads((directory / "tts.toml").read_text())
    assert api_key in stt["authorized_ids"] and api_key in tts["authorized_ids"]
    assert stt["modules"]["asr"]["path"] == "/api/asr-streaming"
    assert tts["modules"]["tts_py"]["path"] == "/api/tts_streaming"
