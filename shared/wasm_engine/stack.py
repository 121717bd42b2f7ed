"""The embedded local stack: the orchestrator, its wasm-workers and the ui-monitor under
supervisord.

This module owns what runs on one machine without Docker: :func:`programs` (the single
source of truth for the stack's processes; compose.yaml must match it), the supervisord
configuration rendered from it, and the life of that supervisord in the run folder
``settings.home``: :func:`up`, :func:`down`, :func:`status_programs`, :func:`log_path`.
It opens no socket itself: readiness is asked through :class:`wasm_engine.client.Client`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from wasm_engine.tensors import reap, stack_id

log = logging.getLogger(__name__)

CONF_NAME, SOCKET_NAME, PID_NAME = "supervisord.conf", "supervisor.sock", "supervisord.pid"
STOP_WAIT_S = 10  # SIGTERM -> SIGKILL grace per process (compose's stop_grace_period is above)
LOCAL_SHM_ARENA = 256 << 20  # each worker's arena under `up` unless told (0: tensors go inline)
_POOL = "-%(process_num)d"
ProgramStatus = tuple[str, str, int | None]  # supervisorctl's name, state and pid
_STATUS_LINE = re.compile(r"^(\S+)\s+([A-Z]+)\b\s*(.*)$")
_PID = re.compile(r"\bpid (\d+)")


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


def _tool(bindir: Path, name: str) -> str:
    path = bindir / name
    if not path.exists():
        raise StackError(f"{name} not found in {bindir} (run `uv sync` in the workspace)")
    return str(path)


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for its reaper."""
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return isinstance(exc, PermissionError)  # it exists, under another user
    with contextlib.suppress(OSError):  # without procfs, trust kill(0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _running_pid(home: Path) -> int | None:
    """The pid of the supervisord that runs the stack in ``home``, if one does."""
    try:
        pid = int((home / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None
    with contextlib.suppress(OSError):  # a pid reused by another program is not ours
        if b"supervisord" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    return pid if _alive(pid) else None


def _ctl(home: Path, bindir: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    command = [_tool(bindir, "supervisorctl"), "-c", str(home / CONF_NAME), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def status_programs(settings: Settings, *, bindir: Path | None = None) -> list[ProgramStatus]:
    """``supervisorctl status`` as (name, state, pid); empty when no stack runs in home."""
    home = Path(settings.home).resolve()
    if _running_pid(home) is None:
        return []
    done = _ctl(home, bindir or default_bindir(), "status", timeout=10.0)
    rows: list[ProgramStatus] = []
    for line in done.stdout.splitlines():
        if match := _STATUS_LINE.match(line):
            pid = _PID.search(match[3])
            rows.append((match[1], match[2], int(pid[1]) if pid else None))
    return rows


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


def _diagnose(settings: Settings, bindir: Path) -> str:
    """Which programs are not RUNNING, with the last lines of their logs."""
    rows = status_programs(settings, bindir=bindir)
    bad = [(name, state) for name, state, _ in rows if state != "RUNNING"]
    if not rows:
        parts, show = ["supervisord is not running"], ["supervisord"]
    elif bad:
        parts = ["not RUNNING: " + ", ".join(f"{name} ({state})" for name, state in bad)]
        show = [name for name, _ in bad]
    else:
        parts, show = ["every program is RUNNING"], ["orchestrator"]
    for name in show:
        path = log_path(settings, name)
        with contextlib.suppress(OSError):
            lines = path.read_text(errors="replace").splitlines()[-20:]
            parts.append(f"--- last lines of {path}:\n" + "\n".join(lines))
    return "\n".join(parts)


def _wait_ready(
    settings: Settings, bindir: Path, wait_timeout: float, progress: Callable[[str], None]
) -> None:
    from wasm_engine.client import Client

    deadline = time.monotonic() + wait_timeout
    want = settings.wasm_workers + settings.inference_workers
    seen, last_error = (-1, -1), "the orchestrator never answered status"
    while time.monotonic() < deadline:
        workers: list[dict[str, Any]] | None = None
        try:
            with Client(settings.front, timeout=1.0) as client:
                workers = client.status().get("workers", [])
        except WasmEngineError as exc:
            last_error = str(exc)
        rows = status_programs(settings, bindir=bindir)
        if workers is not None:
            ready = sum(1 for w in workers if w.get("state") == "ready")
            if (len(workers), ready) != seen:
                seen = (len(workers), ready)
                progress(f"workers ready: {ready}/{want} ({len(workers)} seen)")
            running = all(state == "RUNNING" for _, state, _ in rows)  # supervisord agrees too
            if len(workers) >= want and ready == len(workers) and running:
                return
            last_error = f"{ready}/{want} workers ready"
        if any(state == "FATAL" for _, state, _ in rows):
            break
        time.sleep(0.2)
    home = Path(settings.home).resolve()
    raise StackError(f"stack in {home} not ready ({last_error}); {_diagnose(settings, bindir)}")


def up(
    settings: Settings,
    *,
    bindir: Path | None = None,
    wait_timeout: float = 30.0,
    progress: Callable[[str], None] = log.info,
) -> None:
    """Start the stack in ``settings.home`` (unless it already runs) and wait until every
    wasm-worker is ready, or raise :class:`StackError` saying which program is not."""
    bindir = bindir or default_bindir()
    home = Path(settings.home).resolve()
    conf = render_supervisord_conf(settings, home, bindir)
    pid = _running_pid(home)
    if pid is not None:
        if not (home / CONF_NAME).is_file() or (home / CONF_NAME).read_text() != conf:
            raise StackError(f"another stack configuration runs in {home} (pid {pid}): down first")
        progress(f"stack already running in {home} (supervisord pid {pid})")
    else:
        (home / "logs").mkdir(parents=True, exist_ok=True)
        (home / CONF_NAME).write_text(conf)
        command = [_tool(bindir, "supervisord"), "-c", str(home / CONF_NAME)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise StackError(f"supervisord exited {done.returncode}: {done.stderr}{done.stdout}")
        progress(f"supervisord started in {home}")
    _wait_ready(settings, bindir, wait_timeout, progress)
    url = monitor_url(settings)
    progress(
        f"stack ready: orchestrator on {settings.front}, {settings.wasm_workers} wasm-workers, "
        f"{settings.inference_workers} inference-workers" + (f", monitor on {url}" if url else "")
    )


def _wait_gone(pid: int, deadline: float) -> bool:
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def down(settings: Settings, *, bindir: Path | None = None, timeout: float = 30.0) -> bool:
    """Stop the stack in ``settings.home`` and every process it started, then unlink the
    shm segments its processes left (a worker killed with its orchestrator, say); False
    if none ran."""
    bindir = bindir or default_bindir()
    home = Path(settings.home).resolve()
    pid = _running_pid(home)
    if pid is None:
        reap(stack_id(settings.stack, str(home)))  # what a stack that died on its own left
        return False
    children = [p for _, _, p in status_programs(settings, bindir=bindir) if p is not None]
    deadline = time.monotonic() + timeout
    try:
        _ctl(home, bindir, "shutdown", timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("supervisorctl shutdown did not answer in %.0f s", timeout)
    if not _wait_gone(pid, deadline):
        log.warning("supervisord %d still running after %.0f s: killing it", pid, timeout)
    for group in [pid, *children]:  # supervisord leads its own group, and so does each child
        leader_alive = _alive(group)  # (a zombie init has not reaped yet is not a survivor)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)  # also what the leader left behind, if it is gone
        if leader_alive:
            log.warning("killed the leftover process group %d", group)
            _wait_gone(group, time.monotonic() + 2.0)
    reap(stack_id(settings.stack, str(home)))  # the workers are gone: nobody maps them now
    return True
