"""Workflows by trace id: every task of a trace as a tree, with its timings.

Owns :class:`Traces`, built from telemetry events alone: ``task.queued`` makes a
node (its ``parent_task`` names the task that spawned it, when the orchestrator
says so), ``task.dispatched``/``task.requeued``/``task.done`` time it, and any
event naming a trace and carrying ``segment``/``bytes`` (the ``shm.*`` events)
is kept as one of the trace's tensor handles. Bounded, in three pools so that a
flood of one-task traces never pushes out what an operator looks for: workflows
(traces of two tasks or more), failures (one-task traces that failed) and the
rest; in each the least recently active trace is forgotten first. Pure: times
are the events' own ``t`` (ns), no clock is read.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

#: event fields copied onto a node when present (the inference and kind fields land later)
_NODE_FIELDS = (
    "kind",
    "agent",
    "name",
    "model",
    "queue",
    "priority",
    "device",
    "batch",
    "fallback",
)


@dataclass
class Node:
    task_id: str
    trace: str
    parent_task: str | None = None
    queued_t: int | None = None
    dispatched_t: int | None = None
    done_t: int | None = None
    worker: str | None = None
    attempts: int = 0
    ok: bool | None = None
    code: str | None = None
    total_us: int | None = None
    run_us: int | None = None
    queued_us: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    history: list[tuple[str, int]] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.ok is not None:
            return "ok" if self.ok else "failed"
        return "running" if self.dispatched_t is not None else "queued"

    def to_json(self, origin: int) -> dict[str, Any]:
        def rel(t: int | None) -> float | None:
            return None if t is None else round((t - origin) / 1e6, 3)

        return {
            "task_id": self.task_id,
            "parent_task": self.parent_task,
            "state": self.state,
            "code": self.code,
            "worker": self.worker,
            "attempts": self.attempts,
            "queued_ms": rel(self.queued_t),
            "dispatched_ms": rel(self.dispatched_t),
            "done_ms": rel(self.done_t),
            "total_us": self.total_us,
            "run_us": self.run_us,
            "queue_us": self.queued_us,
            **self.info,
            "history": [[ev, rel(t)] for ev, t in self.history],
        }


@dataclass
class Trace:
    trace_id: str
    nodes: dict[str, Node] = field(default_factory=dict)
    handles: list[dict[str, Any]] = field(default_factory=list)
    first_t: int = 0
    last_t: int = 0

    def summary(self) -> dict[str, Any]:
        states = [n.state for n in self.nodes.values()]
        roots = [n for n in self.nodes.values() if n.parent_task not in self.nodes]
        root = roots[0] if roots else None
        failed = states.count("failed")
        done = all(s in ("ok", "failed") for s in states)
        return {
            "trace": self.trace_id,
            "tasks": len(self.nodes),
            "failed": failed,
            "state": ("failed" if failed else "ok") if done else "running",
            "root": (root.info.get("name") or root.info.get("agent") or root.info.get("queue"))
            if root
            else None,
            "start_ns": self.first_t,
            "duration_ms": round((self.last_t - self.first_t) / 1e6, 3),
        }


POOLS = ("workflow", "failed", "single")


class Traces:
    """The most recently active traces of each pool (``max_traces`` in all, split evenly),
    each up to ``max_tasks`` tasks."""

    def __init__(self, max_traces: int = 600, max_tasks: int = 2000) -> None:
        self.cap = max(1, max_traces // len(POOLS))
        self.max_tasks = max_tasks
        self._pools: dict[str, OrderedDict[str, Trace]] = {p: OrderedDict() for p in POOLS}
        self._pool_of: dict[str, str] = {}  # trace id -> its pool
        self._task_trace: dict[str, str] = {}  # task id -> trace, for events without a trace

    def __len__(self) -> int:
        return len(self._pool_of)

    def get(self, trace_id: str) -> Trace | None:
        pool = self._pool_of.get(trace_id)
        return None if pool is None else self._pools[pool].get(trace_id)

    def _put(self, tr: Trace, pool: str) -> None:
        old = self._pool_of.get(tr.trace_id)
        if old is not None and old != pool:
            del self._pools[old][tr.trace_id]
        self._pool_of[tr.trace_id] = pool
        traces = self._pools[pool]
        traces[tr.trace_id] = tr
        traces.move_to_end(tr.trace_id)
        while len(traces) > self.cap:
            _, gone = traces.popitem(last=False)
            del self._pool_of[gone.trace_id]
            for task_id in gone.nodes:
                self._task_trace.pop(task_id, None)

    def _trace(self, trace_id: str, t: int) -> Trace:
        tr = self.get(trace_id)
        if tr is None:
            tr = Trace(trace_id, first_t=t, last_t=t)
        tr.first_t = min(tr.first_t, t)
        tr.last_t = max(tr.last_t, t)
        return tr

    def _file(self, tr: Trace) -> None:
        """(Re)file a trace in its pool, as the most recently active there."""
        if len(tr.nodes) > 1:
            pool = "workflow"
        elif any(n.ok is False for n in tr.nodes.values()):
            pool = "failed"
        else:
            pool = "single"
        self._put(tr, pool)

    def _node(self, ev: dict[str, Any], t: int, create: bool) -> tuple[Trace, Node] | None:
        task_id = ev.get("task_id")
        if not isinstance(task_id, str):
            return None
        trace_id = ev.get("trace")
        if not isinstance(trace_id, str):
            trace_id = self._task_trace.get(task_id, task_id if create else "")
        if not trace_id or (not create and trace_id not in self._pool_of):
            return None
        tr = self._trace(trace_id, t)
        node = tr.nodes.get(task_id)
        if node is None:
            if len(tr.nodes) >= self.max_tasks:
                return None
            node = tr.nodes[task_id] = Node(task_id, trace_id)
            self._task_trace[task_id] = trace_id
        return tr, node

    def apply(self, ev: dict[str, Any]) -> None:
        """Take one telemetry event; events this store has no use for are ignored."""
        name, t = ev.get("ev"), ev.get("t")
        if not isinstance(name, str) or not isinstance(t, int):
            return
        if name.startswith("shm."):
            self._handle(name, ev, t)
            return
        if not name.startswith("task."):
            return
        found = self._node(ev, t, create=name == "task.queued")
        if found is None:
            return
        tr, node = found
        node.history.append((name, t))
        for key in _NODE_FIELDS:
            if ev.get(key) is not None:
                node.info[key] = ev[key]
        if name == "task.queued":
            node.queued_t = node.queued_t or t
            parent = ev.get("parent_task")
            node.parent_task = parent if isinstance(parent, str) else None
        elif name == "task.dispatched":
            node.dispatched_t = t
            node.worker = ev.get("worker")
            node.attempts = int(ev.get("attempt") or node.attempts + 1)
            node.queued_us = ev.get("queued_us")
        elif name == "task.requeued":
            node.dispatched_t = None
        elif name == "task.done":
            node.done_t = t
            node.ok = bool(ev.get("ok"))
            node.code = ev.get("code")
            node.total_us = ev.get("total_us")
            node.run_us = ev.get("run_us")
        elif name == "task.rejected":
            node.done_t, node.ok, node.code = t, False, ev.get("code")
        self._file(tr)

    def _handle(self, name: str, ev: dict[str, Any], t: int) -> None:
        trace_id = ev.get("trace")
        task_id = ev.get("task_id")
        if not isinstance(trace_id, str) and isinstance(task_id, str):
            trace_id = self._task_trace.get(task_id)
        tr = self.get(trace_id) if isinstance(trace_id, str) else None
        if tr is None:
            return
        tr.last_t = max(tr.last_t, t)
        if len(tr.handles) < self.max_tasks:
            keep = ("segment", "owner", "holder", "bytes", "task_id", "generation")
            tr.handles.append({"ev": name, "t": t, **{k: ev[k] for k in keep if k in ev}})

    def recent(self, limit: int = 50, pool: str | None = None) -> list[dict[str, Any]]:
        """Workflows, then failures, then the rest (or one ``pool``); in each the most
        recently active first."""
        out: list[dict[str, Any]] = []
        for name in POOLS if pool is None else (pool,):
            for trace_id in reversed(self._pools.get(name, {})):
                if len(out) >= limit:
                    return out
                out.append({**self._pools[name][trace_id].summary(), "pool": name})
        return out

    def tree(self, trace_id: str) -> dict[str, Any] | None:
        """The trace as nested nodes (children under the task that spawned them), times in
        ms from the trace's first event; None when the trace is unknown or forgotten."""
        tr = self.get(trace_id)
        if tr is None:
            return None
        origin = tr.first_t
        nodes = {task_id: n.to_json(origin) for task_id, n in tr.nodes.items()}
        roots = []
        for task_id, node in tr.nodes.items():
            item = nodes[task_id]
            item.setdefault("children", [])
            parent = nodes.get(node.parent_task or "") if node.parent_task != task_id else None
            if parent is None:
                roots.append(item)
            else:
                parent.setdefault("children", []).append(item)
        handles = [{**h, "t": round((h["t"] - origin) / 1e6, 3)} for h in tr.handles]
        return {**tr.summary(), "roots": roots, "handles": handles}
