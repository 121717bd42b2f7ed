"""Determinism through the stack: the same agent, input and seed give byte-identical
output and the same fuel on every run and on every worker (two real worker processes),
for a seeded host-call agent and for a planner workflow of C agents."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from fault_helpers import wasm

from wasm_engine.client import Client
from wasm_engine.local import LocalStack

BUILD = Path(__file__).resolve().parents[2] / "agents" / "build"


@pytest.mark.e2e
def test_same_seed_same_bytes_and_fuel_on_every_worker(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(2)
    with Client(stack.front, timeout=60) as client:
        seeded = client.put_agent(wasm("hostcalls"), name="hostcalls")
        results = client.run_many(seeded, [None] * 64, window=16, seed=12345)
        workers = {r.stats["worker"] for r in results}
        assert len(workers) == 2, "both workers must have run some of them"
        outputs = {msgpack.packb(r.output) for r in results}
        fuels = {r.stats["fuel_used"] for r in results}
        assert len(outputs) == 1 and len(fuels) == 1
        other = client.run(seeded, None, seed=54321)
        assert msgpack.packb(other.output) not in outputs  # the seed does matter

        for name in ("textstats", "reduce_stats"):
            client.put_agent(BUILD / f"{name}.wasm", name=name)
        planner = client.put_agent(BUILD / "planner.wasm", name="planner")
        texts = [f"word{i} " * (i + 3) + "\n" for i in range(10)]
        job = {"agent": "textstats", "inputs": texts, "reduce": "reduce_stats"}
        plans = [client.run(planner, job, seed=9) for _ in range(6)]
        assert len({msgpack.packb(p.output) for p in plans}) == 1
        assert len({p.stats["fuel_used"] for p in plans}) == 1
        assert len({p.stats["worker"] for p in plans}) >= 1
        # and the start was clean: no heartbeat overtook its worker's hello (worker.unknown)
        assert "error:worker.unknown" not in client.status()["counters"]
