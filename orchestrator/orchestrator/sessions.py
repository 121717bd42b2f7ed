"""Stateful agent sessions: sticky routing, one call at a time, idle timeout.

A task naming a ``session`` runs in that session's instance of its agent: the
first call binds the session (agent digest + session id) to the worker it is
dispatched to, and every later call goes to that worker only, through a queue
only it serves (``wasm@<worker name>``), so the instance's memory persists
between calls. Calls of one session run one at a time: while one runs, the next
are parked here in order. The binding ends when the session has been idle for
``session_idle`` seconds (the worker is told with ``session.end``) or when its
worker is gone: then its parked and queued calls, and the one running, fail
with ``session.lost`` (the state is gone; running them on another worker would
silently start from scratch), and so does the next call made after: then the
session starts afresh. Part of the :class:`~orchestrator.scheduler.Scheduler`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.messages import SessionEnd
from wasm_engine.protocol import make_header

from .outbox import BACK
from .tasks import State, Task

if TYPE_CHECKING:
    from .scheduler import Scheduler
    from .workers import Worker

Key = tuple[str, str]  # (agent digest, session id)


@dataclass
class Session:
    key: Key
    worker: bytes | None = None  # the peer it is bound to, once its first call ran
    worker_name: str = ""
    running: Task | None = None
    parked: deque[Task] = field(default_factory=deque)
    last_used: int = 0
    calls: int = 0
    lost: str = ""  # why its instance is gone: the next call is told, then it starts afresh


def queue_key(worker_name: str) -> str:
    return f"wasm@{worker_name}"


class Sessions:
    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self._by_key: dict[Key, Session] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def route(self, task: Task, session: str, now: int) -> str | None:
        """The queue for a new call of ``session``, or None when it is parked
        behind the call now running."""
        key = (task.agent or "", session)
        s = self._by_key.get(key)
        if s is None:
            s = self._by_key[key] = Session(key, last_used=now)
        task.session = key
        if s.lost:  # told once, then the session starts afresh
            del self._by_key[key]
            task.parked = True  # in no queue
            self.sched.end(task, _lost(task, s.lost), now)
            return None
        if s.running is not None or s.parked:
            s.parked.append(task)
            task.parked = True
            return None
        return "wasm" if s.worker is None else queue_key(s.worker_name)

    def started(self, task: Task, worker: Worker) -> bool:
        """A call is dispatched; True when it is the session's first (a fresh instance)."""
        s = self._by_key[task.session] if task.session else None
        if s is None:
            return False
        fresh = s.worker is None
        if fresh:
            s.worker, s.worker_name = worker.peer, worker.name
        s.running = task
        s.calls += 1
        return fresh

    def finished(self, task: Task, now: int) -> None:
        """A call ended (any way): the next parked call may go."""
        s = self._by_key.get(task.session) if task.session else None
        if s is None or (s.running is not task and task not in s.parked):
            return
        if s.running is task:
            s.running = None
        else:
            s.parked.remove(task)
        s.last_used = now
        if s.running is None and s.parked:
            nxt = s.parked.popleft()
            key = "wasm" if s.worker is None else queue_key(s.worker_name)
            self.sched.enqueue(nxt, key)

    def lost(self, task: Task, now: int) -> bool:
        """``task`` lost its worker: True if it is a session call (then it ends with
        ``session.lost``, as does everything else of the sessions on that worker)."""
        if not task.session:
            return False
        s = self._by_key.get(task.session)
        if s is not None and s.worker is not None:
            self._drop(s, now, "its worker is gone")
        else:
            self.sched.end(task, _lost(task, "its worker is gone"), now)
        return True

    def worker_gone(self, worker: Worker, now: int) -> None:
        for s in [s for s in self._by_key.values() if s.worker == worker.peer]:
            self._drop(s, now, "its worker is gone")

    def expire(self, now: int) -> None:
        """Drop sessions idle for ``session_idle``; their workers free the instance."""
        idle_ns = int(self.sched.settings.session_idle * 1e9)
        for s in list(self._by_key.values()):
            if s.running is None and not s.parked and now - s.last_used >= idle_ns:
                del self._by_key[s.key]
                if s.lost:
                    continue
                if s.worker is not None and self.sched.workers.get(s.worker) is not None:
                    header = make_header("session.end", sender=self.sched.name)
                    body = SessionEnd(agent=s.key[0], session=s.key[1]).pack()
                    self.sched.send(BACK, s.worker, header, body)
                self.sched.counters["sessions_expired"] += 1

    def describe(self) -> list[dict[str, object]]:
        return [
            {
                "agent": s.key[0],
                "session": s.key[1],
                "worker": s.worker_name or None,
                "calls": s.calls,
                "parked": len(s.parked),
                "running": s.running is not None,
            }
            for s in self._by_key.values()
        ]

    def _drop(self, s: Session, now: int, why: str) -> None:
        self._by_key[s.key] = Session(s.key, last_used=now, lost=why)  # a tombstone
        self.sched.counters["sessions_lost"] += 1
        victims = [t for t in (s.running, *s.parked) if t is not None]
        victims += [t for t in self.sched.tasks_in(queue_key(s.worker_name)) if t.session == s.key]
        s.running, s.parked = None, deque()
        for task in victims:
            if task.state is not State.DONE:
                self.sched.end(task, _lost(task, why), now)


def _lost(task: Task, why: str) -> WasmEngineError:
    agent, session = task.session or ("", "")
    return WasmEngineError(
        E.SESSION_LOST,
        f"session {session!r} of agent {agent[:19]}… is gone: {why}",
        detail={"session": session, "agent": agent},
    )
