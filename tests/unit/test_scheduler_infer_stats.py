"""An inference worker's counters in its heartbeats: kept for the snapshot, and published
as ``infer.stats`` deltas (one event per heartbeat that changed something, never negative).

Driven through :class:`scheduler_harness.Harness` (a fake clock, no sockets).
"""

from __future__ import annotations

from typing import Any

from scheduler_harness import W1, W2, Harness

from orchestrator.infer_stats import deltas


def report(**models: dict[str, Any]) -> dict[str, Any]:
    return {"models": models}


def mlp(
    runs: int, batches: dict[str, int], *, fallbacks: int = 0, failed: int = 0
) -> dict[str, Any]:
    rows = sum(int(size) * n for size, n in batches.items())
    return {
        "runs": runs, "rows": rows, "requests": rows, "failed": failed, "fallbacks": fallbacks,
        "batches": batches, "device": "cpu",
    }  # fmt: skip


def inference_worker(h: Harness, peer: bytes = W1) -> None:
    h.hello(peer, kind="inference", capabilities=("mlp", "smollm2"))
    h.take()


def test_the_snapshot_shows_the_last_report_and_the_first_is_a_baseline(h: Harness) -> None:
    inference_worker(h)
    first = report(mlp=mlp(2, {"1": 1, "4": 1}))
    h.heartbeat(W1, first)
    assert h.events("infer.stats") == []  # counted before this orchestrator knew the worker
    (worker,) = h.sched.snapshot(h.now)["workers"]
    assert worker["stats"] == first
    h.advance(1)
    later = report(mlp=mlp(5, {"1": 1, "4": 3, "8": 1}, fallbacks=2))
    h.heartbeat(W1, later)
    assert h.sched.snapshot(h.now)["workers"][0]["stats"] == later
    (ev,) = h.events("infer.stats")
    assert ev["worker"] == "w1" and ev["t"] == h.now
    assert ev["models"] == [
        {
            "model": "mlp", "runs": 3, "rows": 16, "requests": 16, "failed": 0, "fallbacks": 2,
            "batches": {"4": 2, "8": 1}, "device": "cpu",
        }
    ]  # fmt: skip
    assert sum(ev["models"][0]["batches"].values()) == ev["models"][0]["runs"]


def test_one_event_per_heartbeat_that_changed_something(h: Harness) -> None:
    inference_worker(h)
    inference_worker(h, W2)
    h.heartbeat(W1, report(mlp=mlp(1, {"2": 1})))
    h.heartbeat(W2, report(mlp=mlp(0, {})))
    h.heartbeat(W1, report(mlp=mlp(1, {"2": 1})))  # nothing new
    h.heartbeat(W2, report(mlp=mlp(0, {})))
    assert h.events("infer.stats") == []
    h.heartbeat(W1, report(mlp=mlp(2, {"2": 2}), smollm2=mlp(4, {"1": 2, "3": 2})))
    h.heartbeat(W2, report(mlp=mlp(1, {"1": 1})))
    events = h.events("infer.stats")
    assert [e["worker"] for e in events] == ["w1", "w2"]
    assert [(m["model"], m["batches"]) for m in events[0]["models"]] == [
        ("mlp", {"2": 1}), ("smollm2", {"1": 2, "3": 2})  # a model new to the report: from zero
    ]  # fmt: skip
    assert [(m["model"], m["batches"]) for m in events[1]["models"]] == [("mlp", {"1": 1})]


def test_counters_that_go_down_are_a_reset_never_a_negative_delta(h: Harness) -> None:
    inference_worker(h)
    h.heartbeat(W1, report(mlp=mlp(10, {"8": 10}, fallbacks=10)))
    h.heartbeat(W1, report(mlp=mlp(2, {"1": 1, "8": 1}, fallbacks=1)))  # restarted: from zero
    (ev,) = h.events("infer.stats")
    (entry,) = ev["models"]
    assert (entry["runs"], entry["fallbacks"], entry["batches"]) == (2, 1, {"1": 1, "8": 1})
    h.heartbeat(W1, report(mlp=mlp(3, {"1": 2, "8": 1}, fallbacks=1)))
    assert h.events("infer.stats")[-1]["models"][0]["batches"] == {"1": 1}
    every = [m for e in h.events("infer.stats") for m in e["models"]]
    assert all(v >= 0 for m in every for k, v in m.items() if isinstance(v, int))
    assert all(n > 0 for m in every for n in m["batches"].values())


def test_a_worker_that_registers_again_does_not_count_its_past_twice(h: Harness) -> None:
    inference_worker(h)
    h.heartbeat(W1, report(mlp=mlp(1, {"1": 1})))
    h.heartbeat(W1, report(mlp=mlp(5, {"1": 5})))
    inference_worker(h)  # a re-hello: a new record (its reconnect, or a restarted orchestrator)
    assert h.sched.snapshot(h.now)["workers"][0]["stats"] == {}
    h.heartbeat(W1, report(mlp=mlp(5, {"1": 5})))
    h.heartbeat(W1, report(mlp=mlp(6, {"1": 6})))
    assert [e["models"][0]["batches"] for e in h.events("infer.stats")] == [{"1": 4}, {"1": 1}]


def test_no_stats_changes_nothing_and_odd_fields_count_as_zero(h: Harness) -> None:
    h.hello(W1)  # a wasm worker: its heartbeats carry no stats
    h.take()
    h.heartbeat(W1)
    h.heartbeat(W1)
    assert h.sched.snapshot(h.now)["workers"][0]["stats"] == {}
    inference_worker(h, W2)
    h.heartbeat(W2, {"models": {"mlp": {"runs": 1, "batches": {"1": 1}}}})
    odd = {"models": {"mlp": {"runs": "many", "batches": {"x": 3, "0": 2, "2": -1, "3": 1}},
                      "bad": [1, 2], "llm": {"device": 7}}}  # fmt: skip
    h.heartbeat(W2, odd)
    (ev,) = h.events("infer.stats")
    assert ev["models"] == [
        {"model": "mlp", "runs": 0, "rows": 0, "requests": 0, "failed": 0, "fallbacks": 0,
         "batches": {"3": 1}}  # runs went "down" to 0: a reset, so size 3 counts from zero
    ]  # fmt: skip
    assert h.sched.snapshot(h.now)["workers"][1]["stats"] == odd
    assert deltas({}, {"models": "nope"}) == [] and deltas({"models": []}, report()) == []
