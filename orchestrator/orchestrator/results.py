"""How a task ends: a worker's answer, or an end no worker gave (cancel, deadline,
a lost session or worker), and the delivery of the one answer to all who wait.

Owns ``worker_reply`` (a ``task.result`` or ``error`` read by its header only:
the body goes on to the client as the worker sent it; a reply for a dispatch
that is no longer current is a late result, counted and dropped), the
forwarding of a running task's ``task.event`` stream, ``end`` (the typed error
for a task no worker answered, with a ``task.cancel`` to the worker still
running it), and the finish every way shares: the task leaves the live table
for retention, its waiters (duplicate submits) get the same answer, a child's
parent waits on one child fewer. Part of the
:class:`~orchestrator.scheduler.Scheduler`, and as pure as it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgpack

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.messages import Error, TaskCancel
from wasm_engine.protocol import Header, make_header

from .outbox import BACK
from .tasks import Reply, State, Task, finished
from .workers import Worker

if TYPE_CHECKING:
    from .scheduler import Scheduler


class Results:
    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched

    def worker_reply(
        self, worker: Worker, header: Header, body: bytes, blobs: list[bytes], now: int
    ) -> None:
        """``task.result`` or ``error`` from a worker; read by its header only."""
        s = self.sched
        dispatch_id = header.parent or ""
        task_id = worker.inflight.pop(dispatch_id, None)
        # only a dispatch this worker holds is its to answer
        task = s.dispatches.pop(dispatch_id, None) if task_id is not None else None
        if task is None or task.dispatch_id != dispatch_id or task.state is not State.RUNNING:
            s.counters["late_results"] += 1
            s.event(
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
            code = None if ok else _error_code(body)  # for telemetry: failures only
            if (
                code == E.WASM_AGENT_MISSING
                and _resendable(task)
                and s.agents.get(task.agent or "")
            ):
                worker.agents.discard(task.agent or "")  # it dropped the module (its cap)
                s.counters["modules_resent"] += 1
                s.requeue(task, now, penalty=False)  # the next dispatch carries it again
            else:
                self._finish(task, Reply(header.type, body, blobs, ok), now, code)
        s.pump(now)

    def worker_event(self, worker: Worker, header: Header, body: bytes, blobs: list[bytes]) -> None:
        """A running task's ``task.event``: on to whoever submitted it."""
        s = self.sched
        task = s.dispatches.get(header.parent or "")
        if task is not None and task.state is State.RUNNING:
            head = make_header(header.type, parent=task.submit_id, trace=task.trace, sender=s.name)
            s.send(task.side, task.client, head, body, blobs)

    def end(self, task: Task, err: WasmEngineError, now: int) -> None:
        """End a task that no worker answered for (cancel, deadline, lost)."""
        s = self.sched
        if task.state is State.QUEUED and not task.parked:
            s.queues[task.queue].discard(task)
        elif task.state is State.RUNNING and task.worker is not None:
            self._cancel_on_worker(task)
        self._finish(task, Reply("error", Error(**err.to_body()).pack(), [], False), now, err.code)

    def _cancel_on_worker(self, task: Task) -> None:
        if task.worker is None or task.dispatch_id is None:
            return
        s = self.sched
        header = make_header(
            "task.cancel", parent=task.dispatch_id, trace=task.trace, sender=s.name
        )
        s.send(BACK, task.worker, header, TaskCancel(task.task_id).pack())

    def _finish(self, task: Task, reply: Reply, now: int, code: str | None = None) -> None:
        s = self.sched
        s.children.unlend(task)
        if task.session is not None:
            s.sessions.finished(task, now)
        task.state = State.DONE
        task.worker = None
        if s.tasks.get(task.task_id) is task:
            del s.tasks[task.task_id]
        if task.dispatch_id is not None and s.dispatches.get(task.dispatch_id) is task:
            del s.dispatches[task.dispatch_id]  # a late answer now finds nothing: late
        s.retention.add(task.task_id, finished(task, reply, now))
        if s.tensors.leases.holding:  # (no tensor leases, nothing to look up per task)
            s.tensors.finished(task, now)
        s.counters["completed" if reply.ok else "failed"] += 1
        if s.telemetry:
            s.event(
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
        self.deliver(
            task.trace, reply.type, reply.body, reply.blobs, task.side, task.client, task.submit_id
        )
        for side, peer, parent in task.waiters:
            self.deliver(task.trace, reply.type, reply.body, reply.blobs, side, peer, parent)
        task.waiters.clear()
        if task.parent_task is not None:
            s.children.answered(task)

    def deliver(
        self,
        trace: str | None,
        type_: str,
        body: bytes,
        blobs: Sequence[bytes],
        side: int,
        peer: bytes,
        parent: str,
    ) -> None:
        """Send a finished task's answer to one of those waiting for it."""
        s = self.sched
        header = make_header(type_, parent=parent, trace=trace, sender=s.name)
        s.send(side, peer, header, body, blobs)


def _resendable(task: Task) -> bool:
    """A worker that says it lacks a module it was sent before (not with this dispatch)
    dropped it: the task goes again, with the module (which the store still holds: a
    live task's agent is never evicted). A session call does not (its instance would
    be gone too)."""
    return task.agent is not None and not task.module_sent and task.session is None


def _error_code(body: bytes) -> str | None:
    """The ``code`` of a worker's error body (read only on failures, for telemetry)."""
    try:
        raw = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:
        return None
    code = raw.get("code") if isinstance(raw, dict) else None
    return code if isinstance(code, str) else None
