"""The orchestrator's state machine: tasks, queues, credits, liveness, idempotency.

Pure: every method takes ``now`` (wall-clock ns, the clock deadlines use) and
appends what must go out to ``outbox`` (frames for a peer of the front or back
socket) and ``events`` (telemetry). ``service`` owns the sockets and feeds this
class decoded envelopes; tests drive it directly with a fake clock.

Rules it keeps (docs/protocol.md has the whole contract):
- a ``task_id`` runs at most once at a time and answers duplicates from its
  stored reply; the same id with another body is ``task.conflict``;
- a worker holds at most ``credits`` dispatches; the attempt is counted at
  dispatch; a lost worker's tasks go back to the front of their queue until
  ``max_attempts``, then end with ``task.worker_lost``;
- a result names its dispatch in ``parent``; one for a dispatch that is no
  longer current is a late result: it frees the credit and is dropped.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from wasm_engine import errors as E
from wasm_engine.config import Settings
from wasm_engine.envelope import encode
from wasm_engine.errors import WasmEngineError
from wasm_engine.messages import (
    AgentPut,
    AgentStored,
    Error,
    Status,
    TaskAck,
    TaskCancel,
    TaskDispatch,
    TaskSubmit,
    WorkerBye,
    WorkerCredit,
    WorkerHeartbeat,
    WorkerHello,
    WorkerWelcome,
)
from wasm_engine.protocol import Header, make_header

from .agents import AgentStore
from .tasks import Reply, Retention, State, Task, TaskQueue
from .workers import Registry, Worker

FRONT, BACK = 0, 1
VERSION = "0.1.0"


@dataclass(slots=True)
class Send:
    sock: int  # FRONT | BACK
    peer: bytes
    frames: list[bytes]


class Scheduler:
    def __init__(self, settings: Settings, now: int, name: str = "orchestrator") -> None:
        self.settings = settings
        self.name = name
        self.started_at = now
        self.outbox: list[Send] = []
        self.events: deque[dict[str, Any]] = deque()
        self.events_cap = 20_000
        self.counters: Counter[str] = Counter()
        self.tasks: dict[str, Task] = {}
        self.dispatches: dict[str, Task] = {}  # dispatch id -> task, until its worker answers
        self.queues: dict[str, TaskQueue] = {}
        interval_ns = int(settings.heartbeat_interval * 1e9)
        self.workers = Registry(interval_ns, settings.heartbeat_liveness)
        self.agents = AgentStore()
        self.retention = Retention(int(settings.result_ttl * 1e9))
        self._deadlines: list[tuple[int, int, Task]] = []
        self._seq = itertools.count()

    # ------------------------------------------------------------------ output
    def _send(
        self, sock: int, peer: bytes, header: Header, body: bytes, blobs: list[bytes] | None = None
    ) -> None:
        self.outbox.append(Send(sock, peer, encode(header, body, blobs or ())))

    def _event(self, ev: str, now: int, **fields: Any) -> None:
        if len(self.events) >= self.events_cap:
            self.counters["telemetry_dropped"] += 1
            return
        fields["ev"] = ev
        fields["t"] = now
        self.events.append(fields)

    def error(
        self,
        sock: int,
        peer: bytes,
        parent: str | None,
        err: WasmEngineError,
        trace: str | None = None,
    ) -> None:
        """Answer ``peer`` with a typed error (parent nil when the header was unreadable)."""
        self.counters["errors_sent"] += 1
        self.counters["error:" + err.code] += 1
        header = make_header("error", parent=parent, trace=trace, sender=self.name)
        self._send(sock, peer, header, Error(**err.to_body()).pack())

    # ------------------------------------------------------------------ front
    def submit(self, peer: bytes, header: Header, body: bytes, msg: TaskSubmit, now: int) -> None:
        self.counters["submitted"] += 1
        known = self.tasks.get(msg.task_id)
        if known is not None:
            self._duplicate(known, peer, header, body, msg, now)
            return
        deadline = header.deadline
        if deadline is not None and deadline <= now:
            self.error(
                FRONT,
                peer,
                header.id,
                WasmEngineError(E.TASK_DEADLINE, "deadline already passed"),
                header.trace,
            )
            return
        agent = None
        if msg.kind == "wasm":
            agent = msg.agent
            if agent is None or self.agents.get(agent) is None:
                err = WasmEngineError(
                    E.WASM_AGENT_MISSING, f"agent {agent} not stored: send agent.put first"
                )
                self.error(FRONT, peer, header.id, err, header.trace)
                return
        key = "wasm" if msg.kind == "wasm" else str(msg.model)
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = TaskQueue(self.settings.queue_limit)
        if queue.full():
            self.counters["overloaded"] += 1
            self._event(
                "task.rejected",
                now,
                task_id=msg.task_id,
                trace=header.trace,
                code=E.TASK_OVERLOADED,
            )
            err = WasmEngineError(
                E.TASK_OVERLOADED,
                f"queue {key!r} is full ({queue.limit} tasks)",
                detail={"queue": key, "depth": queue.depth},
            )
            self.error(FRONT, peer, header.id, err, header.trace)
            return
        task = Task(
            msg.task_id,
            msg.kind,
            key,
            agent,
            msg.priority,
            body,
            peer,
            header.id,
            header.trace,
            deadline,
            now,
            seq=next(self._seq),
            queued_at=now,
        )
        self.tasks[task.task_id] = task
        queue.push(task)
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, task.seq, task))
        self._event(
            "task.queued",
            now,
            task_id=task.task_id,
            trace=task.trace,
            queue=key,
            priority=task.priority,
            parent=header.parent,
        )
        if msg.ack:
            self._ack(task, peer, header.id, "queued")
        self.pump(now)

    def _ack(self, task: Task, peer: bytes, parent: str, state: str) -> None:
        header = make_header("task.ack", parent=parent, trace=task.trace, sender=self.name)
        self._send(FRONT, peer, header, TaskAck(task.task_id, state).pack())

    def _duplicate(
        self, task: Task, peer: bytes, header: Header, body: bytes, msg: TaskSubmit, now: int
    ) -> None:
        self.counters["duplicates"] += 1
        if body != task.body:
            err = WasmEngineError(
                E.TASK_CONFLICT, f"task_id {task.task_id!r} was submitted with another body"
            )
            self.error(FRONT, peer, header.id, err, header.trace)
            return
        if task.reply is not None:
            self._deliver(task, task.reply, peer, header.id)
            return
        task.waiters.append((peer, header.id))
        if msg.ack:
            self._ack(task, peer, header.id, "duplicate")

    def cancel(self, peer: bytes, header: Header, task_id: str, now: int) -> None:
        task = self.tasks.get(task_id)
        if task is None or task.state is State.DONE:
            self.error(
                FRONT,
                peer,
                header.id,
                WasmEngineError(E.TASK_NOT_FOUND, f"no running task {task_id!r}"),
            )
            return
        self._end(task, WasmEngineError(E.TASK_CANCELLED, "cancelled by the client"), now)

    def agent_put(self, peer: bytes, header: Header, msg: AgentPut, blobs: list[bytes]) -> None:
        if len(blobs) != 1:
            err = WasmEngineError(
                E.PROTO_BAD_FIELD, "agent.put carries the module as exactly one blob"
            )
            self.error(FRONT, peer, header.id, err)
            return
        try:
            stored = self.agents.put(msg.digest, msg.name, msg.reuse, blobs[0])
        except WasmEngineError as err:
            self.error(FRONT, peer, header.id, err)
            return
        reply = make_header("agent.stored", parent=header.id, sender=self.name)
        self._send(FRONT, peer, reply, AgentStored(stored.digest, len(stored.module)).pack())

    def status(self, peer: bytes, header: Header, now: int) -> None:
        reply = make_header("status", parent=header.id, sender=self.name)
        self._send(FRONT, peer, reply, Status(**self.snapshot(now)).pack())

    def snapshot(self, now: int) -> dict[str, Any]:
        return {
            "orchestrator": {
                "name": self.name,
                "version": VERSION,
                "started_ns": self.started_at,
                "now_ns": now,
                "uptime_s": round((now - self.started_at) / 1e9, 3),
                "tasks_known": len(self.tasks),
                "agents": len(self.agents),
                "heartbeat_interval": self.settings.heartbeat_interval,
            },
            "workers": [w.describe(now) for w in self.workers],
            "queues": {k: {"depth": q.depth, "limit": q.limit} for k, q in self.queues.items()},
            "counters": dict(self.counters),
        }

    # ------------------------------------------------------------------ dispatch
    def pump(self, now: int) -> None:
        """Dispatch queued tasks while some worker has a free credit."""
        for key, queue in self.queues.items():
            while queue.depth:
                worker = self.workers.pick(key)
                if worker is None:
                    break
                task = queue.pop()
                if task is None:
                    break
                self._dispatch(task, worker, now)

    def _dispatch(self, task: Task, worker: Worker, now: int) -> None:
        task.attempts += 1
        task.state = State.RUNNING
        task.worker = worker.peer
        task.started_at = now
        header = make_header(
            "task.dispatch",
            parent=task.submit_id,
            trace=task.trace,
            sender=self.name,
            deadline=task.deadline,
        )
        task.dispatch_id = header.id
        worker.inflight[header.id] = task.task_id
        self.dispatches[header.id] = task
        blobs = [task.body]
        reuse = False
        if task.agent is not None:
            stored = self.agents.get(task.agent)
            reuse = stored is not None and stored.reuse
            if stored is not None and task.agent not in worker.agents:
                blobs.append(stored.module)
                worker.agents.add(task.agent)
        queued_us = (now - task.queued_at) // 1000
        body = TaskDispatch(task.task_id, task.attempts, queued_us, task.agent, reuse).pack()
        self._send(BACK, worker.peer, header, body, blobs)
        self._event(
            "task.dispatched",
            now,
            task_id=task.task_id,
            trace=task.trace,
            worker=worker.name,
            attempt=task.attempts,
            queued_us=queued_us,
        )

    def _requeue(self, task: Task, now: int, *, penalty: bool) -> None:
        if not penalty:
            task.attempts -= 1
        task.worker = None
        task.dispatch_id = None
        if task.attempts >= self.settings.max_attempts:
            err = WasmEngineError(
                E.TASK_WORKER_LOST,
                f"worker lost on all {task.attempts} attempts",
                detail={"attempts": task.attempts},
            )
            self._end(task, err, now)
            return
        task.state = State.QUEUED
        task.queued_at = now
        self.queues[task.queue].push(task)  # keeps its old seq: first among its priority
        self.counters["requeued"] += 1
        self._event(
            "task.requeued", now, task_id=task.task_id, trace=task.trace, attempts=task.attempts
        )

    # ------------------------------------------------------------------ finishing
    def _end(self, task: Task, err: WasmEngineError, now: int) -> None:
        """End a task that no worker answered for (cancel, deadline, lost)."""
        if task.state is State.QUEUED:
            self.queues[task.queue].discard(task)
        elif task.state is State.RUNNING and task.worker is not None:
            self._cancel_on_worker(task)
        self._finish(task, Reply("error", Error(**err.to_body()).pack(), [], False), now, err.code)

    def _cancel_on_worker(self, task: Task) -> None:
        if task.worker is None or task.dispatch_id is None:
            return
        header = make_header(
            "task.cancel", parent=task.dispatch_id, trace=task.trace, sender=self.name
        )
        self._send(BACK, task.worker, header, TaskCancel(task.task_id).pack())

    def _finish(self, task: Task, reply: Reply, now: int, code: str | None = None) -> None:
        task.state = State.DONE
        task.reply = reply
        task.finished_at = now
        task.worker = None
        self.retention.add(task.task_id, now)
        self.counters["completed" if reply.ok else "failed"] += 1
        self._event(
            "task.done",
            now,
            task_id=task.task_id,
            trace=task.trace,
            ok=reply.ok,
            code=code,
            attempts=task.attempts,
            total_us=(now - task.submitted_at) // 1000,
            run_us=(now - task.started_at) // 1000 if task.started_at else 0,
        )
        self._deliver(task, reply, task.client, task.submit_id)
        for peer, parent in task.waiters:
            self._deliver(task, reply, peer, parent)
        task.waiters.clear()

    def _deliver(self, task: Task, reply: Reply, peer: bytes, parent: str) -> None:
        header = make_header(reply.type, parent=parent, trace=task.trace, sender=self.name)
        self._send(FRONT, peer, header, reply.body, reply.blobs)

    # ------------------------------------------------------------------ back
    def touch(self, peer: bytes, now: int) -> Worker | None:
        worker = self.workers.get(peer)
        if worker is not None:
            worker.liveness.beat(now)
        return worker

    def hello(self, peer: bytes, header: Header, msg: WorkerHello, now: int) -> None:
        known = self.workers.get(peer)
        if known is not None:  # it dropped what it held when it said hello: not its fault
            self._lose(known, now, "re-hello", penalty=False)
        worker = self.workers.add(peer, msg, now)
        self._event(
            "worker.joined",
            now,
            worker=worker.name,
            kind=worker.kind,
            credits=worker.credits,
            device=worker.device,
            host=worker.host,
        )
        interval = self.settings.heartbeat_interval
        welcome = WorkerWelcome(
            peer.decode("utf-8", "replace"), interval, self.settings.heartbeat_liveness
        )
        self._send(
            BACK,
            peer,
            make_header("worker.welcome", parent=header.id, sender=self.name),
            welcome.pack(),
        )
        self.pump(now)

    def heartbeat(self, peer: bytes, header: Header, msg: WorkerHeartbeat, now: int) -> None:
        """A heartbeat arrives on the worker's heartbeat channel (``peer``) and names its
        task channel; it is echoed, or answered ``worker.unknown`` (say hello again)."""
        worker = self.touch(msg.worker.encode(), now)
        if worker is None:
            err = WasmEngineError(
                E.WORKER_UNKNOWN, "heartbeat from an unregistered worker: send worker.hello"
            )
            self.error(BACK, peer, header.id, err)
            return
        echo = WorkerHeartbeat(msg.worker, len(worker.inflight))
        self._send(
            BACK,
            peer,
            make_header("worker.heartbeat", parent=header.id, sender=self.name),
            echo.pack(),
        )

    def credit(self, worker: Worker, msg: WorkerCredit, now: int) -> None:
        worker.credits = msg.credits
        self.pump(now)

    def bye(self, worker: Worker, msg: WorkerBye, now: int) -> None:
        returned = set(msg.returned)
        for dispatch_id, task_id in list(worker.inflight.items()):
            task = self.dispatches.pop(dispatch_id, None)
            if task is not None and task.dispatch_id == dispatch_id and task.state is State.RUNNING:
                self._requeue(task, now, penalty=task_id not in returned)
        worker.inflight.clear()
        self.workers.remove(worker)
        self._event("worker.left", now, worker=worker.name)
        self.pump(now)

    def worker_reply(
        self, worker: Worker, header: Header, body: bytes, blobs: list[bytes], now: int
    ) -> None:
        """``task.result`` or ``error`` from a worker; read by its header only."""
        dispatch_id = header.parent or ""
        task_id = worker.inflight.pop(dispatch_id, None)
        # only a dispatch this worker holds is its to answer
        task = self.dispatches.pop(dispatch_id, None) if task_id is not None else None
        if task is None or task.dispatch_id != dispatch_id or task.state is not State.RUNNING:
            self.counters["late_results"] += 1
            self._event(
                "task.late_result",
                now,
                dispatch=dispatch_id,
                worker=worker.name,
                task_id=task_id,
                trace=task.trace if task is not None else None,
            )
        else:
            worker.completed += 1
            ok = header.type == "task.result"
            self._finish(task, Reply(header.type, body, blobs, ok), now)
        self.pump(now)

    def worker_event(self, worker: Worker, header: Header, body: bytes, blobs: list[bytes]) -> None:
        task = self.dispatches.get(header.parent or "")
        if task is not None and task.state is State.RUNNING:
            head = make_header(
                header.type, parent=task.submit_id, trace=task.trace, sender=self.name
            )
            self._send(FRONT, task.client, head, body, blobs)

    def unreachable(self, peer: bytes, now: int) -> None:
        """A send to ``peer`` on the back socket failed: that worker is gone."""
        worker = self.workers.get(peer)
        if worker is not None:
            self._lose(worker, now, "unreachable")
            self.pump(now)

    def _lose(self, worker: Worker, now: int, why: str, *, penalty: bool = True) -> None:
        self.workers.remove(worker)
        self.counters["workers_lost" if penalty else "workers_rejoined"] += 1
        self._event("worker.lost", now, worker=worker.name, why=why, inflight=len(worker.inflight))
        for dispatch_id in list(worker.inflight):
            task = self.dispatches.pop(dispatch_id, None)
            if task is not None and task.dispatch_id == dispatch_id and task.state is State.RUNNING:
                self._requeue(task, now, penalty=penalty)
        worker.inflight.clear()

    # ------------------------------------------------------------------ timers
    def tick(self, now: int) -> None:
        """Liveness, deadlines and retention; run about every 100 ms."""
        for worker in self.workers.expired(now):
            self._lose(worker, now, "heartbeat")
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, task = heapq.heappop(self._deadlines)
            if task.state is not State.DONE:
                self._end(task, WasmEngineError(E.TASK_DEADLINE, "deadline passed"), now)
        for task_id in self.retention.expired(now):
            forgotten = self.tasks.pop(task_id, None)
            if forgotten is not None and forgotten.dispatch_id is not None:
                self.dispatches.pop(forgotten.dispatch_id, None)
        self.pump(now)
