"""Fixtures for the end-to-end tests: ``make_stack`` starts real stacks and always stops them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fault_helpers import (
    settled,
    until,
)

from wasm_engine.client import Client
from wasm_engine.local import LocalStack


@pytest.fixture
def make_stack() -> Iterator[Callable[..., LocalStack]]:
    """Start stacks for a test; whatever happens, thaw and stop them all afterwards. The tail
    of every process log is printed at teardown (pytest shows it when the test failed)."""
    stacks: list[LocalStack] = []

    def make(workers: int, **settings: Any) -> LocalStack:
        stack = LocalStack(workers, **settings)
        stacks.append(stack)
        stack.start(timeout=60)
        # past the start-up registration: a worker's first heartbeat can overtake its hello
        # and make it say hello twice (test_rejoining_worker_registers_once)
        with Client(stack.front, timeout=30) as client:
            pids = [p.pid for p in stack.workers]
            until("the workers to settle", lambda: settled(client, pids, 0.3))
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            for name in ["orchestrator", "ui-monitor", *(f"wasm-worker-{i}" for i in range(1, 10))]:
                text = stack.log_text(name)
                if text:
                    print(f"----- {name}.log (tail)\n{text[-4000:]}")
            live = [p for p in stack.workers if p.poll() is None]
            for proc in live:
                os.kill(proc.pid, signal.SIGCONT)  # a frozen worker cannot obey SIGTERM
                os.kill(proc.pid, signal.SIGTERM)  # workers first: their bye reaches a live
            for proc in live:  # orchestrator instead of lingering 2 s on a dead one
                with contextlib.suppress(subprocess.TimeoutExpired):  # stop() kills it
                    proc.wait(timeout=15)
            stack.stop()
