"""Client requests: what the front socket asks of the scheduler.

Owns ``task.submit`` (a new task queued, acked when asked; a duplicate answered
from its stored reply or added to its waiters, another body under the same
``task_id`` refused as ``task.conflict``; a passed deadline, a missing agent or
a full queue refused), ``task.cancel``, ``agent.put`` and ``status.get``.
Part of the :class:`~orchestrator.scheduler.Scheduler`, and as pure as it.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.manifest import Manifest, parse_manifest
from wasm_engine.messages import AgentPut, AgentStored, Status, TaskAck, TaskSubmit
from wasm_engine.protocol import Header, make_header

from .outbox import FRONT
from .tasks import Finished, State, Task, TaskQueue

if TYPE_CHECKING:
    from .scheduler import Scheduler


class Intake:
    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self._seq = itertools.count()
        self._gone: set[bytes] = set()  # clients seen disconnected

    def submit(
        self,
        peer: bytes,
        header: Header,
        body: bytes,
        msg: TaskSubmit,
        now: int,
        side: int = FRONT,
        parent: Task | None = None,
    ) -> Task | None:
        """Queue a task (a client's, or with ``side`` BACK a running task's child);
        the new task, or None when it was answered at once (duplicate, refusal)."""
        s = self.sched
        s.counters["submitted"] += 1
        known = s.tasks.get(msg.task_id)
        if known is not None:
            self._duplicate(known, side, peer, header, body, msg)
            return None
        done = s.retention.get(msg.task_id)
        if done is not None:
            self._repeat(done, side, peer, header, body, msg.task_id)
            return None
        deadline = header.deadline
        if deadline is not None and deadline <= now:
            err = WasmEngineError(E.TASK_DEADLINE, "deadline already passed")
            s.error(side, peer, header.id, err, header.trace)
            return None
        agent = name = None
        if msg.kind == "wasm":
            stored = s.agents.find(msg.agent or "")
            if stored is None:
                err = WasmEngineError(
                    E.WASM_AGENT_MISSING,
                    f"agent {msg.agent} not stored: send agent.put first",
                    detail={"agent": msg.agent},
                )
                s.error(side, peer, header.id, err, header.trace)
                return None
            agent, name = stored.digest, stored.name
        elif not s.workers.serving(str(msg.model)):
            err = WasmEngineError(
                E.INFER_MODEL_MISSING,
                f"no worker serves model {msg.model!r}",
                detail={"model": msg.model},
            )
            s.error(side, peer, header.id, err, header.trace)
            return None
        key = "wasm" if msg.kind == "wasm" else str(msg.model)
        queue = s.queues.get(key)
        if queue is None:
            queue = s.queues[key] = TaskQueue(s.settings.queue_limit)
        if queue.full():
            s.counters["overloaded"] += 1
            s.event(
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
            s.error(side, peer, header.id, err, header.trace)
            return None
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
            side=side,
            parent_task=parent,
            depth=parent.depth + 1 if parent is not None else 0,
        )
        s.tasks[task.task_id] = task
        if msg.session is not None and msg.kind == "wasm":
            routed = s.sessions.route(task, msg.session, now)  # None: parked behind a call
            if routed is not None:
                s.enqueue(task, routed)
            elif task.state is State.DONE:
                return None  # answered at once (its session was lost)
        else:
            queue.push(task)
        if deadline is not None:
            heapq.heappush(s.deadlines, (deadline, task.seq, task))
        if s.telemetry:  # per-task events: their fields are not even built for nobody
            s.event(
                "task.queued",
                now,
                task_id=task.task_id,
                trace=task.trace,
                queue=key,
                priority=task.priority,
                parent=header.parent,
                parent_task=parent.task_id if parent is not None else None,
                kind=task.kind,
                agent=agent,
                name=name or None,
                model=msg.model,
            )
        if msg.ack:
            self._ack(task, side, peer, header.id, "queued")
        s.pump(now)
        return task

    def _ack(self, task: Task, side: int, peer: bytes, parent: str, state: str) -> None:
        s = self.sched
        header = make_header("task.ack", parent=parent, trace=task.trace, sender=s.name)
        s.send(side, peer, header, TaskAck(task.task_id, state).pack())

    def _duplicate(
        self,
        task: Task,
        side: int,
        peer: bytes,
        header: Header,
        body: bytes,
        msg: TaskSubmit,
    ) -> None:
        """The same ``task_id`` again while it is queued or running: one more waiter."""
        s = self.sched
        s.counters["duplicates"] += 1
        if body != task.body:
            self._conflict(task.task_id, side, peer, header)
            return
        task.waiters.append((side, peer, header.id))
        if msg.ack:
            self._ack(task, side, peer, header.id, "duplicate")

    def _repeat(
        self, done: Finished, side: int, peer: bytes, header: Header, body: bytes, task_id: str
    ) -> None:
        """The same ``task_id`` after it finished: its stored answer, not a second run."""
        s = self.sched
        s.counters["duplicates"] += 1
        _, first_body, trace, type_, reply_body, blobs = done
        if body != first_body:
            self._conflict(task_id, side, peer, header)
            return
        s.deliver(trace, type_, reply_body, blobs, side, peer, header.id)

    def _conflict(self, task_id: str, side: int, peer: bytes, header: Header) -> None:
        err = WasmEngineError(
            E.TASK_CONFLICT, f"task_id {task_id!r} was submitted with another body"
        )
        self.sched.error(side, peer, header.id, err, header.trace)

    def client_gone(self, peer: bytes, now: int) -> None:
        """A client disconnected: its tasks nobody else waits for are cancelled (a
        streaming ``generate`` leaves its batch and frees its KV cache)."""
        s = self.sched
        if peer in self._gone:
            return
        if len(self._gone) > 10_000:
            self._gone.clear()
        self._gone.add(peer)
        for task in list(s.tasks.values()):
            mine = task.client == peer and task.side == FRONT and not task.waiters
            if mine and task.state is not State.DONE:
                s.counters["cancelled_client_gone"] += 1
                s.end(task, WasmEngineError(E.TASK_CANCELLED, "its client is gone"), now)
        s.pump(now)

    def cancel(self, peer: bytes, header: Header, task_id: str, now: int) -> None:
        s = self.sched
        task = s.tasks.get(task_id)
        if task is None or task.state is State.DONE:
            s.error(
                FRONT,
                peer,
                header.id,
                WasmEngineError(E.TASK_NOT_FOUND, f"no running task {task_id!r}"),
            )
            return
        s.end(task, WasmEngineError(E.TASK_CANCELLED, "cancelled by the client"), now)

    def agent_put(self, peer: bytes, header: Header, msg: AgentPut, blobs: list[bytes]) -> None:
        s = self.sched
        if len(blobs) != 1:
            err = WasmEngineError(
                E.PROTO_BAD_FIELD, "agent.put carries the module as exactly one blob"
            )
            s.error(FRONT, peer, header.id, err)
            return
        try:
            if msg.manifest is None:
                manifest = Manifest(name=msg.name, reuse=msg.reuse)
            else:
                manifest = parse_manifest(msg.manifest)
            stored = s.agents.put(msg.digest, manifest, blobs[0], self._agents_in_use)
        except WasmEngineError as err:
            s.error(FRONT, peer, header.id, err)
            return
        reply = make_header("agent.stored", parent=header.id, sender=s.name)
        s.send(FRONT, peer, reply, AgentStored(stored.digest, len(stored.module)).pack())

    def _agents_in_use(self) -> set[str]:
        """Digests live tasks need (queued, parked or running): not to be evicted."""
        return {t.agent for t in self.sched.tasks.values() if t.agent is not None}

    def status(self, peer: bytes, header: Header, now: int) -> None:
        s = self.sched
        reply = make_header("status", parent=header.id, sender=s.name)
        s.send(FRONT, peer, reply, Status(**s.snapshot(now)).pack())
