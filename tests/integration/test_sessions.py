"""Stateful sessions through a real orchestrator and worker: the session's
instance keeps its memory between calls; other sessions and plain calls don't
share it; a call that traps loses it, and the next call is told so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import wasmtime

from wasm_engine import Client, WasmEngineError
from wasm_engine import errors as E
from wasm_engine.config import Settings

WAT = Path(__file__).resolve().parents[2] / "agents" / "wat"


def wasm(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((WAT / f"{name}.wat").read_text()))


def test_a_session_keeps_its_instance_between_calls(make_stack: Callable[..., Settings]) -> None:
    stack = make_stack(credits=4)
    with Client(stack.front, timeout=20) as client:
        counter = client.put_agent(wasm("counter"), name="counter")
        assert [client.run(counter, None, session="a").output for _ in range(3)] == [1, 2, 3]
        assert client.run(counter, None, session="b").output == 1  # its own instance
        assert client.run(counter, None).output == 1  # no session: a fresh instance
        # calls submitted together still run one at a time, in order
        futures = [client.submit(counter, None, session="a") for _ in range(4)]
        assert [f.result(20).output for f in futures] == [4, 5, 6, 7]
        sessions = client.status()["orchestrator"]["sessions"]
        assert sessions == 2


def test_a_session_whose_instance_trapped_is_lost_then_starts_again(
    make_stack: Callable[..., Settings],
) -> None:
    stack = make_stack(credits=4)
    with Client(stack.front, timeout=20) as client:
        spin = client.put_agent(wasm("loop"), name="loop")
        # the loop agent runs out of fuel: the trap drops the session's instance
        with pytest.raises(WasmEngineError) as exc:
            client.run(spin, None, session="x", fuel=10_000)
        assert exc.value.code == E.WASM_OUT_OF_FUEL
        with pytest.raises(WasmEngineError) as exc:
            client.run(spin, None, session="x", fuel=10_000)
        assert exc.value.code == E.SESSION_LOST  # told once; the next call starts afresh
        with pytest.raises(WasmEngineError) as exc:
            client.run(spin, None, session="x", fuel=10_000)
        assert exc.value.code == E.WASM_OUT_OF_FUEL
        counter = client.put_agent(wasm("counter"), name="counter")
        assert client.run(counter, None, session="x").output == 1  # another agent's session
