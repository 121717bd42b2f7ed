"""The orchestrator's state machine: tasks, queues, credits, liveness, idempotency.

Pure: every method takes ``now`` (wall-clock ns, the clock deadlines use) and
appends what must go out to ``outbox`` (frames for a peer of the front or back
socket) and ``events`` (telemetry). ``service`` owns the sockets and feeds this
class decoded envelopes; tests drive it directly with a fake clock.

:class:`Scheduler` is the one object they drive, composed of parts that each own
one side: :mod:`.outbox` (its base: what goes out, counters), :mod:`.intake`
(client requests: submit, cancel, agent.put, status), :mod:`.membership`
(workers joining, beating, leaving, lost), :mod:`.results` (how a task ends and
who hears of it), :mod:`.children`, :mod:`.sessions` and :mod:`.tensor_hooks`.
This module owns the queues and the way of a task to a worker: dispatch on free
credits, requeue, deadlines and retention on the tick, the snapshot.

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
from typing import Any

from wasm_engine import errors as E
from wasm_engine.config import Settings
from wasm_engine.errors import WasmEngineError
from wasm_engine.messages import TaskDispatch
from wasm_engine.protocol import make_header

from .agents import AgentStore
from .children import Children
from .intake import Intake
from .membership import Membership
from .outbox import BACK, FRONT, Outbox, Send
from .results import Results
from .sessions import Sessions
from .tasks import Retention, State, Task, TaskQueue
from .tensor_hooks import TensorHooks
from .workers import Registry, Worker

__all__ = ["BACK", "FRONT", "VERSION", "Scheduler", "Send"]

VERSION = "0.1.0"


class Scheduler(Outbox):
    def __init__(self, settings: Settings, now: int, name: str = "orchestrator") -> None:
        super().__init__(name)
        self.settings = settings
        self.started_at = now
        self.tasks: dict[str, Task] = {}  # live: queued, parked or running
        self.dispatches: dict[str, Task] = {}  # dispatch id -> task, until its worker answers
        self.queues: dict[str, TaskQueue] = {}
        interval_ns = int(settings.heartbeat_interval * 1e9)
        self.workers = Registry(interval_ns, settings.heartbeat_liveness)
        self.agents = AgentStore(counters=self.counters)
        self.retention = Retention(int(settings.result_ttl * 1e9))
        self.deadlines: list[tuple[int, int, Task]] = []
        # the parts' entry points, bound here: no extra call per message
        self.intake = Intake(self)
        self.submit = self.intake.submit
        self.cancel = self.intake.cancel
        self.client_gone = self.intake.client_gone
        self.agent_put = self.intake.agent_put
        self.status = self.intake.status
        self.sessions = Sessions(self)
        self.children = Children(self)
        self.child_submit = self.children.submit
        self.members = Membership(self)
        self.touch = self.members.touch
        self.hello = self.members.hello
        self.heartbeat = self.members.heartbeat
        self.credit = self.members.credit
        self.bye = self.members.bye
        self.unreachable = self.members.unreachable
        self.tensors = TensorHooks(self)  # tensor leases (docs/tensors.md)
        self.results = Results(self)
        self.worker_reply = self.results.worker_reply
        self.worker_event = self.results.worker_event
        self.end = self.results.end
        self.deliver = self.results.deliver

    # ------------------------------------------------------------------ state
    def snapshot(self, now: int) -> dict[str, Any]:
        return {
            "orchestrator": {
                "name": self.name,
                "version": VERSION,
                "started_ns": self.started_at,
                "now_ns": now,
                "uptime_s": round((now - self.started_at) / 1e9, 3),
                "tasks_known": len(self.tasks) + len(self.retention),
                "agents": len(self.agents),
                "sessions": len(self.sessions),
                "heartbeat_interval": self.settings.heartbeat_interval,
            },
            "workers": [w.describe(now) for w in self.workers],
            "queues": {k: {"depth": q.depth, "limit": q.limit} for k, q in self.queues.items()},
            "counters": dict(self.counters),
            "agents": self.agents.describe(),
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

    def enqueue(self, task: Task, key: str) -> None:
        """Put a task (new, or a parked session call) in queue ``key``."""
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = TaskQueue(self.settings.queue_limit)
        task.queue, task.state, task.parked = key, State.QUEUED, False
        queue.push(task)

    def tasks_in(self, key: str) -> list[Task]:
        queue = self.queues.get(key)
        return queue.queued() if queue is not None else []

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
            task.module_sent = stored is not None and task.agent not in worker.agents
            if task.module_sent and stored is not None:
                blobs += (stored.module, stored.wire_manifest)
                worker.agents.add(task.agent)
        queued_us = (now - task.queued_at) // 1000
        session, fresh = None, False
        if task.session is not None:
            session, fresh = task.session[1], self.sessions.started(task, worker)
        body = TaskDispatch(
            task.task_id, task.attempts, queued_us, task.agent, reuse, session, fresh
        ).pack()
        self.send(BACK, worker.peer, header, body, blobs)
        if self.telemetry:
            self.event(
                "task.dispatched",
                now,
                task_id=task.task_id,
                trace=task.trace,
                worker=worker.name,
                attempt=task.attempts,
                queued_us=queued_us,
            )

    def requeue(self, task: Task, now: int, *, penalty: bool) -> None:
        self.children.unlend(task)
        if task.session is not None and self.sessions.lost(task, now):
            return  # its instance went with its worker
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
            self.end(task, err, now)
            return
        task.state = State.QUEUED
        task.queued_at = now
        self.queues[task.queue].push(task)  # keeps its old seq: first among its priority
        self.counters["requeued"] += 1
        self.event(
            "task.requeued", now, task_id=task.task_id, trace=task.trace, attempts=task.attempts
        )

    # ------------------------------------------------------------------ timers
    def tick(self, now: int) -> None:
        """Liveness, deadlines and retention; run about every 100 ms."""
        self.members.expire(now)
        self.sessions.expire(now)
        self.tensors.tick(now)
        while self.deadlines and self.deadlines[0][0] <= now:
            _, _, task = heapq.heappop(self.deadlines)
            if task.state is not State.DONE:
                self.end(task, WasmEngineError(E.TASK_DEADLINE, "deadline passed"), now)
        self.retention.expire(now)
        self.pump(now)
