"""The monitor's state and trace trees, fed telemetry bodies as the orchestrator publishes
them; time is passed in (seconds since the epoch), no socket, no sleep."""

from __future__ import annotations

from typing import Any

from ui_monitor.state import MonitorState
from ui_monitor.traces import Traces

T0 = 1_800_000_000  # seconds
NS = 1_000_000_000


def ev(name: str, sec: float, **fields: Any) -> dict[str, Any]:
    return {"ev": name, "t": int(sec * NS), **fields}


def lifecycle(task_id: str, sec: float, trace: str | None = None, **queued: Any) -> list[Any]:
    trace = trace or task_id
    return [
        ev("task.queued", sec, task_id=task_id, trace=trace, queue="wasm", priority=0, **queued),
        ev(
            "task.dispatched",
            sec + 0.001,
            task_id=task_id,
            trace=trace,
            worker="w1",
            attempt=1,
            queued_us=1000,
        ),
        ev(
            "task.done",
            sec + 0.004,
            task_id=task_id,
            trace=trace,
            ok=True,
            code=None,
            total_us=4000,
            run_us=3000,
        ),
    ]


def status(depth: int = 0, started: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "orchestrator": {"name": "orchestrator", "version": "0.1.0", "started_ns": started},
        "workers": [{"name": "w1", "kind": "wasm", "state": "ready", "inflight": 3}],
        "queues": {"wasm": {"depth": depth, "limit": 100}},
        "counters": {"completed": 5, "error:proto.bad_field": 2},
        **extra,
    }


def test_throughput_and_latency_land_in_the_events_own_seconds() -> None:
    st = MonitorState(window_s=60)
    events = [e for i in range(10) for e in lifecycle(f"t{i}", T0 + 0.5)]
    events += [e for i in range(4) for e in lifecycle(f"u{i}", T0 + 1.5)]
    st.on_events({"events": events, "dropped": 0, "seq": 1}, now=T0 + 3)
    charts = st.view(T0 + 3, seconds=3)["charts"]
    assert charts["x"] == [T0, T0 + 1, T0 + 2]
    assert charts["ok"] == [10, 4, 0]
    assert charts["queued"] == [10, 4, 0]
    assert 3.8 < charts["p50_ms"][0] < 4.2 and charts["p99_ms"][2] is None


def test_charts_span_what_was_watched_between_30_s_and_the_asked_window() -> None:
    st = MonitorState()
    assert len(st.view(T0, seconds=120)["charts"]["x"]) == 120  # nothing watched yet
    st.on_status(status(), T0)
    assert len(st.view(T0 + 5, seconds=120)["charts"]["x"]) == 30
    assert len(st.view(T0 + 60, seconds=120)["charts"]["x"]) == 62
    assert len(st.view(T0 + 600, seconds=120)["charts"]["x"]) == 120


def test_event_times_off_the_window_count_now() -> None:
    st = MonitorState(window_s=60)
    st.on_events({"events": lifecycle("a", T0 - 3600)}, now=T0 + 0.2)  # a skewed clock
    assert st.view(T0 + 1.2, seconds=1)["charts"]["ok"] == [1]


def test_failures_and_rejects_count_by_code_beside_the_error_replies() -> None:
    st = MonitorState()
    st.on_status(status(), T0)
    st.on_events(
        {"events": [
            ev("task.done", T0, task_id="a", ok=False, code="task.deadline"),
            ev("task.done", T0, task_id="b", ok=False, code=None),  # a worker's own error
            ev("task.rejected", T0, task_id="c", code="task.overloaded"),
        ]},
        T0,
    )  # fmt: skip
    rows = {r["code"]: (r["tasks"], r["sent"]) for r in st.errors()}
    assert rows == {
        "task.deadline": (1, 0),
        "worker error": (1, 0),
        "task.overloaded": (1, 0),
        "proto.bad_field": (0, 2),
    }


def test_malformed_events_are_counted_and_skipped() -> None:
    st = MonitorState()
    good = lifecycle("a", T0)
    applied = st.on_events({"events": [42, {"ev": 1}, {"t": 5}, *good]}, T0)
    assert applied == good
    assert st.bad_events == 3
    assert st.telemetry(T0)["bad_events"] == 3


def test_sequence_gaps_count_lost_batches_and_reset_with_a_new_orchestrator() -> None:
    st = MonitorState()
    for seq in (1, 2, 5, 6, 9):
        st.on_events({"events": [], "seq": seq}, T0)
    assert st.gaps == 4
    st.on_status(status(started=2), T0)
    st.on_status(status(started=3), T0)  # restarted: its batches count from 1 again
    st.on_events({"events": [], "seq": 1}, T0)
    assert st.gaps == 4
    assert st.telemetry(T0)["orchestrator_restarts"] == 1


def test_readiness_follows_the_age_of_the_last_snapshot() -> None:
    st = MonitorState()
    assert not st.ready(T0, 3.0) and st.snapshot_age(T0) is None
    st.on_status(status(depth=7), T0)
    assert st.ready(T0 + 2.9, 3.0) and not st.ready(T0 + 3.1, 3.0)
    view = st.view(T0 + 1.5, seconds=2)
    assert view["queues"][0]["depth"] == 7
    assert view["charts"]["depth"] == {"wasm": [None, 7]}  # seconds T0-1, T0
    assert view["charts"]["inflight"] == [None, 3]


def test_panels_read_none_yet_until_shm_and_inference_data_arrive() -> None:
    st = MonitorState()
    st.on_events({"events": lifecycle("a", T0)}, T0)
    view = st.view(T0 + 1)
    assert view["shm"]["seen"] is False and view["shm"]["by_owner"] == {}
    assert view["inference"] == {"batches": {}, "devices": {}, "fallbacks": {}}


