"""A task's and a worker's life past dispatch: deadlines, cancel, heartbeats and how long
finished tasks are remembered.

Driven through :class:`scheduler_harness.Harness` (a fake clock, a decoded outbox).
"""

from __future__ import annotations

import gc
from collections import Counter

from scheduler_harness import (
    CLIENT_A,
    CLIENT_B,
    T0,
    W1,
    Harness,
    S,
    dispatches,
    ids,
    of_type,
    only,
)

from orchestrator.scheduler import BACK, FRONT
from wasm_engine import errors as E
from wasm_engine import messages as M

# ---------------------------------------------------------------------- deadlines


def test_a_deadline_passing_while_queued_ends_the_task(h: Harness) -> None:
    sub = h.submit("t1", deadline=T0 + 2 * S)
    h.advance(1.999)
    h.tick()
    assert h.take() == []
    h.advance(0.001)
    h.tick()
    err = only(h.take(), "error")
    assert (err.sock, err.peer, err.header.parent) == (FRONT, CLIENT_A, sub.id)
    assert (err.msg.code, err.msg.retryable) == (E.TASK_DEADLINE, False)
    assert h.sched.queues["wasm"].depth == 0
    assert "t1" not in h.sched.tasks and "t1" in h.sched.retention  # finished

    h.hello(W1)
    assert [o.type for o in h.take()] == ["worker.welcome"]  # nothing to dispatch


