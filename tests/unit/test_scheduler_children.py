"""Child requests (we.spawn, we.generate…): queued like tasks, answered to the
worker, the parent's credit lent while it waits, depth capped."""

from __future__ import annotations

from scheduler_harness import W1, W2, Harness, dispatches, ids, of_type, only

from orchestrator.scheduler import BACK, FRONT
from wasm_engine import errors as E


def test_a_one_credit_worker_runs_the_child_its_only_task_waits_for(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.take()
    h.submit("plan")
    (parent,) = dispatches(h.take())
    ask = h.child(parent, "plan/0")
    (child,) = dispatches(h.take())  # the parent's credit is lent: the child fits
    assert (child.peer, child.msg.task_id) == (W1, "plan/0")
    assert child.header.trace == parent.header.trace
    assert h.worker(W1).lent == 1 and h.worker(W1).free == 0  # 1 credit - 2 held + 1 lent

    h.result(child, "child out")
    answer = only(h.take(), "task.result")  # to the worker, naming the child's submit
    assert (answer.sock, answer.peer, answer.header.parent) == (BACK, W1, ask.id)
    assert answer.msg.output == "child out"
    assert h.worker(W1).lent == 0

    h.submit("next")  # the credit is back with its owner: nothing more fits
    assert dispatches(h.take()) == []
    h.result(parent, "plan out")
    outs = h.take()
    assert only(outs, "task.result").sock == FRONT
    assert ids(dispatches(outs)) == ["next"]


def test_queued_event_names_the_parent_task(h: Harness) -> None:
    h.hello(W1, credits=2)
    h.take()
    h.submit("plan", trace="tr-9")
    (parent,) = dispatches(h.take())
    h.child(parent, "plan/0")
    queued = [e for e in h.events("task.queued") if e["task_id"] == "plan/0"]
    assert queued[0]["parent_task"] == "plan" and queued[0]["trace"] == "tr-9"


def test_credit_is_lent_once_per_waiting_task_and_returned_when_it_ends(h: Harness) -> None:
    h.hello(W1, credits=2)
    h.take()
    h.submit("plan")
    (parent,) = dispatches(h.take())
    for n in range(3):
        h.child(parent, f"plan/{n}")
    kids = dispatches(h.take())
    assert ids(kids) == ["plan/0", "plan/1"]  # 2 credits + 1 lent - the parent
    assert h.worker(W1).lent == 1
    h.result(parent, "gave up early")  # ends with children still out: the loan ends too
    h.take()
    assert h.worker(W1).lent == 0
    h.result(kids[0], "late but fine")  # answered to the worker, which has forgotten it
    outs = h.take()
    assert only(outs, "task.result").sock == BACK
    assert ids(dispatches(outs)) == ["plan/2"]


def test_a_child_asked_again_gets_its_stored_result(h: Harness) -> None:
    """A parent run again (its worker died) asks for the same child ids: the
    children that finished are answered from their results, not run twice."""
    h.hello(W1, credits=2)
    h.hello(W2, credits=2)
    h.take()
    h.submit("plan")
    (parent,) = dispatches(h.take())
    h.child(parent, "plan/0")
    (child,) = dispatches(h.take())
    h.result(child, 42)
    h.take()
    h.sched.unreachable(parent.peer, h.now)  # the parent's worker is gone
    (again,) = dispatches(h.take())
    assert again.msg.task_id == "plan" and again.msg.attempt == 2
    ask = h.child(again, "plan/0")
    answer = only(h.take(), "task.result")
    assert (answer.peer, answer.header.parent, answer.msg.output) == (again.peer, ask.id, 42)


def test_child_requests_are_refused_past_max_depth_and_without_a_running_parent() -> None:
    h = Harness(max_depth=2)
    h.put_agent()
    h.hello(W1, credits=8)
    h.take()
    h.submit("a")
    (top,) = dispatches(h.take())
    h.child(top, "a/0")
    (d1,) = dispatches(h.take())
    h.child(d1, "a/0/0")
    (d2,) = dispatches(h.take())
    h.child(d2, "a/0/0/0")  # depth 3
    err = only(h.take(), "error")
    assert (err.sock, err.msg.code, err.msg.detail) == (
        BACK,
        E.TASK_TOO_DEEP,
        {"depth": 3, "limit": 2},
    )

    h.result(d2, "done")
    h.take()
    h.child(d2, "late/0")  # its dispatch already answered
    err = only(h.take(), "error")
    assert err.msg.code == E.TASK_NOT_FOUND


def test_a_generate_child_for_a_model_nobody_serves_is_refused_at_once(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.take()
    h.submit("plan")
    (parent,) = dispatches(h.take())
    h.child(parent, "plan/0", kind="generate", model="smollm2")
    err = only(h.take(), "error")
    assert (err.sock, err.msg.code) == (BACK, E.INFER_MODEL_MISSING)
    assert h.worker(W1).lent == 0  # nothing to wait for: nothing lent
    assert of_type(h.take(), "task.dispatch") == []
