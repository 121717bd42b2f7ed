"""The ui-monitor's socket side (``ui_monitor.service.TelemetryLink``) against a stand-in
orchestrator made of real sockets bound by the test: a PUB for telemetry and a ROUTER for
``status.get``. Real ZeroMQ over ipc://, no mock; waits poll a condition against a deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq

from ui_monitor.metrics import Metrics
from ui_monitor.service import REQUEST_TIMEOUT_S, TelemetryLink
from ui_monitor.state import MonitorState
from wasm_engine import messages as M
from wasm_engine import transport
from wasm_engine.config import Settings
from wasm_engine.envelope import decode, encode
from wasm_engine.protocol import make_header

T = TypeVar("T")
STATUS = {
    "orchestrator": {"name": "stand-in", "version": "0", "started_ns": 1},
    "workers": [{"name": "w1", "kind": "wasm", "state": "ready", "inflight": 0}],
    "queues": {"wasm": {"depth": 0, "limit": 10}},
    "counters": {},
}


def until(what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
    end = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class StandIn:
    """The orchestrator's two sockets as the monitor sees them, driven by the test."""

    def __init__(self, folder: Path) -> None:
        self.settings = Settings(front=f"ipc://{folder}/f.sock", telemetry=f"ipc://{folder}/t.sock")
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.pub = transport.publisher(self.ctx, self.settings.telemetry)
        self.front = transport.router(self.ctx, self.settings.front)

    def publish(self, type_: str, body: bytes) -> None:
        transport.send(self.pub, [type_.encode(), *encode(make_header(type_), body)])

    def events(self, seq: int, *events: dict[str, Any]) -> None:
        self.publish("telemetry.events", M.TelemetryEvents(list(events), 0, seq).pack())

    def requests(self) -> list[tuple[bytes, str]]:
        """(routing id, header id) of each status.get waiting on the front socket."""
        out = []
        for frames in transport.drain(self.front):
            env = decode(frames, hops=1)
            assert env.header.type == "status.get"
            out.append((frames[0], env.header.id))
        return out

    def answer(self, peer: bytes, parent: str, started_ns: int = 1) -> None:
        status = {**STATUS, "orchestrator": {**STATUS["orchestrator"], "started_ns": started_ns}}
        header = make_header("status", parent=parent)
        transport.send_to(self.front, peer, encode(header, M.Status(**status).pack()))

    def close(self) -> None:
        self.pub.close(0)
        self.front.close(0)
        self.ctx.term()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[StandIn, TelemetryLink, MonitorState, Metrics]]:
    orch = StandIn(tmp_path)
    state, lock = MonitorState(), threading.Lock()
    metrics = Metrics(state, time.time)
    link = TelemetryLink(orch.settings, state, metrics, lock)
    link.start()
    try:
        yield orch, link, state, metrics
    finally:
        link.stop()
        orch.close()


def test_unanswered_status_get_reopens_the_dealer_and_asks_again(
    rig: tuple[StandIn, TelemetryLink, MonitorState, Metrics],
) -> None:
    orch, link, state, _ = rig
    first = until("a status.get", orch.requests)
    assert not state.ready(time.time(), 3.0)
    t0 = time.monotonic()
    second = until("a status.get from a fresh DEALER", orch.requests, timeout=REQUEST_TIMEOUT_S + 5)
    assert time.monotonic() - t0 >= REQUEST_TIMEOUT_S - 0.5  # not before the timeout
    assert second[0][0] != first[0][0]  # another socket, so another routing id
    assert link.reconnects >= 1
    peer, request = second[-1]
    orch.answer(peer, first[0][1], started_ns=99)  # answers the request given up on: ignored
    orch.answer(peer, request)
    until("the answer to be taken", lambda: state.status_via == "get")
    assert state.ready(time.time(), 3.0) and state.orchestrator_starts == [1]


def test_telemetry_is_applied_gaps_counted_and_bad_messages_skipped(
    rig: tuple[StandIn, TelemetryLink, MonitorState, Metrics],
) -> None:
    orch, _, state, metrics = rig

    def subscribed() -> bool:  # PUB drops until the subscription arrives: publish until seen
        orch.publish("telemetry.snapshot", M.TelemetrySnapshot(STATUS).pack())
        return state.status_via == "pub"

    until("the SUB to be subscribed", subscribed)
    done = {"ev": "task.done", "t": time.time_ns(), "task_id": "a", "ok": True, "total_us": 900}
    orch.events(1, {**done, "task_id": "a"})
    orch.events(2, {**done, "task_id": "b"})
    transport.send(orch.pub, [b"telemetry.events", b"WE/9", b"garbage", b""])  # skipped
    orch.events(5, {**done, "task_id": "c"})  # 3 and 4 never came: two batches lost
    until("three tasks counted", lambda: state.events["task.done"] == 3)
    assert state.gaps == 2 and state.batches == 3
    assert b'wasm_engine_tasks_total{code="",outcome="ok"} 3.0' in metrics.render()
    assert b"wasm_engine_monitor_telemetry_gaps_total 2.0" in metrics.render()
