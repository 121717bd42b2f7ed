"""The tensor plane's side of the scheduler: :class:`~.leases.Leases` wired to messages.

Owns what the orchestrator does for the tensor plane, called from a few hooks
(each one line where it sits): ``hello`` (a worker's segments, from
``worker.hello``), ``lost`` (a worker lost or gone: its holds released, its
segments reclaimed), ``tick`` (lease deadlines), and the ``shm.lease`` /
``shm.release`` messages. Frees go to owners as ``shm.free``; segments to unlink
are collected in ``reclaim`` for ``service`` (the one module that does I/O),
and only when the owner shares the orchestrator's shm namespace: elsewhere the
orchestrator cannot reach them and says so in a counter.
Pure, as the scheduler it is part of.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.messages import ShmFree, ShmLease, ShmRelease, WorkerHello
from wasm_engine.protocol import Header, make_header
from wasm_engine.tensors.ref import TensorRef
from wasm_engine.tensors.shm import shm_namespace

from .leases import Free, Leases
from .outbox import BACK
from .tasks import State, Task
from .workers import Worker

if TYPE_CHECKING:
    from .scheduler import Scheduler

log = logging.getLogger("orchestrator.tensors")


class TensorHooks:
    def __init__(self, sched: Scheduler, ns: str | None = None) -> None:
        self.sched = sched
        self.leases = Leases(int(sched.settings.lease_ttl * 1e9))
        self.ns = ns if ns is not None else shm_namespace()
        self.reclaim: list[str] = []  # segment names for service to unlink

    # ------------------------------------------------------------------ hooks
    def hello(self, worker: Worker, header: Header, msg: WorkerHello) -> None:
        if not msg.segments:
            return
        owner = _owner(worker)
        self.leases.lose_owner(owner)  # a re-hello announces its segments afresh
        try:
            self.leases.attach(owner, worker.shm_ns, [(s["name"], s["size"]) for s in msg.segments])
        except WasmEngineError as err:
            log.warning("worker %s announced bad segments: %s", worker.name, err)
            self.sched.error(BACK, worker.peer, header.id, err)

    def lost(self, worker: Worker, why: str, now: int) -> None:
        """``worker`` is gone (``why``: heartbeat, unreachable, bye) or said hello
        again (``re-hello``: same process, its segments stay)."""
        self._send_frees(self.leases.drop_holder(worker.name))
        if why == "re-hello":
            return
        names = self.leases.lose_owner(_owner(worker))
        if not names:
            return
        if worker.shm_ns == self.ns:
            self.reclaim.extend(names)
            self.sched.counters["shm_segments_reclaimed"] += len(names)
        else:  # another host or container: its own IPC namespace goes with it
            self.sched.counters["shm_segments_elsewhere"] += len(names)
        self.sched.event("shm.reclaimed", now, worker=worker.name, segments=len(names), why=why)

    def tick(self, now: int) -> None:
        self._send_frees(self.leases.expire(now))

    def finished(self, task: Task, now: int) -> None:
        """A child's tensors pass to its parent task, renewed for a ttl (it reads them
        after ``we.wait``); a task that finishes lets go of its children's tensors."""
        leases, parent = self.leases, task.parent_task
        if parent is not None and task.task_id in leases.holding:
            if parent.state is State.DONE:  # it ended first (deadline, cancel): nobody reads
                self._send_frees(leases.drop_holder(task.task_id))
            else:
                leases.transfer(task.task_id, children_of(parent.task_id), now)
        self._send_frees(leases.drop_holder(children_of(task.task_id)))

    # ------------------------------------------------------------------ messages
    def lease(self, peer: bytes, header: Header, msg: ShmLease, now: int) -> None:
        """``shm.lease`` on the back socket: only a registered worker owns segments."""
        worker = self.sched.workers.get(peer)
        try:
            if worker is None:
                raise WasmEngineError(E.WORKER_UNKNOWN, "shm.lease before worker.hello")
            ref = TensorRef.from_wire(msg.ref)
            ttl_ns = int(msg.ttl * 1e9) if msg.ttl > 0 else 0
            self.leases.lease(_owner(worker), ref, msg.holders, now, ttl_ns)
        except WasmEngineError as err:
            self.sched.error(BACK, peer, header.id, err)

    def release(self, sock: int, peer: bytes, header: Header, msg: ShmRelease) -> None:
        """``shm.release`` from a holder, on either socket."""
        try:
            ref = TensorRef.from_wire(msg.ref)
            free = self.leases.release(msg.holder, ref.segment, ref.offset, ref.generation)
        except WasmEngineError as err:
            self.sched.error(sock, peer, header.id, err)
            return
        if free is not None:
            self._send_frees([free])

    def _send_frees(self, frees: list[Free]) -> None:
        for free in frees:
            body = ShmFree(free.segment, free.offset, free.generation).pack()
            header = make_header("shm.free", sender=self.sched.name)
            self.sched.send(BACK, free.owner.encode(), header, body)


def children_of(task_id: str) -> str:
    """The holder name under which a running task holds its finished children's tensors:
    not its task id (that names the holds of its own result's reader) nor, with the NUL,
    any child's id (``<parent>/<n>``)."""
    return f"{task_id}\x00children"


def _owner(worker: Worker) -> str:
    """Owners are named by their task channel's routing id: where ``shm.free`` goes."""
    return worker.peer.decode("utf-8", "replace")
