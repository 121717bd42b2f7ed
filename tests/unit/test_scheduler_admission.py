"""What the scheduler refuses at submit (full queue, unknown agent, past deadline) and how it
handles a task id submitted twice (idempotency, conflicts).

Driven through :class:`scheduler_harness.Harness` (a fake clock, a decoded outbox).
"""

from __future__ import annotations

from collections import Counter

from scheduler_harness import (
    CLIENT_A,
    CLIENT_B,
    CLIENT_C,
    W1,
    Harness,
    dispatches,
    ids,
    of_type,
    only,
)

from orchestrator.scheduler import FRONT
from wasm_engine import errors as E

# ---------------------------------------------------------------------- rejections


def test_a_full_queue_answers_retryable_overloaded_and_loses_nothing() -> None:
    h = Harness(queue_limit=3)
    h.put_agent()
    for i in range(3):
        h.submit(f"t{i}")
    sub = h.submit("t3", trace="tr-3")
    err = only(h.take(), "error")
    assert (err.sock, err.peer, err.header.parent, err.header.trace) == (
        FRONT,
        CLIENT_A,
        sub.id,
        "tr-3",
    )
    assert err.msg.code == E.TASK_OVERLOADED
    assert err.msg.retryable is True
    assert err.msg.detail == {"queue": "wasm", "depth": 3}
    assert h.sched.queues["wasm"].depth == 3  # unchanged
    assert "t3" not in h.sched.tasks
    assert h.sched.counters["overloaded"] == 1
    assert h.sched.counters["error:task.overloaded"] == 1
    assert [e["task_id"] for e in h.events("task.rejected")] == ["t3"]

    h.hello(W1, credits=1)  # one leaves the queue: t3 fits now
    pending = dispatches(h.take())
    h.submit("t3")
    assert h.sched.queues["wasm"].depth == 3
    done = []
    while pending:
        d = pending.pop()
        done.append(d.msg.task_id)
        h.result(d)
        pending = dispatches(h.take())
    assert done == ["t0", "t1", "t2", "t3"]
    assert h.answers() == Counter({"t0": 1, "t1": 1, "t2": 1, "t3": 2})  # t3: reject + result


def test_an_unknown_agent_is_agent_missing() -> None:
    h = Harness()
    h.hello(W1)
    h.take()
    sub = h.submit("t1")
    err = only(h.take(), "error")
    assert (err.peer, err.header.parent, err.msg.code, err.msg.retryable) == (
        CLIENT_A,
        sub.id,
        E.WASM_AGENT_MISSING,
        False,
    )
    assert "t1" not in h.sched.tasks
    assert h.sched.queues == {}

    h.put_agent()  # the SDK re-puts and resubmits
    h.submit("t1")
    assert ids(dispatches(h.take())) == ["t1"]


def test_a_deadline_already_passed_at_submit_is_refused(h: Harness) -> None:
    h.hello(W1)
    h.take()
    sub = h.submit("t1", deadline=h.now)
    err = only(h.take(), "error")
    assert (err.header.parent, err.msg.code, err.msg.retryable) == (sub.id, E.TASK_DEADLINE, False)
    assert "t1" not in h.sched.tasks

    h.submit("t1", deadline=h.now + 1)  # one ns to spare is enough
    (d,) = dispatches(h.take())
    assert d.header.deadline == h.now + 1


# ---------------------------------------------------------------------- idempotency


def test_a_duplicate_while_running_gets_the_same_result_and_no_second_dispatch(
    h: Harness,
) -> None:
    h.hello(W1)
    h.take()
    sub_a = h.submit("t1", ack=True, client=CLIENT_A)
    out = h.take()
    assert [o.type for o in out] == ["task.ack", "task.dispatch"]
    (d,) = dispatches(out)

    sub_b = h.submit_body(h.bodies["t1"], client=CLIENT_B)
    ack = only(h.take(), "task.ack")  # the only thing sent: no second dispatch
    assert (ack.peer, ack.header.parent, ack.msg.state) == (CLIENT_B, sub_b.id, "duplicate")
    assert h.sched.counters["duplicates"] == 1

    body = h.result(d, "the answer")
    results = h.take()
    assert [(r.type, r.peer, r.header.parent) for r in results] == [
        ("task.result", CLIENT_A, sub_a.id),
        ("task.result", CLIENT_B, sub_b.id),
    ]
    assert all(r.body == body for r in results)
    assert len(dispatches(h.sent)) == 1


def test_a_duplicate_while_queued_is_dispatched_once(h: Harness) -> None:
    h.submit("t1", client=CLIENT_A)
    h.submit_body(h.bodies["t1"], client=CLIENT_B)
    h.hello(W1, credits=4)
    (d,) = dispatches(h.take())
    h.result(d)
    assert [r.peer for r in of_type(h.take(), "task.result")] == [CLIENT_A, CLIENT_B]
    assert h.answers() == Counter({"t1": 2})


def test_a_duplicate_after_finish_gets_the_stored_reply_at_once(h: Harness) -> None:
    h.hello(W1)
    h.submit("ok")
    h.submit("bad")
    d_ok, d_bad = dispatches(h.take())
    ok_body = h.result(d_ok, [1, 2, 3])
    bad_body = h.fail(d_bad, E.WASM_OUT_OF_FUEL)
    h.take()

    h.advance(10)
    sub = h.submit_body(h.bodies["ok"], client=CLIENT_C)
    (again,) = h.take()
    assert (again.type, again.peer, again.header.parent, again.body) == (
        "task.result",
        CLIENT_C,
        sub.id,
        ok_body,
    )
    h.submit_body(h.bodies["bad"], client=CLIENT_C)
    (again_err,) = h.take()
    assert (again_err.type, again_err.body) == ("error", bad_body)
    assert len(dispatches(h.sent)) == 2
    assert h.sched.counters["duplicates"] == 2


def test_the_same_task_id_with_another_body_is_conflict(h: Harness) -> None:
    h.hello(W1)
    h.submit("t1", data=b"\x01")
    (d,) = dispatches(h.take())

    sub = h.submit("t1", data=b"\x02", client=CLIENT_B)  # while running
    err = only(h.take(), "error")
    assert (err.peer, err.header.parent, err.msg.code, err.msg.retryable) == (
        CLIENT_B,
        sub.id,
        E.TASK_CONFLICT,
        False,
    )
    h.result(d)
    (res,) = h.take()  # only the first submitter; the conflicting one is no waiter
    assert (res.type, res.peer) == ("task.result", CLIENT_A)

    h.submit("t1", priority=3)  # after it finished: also another body
    assert only(h.take(), "error").msg.code == E.TASK_CONFLICT
    assert h.sched.counters["error:task.conflict"] == 2
