"""The scheduler's dispatch path: agent puts, submits, results, worker credits and priorities.

Driven through :class:`scheduler_harness.Harness` (a fake clock, a decoded outbox).
"""

from __future__ import annotations

from collections import Counter

from scheduler_harness import (
    CLIENT_A,
    DIGEST,
    DIGEST_REUSE,
    MODULE,
    W1,
    W2,
    WIRE,
    Harness,
    dispatches,
    ids,
    only,
)

from orchestrator.scheduler import BACK, FRONT
from orchestrator.tasks import State
from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.manifest import Manifest, agent_digest
from wasm_engine.protocol import make_header

# ---------------------------------------------------------------------- dispatch


def test_agent_put_is_answered_with_agent_stored() -> None:
    harness = Harness()
    stored = harness.put_agent()
    assert stored.sock == FRONT and stored.peer == CLIENT_A
    assert stored.msg == M.AgentStored(DIGEST, len(MODULE))
    assert harness.sched.snapshot(harness.now)["orchestrator"]["agents"] == 1


def test_the_same_module_with_the_other_reuse_setting_is_another_agent() -> None:
    harness = Harness()
    harness.put_agent(reuse=False)
    assert harness.put_agent(reuse=False).msg == M.AgentStored(DIGEST, len(MODULE))  # idempotent
    assert harness.put_agent(reuse=True).msg == M.AgentStored(DIGEST_REUSE, len(MODULE))
    assert harness.sched.agents.get(DIGEST).reuse is False
    assert harness.sched.agents.get(DIGEST_REUSE).reuse is True
    assert len(harness.sched.agents) == 2


def test_a_put_with_a_manifest_is_listed_in_status_and_a_bad_one_is_refused() -> None:
    harness = Harness()
    manifest = Manifest("stats", "1.2", limits={"fuel": 1000}, grants={"models": ["m"]})
    digest = agent_digest(MODULE, manifest)
    msg = M.parse("agent.put", M.AgentPut(digest, manifest=manifest.canonical()).pack())
    assert isinstance(msg, M.AgentPut)
    harness.sched.agent_put(CLIENT_A, make_header("agent.put"), msg, [MODULE])
    assert only(harness.take(), "agent.stored").msg == M.AgentStored(digest, len(MODULE))
    listed = harness.sched.snapshot(harness.now)["agents"]
    assert listed == [{"digest": digest, "name": "stats", "version": "1.2", "size": len(MODULE)}]
    # the manifest is part of the digest: the same digest with other limits does not match
    other = {**manifest.canonical(), "limits": {"fuel": 2000}}
    msg = M.parse("agent.put", M.AgentPut(digest, manifest=other).pack())
    assert isinstance(msg, M.AgentPut)
    harness.sched.agent_put(CLIENT_A, make_header("agent.put"), msg, [MODULE])
    assert only(harness.take(), "error").msg.code == E.PROTO_BAD_FIELD
    msg = M.parse("agent.put", M.AgentPut(digest, manifest={"limits": {"fuel": -1}}).pack())
    assert isinstance(msg, M.AgentPut)
    harness.sched.agent_put(CLIENT_A, make_header("agent.put"), msg, [MODULE])
    err = only(harness.take(), "error").msg
    assert (err.code, err.detail) == (E.AGENT_BAD_MANIFEST, {"field": "limits.fuel"})


def test_submit_dispatches_with_the_module_only_on_the_first_dispatch_to_each_worker(
    h: Harness,
) -> None:
    hello = h.hello(W1, credits=4)
    welcome = only(h.take(), "worker.welcome")
    assert (welcome.sock, welcome.peer, welcome.header.parent) == (BACK, W1, hello.id)
    assert welcome.msg == M.WorkerWelcome("w1", 1.0, 3)

    sub = h.submit("t1", trace="trace-1")
    (d1,) = h.take()
    assert (d1.type, d1.sock, d1.peer) == ("task.dispatch", BACK, W1)
    assert d1.header.parent == sub.id
    assert d1.header.trace == "trace-1"
    assert d1.msg == M.TaskDispatch("t1", attempt=1, queued_us=0, agent=DIGEST, reuse=False)
    assert d1.blobs == [
        h.bodies["t1"],
        MODULE,
        WIRE,
    ]  # the client's bytes, unrepacked, then the module

    h.submit("t2")
    (d2,) = h.take()
    assert d2.peer == W1
    assert d2.blobs == [h.bodies["t2"]]  # W1 has the module already

    # W2 joins with more free credits: it is picked, and gets the module once
    h.hello(W2, credits=4)
    h.take()
    for tid in ("t3", "t4", "t5"):
        h.submit(tid)
    ds = dispatches(h.take())
    assert (ds[0].msg.task_id, ds[0].peer) == ("t3", W2)  # the most free credits
    assert ds[0].blobs == [h.bodies["t3"], MODULE, WIRE]
    assert [len(d.blobs) for d in ds[1:]] == [1, 1]  # each worker has it now


def test_a_task_waits_for_a_worker_and_reports_its_queue_time() -> None:
    h = Harness()
    h.put_agent(reuse=True)
    sub = h.submit("t1", ack=True, agent=DIGEST_REUSE)
    ack = only(h.take(), "task.ack")
    assert (ack.sock, ack.peer, ack.header.parent) == (FRONT, CLIENT_A, sub.id)
    assert ack.msg == M.TaskAck("t1", "queued")
    assert h.sched.queues["wasm"].depth == 1

    h.advance(0.25)
    h.hello(W1)
    out = h.take()
    assert [o.type for o in out] == ["worker.welcome", "task.dispatch"]
    assert out[1].msg == M.TaskDispatch("t1", 1, 250_000, DIGEST_REUSE, reuse=True)
    assert h.sched.queues["wasm"].depth == 0
    assert h.sched.tasks["t1"].state is State.RUNNING


