"""A worker's agent table is bounded: past its cap it drops the least used agent, and the
orchestrator sends that module again with the next task naming it. Real sockets, a real
orchestrator and wasm worker, real wasmtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import wasmtime

from wasm_engine import Client
from wasm_engine.config import Settings

ECHO = bytes(wasmtime.wat2wasm((Path(__file__).parents[2] / "agents/wat/echo.wat").read_text()))


def test_a_dropped_agent_is_sent_again_and_its_task_answers(make_stack: Any) -> None:
    settings: Settings = make_stack()
    (loop,) = make_stack.loops
    table = loop.handler.table
    table.max_agents = 2
    with Client(settings.front, timeout=30) as client:
        agents = [client.put_agent(ECHO, name=f"echo-{n}") for n in range(3)]
        for n, agent in enumerate(agents):
            assert client.run(agent, n).output == n
        assert table.dropped == 1 and agents[0].digest not in table.agents
        assert client.run(agents[0], "again").output == "again"  # resent, loaded, run
        counters = client.status()["counters"]
    assert counters["modules_resent"] == 1
    assert counters.get("failed", 0) == 0
