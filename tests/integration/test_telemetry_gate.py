"""Telemetry events are made only while someone subscribes to them: the orchestrator's
XPUB hears each topic's first subscriber and its last one leaving. Real sockets, a real
orchestrator and wasm worker; waits poll a condition against a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import wasmtime
import zmq

from orchestrator.service import Orchestrator
from wasm_engine import Client, transport
from wasm_engine import messages as M
from wasm_engine.config import Settings
from wasm_engine.envelope import decode

NOOP = Path(__file__).resolve().parents[2] / "agents" / "wat" / "noop.wat"


def until(what: str, probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    end = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def test_events_are_made_only_while_subscribed(make_stack: Any) -> None:
    settings: Settings = make_stack()
    (orch,) = make_stack.orchestrators
    assert isinstance(orch, Orchestrator)
    with Client(settings.front, timeout=10) as client:
        agent = client.put_agent(bytes(wasmtime.wat2wasm(NOOP.read_text())))
        client.run_many(agent, range(20))
        assert not orch.scheduler.telemetry and not orch.scheduler.events  # nobody listens

        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sub = transport.subscriber(ctx, settings.telemetry, (b"telemetry.events",))
        try:
            until("the subscription to reach the orchestrator", lambda: orch.scheduler.telemetry)
            done = client.run(agent, None).task_id

            def saw_done() -> bool:
                while sub.poll(50):
                    env = decode(transport.recv(sub)[1:])
                    body = M.parse(env.header.type, env.body)
                    assert isinstance(body, M.TelemetryEvents)
                    if any(e.get("task_id") == done for e in body.events):
                        return True
                return False

            until("the task's events", saw_done)
        finally:
            sub.close(0)
            ctx.term()
        until("the unsubscription", lambda: not orch.scheduler.telemetry)
        client.run_many(agent, range(20))
        assert not orch.scheduler.events