def test_shm_events_and_inference_stats_are_accounted() -> None:
    st = MonitorState()
    st.on_events(
        {"events": [
            ev("task.queued", T0, task_id="i1", trace="tr", queue="mlp", kind="infer", model="mlp"),
            ev("shm.segment.created", T0, segment="s1", owner="wasm-worker-1", bytes=4096,
               trace="tr"),
            ev("shm.segment.created", T0, segment="s2", owner="infer-0", bytes=1 << 20),
            ev("shm.lease.created", T0, segment="s1", holder="infer-0", owner="wasm-worker-1"),
            ev("task.done", T0, task_id="i1", trace="tr", ok=True, device="cpu", batch=4,
               fallback=True, model="mlp"),
            ev("infer.batch", T0, model="mlp", batch_size=8),
            ev("shm.segment.freed", T0, segment="s2"),
        ]},
        T0,
    )  # fmt: skip
    view = st.view(T0 + 1)
    assert view["shm"] == {
        "seen": True, "by_owner": {"wasm-worker-1": 4096}, "segments": 1, "leases": 1,
        "source": "events",
    }  # fmt: skip
    assert view["inference"] == {
        "batches": {"4": 1, "8": 1},
        "devices": {"cpu": 1},
        "fallbacks": {"mlp": 1},
    }
    assert view["charts"]["batch_max"][-1] == 8
    tree = st.traces.tree("tr")
    assert tree is not None and tree["handles"][0]["segment"] == "s1"
    assert tree["roots"][0]["model"] == "mlp" and tree["roots"][0]["batch"] == 4


def test_a_snapshot_shm_section_wins_over_events() -> None:
    st = MonitorState()
    shm = {"by_owner": {"a": {"bytes": 10}, "b": 5}, "leases": [{"x": 1}, {"x": 2}], "segments": 3}
    st.on_status(status(shm=shm, models={"mlp": {"device": "cuda"}}), T0)
    view = st.view(T0)
    assert view["shm"]["by_owner"] == {"a": 10, "b": 5}
    assert (view["shm"]["leases"], view["shm"]["segments"], view["shm"]["source"]) == (
        2, 3, "snapshot",
    )  # fmt: skip
    assert view["models"] == {"mlp": {"device": "cuda"}}


def test_a_trace_is_a_tree_of_its_tasks_with_timings() -> None:
    tr = Traces()
    events = lifecycle("root", T0, trace="flow", kind="wasm", agent="sha256:ab")
    events += lifecycle("child-1", T0 + 0.002, trace="flow", parent_task="root", kind="infer")
    events += lifecycle("child-2", T0 + 0.003, trace="flow", parent_task="root")
    events += lifecycle("grandchild", T0 + 0.004, trace="flow", parent_task="child-1")
    events.append(ev("task.queued", T0 + 0.005, task_id="self", trace="flow", parent_task="self"))
    for e in events:
        tr.apply(e)
    tree = tr.tree("flow")
    assert tree is not None
    assert tree["tasks"] == 5 and tree["state"] == "running"  # "self" is still queued
    roots = {r["task_id"]: r for r in tree["roots"]}
    assert set(roots) == {"root", "self"}  # its own parent makes a task a root, not a loop
    root = roots["root"]
    assert [c["task_id"] for c in root["children"]] == ["child-1", "child-2"]
    assert root["children"][0]["children"][0]["task_id"] == "grandchild"
    assert (root["queued_ms"], root["dispatched_ms"], root["done_ms"]) == (0.0, 1.0, 4.0)
    assert (root["worker"], root["total_us"], root["agent"]) == ("w1", 4000, "sha256:ab")
    assert tr.recent(1)[0]["trace"] == "flow"
    assert tr.tree("unknown") is None


def test_traces_forget_the_oldest_first_and_events_without_trace_find_theirs() -> None:
    tr = Traces(max_traces=6)  # two per pool
    for i in range(3):
        tr.apply(ev("task.queued", T0 + i, task_id=f"t{i}", trace=f"tr{i}"))
    assert len(tr) == 2 and tr.tree("tr0") is None
    tr.apply(ev("task.late_result", T0 + 5, task_id="t1", trace=None, worker="w"))
    tr.apply(ev("task.done", T0 + 6, task_id="t1", trace=None, ok=False, code="task.deadline"))
    tree = tr.tree("tr1")
    assert tree is not None and tree["roots"][0]["state"] == "failed"
    tr.apply(ev("task.done", T0, task_id="t0", trace=None, ok=True))  # forgotten: ignored
    assert tr.tree("t0") is None


def test_a_flood_of_one_task_traces_never_pushes_out_workflows_or_failures() -> None:
    tr = Traces(max_traces=30)  # ten per pool
    for e in lifecycle("map-1", T0, trace="flow") + lifecycle("reduce", T0 + 0.01, trace="flow"):
        tr.apply(e)
    tr.apply(ev("task.queued", T0, task_id="bad", trace="bad"))
    tr.apply(ev("task.done", T0, task_id="bad", trace="bad", ok=False, code="wasm.trap"))
    for i in range(1000):
        for e in lifecycle(f"noop-{i}", T0 + 1 + i / 1000):
            tr.apply(e)
    assert len(tr) == 12
    recent = tr.recent(4)
    assert [(r["trace"], r["pool"]) for r in recent[:2]] == [
        ("flow", "workflow"),
        ("bad", "failed"),
    ]
    assert recent[2]["trace"] == "noop-999" and recent[2]["pool"] == "single"
    assert [r["trace"] for r in tr.recent(5, pool="failed")] == ["bad"]
    flow = tr.tree("flow")
    assert flow is not None and flow["tasks"] == 2 and flow["state"] == "ok"