def test_a_result_is_forwarded_to_the_submitter_as_the_workers_bytes(h: Harness) -> None:
    h.hello(W1)
    sub = h.submit("t1", trace="tr")
    (d,) = dispatches(h.take())
    h.advance(0.5)
    body = h.result(d, {"answer": 42})
    res = only(h.take(), "task.result")
    assert (res.sock, res.peer, res.header.parent, res.header.trace) == (
        FRONT,
        CLIENT_A,
        sub.id,
        "tr",
    )
    assert res.body == body
    assert res.msg.output == {"answer": 42}
    assert h.worker(W1).completed == 1
    assert h.worker(W1).inflight == {}
    assert h.sched.counters["completed"] == 1


def test_a_worker_error_is_the_tasks_answer(h: Harness) -> None:
    h.hello(W1)
    sub = h.submit("t1")
    (d,) = dispatches(h.take())
    h.fail(d, E.WASM_TRAP)
    err = only(h.take(), "error")
    assert (err.peer, err.header.parent, err.msg.code) == (CLIENT_A, sub.id, E.WASM_TRAP)
    assert h.sched.counters["failed"] == 1
    assert h.sched.counters["completed"] == 0


def test_inference_tasks_queue_by_model_and_go_to_workers_that_serve_it() -> None:
    h = Harness()
    h.hello(W1, kind="wasm")
    h.hello(W2, kind="inference", capabilities=("llama",))
    h.take()
    h.submit("i1", kind="infer", model="llama")
    h.submit("i2", kind="infer", model="mistral")  # nobody serves it: refused, not parked
    outs = h.take()
    (d,) = dispatches(outs)
    assert (d.peer, d.msg.task_id, d.msg.agent) == (W2, "i1", None)
    assert d.blobs == [h.bodies["i1"]]
    refused = only(outs, "error")
    assert (refused.sock, refused.msg.code) == (FRONT, E.INFER_MODEL_MISSING)
    assert refused.msg.detail == {"model": "mistral"}
    assert h.sched.snapshot(h.now)["queues"] == {"llama": {"depth": 0, "limit": 100}}


# ---------------------------------------------------------------------- credits


def test_never_more_in_flight_than_credits_and_a_freed_credit_pumps_the_next(h: Harness) -> None:
    h.hello(W1, credits=2)
    h.take()
    for i in range(6):
        h.submit(f"t{i}")
    first = dispatches(h.take())
    assert ids(first) == ["t0", "t1"]
    assert len(h.worker(W1).inflight) == 2
    assert h.sched.queues["wasm"].depth == 4

    h.result(first[0])
    out = h.take()
    assert [(o.type, o.sock) for o in out] == [("task.result", FRONT), ("task.dispatch", BACK)]
    assert out[1].msg.task_id == "t2"

    pending = [first[1], out[1]]
    order = ["t0"]
    while pending:
        d = pending.pop(0)
        h.result(d)
        order.append(d.msg.task_id)
        pending += dispatches(h.take())
        assert len(h.worker(W1).inflight) <= 2
        assert len(pending) <= 2
    assert order == [f"t{i}" for i in range(6)]
    assert h.answers() == Counter({f"t{i}": 1 for i in range(6)})


def test_worker_credit_changes_capacity(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.take()
    for i in range(5):
        h.submit(f"t{i}")
    held = dispatches(h.take())
    assert ids(held) == ["t0"]

    h.credit(W1, 3)
    more = dispatches(h.take())
    assert ids(more) == ["t1", "t2"]
    assert h.worker(W1).credits == 3
    held += more

    h.credit(W1, 1)
    assert h.take() == []
    h.result(held[0])  # 2 still held > 1 credit: nothing new
    assert dispatches(h.take()) == []
    h.result(held[1])  # 1 held == 1 credit: still nothing
    assert dispatches(h.take()) == []
    h.result(held[2])  # 0 held: one more
    assert ids(dispatches(h.take())) == ["t3"]


# ---------------------------------------------------------------------- priorities


def test_higher_priority_first_fifo_within_one(h: Harness) -> None:
    for tid, prio in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1), ("f", 1000)]:
        h.submit(tid, priority=prio)
    h.hello(W1, credits=1)
    order = []
    pending = dispatches(h.take())
    while pending:
        d = pending.pop()
        order.append(d.msg.task_id)
        h.result(d)
        pending = dispatches(h.take())
    assert order == ["f", "b", "d", "a", "c", "e"]


def test_a_worker_that_dropped_a_module_gets_it_again_and_the_task_runs(h: Harness) -> None:
    """wasm.agent_missing for a dispatch sent without the module (the worker dropped it
    past its table's cap): the task goes again, with the module, its attempt not counted.
    For a dispatch that carried the module the error is the task's answer (no loop)."""
    h.hello(W1)
    h.take()
    h.submit("t1")
    (first,) = dispatches(h.take())
    h.result(first)
    h.take()
    h.submit("t2")
    (bare,) = dispatches(h.take())
    assert bare.blobs == [h.bodies["t2"]]
    h.fail(bare, E.WASM_AGENT_MISSING)
    (again,) = dispatches(h.take())  # no answer to the client yet
    assert again.blobs == [h.bodies["t2"], MODULE, WIRE]
    assert again.msg.attempt == 1
    assert h.sched.counters["modules_resent"] == 1
    h.fail(again, E.WASM_AGENT_MISSING)  # it had the module: a real failure
    err = only(h.take(), "error")
    assert err.msg.code == E.WASM_AGENT_MISSING
