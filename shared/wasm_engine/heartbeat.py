"""The worker's heartbeat channel: :class:`HeartbeatThread`.

A DEALER of its own to the orchestrator's back socket, owned by this thread
(as Jupyter kernels keep a heartbeat channel apart from their shell channel).
It sends ``worker.heartbeat`` every interval naming the loop's task channel, so
a worker busy in a long task stays alive, and watches the echoes: a silent
orchestrator (interval × liveness) means reconnect on a fresh socket (Paranoid
Pirate), a ``worker.unknown`` answer (the orchestrator restarted) means say
hello again. It tells the loop's main thread through an inproc PAIR socket
(:data:`CTRL_RECONNECT`, :data:`CTRL_REHELLO`) and raises the loop's
``ctrl_waiting`` flag. It sees the loop only through :class:`LoopView`.
Each beat carries the handler's counters as ``stats`` when the handler has
``report()`` (:class:`~wasm_engine.tasks.Reporting`); a report that fails is
logged once and the beats go on without it. After each beat the worker's tensor
plane lets go of mapped segments their owners have unlinked (``sweep``): the
only periodic thread a worker has, and off the task path.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

import zmq

from . import errors as E
from . import messages as M
from . import transport
from .config import Settings
from .envelope import EnvelopeError, decode, encode
from .liveness import Backoff, Liveness
from .protocol import make_header
from .tasks import Reporting, TaskHandler

if TYPE_CHECKING:
    from .tensors import TensorPlane

log = logging.getLogger("wasm_engine.worker")
CTRL_REHELLO, CTRL_RECONNECT = b"rehello", b"reconnect"


class LoopView(Protocol):
    """What the heartbeat thread reads from (and flags on) the worker loop."""

    settings: Settings
    ctx: zmq.Context[zmq.Socket[bytes]]
    ctrl_endpoint: str
    identity: bytes  # routing id of the task channel; changes on reconnect
    name: str
    ctrl_waiting: bool
    registered: bool  # the orchestrator welcomed the current hello
    handler: TaskHandler  # its optional report() fills the beats' stats
    tensors: TensorPlane | None  # swept after each beat

    def inflight(self) -> int: ...


class HeartbeatThread(threading.Thread):
    def __init__(self, loop: LoopView) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.loop = loop
        self.halt = threading.Event()
        s = loop.settings
        self.interval = s.heartbeat_interval
        self.live = Liveness(
            int(s.heartbeat_interval * 1e9), s.heartbeat_liveness, time.monotonic_ns()
        )
        self.backoff = Backoff(initial_s=s.heartbeat_interval, cap_s=30.0)
        handler = loop.handler
        self._report = handler.report if isinstance(handler, Reporting) else None
        self._report_failed = False

    def run(self) -> None:
        ctx = self.loop.ctx
        ctrl = ctx.socket(zmq.PAIR)
        ctrl.connect(self.loop.ctrl_endpoint)
        sock = transport.dealer(ctx, self.loop.settings.back)
        next_beat = 0.0
        hold_until = time.monotonic() + self.interval  # the first beat waits for the welcome
        try:
            while not self.halt.is_set():
                now = time.monotonic()
                if now >= next_beat and (self.loop.registered or now >= hold_until):
                    # (a beat sent before the hello arrived would be answered worker.unknown
                    # and counted as an error: it travels on another socket and can overtake it)
                    self._beat(sock)
                    self._sweep()
                    next_beat = now + self.interval
                due = next_beat if self.loop.registered else max(next_beat, now + 0.01)
                if sock.poll(max(1, int((due - time.monotonic()) * 1000)), zmq.POLLIN):
                    self._answer(sock, ctrl)
                if self.live.expired(time.monotonic_ns()):
                    # Paranoid Pirate: fresh sockets now, and keep beating on them; the
                    # backoff only postpones the next "silent" verdict, so a worker that
                    # registers with a restarted orchestrator is never seen silent.
                    delay = self.backoff.next_delay()
                    log.warning(
                        "orchestrator silent for %d heartbeats: reconnecting (next check +%.1fs)",
                        self.live.liveness,
                        delay,
                    )
                    self._tell(ctrl, CTRL_RECONNECT)
                    sock.close(0)
                    sock = transport.dealer(ctx, self.loop.settings.back)
                    self.live.beat(time.monotonic_ns() + int(delay * 1e9))
                    next_beat = 0.0
        finally:
            sock.close(0)
            ctrl.close(0)

    def _tell(self, ctrl: zmq.Socket[bytes], what: bytes) -> None:
        transport.send(ctrl, [what])
        self.loop.ctrl_waiting = True  # after the send: the main thread then finds it

    def _beat(self, sock: zmq.Socket[bytes]) -> None:
        with contextlib.suppress(zmq.Again):  # not connected yet: liveness handles silence
            transport.send(
                sock,
                encode(make_header("worker.heartbeat", sender=self.loop.name), self._body()),
                transport.NOBLOCK,
            )

    def _sweep(self) -> None:
        tensors = self.loop.tensors
        if tensors is None:
            return
        try:
            gone = tensors.sweep()
        except Exception:  # a bug there must not stop the beats
            log.exception("sweeping mapped shm segments failed")
            return
        if gone:
            log.info("unmapped %d shm segments their owners unlinked", gone)

    def _body(self) -> bytes:
        """The beat, with the handler's counters as ``stats``; without them when it has no
        ``report`` or the report fails (logged once: a bug there must not stop the beats,
        or the worker would be declared lost)."""
        worker, inflight = self.loop.identity.decode(), self.loop.inflight()
        if self._report is not None:
            try:
                stats = self._report()
                if not isinstance(stats, dict):
                    raise TypeError(f"report() returned {type(stats).__name__}, not a dict")
                return M.WorkerHeartbeat(worker, inflight, stats).pack()
            except Exception:
                if not self._report_failed:
                    log.exception("the handler's report failed: heartbeats go without stats")
                self._report_failed = True
        return M.WorkerHeartbeat(worker, inflight).pack()

    def _answer(self, sock: zmq.Socket[bytes], ctrl: zmq.Socket[bytes]) -> None:
        while True:
            try:
                frames = transport.recv(sock, transport.NOBLOCK)
            except zmq.Again:
                return
            self.live.beat(time.monotonic_ns())
            self.backoff.reset()
            try:
                env = decode(frames)
            except EnvelopeError as err:
                log.warning("bad frame on heartbeat channel: %s", err)
                continue
            if env.header.type == "error":
                msg = M.parse("error", env.body)
                if isinstance(msg, M.Error) and msg.code == E.WORKER_UNKNOWN:
                    self._tell(ctrl, CTRL_REHELLO)
