"""Workflows by trace id: every task of a trace as a tree, with its timings.

Owns :class:`Traces`, built from telemetry events alone: ``task.queued`` makes a
node (its ``parent_task`` names the task that spawned it, when the orchestrator
says so), ``task.dispatched``/``task.requeued``/``task.done`` time it, and any
event naming a trace and carrying ``segment``/``bytes`` (the ``shm.*`` events)
is kept as one of the trace's tensor handles. Bounded: the oldest traces are
forgotten first. Pure: times are the events' own ``t`` (ns), no clock is read.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

#: event fields copied onto a node when present (the inference and kind fields land later)
_NODE_FIELDS = ("kind", "agent", "model", "queue", "priority", "device", "batch", "fallback")


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
            "root": root.info.get("agent") or root.info.get("queue") if root else None,
            "start_ns": self.first_t,
            "duration_ms": round((self.last_t - self.first_t) / 1e6, 3),
        }


class Traces:
    """The ``max_traces`` most recently active traces, each up to ``max_tasks`` tasks."""

    def __init__(self, max_traces: int = 500, max_tasks: int = 2000) -> None:
        self.max_traces = max_traces
        self.max_tasks = max_tasks
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self._task_trace: dict[str, str] = {}  # task id -> trace, for events without a trace

    def __len__(self) -> int:
        return len(self._traces)

    def _trace(self, trace_id: str, t: int) -> Trace:
        tr = self._traces.get(trace_id)
        if tr is None:
            tr = self._traces[trace_id] = Trace(trace_id, first_t=t, last_t=t)
            while len(self._traces) > self.max_traces:
                _, old = self._traces.popitem(last=False)
                for task_id in old.nodes:
                    self._task_trace.pop(task_id, None)
        else:
            self._traces.move_to_end(trace_id)
        tr.first_t = min(tr.first_t, t)
        tr.last_t = max(tr.last_t, t)
        return tr

    def _node(self, ev: dict[str, Any], t: int, create: bool) -> Node | None:
        task_id = ev.get("task_id")
        if not isinstance(task_id, str):
            return None
        trace_id = ev.get("trace")
        if not isinstance(trace_id, str):
            trace_id = self._task_trace.get(task_id, task_id if create else "")
        if not trace_id or (not create and trace_id not in self._traces):
            return None
        tr = self._trace(trace_id, t)
        node = tr.nodes.get(task_id)
        if node is None:
            if len(tr.nodes) >= self.max_tasks:
                return None
            node = tr.nodes[task_id] = Node(task_id, trace_id)
            self._task_trace[task_id] = trace_id
        return node

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
        node = self._node(ev, t, create=name == "task.queued")
        if node is None:
            return
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

    def _handle(self, name: str, ev: dict[str, Any], t: int) -> None:
        trace_id = ev.get("trace")
        task_id = ev.get("task_id")
        if not isinstance(trace_id, str) and isinstance(task_id, str):
            trace_id = self._task_trace.get(task_id)
        if not isinstance(trace_id, str) or trace_id not in self._traces:
            return
        tr = self._trace(trace_id, t)
        if len(tr.handles) < self.max_tasks:
            keep = ("segment", "owner", "holder", "bytes", "task_id", "generation")
            tr.handles.append({"ev": name, "t": t, **{k: ev[k] for k in keep if k in ev}})

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most recently active traces first."""
        out = []
        for trace_id in reversed(self._traces):
            out.append(self._traces[trace_id].summary())
            if len(out) >= limit:
                break
        return out

    def tree(self, trace_id: str) -> dict[str, Any] | None:
        """The trace as nested nodes (children under the task that spawned them), times in
        ms from the trace's first event; None when the trace is unknown or forgotten."""
        tr = self._traces.get(trace_id)
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
