"""Tasks and their queues: the facts the scheduler keeps about each task.

Owns the :class:`Task` record, the bounded priority queue of one kind/model and
the retention of finished tasks (so a duplicate ``task_id`` gets the stored
result instead of a second run). Pure data structures; no sockets, no clock.

A finished task leaves the live table for :class:`Retention` as a
:data:`Finished` record: an exact tuple of atomic values, which CPython's
garbage collector untracks. Up to 200k retained tasks then cost a full
collection nothing, where as live objects they cost about a tenth of the
orchestrator's CPU at 10k tasks/s.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"


@dataclass(slots=True)
class Reply:
    """A finished task's answer, kept as the frames the worker sent."""

    type: str  # task.result | error
    body: bytes
    blobs: list[bytes]
    ok: bool


@dataclass(slots=True, eq=False)
class Task:
    task_id: str
    kind: str
    queue: str  # queue key: "wasm" or a model name
    agent: str | None
    priority: int
    body: bytes  # the client's submit body, forwarded unrepacked
    client: bytes  # routing id of the submitting client
    submit_id: str  # header id of the submit: results name it as parent
    trace: str | None
    deadline: int | None  # wall-clock ns, or None
    submitted_at: int
    seq: int = 0  # FIFO order within one priority
    state: State = State.QUEUED
    attempts: int = 0
    worker: bytes | None = None
    dispatch_id: str | None = None
    queued_at: int = 0  # last time it entered a queue
    started_at: int = 0
    waiters: list[tuple[int, bytes, str]] = field(default_factory=list)  # duplicate submits
    side: int = 0  # the socket its submitter is on: FRONT (a client) or BACK (a worker's task)
    parent_task: Task | None = None  # the running task that asked for this one (a child)
    depth: int = 0  # 0 for a client's task, parent's + 1 for a child
    session: tuple[str, str] | None = None  # (agent digest, session id) of a stateful call
    parked: bool = False  # a session call waiting behind the one running: in no queue
    waiting_on: int = 0  # its children not answered yet (while > 0 its credit is lent)
    module_sent: bool = False  # its last dispatch carried the agent's module


class TaskQueue:
    """Highest priority first, FIFO within a priority, bounded; removal is lazy
    (a task that left the QUEUED state is skipped when popped)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._heap: list[tuple[int, int, Task]] = []
        self.depth = 0

    def full(self) -> bool:
        return self.depth >= self.limit

    def push(self, task: Task) -> None:
        heapq.heappush(self._heap, (-task.priority, task.seq, task))
        self.depth += 1

    def discard(self, task: Task) -> None:
        """Account for a queued task leaving by another way (cancel, deadline)."""
        self.depth -= 1

    def queued(self) -> list[Task]:
        return [t for _, _, t in self._heap if t.state is State.QUEUED and t.worker is None]

    def pop(self) -> Task | None:
        heap = self._heap
        while heap:
            task = heapq.heappop(heap)[2]
            if task.state is State.QUEUED and task.worker is None:
                self.depth -= 1
                return task
        return None


# A finished task as retention keeps it: (finished_at, submit body, trace, reply
# type, reply body, reply blobs). Only atomic values inside: the GC untracks it.
Finished = tuple[int, bytes, str | None, str, bytes, tuple[bytes, ...]]


def finished(task: Task, reply: Reply, now: int) -> Finished:
    return (now, task.body, task.trace, reply.type, reply.body, tuple(reply.blobs))


class Retention:
    """Finished tasks kept for ``ttl_ns`` (and at most ``max_tasks``) to answer
    duplicate submits; oldest first out."""

    def __init__(self, ttl_ns: int, max_tasks: int = 200_000) -> None:
        self.ttl_ns = ttl_ns
        self.max_tasks = max_tasks
        self._done: OrderedDict[str, Finished] = OrderedDict()

    def add(self, task_id: str, record: Finished) -> None:
        self._done[task_id] = record
        self._done.move_to_end(task_id)

    def get(self, task_id: str) -> Finished | None:
        return self._done.get(task_id)

    def expire(self, now: int) -> int:
        """Forget the records past their ttl (or over ``max_tasks``); how many."""
        done = self._done
        forgotten = 0
        while done:
            at = next(iter(done.values()))[0]
            if now - at <= self.ttl_ns and len(done) <= self.max_tasks:
                break
            done.popitem(last=False)
            forgotten += 1
        return forgotten

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._done

    def __len__(self) -> int:
        return len(self._done)
