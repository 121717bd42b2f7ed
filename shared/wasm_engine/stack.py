"""The life of the embedded local stack under supervisord: start, wait, status, stop.

This module owns the supervisord that runs the processes :mod:`wasm_engine.stack_conf`
describes, in the run folder ``settings.home``: :func:`up` (start it unless it runs, then
wait until every worker is ready or say which program is not), :func:`down` (stop it and
every process it started, then reap their shm segments) and :func:`status_programs`
(``supervisorctl status``). It opens no socket itself: readiness is asked through
:class:`wasm_engine.client.Client`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wasm_engine.config import Settings
from wasm_engine.errors import WasmEngineError
from wasm_engine.stack_conf import (
    CONF_NAME,
    PID_NAME,
    StackError,
    default_bindir,
    log_path,
    monitor_url,
    render_supervisord_conf,
)
from wasm_engine.tensors import reap, stack_id

__all__ = ["ProgramStatus", "StackError", "down", "status_programs", "up"]

log = logging.getLogger(__name__)

ProgramStatus = tuple[str, str, int | None]  # supervisorctl's name, state and pid
_STATUS_LINE = re.compile(r"^(\S+)\s+([A-Z]+)\b\s*(.*)$")
_PID = re.compile(r"\bpid (\d+)")


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
