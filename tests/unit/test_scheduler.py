"""The orchestrator's state machine, driven directly with a fake clock.

No sockets, no sleeps, no threads: ``now`` is a plain int (ns) that the tests
advance. Everything the scheduler sends is decoded from ``outbox`` back into
protocol messages (``envelope.decode`` then ``messages.parse``) so that the
assertions read like docs/protocol.md.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import pytest

from orchestrator.scheduler import BACK, FRONT, VERSION, Scheduler
from orchestrator.tasks import State
from orchestrator.workers import Worker
from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.config import Settings
from wasm_engine.envelope import decode
from wasm_engine.manifest import Manifest, agent_digest
from wasm_engine.protocol import Header, make_header

S = 1_000_000_000  # ns per second
T0 = 1_700_000_000 * S  # a realistic wall-clock start (deadlines are epoch ns)
MODULE = b"\x00asm\x01\x00\x00\x00" + b"a test agent"
DIGEST = agent_digest(MODULE, Manifest(name="agent"))
DIGEST_REUSE = agent_digest(MODULE, Manifest(name="agent", reuse=True))
WIRE = Manifest(name="agent").canonical_bytes()
W1, W2, W3 = b"w1", b"w2", b"w3"
CLIENT_A, CLIENT_B, CLIENT_C = b"client-a", b"client-b", b"client-c"
ANSWERS = ("task.result", "error")


# ---------------------------------------------------------------------- helpers


@dataclass
class Out:
    """One decoded outbox entry."""

    sock: int
    peer: bytes
    header: Header
    msg: Any
    body: bytes
    blobs: list[bytes]

    @property
    def type(self) -> str:
        return self.header.type


def of_type(outs: list[Out], type_: str) -> list[Out]:
    return [o for o in outs if o.type == type_]


def only(outs: list[Out], type_: str) -> Out:
    found = of_type(outs, type_)
    assert len(found) == 1, f"expected one {type_}, got {[o.type for o in outs]}"
    return found[0]


class Harness:
    """A scheduler, a fake clock, and a client/worker vocabulary to drive it."""

    def __init__(self, **changes: Any) -> None:
        base: dict[str, Any] = {
            "heartbeat_interval": 1.0,
            "heartbeat_liveness": 3,
            "queue_limit": 100,
            "max_attempts": 3,
            "result_ttl": 300.0,
        }
        base.update(changes)
        self.settings = Settings(**base)
        self.now = T0
        self.sched = Scheduler(self.settings, self.now)
        self.submit_ids: dict[str, str] = {}  # submit header id -> task_id
        self.bodies: dict[str, bytes] = {}  # task_id -> submit body bytes
        self.sent: list[Out] = []  # everything taken from the outbox so far

    # -- clock
    def advance(self, seconds: float) -> int:
        self.now += round(seconds * S)
        return self.now

    def tick(self) -> None:
        self.sched.tick(self.now)

    # -- outbox
    def take(self) -> list[Out]:
        """Decode and empty the outbox (as the service's flush would)."""
        batch, self.sched.outbox = self.sched.outbox, []
        outs = []
        for send in batch:
            env = decode(send.frames)
            msg = M.parse(env.header.type, env.body)
            outs.append(Out(send.sock, send.peer, env.header, msg, env.body, env.blobs))
        self.sent.extend(outs)
        return outs

    def answers(self) -> Counter[str]:
        """Results and errors sent to clients for a submit, counted per task id."""
        return Counter(
            self.submit_ids[o.header.parent]
            for o in self.sent
            if o.sock == FRONT and o.type in ANSWERS and o.header.parent in self.submit_ids
        )

    def events(self, ev: str) -> list[dict[str, Any]]:
        return [e for e in self.sched.events if e["ev"] == ev]

    # -- client side
    def put_agent(self, module: bytes = MODULE, *, reuse: bool = False) -> Out:
        digest = agent_digest(module, Manifest(name="agent", reuse=reuse))
        header = make_header("agent.put", sender="test-client")
        msg = M.parse("agent.put", M.AgentPut(digest, "agent", reuse).pack())
        assert isinstance(msg, M.AgentPut)
        self.sched.agent_put(CLIENT_A, header, msg, [module])
        return only(self.take(), "agent.stored")

    def submit_body(
        self,
        body: bytes,
        *,
        client: bytes = CLIENT_A,
        deadline: int | None = None,
        trace: str | None = None,
    ) -> Header:
        msg = M.parse("task.submit", body)
        assert isinstance(msg, M.TaskSubmit)
        header = make_header("task.submit", trace=trace, sender="test-client", deadline=deadline)
        self.submit_ids[header.id] = msg.task_id
        self.sched.submit(client, header, body, msg, self.now)
        return header

    def submit(
        self,
        task_id: str,
        *,
        client: bytes = CLIENT_A,
        data: bytes = b"\x91\x01",
        priority: int = 0,
        ack: bool = False,
        deadline: int | None = None,
        trace: str | None = None,
        agent: str = DIGEST,
        kind: str = "wasm",
        model: str | None = None,
    ) -> Header:
        body = M.TaskSubmit(
            task_id=task_id,
            kind=kind,
            agent=agent if kind == "wasm" else None,
            model=model,
            input=data,
            priority=priority,
            ack=ack,
        ).pack()
        self.bodies.setdefault(task_id, body)
        return self.submit_body(body, client=client, deadline=deadline, trace=trace)

    def cancel(self, task_id: str, *, client: bytes = CLIENT_A) -> Header:
        header = make_header("task.cancel", sender="test-client")
        self.sched.cancel(client, header, task_id, self.now)
        return header

    # -- worker side
    def hello(
        self,
        peer: bytes = W1,
        *,
        credits: int = 4,
        kind: str = "wasm",
        capabilities: tuple[str, ...] = ("wasm",),
    ) -> Header:
        body = M.WorkerHello(
            name=peer.decode(),
            kind=kind,
            credits=credits,
            capabilities=list(capabilities),
            host="host-1",
            shm_ns="host-1/ipc:[1]",
            device="cpu",
            pid=4242,
        ).pack()
        msg = M.parse("worker.hello", body)
        assert isinstance(msg, M.WorkerHello)
        header = make_header("worker.hello", sender=peer.decode())
        self.sched.hello(peer, header, msg, self.now)
        return header

    def worker(self, peer: bytes) -> Worker:
        worker = self.sched.workers.get(peer)
        assert worker is not None, f"{peer!r} is not registered"
        return worker

    def heartbeat(self, peer: bytes) -> Header:
        """A heartbeat on the worker's heartbeat channel, naming its task channel."""
        channel = b"hb-" + peer
        header = make_header("worker.heartbeat", sender=peer.decode())
        self.sched.touch(channel, self.now)  # the service touches every back frame's sender
        self.sched.heartbeat(channel, header, M.WorkerHeartbeat(peer.decode(), 0), self.now)
        return header

    def reply(
        self, dispatch: Out, type_: str, body: bytes, *, worker: Worker | None = None
    ) -> Header:
        worker = worker if worker is not None else self.worker(dispatch.peer)
        self.sched.touch(worker.peer, self.now)  # the service touches every back frame's sender
        header = make_header(
            type_, parent=dispatch.header.id, trace=dispatch.header.trace, sender=worker.name
        )
        self.sched.worker_reply(worker, header, body, [], self.now)
        return header

    def result(self, dispatch: Out, output: Any = "ok", *, worker: Worker | None = None) -> bytes:
        body = M.TaskResult(dispatch.msg.task_id, output, {"attempts": dispatch.msg.attempt}).pack()
        self.reply(dispatch, "task.result", body, worker=worker)
        return body

    def fail(self, dispatch: Out, code: str, *, worker: Worker | None = None) -> bytes:
        body = M.Error(code, "worker said no", False, {}).pack()
        self.reply(dispatch, "error", body, worker=worker)
        return body

    def bye(self, peer: bytes, returned: list[str]) -> None:
        msg = M.parse("worker.bye", M.WorkerBye(returned).pack())
        assert isinstance(msg, M.WorkerBye)
        self.sched.bye(self.worker(peer), msg, self.now)

    def credit(self, peer: bytes, credits: int) -> None:
        msg = M.parse("worker.credit", M.WorkerCredit(credits).pack())
        assert isinstance(msg, M.WorkerCredit)
        self.sched.credit(self.worker(peer), msg, self.now)


def dispatches(outs: list[Out]) -> list[Out]:
    found = of_type(outs, "task.dispatch")
    assert all(o.sock == BACK for o in found)
    return found


def ids(outs: list[Out]) -> list[str]:
    return [o.msg.task_id for o in outs]


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.put_agent()
    return harness


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
    h.submit("i2", kind="infer", model="mistral")  # nobody serves it
    (d,) = dispatches(h.take())
    assert (d.peer, d.msg.task_id, d.msg.agent) == (W2, "i1", None)
    assert d.blobs == [h.bodies["i1"]]
    assert h.sched.snapshot(h.now)["queues"] == {
        "llama": {"depth": 0, "limit": 100},
        "mistral": {"depth": 1, "limit": 100},
    }


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
    assert h.sched.tasks["t1"].state is State.DONE
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
    assert h.sched.tasks["t1"].state is State.DONE

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
    assert "t1" in h.sched.tasks  # exactly ttl: still answers duplicates
    h.submit_body(h.bodies["t1"])
    assert [o.type for o in h.take()] == ["task.result"]

    h.now += 1
    h.tick()
    assert "t1" not in h.sched.tasks
    assert h.sched.snapshot(h.now)["orchestrator"]["tasks_known"] == 0
    h.submit("t1")  # forgotten: runs again
    (again,) = dispatches(h.take())
    assert again.msg.attempt == 1
    assert again.header.id != d.header.id


# ---------------------------------------------------------------------- snapshot


def test_snapshot_shape_and_status_reply(h: Harness) -> None:
    h.hello(W1, credits=2)
    h.submit("t1")
    h.submit("t2")
    h.submit("t3")
    (d1, _d2) = dispatches(h.take())
    h.advance(1)
    h.result(d1)
    h.take()
    h.advance(1.5)
    snap = h.sched.snapshot(h.now)
    assert set(snap) == {"orchestrator", "workers", "queues", "counters", "agents"}
    assert snap["orchestrator"] == {
        "name": "orchestrator",
        "version": VERSION,
        "started_ns": T0,
        "now_ns": T0 + 2_500_000_000,
        "uptime_s": 2.5,
        "tasks_known": 3,
        "agents": 1,
        "heartbeat_interval": 1.0,
    }
    assert snap["workers"] == [
        {
            "id": "w1",
            "name": "w1",
            "kind": "wasm",
            "state": "ready",
            "credits": 2,
            "inflight": 2,
            "completed": 1,
            "heartbeat_age_s": 1.5,
            "capabilities": ["wasm"],
            "host": "host-1",
            "shm_ns": "host-1/ipc:[1]",
            "device": "cpu",
            "pid": 4242,
            "uptime_s": 2.5,
        }
    ]
    assert snap["queues"] == {"wasm": {"depth": 0, "limit": 100}}
    assert snap["counters"] == {"submitted": 3, "completed": 1}

    header = make_header("status.get", sender="monitor")
    h.sched.status(CLIENT_C, header, h.now)
    status = only(h.take(), "status")
    assert (status.sock, status.peer, status.header.parent) == (FRONT, CLIENT_C, header.id)
    assert status.msg == M.Status(**snap)


# ---------------------------------------------------------------------- telemetry


def test_telemetry_events_follow_a_task_and_a_worker(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.submit("t1", priority=7, trace="tr-1")
    h.advance(0.5)
    h.submit("t2")
    (d1,) = dispatches(h.take())
    h.advance(0.25)
    h.result(d1)
    h.advance(4)
    h.tick()

    evs = [e["ev"] for e in h.sched.events]
    assert evs == [
        "worker.joined",
        "task.queued",
        "task.dispatched",
        "task.queued",
        "task.done",
        "task.dispatched",
        "worker.lost",
        "task.requeued",
    ]
    joined, queued, dispatched, _, done, _, lost, requeued = h.sched.events
    assert joined == {
        "ev": "worker.joined",
        "t": T0,
        "worker": "w1",
        "kind": "wasm",
        "credits": 1,
        "device": "cpu",
        "host": "host-1",
    }
    assert queued == {
        "ev": "task.queued",
        "t": T0,
        "task_id": "t1",
        "trace": "tr-1",
        "queue": "wasm",
        "priority": 7,
        "parent": None,
    }
    assert dispatched == {
        "ev": "task.dispatched",
        "t": T0,
        "task_id": "t1",
        "trace": "tr-1",
        "worker": "w1",
        "attempt": 1,
        "queued_us": 0,
    }
    assert done == {
        "ev": "task.done",
        "t": T0 + 750_000_000,
        "task_id": "t1",
        "trace": "tr-1",
        "ok": True,
        "code": None,
        "attempts": 1,
        "total_us": 750_000,
        "run_us": 750_000,
    }
    assert lost == {
        "ev": "worker.lost",
        "t": T0 + 4_750_000_000,
        "worker": "w1",
        "why": "heartbeat",
        "inflight": 1,
    }
    assert requeued == {
        "ev": "task.requeued",
        "t": T0 + 4_750_000_000,
        "task_id": "t2",
        "trace": None,
        "attempts": 1,
    }


def test_a_failed_task_s_done_event_names_its_code(h: Harness) -> None:
    h.submit("t1")
    h.cancel("t1")
    (done,) = h.events("task.done")
    assert (done["ok"], done["code"], done["run_us"]) == (False, E.TASK_CANCELLED, 0)


def test_events_past_the_cap_are_dropped_and_counted(h: Harness) -> None:
    h.sched.events_cap = 3
    for i in range(5):
        h.submit(f"t{i}")  # one task.queued each, no worker
    assert [e["task_id"] for e in h.sched.events] == ["t0", "t1", "t2"]
    assert h.sched.counters["telemetry_dropped"] == 2

    h.sched.events.clear()  # the service publishes and clears each round
    h.submit("t5")
    assert [e["task_id"] for e in h.sched.events] == ["t5"]
    assert h.sched.counters["telemetry_dropped"] == 2


# ---------------------------------------------------------------------- known bugs


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
