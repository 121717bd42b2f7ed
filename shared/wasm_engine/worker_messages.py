"""What a worker says to register, and what it does with each orchestrator message.

The mixin :class:`MessageHandling` of :class:`~wasm_engine.worker_loop.WorkerLoop`
(which owns the socket; this module sends nothing itself: what it says joins the
loop's reply burst through ``_send`` / ``_reply``):

- **registration**: :func:`worker_name` (the name a worker goes by), the
  ``worker.hello`` it says on every fresh task channel, saying it again once when
  the orchestrator does not know us, and the ``worker.welcome`` that answers it;
- **orchestrator messages** on the task channel: dispatches queued (or refused by
  the handler), child answers handed to the task threads, cancels, session ends,
  ``shm.free`` and errors.
"""

from __future__ import annotations

import logging
import os
import socket as pysocket
import time
from collections import deque
from collections.abc import Callable

from . import errors as E
from . import messages as M
from .children import ChildReply
from .config import Settings
from .envelope import Envelope
from .errors import WasmEngineError
from .protocol import Header, make_header
from .task_threads import TaskThreads
from .tasks import TaskHandler
from .tensors import TensorPlane, process, shm_namespace

log = logging.getLogger("wasm_engine.worker")


def worker_name(settings: Settings, kind: str) -> str:
    """The name a worker of ``kind`` goes by: ``worker_name``, else <kind>-<host>-<pid>."""
    return settings.worker_name or f"{kind}-{pysocket.gethostname()}-{os.getpid()}"


class MessageHandling:
    """Registration and orchestrator messages for the worker loop (attributes are the loop's)."""

    settings: Settings
    handler: TaskHandler
    threads: TaskThreads
    tensors: TensorPlane | None
    name: str
    credits: int
    identity: bytes
    registered: bool
    _hello_at: float
    pending: deque[tuple[M.TaskDispatch, Envelope]]
    _send: Callable[[Header, bytes], None]
    _reply: Callable[[Envelope, str, bytes], None]

    def _rehello(self) -> None:
        """The orchestrator says it does not know us. Say hello once: not again while
        a hello is on its way (a heartbeat can overtake it, and every heartbeat until
        the welcome gets the same answer)."""
        window = self.settings.heartbeat_interval * self.settings.heartbeat_liveness
        if self.registered or time.monotonic() - self._hello_at > window:
            log.warning("orchestrator does not know us (restarted?): saying hello again")
            self._hello()

    def _hello(self) -> None:
        self.registered = False
        self._hello_at = time.monotonic()
        self.pending.clear()  # an orchestrator that forgot us forgot these dispatches too
        self.handler.end_session(None, None)  # and its sessions: their next calls start fresh
        lost = M.Error(E.TASK_WORKER_LOST, "the orchestrator restarted", retryable=True)
        self.threads.fail_children(ChildReply("error", lost.pack()))
        hello = M.WorkerHello(
            name=self.name,
            kind=self.handler.kind,
            credits=self.credits,
            capabilities=self.handler.capabilities(),
            host=pysocket.gethostname(),
            shm_ns=shm_namespace(),
            device=self.handler.device,
            pid=os.getpid(),
            segments=process.hello_segments(self.tensors) if self.tensors else [],
        )
        self._send(make_header("worker.hello", sender=self.name), hello.pack())

    def _on_message(self, env: Envelope) -> None:
        type_ = env.header.type
        try:
            if type_ in ("task.result", "error") and self.threads.resolve(
                env.header.parent, type_, env.body
            ):
                return  # a child request answered
            if type_ in ("task.ack", "task.event"):
                return  # a child's ack or stream: its result is what the task waits for
            if type_ == "task.dispatch":
                msg = M.parse(type_, env.body)
                if isinstance(msg, M.TaskDispatch):
                    try:
                        self.handler.accept(msg, env)
                    except WasmEngineError as refused:
                        self._reply(env, "error", M.Error(**refused.to_body()).pack())
                        return
                    self.pending.append((msg, env))
            elif type_ == "worker.welcome":
                self.registered = True
                self._hello_at = 0.0
                log.info("registered with the orchestrator as %s", self.identity.decode())
            elif type_ == "session.end":
                ended = M.parse(type_, env.body)
                if isinstance(ended, M.SessionEnd):
                    self.handler.end_session(ended.agent, ended.session)
            elif type_ == "task.cancel":
                self._cancel(env)
            elif type_ == "shm.free":
                freed = M.parse(type_, env.body)
                if isinstance(freed, M.ShmFree) and self.tensors is not None:
                    process.on_free(self.tensors, freed)
            elif type_ == "error":
                said = M.parse(type_, env.body)
                if isinstance(said, M.Error) and said.code == E.WORKER_UNKNOWN:
                    self._rehello()
                else:
                    log.warning("orchestrator says: %s", said)
            else:
                log.warning("unexpected %s on the task channel", type_)
        except WasmEngineError as err:
            log.warning("bad %s from orchestrator: %s", type_, err)

    def _cancel(self, env: Envelope) -> None:
        for item in list(self.pending):
            if item[1].header.id == env.header.parent:
                self.pending.remove(item)
                err = WasmEngineError(E.TASK_CANCELLED, "cancelled before it started")
                self._reply(item[1], "error", M.Error(**err.to_body()).pack())
                return
        cancelled = M.parse("task.cancel", env.body)
        if isinstance(cancelled, M.TaskCancel):  # running: the handler stops it if it can
            self.handler.cancel(cancelled.task_id)
