"""docker-compose.yml describes the platform the settings and ARCHITECTURE.md describe."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml  # type: ignore[import-untyped]

from services.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = ROOT / "infra" / "prometheus" / "prometheus.yml"

# ARCHITECTURE.md's default ports.
PORTS = {
    "api": 8000,
    "torchserve": 8080,
    "redis": 6379,
    "postgres": 5432,
    "s3": 9000,
    "prometheus": 9090,
    "grafana": 3000,
}
API_METRICS_PORT = 9102  # on the compose network only
LONG_RUNNING = {"redis", "postgres", "s3", "torchserve", "api", "worker", "prometheus", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _published(service: dict[str, Any]) -> dict[int, str]:
    """Container port -> host address it is published on."""
    published = {}
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        host = parts[0] if len(parts) == 3 else "0.0.0.0"
        published[int(parts[-1])] = host
    return published


def test_services_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == LONG_RUNNING | {"s3-bucket", "migrate"}
    for name in LONG_RUNNING:
        assert "test" in services[name]["healthcheck"], name
        assert services[name]["restart"] == "unless-stopped", name
    assert services["redis"]["command"][1:3] == ["--appendonly", "yes"]  # AOF on
    for name, service in services.items():
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).is_file(), name


def test_ports_follow_the_architecture_and_private_ones_stay_on_loopback(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, port in PORTS.items():
        assert port in _published(services[name]), name
    assert _published(services["torchserve"]) == {8080: "127.0.0.1", 8081: "127.0.0.1", 8082: "127.0.0.1"}
    for name in ("redis", "postgres", "s3", "prometheus", "grafana"):
        assert set(_published(services[name]).values()) == {"127.0.0.1"}, name
    assert services["worker"]["expose"] == ["9101"]


def test_environment_names_real_settings_and_agrees_with_the_services(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    env = compose["x-tsmindex-env"]
    for service in ("api", "worker", "migrate"):
        assert compose["services"][service]["environment"].items() >= env.items()
    for key in [
        *compose["services"]["api"]["environment"],
        *compose["services"]["torchserve"]["environment"],
    ]:
        assert key.startswith("TSMINDEX_") and key.removeprefix("TSMINDEX_").lower() in fields, key

    def port(url: str) -> tuple[str | None, int | None]:
        parsed = urlparse(re.sub(r"\$\{[^}]*\}", "secret", url))  # a ${VAR:?...} password
        return parsed.hostname, parsed.port

    defaults = Settings()
    assert port(env["TSMINDEX_TORCHSERVE_INFERENCE_URL"]) == (
        "torchserve",
        port(defaults.torchserve_inference_url)[1],
    )
    assert port(env["TSMINDEX_TORCHSERVE_MANAGEMENT_URL"]) == (
        "torchserve",
        port(defaults.torchserve_management_url)[1],
    )
    assert port(env["TSMINDEX_TORCHSERVE_METRICS_URL"]) == (
        "torchserve",
        port(defaults.torchserve_metrics_url)[1],
    )
    assert port(env["TSMINDEX_REDIS_URL"]) == ("redis", PORTS["redis"])
    assert port(env["TSMINDEX_S3_ENDPOINT_URL"]) == ("s3", PORTS["s3"])
    assert re.search(r"@postgres:5432/", env["TSMINDEX_DATABASE_URL"])
    assert int(env["TSMINDEX_API_PORT"]) == defaults.api_port == PORTS["api"]
    assert int(env["TSMINDEX_WORKER_METRICS_PORT"]) == defaults.worker_metrics_port == 9101
    assert env["TSMINDEX_MODE"] == "platform"


def test_no_secret_has_a_default(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for name in (
        "TSMINDEX_API_KEYS_PEPPER",
        "TSMINDEX_WEBHOOK_SECRET",
        "POSTGRES_PASSWORD",
        "TSMINDEX_S3_SECRET_ACCESS_KEY",
        "GRAFANA_ADMIN_PASSWORD",
        "REDIS_PASSWORD",
    ):
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses and all(use.startswith(":?") for use in uses), name


def test_prometheus_scrapes_the_compose_services(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for target in [t for s in job.get("static_configs", []) for t in s["targets"]]
        + [f"{name}:{s['port']}" for s in job.get("dns_sd_configs", []) for name in s["names"]]
    }
    assert {f"api:{API_METRICS_PORT}", "worker:9101", "torchserve:8082"} <= targets
    for target in targets:
        assert target.split(":")[0] in compose["services"], target
    # Scaled workers are each scraped: found by DNS, not one fixed address the replicas share.
    worker = next(job for job in config["scrape_configs"] if job["job_name"] == "tsmindex-worker")
    assert "static_configs" not in worker


def test_prometheus_accepts_the_config_and_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (infra/scripts/test.sh installs Debian's prometheus package)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules/tsmindex.yml" in result.stdout  # the rule files were found and checked too


def test_redis_needs_its_password(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["command"][-2:] == ["--requirepass", "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}"]
    assert redis["environment"]["REDISCLI_AUTH"] == redis["command"][-1]  # the healthcheck authenticates
    for name in ("api", "worker", "migrate"):
        url = compose["services"][name]["environment"]["TSMINDEX_REDIS_URL"]
        assert url == "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}@redis:6379/0", name


def test_api_and_workers_get_the_inference_key_only(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "torchserve-keys:/srv/torchserve" in services["torchserve"]["volumes"]  # all keys: its own
    for name in ("api", "worker"):
        volumes = services[name]["volumes"]
        assert volumes == ["torchserve-inference-key:/srv/inference:ro"], name
        assert services[name]["environment"]["TSMINDEX_TORCHSERVE_KEY_FILE"] == "/srv/inference/key_file.json"
    entrypoint = (ROOT / "infra" / "docker" / "torchserve-entrypoint.sh").read_text()
    assert 'json.load(open(sys.argv[1]))["inference"]' in entrypoint


def test_api_metrics_are_not_on_the_published_port(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert int(api["environment"]["TSMINDEX_API_METRICS_PORT"]) == API_METRICS_PORT
    assert API_METRICS_PORT not in _published(api) and str(API_METRICS_PORT) in api["expose"]


def test_stack_writes_its_secrets_for_its_owner_only(tmp_path: Path) -> None:
    stack_dir = tmp_path / "stack"
    stack_dir.mkdir()
    (stack_dir / "api-key").write_text("tsm_x\n")
    (stack_dir / "api-key").chmod(0o644)  # as an earlier version left it
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TSMINDEX_STACK_DIR": str(stack_dir),
        "TSMINDEX_STACK_COMPONENTS": "none",  # start and check nothing: only the settings are written
        "TSMINDEX_BIN_DIR": str(Path(sys.executable).parent),
    }
    result = subprocess.run(
        ["bash", str(ROOT / "infra" / "scripts" / "stack.sh"), "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (stack_dir / "env").stat().st_mode & 0o777 == 0o600
    assert (stack_dir / "api-key").stat().st_mode & 0o777 == 0o600
    assert "TSMINDEX_WEBHOOK_SECRET:=whsec_" in (stack_dir / "env").read_text()


def test_the_gpu_override_reserves_a_gpu_for_torchserve_and_the_workers(compose: dict[str, Any]) -> None:
    override: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    assert set(override["services"]) == {"torchserve", "worker"}
    for name, service in override["services"].items():
        assert name in compose["services"]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        assert (ROOT / service["build"]["dockerfile"]).is_file()
    assert override["services"]["worker"]["environment"]["TSMINDEX_DECODE_DEVICE"] == "cuda"
    assert Settings(_env_file=None, decode_device="cuda").decode_device == "cuda"  # type: ignore[call-arg]
    dockerfile = (ROOT / "infra/docker/torchserve-cuda.Dockerfile").read_text()
    assert "whl/cu126" in dockerfile and "OMP_WAIT_POLICY=PASSIVE" in dockerfile
