"""Faults on a real stack: killed, frozen and stopped workers, a killed orchestrator, a client
that vanishes, hostile bytes on the sockets and duplicate task ids.

Every test runs a :class:`LocalStack` (a real orchestrator and real wasm-worker processes on
``ipc://`` endpoints in a private folder) and talks to it through the real SDK or a raw ZeroMQ
socket. Tasks that must stay in flight while a fault lands run ``agents/wat/spin.wat``: its input
is a msgpack uint N, it loops N times (about 1 ns each on a 2-core dev box) and returns N, so
each task's output names it and its run time is set by its input.

Waits poll a condition against a deadline (:func:`until`), with generous timeouts: the suite
must pass on a loaded 2-core machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import wasmtime
import zmq

from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.client import Client, Result, TaskFuture
from wasm_engine.codec import packb
from wasm_engine.envelope import decode
from wasm_engine.errors import WasmEngineError
from wasm_engine.local import LocalStack
from wasm_engine.protocol import MAGIC, make_header

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
            for name in ["orchestrator", *(f"wasm-worker-{i}" for i in range(1, 10))]:
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


def check_spin_results(results: list[Result], inputs: list[int], ids: list[str]) -> None:
    assert [r.task_id for r in results] == ids
    assert [r.output for r in results] == inputs


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


# ---------------------------------------------------------------------------- 6. hostile bytes


def exchange(sock: zmq.Socket[bytes], frames: list[bytes]) -> tuple[str, str | None]:
    """Send one raw message, read the one reply: (error code, reply parent)."""
    sock.send_multipart(frames)
    assert sock.poll(30_000, zmq.POLLIN), f"no reply to {[f[:20] for f in frames]}"
    env = decode(sock.recv_multipart())
    assert env.header.type == "error"
    msg = M.parse("error", env.body)
    assert isinstance(msg, M.Error)
    return msg.code, env.header.parent


@pytest.mark.e2e
def test_hostile_frames_get_typed_errors_and_orchestrator_keeps_running(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(1)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    front = ctx.socket(zmq.DEALER)
    back = ctx.socket(zmq.DEALER)
    try:
        for sock, endpoint in ((front, stack.front), (back, stack.settings.back)):
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
        status_body = M.StatusGet().pack()

        def header(type_: str = "status.get") -> tuple[str, bytes]:
            h = make_header(type_, sender="hostile")
            return h.id, h.pack()

        assert exchange(front, [b"garbage"]) == (E.PROTO_BAD_FRAME, None)
        assert exchange(front, [b"\x00" * 64, b"more", b"still more"]) == (E.PROTO_BAD_FRAME, None)
        hid, raw = header()
        assert exchange(front, [b"WE/2", raw, status_body]) == (E.PROTO_VERSION, hid)
        future = make_header("status.get", sender="hostile")
        future.v = (2, 0)  # the right magic, a header of another major
        assert exchange(front, [MAGIC, future.pack(), status_body]) == (E.PROTO_VERSION, None)
        hid, raw = header("no.such.type")
        assert exchange(front, [MAGIC, raw, status_body]) == (E.PROTO_UNKNOWN_TYPE, hid)
        assert exchange(front, [MAGIC, b"\xc1 not msgpack", status_body]) == (
            E.PROTO_BAD_MSGPACK,
            None,
        )
        assert exchange(front, [MAGIC, packb([1, 2]), status_body]) == (E.PROTO_BAD_MSGPACK, None)
        hid, raw = header("task.submit")
        oversize = b"\x00" * ((8 << 20) + 1)
        assert exchange(front, [MAGIC, raw, oversize]) == (E.PROTO_TOO_LARGE, hid)
        hid, raw = header("task.submit")
        assert exchange(front, [MAGIC, raw, packb({"task_id": 7})])[0] == E.PROTO_BAD_FIELD
        hid, raw = header("worker.hello")
        assert exchange(front, [MAGIC, raw, status_body]) == (E.PROTO_UNEXPECTED, hid)
        # the worker-facing socket answers in kind
        assert exchange(back, [b"garbage"]) == (E.PROTO_BAD_FRAME, None)
        hid, raw = header("worker.bye")
        assert exchange(back, [MAGIC, raw, M.WorkerBye().pack()]) == (E.WORKER_UNKNOWN, hid)
        hid, raw = header("task.submit")
        assert exchange(back, [MAGIC, raw, status_body]) == (E.PROTO_UNEXPECTED, hid)

        # the same raw socket still gets a real answer, and so does a real client
        hid, raw = header()
        front.send_multipart([MAGIC, raw, status_body])
        assert front.poll(30_000, zmq.POLLIN)
        env = decode(front.recv_multipart())
        assert (env.header.type, env.header.parent) == ("status", hid)
    finally:
        front.close(0)
        back.close(0)
        ctx.term()

    with Client(stack.front, timeout=30) as client:
        echo = client.put_agent(wasm("echo"))
        assert client.run(echo, {"ok": True}).output == {"ok": True}
        status = client.status()
    assert stack.orchestrator is not None and stack.orchestrator.poll() is None
    counters = status["counters"]
    assert counters["bad_messages"] == 13
    assert "handler_errors" not in counters
    assert counters["completed"] == 1
    assert [w["state"] for w in status["workers"]] == ["ready"]


# ---------------------------------------------------------------------------- 7. duplicates


@pytest.mark.e2e
def test_duplicate_task_id_runs_once_and_conflicting_body_is_refused(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(2)
    with Client(stack.front, timeout=30) as first, Client(stack.front, timeout=30) as second:
        spin_a = first.put_agent(wasm("spin"), name="spin")
        spin_b = second.put_agent(wasm("spin"), name="spin")
        assert spin_a == spin_b
        a = first.submit(spin_a, 400_000_000, task_id="dup-1", fuel=SPIN_FUEL)  # ~0.4 s
        until(
            "the first submit to run",
            lambda: sum(w["inflight"] for w in first.status()["workers"]) == 1,
        )
        b = second.submit(spin_b, 400_000_000, task_id="dup-1", fuel=SPIN_FUEL)  # while it runs
        ra, rb = a.result(30), b.result(30)
        assert ra.output == rb.output == 400_000_000
        assert ra.stats == rb.stats  # one run, one stored reply
        assert ra.stats["attempts"] == 1

        # after it finished: the stored reply again, nothing runs
        rc = second.run(spin_b, 400_000_000, task_id="dup-1", fuel=SPIN_FUEL)
        assert rc.stats == ra.stats
        with pytest.raises(WasmEngineError) as conflict:
            second.run(spin_b, 1, task_id="dup-1", fuel=SPIN_FUEL)
        assert conflict.value.code == E.TASK_CONFLICT
        with pytest.raises(WasmEngineError) as conflict:
            first.run(spin_a, 400_000_000, task_id="dup-1", fuel=1)  # same input, other limits
        assert conflict.value.code == E.TASK_CONFLICT

        status = first.status()
        counters = status["counters"]
        assert counters["submitted"] == 5
        assert counters["duplicates"] == 4
        assert counters["completed"] == 1
        assert counters["error:" + E.TASK_CONFLICT] == 2
        assert sum(w["completed"] for w in status["workers"]) == 1


# ---------------------------------------------------------------------------- 8. known bugs


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
