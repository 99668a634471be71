"""docker-compose.yml and deploy/: the local backends are wired consistently.

No Docker engine runs here, so the file is validated rather than started: it parses, every image
is pinned, each stack publishes the ports the README names without clashing, every mounted
config file exists and parses, and the configs agree with the compose file (listen addresses,
ports, service names, pipelines).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
PINNED = re.compile(r"^[a-z0-9][a-z0-9./_-]*:v?\d+\.\d+\.\d+$")

# profile -> host ports the README promises for it
EXPECTED_PORTS = {
    "jaeger": {4317, 4318, 16686},
    "tempo": {4317, 4318, 3000, 3200},
    "collector": {4317, 4318, 16686, 13133},
}


def load(path: Path) -> Any:
    """A YAML file, parsed."""
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed compose file."""
    data = load(COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def services_in(compose: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    """The services `docker compose --profile PROFILE up` starts."""
    return {name: svc for name, svc in compose["services"].items()
            if not svc.get("profiles") or profile in svc["profiles"]}


def published(service: dict[str, Any]) -> dict[int, int]:
    """Host port -> container port for a service's short-syntax port list."""
    ports: dict[int, int] = {}
    for entry in service.get("ports", []):
        parts = str(entry).split("/")[0].split(":")
        assert len(parts) == 2, f"publish ports as HOST:CONTAINER, got {entry!r}"
        ports[int(parts[0])] = int(parts[1])
    return ports


def mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of the bind mounts of a service."""
    found = []
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith("."):
            found.append(((ROOT / source).resolve(), target))
    return found


def mounted_config(service: dict[str, Any], container_path: str) -> Any:
    """The parsed host file mounted at ``container_path``."""
    for source, target in mounts(service):
        if target == container_path:
            return load(source)
    raise AssertionError(f"nothing is mounted at {container_path}")


def config_flag(service: dict[str, Any]) -> str:
    """The config file path a service's command names."""
    command = " ".join(service["command"]) if isinstance(service["command"], list) else (
        service["command"])
    match = re.search(r"(?:--config[ =]|-config\.file=)(\S+)", command)
    assert match, f"no config flag in {command!r}"
    return match.group(1)


def host_port(endpoint: str) -> tuple[str, int]:
    """Host and port of a ``host:port`` endpoint."""
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def test_every_image_is_pinned_to_an_explicit_version(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc["image"]
        assert "latest" not in image, f"{name}: {image}"
        assert PINNED.match(image), f"{name}: {image} is not pinned to x.y.z"


def test_images_are_the_supported_lines(compose: dict[str, Any]) -> None:
    images = {svc["image"].split(":")[0]: svc["image"].split(":")[1]
              for svc in compose["services"].values()}
    assert images["jaegertracing/jaeger"].startswith("2.")     # v1 all-in-one is end-of-life
    assert images["grafana/tempo"].startswith("3.")
    assert "otel/opentelemetry-collector-contrib" in images
    assert "grafana/grafana" in images


def test_plain_up_starts_jaeger_only() -> None:
    env = dict(line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["COMPOSE_PROFILES"] == "jaeger"


@pytest.mark.parametrize("profile", sorted(EXPECTED_PORTS))
def test_each_stack_publishes_its_ports_once(compose: dict[str, Any], profile: str) -> None:
    seen: dict[int, str] = {}
    for name, svc in services_in(compose, profile).items():
        for port in published(svc):
            assert port not in seen, f"{profile}: {name} and {seen[port]} both publish {port}"
            seen[port] = name
    assert set(seen) == EXPECTED_PORTS[profile]


def test_every_service_belongs_to_a_stack(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        assert set(svc.get("profiles", [])) & set(EXPECTED_PORTS), name


@pytest.mark.parametrize("profile", sorted(EXPECTED_PORTS))
def test_dependencies_are_in_the_same_stack(compose: dict[str, Any], profile: str) -> None:
    stack = services_in(compose, profile)
    for name, svc in stack.items():
        for dependency in svc.get("depends_on", []):
            assert dependency in stack, f"{name} depends on {dependency}, not in {profile}"


def test_every_mounted_file_exists_and_parses(compose: dict[str, Any]) -> None:
    checked = 0
    for name, svc in compose["services"].items():
        for source, _ in mounts(svc):
            assert source.exists(), f"{name} mounts missing {source}"
            files = sorted(source.glob("*.yaml")) if source.is_dir() else [source]
            assert files, f"{name}: {source} holds no config"
            for path in files:
                assert isinstance(load(path), dict), path
                checked += 1
        if "command" in svc:
            targets = [target for _, target in mounts(svc)]
            assert config_flag(svc) in targets, f"{name} reads a config that is not mounted"
    assert checked >= 4


def _collector_components_defined(config: dict[str, Any]) -> None:
    """Every component a collector-style pipeline names is configured."""
    service = config["service"]
    for extension in service.get("extensions", []):
        assert extension in config["extensions"], extension
    for pipeline in service["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{kind}: {component}"


def _otlp_bound_everywhere(config: dict[str, Any]) -> dict[str, int]:
    """The OTLP receiver's ports by protocol; fails unless bound to 0.0.0.0."""
    ports = {}
    for protocol, settings in config["receivers"]["otlp"]["protocols"].items():
        host, port = host_port(settings["endpoint"])
        assert host == "0.0.0.0", f"OTLP {protocol} bound to {host!r}"
        ports[protocol] = port
    assert ports == {"grpc": 4317, "http": 4318}
    return ports


@pytest.mark.parametrize("name", ["jaeger", "jaeger-sampled"])
def test_jaeger_config_matches_compose(compose: dict[str, Any], name: str) -> None:
    svc = compose["services"][name]
    config = mounted_config(svc, config_flag(svc))
    _collector_components_defined(config)
    _otlp_bound_everywhere(config)
    query = config["extensions"]["jaeger_query"]
    host, port = host_port(query["http"]["endpoint"])
    assert (host, port) == ("0.0.0.0", 16686)
    assert published(svc)[16686] == 16686
    storage = query["storage"]["traces"]
    assert storage in config["extensions"]["jaeger_storage"]["backends"]
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] == storage
    for host_side, container in published(svc).items():
        assert container in {16686, 4317, 4318}, host_side


def test_tempo_receivers_bound_explicitly(compose: dict[str, Any]) -> None:
    svc = compose["services"]["tempo"]
    assert "-target=all" in svc["command"]
    config = mounted_config(svc, config_flag(svc))
    ports = _otlp_bound_everywhere(config["distributor"])
    assert set(ports.values()) <= set(published(svc).values())
    assert config["server"]["http_listen_port"] in published(svc).values()
    assert config["overrides"]["defaults"]["global"]["max_bytes_per_trace"] > 5_000_000


def test_grafana_provisions_tempo_with_anonymous_admin(compose: dict[str, Any]) -> None:
    svc = compose["services"]["grafana"]
    env = svc["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Admin"
    [(source, target)] = mounts(svc)
    assert target == "/etc/grafana/provisioning/datasources"
    datasources = [ds for path in source.glob("*.yaml") for ds in load(path)["datasources"]]
    [tempo] = [ds for ds in datasources if ds["type"] == "tempo"]
    tempo_config = mounted_config(compose["services"]["tempo"], "/etc/tempo/tempo.yaml")
    assert tempo["url"] == f"http://tempo:{tempo_config['server']['http_listen_port']}"
    assert tempo["isDefault"] is True


def test_collector_samples_errors_and_slow_traces_into_jaeger(compose: dict[str, Any]) -> None:
    svc = compose["services"]["otel-collector"]
    config = mounted_config(svc, config_flag(svc))
    _collector_components_defined(config)
    _otlp_bound_everywhere(config)
    [pipeline] = config["service"]["pipelines"].values()
    processors = pipeline["processors"]
    assert processors.index("tail_sampling") < processors.index("batch")
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"] > 0
    [exporter] = pipeline["exporters"]
    assert exporter.startswith("otlp_grpc")
    host, port = host_port(config["exporters"][exporter]["endpoint"])
    stack = services_in(compose, "collector")
    assert host in stack and host in svc["depends_on"]
    target = mounted_config(stack[host], config_flag(stack[host]))
    assert host_port(target["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])[1] == port
