"""Shared by the host-call tests (test_wasm_hostcalls*.py): the agents, limits and checks.

The agents as fixtures (``host``, ``bad``, and ``rt`` in each allocation mode) are in
conftest.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgpack
import wasmtime

from wasm_worker.runtime import Agent, Limits, WasmRuntime

WAT = Path(__file__).resolve().parents[2] / "agents" / "wat"
FAST = Limits(fuel=10_000_000, timeout_s=2.0, memory_bytes=4 << 20, max_output=1 << 20)
STEPS = [msgpack.packb({"step": k}) for k in range(3)]


def wat2wasm(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def wasm(name: str) -> bytes:
    return wat2wasm((WAT / f"{name}.wat").read_text())


def stream(seed: int, n: int) -> bytes:
    """we.random's documented stream (docs/agents.md), computed independently."""
    key = (seed % 2**64).to_bytes(8, "little")
    blocks = (
        hashlib.blake2b(i.to_bytes(8, "little"), key=key).digest() for i in range(n // 64 + 1)
    )
    return b"".join(blocks)[:n]


def limits(**kw: int) -> Limits:
    base = {k: getattr(FAST, k) for k in ("fuel", "timeout_s", "memory_bytes", "max_output")}
    return Limits(**(base | kw))


def still_serving(rt: WasmRuntime, host: Agent, reuse: bool) -> None:
    """The runtime, the host agent and a plain agent all work after a failure."""
    events: list[bytes] = []
    res = host.call(b"", limits(seed=1), reuse=reuse, emit=events.append)
    assert msgpack.unpackb(res.output) == [stream(1, 16), [0, 0, 0]] and events == STEPS
    assert rt.load(wasm("echo")).call(b"\x01", FAST, reuse=reuse).output == b"\x01"
