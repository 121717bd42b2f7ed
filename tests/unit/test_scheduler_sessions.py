"""Stateful sessions in the scheduler: sticky routing, one call at a time,
session.lost when the worker goes, session.end after idling."""

from __future__ import annotations

from scheduler_harness import T0, W1, W2, Harness, dispatches, ids, of_type, only

from orchestrator.scheduler import BACK, FRONT
from wasm_engine import errors as E


def test_a_session_sticks_to_the_worker_of_its_first_call(h: Harness) -> None:
    h.hello(W1, credits=4)
    h.take()
    h.submit("c1", session="s")
    (first,) = dispatches(h.take())
    assert (first.peer, first.msg.session, first.msg.fresh) == (W1, "s", True)
    h.hello(W2, credits=8)  # more free credits: plain tasks would go there now
    h.take()
    h.result(first, 1)
    h.take()
    h.submit("c2", session="s")
    h.submit("plain")
    outs = dispatches(h.take())
    by_id = {d.msg.task_id: d for d in outs}
    assert (by_id["c2"].peer, by_id["c2"].msg.fresh) == (W1, False)
    assert by_id["plain"].peer == W2
    assert h.sched.snapshot(h.now)["orchestrator"]["sessions"] == 1


def test_calls_of_one_session_run_one_at_a_time_in_order(h: Harness) -> None:
    h.hello(W1, credits=4)
    h.take()
    for i in range(3):
        h.submit(f"c{i}", session="s")
    h.submit("other", session="t")  # another session is not held up
    outs = dispatches(h.take())
    assert sorted(ids(outs)) == ["c0", "other"]
    c0 = next(d for d in outs if d.msg.task_id == "c0")
    h.result(c0, 1)
    (c1,) = dispatches(h.take())
    assert (c1.msg.task_id, c1.msg.fresh) == ("c1", False)
    h.fail(c1, E.WASM_TRAP)  # a failed call frees the session too
    (c2,) = dispatches(h.take())
    assert c2.msg.task_id == "c2"


def test_a_lost_worker_ends_its_sessions_calls_with_session_lost_not_a_rerun(
    h: Harness,
) -> None:
    h.hello(W1, credits=4)
    h.hello(W2, credits=2)
    h.take()
    h.submit("c0", session="s")
    h.submit("c1", session="s")  # parked behind c0
    (c0,) = dispatches(h.take())
    h.submit("plain")
    h.take()
    h.sched.unreachable(c0.peer, h.now)
    outs = h.take()
    lost = [o for o in of_type(outs, "error") if o.sock == FRONT]
    assert sorted(h.submit_ids[o.header.parent] for o in lost) == ["c0", "c1"]
    assert {o.msg.code for o in lost} == {E.SESSION_LOST}
    assert h.sched.counters["sessions_lost"] == 1
    # the next call is told too, once; then the session starts again, fresh
    h.submit("told", session="s")
    told = only(h.take(), "error")
    assert (h.submit_ids[told.header.parent], told.msg.code) == ("told", E.SESSION_LOST)
    h.submit("c2", session="s")
    survivors = [w for w in (W1, W2) if h.sched.workers.get(w) is not None]
    (c2,) = [d for d in dispatches(h.take()) if d.msg.task_id == "c2"] or [None]
    assert c2 is not None and c2.msg.fresh and c2.peer in survivors


def test_an_idle_session_ends_and_its_worker_is_told(h: Harness) -> None:
    h.hello(W1, credits=2)
    h.take()
    h.submit("c0", session="s")
    (c0,) = dispatches(h.take())
    h.result(c0, 1)
    h.take()
    h.now = T0 + int((h.settings.session_idle - 1) * 1e9)
    h.heartbeat(W1)
    h.sched.tick(h.now)
    assert of_type(h.take(), "session.end") == []
    h.now = T0 + int((h.settings.session_idle + 1) * 1e9)
    h.heartbeat(W1)  # still alive
    h.sched.tick(h.now)
    end = only(h.take(), "session.end")
    assert (end.sock, end.peer, end.msg.session) == (BACK, W1, "s")
    h.submit("c1", session="s")
    (c1,) = dispatches(h.take())
    assert c1.msg.fresh
