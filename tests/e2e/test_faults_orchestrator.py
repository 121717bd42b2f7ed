"""Faults around the orchestrator on a real stack: a killed orchestrator, a client that vanishes,
and regressions of workers re-registering (a rejoining worker, a long outage), bugs these
tests found and that are fixed.

Every test runs a :class:`LocalStack` (a real orchestrator and real wasm-worker processes on
``ipc://`` endpoints in a private folder) and talks to it through the real SDK or a raw ZeroMQ
socket. Tasks that must stay in flight while a fault lands run ``agents/wat/spin.wat``: its input
is a msgpack uint N, it loops N times (about 1 ns each on a 2-core dev box) and returns N, so
each task's output names it and its run time is set by its input.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from fault_helpers import (
    FAST_HEARTBEATS,
    SPIN_FUEL,
    by_pid,
    settled,
    until,
    wait_all,
    wasm,
)

from wasm_engine import errors as E
from wasm_engine.client import Client
from wasm_engine.errors import WasmEngineError
from wasm_engine.local import LocalStack

# ------------------------------------------------------------------------- 3. orchestrator restart


@pytest.mark.e2e
def test_orchestrator_restart_workers_reconnect_and_sdk_reputs_agent(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(2, **FAST_HEARTBEATS)
    worker_pids = {p.pid for p in stack.workers}
    with Client(stack.front, timeout=30) as client:
        echo = client.put_agent(wasm("echo"), name="echo")
        assert client.run(echo, {"before": 1}).output == {"before": 1}
        first = client.status()["orchestrator"]["started_ns"]

        assert stack.orchestrator is not None
        stack.kill(stack.orchestrator, signal.SIGKILL)
        stack.start_orchestrator()
        status = stack.wait_ready(2, timeout=60)
        # let the re-registration settle: a worker says hello more than once after a restart
        # (test_rejoining_worker_registers_once) and each extra hello costs its tasks an attempt
        until("the workers to settle", lambda: settled(client, sorted(worker_pids)))
        assert status["orchestrator"]["started_ns"] != first
        assert set(by_pid(status)) == worker_pids  # the same processes, reconnected
        assert status["orchestrator"]["agents"] == 0  # the new one knows no module

        # the same Client, same AgentRef: the orchestrator answers wasm.agent_missing and the
        # SDK puts the module again and resubmits, invisibly
        assert client.run(echo, {"after": 2}).output == {"after": 2}
        results = client.run_many(echo, list(range(20)))
        assert [r.output for r in results] == list(range(20))
        counters = client.status()["counters"]
        assert counters["error:" + E.WASM_AGENT_MISSING] == 1
        assert counters["completed"] == 21

    with Client(stack.front, timeout=30) as fresh:  # and a new client, too
        assert fresh.run(fresh.put_agent(wasm("echo")), "new").output == "new"
    assert all(p.poll() is None for p in stack.workers)
    text = stack.log_text("wasm-worker-1")
    assert "saying hello again" in text or "reconnecting task channel" in text


# ---------------------------------------------------------------------------- 4. client gone


@pytest.mark.e2e
def test_client_closed_mid_task_is_counted_and_orchestrator_keeps_serving(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(1)
    with Client(stack.front, timeout=30) as observer:
        gone = Client(stack.front, timeout=30)
        spin = gone.put_agent(wasm("spin"), name="spin")
        gone.submit(spin, 600_000_000, task_id="orphan", fuel=SPIN_FUEL)  # ~0.6 s
        until("the slow task to be dispatched", lambda: observer.status()["workers"][0]["inflight"])
        gone.close()

        echo = observer.put_agent(wasm("echo"))
        assert observer.run(echo, [1, 2, 3]).output == [1, 2, 3]
        counters = until(
            "the undeliverable result to be counted",
            lambda: (c := observer.status()["counters"]).get("clients_dropped", 0) >= 1 and c,
        )
        assert counters["completed"] == 2  # the orphan ran to the end all the same
        # the stored result still answers a duplicate of the orphan's submit
        assert (
            observer.run(spin, 600_000_000, task_id="orphan", fuel=SPIN_FUEL).output == 600_000_000
        )
        assert observer.status()["counters"]["completed"] == 2


# ---------------------------------------------------------------------------- 8. regressions


@pytest.mark.e2e
def test_rejoining_worker_registers_once(make_stack: Callable[..., LocalStack]) -> None:
    stack = make_stack(1, **FAST_HEARTBEATS)
    worker = stack.workers[0]
    with Client(stack.front, timeout=60) as client:
        spin = client.put_agent(wasm("spin"), name="spin")
        # frozen in the middle of ~1.5 s of work: thawed, it runs that stale work first, and
        # its heartbeats meanwhile get worker.unknown answers. The short first task tells when
        # the worker is busy: once its result is in, the worker is in the second one.
        inputs = [10_000_000] + [300_000_000 + i for i in range(5)]
        held = [client.submit(spin, x, fuel=SPIN_FUEL) for x in inputs]
        held[0].result(30)
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            until("the frozen worker to be dropped", lambda: not client.status()["workers"])
            queued = [client.submit(spin, 1_000_000 + i, fuel=SPIN_FUEL) for i in range(20)]
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        wait_all(client, held + queued, 60)
        outcomes: list[Any] = []
        for fut in held + queued:
            try:
                outcomes.append(fut.result(0).stats["attempts"])
            except WasmEngineError as err:
                outcomes.append(err.code)
        counters = client.status()["counters"]

    # every task succeeds; the ones queued while no worker was there run at their first
    # attempt; and one freeze is one lost worker
    assert all(isinstance(o, int) for o in outcomes), outcomes
    assert outcomes[len(held) :] == [1] * len(queued), outcomes
    assert counters["workers_lost"] == 1, counters


@pytest.mark.e2e
def test_worker_stays_registered_after_a_long_orchestrator_outage(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(1, **FAST_HEARTBEATS)
    worker = stack.workers[0]
    assert stack.orchestrator is not None
    stack.kill(stack.orchestrator, signal.SIGKILL)
    # down long enough that the worker's reconnect backoff (0.2, 0.4, 0.8, 1.6, 3.2 s) is far
    # past the orchestrator's liveness window (0.2 s x 3)
    until(
        "the worker to back off for 3.2 s",
        lambda: "next check +3.2s" in stack.log_text("wasm-worker-1"),
        timeout=60,
    )
    stack.start_orchestrator()
    stack.wait_ready(1, timeout=60)
    absent = 0
    with Client(stack.front, timeout=30) as client:
        end = time.monotonic() + 4.0  # past the 3.2 s backoff
        while time.monotonic() < end:
            absent += worker.pid not in by_pid(client.status())
            time.sleep(0.05)
        counters = client.status()["counters"]
        assert client.run(client.put_agent(wasm("echo")), "up").output == "up"
    assert absent == 0, f"the worker was missing from {absent} status polls; {counters}"
