"""Shared by the C-agent tests (test_agents_c.py, test_agent_msgpack_norm.py,
test_agents_build.py): where the built agents are, the limits they run under, and loading
and calling one with msgpack in and out. The ``rt`` runtime they share is in conftest.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

from wasm_worker.runtime import Agent, Limits, WasmRuntime

AGENTS = Path(__file__).resolve().parents[2] / "agents"
BUILD = AGENTS / "build"
NAMES = ["msgpack_norm", "planner", "reduce_stats", "summarize", "tensor_ops", "textstats"]
LIMITS = Limits(fuel=2_000_000_000, timeout_s=20.0, memory_bytes=64 << 20)


def load(rt: WasmRuntime, name: str) -> Agent:
    return rt.load((BUILD / f"{name}.wasm").read_bytes())


def call(agent: Agent, value: Any, limits: Limits = LIMITS, reuse: bool = False) -> Any:
    return msgpack.unpackb(agent.call(msgpack.packb(value), limits, reuse=reuse).output)
