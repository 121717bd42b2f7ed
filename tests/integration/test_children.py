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
        assert res.output["fuel_used"] > 0 and set(res.output) == {"ok", "output", "fuel_used"}
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


BUILD = Path(__file__).resolve().parents[2] / "agents" / "build"


def test_the_planner_fans_out_reduces_and_matches_running_the_steps_by_hand(
    make_stack: Callable[..., Settings],
) -> None:
    stack = make_stack(credits=2)
    texts = [f"alpha beta gamma {i}\n" * (i + 1) + "delta epsilon\n" for i in range(12)]
    with Client(stack.front, timeout=30) as client:
        textstats = client.put_agent(BUILD / "textstats.wasm", name="textstats")
        reduce_stats = client.put_agent(BUILD / "reduce_stats.wasm", name="reduce_stats")
        planner = client.put_agent(
            BUILD / "planner.wasm",
            manifest={"name": "planner", "grants": {"agents": ["textstats", "reduce_stats"]}},
        )
        job = {"agent": "textstats", "inputs": texts, "reduce": "reduce_stats"}
        planned = client.run(planner, job, seed=3)
        assert planned.output["children"] == len(texts) + 1 and planned.output["then"] is None
        by_hand = client.run(reduce_stats, [client.run(textstats, t).output for t in texts])
        assert planned.output["result"] == by_hand.output
        assert planned.output["result"]["words"] == sum(len(t.split()) for t in texts)
        # the same plan again (another task id, same seed): byte-identical, same fuel
        again = client.run(planner, job, seed=3)
        assert again.output == planned.output
        assert again.stats["fuel_used"] == planned.stats["fuel_used"]

        # a child that fails fails the plan, naming it
        bad = {"agent": "textstats", "inputs": ["ok", 42], "reduce": "reduce_stats"}
        out = client.run(planner, bad).output
        assert "error" in out, out
        assert out["error"].startswith("planner: child 1 failed")
        denied = {"agent": "echo", "inputs": [1]}
        try:
            client.run(planner, denied)
            raise AssertionError("a planner spawning an agent it was not granted ran")
        except Exception as exc:
            assert getattr(exc, "code", None) == E.WASM_CAPABILITY_DENIED


def test_a_spawn_storm_stops_at_the_budget_and_the_worker_serves_on(
    make_stack: Callable[..., Settings],
) -> None:
    stack = make_stack(credits=4)
    with Client(stack.front, timeout=30) as client:
        client.put_agent(wasm("echo"), name="echo")
        storm = client.put_agent(
            wasm("storm"), manifest={"name": "storm", "limits": {"children": 8}}
        )
        try:
            client.run(storm, {"agent": "echo", "input": 1})
            raise AssertionError("the storm was not stopped")
        except Exception as exc:
            err = exc
        assert getattr(err, "code", None) == E.WASM_TRAP
        assert err.detail["trap"] == "host_limit" and err.detail["limit"] == 8  # type: ignore[attr-defined]
        spawner = client.put_agent(wasm("spawner"), name="spawner")
        ok = client.run(spawner, {"agent": "echo", "input": "after"})
        assert ok.output["output"] == "after"
        # the 8 children it did send ran (they are real tasks), nothing more
        done = client.status()["counters"]
        assert done["submitted"] == 8 + 1 + 2
