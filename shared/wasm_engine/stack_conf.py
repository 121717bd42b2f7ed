"""What the embedded local stack runs and the supervisord configuration that runs it.

This module owns the stack's description, with no process started and no socket opened:
:func:`programs` (the single source of truth for the stack's processes; compose.yaml must
match it), the supervisord configuration rendered from it (:func:`render_supervisord_conf`),
and the layout of the run folder ``settings.home`` it implies: the names of the conf, socket
and pid files, each process's :func:`log_path`, and the ui-monitor's :func:`monitor_url`.
:mod:`wasm_engine.stack` starts, waits for and stops what it describes.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from wasm_engine.config import (
    ENV_PREFIX,
    INFERENCE_WORKER_SETTINGS,
    MONITOR_SETTINGS,
    ORCHESTRATOR_SETTINGS,
    WASM_WORKER_SETTINGS,
    Settings,
    to_env,
)
from wasm_engine.errors import INTERNAL, WasmEngineError

CONF_NAME, SOCKET_NAME, PID_NAME = "supervisord.conf", "supervisor.sock", "supervisord.pid"
STOP_WAIT_S = 10  # SIGTERM -> SIGKILL grace per process (compose's stop_grace_period is above)
LOCAL_SHM_ARENA = 256 << 20  # each worker's arena under `up` unless told (0: tensors go inline)
_POOL = "-%(process_num)d"


class StackError(WasmEngineError):
    """The local stack could not be started, reached or stopped as asked."""

    def __init__(self, message: str) -> None:
        super().__init__(INTERNAL, message, retryable=False)


@dataclass
class Program:
    """One supervisord program. ``env`` values are in supervisord's %-expansion syntax
    (a literal ``%`` is written ``%%``): a pool's worker name uses ``%(process_num)d``."""

    name: str
    command: list[str]
    env: dict[str, str]
    numprocs: int = 1

    @property
    def is_pool(self) -> bool:  # takes a worker name, so its processes are <name>-<n>
        return ENV_PREFIX + "WORKER_NAME" in self.env

    @property
    def process_names(self) -> list[str]:
        return [f"{self.name}-{n}" for n in range(self.numprocs)] if self.is_pool else [self.name]


def default_bindir() -> Path:
    """Where the console scripts live: the bin folder of the running interpreter's venv."""
    return Path(sys.executable).parent


def _pct(value: str) -> str:
    return value.replace("%", "%%")


def _env_for(settings: Settings, names: tuple[str, ...]) -> dict[str, str]:
    home = str(Path(settings.home).resolve())
    return {k: _pct(v) for k, v in to_env(settings.replace(home=home), names).items()}


def default_models() -> Path:
    """``models/`` of the project checkout at or above the current folder, else ./models."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "compose.yaml").exists() and (folder / "inference-worker").is_dir():
            return folder / "models"
    return here / "models"


def programs(settings: Settings, bindir: Path) -> list[Program]:
    """Everything the stack runs, in start order; the ui-monitor unless ``settings.monitor``
    is off."""
    orchestrator_env, count = _env_for(settings, ORCHESTRATOR_SETTINGS), settings.wasm_workers
    worker_env = _env_for(settings, WASM_WORKER_SETTINGS)  # one distinct name per process:
    worker_env[ENV_PREFIX + "WORKER_NAME"] = _pct(settings.worker_name or "wasm-worker") + _POOL
    stack = [Program("orchestrator", [str(bindir / "wasm-engine-orchestrator")], orchestrator_env)]
    if count > 0:
        cmd = [str(bindir / "wasm-engine-wasm-worker")]
        stack.append(Program("wasm-worker", cmd, worker_env, count))
    if settings.inference_workers > 0:
        models = settings.models or str(default_models())
        env = _env_for(
            settings.replace(models=str(Path(models).resolve())), INFERENCE_WORKER_SETTINGS
        )
        env[ENV_PREFIX + "WORKER_NAME"] = _pct(settings.worker_name or "inference-worker") + _POOL
        cmd = [str(bindir / "wasm-engine-inference-worker")]
        stack.append(Program("inference-worker", cmd, env, settings.inference_workers))
    if settings.monitor:
        monitor_env = _env_for(settings, MONITOR_SETTINGS)
        stack.append(Program("ui-monitor", [str(bindir / "wasm-engine-ui-monitor")], monitor_env))
    return stack


def monitor_url(settings: Settings) -> str | None:
    """Where the stack's ui-monitor serves its page, or None when it does not run."""
    if not settings.monitor:
        return None
    host = settings.monitor_host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.monitor_port}/"


def _quote_env(env: dict[str, str]) -> str:
    # supervisord reads KEY="value",... with a non-POSIX shlex: a quote cannot be escaped.
    if any('"' in value and "'" in value for value in env.values()):
        raise StackError("a setting holds both quote kinds: supervisord cannot pass it on")
    return ",".join(f"{k}='{v}'" if '"' in v else f'{k}="{v}"' for k, v in sorted(env.items()))


def render_supervisord_conf(settings: Settings, home: Path, bindir: Path) -> str:
    """The supervisord configuration of the stack whose run folder is ``home``."""
    home = home.resolve()
    socket_path, logs = home / SOCKET_NAME, home / "logs"
    h = _pct(str(home))
    text = [
        f"[unix_http_server]\nfile={_pct(str(socket_path))}\nchmod=0700\n",
        f"[supervisord]\nlogfile={_pct(str(logs))}/supervisord.log\npidfile={h}/{PID_NAME}\n"
        f"childlogdir={_pct(str(logs))}\ndirectory={h}\nnodaemon=false\n"
        f'identifier=wasm-engine\nenvironment=PYTHONUNBUFFERED="1"\n',
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
        f"[supervisorctl]\nserverurl=unix://{_pct(str(socket_path))}\n",
    ]
    for priority, prog in enumerate(programs(settings.replace(home=str(home)), bindir), 1):
        pname = "%(program_name)s" + (_POOL if prog.is_pool else "")
        text.append(
            f"[program:{prog.name}]\ncommand={_pct(shlex.join(prog.command))}\n"
            f"environment={_quote_env(prog.env)}\nnumprocs={prog.numprocs}\n"
            f"process_name={pname}\ndirectory={h}\npriority={priority * 10}\n"
            f"autostart=true\nautorestart={'true' if prog.is_pool else 'unexpected'}\n"
            f"startsecs=1\nstartretries=3\nstopsignal=TERM\nstopwaitsecs={STOP_WAIT_S}\n"
            "stopasgroup=true\nkillasgroup=true\nredirect_stderr=true\n"
            f"stdout_logfile={_pct(str(logs))}/{pname}.log\n"
            "stdout_logfile_maxbytes=10MB\nstdout_logfile_backups=3\n"
        )
    return "\n".join(text)


def log_path(settings: Settings, service: str) -> Path:
    """The log of a process (``wasm-worker-0``), of a one-process program, or ``supervisord``."""
    files = {"supervisord": "supervisord"}
    for prog in programs(settings, default_bindir()):
        files.update({name: name for name in prog.process_names})
        if len(prog.process_names) == 1:
            files.setdefault(prog.name, prog.process_names[0])
    name = service.rpartition(":")[2]  # supervisorctl's group:process names work too
    if name not in files:
        raise ValueError(f"no log for {service!r}; one of: {', '.join(sorted(files))}")
    return Path(settings.home).resolve() / "logs" / f"{files[name]}.log"
