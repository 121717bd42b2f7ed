"""The harness for the scheduler's unit tests (``test_scheduler_*.py``): constants, the decoded
outbox entry :class:`Out`, and :class:`Harness`, the orchestrator's state machine driven directly
with a fake clock.

No sockets, no sleeps, no threads: ``now`` is a plain int (ns) that the tests
advance. Everything the scheduler sends is decoded from ``outbox`` back into
protocol messages (``envelope.decode`` then ``messages.parse``) so that the
assertions read like docs/protocol.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from orchestrator.scheduler import BACK, FRONT, Scheduler
from orchestrator.workers import Worker
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
        return only([self.put_agent_raw(module, reuse=reuse)], "agent.stored")

    def put_agent_raw(self, module: bytes = MODULE, *, reuse: bool = False) -> Out:
        """The one answer to an ``agent.put``: ``agent.stored`` or an ``error``."""
        digest = agent_digest(module, Manifest(name="agent", reuse=reuse))
        header = make_header("agent.put", sender="test-client")
        msg = M.parse("agent.put", M.AgentPut(digest, "agent", reuse).pack())
        assert isinstance(msg, M.AgentPut)
        self.sched.agent_put(CLIENT_A, header, msg, [module])
        (answer,) = self.take()
        return answer

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
        session: str | None = None,
    ) -> Header:
        body = M.TaskSubmit(
            task_id=task_id,
            kind=kind,
            agent=agent if kind == "wasm" else None,
            model=model,
            input=data,
            priority=priority,
            ack=ack,
            session=session,
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

    def heartbeat(self, peer: bytes, stats: dict[str, Any] | None = None) -> Header:
        """A heartbeat on the worker's heartbeat channel, naming its task channel (and
        carrying the worker's ``stats``, through the wire format)."""
        channel = b"hb-" + peer
        header = make_header("worker.heartbeat", sender=peer.decode())
        msg = M.parse("worker.heartbeat", M.WorkerHeartbeat(peer.decode(), 0, stats or {}).pack())
        assert isinstance(msg, M.WorkerHeartbeat)
        self.sched.touch(channel, self.now)  # the service touches every back frame's sender
        self.sched.heartbeat(channel, header, msg, self.now)
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

    def child(
        self,
        parent: Out,
        task_id: str,
        *,
        kind: str = "wasm",
        agent: str = DIGEST,
        model: str | None = None,
        data: bytes = b"\x91\x02",
    ) -> Header:
        """A child request (we.spawn…) from the worker running dispatch ``parent``."""
        body = M.TaskSubmit(
            task_id=task_id,
            kind=kind,
            agent=agent if kind == "wasm" else None,
            model=model,
            input=data if kind == "wasm" else {"prompt": "hi"},
        ).pack()
        msg = M.parse("task.submit", body)
        assert isinstance(msg, M.TaskSubmit)
        worker = self.worker(parent.peer)
        header = make_header(
            "task.submit", parent=parent.header.id, trace=parent.header.trace, sender=worker.name
        )
        self.sched.child_submit(worker, header, body, msg, self.now)
        return header

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
