"""The local stack under supervisord, with real processes: up, status, down, nothing left.

The first test runs the real orchestrator and wasm-workers. The others check supervision alone
(start, idempotence, clean stop, failure report) with stand-in programs: shell scripts in a
bindir of their own, and a stand-in Client that reads readiness from supervisorctl.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wasm_engine import stack, stack_conf
from wasm_engine.config import Settings
from wasm_engine.errors import CLIENT_TIMEOUT, WasmEngineError

pytestmark = pytest.mark.e2e
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ipc_settings(tmp_path: Path, workers: int) -> Settings:
    """Endpoints as ipc:// files in the test's folder and a free port for the monitor: nothing
    collides with another run."""
    return Settings(
        home=str(tmp_path / "home"),
        wasm_workers=workers,
        front=f"ipc://{tmp_path}/front",
        back=f"ipc://{tmp_path}/back",
        telemetry=f"ipc://{tmp_path}/telemetry",
        monitor_port=free_port(),
    )


def monitor_ready(url: str, timeout: float) -> dict[str, Any]:
    """/readyz of the stack's monitor once it says ready (it needs one snapshot first)."""
    end, last = time.monotonic() + timeout, ""
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url + "readyz", timeout=2) as resp:
                doc: dict[str, Any] = json.loads(resp.read())
                return doc
        except (urllib.error.URLError, ConnectionError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise AssertionError(f"the monitor at {url} never got ready: {last}")


def alive(pid: int) -> bool:
    return stack._alive(pid)


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (each supervised program leads its own)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.fixture
def stopped_after(tmp_path: Path) -> Iterator[list[tuple[Settings, Path]]]:
    """Stacks a test started, brought down whatever the test's outcome."""
    started: list[tuple[Settings, Path]] = []
    yield started
    for settings, bindir in started:
        stack.down(settings, bindir=bindir, timeout=20)


def test_up_two_wasm_workers_then_down(
    tmp_path: Path, stopped_after: list[tuple[Settings, Path]]
) -> None:
    from wasm_engine.client import Client

    settings = ipc_settings(tmp_path, workers=2)
    stopped_after.append((settings, VENV_BIN))
    messages: list[str] = []
    stack.up(settings, bindir=VENV_BIN, wait_timeout=60, progress=messages.append)

    with Client(settings.front, timeout=5.0) as client:
        status = client.status()
    workers = status["workers"]
    assert len(workers) == 2 and all(w["state"] == "ready" for w in workers)
    assert len({w["name"] for w in workers}) == 2
    assert any("2/2" in m for m in messages)
    url = stack_conf.monitor_url(settings)
    assert url is not None and any(url in m for m in messages)
    assert monitor_ready(url, 30)["ready"] is True

    rows = stack.status_programs(settings, bindir=VENV_BIN)
    assert sorted(name for name, _, _ in rows) == [
        "orchestrator",
        "ui-monitor",
        "wasm-worker:wasm-worker-0",
        "wasm-worker:wasm-worker-1",
    ]
    assert all(state == "RUNNING" for _, state, _ in rows)
    pids = [pid for _, _, pid in rows if pid is not None]
    assert len(pids) == 4
    supervisord = int((Path(settings.home) / stack_conf.PID_NAME).read_text())

    assert stack.down(settings, bindir=VENV_BIN, timeout=30) is True
    assert [pid for pid in [supervisord, *pids] if alive(pid)] == []
    assert [m for pid in pids for m in group_members(pid)] == []
    assert stack.down(settings, bindir=VENV_BIN, timeout=5) is False


# -- supervision alone, with stand-in programs --------------------------------------------------


def standin_bindir(tmp_path: Path, worker_script: str) -> Path:
    """supervisord and supervisorctl from the venv; shell scripts in place of our programs."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("supervisord", "supervisorctl"):
        (bindir / name).symlink_to(VENV_BIN / name)
    scripts = {
        # a child in the same process group, as a real worker's helpers would be
        "wasm-engine-orchestrator": "sleep 300 &\nexec sleep 300\n",
        "wasm-engine-wasm-worker": worker_script,
        "wasm-engine-ui-monitor": "exec sleep 300\n",
    }
    for name, body in scripts.items():
        (bindir / name).write_text("#!/bin/sh\n" + body)
        (bindir / name).chmod(0o755)
    return bindir


@pytest.fixture
def standin_client(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Settings, Path]]:
    """A Client whose status() calls every RUNNING wasm-worker process ready."""
    target: list[tuple[Settings, Path]] = []

    class Client:
        def __init__(self, front: str, timeout: float) -> None:
            self.front = front

        def __enter__(self) -> Client:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def status(self) -> dict[str, Any]:
            settings, bindir = target[0]
            rows = stack.status_programs(settings, bindir=bindir)
            if not any(n == "orchestrator" and s == "RUNNING" for n, s, _ in rows):
                raise WasmEngineError(CLIENT_TIMEOUT, "no answer")
            running = [n for n, s, _ in rows if n.startswith("wasm-worker:") and s == "RUNNING"]
            return {"workers": [{"name": n, "state": "ready"} for n in running]}

    module = types.ModuleType("wasm_engine.client")
    module.Client = Client  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wasm_engine.client", module)
    return target


def test_supervision_up_is_idempotent_and_down_leaves_nothing(
    tmp_path: Path,
    standin_client: list[tuple[Settings, Path]],
    stopped_after: list[tuple[Settings, Path]],
) -> None:
    bindir = standin_bindir(tmp_path, "sleep 300 &\nexec sleep 300\n")
    settings = ipc_settings(tmp_path, workers=2)
    standin_client.append((settings, bindir))
    stopped_after.append((settings, bindir))
    messages: list[str] = []

    stack.up(settings, bindir=bindir, wait_timeout=30, progress=messages.append)
    assert any("workers ready: 2/2" in m for m in messages)
    home = Path(settings.home)
    supervisord = int((home / stack_conf.PID_NAME).read_text())
    rows = stack.status_programs(settings, bindir=bindir)
    assert [(n, s) for n, s, _ in sorted(rows)] == [
        ("orchestrator", "RUNNING"),
        ("ui-monitor", "RUNNING"),
        ("wasm-worker:wasm-worker-0", "RUNNING"),
        ("wasm-worker:wasm-worker-1", "RUNNING"),
    ]
    pids = [pid for name, _, pid in rows if pid is not None and name != "ui-monitor"]
    assert all(len(group_members(pid)) == 2 for pid in pids)  # the script and its child

    messages.clear()
    stack.up(settings, bindir=bindir, wait_timeout=30, progress=messages.append)
    assert any("already running" in m for m in messages)
    assert int((home / stack_conf.PID_NAME).read_text()) == supervisord
    with pytest.raises(stack.StackError, match="another stack configuration"):
        stack.up(settings.replace(wasm_workers=3), bindir=bindir, wait_timeout=5)

    assert stack.down(settings, bindir=bindir, timeout=30) is True
    assert not alive(supervisord)
    assert [m for pid in pids for m in group_members(pid)] == []
    assert stack.down(settings, bindir=bindir, timeout=5) is False
    assert stack.status_programs(settings, bindir=bindir) == []


def test_supervision_names_the_failing_program_and_shows_its_log(
    tmp_path: Path,
    standin_client: list[tuple[Settings, Path]],
    stopped_after: list[tuple[Settings, Path]],
) -> None:
    bindir = standin_bindir(tmp_path, "echo 'cannot load the agent table' >&2\nexit 3\n")
    settings = ipc_settings(tmp_path, workers=1)
    standin_client.append((settings, bindir))
    stopped_after.append((settings, bindir))

    with pytest.raises(stack.StackError) as failure:
        stack.up(settings, bindir=bindir, wait_timeout=60, progress=lambda _: None)
    message = str(failure.value)
    assert "wasm-worker:wasm-worker-0 (FATAL)" in message
    assert "orchestrator" not in message.split("not RUNNING:")[1].split("\n", maxsplit=1)[0]
    assert "cannot load the agent table" in message
