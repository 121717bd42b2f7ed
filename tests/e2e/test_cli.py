"""The ``wasm-engine`` command as a user runs it: up, status, run, logs, down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from wasm_engine.tensors import segments_of, stack_id

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "wasm-engine")


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def test_cli_up_run_status_logs_down(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        WASM_ENGINE_HOME=str(tmp_path / "home"),
        WASM_ENGINE_FRONT=f"ipc://{tmp_path}/front",
        WASM_ENGINE_BACK=f"ipc://{tmp_path}/back",
        WASM_ENGINE_TELEMETRY=f"ipc://{tmp_path}/telemetry",
        WASM_ENGINE_MONITOR="0",  # the monitor under `up` is tested in test_stack_updown
    )

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    stack = stack_id("", str((tmp_path / "home").resolve()))
    try:
        up = cli("up", "--wasm-workers", "2")
        assert "front" in up.stdout and str(tmp_path / "front") in up.stdout
        assert len(segments_of(stack)) == 2  # each worker's arena: 256 MiB, one segment
        assert "monitor   off (--no-monitor)" in up.stdout

        run = cli("run", "agents/wat/checksum.wat", "--input", '"hello"', "--json")
        doc = json.loads(run.stdout)
        assert doc["ok"] is True and doc["output"] == fnv1a64(msgpack.packb("hello"))
        assert doc["stats"]["worker"].startswith("wasm-worker-")

        failed = cli("run", "agents/wat/loop.wat", "--fuel", "100000", "--json", check=False)
        assert failed.returncode == 1
        assert json.loads(failed.stdout)["error"]["code"] == "wasm.out_of_fuel"

        bad_input = cli("run", "agents/wat/echo.wat", "--input", "{not json", check=False)
        assert bad_input.returncode == 2

        status = json.loads(cli("status", "--json").stdout)
        assert len(status["workers"]) == 2
        assert status["counters"]["completed"] == 1 and status["counters"]["failed"] == 1
        assert len(status["agents"]) == 2
        text = cli("status").stdout
        assert "wasm-worker-" in text and "queue wasm" in text

        # a registered agent: module + manifest, run by name and by digest
        (tmp_path / "tiny.toml").write_text(
            'name = "tiny"\nversion = "1.0"\n[limits]\nfuel = 100000\n[grants]\nfiles = ["/x"]\n'
        )
        added = json.loads(
            cli(
                "agents",
                "add",
                "agents/wat/loop.wat",
                "--manifest",
                str(tmp_path / "tiny.toml"),
                "--json",
            ).stdout
        )
        assert added["name"] == "tiny" and added["version"] == "1.0"
        assert added["digest"].startswith("sha256:")
        listed = json.loads(cli("agents", "list", "--json").stdout)
        assert {"digest": added["digest"], "name": "tiny", "version": "1.0"}.items() <= next(
            a for a in listed if a["name"] == "tiny"
        ).items()
        assert "tiny" in cli("agents", "list").stdout
        # the manifest's fuel is a cap: a task asking for more still runs out at 100000
        capped = cli("run", "tiny", "--fuel", "10000000000", "--json", check=False)
        assert json.loads(capped.stdout)["error"]["code"] == "wasm.out_of_fuel"
        by_digest = cli("run", added["digest"], "--json", check=False)
        err = json.loads(by_digest.stdout)["error"]
        assert err["code"] == "wasm.out_of_fuel"
        unknown = cli("run", "no-such-agent", check=False)
        assert unknown.returncode == 1
        # a workflow from the CLI: agents stored by name, the planner spawns them by name
        for name in ("textstats", "reduce_stats", "planner"):
            cli("agents", "add", f"agents/build/{name}.wasm")
        job = '{"agent": "textstats", "inputs": ["a b", "b c"], "reduce": "reduce_stats"}'
        plan = json.loads(cli("run", "planner", "--input", job, "--json").stdout)
        assert plan["output"]["children"] == 3 and plan["output"]["result"]["words"] == 4
        # workers keep compiled modules on disk under $WASM_ENGINE_HOME/cache
        assert list((tmp_path / "home" / "cache").glob("*.cwasm"))

        logs = cli("logs", "orchestrator").stdout
        assert "listening" in logs
    finally:
        down = cli("down", check=False)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert segments_of(stack) == []
    again = cli("down")
    assert "no stack was running" in again.stdout
    status_after = cli("status", "--wait", "0.5", check=False)
    assert status_after.returncode == 1 and "client.timeout" in status_after.stderr
