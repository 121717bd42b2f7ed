"""What the monitor knows: the last status snapshot and the telemetry since it started.

Owns :class:`MonitorState`: it takes ``telemetry.events`` batches and status
snapshots (from the PUB or from ``status.get``: the same shape) and keeps the
figures the page and ``/api/snapshot`` show: workers and queues (the latest
snapshot), per-second throughput and latency (:class:`~ui_monitor.series.Series`),
errors by code, the traces (:class:`~ui_monitor.traces.Traces`), shared memory and
inference (:mod:`ui_monitor.resources`) and the health of the telemetry link itself.
Pure: every call is given ``now`` (seconds since the epoch); no socket, no clock.
A malformed event is counted and skipped, never raised.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from typing import Any

from .resources import Inference, Shm
from .series import Series
from .traces import Traces

log = logging.getLogger("ui_monitor.state")

WORKER_EVENTS = ("worker.joined", "worker.lost", "worker.left")
_QUEUE_MEMORY = 100_000  # in-flight task ids remembered for per-queue throughput


class MonitorState:
    def __init__(self, *, window_s: int = 600, max_traces: int = 600) -> None:
        self.series = Series(window_s)
        self.traces = Traces(max_traces)
        self.shm = Shm()
        self.inference = Inference()
        self.status: dict[str, Any] | None = None
        self.status_at: float | None = None  # local time the last snapshot arrived
        self.status_via = ""  # "pub" (telemetry.snapshot) or "get" (status.get answer)
        self.orchestrator_starts: list[int] = []  # started_ns of each orchestrator seen
        self.events: Counter[str] = Counter()  # by event name
        self.codes: Counter[str] = Counter()  # failed and rejected tasks by error code
        self.worker_log: deque[dict[str, Any]] = deque(maxlen=50)
        self.batches = 0  # telemetry.events batches received
        self.gaps = 0  # batches the PUB dropped for us (seq jumps)
        self.orchestrator_dropped = 0  # events the orchestrator's own buffer dropped
        self.bad_events = 0
        self._last_seq: int | None = None
        self._task_queue: dict[str, str] = {}
        self.first_seen: float | None = None  # local time of the first message taken

    # ------------------------------------------------------------------ input
    def on_events(self, body: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """One ``telemetry.events`` body; returns the events it applied (for metrics)."""
        self.first_seen = now if self.first_seen is None else self.first_seen
        self.batches += 1
        seq = body.get("seq")
        if isinstance(seq, int) and seq > 0:
            if self._last_seq is not None and self._last_seq < seq:
                self.gaps += seq - self._last_seq - 1
            self._last_seq = seq  # lower: the orchestrator restarted and counts again
        dropped = body.get("dropped")
        if isinstance(dropped, int):
            self.orchestrator_dropped = dropped
        applied = []
        for ev in body.get("events") or ():
            try:
                if self._apply(ev, now):
                    applied.append(ev)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                self.bad_events += 1
                log.debug("skipped a malformed event %r: %s", ev, exc)
        return applied

    def _second(self, t: int, now: float) -> int:
        """An event's second by its own time, unless that is off the window (clock skew)."""
        second, local = t // 1_000_000_000, int(now)
        return second if local - self.series.seconds < second <= local + 5 else local

    def _apply(self, ev: Any, now: float) -> bool:
        if not isinstance(ev, dict):
            raise TypeError("an event is not a map")
        name, t = ev.get("ev"), ev.get("t")
        if not isinstance(name, str) or not isinstance(t, int):
            raise ValueError("an event without ev or t")
        self.events[name] += 1
        sec = self._second(t, now)
        self.traces.apply(ev)
        if name.startswith("shm."):
            self.shm.apply(name, ev)
        sizes, _fallbacks = self.inference.apply(name, ev)
        for size, runs in sizes.items():
            self.series.sample(sec, "batch", size, runs)
        if name == "task.queued":
            self.series.count(sec, "queued")
            queue = ev.get("queue")
            if isinstance(queue, str) and isinstance(ev.get("task_id"), str):
                if len(self._task_queue) >= _QUEUE_MEMORY:
                    self._task_queue.pop(next(iter(self._task_queue)))
                self._task_queue[ev["task_id"]] = queue
                self.series.count(sec, "queued:" + queue)
        elif name == "task.done":
            ok = bool(ev.get("ok"))
            self.series.count(sec, "ok" if ok else "failed")
            queue = self._task_queue.pop(str(ev.get("task_id")), None)
            if queue is not None:
                self.series.count(sec, "done:" + queue)
            if not ok:
                self.codes[ev.get("code") or "worker error"] += 1
            if isinstance(ev.get("total_us"), int):
                self.series.sample(sec, "latency_us", ev["total_us"])
            if isinstance(ev.get("run_us"), int):
                self.series.sample(sec, "run_us", ev["run_us"])
        elif name == "task.rejected":
            self.series.count(sec, "rejected")
            self.codes[ev.get("code") or "rejected"] += 1
        elif name == "task.requeued":
            self.series.count(sec, "requeued")
        elif name in WORKER_EVENTS:
            keep = ("worker", "kind", "why", "device", "host", "inflight")
            self.worker_log.appendleft({"ev": name, "t": t, **{k: ev[k] for k in keep if k in ev}})
        return True

    def on_status(self, status: dict[str, Any], now: float, via: str = "pub") -> None:
        """A status snapshot: ``via`` "pub" (``telemetry.snapshot``) or "get" (``status.get``)."""
        self.first_seen = now if self.first_seen is None else self.first_seen
        orch = status.get("orchestrator") or {}
        started = orch.get("started_ns")
        if isinstance(started, int) and started not in self.orchestrator_starts[-3:]:
            self.orchestrator_starts.append(started)
            self._last_seq = None  # a new orchestrator numbers its batches from 1
        self.status, self.status_at, self.status_via = status, now, via
        self.shm.from_snapshot(status.get("shm"))
        gauges: dict[str, float] = {}
        for key, q in (status.get("queues") or {}).items():
            if isinstance(q, dict) and isinstance(q.get("depth"), int):
                gauges["depth:" + key] = q["depth"]
        workers = [w for w in status.get("workers") or () if isinstance(w, dict)]
        gauges["inflight"] = sum(w.get("inflight", 0) for w in workers)
        gauges["workers"] = len(workers)
        self.series.gauge(int(now), gauges)

    # ------------------------------------------------------------------ output
    def snapshot_age(self, now: float) -> float | None:
        return None if self.status_at is None else max(0.0, now - self.status_at)

    def ready(self, now: float, max_age_s: float) -> bool:
        """Connected: a snapshot arrived within ``max_age_s``."""
        age = self.snapshot_age(now)
        return age is not None and age <= max_age_s

    def telemetry(self, now: float) -> dict[str, Any]:
        age = self.snapshot_age(now)
        return {
            "batches": self.batches,
            "events": sum(self.events.values()),
            "gaps": self.gaps,
            "orchestrator_dropped": self.orchestrator_dropped,
            "bad_events": self.bad_events,
            "snapshot_age_s": None if age is None else round(age, 3),
            "snapshot_via": self.status_via,
            "orchestrator_restarts": max(0, len(self.orchestrator_starts) - 1),
        }

    def errors(self) -> list[dict[str, Any]]:
        """Failed tasks by code (events) beside the errors the orchestrator sent (counters)."""
        sent = {
            k.split(":", 1)[1]: v
            for k, v in ((self.status or {}).get("counters") or {}).items()
            if isinstance(k, str) and k.startswith("error:")
        }
        codes = sorted(set(self.codes) | set(sent))
        rows = [{"code": c, "tasks": self.codes.get(c, 0), "sent": sent.get(c, 0)} for c in codes]
        return sorted(rows, key=lambda r: -(r["tasks"] + r["sent"]))

    def queues(self, now: float) -> list[dict[str, Any]]:
        end, rows = int(now) - 1, []
        for key, q in sorted(((self.status or {}).get("queues") or {}).items()):
            rows.append(
                {
                    "queue": key,
                    "depth": q.get("depth"),
                    "limit": q.get("limit"),
                    "queued_per_s": self.series.total(end, 10, ["queued:" + key]) / 10,
                    "done_per_s": self.series.total(end, 10, ["done:" + key]) / 10,
                }
            )
        return rows

    def charts(self, now: float, seconds: int) -> dict[str, Any]:
        """Columns for the charts: x (epoch seconds) and one list per line, of the
        ``seconds`` whole seconds before ``now`` (the running second is not whole yet)."""
        s, end = self.series, int(now) - 1
        ms = 1e-3

        def scaled(col: list[float | None]) -> list[float | None]:
            return [None if v is None else round(v * ms, 3) for v in col]

        depth_names = [n for n in s.gauge_names(end, seconds) if n.startswith("depth:")]
        return {
            "x": list(range(end - seconds + 1, end + 1)),
            "ok": s.count_column(end, seconds, "ok"),
            "failed": s.count_column(end, seconds, "failed"),
            "queued": s.count_column(end, seconds, "queued"),
            "p50_ms": scaled(s.quantile_column(end, seconds, "latency_us", 0.5)),
            "p99_ms": scaled(s.quantile_column(end, seconds, "latency_us", 0.99)),
            "run_p50_ms": scaled(s.quantile_column(end, seconds, "run_us", 0.5)),
            "batch_mean": s.mean_column(end, seconds, "batch"),
            "batch_max": s.quantile_column(end, seconds, "batch", 1.0),
            "inflight": s.gauge_column(end, seconds, "inflight"),
            "depth": {n[6:]: s.gauge_column(end, seconds, n) for n in depth_names},
        }

    def view(self, now: float, seconds: int = 120) -> dict[str, Any]:
        """Everything the page shows, as one JSON-able map. The charts span ``seconds``, or
        less (but 30 s at least) while the monitor has not watched that long."""
        status = self.status or {}
        if self.first_seen is not None:
            seconds = min(seconds, max(30, int(now - self.first_seen) + 2))
        return {
            "now": now,
            "ready": self.ready(now, 3.0),
            "orchestrator": status.get("orchestrator"),
            "workers": status.get("workers") or [],
            "queues": self.queues(now),
            "counters": status.get("counters") or {},
            "models": status.get("models"),
            "charts": self.charts(now, seconds),
            "errors": self.errors(),
            "shm": self.shm.view(),
            "inference": self.inference.view(),
            "telemetry": self.telemetry(now),
            "worker_log": list(self.worker_log)[:12],
            "traces": self.traces.recent(40),
        }
