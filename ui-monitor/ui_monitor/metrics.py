"""Prometheus metrics, named ``wasm_engine_*``, in a registry of this monitor's own.

Owns :class:`Metrics`: counters and histograms fed by telemetry events
(:meth:`Metrics.observe`), and a collector that reads the latest status snapshot
and the :class:`~ui_monitor.state.MonitorState` at scrape time (queue depths,
workers, shared memory, the orchestrator's own counters, and the inference
batch sizes, fallbacks and devices the state counted from events: an
``infer.stats`` event reports many runs at once, so they are kept as counts,
not observed one by one). Every family is
registered from the start, so a scrape lists the shm and inference metrics
before any data exists. No process-global registry: two monitors in one
process (tests) do not collide.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .state import WORKER_EVENTS, MonitorState

LATENCY_BUCKETS: tuple[float, ...] = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025)
LATENCY_BUCKETS += (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self, state: MonitorState, clock: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tasks = Counter(
            "wasm_engine_tasks", "Tasks finished, by outcome and error code", ["outcome", "code"],
            registry=r,
        )  # fmt: skip
        self.queued = Counter("wasm_engine_tasks_queued", "Tasks queued", ["queue"], registry=r)
        self.requeued = Counter("wasm_engine_tasks_requeued", "Tasks requeued", registry=r)
        self.rejected = Counter(
            "wasm_engine_tasks_rejected", "Submits refused, by code", ["code"], registry=r
        )
        self.latency = Histogram(
            "wasm_engine_task_latency_seconds", "Submit to result, per task",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.run = Histogram(
            "wasm_engine_task_run_seconds", "Dispatch to result, per task",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.wait = Histogram(
            "wasm_engine_task_queue_wait_seconds", "Time queued before each dispatch",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.worker_events = Counter(
            "wasm_engine_worker_events", "Workers joined, lost, left", ["event"], registry=r
        )
        self.shm_events = Counter(
            "wasm_engine_shm_events", "Shared-memory segment and lease events", ["event"],
            registry=r,
        )  # fmt: skip
        self.telemetry = Counter(
            "wasm_engine_monitor_telemetry_events", "Telemetry events received", registry=r
        )
        r.register(_SnapshotCollector(state, clock))

    def observe(self, events: Iterable[dict[str, Any]]) -> None:
        """Count events already applied to the state (so known to be well formed)."""
        n = 0
        for ev in events:
            n += 1
            name = ev["ev"]
            if name == "task.done":
                ok = bool(ev.get("ok"))
                code = "" if ok else str(ev.get("code") or "worker error")
                self.tasks.labels("ok" if ok else "failed", code).inc()
                if isinstance(ev.get("total_us"), int):
                    self.latency.observe(ev["total_us"] / 1e6)
                if isinstance(ev.get("run_us"), int) and ev["run_us"] > 0:
                    self.run.observe(ev["run_us"] / 1e6)
            elif name == "task.queued":
                self.queued.labels(str(ev.get("queue"))).inc()
            elif name == "task.dispatched":
                if isinstance(ev.get("queued_us"), int):
                    self.wait.observe(ev["queued_us"] / 1e6)
            elif name == "task.requeued":
                self.requeued.inc()
            elif name == "task.rejected":
                self.rejected.labels(str(ev.get("code"))).inc()
            elif name in WORKER_EVENTS:
                self.worker_events.labels(name.split(".", 1)[1]).inc()
            elif name.startswith("shm."):
                self.shm_events.labels(name).inc()
        self.telemetry.inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SnapshotCollector(Collector):
    """Gauges and counters read from the latest status snapshot at scrape time."""

    def __init__(self, state: MonitorState, clock: Callable[[], float]) -> None:
        self.state = state
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        st = self.state
        status = st.status or {}
        now = self.clock()
        up = GaugeMetricFamily(
            "wasm_engine_orchestrator_up", "1 when a status snapshot arrived in the last 3 s"
        )
        up.add_metric([], 1.0 if st.ready(now, 3.0) else 0.0)
        yield up
        age = GaugeMetricFamily(
            "wasm_engine_monitor_snapshot_age_seconds", "Age of the last status snapshot"
        )
        snapshot_age = st.snapshot_age(now)
        age.add_metric([], snapshot_age if snapshot_age is not None else float("nan"))
        yield age
        gaps = CounterMetricFamily(
            "wasm_engine_monitor_telemetry_gaps", "Telemetry batches lost on the way (slow monitor)"
        )
        gaps.add_metric([], st.gaps)
        yield gaps
        depth = GaugeMetricFamily("wasm_engine_queue_depth", "Tasks queued", labels=["queue"])
        limit = GaugeMetricFamily("wasm_engine_queue_limit", "Queue capacity", labels=["queue"])
        for key, q in sorted((status.get("queues") or {}).items()):
            depth.add_metric([key], q.get("depth", 0))
            limit.add_metric([key], q.get("limit", 0))
        yield depth
        yield limit
        yield from self._workers(status.get("workers") or [])
        yield from self._counters(status.get("counters") or {})
        yield from self._shm()
        yield from self._inference()

    @staticmethod
    def _workers(workers: list[dict[str, Any]]) -> Iterator[Metric]:
        by_state = GaugeMetricFamily(
            "wasm_engine_workers", "Registered workers by kind and state", labels=["kind", "state"]
        )
        inflight = GaugeMetricFamily(
            "wasm_engine_worker_inflight", "Tasks held by a worker", labels=["worker", "kind"]
        )
        credits = GaugeMetricFamily(
            "wasm_engine_worker_credits", "A worker's credits", labels=["worker", "kind"]
        )
        age = GaugeMetricFamily(
            "wasm_engine_worker_heartbeat_age_seconds", "Since a worker was last heard",
            labels=["worker"],
        )  # fmt: skip
        tally: Tally[tuple[str, str]] = Tally()
        for w in workers:
            name, kind = str(w.get("name")), str(w.get("kind"))
            tally[(kind, str(w.get("state")))] += 1
            inflight.add_metric([name, kind], w.get("inflight", 0))
            credits.add_metric([name, kind], w.get("credits", 0))
            age.add_metric([name], w.get("heartbeat_age_s", 0.0))
        for (kind, state), n in sorted(tally.items()):
            by_state.add_metric([kind, state], n)
        yield from (by_state, inflight, credits, age)

    @staticmethod
    def _counters(counters: dict[str, Any]) -> Iterator[Metric]:
        plain = CounterMetricFamily(
            "wasm_engine_orchestrator_events",
            "The orchestrator's own counters (status.counters), by name", labels=["counter"],
        )  # fmt: skip
        errors = CounterMetricFamily(
            "wasm_engine_orchestrator_errors_sent", "Error replies sent, by code", labels=["code"]
        )
        for key, value in sorted(counters.items()):
            if not isinstance(value, int | float):
                continue
            if key.startswith("error:"):
                errors.add_metric([key[6:]], value)
            else:
                plain.add_metric([key], value)
        yield plain
        yield errors

    def _shm(self) -> Iterator[Metric]:
        shm = self.state.shm
        size = GaugeMetricFamily(
            "wasm_engine_shm_bytes", "Shared-memory bytes held, by owner", labels=["owner"]
        )
        for owner, n in sorted(shm.by_owner().items()):
            size.add_metric([owner], n)
        yield size
        leases = GaugeMetricFamily("wasm_engine_shm_leases", "Live shared-memory leases")
        segments = GaugeMetricFamily("wasm_engine_shm_segments", "Live shared-memory segments")
        leases.add_metric([], shm.lease_count())
        segments.add_metric([], shm.segment_count())
        yield leases
        yield segments

    def _inference(self) -> Iterator[Metric]:
        inf = self.state.inference
        sizes = sorted(inf.batches.items())
        buckets, below, i = [], 0, 0
        for bound in BATCH_BUCKETS:
            while i < len(sizes) and sizes[i][0] <= bound:
                below += sizes[i][1]
                i += 1
            buckets.append((str(float(bound)), below))  # "1.0": as Histogram writes le
        buckets.append(("+Inf", sum(n for _, n in sizes)))
        yield HistogramMetricFamily(
            "wasm_engine_inference_batch_size", "Inference batch sizes run (runs per size)",
            buckets=buckets, sum_value=sum(size * n for size, n in sizes),
        )  # fmt: skip
        fallbacks = CounterMetricFamily(
            "wasm_engine_inference_fallbacks", "GPU requests run on CPU, by model", labels=["model"]
        )
        for model, n in sorted(inf.fallbacks.items()):
            fallbacks.add_metric([model], n)
        yield fallbacks
        devices = CounterMetricFamily(
            "wasm_engine_inference_tasks", "Tasks by device used", labels=["device"]
        )
        for device, n in sorted(inf.devices.items()):
            devices.add_metric([device], n)
        yield devices
