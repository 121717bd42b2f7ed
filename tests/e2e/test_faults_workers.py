"""Faults on a real stack's workers: killed (SIGKILL), frozen (SIGSTOP) and stopped (SIGTERM)
workers.

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
from collections import Counter
from collections.abc import Callable

import pytest
from fault_helpers import (
    FAST_HEARTBEATS,
    SPIN_FUEL,
    alive_workers,
    by_pid,
    check_spin_results,
    settled,
    until,
    wait_all,
    wasm,
)

from wasm_engine.client import Client
from wasm_engine.local import LocalStack

# ---------------------------------------------------------------------------- 1. kill -9


@pytest.mark.e2e
def test_sigkill_workers_mid_run_every_task_completes_once(
    make_stack: Callable[..., LocalStack],
) -> None:
    # max_attempts 6, not 3: a task requeued by one kill can be held by the next victim too,
    # and three dispatches lost to kills would rightly end it with task.worker_lost
    stack = make_stack(3, max_attempts=6, **FAST_HEARTBEATS)
    n = 500
    inputs = [20_000_000 + i for i in range(n)]  # ~20-40 ms each
    ids = [f"kill9-{i}" for i in range(n)]
    victims: list[int] = []
    with Client(stack.front, timeout=60) as client:
        spin = client.put_agent(wasm("spin"), name="spin")
        futures = [
            client.submit(spin, x, task_id=t, fuel=SPIN_FUEL)
            for x, t in zip(inputs, ids, strict=True)
        ]
        end = time.monotonic() + 90
        while not all(f.done() for f in futures):
            assert time.monotonic() < end, "500 tasks not done in 90 s"
            client.wait(futures, 0.1)
            done = sum(f.done() for f in futures)
            if len(victims) < 3 and done >= 100 * (len(victims) + 1):
                # the oldest live worker that holds tasks right now: a kill that lands mid-task
                holding = {pid for pid, w in by_pid(client.status()).items() if w["inflight"] > 0}
                victim = next((p for p in alive_workers(stack) if p.pid in holding), None)
                if victim is None:
                    continue  # between dispatches: try again on the next round
                stack.kill(victim, signal.SIGKILL)
                victims.append(victim.pid)
                stack.add_worker()
        results = [f.result(0) for f in futures]
        status = client.status()

    assert len(victims) == 3
    check_spin_results(results, inputs, ids)
    attempts = Counter(r.stats["attempts"] for r in results)
    assert sum(c for a, c in attempts.items() if a > 1) >= 1, attempts
    assert not {r.stats["worker"] for r in results} - {f"wasm-worker-{i}" for i in range(1, 7)}
    counters = status["counters"]
    assert counters["completed"] == n  # the orchestrator finished each task once
    assert "failed" not in counters, counters
    assert counters["workers_lost"] >= 3
    assert counters["requeued"] >= 1
    assert not set(victims) & set(by_pid(status))  # the dead are gone from status


# ---------------------------------------------------------------------------- 2. SIGSTOP


@pytest.mark.e2e
def test_frozen_worker_loses_its_tasks_and_rejoins_after_sigcont(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(2, **FAST_HEARTBEATS)
    frozen, survivor = stack.workers
    n = 12
    inputs = [150_000_000 + i for i in range(n)]  # ~150-250 ms each, 6 per worker
    ids = [f"stop-{i}" for i in range(n)]
    with Client(stack.front, timeout=60) as client:
        spin = client.put_agent(wasm("spin"), name="spin")
        futures = [
            client.submit(spin, x, task_id=t, fuel=SPIN_FUEL)
            for x, t in zip(inputs, ids, strict=True)
        ]
        until(
            "the worker to be frozen to hold tasks",
            lambda: by_pid(client.status()).get(frozen.pid, {}).get("inflight", 0) > 0,
        )
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            until(
                "the frozen worker to leave status",
                lambda: frozen.pid not in by_pid(client.status()),
            )
            wait_all(client, futures, 60)
            results = [f.result(0) for f in futures]
            check_spin_results(results, inputs, ids)
            requeued = [r for r in results if r.stats["attempts"] > 1]
            assert requeued, "the frozen worker's tasks were not run again elsewhere"
            assert all(r.stats["worker"] == "wasm-worker-2" for r in requeued)
            status = client.status()
            assert status["counters"]["completed"] == n
            assert status["counters"]["workers_lost"] >= 1
            assert list(by_pid(status)) == [survivor.pid]
        finally:
            os.kill(frozen.pid, signal.SIGCONT)

        back = until(
            "the thawed worker to register again",
            lambda: (w := by_pid(client.status()).get(frozen.pid)) and w["state"] == "ready" and w,
        )
        assert back["name"] == "wasm-worker-1"
        text = stack.log_text("wasm-worker-1")
        assert "saying hello again" in text or "reconnecting task channel" in text, text[-2000:]
        until("the thawed worker to settle", lambda: settled(client, [frozen.pid]))
        # thawed, it works again, and the stale work it held changes no answer
        more = client.run_many(spin, [1_000_000 + i for i in range(8)], fuel=SPIN_FUEL)
        assert [r.output for r in more] == [1_000_000 + i for i in range(8)]
        final = client.status()
        assert final["counters"]["completed"] == n + 8
        assert "failed" not in final["counters"]
        assert frozen.poll() is None and survivor.poll() is None


# ---------------------------------------------------------------------------- 5. SIGTERM


@pytest.mark.e2e
def test_sigterm_worker_finishes_running_task_and_hands_back_the_rest(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(1)
    leaving = stack.workers[0]
    n = 10
    inputs = [400_000_000 + i for i in range(n)]  # ~0.4-0.6 s each, one after another
    ids = [f"term-{i}" for i in range(n)]
    with Client(stack.front, timeout=60) as client:
        spin = client.put_agent(wasm("spin"), name="spin")
        futures = [
            client.submit(spin, x, task_id=t, fuel=SPIN_FUEL)
            for x, t in zip(inputs, ids, strict=True)
        ]
        until(
            "all tasks to sit on the first worker",
            lambda: futures[0].done() or by_pid(client.status())[leaving.pid]["inflight"] == n,
        )
        # the worker that takes over joins before the stop, and is past its start-up
        # registration (see test_rejoining_worker_registers_once) when the stop lands
        taker = stack.add_worker()
        until("the second worker to be settled", lambda: settled(client, [taker.pid]))
        lost_before = client.status()["counters"].get("workers_lost", 0)
        done_before = sum(f.done() for f in futures)
        assert done_before <= n - 3, "the first worker ran too far ahead of the test"
        os.kill(leaving.pid, signal.SIGTERM)  # it is mid-task: it has been busy for > 1 s
        assert leaving.wait(timeout=60) == 0, stack.log_text("wasm-worker-1")[-2000:]

        wait_all(client, futures, 60)
        results = [f.result(0) for f in futures]
        status = client.status()

    check_spin_results(results, inputs, ids)
    workers = [r.stats["worker"] for r in results]
    ran = workers.count("wasm-worker-1")
    # the one running at SIGTERM finished there (its result came after the stop); the ones it
    # had not started ran on the other worker, in order
    assert ran > done_before, (done_before, workers)
    assert workers == ["wasm-worker-1"] * ran + ["wasm-worker-2"] * (n - ran), workers
    # handed back, not lost: no attempt was charged for them
    assert all(r.stats["attempts"] == 1 for r in results), [r.stats for r in results]
    counters = status["counters"]
    assert counters["completed"] == n
    assert counters["requeued"] == n - ran
    assert counters.get("workers_lost", 0) == lost_before
    assert list(by_pid(status)) == [taker.pid]
    text = stack.log_text("wasm-worker-1")
    assert f"handing back {n - ran} tasks" in text
    assert f"stopped after {ran} tasks" in text
