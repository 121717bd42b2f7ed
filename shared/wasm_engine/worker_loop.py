"""The worker skeleton both worker kinds run: hello, credits, tasks, reconnect.

Two channels to the orchestrator's back socket, as Jupyter kernels keep a
heartbeat channel apart from their shell channel:
- the *task channel* (a DEALER owned by the main thread, here in
  :class:`WorkerLoop`) carries hello, dispatches, results, child requests and
  bye. With ``concurrency`` 1 a task that cannot wait on others runs on the main
  thread itself (the fast path: no hand-off); the others, and every task when
  ``concurrency`` K > 1, run on task threads (:mod:`wasm_engine.task_threads`),
  at most K computing at once;
- the *heartbeat channel* (a DEALER owned by the thread of
  :class:`wasm_engine.heartbeat.HeartbeatThread`) keeps the worker alive and
  watches the orchestrator; it asks this loop to reconnect or to say hello again
  through an inproc PAIR socket, which the loop acts on between tasks.

SIGTERM (via :meth:`WorkerLoop.stop`): the task running finishes and its result
is sent; tasks received but not started are handed back in ``worker.bye``.

This module owns the sockets and the serve loop; the loop mixes in what it does
with them: registration and each orchestrator message
(:mod:`wasm_engine.worker_messages`), running tasks (:mod:`wasm_engine.worker_tasks`).

A running task streams through the ``emit`` the loop hands its handler: each
call sends one ``task.event`` (``seq`` 0, 1, 2 … per attempt) at once, ahead of
the task's result on the same channel.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import deque
from typing import Any

import zmq

from . import messages as M
from . import transport
from .config import Settings
from .envelope import Envelope, EnvelopeError, decode, encode
from .heartbeat import CTRL_RECONNECT, CTRL_REHELLO, HeartbeatThread
from .protocol import Header, make_header
from .task_threads import TaskThreads
from .tasks import Emit, TaskHandler
from .tensors import TensorPlane, process
from .worker_messages import MessageHandling, worker_name
from .worker_tasks import TaskRunning

__all__ = ["CTRL_RECONNECT", "CTRL_REHELLO", "Emit", "TaskHandler", "WorkerLoop"]

log = logging.getLogger("wasm_engine.worker")
MAX_TASK_THREADS = 1024  # tasks on threads at once, computing or waiting on children


class WorkerLoop(MessageHandling, TaskRunning):
    def __init__(
        self,
        settings: Settings,
        handler: TaskHandler,
        *,
        credits: int | None = None,
        tensors: TensorPlane | None = None,
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.credits = credits or settings.credits
        self.name = worker_name(settings, handler.kind)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.ctrl_endpoint = f"inproc://worker-ctrl-{id(self)}"
        self.identity = b""
        self.registered = False
        self._hello_at = 0.0  # monotonic time of the last hello not yet welcomed
        self.pending: deque[tuple[M.TaskDispatch, Envelope]] = deque()
        self._stopping = False
        self._busy = 0
        self.completed = 0
        self.polls = 0  # times the loop slept in poll (a loop that spins shows here)
        self._sock: zmq.Socket[bytes] | None = None
        self._out: list[list[bytes]] = []  # replies not sent yet (see _flush)
        self.ctrl_waiting = False  # set by the heartbeat thread: a plain flag, no syscall per task
        self.burst = 32  # most replies held back while more tasks wait
        self.usual_us: dict[str, float] = {}  # agent -> moving average of its run time
        self._running: tuple[M.TaskDispatch, Envelope] | None = None  # whose events emit sends
        self._seq = 0
        # threads are made only as tasks need them; a parent waiting on children holds one
        self.threads = TaskThreads(self.name, settings.concurrency, MAX_TASK_THREADS)
        self._async = callable(getattr(handler, "start", None))  # runs tasks by callback
        # the worker's plane: given (shared with the handler), or made in run(); closed at stop
        self.tensors: TensorPlane | None = tensors

    def inflight(self) -> int:
        return len(self.pending) + self._busy + self.threads.running

    def stop(self) -> None:
        """Graceful stop (safe from a signal handler)."""
        self._stopping = True

    def run_until_signalled(self) -> int:
        """:meth:`run`, stopped gracefully by SIGTERM or SIGINT (a worker's entry point)."""

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("signal %d: finishing what runs, handing back the rest", signum)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        return self.run()

    # ------------------------------------------------------------------ channel
    def _connect(self) -> zmq.Socket[bytes]:
        if self._sock is not None:
            self._sock.close(0)
        self.identity = f"{self.name}-{os.urandom(3).hex()}".encode()
        self._sock = transport.dealer(
            self.ctx, self.settings.back, identity=self.identity, linger_ms=1000
        )
        self._hello()
        return self._sock

    def _send(self, header: Header, body: bytes, blobs: list[bytes] | None = None) -> None:
        self._out.append(encode(header, body, blobs or ()))

    def _flush(self) -> None:
        """Send what the tasks answered, in one burst: ZeroMQ wakes the I/O thread
        once per burst, not once per message."""
        out, self._out = self._out, []
        if self._sock is not None:
            for frames in out:
                transport.send(self._sock, frames)

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        if self.tensors is None:
            self.tensors = process.plane_for(self.settings, self.name)  # preflight, the arena
        ctrl = self.ctx.socket(zmq.PAIR)
        ctrl.bind(self.ctrl_endpoint)
        sock = self._connect()
        hb = HeartbeatThread(self)
        hb.start()
        log.info(
            "worker %s (%s) connecting to %s with %d credits",
            self.name,
            self.handler.kind,
            self.settings.back,
            self.credits,
        )
        poller = zmq.Poller()
        poller.register(ctrl, zmq.POLLIN)
        poller.register(sock, zmq.POLLIN)
        poller.register(self.threads.wake_fd, zmq.POLLIN)
        try:
            sock = self._serve(sock, ctrl, poller)
            self._finish_threads(sock)
            self._bye()
            self._flush()
        finally:
            hb.halt.set()
            hb.join(timeout=5)
            ctrl.close(0)
            if self._sock is not None:
                self._sock.close()
            self.threads.close()
            self.ctx.term()
            self.tensors.close()
        log.info("worker %s stopped after %d tasks", self.name, self.completed)
        return 0

    def _serve(
        self, sock: zmq.Socket[bytes], ctrl: zmq.Socket[bytes], poller: zmq.Poller
    ) -> zmq.Socket[bytes]:
        """The loop until stopped: answers out, dispatches in, tasks started."""
        poll_ms = max(10, int(self.settings.heartbeat_interval * 1000 / 2))
        wake, outbox = self.threads.wake_fd, self.threads.outbox
        since_drain, blocked = 0, False  # blocked: the next task waits for a run permit
        while not self._stopping:
            if outbox:
                self._take_outbox()
            if not self.pending or blocked:
                self._flush()
                self.polls += 1
                if any(fd == wake for fd, _ in poller.poll(poll_ms)):
                    self.threads.take_wakeups()
                if blocked:  # waiting for a permit: read what arrived, or poll spins on it
                    since_drain, blocked = 8, False
            elif len(self._out) >= self.burst:
                self._flush()
            if self.ctrl_waiting:  # between tasks too: a stale queue is dropped
                self.ctrl_waiting = False
                fresh = self._control(ctrl)
                if fresh is not sock:
                    poller.unregister(sock)
                    poller.register(fresh, zmq.POLLIN)
                    sock = fresh
            if not self.pending or since_drain >= 8:  # new dispatches and cancels
                self._drain(sock)
                since_drain = 0
            if self.pending:
                if self._start(*self.pending[0]):
                    self.pending.popleft()
                    since_drain += 1
                else:
                    blocked = True
        return sock

    def _finish_threads(self, sock: zmq.Socket[bytes]) -> None:
        """Stopping: let the tasks on threads finish (serving their child answers)."""
        while self.threads.running:
            self._take_outbox()
            self._flush()
            if sock.poll(100, zmq.POLLIN):
                self._drain(sock)
            self.threads.take_wakeups()
        self._take_outbox()

    def _take_outbox(self) -> None:
        """What task threads sent joins the replies to flush."""
        outbox, out = self.threads.outbox, self._out
        while outbox:
            out.append(outbox.popleft())

    def _control(self, ctrl: zmq.Socket[bytes]) -> zmq.Socket[bytes]:
        """Act on everything the heartbeat thread asked, collapsed: a reconnect says
        hello on the fresh socket, and makes any re-hello asked with it moot."""
        asked = set()
        for what, *_ in transport.drain(ctrl):
            asked.add(what)
        if CTRL_RECONNECT in asked:
            log.warning("reconnecting task channel")
            self._connect()
        elif CTRL_REHELLO in asked:
            self._rehello()
        if self._sock is None:
            raise RuntimeError("task channel closed")
        return self._sock

    def _drain(self, sock: zmq.Socket[bytes]) -> None:
        for frames in transport.drain(sock):
            try:
                env = decode(frames)
            except EnvelopeError as err:
                log.warning("bad frame from orchestrator: %s", err)
                continue
            self._on_message(env)

    def _bye(self) -> None:
        if self._sock is not None:  # dispatches still queued in the socket were received too
            self._drain(self._sock)
        returned = [d.task_id for d, _ in self.pending]
        self.pending.clear()
        log.info("saying bye, handing back %d tasks", len(returned))
        self._send(make_header("worker.bye", sender=self.name), M.WorkerBye(returned).pack())
