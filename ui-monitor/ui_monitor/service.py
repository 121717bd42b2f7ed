"""The monitor's ZeroMQ side: the only module of this service that touches ZeroMQ.

One thread, one poll loop, two sockets. A SUB on the orchestrator's telemetry
PUB (receive high-water mark: when this process is slow or stopped, the PUB
drops for it and the orchestrator never waits) and a DEALER on the front socket
asking ``status.get`` whenever no snapshot came over the PUB for a while (at
start, before the subscription is live, and while telemetry is being lost).
A request unanswered for ``REQUEST_TIMEOUT_S`` closes that DEALER and opens a
fresh one (the Lazy Pirate pattern), so a restarted orchestrator is found
again; the SUB reconnects by itself. Decoded messages go to the
:class:`~ui_monitor.state.MonitorState` and :class:`~ui_monitor.metrics.Metrics`
under ``lock``, which the HTTP side takes to read them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from wasm_engine import messages as M
from wasm_engine import transport
from wasm_engine.codec import unpack_map
from wasm_engine.config import Settings
from wasm_engine.envelope import decode, encode
from wasm_engine.errors import ProtocolError
from wasm_engine.protocol import DEFAULT_LIMITS, make_header

from .metrics import Metrics
from .state import MonitorState

log = logging.getLogger("ui_monitor.service")

TOPICS = (b"telemetry.events", b"telemetry.snapshot")
SUB_HWM = 2000  # telemetry batches queued here before the newest are dropped
DRAIN_MAX = 256  # messages per socket per round
STALE_S = 1.5  # no snapshot for this long: ask status.get
REQUEST_TIMEOUT_S = 2.0  # a status.get unanswered this long: fresh DEALER


class TelemetryLink:
    def __init__(
        self,
        settings: Settings,
        state: MonitorState,
        metrics: Metrics,
        lock: threading.Lock,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.lock = lock
        self.clock = clock
        self.name = f"ui-monitor-{id(self):x}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: tuple[str, float] | None = None  # status.get id, sent at
        self.requests = 0
        self.reconnects = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="telemetry-link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sub = transport.subscriber(ctx, self.settings.telemetry, TOPICS, hwm=SUB_HWM)
        dealer = transport.dealer(ctx, self.settings.front, hwm=16)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(dealer, zmq.POLLIN)
        log.info("watching telemetry=%s front=%s", self.settings.telemetry, self.settings.front)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(200))
                if sub in ready:
                    for frames in transport.drain(sub, DRAIN_MAX):
                        self._guarded(self._on_telemetry, frames)
                if dealer in ready:
                    for frames in transport.drain(dealer, DRAIN_MAX):
                        self._guarded(self._on_reply, frames)
                dealer = self._ask_status(ctx, poller, dealer)
        finally:
            sub.close(0)
            dealer.close(0)
            ctx.term()

    def _guarded(self, handle: Callable[[list[bytes]], None], frames: list[bytes]) -> None:
        try:
            handle(frames)
        except ProtocolError as err:  # a bad message is skipped; the link keeps going
            log.warning("skipped a bad message: %s", err)
        except Exception:  # a bug must not stop the monitor watching
            log.exception("failed on a %d-frame message", len(frames))

    def _on_telemetry(self, frames: list[bytes]) -> None:
        env = decode(frames, hops=1)
        now = self.clock()
        if env.header.type == "telemetry.events":
            msg = M.parse("telemetry.events", env.body)
            with self.lock:
                applied = self.state.on_events(msg.to_body(), now)
                self.metrics.observe(applied)
        elif env.header.type == "telemetry.snapshot":
            msg = M.parse("telemetry.snapshot", env.body)
            with self.lock:
                self.state.on_status(msg.to_body()["status"], now)

    def _on_reply(self, frames: list[bytes]) -> None:
        env = decode(frames)
        if self._pending is None or env.header.parent != self._pending[0]:
            return  # an answer to a request we gave up on
        self._pending = None
        if env.header.type != "status":
            log.warning("status.get answered %s", env.header.type)
            return
        M.parse("status", env.body)  # validated; kept whole (sections newer than this build)
        status: dict[str, Any] = unpack_map(env.body, what="status", limit=DEFAULT_LIMITS.body)
        with self.lock:
            self.state.on_status(status, self.clock(), via="get")

    def _ask_status(
        self, ctx: zmq.Context[zmq.Socket[bytes]], poller: zmq.Poller, dealer: zmq.Socket[bytes]
    ) -> zmq.Socket[bytes]:
        now = self.clock()
        if self._pending is not None:
            if now - self._pending[1] < REQUEST_TIMEOUT_S:
                return dealer
            self._pending = None  # no answer: the orchestrator may be new; start afresh
            self.reconnects += 1
            poller.unregister(dealer)
            dealer.close(0)
            dealer = transport.dealer(ctx, self.settings.front, hwm=16)
            poller.register(dealer, zmq.POLLIN)
        with self.lock:
            age = self.state.snapshot_age(now)
        if age is not None and age < STALE_S:
            return dealer
        header = make_header("status.get", sender=self.name)
        try:
            transport.send(dealer, encode(header, M.StatusGet().pack()), transport.NOBLOCK)
        except zmq.Again:
            return dealer  # not connected yet: try again next round
        self._pending = (header.id, now)
        self.requests += 1
        return dealer
