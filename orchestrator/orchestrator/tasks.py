"""Tasks and their queues: the facts the scheduler keeps about each task.

Owns the :class:`Task` record, the bounded priority queue of one kind/model and
the retention of finished tasks (so a duplicate ``task_id`` gets the stored
result instead of a second run). Pure data structures; no sockets, no clock.
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
    reply: Reply | None = None
    finished_at: int = 0
    waiters: list[tuple[int, bytes, str]] = field(default_factory=list)  # duplicate submits
    side: int = 0  # the socket its submitter is on: FRONT (a client) or BACK (a worker's task)
    parent_task: Task | None = None  # the running task that asked for this one (a child)
    depth: int = 0  # 0 for a client's task, parent's + 1 for a child
    session: tuple[str, str] | None = None  # (agent digest, session id) of a stateful call
    parked: bool = False  # a session call waiting behind the one running: in no queue
    waiting_on: int = 0  # its children not answered yet (while > 0 its credit is lent)


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


class Retention:
    """Finished tasks kept for ``ttl_ns`` (and at most ``max_tasks``) to answer
    duplicate submits; oldest first out."""

    def __init__(self, ttl_ns: int, max_tasks: int = 200_000) -> None:
        self.ttl_ns = ttl_ns
        self.max_tasks = max_tasks
        self._done: OrderedDict[str, int] = OrderedDict()

    def add(self, task_id: str, now: int) -> None:
        self._done[task_id] = now
        self._done.move_to_end(task_id)

    def expired(self, now: int) -> list[str]:
        """Task ids to forget now."""
        out: list[str] = []
        done = self._done
        while done:
            task_id, at = next(iter(done.items()))
            if now - at <= self.ttl_ns and len(done) <= self.max_tasks:
                break
            done.popitem(last=False)
            out.append(task_id)
        return out

    def __len__(self) -> int:
        return len(self._done)
