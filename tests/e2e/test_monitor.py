"""The ui-monitor on a real stack, over real HTTP: /metrics read by prometheus-client's parser,
the JSON endpoints, reconnection after an orchestrator restart, and a stopped monitor that
changes nothing for tasks."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import FAST_HEARTBEATS, until, wait_all, wasm
from monitor_helpers import get, get_json, monitored
from prometheus_client.parser import text_string_to_metric_families

from wasm_engine.client import Client
from wasm_engine.local import LocalStack

pytestmark = pytest.mark.e2e
BUILD = Path(__file__).resolve().parents[2] / "agents" / "build"


def metric(families: dict[str, list[tuple[str, dict[str, str], float]]], name: str) -> float:
    """The sum of the samples called ``name`` (a counter's family drops ``_total``)."""
    family = name.removesuffix("_total").removesuffix("_count")
    return sum(v for n, _, v in families.get(family, []) if n == name)


def scrape(base: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    status, body = get(base + "/metrics")
    assert status == 200
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(body.decode())
    }


def test_metrics_and_api_cover_tasks_queues_workers_shm_and_inference(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack, base = monitored(make_stack, 2)
    with Client(stack.front, timeout=60) as client:
        textstats = client.put_agent(BUILD / "textstats.wasm")
        loop = client.put_agent(wasm("loop"), name="loop")
        done = client.run_many(textstats, [f"doc {i} " * 20 for i in range(200)], window=32)
        assert len(done) == 200
        failed = client.submit(loop, None, fuel=10_000)
        wait_all(client, [failed], 60)

    def counted() -> dict[str, list[tuple[str, dict[str, str], float]]] | None:
        families = scrape(base)
        limits = families.get("wasm_engine_queue_limit")  # from a snapshot after the first task
        return families if metric(families, "wasm_engine_tasks_total") >= 201 and limits else None

    families = until("the monitor to count 201 tasks", counted)
    ok = [v for n, lb, v in families["wasm_engine_tasks"] if lb.get("outcome") == "ok"]
    # the worker's own code reaches telemetry (the orchestrator reads error bodies' code)
    assert n_of(families, "wasm_engine_tasks_total", outcome="failed", code="wasm.out_of_fuel") == 1
    assert sum(ok) >= 200
    for family in (
        "wasm_engine_queue_depth",
        "wasm_engine_task_latency_seconds",
        "wasm_engine_workers",
        "wasm_engine_worker_inflight",
        "wasm_engine_shm_bytes",
        "wasm_engine_shm_leases",
        "wasm_engine_inference_batch_size",
        "wasm_engine_inference_fallbacks",
    ):
        assert family in families, family
    assert n_of(families, "wasm_engine_workers", kind="wasm", state="ready") == 2
    assert n_of(families, "wasm_engine_queue_limit", queue="wasm") == 10_000
    assert metric(families, "wasm_engine_task_latency_seconds_count") >= 201
    assert metric(families, "wasm_engine_orchestrator_up") == 1

    def caught_up() -> dict[str, Any] | None:  # a snapshot taken after the tasks ran
        snap: dict[str, Any] = get_json(base + "/api/snapshot")
        return snap if snap["status"]["counters"].get("completed", 0) >= 200 else None

    snap = until("a snapshot counting the tasks", caught_up)
    assert {w["name"] for w in snap["workers"]} == {"wasm-worker-1", "wasm-worker-2"}
    rows = {row["code"]: row for row in snap["errors"]}  # a worker.unknown may rank level with it
    assert rows["wasm.out_of_fuel"]["tasks"] == 1  # the out-of-fuel task, under its worker's code
    trace = get_json(base + f"/api/traces/{failed.task_id}")
    assert trace["roots"][0]["state"] == "failed" and trace["tasks"] == 1
    assert get(base + "/api/traces/no-such-trace")[0] == 404
    assert get(base + "/healthz")[0] == 200
    status, page = get(base + "/")
    assert status == 200 and b"wasm-engine" in page
    assert get(base + "/static/vendor/uPlot.iife.min.js")[0] == 200


def n_of(
    families: dict[str, list[tuple[str, dict[str, str], float]]], name: str, **lb: str
) -> float:
    family = name.removesuffix("_total")
    return sum(v for n, labels, v in families.get(family, []) if n == name and labels == lb)


def test_monitor_reconnects_when_the_orchestrator_restarts(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack, base = monitored(make_stack, 1, **FAST_HEARTBEATS)
    assert stack.orchestrator is not None
    stack.kill(stack.orchestrator)
    until("readyz to say not ready", lambda: get(base + "/readyz")[0] == 503, timeout=30)
    assert get(base + "/healthz")[0] == 200  # alive all the same
    stack.start_orchestrator()
    stack.wait_ready(1, timeout=60)
    until("readyz to say ready again", lambda: get(base + "/readyz")[0] == 200, timeout=60)

    def subscribed() -> bool:  # a snapshot over the PUB: the SUB found the new orchestrator
        tele = get_json(base + "/api/snapshot")["telemetry"]
        return bool(tele["snapshot_via"] == "pub" and tele["orchestrator_restarts"] == 1)

    until("telemetry from the new orchestrator", subscribed, timeout=30)
    with Client(stack.front, timeout=60) as client:
        echo = client.put_agent(wasm("echo"), name="echo")
        client.run_many(echo, range(50), window=16)

    def after_restart() -> dict[str, object] | None:
        snap = get_json(base + "/api/snapshot")
        ok = sum(snap["charts"]["ok"]) >= 50
        return snap if ok and snap["telemetry"]["orchestrator_restarts"] == 1 else None

    until("the monitor to see tasks of the new orchestrator", after_restart, timeout=30)


def test_a_stopped_monitor_changes_nothing_for_tasks(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack, base = monitored(make_stack, 1)
    assert stack.monitor is not None
    os.kill(stack.monitor.pid, signal.SIGSTOP)
    try:
        with Client(stack.front, timeout=60) as client:
            noop = client.put_agent(wasm("noop"), name="noop")
            results = client.run_many(noop, range(5000), window=64)
            assert len(results) == 5000
            assert client.status()["counters"]["completed"] == 5000
    finally:
        os.kill(stack.monitor.pid, signal.SIGCONT)

    # awake again, it reads what waited for it (the PUB dropped the rest: counted as gaps)
    def caught_up() -> dict[str, int] | None:
        tele: dict[str, int] = get_json(base + "/api/snapshot")["telemetry"]
        return tele if tele["events"] + tele["gaps"] > 0 else None

    tele = until("the monitor to read telemetry after SIGCONT", caught_up, timeout=30)
    assert tele["bad_events"] == 0
    until("readyz after SIGCONT", lambda: get(base + "/readyz")[0] == 200, timeout=30)
