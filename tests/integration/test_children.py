"""Child requests through a real orchestrator and worker (real ipc:// sockets):
``we.spawn`` + ``we.wait`` from the spawner agent, answers seen by the parent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import wasmtime

from wasm_engine import Client
from wasm_engine import errors as E
from wasm_engine.config import Settings

WAT = Path(__file__).resolve().parents[2] / "agents" / "wat"


def wasm(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((WAT / f"{name}.wat").read_text()))


def test_a_one_credit_worker_runs_a_parent_and_the_child_it_waits_for(
    make_stack: Callable[..., Settings],
) -> None:
    stack = make_stack(credits=1)  # the parent holds the only credit while it waits
    with Client(stack.front, timeout=20) as client:
        client.put_agent(wasm("echo"), name="echo")
        spawner = client.put_agent(wasm("spawner"), name="spawner")
        res = client.run(spawner, {"agent": "echo", "input": {"x": [1, 2, 3]}}, task_id="p1")
        assert res.output["ok"] is True and res.output["output"] == {"x": [1, 2, 3]}
        assert res.output["stats"]["worker"] == "w-test"
        # children may spawn children: spawner -> spawner -> echo
        nested = {"agent": "spawner", "input": {"agent": "echo", "input": "deep"}}
        res = client.run(spawner, nested, task_id="p2")
        assert res.output["ok"] and res.output["output"]["output"] == "deep"
        counters = client.status()["counters"]
        assert counters["completed"] >= 5  # p1, p1/0, p2, p2/0, p2/0/0


def test_a_failing_child_is_an_answer_the_parent_sees(
    make_stack: Callable[..., Settings],
) -> None:
    stack = make_stack(credits=2)
    with Client(stack.front, timeout=20) as client:
        client.put_agent(wasm("loop"), name="loop")
        spawner = client.put_agent(wasm("spawner"), name="spawner")
        res = client.run(spawner, {"agent": "nobody", "input": 1})
        assert res.output["ok"] is False
        assert res.output["error"]["code"] == E.WASM_AGENT_MISSING
        res = client.run(spawner, {"agent": "loop", "input": None, "fuel": 100_000})
        assert res.output == {"ok": False, "error": res.output["error"]}
        assert res.output["error"]["code"] == E.WASM_OUT_OF_FUEL
        # the worker serves on, the parent's own fuel was its own
        assert client.run(spawner, {"agent": "spawner", "input": 7}).output["ok"] is False


def test_grants_limit_what_an_agent_may_spawn(make_stack: Callable[..., Settings]) -> None:
    stack = make_stack(credits=2)
    with Client(stack.front, timeout=20) as client:
        client.put_agent(wasm("echo"), name="echo")
        narrow = client.put_agent(
            wasm("spawner"),
            manifest={"name": "narrow", "grants": {"agents": ["other"]}, "limits": {"children": 1}},
        )
        try:
            client.run(narrow, {"agent": "echo", "input": 1})
        except Exception as exc:
            err = exc
        assert getattr(err, "code", None) == E.WASM_CAPABILITY_DENIED
        assert err.detail["grant"] == "agents" and err.detail["asked"] == "echo"  # type: ignore[attr-defined]
        ok = client.put_agent(
            wasm("spawner"), manifest={"name": "ok", "grants": {"agents": ["echo"]}}
        )
        assert client.run(ok, {"agent": "echo", "input": 1}).output["output"] == 1
