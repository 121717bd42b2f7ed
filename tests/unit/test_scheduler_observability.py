"""What the scheduler tells: the status snapshot and the telemetry events.

Driven through :class:`scheduler_harness.Harness` (a fake clock, a decoded outbox).
"""

from __future__ import annotations

from scheduler_harness import (
    CLIENT_C,
    T0,
    W1,
    Harness,
    dispatches,
    only,
)

from orchestrator.scheduler import FRONT, VERSION
from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.protocol import make_header

# ---------------------------------------------------------------------- snapshot


def test_snapshot_shape_and_status_reply(h: Harness) -> None:
    h.hello(W1, credits=2)
    h.submit("t1")
    h.submit("t2")
    h.submit("t3")
    (d1, _d2) = dispatches(h.take())
    h.advance(1)
    h.result(d1)
    h.take()
    h.advance(1.5)
    snap = h.sched.snapshot(h.now)
    assert set(snap) == {"orchestrator", "workers", "queues", "counters", "agents"}
    assert snap["orchestrator"] == {
        "name": "orchestrator",
        "version": VERSION,
        "started_ns": T0,
        "now_ns": T0 + 2_500_000_000,
        "uptime_s": 2.5,
        "tasks_known": 3,
        "agents": 1,
        "sessions": 0,
        "heartbeat_interval": 1.0,
    }
    assert snap["workers"] == [
        {
            "id": "w1",
            "name": "w1",
            "kind": "wasm",
            "state": "ready",
            "credits": 2,
            "inflight": 2,
            "waiting": 0,
            "completed": 1,
            "heartbeat_age_s": 1.5,
            "capabilities": ["wasm"],
            "host": "host-1",
            "shm_ns": "host-1/ipc:[1]",
            "device": "cpu",
            "pid": 4242,
            "uptime_s": 2.5,
            "stats": {},
        }
    ]
    assert snap["queues"] == {"wasm": {"depth": 0, "limit": 100}}
    assert snap["counters"] == {"submitted": 3, "completed": 1}

    header = make_header("status.get", sender="monitor")
    h.sched.status(CLIENT_C, header, h.now)
    status = only(h.take(), "status")
    assert (status.sock, status.peer, status.header.parent) == (FRONT, CLIENT_C, header.id)
    assert status.msg == M.Status(**snap)


# ---------------------------------------------------------------------- telemetry


def test_telemetry_events_follow_a_task_and_a_worker(h: Harness) -> None:
    h.hello(W1, credits=1)
    h.submit("t1", priority=7, trace="tr-1")
    h.advance(0.5)
    h.submit("t2")
    (d1,) = dispatches(h.take())
    h.advance(0.25)
    h.result(d1)
    h.advance(4)
    h.tick()

    evs = [e["ev"] for e in h.sched.events]
    assert evs == [
        "worker.joined",
        "task.queued",
        "task.dispatched",
        "task.queued",
        "task.done",
        "task.dispatched",
        "worker.lost",
        "task.requeued",
    ]
    joined, queued, dispatched, _, done, _, lost, requeued = h.sched.events
    assert joined == {
        "ev": "worker.joined",
        "t": T0,
        "worker": "w1",
        "kind": "wasm",
        "credits": 1,
        "device": "cpu",
        "host": "host-1",
    }
    assert queued == {
        "ev": "task.queued",
        "t": T0,
        "task_id": "t1",
        "trace": "tr-1",
        "queue": "wasm",
        "priority": 7,
        "parent": None,
        "parent_task": None,
        "kind": "wasm",
        "agent": queued["agent"],
        "name": "agent",  # the manifest's name, for people reading traces
        "model": None,
    }
    assert queued["agent"].startswith("sha256:")
    assert dispatched == {
        "ev": "task.dispatched",
        "t": T0,
        "task_id": "t1",
        "trace": "tr-1",
        "worker": "w1",
        "attempt": 1,
        "queued_us": 0,
    }
    assert done == {
        "ev": "task.done",
        "t": T0 + 750_000_000,
        "task_id": "t1",
        "trace": "tr-1",
        "ok": True,
        "code": None,
        "attempts": 1,
        "total_us": 750_000,
        "run_us": 750_000,
    }
    assert lost == {
        "ev": "worker.lost",
        "t": T0 + 4_750_000_000,
        "worker": "w1",
        "why": "heartbeat",
        "inflight": 1,
    }
    assert requeued == {
        "ev": "task.requeued",
        "t": T0 + 4_750_000_000,
        "task_id": "t2",
        "trace": None,
        "attempts": 1,
    }


def test_a_failed_task_s_done_event_names_its_code(h: Harness) -> None:
    h.submit("t1")
    h.cancel("t1")
    (done,) = h.events("task.done")
    assert (done["ok"], done["code"], done["run_us"]) == (False, E.TASK_CANCELLED, 0)


def test_events_past_the_cap_are_dropped_and_counted(h: Harness) -> None:
    h.sched.events_cap = 3
    for i in range(5):
        h.submit(f"t{i}")  # one task.queued each, no worker
    assert [e["task_id"] for e in h.sched.events] == ["t0", "t1", "t2"]
    assert h.sched.counters["telemetry_dropped"] == 2

    h.sched.events.clear()  # the service publishes and clears each round
    h.submit("t5")
    assert [e["task_id"] for e in h.sched.events] == ["t5"]
    assert h.sched.counters["telemetry_dropped"] == 2
