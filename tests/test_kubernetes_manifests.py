"""The Kubernetes manifests (deploy/kubernetes/): valid against the Kubernetes API schema
(kubernetes-validate, strict), and in agreement with each other, with the app, with
hypercorn.toml, with the moshi-server configurations and with the Compose files.

No cluster here: what a cluster would check at `kubectl apply` is the schema, and what it would
only show at run time (a Service that selects nothing, a probe on a path the app does not serve,
a pod killed in the middle of its drain) is checked below.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import yaml
from hypercorn.config import Config

from unmute_trio.services.discovery import url_host_port
from unmute_trio.session.drain import CLOSING_GRACE_S
from unmute_trio.settings import Settings
from unmute_trio.testing.server import serve_app
from unmute_trio.web.app import create_app

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "deploy" / "kubernetes"
# The oldest minor version the manifests are meant for, and the newest schema that the pinned
# kubernetes-validate ships. --strict rejects any field the API does not know.
KUBERNETES_VERSIONS = ("1.31", "1.37")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# `kubectl apply -f deploy/kubernetes/` applies every file with one of these suffixes.
APPLIED_SUFFIXES = (".yaml", ".yml", ".json")

Object = dict[str, Any]


# ------------------------------------------------------------------ loading


def manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.iterdir() if p.suffix in APPLIED_SUFFIXES)


@functools.cache
def load_objects() -> list[Object]:
    """Every object of every file (read once; the tests only read them)."""
    objects: list[Object] = []
    for path in manifest_files():
        objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return objects


def find(kind: str, name: str) -> Object:
    found = [o for o in load_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def of_kind(*kinds: str) -> list[Object]:
    return [o for o in load_objects() if o["kind"] in kinds]


def pod_labels(workload: Object) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def pod_spec(workload: Object) -> Object:
    return workload["spec"]["template"]["spec"]


def only_container(workload: Object) -> Object:
    [container] = pod_spec(workload)["containers"]
    return container


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def selected_workload(selector: dict[str, str]) -> Object:
    """The one workload whose pods carry ``selector``'s labels."""
    matches = [w for w in of_kind(*WORKLOAD_KINDS) if selects(selector, pod_labels(w))]
    names = [w["metadata"]["name"] for w in matches]
    assert len(matches) == 1, f"{selector} selects the pods of {names or 'no workload'}"
    return matches[0]


def container_port(workload: Object, port: int | str) -> int:
    """The container port a Service's ``targetPort`` (a name or a number) reaches."""
    ports = [p for c in pod_spec(workload)["containers"] for p in c.get("ports", [])]
    for p in ports:
        if port in (p.get("name"), p["containerPort"]):
            return int(p["containerPort"])
    raise AssertionError(f"{workload['metadata']['name']} has no container port {port!r}")


def service_target(service: Object, port: int) -> int:
    """The container port behind ``port`` of ``service``."""
    entries = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert len(entries) == 1, f"Service {service['metadata']['name']} has no port {port}"
    [entry] = entries
    workload = selected_workload(service["spec"]["selector"])
    return container_port(workload, entry.get("targetPort", port))


def literal_env(container: Object) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def backend() -> Object:
    return find("Deployment", "backend")


def backend_env() -> dict[str, str]:
    return literal_env(only_container(backend()))


def backend_hypercorn_toml() -> str:
    """The hypercorn configuration the backend runs with: the ConfigMap file its command reads."""
    container = only_container(backend())
    args = container["args"]
    assert args[:2] == ["unmute-trio", "serve"], args
    path = args[args.index("--config") + 1]
    [mount] = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    [volume] = [v for v in pod_spec(backend())["volumes"] if v["name"] == mount["name"]]
    config_map = find("ConfigMap", volume["configMap"]["name"])
    return str(config_map["data"][path.removeprefix(mount["mountPath"] + "/")])


def backend_hypercorn_config(tmp_path: Path) -> Config:
    (tmp_path / "hypercorn.toml").write_text(backend_hypercorn_toml())
    return Config.from_toml(tmp_path / "hypercorn.toml")


def http_get_path(probe: Object) -> str:
    return str(probe["httpGet"]["path"])


# ------------------------------------------------------------------ schema validation


