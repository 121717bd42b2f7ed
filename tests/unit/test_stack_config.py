"""The supervisord configuration of the local stack, read back by supervisord's own parser."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from supervisor.datatypes import RestartUnconditionally, RestartWhenExitUnexpected
from supervisor.options import ClientOptions, ServerOptions

from wasm_engine import stack, stack_conf
from wasm_engine.config import (
    MONITOR_SETTINGS,
    ORCHESTRATOR_SETTINGS,
    WASM_WORKER_SETTINGS,
    Settings,
)
from wasm_engine.tensors import SHM_DIR, Segment, stack_id, unlink

BINDIR = Path("/opt/venv/bin")


def parse(settings: Settings, home: Path) -> ServerOptions:
    """Render the conf into ``home`` and parse it as ``supervisord -c`` would."""
    (home / "logs").mkdir(parents=True)  # supervisord checks that log folders exist
    conf = home / stack_conf.CONF_NAME
    conf.write_text(stack_conf.render_supervisord_conf(settings, home, BINDIR))
    options = ServerOptions()
    options.configfile = str(conf)
    options.process_config(do_usage=False)
    return options


def processes(options: ServerOptions) -> dict[str, Any]:
    return {p.name: p for g in options.process_group_configs for p in g.process_configs}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_programs_are_the_orchestrator_a_pool_of_wasm_workers_and_the_monitor(
    tmp_path: Path,
) -> None:
    progs = stack_conf.programs(Settings(home=str(tmp_path), wasm_workers=3), BINDIR)
    assert [p.name for p in progs] == ["orchestrator", "wasm-worker", "ui-monitor"]
    assert [p.command for p in progs] == [
        [str(BINDIR / "wasm-engine-orchestrator")],
        [str(BINDIR / "wasm-engine-wasm-worker")],
        [str(BINDIR / "wasm-engine-ui-monitor")],
    ]
    assert [p.numprocs for p in progs] == [1, 3, 1]
    assert progs[1].process_names == ["wasm-worker-0", "wasm-worker-1", "wasm-worker-2"]
    assert {k for k in progs[2].env if k.startswith("WASM_ENGINE_")} == {
        "WASM_ENGINE_" + n.upper() for n in MONITOR_SETTINGS
    }


def test_no_worker_program_when_the_pool_is_empty_and_no_monitor_when_off(tmp_path: Path) -> None:
    progs = stack_conf.programs(Settings(home=str(tmp_path), wasm_workers=0, monitor=False), BINDIR)
    assert [p.name for p in progs] == ["orchestrator"]


def test_monitor_url_names_a_host_a_browser_can_reach() -> None:
    assert stack_conf.monitor_url(Settings()) == "http://127.0.0.1:8088/"
    assert stack_conf.monitor_url(Settings(monitor_host="0.0.0.0", monitor_port=9)) == (
        "http://127.0.0.1:9/"
    )
    assert stack_conf.monitor_url(Settings(monitor_host="::1")) == "http://[::1]:8088/"
    assert stack_conf.monitor_url(Settings(monitor=False)) is None


def test_conf_parses_into_one_orchestrator_and_numbered_workers(home: Path) -> None:
    options = parse(Settings(home=str(home), wasm_workers=2), home)
    groups = {g.name: g for g in options.process_group_configs}
    assert set(groups) == {"orchestrator", "wasm-worker", "ui-monitor"}
    assert groups["orchestrator"].priority < groups["wasm-worker"].priority  # started first
    procs = processes(options)
    assert set(procs) == {"orchestrator", "wasm-worker-0", "wasm-worker-1", "ui-monitor"}
    assert procs["orchestrator"].command == str(BINDIR / "wasm-engine-orchestrator")
    assert procs["wasm-worker-1"].command == str(BINDIR / "wasm-engine-wasm-worker")


def test_each_process_gets_its_settings_and_workers_distinct_names(home: Path) -> None:
    settings = Settings(home=str(home), wasm_workers=2, credits=4, log_level="DEBUG")
    procs = processes(parse(settings, home))
    orch = procs["orchestrator"].environment
    assert {k for k in orch if k.startswith("WASM_ENGINE_")} == {
        "WASM_ENGINE_" + n.upper() for n in ORCHESTRATOR_SETTINGS
    }
    assert orch["WASM_ENGINE_FRONT"] == settings.front
    assert orch["WASM_ENGINE_HOME"] == str(home.resolve())
    names = set()
    for name in ("wasm-worker-0", "wasm-worker-1"):
        env = procs[name].environment
        assert {k for k in env if k.startswith("WASM_ENGINE_")} == {
            "WASM_ENGINE_" + n.upper() for n in WASM_WORKER_SETTINGS
        }
        assert env["WASM_ENGINE_CREDITS"] == "4"
        assert env["WASM_ENGINE_LOG_LEVEL"] == "DEBUG"
        assert env["WASM_ENGINE_BACK"] == settings.back
        names.add(env["WASM_ENGINE_WORKER_NAME"])
    assert names == {"wasm-worker-0", "wasm-worker-1"}


def test_percent_and_quotes_in_values_reach_the_process_unchanged(home: Path) -> None:
    front = f"ipc://{home}/100%front.ipc"
    settings = Settings(home=str(home), front=front, worker_name='w"x')
    procs = processes(parse(settings, home))
    assert procs["orchestrator"].environment["WASM_ENGINE_FRONT"] == front
    assert procs["wasm-worker-0"].environment["WASM_ENGINE_WORKER_NAME"] == 'w"x-0'


def test_logs_go_to_one_file_per_process_in_home(home: Path) -> None:
    settings = Settings(home=str(home), wasm_workers=2)
    options = parse(settings, home)
    logs = home.resolve() / "logs"
    assert options.logfile == str(logs / "supervisord.log")
    for name, proc in processes(options).items():
        assert proc.stdout_logfile == str(logs / f"{name}.log")
        assert proc.redirect_stderr
        assert stack_conf.log_path(settings, name) == logs / f"{name}.log"
    assert stack_conf.log_path(settings, "wasm-worker:wasm-worker-1") == logs / "wasm-worker-1.log"
    assert stack_conf.log_path(settings, "supervisord") == logs / "supervisord.log"


def test_log_path_of_a_pool_needs_a_process_unless_it_has_one(home: Path) -> None:
    with pytest.raises(ValueError, match="wasm-worker-0, wasm-worker-1"):
        stack_conf.log_path(Settings(home=str(home), wasm_workers=2), "wasm-worker")
    one = Settings(home=str(home), wasm_workers=1)
    assert stack_conf.log_path(one, "wasm-worker").name == "wasm-worker-0.log"
    assert stack_conf.log_path(one, "ui-monitor").name == "ui-monitor.log"
    with pytest.raises(ValueError, match="no log for"):
        stack_conf.log_path(one.replace(monitor=False), "ui-monitor")


def test_stop_and_restart_policy(home: Path) -> None:
    procs = processes(parse(Settings(home=str(home), wasm_workers=2), home))
    for proc in procs.values():
        assert proc.stopsignal == signal.SIGTERM
        assert proc.stopwaitsecs == stack_conf.STOP_WAIT_S
        assert proc.stopasgroup and proc.killasgroup
        assert proc.autostart
    assert procs["wasm-worker-0"].autorestart is RestartUnconditionally
    assert procs["orchestrator"].autorestart is RestartWhenExitUnexpected


def test_supervisord_daemonizes_with_its_socket_and_pidfile_in_home(home: Path) -> None:
    options = parse(Settings(home=str(home)), home)
    assert options.nodaemon is False
    assert options.pidfile == str(home.resolve() / stack_conf.PID_NAME)
    [server] = options.configroot.supervisord.server_configs
    assert server["family"] == socket.AF_UNIX
    assert server["file"] == str(home.resolve() / stack_conf.SOCKET_NAME)
    assert options.configroot.supervisord.environment == {"PYTHONUNBUFFERED": "1"}
    ctl = ClientOptions()
    ctl.configfile = str(home / stack_conf.CONF_NAME)
    ctl.process_config(do_usage=False)
    assert (
        ctl.configroot.supervisorctl.serverurl
        == f"unix://{home.resolve() / stack_conf.SOCKET_NAME}"
    )


def test_workers_get_the_tensor_settings_and_the_orchestrator_the_lease_ttl(home: Path) -> None:
    settings = Settings(
        home=str(home), shm_arena=stack_conf.LOCAL_SHM_ARENA, stack="s1", lease_ttl=9.0
    )
    procs = processes(parse(settings, home))
    worker = procs["wasm-worker-0"].environment
    assert worker["WASM_ENGINE_SHM_ARENA"] == str(256 << 20)
    assert worker["WASM_ENGINE_STACK"] == "s1"
    assert procs["orchestrator"].environment["WASM_ENGINE_LEASE_TTL"] == "9.0"


def test_down_reaps_the_stacks_segments_even_when_nothing_runs(home: Path) -> None:
    home.mkdir()
    mine = Segment.create(f"wasm-engine-{stack_id('', str(home.resolve()))}-1-ab-1", 4096)
    other = Segment.create(f"wasm-engine-other{os.getpid()}-1-ab-1", 4096)
    try:
        assert stack.down(Settings(home=str(home))) is False  # no supervisord in home
        assert not (SHM_DIR / mine.name).exists()
        assert (SHM_DIR / other.name).exists()  # another stack's: not ours to remove
    finally:
        for seg in (mine, other):
            unlink(seg.name)
            seg.close()
