"""/metrics text, read back with prometheus-client's own parser: every family is there from
the start, and the values follow the events and the snapshot."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from test_monitor_state import T0, ev, lifecycle, status

from ui_monitor.metrics import Metrics
from ui_monitor.state import MonitorState

FAMILIES = {
    "wasm_engine_tasks": "counter",
    "wasm_engine_tasks_queued": "counter",
    "wasm_engine_tasks_rejected": "counter",
    "wasm_engine_task_latency_seconds": "histogram",
    "wasm_engine_task_run_seconds": "histogram",
    "wasm_engine_task_queue_wait_seconds": "histogram",
    "wasm_engine_queue_depth": "gauge",
    "wasm_engine_queue_limit": "gauge",
    "wasm_engine_workers": "gauge",
    "wasm_engine_worker_inflight": "gauge",
    "wasm_engine_worker_credits": "gauge",
    "wasm_engine_worker_heartbeat_age_seconds": "gauge",
    "wasm_engine_worker_events": "counter",
    "wasm_engine_shm_bytes": "gauge",
    "wasm_engine_shm_leases": "gauge",
    "wasm_engine_shm_segments": "gauge",
    "wasm_engine_shm_events": "counter",
    "wasm_engine_inference_batch_size": "histogram",
    "wasm_engine_inference_fallbacks": "counter",
    "wasm_engine_inference_tasks": "counter",
    "wasm_engine_orchestrator_up": "gauge",
    "wasm_engine_orchestrator_events": "counter",
    "wasm_engine_orchestrator_errors_sent": "counter",
    "wasm_engine_monitor_telemetry_gaps": "counter",
}


def scrape(metrics: Metrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == sample and s.labels == labels:
            return float(s.value)
    raise KeyError((sample, labels))


def test_every_family_is_registered_before_any_data() -> None:
    families = scrape(Metrics(MonitorState(), clock=lambda: T0))
    assert {n: families[n].type for n in FAMILIES if n in families} == FAMILIES
    assert value(families, "wasm_engine_orchestrator_up", "wasm_engine_orchestrator_up") == 0


def test_values_follow_events_and_the_snapshot() -> None:
    st = MonitorState()
    metrics = Metrics(st, clock=lambda: T0 + 1)
    events = [*lifecycle("a", T0), *lifecycle("b", T0)]
    events += [
        ev("task.done", T0, task_id="c", ok=False, code="task.deadline", total_us=2_000_000),
        ev("task.rejected", T0, task_id="d", code="task.overloaded"),
        ev("worker.lost", T0, worker="w2", why="heartbeat"),
        ev("shm.segment.created", T0, segment="s", owner="w1", bytes=64),
        ev("task.done", T0, task_id="e", ok=True, device="cpu", batch=3, fallback=True,
           model="mlp"),
    ]  # fmt: skip
    metrics.observe(st.on_events({"events": events, "seq": 1}, T0))
    st.on_status(status(depth=9), T0 + 0.5)
    f = scrape(metrics)
    assert value(f, "wasm_engine_tasks", "wasm_engine_tasks_total", outcome="ok", code="") == 3
    failed = {"outcome": "failed", "code": "task.deadline"}
    assert value(f, "wasm_engine_tasks", "wasm_engine_tasks_total", **failed) == 1
    assert (
        value(f, "wasm_engine_task_latency_seconds", "wasm_engine_task_latency_seconds_count") == 3
    )
    slow = value(
        f, "wasm_engine_task_latency_seconds", "wasm_engine_task_latency_seconds_bucket", le="1.0"
    )
    assert slow == 2  # the 2 s task is above the 1 s bucket
    assert value(f, "wasm_engine_queue_depth", "wasm_engine_queue_depth", queue="wasm") == 9
    assert value(f, "wasm_engine_workers", "wasm_engine_workers", kind="wasm", state="ready") == 1
    assert value(f, "wasm_engine_worker_inflight", "wasm_engine_worker_inflight",
                 worker="w1", kind="wasm") == 3  # fmt: skip
    assert (
        value(f, "wasm_engine_worker_events", "wasm_engine_worker_events_total", event="lost") == 1
    )
    assert value(f, "wasm_engine_shm_bytes", "wasm_engine_shm_bytes", owner="w1") == 64
    assert (
        value(f, "wasm_engine_inference_batch_size", "wasm_engine_inference_batch_size_count") == 1
    )
    assert value(f, "wasm_engine_inference_fallbacks", "wasm_engine_inference_fallbacks_total",
                 model="mlp") == 1  # fmt: skip
    sent = {"code": "proto.bad_field"}
    assert value(f, "wasm_engine_orchestrator_errors_sent",
                 "wasm_engine_orchestrator_errors_sent_total", **sent) == 2  # fmt: skip
    assert value(f, "wasm_engine_orchestrator_events", "wasm_engine_orchestrator_events_total",
                 counter="completed") == 5  # fmt: skip
    assert value(f, "wasm_engine_orchestrator_up", "wasm_engine_orchestrator_up") == 1