def kubernetes_validate(paths: list[Path]) -> str | None:
    """None when every object of ``paths`` validates (strict) against every version in
    KUBERNETES_VERSIONS, else what kubernetes-validate said. It only warns, and exits 0, when
    it has no schema for a kind or an API version (a custom resource, a removed API such as
    autoscaling/v2beta2): with --quiet any output is a failure."""
    versions = [arg for v in KUBERNETES_VERSIONS for arg in ("-k", v)]
    command = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *versions]
    result = subprocess.run(
        [*command, *map(str, paths)], capture_output=True, text=True, timeout=300
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or output:
        return output or f"kubernetes-validate exited {result.returncode}"
    return None


def readme_objects() -> Iterator[str]:
    """The YAML blocks of deploy/kubernetes/README.md that hold Kubernetes objects."""
    readme = (MANIFESTS / "README.md").read_text()
    for block in re.findall(r"^```yaml\n(.*?)^```", readme, re.M | re.S):
        docs = [d for d in yaml.safe_load_all(block) if d is not None]
        if docs and all(isinstance(d, dict) and "apiVersion" in d for d in docs):
            yield block


def test_kubectl_applies_only_validated_files() -> None:
    assert manifest_files(), "no manifests"
    others = {p.name for p in MANIFESTS.iterdir()} - {p.name for p in manifest_files()}
    assert others == {"README.md"}, others
    assert all(p.suffix == ".yaml" for p in manifest_files())


def test_every_manifest_validates_against_the_kubernetes_schema() -> None:
    problems = kubernetes_validate(manifest_files())
    assert problems is None, "\n" + problems


def test_the_objects_shown_in_the_readme_validate_too(tmp_path: Path) -> None:
    blocks = list(readme_objects())
    assert blocks, "the README shows the sessions-based autoscaler"
    paths = []
    for i, block in enumerate(blocks):
        paths.append(tmp_path / f"readme-{i}.yaml")
        paths[-1].write_text(block)
    problems = kubernetes_validate(paths)
    assert problems is None, "\n" + problems


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ("readinessProbe:", "readinesProbe:", "'readinesProbe' was unexpected"),
        ("containerPort: 8000", 'containerPort: "8000"', "is not of type 'integer'"),
        ("apiVersion: autoscaling/v2", "apiVersion: autoscaling/v2beta2", "Couldn't find schema"),
    ],
)
def test_the_validation_catches_a_broken_manifest(
    tmp_path: Path, old: str, new: str, said: str
) -> None:
    text = (MANIFESTS / "backend.yaml").read_text()
    assert text.count(old) == 1, old
    broken = tmp_path / "backend.yaml"
    broken.write_text(text.replace(old, new))
    problems = kubernetes_validate([broken])
    assert problems is not None and said in problems, problems


# ------------------------------------------------------------------ the objects agree


def test_names_are_unique_and_selectors_select() -> None:
    objects = load_objects()
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), keys
    for workload in of_kind(*WORKLOAD_KINDS):
        assert selects(workload["spec"]["selector"]["matchLabels"], pod_labels(workload))
    for service in of_kind("Service"):
        for port in service["spec"]["ports"]:
            service_target(service, port["port"])  # selects one workload, reaches its port
    for budget in of_kind("PodDisruptionBudget"):
        selected_workload(budget["spec"]["selector"]["matchLabels"])
    for policy in of_kind("NetworkPolicy"):
        target = selected_workload(policy["spec"]["podSelector"]["matchLabels"])
        for rule in policy["spec"]["ingress"]:
            for source in rule["from"]:
                selected_workload(source["podSelector"]["matchLabels"])
            for port in rule["ports"]:
                container_port(target, port["port"])
    for autoscaler in of_kind("HorizontalPodAutoscaler"):
        ref = autoscaler["spec"]["scaleTargetRef"]
        find(ref["kind"], ref["name"])


