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

import os
import signal
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
from wasm_engine.client import AgentRef, Client, Result, TaskFuture
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
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            for name in ["orchestrator", *(f"wasm-worker-{i}" for i in range(1, 10))]:
                text = stack.log_text(name)
                if text:
                    print(f"----- {name}.log (tail)\n{text[-4000:]}")
            for proc in stack.workers:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)  # a frozen worker cannot obey SIGTERM
            stack.stop()


def check_spin_results(results: list[Result], inputs: list[int], ids: list[str]) -> None:
    assert [r.task_id for r in results] == ids
    assert [r.output for r in results] == inputs


# ---------------------------------------------------------------------------- 1. kill -9


@pytest.mark.e2e
def test_sigkill_workers_mid_run_every_task_completes_once(
    make_stack: Callable[..., LocalStack],
) -> None:
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
        # thawed, it works again, and the stale work it held changes no answer
        more = client.run_many(spin, [1_000_000 + i for i in range(8)], fuel=SPIN_FUEL)
        assert [r.output for r in more] == [1_000_000 + i for i in range(8)]
        final = client.status()
        assert final["counters"]["completed"] == n + 8
        assert "failed" not in final["counters"]
        assert frozen.poll() is None and survivor.poll() is None


# ---------------------------------------------------------------------------- 3. orchestrator restart


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
        until("the slow task to run", lambda: observer.status()["workers"][0]["inflight"] == 1)
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
    n = 8
    # a short first task, then long ones: once the first result is in, the worker is in the
    # second task (for ~0.4 s) and holds the other six, not started
    inputs = [50_000_000] + [400_000_000 + i for i in range(1, n)]
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
        futures[0].result(30)
        assert not futures[1].done()
        os.kill(leaving.pid, signal.SIGTERM)
        stack.add_worker()  # the handed-back tasks wait in the queue until it registers
        assert leaving.wait(timeout=60) == 0, stack.log_text("wasm-worker-1")[-2000:]

        wait_all(client, futures, 60)
        results = [f.result(0) for f in futures]
        status = client.status()

    check_spin_results(results, inputs, ids)
    workers = [r.stats["worker"] for r in results]
    # the one running at SIGTERM finished there; the six it had not started ran on the new one
    assert workers == ["wasm-worker-1"] * 2 + ["wasm-worker-2"] * (n - 2), workers
    # handed back, not lost: no attempt was charged for them
    assert all(r.stats["attempts"] == 1 for r in results), [r.stats for r in results]
    counters = status["counters"]
    assert counters["completed"] == n
    assert counters["requeued"] == n - 2
    assert "workers_lost" not in counters
    assert list(by_pid(status)) == [stack.workers[1].pid]
    text = stack.log_text("wasm-worker-1")
    assert f"handing back {n - 2} tasks" in text
    assert "stopped after 2 tasks" in text


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
    assert counters["bad_messages"] == 12
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
            first.run(AgentRef(spin_a.digest), 400_000_000, task_id="dup-1", fuel=1)  # other limits
        assert conflict.value.code == E.TASK_CONFLICT

        status = first.status()
        counters = status["counters"]
        assert counters["submitted"] == 5
        assert counters["duplicates"] == 4
        assert counters["completed"] == 1
        assert counters["error:" + E.TASK_CONFLICT] == 2
        assert sum(w["completed"] for w in status["workers"]) == 1
