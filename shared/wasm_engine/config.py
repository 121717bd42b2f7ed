"""Settings shared by every process: endpoints, heartbeats, limits.

Every setting has one name, used three ways: the field here, the environment
variable ``WASM_ENGINE_<FIELD>`` and the CLI flag ``--<field-with-dashes>``. A flag
beats the environment, the environment beats the default. This module owns that
rule and nothing else (no sockets, no files).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

ENV_PREFIX = "WASM_ENGINE_"


@dataclass(frozen=True)
class Settings:
    """Everything a stack process may be told. Endpoints are bound by the orchestrator
    and connected to by everyone else; ``ipc://`` works as well as ``tcp://``."""

    front: str = "tcp://127.0.0.1:5550"  # clients -> orchestrator (ROUTER)
    back: str = "tcp://127.0.0.1:5551"  # workers -> orchestrator (ROUTER)
    telemetry: str = "tcp://127.0.0.1:5552"  # orchestrator PUB
    home: str = ".wasm-engine"  # run folder of the local stack
    wasm_workers: int = 1
    inference_workers: int = 0
    heartbeat_interval: float = 1.0  # seconds between heartbeats, both ways
    heartbeat_liveness: int = 3  # missed intervals before a peer is dead
    credits: int = 16  # tasks a worker may hold at once (worker side)
    models: str = ""  # inference workers' model repository (default: <project>/models)
    device: str = "prefer_gpu"  # inference workers: where models load (prefer_gpu | cpu_ok)
    concurrency: int = 1  # tasks one worker computes at once, on threads (worker side)
    queue_limit: int = 10_000  # queued tasks per kind before task.overloaded
    max_attempts: int = 3  # dispatches of a task before task.worker_lost
    session_idle: float = 300.0  # seconds a session may idle before its instance is dropped
    max_depth: int = 8  # child requests (spawn…) nested at most this deep: task.too_deep
    result_ttl: float = 300.0  # seconds a finished task answers duplicates
    worker_name: str = ""  # default: <kind>-<host>-<pid>
    stack: str = ""  # instance id in shm segment names; default: a digest of `home`
    shm_arena: int = 0  # bytes of shared memory a worker maps up front; 0: tensors go inline
    shm_segment: int = 256 << 20  # bytes per arena segment: the largest tensor in shm
    tensor_inline_cap: int = 64 << 20  # largest tensor sent inline (across shm namespaces)
    lease_ttl: float = 60.0  # seconds a tensor lease lives unless released earlier
    monitor: bool = True  # `up` starts the ui-monitor (--no-monitor: not)
    monitor_host: str = "127.0.0.1"  # the ui-monitor's HTTP address
    monitor_port: int = 8088
    log_level: str = "INFO"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _convert(kind: type, raw: str, name: str) -> Any:
    try:
        if kind is bool:
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from None


def _field_types() -> dict[str, type]:
    kinds = {"str": str, "int": int, "float": float, "bool": bool}
    return {f.name: kinds[str(f.type)] for f in fields(Settings)}


def from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Defaults, then ``WASM_ENGINE_*`` variables, then non-None ``overrides``."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, kind in _field_types().items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _convert(kind, raw, name)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


#: The settings each program takes, by field name: its flags (``add_arguments``), the
#: environment ``wasm-engine up`` gives it, and what compose must give its service.
ORCHESTRATOR_SETTINGS: tuple[str, ...] = ("front", "back", "telemetry", "home", "log_level")
ORCHESTRATOR_SETTINGS += ("heartbeat_interval", "heartbeat_liveness", "queue_limit")
ORCHESTRATOR_SETTINGS += ("max_attempts", "result_ttl", "max_depth", "session_idle", "lease_ttl")
WASM_WORKER_SETTINGS: tuple[str, ...] = ("back", "home", "log_level", "worker_name", "credits")
WASM_WORKER_SETTINGS += ("concurrency", "stack", "shm_arena", "shm_segment", "tensor_inline_cap")
WASM_WORKER_SETTINGS += ("heartbeat_interval", "heartbeat_liveness")
INFERENCE_WORKER_SETTINGS: tuple[str, ...] = ("back", "home", "log_level", "worker_name")
INFERENCE_WORKER_SETTINGS += ("credits", "device", "models", "stack", "shm_arena", "shm_segment")
INFERENCE_WORKER_SETTINGS += ("tensor_inline_cap", "heartbeat_interval", "heartbeat_liveness")
MONITOR_SETTINGS: tuple[str, ...] = ("front", "telemetry", "log_level")
MONITOR_SETTINGS += ("monitor_host", "monitor_port")


def add_arguments(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """Add ``--<name>`` flags for the given settings; defaults stay None so that
    :func:`from_args` can tell a flag from the environment."""
    types = _field_types()
    for name in names:
        kind = types[name]
        flag = "--" + name.replace("_", "-")
        help_text = f"(env {ENV_PREFIX}{name.upper()}, default {getattr(Settings(), name)!r})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=None, help=help_text)


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from parsed flags (those added by :func:`add_arguments`) over the env."""
    names = {f.name for f in fields(Settings)}
    return from_env(env, **{k: v for k, v in vars(args).items() if k in names})


def to_env(settings: Settings, names: Sequence[str] | None = None) -> dict[str, str]:
    """The environment that reproduces ``settings`` in a child process."""
    chosen = names if names is not None else [f.name for f in fields(Settings)]
    return {ENV_PREFIX + n.upper(): str(getattr(settings, n)) for n in chosen}
