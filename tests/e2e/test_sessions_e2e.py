"""A stateful session whose worker is killed (SIGKILL, real processes): the
caller gets session.lost, never a hang and never a silent restart from zero."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest
from fault_helpers import FAST_HEARTBEATS, until, wasm

from wasm_engine import errors as E
from wasm_engine.client import Client
from wasm_engine.errors import WasmEngineError
from wasm_engine.local import LocalStack


@pytest.mark.e2e
def test_killing_a_sessions_worker_answers_session_lost_then_it_starts_afresh(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(2, **FAST_HEARTBEATS)
    with Client(stack.front, timeout=30) as client:
        counter = client.put_agent(wasm("counter"), name="counter")
        first = client.run(counter, None, session="s")
        assert first.output == 1
        assert client.run(counter, None, session="s").output == 2
        bound = first.stats["worker"]
        pid = next(w["pid"] for w in client.status()["workers"] if w["name"] == bound)
        victim = next(p for p in stack.workers if p.pid == pid)
        stack.kill(victim, signal.SIGKILL)
        until("the killed worker to be dropped", lambda: len(client.status()["workers"]) == 1)
        with pytest.raises(WasmEngineError) as exc:
            client.run(counter, None, session="s")
        assert exc.value.code == E.SESSION_LOST
        again = client.run(counter, None, session="s")
        assert (again.output, again.stats["worker"] != bound) == (1, True)
        assert client.status()["counters"]["sessions_lost"] == 1