def test_volumes_config_maps_and_claims_exist() -> None:
    claims = {o["metadata"]["name"] for o in of_kind("PersistentVolumeClaim")}
    config_maps = {o["metadata"]["name"]: o for o in of_kind("ConfigMap")}
    for workload in of_kind(*WORKLOAD_KINDS):
        name = workload["metadata"]["name"]
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        claim_templates = workload["spec"].get("volumeClaimTemplates", [])
        templates = {t["metadata"]["name"] for t in claim_templates}
        for container in pod_spec(workload)["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes.keys() | templates, f"{name}: {mount['name']}"
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, name
        if workload["kind"] == "StatefulSet":
            # Its governing Service must exist and be headless.
            governing = find("Service", workload["spec"]["serviceName"])
            assert governing["spec"].get("clusterIP") == "None", name
            assert selected_workload(governing["spec"]["selector"]) == workload


def test_images_are_pinned() -> None:
    for workload in of_kind(*WORKLOAD_KINDS):
        for container in pod_spec(workload)["containers"]:
            image = container["image"]
            tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
            assert tag and tag != "latest", f"{workload['metadata']['name']}: pin {image}"


def test_the_backend_is_configured_with_documented_valid_variables() -> None:
    container = only_container(backend())
    names = {e["name"] for e in container["env"]}
    documented = (REPO / "docs" / "configuration.md").read_text()
    undocumented = {n for n in names if f"`{n}`" not in documented}
    assert not undocumented, f"not in docs/configuration.md: {sorted(undocumented)}"
    settings_source = (REPO / "unmute_trio" / "settings.py").read_text()
    known = set(re.findall(r'"((?:KYUTAI|UNMUTE|NEWSAPI)_[A-Z_]+)"', settings_source))
    assert names <= known, f"not read by the server: {sorted(names - known)}"
    # The values parse as the server parses them at start.
    Settings.from_env(backend_env())
    # Secrets come from one optional Secret (the README says how to create it).
    for entry in container["env"]:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "unmute-secrets" and ref["optional"] is True
            assert ref["key"] == entry["name"]


def test_the_backend_finds_every_stt_and_tts_pod_through_headless_services() -> None:
    settings = Settings.from_env(backend_env())
    for role, url in (("stt", settings.stt_url), ("tts", settings.tts_url)):
        host, port = url_host_port(url)
        service = find("Service", host)
        # DNS of a headless Service answers with every ready pod's address (Swarm's
        # tasks.<name>); discovery shuffles them and tries up to 3.
        assert service["spec"].get("clusterIP") == "None", f"{host} must be headless"
        # A pod address is dialled directly: no Service port translation happens.
        assert service_target(service, port) == port, f"{host}: pods must listen on {port}"
        workload = selected_workload(service["spec"]["selector"])
        assert workload["kind"] == "StatefulSet" and workload["metadata"]["name"] == role
        gpus = only_container(workload)["resources"]["limits"]["nvidia.com/gpu"]
        assert gpus >= 1


def test_the_backend_reaches_the_llm_and_redis() -> None:
    settings = Settings.from_env(backend_env())
    host, port = url_host_port(settings.llm_url)
    vllm = selected_workload(find("Service", host)["spec"]["selector"])
    assert service_target(find("Service", host), port) == 8000  # vLLM's port
    args = only_container(vllm)["args"]
    assert f"--model={settings.llm_model}" in args, "KYUTAI_LLM_MODEL is the model vLLM serves"
    assert only_container(vllm)["resources"]["limits"]["nvidia.com/gpu"] >= 1
    redis_url = urlsplit(backend_env()["UNMUTE_REDIS_URL"])
    assert redis_url.scheme == "redis" and redis_url.hostname and redis_url.port
    redis = find("Service", redis_url.hostname)
    assert service_target(redis, redis_url.port) == 6379
    # Only the backend may reach Redis (it has no password).
    policy = find("NetworkPolicy", "redis")
    assert selected_workload(policy["spec"]["podSelector"]["matchLabels"]) == find(
        "Deployment", "redis"
    )
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    assert selects(source["podSelector"]["matchLabels"], pod_labels(backend()))


def test_the_gpu_services_match_the_compose_files() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    swarm = yaml.safe_load((REPO / "swarm-deploy.yml").read_text())["services"]
    for role in ("stt", "tts"):
        workload = find("StatefulSet", role)
        container = only_container(workload)
        # Compose's `command` replaces the image's CMD, as Kubernetes' `args` does.
        assert container["args"] == compose[role]["command"]
        assert container["image"].split("/")[-1] == swarm[role]["image"].split("/")[-1]
        # The configuration is the repository's file, mounted where the command reads it.
        config_path = Path(container["args"][container["args"].index("--config") + 1])
        mounts = container["volumeMounts"]
        [mount] = [m for m in mounts if m["mountPath"] == str(config_path.parent)]
        [volume] = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
        data = find("ConfigMap", volume["configMap"]["name"])["data"]
        source = (REPO / "deploy" / "moshi-server" / f"{role}.toml").read_text()
        assert data[config_path.name] == source, f"{role}.toml differs from deploy/moshi-server"
        # Whatever Compose mounts (configuration, caches, logs) is mounted here too.
        paths = [m["mountPath"] for m in mounts]
        for volume_spec in compose[role]["volumes"]:
            target = volume_spec.split(":")[1]
            assert any(target == p or target.startswith(p + "/") for p in paths), target
    llm = only_container(find("Deployment", "llm"))
    assert llm["image"] == compose["llm"]["image"]
    assert llm["args"] == compose["llm"]["command"]
    backend_image = only_container(backend())["image"]
    assert backend_image.split("/")[-1] == swarm["backend"]["image"].split("/")[-1].replace(
        "${TAG:-0.1.0}", "0.1.0"
    )


def test_the_backend_runs_the_repository_hypercorn_toml_under_the_ingress_prefix(
    tmp_path: Path,
) -> None:
    mounted = tomllib.loads(backend_hypercorn_toml())
    repository = tomllib.loads((REPO / "hypercorn.toml").read_text())
    # The one difference: the repository's file leaves root_path unset (Traefik strips /api).
    root_path = mounted.pop("root_path")
    assert "root_path" not in repository
    assert mounted == repository
    # The Ingress forwards /api/... unchanged: the app must strip what the Ingress routes.
    ingress = find("Ingress", "unmute")
    [rule] = ingress["spec"]["rules"]
    [path] = rule["http"]["paths"]
    assert path["pathType"] == "Prefix" and path["path"] == root_path == "/api"
    target = path["backend"]["service"]
    service = find("Service", target["name"])
    assert selected_workload(service["spec"]["selector"]) == backend()
    [port] = [p for p in service["spec"]["ports"] if p["name"] == target["port"]["name"]]
    config = backend_hypercorn_config(tmp_path)
    assert config.bind == [f"0.0.0.0:{service_target(service, port['port'])}"]
    # Browsers load the page from the Ingress host: that origin may open /v1/realtime.
    assert backend_env()["UNMUTE_CORS_ORIGINS"] == f"https://{rule['host']}"
    assert [rule["host"]] == ingress["spec"]["tls"][0]["hosts"]
    assert backend_env()["UNMUTE_TRUSTED_PROXY_HOPS"] == "1"


def test_prometheus_scrapes_the_metrics_port_and_path(tmp_path: Path) -> None:
    annotations = backend()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    port = int(annotations["prometheus.io/port"])
    assert container_port(backend(), port) == port
    assert backend_hypercorn_config(tmp_path).bind == [f"0.0.0.0:{port}"]
    assert annotations["prometheus.io/path"] == "/metrics"


def test_a_pod_has_time_to_drain_before_it_is_killed(tmp_path: Path) -> None:
    spec = pod_spec(backend())
    container = only_container(backend())
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    drain = Settings.from_env(backend_env()).drain_timeout_s
    graceful = backend_hypercorn_config(tmp_path).graceful_timeout
    # The kubelet's countdown starts with preStop; SIGTERM then starts the drain, and
    # `unmute-trio serve` lets hypercorn's graceful_timeout run after it.
    worst = pre_stop + drain + CLOSING_GRACE_S + graceful
    assert spec["terminationGracePeriodSeconds"] > worst, worst


def test_probes_ask_the_right_questions() -> None:
    container = only_container(backend())
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    routes = {rule.rule for rule in create_app(Settings()).url_map.iter_rules()}
    assert {http_get_path(readiness), http_get_path(liveness)} <= routes
    for probe in (readiness, liveness):
        container_port(backend(), probe["httpGet"]["port"])
    # /v1/health waits for its service probes, each bounded by UNMUTE_HEALTH_TIMEOUT_S.
    health_timeout = Settings.from_env(backend_env()).health_timeout_s
    assert readiness["timeoutSeconds"] > health_timeout


def test_the_autoscaler_owns_the_replica_count() -> None:
    autoscaler = find("HorizontalPodAutoscaler", "backend")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    ref = autoscaler["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", "backend")
    assert autoscaler["spec"]["minReplicas"] >= 2
    # A count in the Deployment would be reset on every `kubectl apply`.
    assert "replicas" not in backend()["spec"]
    # CPU utilisation is relative to the request: without one the autoscaler cannot work.
    [metric] = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] in only_container(backend())["resources"]["requests"]
    rolling = backend()["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    assert find("PodDisruptionBudget", "backend")["spec"]["maxUnavailable"] == 1


async def test_the_probes_and_the_ingress_path_reach_the_app(tmp_path: Path) -> None:
    """The backend with the hypercorn configuration of the manifest: what the Ingress forwards
    (/api/...), the probes and Prometheus (no prefix) all reach the app; once draining, the
    readiness probe fails (the pod leaves the Service) but the liveness probe and the scrape
    still pass (the kubelet does not restart a pod that is finishing its conversations)."""
    config = backend_hypercorn_config(tmp_path)
    container = only_container(backend())
    readiness = http_get_path(container["readinessProbe"])
    liveness = http_get_path(container["livenessProbe"])
    scrape = backend()["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
    nothing = "127.0.0.1:9"  # refused at once: health answers quickly, all services down
    settings = Settings(
        stt_url=f"ws://{nothing}",
        tts_url=f"ws://{nothing}",
        llm_url=f"http://{nothing}",
        voice_cloning_url=f"http://{nothing}",
        llm_model="any",
    )
    app = create_app(settings)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve_app(
                    app, task_status=task_status, root_path=config.root_path
                )
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                through_ingress = await http.get(f"{config.root_path}/v1/health")
                assert through_ingress.status_code == 200
                assert through_ingress.json()["ok"] is False  # services down: still ready
                for path in (readiness, liveness, scrape):
                    assert (await http.get(path)).status_code == 200, path
                app.extensions["unmute"].drain.begin("test")
                assert (await http.get(readiness)).status_code == 503
                assert (await http.get(liveness)).status_code == 200
                metrics = await http.get(scrape)
                assert metrics.status_code == 200 and b"worker_active_sessions" in metrics.content
            nursery.cancel_scope.cancel()
