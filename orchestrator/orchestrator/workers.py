"""The worker registry: who is connected, what they can run, what they hold.

Owns each worker's record (from ``worker.hello``), its credits and in-flight
dispatches, its liveness, its last reported ``stats``, and the choice of a
worker for a queue. Pure state: the scheduler feeds it events with ``now`` and
acts on what it returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from wasm_engine.liveness import Liveness
from wasm_engine.messages import WorkerHello


@dataclass(slots=True, eq=False)
class Worker:
    peer: bytes  # routing id of its task channel
    name: str
    kind: str  # wasm | inference
    credits: int
    capabilities: list[str]
    host: str
    shm_ns: str
    device: str
    pid: int
    liveness: Liveness
    registered_at: int
    inflight: dict[str, str] = field(default_factory=dict)  # dispatch id -> task id
    agents: set[str] = field(default_factory=set)  # module digests sent to it
    state: str = "ready"  # ready | draining
    completed: int = 0
    lent: int = 0  # its tasks now waiting on child requests: their credits are lent
    stats: dict[str, Any] = field(default_factory=dict)  # its last heartbeat's stats

    @property
    def free(self) -> int:
        if self.state != "ready":
            return 0
        # a task waiting on its children does not count: the tasks it holds that
        # compute stay within its credits, and a chain of waiting parents never starves
        return self.credits - len(self.inflight) + self.lent

    def serves(self, queue: str) -> bool:
        if self.kind == "wasm":  # and its sessions' queue (see orchestrator.sessions)
            return queue in ("wasm", f"wasm@{self.name}")
        return queue in self.capabilities or "*" in self.capabilities

    def describe(self, now: int) -> dict[str, object]:
        return {
            "id": self.peer.decode("utf-8", "replace"),
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "credits": self.credits,
            "inflight": len(self.inflight),
            "waiting": self.lent,
            "completed": self.completed,
            "heartbeat_age_s": round(self.liveness.age_s(now), 3),
            "capabilities": self.capabilities,
            "host": self.host,
            "shm_ns": self.shm_ns,
            "device": self.device,
            "pid": self.pid,
            "uptime_s": round((now - self.registered_at) / 1e9, 3),
            "stats": self.stats,
        }


class Registry:
    def __init__(self, interval_ns: int, liveness: int) -> None:
        self.interval_ns = interval_ns
        self.liveness = liveness
        self._by_peer: dict[bytes, Worker] = {}
        # queue key -> workers that serve it, so a dispatch looks at few records
        self._by_queue: dict[str, list[Worker]] = {}

    def __len__(self) -> int:
        return len(self._by_peer)

    def __iter__(self) -> Iterator[Worker]:
        return iter(list(self._by_peer.values()))

    def get(self, peer: bytes) -> Worker | None:
        return self._by_peer.get(peer)

    def add(self, peer: bytes, hello: WorkerHello, now: int) -> Worker:
        worker = Worker(
            peer=peer,
            name=hello.name,
            kind=hello.kind,
            credits=hello.credits,
            capabilities=list(hello.capabilities),
            host=hello.host,
            shm_ns=hello.shm_ns,
            device=hello.device,
            pid=hello.pid,
            liveness=Liveness(self.interval_ns, self.liveness, now),
            registered_at=now,
        )
        self._by_peer[peer] = worker
        self._by_queue.clear()
        return worker

    def remove(self, worker: Worker) -> None:
        self._by_peer.pop(worker.peer, None)
        self._by_queue.clear()

    def serving(self, queue: str) -> list[Worker]:
        found = self._by_queue.get(queue)
        if found is None:
            found = [w for w in self._by_peer.values() if w.serves(queue)]
            self._by_queue[queue] = found
        return found

    def pick(self, queue: str) -> Worker | None:
        """The worker of ``queue`` with the most free credits, or None."""
        best: Worker | None = None
        best_free = 0
        for worker in self.serving(queue):
            free = worker.free
            if free > best_free:
                best, best_free = worker, free
        return best

    def expired(self, now: int) -> list[Worker]:
        return [w for w in self._by_peer.values() if w.liveness.expired(now)]