def test_a_deadline_passing_while_running_cancels_it_on_the_worker(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.take()
    sub = h.submit("t1", deadline=T0 + 2 * S, trace="tr")
    h.submit("t2")
    (d1,) = dispatches(h.take())
    assert d1.header.deadline == T0 + 2 * S

    h.advance(2)
    h.heartbeat(W1)
    h.tick()
    out = h.take()
    cancel = only(out, "task.cancel")
    assert (cancel.sock, cancel.peer, cancel.header.parent) == (BACK, W1, d1.header.id)
    assert cancel.msg == M.TaskCancel("t1")
    err = only(out, "error")
    assert (err.sock, err.peer, err.header.parent, err.header.trace) == (
        FRONT,
        CLIENT_A,
        sub.id,
        "tr",
    )
    assert err.msg.code == E.TASK_DEADLINE
    assert dispatches(out) == []  # W1's credit stays held until it answers

    h.fail(d1, E.TASK_CANCELLED)  # the worker's answer to the cancel: a late result
    out = h.take()
    assert ids(dispatches(out)) == ["t2"]  # the credit is free again
    assert of_type(out, "error") == []
    assert h.sched.counters["late_results"] == 1
    assert h.answers() == Counter({"t1": 1})


# ---------------------------------------------------------------------- cancel


def test_cancel_a_queued_task(h: Harness) -> None:
    sub = h.submit("t1", client=CLIENT_A)
    h.cancel("t1", client=CLIENT_B)
    (err,) = h.take()  # delivered as the task's result, to the submitter
    assert (err.type, err.peer, err.header.parent) == ("error", CLIENT_A, sub.id)
    assert (err.msg.code, err.msg.retryable) == (E.TASK_CANCELLED, False)
    assert h.sched.queues["wasm"].depth == 0

    h.hello(W1)
    assert [o.type for o in h.take()] == ["worker.welcome"]


def test_cancel_a_running_task(h: Harness) -> None:
    h.hello(W1)
    h.take()
    sub = h.submit("t1")
    (d,) = dispatches(h.take())
    h.cancel("t1")
    out = h.take()
    assert [(o.type, o.sock, o.peer) for o in out] == [
        ("task.cancel", BACK, W1),
        ("error", FRONT, CLIENT_A),
    ]
    assert out[0].header.parent == d.header.id
    assert out[1].header.parent == sub.id
    assert out[1].msg.code == E.TASK_CANCELLED

    h.result(d)  # it had finished anyway: too late
    assert h.take() == []
    assert h.sched.counters["late_results"] == 1


def test_cancel_an_unknown_or_finished_task_is_not_found(h: Harness) -> None:
    cancel = h.cancel("nope", client=CLIENT_B)
    err = only(h.take(), "error")
    assert (err.peer, err.header.parent, err.msg.code) == (CLIENT_B, cancel.id, E.TASK_NOT_FOUND)

    h.hello(W1)
    h.submit("t1")
    (d,) = dispatches(h.take())
    h.result(d)
    h.take()
    cancel = h.cancel("t1", client=CLIENT_B)
    err = only(h.take(), "error")
    assert (err.peer, err.header.parent, err.msg.code) == (CLIENT_B, cancel.id, E.TASK_NOT_FOUND)


# ---------------------------------------------------------------------- heartbeats


def test_a_heartbeat_from_an_unknown_worker_is_worker_unknown(h: Harness) -> None:
    hb = h.heartbeat(W1)
    err = only(h.take(), "error")
    assert (err.sock, err.peer, err.header.parent) == (BACK, b"hb-w1", hb.id)
    assert (err.msg.code, err.msg.retryable) == (E.WORKER_UNKNOWN, False)
    assert h.sched.counters["error:worker.unknown"] == 1


def test_a_heartbeat_from_a_known_worker_is_echoed_and_keeps_it_alive(h: Harness) -> None:
    h.hello(W1, credits=4)
    h.submit("t1")
    h.submit("t2")
    h.take()
    h.advance(2.5)
    hb = h.heartbeat(W1)
    echo = only(h.take(), "worker.heartbeat")
    assert (echo.sock, echo.peer, echo.header.parent) == (BACK, b"hb-w1", hb.id)
    assert echo.msg == M.WorkerHeartbeat("w1", 2)
    h.advance(3)  # 5.5 s after hello, 3 s after the heartbeat
    h.tick()
    assert h.sched.workers.get(W1) is not None
    assert h.worker(W1).liveness.last_seen == T0 + 2_500_000_000


# ---------------------------------------------------------------------- retention


def test_finished_tasks_are_forgotten_after_result_ttl() -> None:
    h = Harness(result_ttl=10.0)
    h.put_agent()
    h.hello(W1)
    h.submit("t1")
    (d,) = dispatches(h.take())
    h.result(d)
    h.take()

    h.advance(10)
    h.heartbeat(W1)
    h.tick()
    h.take()  # the heartbeat echo
    assert "t1" in h.sched.retention  # exactly ttl: still answers duplicates
    h.submit_body(h.bodies["t1"])
    assert [o.type for o in h.take()] == ["task.result"]

    h.now += 1
    h.tick()
    assert "t1" not in h.sched.retention
    assert h.sched.snapshot(h.now)["orchestrator"]["tasks_known"] == 0
    h.submit("t1")  # forgotten: runs again
    (again,) = dispatches(h.take())
    assert again.msg.attempt == 1
    assert again.header.id != d.header.id


def test_a_gone_client_s_tasks_are_cancelled_on_their_workers(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.take()
    h.submit("stream")  # running
    h.submit("later")  # queued
    h.submit("other", client=CLIENT_B)
    (running,) = dispatches(h.take())
    h.sched.client_gone(CLIENT_A, h.now)
    outs = h.take()
    cancel = only(outs, "task.cancel")
    assert (cancel.sock, cancel.peer, cancel.header.parent) == (BACK, W1, running.header.id)
    assert h.sched.counters["cancelled_client_gone"] == 2
    assert dispatches(outs) == []  # the credit comes back with the worker's answer
    h.fail(running, E.TASK_CANCELLED)
    (nxt,) = dispatches(h.take())
    assert nxt.msg.task_id == "other"
    h.sched.client_gone(CLIENT_A, h.now)  # every failed send says so again: once is enough
    assert h.take() == []


def test_a_retained_task_is_invisible_to_the_garbage_collector() -> None:
    """Retention keeps up to 200k finished tasks: as tracked objects every full
    collection would walk them all (a tenth of the orchestrator's CPU at 10k
    tasks/s); as tuples of atomic values the collector untracks them."""
    h = Harness()
    h.put_agent()
    h.hello(W1)
    h.submit("t1")
    (d,) = dispatches(h.take())
    h.result(d)
    h.take()
    record = h.sched.retention.get("t1")
    assert record is not None and "t1" not in h.sched.tasks
    gc.collect()
    assert not gc.is_tracked(record)
