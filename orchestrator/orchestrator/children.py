"""Child requests in the orchestrator: a running task's ``we.spawn`` / ``we.send`` /
``we.generate`` / ``we.infer``, sent by its worker as a ``task.submit`` on the back
socket with ``parent`` = the dispatch it runs in.

Owns the checks (the parent must be running on that worker; nesting is capped by
``max_depth``: ``task.too_deep``) and the credit loan: while a task has children
not answered, its worker may hold one more dispatch (``Worker.lent``), so a worker
whose every task waits on children still gets those children. A child is queued
and answered like any task, on the back socket. Part of the
:class:`~orchestrator.scheduler.Scheduler`, and as pure as it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.messages import TaskSubmit
from wasm_engine.protocol import Header

from .outbox import BACK
from .tasks import State, Task
from .workers import Worker

if TYPE_CHECKING:
    from .scheduler import Scheduler


class Children:
    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched

    def submit(
        self, worker: Worker, header: Header, body: bytes, msg: TaskSubmit, now: int
    ) -> None:
        """A running task asks for another (``we.spawn``, ``we.generate``…): queue it,
        answer to the worker, and lend the parent's credit until its children answer,
        so a worker whose tasks all wait on children still takes those children."""
        s = self.sched
        dispatch = header.parent or ""
        parent = s.dispatches.get(dispatch)
        if parent is None or parent.worker != worker.peer or parent.state is not State.RUNNING:
            err = WasmEngineError(
                E.TASK_NOT_FOUND,
                "a child request must name a dispatch its worker is running as parent",
                detail={"parent": dispatch},
            )
            s.error(BACK, worker.peer, header.id, err, header.trace)
            return
        if parent.depth + 1 > s.settings.max_depth:
            err = WasmEngineError(
                E.TASK_TOO_DEEP,
                f"child requests nest deeper than {s.settings.max_depth}",
                detail={"depth": parent.depth + 1, "limit": s.settings.max_depth},
            )
            s.error(BACK, worker.peer, header.id, err, header.trace)
            return
        child = s.intake.submit(worker.peer, header, body, msg, now, BACK, parent)
        if child is not None:
            parent.waiting_on += 1
            if parent.waiting_on == 1:
                worker.lent += 1
                s.pump(now)

    def unlend(self, task: Task) -> None:
        """``task`` waits on no child any more (answered, or it left its worker)."""
        s = self.sched
        if task.waiting_on <= 0:
            return
        task.waiting_on = 0
        worker = s.workers.get(task.worker) if task.worker is not None else None
        if worker is not None and worker.lent > 0:
            worker.lent -= 1

    def answered(self, child: Task) -> None:
        """A child finished (any way): its parent waits on one child fewer."""
        up = child.parent_task
        if up is not None and up.waiting_on > 0:
            if up.waiting_on == 1:
                self.unlend(up)
            else:
                up.waiting_on -= 1
