"""Workers that go away: liveness expiry, requeues and attempt limits after a loss, re-hellos,
unreachable workers, a worker's bye, and a reply naming another worker's dispatch.

Driven through :class:`scheduler_harness.Harness` (a fake clock, a decoded outbox).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from scheduler_harness import (
    CLIENT_A,
    MODULE,
    W1,
    W2,
    W3,
    WIRE,
    Harness,
    Out,
    dispatches,
    ids,
    of_type,
    only,
)

from orchestrator.scheduler import FRONT
from orchestrator.tasks import State
from wasm_engine import errors as E

# ---------------------------------------------------------------------- worker loss


def test_liveness_expires_only_after_interval_times_liveness_of_silence(h: Harness) -> None:
    h.hello(W1)  # silent from now on
    h.hello(W2)  # heartbeats every second
    h.take()
    alive = []
    for _ in range(5):
        h.advance(1)
        h.heartbeat(W2)
        h.tick()
        alive.append(h.sched.workers.get(W1) is not None)
    assert alive == [True, True, True, False, False]  # 3 s is not > 3 s; 4 s is
    assert h.sched.workers.get(W2) is not None

    h.hello(W3)
    h.advance(3)
    h.heartbeat(W2)
    h.tick()
    assert h.sched.workers.get(W3) is not None  # exactly interval x liveness: alive
    h.now += 1
    h.heartbeat(W2)
    h.tick()
    assert h.sched.workers.get(W3) is None
    assert [e["worker"] for e in h.events("worker.lost")] == ["w1", "w3"]
    assert all(e["why"] == "heartbeat" for e in h.events("worker.lost"))
    assert h.sched.counters["workers_lost"] == 2


def test_a_lost_worker_s_tasks_go_back_to_the_front_of_their_queue(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.take()
    h.submit("t1")
    h.submit("t2")
    (d1,) = dispatches(h.take())
    assert d1.msg.task_id == "t1"
    h.submit("t3")

    h.advance(3.5)
    h.tick()
    assert h.sched.workers.get(W1) is None
    assert h.take() == []  # nothing to a dead worker, nothing to the client yet
    assert h.sched.queues["wasm"].depth == 3
    assert h.sched.tasks["t1"].state is State.QUEUED
    assert h.sched.counters["requeued"] == 1
    lost = h.events("worker.lost")
    assert [(e["worker"], e["inflight"]) for e in lost] == [("w1", 1)]
    assert [(e["task_id"], e["attempts"]) for e in h.events("task.requeued")] == [("t1", 1)]

    h.hello(W2, credits=1)
    order = []
    pending = dispatches(h.take())
    assert pending[0].msg.attempt == 2
    assert pending[0].blobs[1:] == [MODULE, WIRE]  # a new worker gets the module again
    while pending:
        d = pending.pop()
        order.append(d.msg.task_id)
        h.result(d)
        pending = dispatches(h.take())
    assert order == ["t1", "t2", "t3"]


def test_a_lost_task_keeps_its_priority_when_requeued(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.take()
    h.submit("high", priority=9)
    h.submit("low", priority=-9)
    h.submit("mid")
    h.advance(4)
    h.tick()
    h.hello(W2, credits=1)
    order = []
    pending = dispatches(h.take())
    while pending:
        d = pending.pop()
        order.append(d.msg.task_id)
        h.result(d)
        pending = dispatches(h.take())
    assert order == ["high", "mid", "low"]


def test_the_third_loss_ends_the_task_with_worker_lost(h: Harness) -> None:
    sub = h.submit("t1")
    for attempt, peer in enumerate((W1, W2, W3), start=1):
        h.hello(peer, credits=1)
        (d,) = dispatches(h.take())
        assert (d.peer, d.msg.attempt) == (peer, attempt)
        h.advance(4)
        h.tick()
        if attempt < 3:
            assert h.take() == []
            assert h.sched.tasks["t1"].state is State.QUEUED
    out = h.take()
    assert [(o.type, o.sock) for o in out] == [("error", FRONT)]  # no cancel to a dead worker
    err = out[0]
    assert (err.peer, err.header.parent) == (CLIENT_A, sub.id)
    assert err.msg.code == E.TASK_WORKER_LOST
    assert err.msg.retryable is True
    assert err.msg.detail == {"attempts": 3}
    assert "t1" not in h.sched.tasks and "t1" in h.sched.retention  # finished
    assert h.sched.counters["workers_lost"] == 3
    assert h.sched.counters["requeued"] == 2
    assert h.sched.counters["failed"] == 1
    assert h.sched.queues["wasm"].depth == 0


def test_a_re_hello_is_a_loss_and_a_late_result_is_counted_not_delivered(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.take()
    sub = h.submit("t1")
    (d1,) = dispatches(h.take())
    h.advance(4)
    h.tick()  # lost: t1 back in the queue

    h.hello(W1, credits=1)  # the same worker, told worker.unknown, says hello again
    out = h.take()
    assert [o.type for o in out] == ["worker.welcome", "task.dispatch"]
    d2 = out[1]
    assert d2.header.id != d1.header.id
    assert (d2.msg.attempt, d2.blobs[1:]) == (2, [MODULE, WIRE])

    h.result(d1, "stale")  # the first run finished after all
    assert h.take() == []
    assert h.sched.counters["late_results"] == 1
    assert [e["dispatch"] for e in h.events("task.late_result")] == [d1.header.id]

    h.result(d2, "fresh")
    (res,) = h.take()
    assert (res.type, res.header.parent, res.msg.output) == ("task.result", sub.id, "fresh")

    # a hello from a registered worker requeues what it held (the worker dropped it
    # when it said hello) without charging an attempt: the worker did not fail
    h.submit("t2")
    assert ids(dispatches(h.take())) == ["t2"]
    h.hello(W1, credits=1)
    (d4,) = dispatches(h.take())
    assert (d4.msg.task_id, d4.msg.attempt) == ("t2", 1)
    assert h.sched.counters["workers_lost"] == 1
    assert h.sched.counters["workers_rejoined"] == 1
    assert [e["why"] for e in h.events("worker.lost")] == ["heartbeat", "re-hello"]


def test_unreachable_worker_is_lost(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.hello(W2, credits=1)
    h.take()
    h.submit("t1")
    (d,) = dispatches(h.take())
    h.sched.unreachable(d.peer, h.now)
    assert h.sched.workers.get(d.peer) is None
    assert [e["why"] for e in h.events("worker.lost")] == ["unreachable"]
    h.tick()  # the requeued task goes out on the next pump
    (again,) = dispatches(h.take())
    assert again.peer != d.peer
    assert (again.msg.task_id, again.msg.attempt) == ("t1", 2)
    h.sched.unreachable(b"nobody", h.now)  # unknown peer: nothing happens
    assert h.sched.counters["workers_lost"] == 1


def test_500_tasks_with_3_worker_losses_are_each_answered_exactly_once() -> None:
    h = Harness(queue_limit=1000)
    h.put_agent()
    credits = 8
    live = [W1, W2, W3]
    for peer in live:
        h.hello(peer, credits=credits)
    tasks = [f"t{i:03d}" for i in range(500)]
    for tid in tasks:
        h.submit(tid)

    pending: dict[bytes, list[Out]] = defaultdict(list)
    late_sent = 0
    losses = 0
    replacement = 0
    for round_ in range(1, 2000):
        for o in dispatches(h.take()):
            pending[o.peer].append(o)
            assert o.msg.attempt <= 3
        for peer in live:
            assert len(h.worker(peer).inflight) <= credits
        if len(h.answers()) == len(tasks):
            break
        if round_ in (4, 9, 17):  # a worker falls silent with 8 tasks in hand
            victim = live.pop(0)
            stale = pending.pop(victim)
            assert len(stale) == credits
            h.advance(4)
            for peer in live:
                h.heartbeat(peer)
            h.tick()
            assert h.sched.workers.get(victim) is None
            losses += 1
            # it comes back on the same routing id, then its stale results arrive
            h.hello(victim, credits=credits)
            for d in stale:
                h.result(d, "stale")
                late_sent += 1
            live.append(victim)
            replacement += 1
            continue
        for peer in live:  # each live worker finishes up to 3 tasks
            for _ in range(3):
                if pending[peer]:
                    h.result(pending[peer].pop(0), "fresh")
        h.advance(0.1)
    answers = h.answers()
    assert set(answers) == set(tasks)
    assert set(answers.values()) == {1}
    assert losses == 3
    assert h.sched.counters["workers_lost"] == 3
    assert h.sched.counters["late_results"] == late_sent == 24
    assert h.sched.counters["requeued"] == 24
    assert h.sched.counters["completed"] + h.sched.counters["failed"] == 500
    assert all(o.msg.output == "fresh" for o in of_type(h.sent, "task.result"))
    assert h.sched.queues["wasm"].depth == 0
    assert all(not w.inflight for w in h.sched.workers)


# ---------------------------------------------------------------------- bye


def test_bye_requeues_returned_tasks_without_counting_an_attempt(h: Harness) -> None:
    h.hello(W1, credits=3)
    h.take()
    for tid in ("t1", "t2", "t3"):
        h.submit(tid)
    held = dispatches(h.take())
    assert ids(held) == ["t1", "t2", "t3"]
    h.result(held[2])
    h.take()
    h.bye(W1, returned=["t1"])  # t1 never started; t2 was running
    assert h.take() == []
    assert h.sched.workers.get(W1) is None
    assert [e["worker"] for e in h.events("worker.left")] == ["w1"]
    assert h.sched.counters["requeued"] == 2
    assert h.sched.counters["workers_lost"] == 0

    h.hello(W2, credits=2)
    again = dispatches(h.take())
    assert [(d.msg.task_id, d.msg.attempt) for d in again] == [("t1", 1), ("t2", 2)]


# ------------------------------------------------ regressions (bugs these tests found, fixed)


def test_a_reply_naming_another_worker_s_dispatch_does_not_orphan_the_task(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.hello(W2, credits=1)
    h.take()
    sub = h.submit("t1")
    (d1,) = dispatches(h.take())
    assert d1.peer == W1
    h.result(d1, "from the wrong worker", worker=h.worker(W2))  # e.g. a reconnected W1 as W2
    assert h.take() == []
    assert h.sched.counters["late_results"] == 1

    h.result(d1, "right")  # W1 answers its own dispatch
    res = only(h.take(), "task.result")
    assert (res.header.parent, res.msg.output) == (sub.id, "right")
    assert h.answers() == Counter({"t1": 1})
