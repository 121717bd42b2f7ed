"""The orchestrator image's HEALTHCHECK, run here as Docker would run it in the container: healthy
while the scheduling loop answers, unhealthy when the loop hangs though its socket is bound."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from wasm_engine.local import LocalStack

ROOT = Path(__file__).resolve().parents[2]


def healthcheck(dockerfile: Path) -> list[str]:
    """The exec-form ``CMD [...]`` of the file's HEALTHCHECK (which may continue a line)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK")]
    cmd: list[str] = json.loads(line.split(" CMD ", 1)[1])
    return cmd


def run_check(cmd: list[str], front: str) -> int:
    bindir = Path(sys.executable).parent  # the image's PATH has its venv's scripts first
    env = {**os.environ, "WASM_ENGINE_FRONT": front, "PATH": f"{bindir}:{os.environ['PATH']}"}
    return subprocess.run(cmd, env=env, capture_output=True, timeout=30, check=False).returncode


def test_orchestrator_is_unhealthy_when_its_loop_hangs(
    make_stack: Callable[..., LocalStack],
) -> None:
    cmd = healthcheck(ROOT / "orchestrator" / "Dockerfile")
    assert cmd[0] == "wasm-engine"
    stack = make_stack(0)
    assert stack.orchestrator is not None
    assert run_check(cmd, stack.front) == 0
    os.kill(stack.orchestrator.pid, signal.SIGSTOP)  # bound socket, no loop
    try:
        assert run_check(cmd, stack.front) == 1
    finally:
        os.kill(stack.orchestrator.pid, signal.SIGCONT)
    assert run_check(cmd, stack.front) == 0
