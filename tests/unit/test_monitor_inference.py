"""The inference panels and metrics fed by ``infer.stats`` (a worker's batch sizes and
fallbacks since its last heartbeat, per model), beside the older one-run fields."""

from __future__ import annotations

from typing import Any

from test_monitor_metrics import scrape, value
from test_monitor_state import T0, ev

from ui_monitor.metrics import Metrics
from ui_monitor.state import MonitorState


def stats(worker: str, sec: float, *models: dict[str, Any]) -> dict[str, Any]:
    return ev("infer.stats", sec, worker=worker, models=list(models))


def entry(model: str, batches: dict[str, int], **counts: Any) -> dict[str, Any]:
    runs = sum(batches.values())
    return {"model": model, "runs": runs, "batches": batches, "fallbacks": 0, **counts}


EVENTS = [
    stats("inf-1", T0, entry("mlp", {"1": 2, "8": 3}, requests=26, fallbacks=5, device="cpu")),
    stats(
        "inf-1",
        T0 + 0.5,
        entry("mlp", {"8": 1}, requests=8, fallbacks=1, device="cpu"),
        entry("smollm2", {"4": 10}, requests=4, device="cuda"),
    ),
    ev("task.done", T0, task_id="old", ok=True, batch=2, fallback=True, model="mlp"),
]


def test_infer_stats_fill_the_batch_and_fallback_panels() -> None:
    st = MonitorState()
    st.on_events({"events": EVENTS, "seq": 1}, T0)
    view = st.view(T0 + 1, seconds=2)
    assert view["inference"] == {
        "batches": {"1": 2, "2": 1, "4": 10, "8": 4},  # runs per size, the old batch=2 too
        "devices": {"cpu": 34, "cuda": 4},  # requests served per device
        "fallbacks": {"mlp": 7},  # 5 + 1 counted, 1 flagged
    }
    runs = 2 + 1 + 10 + 4
    assert view["charts"]["batch_max"] == [None, 8]  # seconds T0 - 1, T0 (the last whole one)
    mean = (1 * 2 + 2 + 4 * 10 + 8 * 4) / runs
    assert abs(view["charts"]["batch_mean"][-1] - mean) < 1e-9


def test_infer_stats_fill_the_inference_metrics() -> None:
    st = MonitorState()
    metrics = Metrics(st, clock=lambda: T0 + 1)
    metrics.observe(st.on_events({"events": EVENTS, "seq": 1}, T0))
    f = scrape(metrics)
    hist = "wasm_engine_inference_batch_size"
    assert value(f, hist, hist + "_count") == 17
    assert value(f, hist, hist + "_sum") == 1 * 2 + 2 + 4 * 10 + 8 * 4
    assert value(f, hist, hist + "_bucket", le="1.0") == 2
    assert value(f, hist, hist + "_bucket", le="4.0") == 13
    assert value(f, hist, hist + "_bucket", le="+Inf") == 17
    falls = "wasm_engine_inference_fallbacks"
    assert value(f, falls, falls + "_total", model="mlp") == 7
    tasks = "wasm_engine_inference_tasks"
    assert value(f, tasks, tasks + "_total", device="cuda") == 4


def test_odd_infer_stats_entries_are_skipped_not_raised() -> None:
    st = MonitorState()
    odd = [
        ev("infer.stats", T0, worker="w", models=["x", {"model": "m", "batches": "many"}]),
        stats(
            "w",
            T0,
            {
                "model": "m",
                "batches": {"0": 1, "-2": 1, "x": 4, "3": -1, "2": 1},
                "fallbacks": -3,
                "requests": "lots",
                "device": 5,
            },
        ),
        ev("infer.stats", T0, worker="w", models="nope"),
    ]
    st.on_events({"events": odd, "seq": 1}, T0)
    assert st.bad_events == 0
    assert st.view(T0)["inference"] == {"batches": {"2": 1}, "devices": {}, "fallbacks": {}}
