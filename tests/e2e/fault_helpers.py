"""Helpers for the fault tests (``test_faults_*.py``): the compiled test agents, polling waits
(:func:`until`), and checks on a :class:`LocalStack`'s status.

Waits poll a condition against a deadline (:func:`until`), with generous timeouts: the suite
must pass on a loaded 2-core machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import wasmtime

from wasm_engine.client import Client, Result, TaskFuture
from wasm_engine.errors import WasmEngineError
from wasm_engine.local import LocalStack

WAT = Path(__file__).resolve().parents[2] / "agents" / "wat"
FAST_HEARTBEATS = {"heartbeat_interval": 0.2, "heartbeat_liveness": 3}
SPIN_FUEL = 100_000_000_000  # spin costs 8 fuel per iteration: ~12e9 iterations
T = TypeVar("T")


def wasm(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((WAT / f"{name}.wat").read_text()))


def until(
    what: str, probe: Callable[[], T | None], timeout: float = 30.0, every: float = 0.05
) -> T:
    """Poll ``probe`` until it returns a truthy value; fail naming ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except WasmEngineError as err:  # e.g. status while the orchestrator restarts
            last = err
        else:
            if last:
                return last
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        time.sleep(every)


def by_pid(status: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {w["pid"]: w for w in status["workers"]}


def wait_all(client: Client, futures: list[TaskFuture], timeout: float) -> None:
    client.wait(futures, timeout)
    pending = [f.task_id for f in futures if not f.done()]
    assert not pending, f"{len(pending)} of {len(futures)} tasks unanswered after {timeout}s"


def settled(client: Client, pids: list[int], for_s: float = 1.0) -> bool:
    """Every worker in ``pids`` registered, ready, and so for ``for_s`` seconds. A second hello
    re-registers a worker and resets its ``uptime_s``: a worker past ``for_s`` has stopped
    saying hello (see test_rejoining_worker_registers_once for why it says it more than once)."""
    workers = by_pid(client.status())
    return all(
        p in workers and workers[p]["state"] == "ready" and workers[p]["uptime_s"] >= for_s
        for p in pids
    )


def alive_workers(stack: LocalStack) -> list[Any]:
    return [p for p in stack.workers if p.poll() is None]


def check_spin_results(results: list[Result], inputs: list[int], ids: list[str]) -> None:
    assert [r.task_id for r in results] == ids
    assert [r.output for r in results] == inputs
