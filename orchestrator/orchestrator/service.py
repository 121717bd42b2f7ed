"""The orchestrator's sockets: the only module of this service that touches ZeroMQ.

One thread, one poll loop. Each round it drains every ready socket (NOBLOCK until
``Again``), hands decoded envelopes to the :class:`Scheduler`, then sends the
scheduler's outbox; its telemetry goes out in one batch at most every
``EVENTS_NS`` (fewer, larger PUB messages: less work per event for the I/O
thread, and a bounded backlog for a stalled subscriber). A send to a gone
peer raises (``ROUTER_MANDATORY``): a gone client is counted, a gone worker is
lost. Nothing a peer sends can stop the loop: every defect becomes a typed error
to that peer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import zmq

from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine import transport
from wasm_engine.config import Settings
from wasm_engine.envelope import Envelope, EnvelopeError, decode, encode
from wasm_engine.errors import ProtocolError, WasmEngineError
from wasm_engine.protocol import make_header
from wasm_engine.tensors import unlink

from .scheduler import BACK, FRONT, Scheduler

log = logging.getLogger("orchestrator")

DRAIN_MAX = 512  # messages per socket per round, so neither socket starves the other
FLUSH_EVERY = 16  # send the outbox this often inside a drain: downstream starts sooner
TICK_NS = 100_000_000
SNAPSHOT_NS = 1_000_000_000
EVENTS_NS = 50_000_000  # telemetry.events at most 20 times a second
TELEMETRY_HWM = 100  # batches queued per subscriber (5 s at the cadence above), then dropped


class Orchestrator:
    def __init__(self, settings: Settings, *, name: str = "orchestrator") -> None:
        self.settings = settings
        self.name = name
        self.scheduler = Scheduler(settings, time.time_ns(), name)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.front = transport.router(self.ctx, settings.front)
        self.back = transport.router(self.ctx, settings.back)
        self.pub = transport.publisher(self.ctx, settings.telemetry, hwm=TELEMETRY_HWM)
        self._telemetry_seq = 0  # PUB drops silently per slow subscriber: seq lets it count
        self._topics: set[bytes] = set()  # subscribed topic prefixes (the XPUB tells us)
        self.scheduler.telemetry = False  # no subscriber yet: no events made
        self._snapshots = False
        self._stop = False
        self._front_handlers: dict[str, Callable[[Envelope, int], None]] = {
            "task.submit": self._on_submit,
            "task.cancel": self._on_cancel,
            "status.get": self._on_status,
            "agent.put": self._on_agent_put,
            "shm.release": self._on_shm_release,
        }
        log.info(
            "listening front=%s back=%s telemetry=%s",
            settings.front,
            settings.back,
            settings.telemetry,
        )

    def stop(self) -> None:
        """Ask the loop to end after its current round (safe from a signal handler)."""
        self._stop = True

    def close(self) -> None:
        for sock in (self.front, self.back, self.pub):
            sock.close(0)
        self.ctx.term()

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)  # subscriptions
        next_tick = time.time_ns() + TICK_NS
        next_snapshot = time.time_ns() + SNAPSHOT_NS
        next_events = 0
        while not self._stop:
            wake = min(next_tick, next_events) if self.scheduler.events else next_tick
            timeout_ms = max(0, (wake - time.time_ns()) // 1_000_000)
            ready = dict(poller.poll(timeout_ms))
            if self.back in ready:
                self._drain(self.back, self._on_back)
            if self.front in ready:
                self._drain(self.front, self._on_front)
            if self.pub in ready:
                self._subscriptions()
            now = time.time_ns()
            if now >= next_tick:
                self.scheduler.tick(now)
                next_tick = now + TICK_NS
            self._flush()
            if now >= next_snapshot and self._snapshots:
                self._publish(
                    "telemetry.snapshot", M.TelemetrySnapshot(self.scheduler.snapshot(now)).pack()
                )
                next_snapshot = now + SNAPSHOT_NS
            if self.scheduler.events and now >= next_events:
                self._publish_events()
                next_events = now + EVENTS_NS

    def _drain(self, sock: zmq.Socket[bytes], handle: Callable[[list[bytes]], None]) -> None:
        for i, frames in enumerate(transport.drain(sock, DRAIN_MAX), 1):
            try:
                handle(frames)
            except Exception:  # a bug must not take the orchestrator down with it
                log.exception("handler failed on a %d-frame message", len(frames))
                self.scheduler.counters["handler_errors"] += 1
            if i % FLUSH_EVERY == 0:
                self._flush()

    def _flush(self) -> None:
        sched = self.scheduler
        if sched.tensors.reclaim:  # segments of lost owners (docs/tensors.md)
            self._reclaim()
        while sched.outbox:
            batch, sched.outbox = sched.outbox, []
            for out in batch:
                sock = self.front if out.sock == FRONT else self.back
                try:
                    transport.send_to(sock, out.peer, out.frames, transport.NOBLOCK)
                except zmq.ZMQError as exc:  # EHOSTUNREACH: peer gone; EAGAIN: peer not reading
                    if out.sock == FRONT:
                        sched.counters["clients_dropped"] += 1
                        log.debug("client %r unreachable: %s", out.peer, exc)
                        if exc.errno == zmq.EHOSTUNREACH:  # gone, not just slow
                            sched.client_gone(out.peer, time.time_ns())
                    else:
                        log.warning("worker %r unreachable: %s", out.peer, exc)
                        sched.unreachable(out.peer, time.time_ns())

    def _reclaim(self) -> None:
        names, self.scheduler.tensors.reclaim = self.scheduler.tensors.reclaim, []
        gone = [name for name in names if unlink(name)]
        log.info("reclaimed %d of %d shm segments of lost workers", len(gone), len(names))

    def _subscriptions(self) -> None:
        """Track what telemetry subscribers want: events are made only while some
        subscription covers them (the monitor's, the demo's), snapshots likewise."""
        for msg, *_ in transport.drain(self.pub):
            if msg[:1] == b"\x01":
                self._topics.add(msg[1:])
            elif msg[:1] == b"\x00":
                self._topics.discard(msg[1:])
        sched = self.scheduler
        sched.telemetry = self._wanted(b"telemetry.events")
        self._snapshots = self._wanted(b"telemetry.snapshot")
        if not sched.telemetry:
            sched.events.clear()

    def _wanted(self, topic: bytes) -> bool:
        return any(topic.startswith(prefix) for prefix in self._topics)

    def _publish(self, type_: str, body: bytes) -> None:
        frames = [type_.encode(), *encode(make_header(type_, sender=self.name), body)]
        try:
            transport.send(self.pub, frames, transport.NOBLOCK)
        except zmq.Again:
            self.scheduler.counters["telemetry_dropped"] += 1

    def _publish_events(self) -> None:
        events = list(self.scheduler.events)
        self.scheduler.events.clear()
        dropped = self.scheduler.counters.get("telemetry_dropped", 0)
        self._telemetry_seq += 1
        body = M.TelemetryEvents(events, dropped, self._telemetry_seq).pack()
        self._publish("telemetry.events", body)

    # ------------------------------------------------------------------ front
    def _reject(self, sock_id: int, peer: bytes, parent: str | None, err: WasmEngineError) -> None:
        self.scheduler.counters["bad_messages"] += 1
        log.info("rejected message from %r: %s", peer, err)
        self.scheduler.error(sock_id, peer, parent, err)

    def _on_front(self, frames: list[bytes]) -> None:
        peer = frames[0]
        try:
            env = decode(frames, hops=1)
        except EnvelopeError as err:
            self._reject(FRONT, peer, err.parent, err)
            return
        handler = self._front_handlers.get(env.header.type)
        if handler is None:
            self._reject(FRONT, peer, env.header.id, _not_here(env.header.type, "front"))
            return
        try:
            handler(env, time.time_ns())
        except ProtocolError as err:
            self._reject(FRONT, peer, env.header.id, err)

    def _on_submit(self, env: Envelope, now: int) -> None:
        msg = _parse(M.TaskSubmit, env)
        self.scheduler.submit(env.routing[0], env.header, env.body, msg, now)

    def _on_cancel(self, env: Envelope, now: int) -> None:
        msg = _parse(M.TaskCancel, env)
        self.scheduler.cancel(env.routing[0], env.header, msg.task_id, now)

    def _on_status(self, env: Envelope, now: int) -> None:
        self.scheduler.status(env.routing[0], env.header, now)

    def _on_agent_put(self, env: Envelope, now: int) -> None:
        msg = _parse(M.AgentPut, env)
        self.scheduler.agent_put(env.routing[0], env.header, msg, env.blobs)

    def _on_shm_release(self, env: Envelope, now: int) -> None:
        msg = _parse(M.ShmRelease, env)
        self.scheduler.tensors.release(FRONT, env.routing[0], env.header, msg)

    # ------------------------------------------------------------------ back
    def _on_back(self, frames: list[bytes]) -> None:
        peer = frames[0]
        now = time.time_ns()
        sched = self.scheduler
        worker = sched.touch(peer, now)
        try:
            env = decode(frames, hops=1)
        except EnvelopeError as err:
            self._reject(BACK, peer, err.parent, err)
            return
        header = env.header
        type_ = header.type
        try:
            if type_ in {"task.result", "error"}:
                if worker is not None:
                    sched.worker_reply(worker, header, env.body, env.blobs, now)
                elif type_ == "task.result":
                    sched.counters["late_results"] += 1  # from a worker we already declared lost
                else:
                    log.info("error from unregistered peer %r: %s", peer, env.body[:200])
            elif type_ == "task.event":
                if worker is not None:
                    sched.worker_event(worker, header, env.body, env.blobs)
            elif type_ == "task.submit":  # a running task's child request
                if worker is None:
                    raise WasmEngineError(E.WORKER_UNKNOWN, "task.submit before worker.hello")
                sched.child_submit(worker, header, env.body, _parse(M.TaskSubmit, env), now)
            elif type_ == "shm.lease":
                sched.tensors.lease(peer, header, _parse(M.ShmLease, env), now)
            elif type_ == "shm.release":
                sched.tensors.release(BACK, peer, header, _parse(M.ShmRelease, env))
            elif type_ == "worker.heartbeat":
                sched.heartbeat(peer, header, _parse(M.WorkerHeartbeat, env), now)
            elif type_ == "worker.hello":
                sched.hello(peer, header, _parse(M.WorkerHello, env), now)
            elif type_ in ("worker.credit", "worker.bye"):
                if worker is None:
                    raise WasmEngineError(E.WORKER_UNKNOWN, f"{type_} before worker.hello")
                if type_ == "worker.credit":
                    sched.credit(worker, _parse(M.WorkerCredit, env), now)
                else:
                    sched.bye(worker, _parse(M.WorkerBye, env), now)
            else:
                raise _not_here(type_, "back")
        except WasmEngineError as err:
            self._reject(BACK, peer, header.id, err)


def _parse(cls: type[M.M], env: Envelope) -> M.M:
    msg = M.parse(cls.TYPE, env.body)
    if not isinstance(msg, cls):  # the registry maps TYPE to cls: a mismatch is a bug
        raise WasmEngineError(E.INTERNAL, f"registry returned {type(msg).__name__} for {cls.TYPE}")
    return msg


def _not_here(type_: str, where: str) -> ProtocolError:
    if type_ in M.REGISTRY:
        return ProtocolError(E.PROTO_UNEXPECTED, f"{type_!r} is not accepted on the {where} socket")
    return ProtocolError(E.PROTO_UNKNOWN_TYPE, f"unknown message type {type_!r}")


def serve(settings: Settings, install_signals: Callable[[Orchestrator], Any] | None = None) -> None:
    orch = Orchestrator(settings)
    if install_signals is not None:
        install_signals(orch)
    try:
        orch.run()
    finally:
        orch.close()
        log.info("stopped")
