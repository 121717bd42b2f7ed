"""compose.yaml and the Dockerfiles, checked by the real tools (no Docker engine needed):
the compose-spec JSON schema, hadolint, and Compose v2's own `docker compose config`; and
compose kept equal to the supervisord stack (`wasm_engine.stack_conf.programs`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from wasm_engine import stack_conf
from wasm_engine.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
BIN = Path(sys.executable).parent
DOCKERFILES = {
    "orchestrator": ROOT / "orchestrator" / "Dockerfile",
    "wasm-worker": ROOT / "wasm-worker" / "Dockerfile",
    "inference-worker": ROOT / "inference-worker" / "Dockerfile",
    "ui-monitor": ROOT / "ui-monitor" / "Dockerfile",
}


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} missing from {BIN}: run `uv sync` (it is a dev dependency)"
    return str(path)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def compose_env() -> dict[str, str]:
    """The caller's environment without WASM_ENGINE_* (compose interpolates them), with
    DOCKER_CONFIG defaulting to the project's own, where .ci/install-compose puts the plugin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASM_ENGINE_")}
    env.setdefault("DOCKER_CONFIG", str(ROOT / ".docker-config"))
    return env


def compose_command(env: dict[str, str]) -> list[str]:
    docker = shutil.which("docker")
    if docker is not None:
        probe = [docker, "compose", "version"]
        if subprocess.run(probe, env=env, capture_output=True, check=False).returncode == 0:
            return [docker, "compose"]
    plugin = Path(env["DOCKER_CONFIG"]) / "cli-plugins" / "docker-compose"
    if os.access(plugin, os.X_OK):
        return [str(plugin)]  # the plugin binary also runs standalone, as docker-compose
    reason = f"Docker Compose v2 not installed in {plugin.parent}: run .ci/install-compose"
    if in_ci():
        pytest.fail(reason + " (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    env = compose_env()
    command = [*compose_command(env), "-f", str(COMPOSE), "config", "--format", "json"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_compose_file_matches_the_compose_spec_schema() -> None:
    command = [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("service", sorted(DOCKERFILES))
def test_dockerfile_is_hadolint_clean(service: str) -> None:
    done = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILES[service])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("service", sorted(DOCKERFILES))
def test_dockerfile_runs_as_non_root_with_a_healthcheck(service: str) -> None:
    lines = [ln.split() for ln in DOCKERFILES[service].read_text().splitlines() if ln.strip()]
    users = [ln[1] for ln in lines if ln[0] == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert any(ln[0] == "HEALTHCHECK" for ln in lines)  # compose keeps the image's test
    assert lines[0] == ["#", "syntax=docker/dockerfile:1"]
    assert any(ln[:2] == ["FROM", "python:3.11-slim"] for ln in lines)


def test_compose_runs_only_services_that_exist(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {
        "orchestrator",
        "wasm-worker",
        "inference-worker",
        "ui-monitor",
    }
    for name, service in config["services"].items():
        assert Path(service["build"]["context"]) == ROOT
        assert (
            Path(service["build"]["context"], service["build"]["dockerfile"]) == (DOCKERFILES[name])
        )


@pytest.mark.parametrize("name", ["wasm-worker", "inference-worker"])
def test_workers_scale(config: dict[str, Any], name: str) -> None:
    worker = config["services"][name]
    assert "container_name" not in worker and "hostname" not in worker
    assert all(not p.get("published") for p in worker.get("ports", []))
    assert worker["environment"]["WASM_ENGINE_WORKER_NAME"] == ""  # each names itself
    assert worker["depends_on"]["orchestrator"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", ["wasm-worker", "inference-worker"])
def test_workers_share_the_orchestrator_ipc_namespace(config: dict[str, Any], name: str) -> None:
    orchestrator, worker = config["services"]["orchestrator"], config["services"][name]
    assert orchestrator["ipc"] == "shareable"
    assert int(orchestrator["shm_size"]) >= 256 * 2**20
    assert worker["ipc"] == "service:orchestrator"


def test_inference_workers_mount_the_built_models_read_only(config: dict[str, Any]) -> None:
    worker = config["services"]["inference-worker"]
    (mount,) = worker["volumes"]
    assert (mount["target"], mount["read_only"]) == ("/models", True)
    assert worker["environment"]["WASM_ENGINE_MODELS"] == "/models"


def test_endpoints_bind_in_the_orchestrator_and_connect_by_service_name(
    config: dict[str, Any],
) -> None:
    orch = config["services"]["orchestrator"]["environment"]
    worker = config["services"]["wasm-worker"]["environment"]
    assert orch["WASM_ENGINE_FRONT"] == "tcp://0.0.0.0:5550"
    assert orch["WASM_ENGINE_BACK"] == "tcp://0.0.0.0:5551"
    assert orch["WASM_ENGINE_TELEMETRY"] == "tcp://0.0.0.0:5552"
    assert worker["WASM_ENGINE_BACK"] == "tcp://orchestrator:5551"
    monitor = config["services"]["ui-monitor"]
    assert monitor["environment"]["WASM_ENGINE_FRONT"] == "tcp://orchestrator:5550"
    assert monitor["environment"]["WASM_ENGINE_TELEMETRY"] == "tcp://orchestrator:5552"
    assert monitor["environment"]["WASM_ENGINE_MONITOR_HOST"] == "0.0.0.0"
    assert [(p["host_ip"], p["target"]) for p in monitor["ports"]] == [("127.0.0.1", 8088)]
    assert monitor["depends_on"]["orchestrator"]["condition"] == "service_healthy"


def test_every_service_stops_gracefully_and_is_supervised(config: dict[str, Any]) -> None:
    for service in config["services"].values():
        assert service["init"] is True
        assert service["stop_grace_period"]
        assert service["healthcheck"]["interval"]
        assert "test" not in service["healthcheck"]  # the image's HEALTHCHECK command
        assert service["command"]


def test_the_base_file_asks_for_no_gpu(config: dict[str, Any]) -> None:
    """It must start on any host; GPUs come from the compose.gpu.yaml override."""
    for service in config["services"].values():
        assert "gpus" not in service and "runtime" not in service
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
        assert "devices" not in devices


def test_the_gpu_override_gives_inference_workers_nvidia_gpus() -> None:
    env = compose_env()
    files = ["-f", str(COMPOSE), "-f", str(ROOT / "compose.gpu.yaml")]
    command = [*compose_command(env), *files, "config", "--format", "json"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    (device,) = services["inference-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "deploy" not in services["wasm-worker"]


def test_compose_and_the_local_stack_run_the_same_programs_with_the_same_settings() -> None:
    """Parsed from compose.yaml itself, so it runs even where Compose is not installed."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    settings = Settings(wasm_workers=2, inference_workers=1)
    programs = {p.name: p for p in stack_conf.programs(settings, BIN)}
    assert set(services) == set(programs)
    for name, program in programs.items():
        service = services[name]
        assert Path(service["command"][0]).name == Path(program.command[0]).name
        assert f'CMD ["{Path(program.command[0]).name}"]' in DOCKERFILES[name].read_text()
        compose_keys = {k for k in service["environment"] if k.startswith("WASM_ENGINE_")}
        stack_keys = {k for k in program.env if k.startswith("WASM_ENGINE_")}
        assert compose_keys == stack_keys, f"{name}: compose and stack_conf.programs() differ"
