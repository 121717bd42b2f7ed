"""Worker membership: workers joining, beating, leaving and being lost.

Owns what the back socket says about a worker's presence (``worker.hello``,
``worker.heartbeat``, ``worker.credit``, ``worker.bye``, a failed send) and the
liveness verdict on silent workers, kept in the scheduler's
:class:`~orchestrator.workers.Registry`. A worker that leaves or is lost hands
its dispatches back to the scheduler to requeue; the attempt counts unless the
worker handed the task back in its bye or dropped it by saying hello again.
A heartbeat's ``stats`` (an inference worker's counters) is kept on the
worker's record for the snapshot, and what it added since the previous one
goes out as one ``infer.stats`` event (:mod:`.infer_stats`); a record's first
report is only its baseline, so a worker that registers again (a reconnect, a
restarted orchestrator) does not count its past twice.
Part of the :class:`~orchestrator.scheduler.Scheduler`, and as pure as it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.messages import (
    WorkerBye,
    WorkerCredit,
    WorkerHeartbeat,
    WorkerHello,
    WorkerWelcome,
)
from wasm_engine.protocol import Header, make_header

from .infer_stats import deltas
from .outbox import BACK
from .tasks import State
from .workers import Worker

if TYPE_CHECKING:
    from .scheduler import Scheduler


class Membership:
    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.workers = sched.workers  # the scheduler's registry, one hop nearer

    def touch(self, peer: bytes, now: int) -> Worker | None:
        worker = self.workers.get(peer)
        if worker is not None:
            worker.liveness.beat(now)
        return worker

    def hello(self, peer: bytes, header: Header, msg: WorkerHello, now: int) -> None:
        s = self.sched
        known = self.workers.get(peer)
        if known is not None:  # it dropped what it held when it said hello: not its fault
            self._lose(known, now, "re-hello", penalty=False)
        worker = self.workers.add(peer, msg, now)
        s.tensors.hello(worker, header, msg)
        s.event(
            "worker.joined",
            now,
            worker=worker.name,
            kind=worker.kind,
            credits=worker.credits,
            device=worker.device,
            host=worker.host,
        )
        interval = s.settings.heartbeat_interval
        welcome = WorkerWelcome(
            peer.decode("utf-8", "replace"), interval, s.settings.heartbeat_liveness
        )
        s.send(
            BACK,
            peer,
            make_header("worker.welcome", parent=header.id, sender=s.name),
            welcome.pack(),
        )
        s.pump(now)

    def heartbeat(self, peer: bytes, header: Header, msg: WorkerHeartbeat, now: int) -> None:
        """A heartbeat arrives on the worker's heartbeat channel (``peer``) and names its
        task channel; it is echoed, or answered ``worker.unknown`` (say hello again)."""
        s = self.sched
        worker = self.touch(msg.worker.encode(), now)
        if worker is None:
            err = WasmEngineError(
                E.WORKER_UNKNOWN, "heartbeat from an unregistered worker: send worker.hello"
            )
            s.error(BACK, peer, header.id, err)
            return
        echo = WorkerHeartbeat(msg.worker, len(worker.inflight))
        s.send(
            BACK,
            peer,
            make_header("worker.heartbeat", parent=header.id, sender=s.name),
            echo.pack(),
        )
        if msg.stats:
            self._stats(worker, msg.stats, now)

    def _stats(self, worker: Worker, stats: dict[str, Any], now: int) -> None:
        models = deltas(worker.stats, stats) if worker.stats else []  # the first: a baseline
        worker.stats = stats
        if models:
            self.sched.event("infer.stats", now, worker=worker.name, models=models)

    def credit(self, worker: Worker, msg: WorkerCredit, now: int) -> None:
        worker.credits = msg.credits
        self.sched.pump(now)

    def bye(self, worker: Worker, msg: WorkerBye, now: int) -> None:
        s = self.sched
        returned = set(msg.returned)
        for dispatch_id, task_id in list(worker.inflight.items()):
            task = s.dispatches.pop(dispatch_id, None)
            if task is not None and task.dispatch_id == dispatch_id and task.state is State.RUNNING:
                s.requeue(task, now, penalty=task_id not in returned)
        worker.inflight.clear()
        self.workers.remove(worker)
        s.sessions.worker_gone(worker, now)
        s.tensors.lost(worker, "bye", now)
        s.event("worker.left", now, worker=worker.name)
        s.pump(now)

    def unreachable(self, peer: bytes, now: int) -> None:
        """A send to ``peer`` on the back socket failed: that worker is gone."""
        worker = self.workers.get(peer)
        if worker is not None:
            self._lose(worker, now, "unreachable")
            self.sched.pump(now)

    def expire(self, now: int) -> None:
        """Lose every worker silent for interval × liveness (the scheduler's tick)."""
        for worker in self.workers.expired(now):
            self._lose(worker, now, "heartbeat")

    def _lose(self, worker: Worker, now: int, why: str, *, penalty: bool = True) -> None:
        s = self.sched
        self.workers.remove(worker)
        s.tensors.lost(worker, why, now)
        s.counters["workers_lost" if penalty else "workers_rejoined"] += 1
        s.event("worker.lost", now, worker=worker.name, why=why, inflight=len(worker.inflight))
        for dispatch_id in list(worker.inflight):
            task = s.dispatches.pop(dispatch_id, None)
            if task is not None and task.dispatch_id == dispatch_id and task.state is State.RUNNING:
                s.requeue(task, now, penalty=penalty)
        worker.inflight.clear()
        s.sessions.worker_gone(worker, now)
