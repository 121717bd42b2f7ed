"""The agent module store: WASM modules by content digest, bounded in bytes.

An agent is a module plus its manifest (``wasm_engine.manifest``), addressed by
the digest of both, or by its manifest name (the latest put under that name:
how agents name each other in ``we.spawn``). Clients put it once
(``agent.put``); the scheduler attaches the module and the canonical manifest to
the first dispatch of that digest to each worker, so workers never ask for it
and a restarted worker gets it again with its first task.

The store is bounded in bytes (512 MiB). A put that does not fit evicts the
least recently used agents (used = put, or named by a submit) that no live task
needs; a submit naming an evicted agent gets ``wasm.agent_missing``, and the SDK
puts the module again and resubmits, as after an orchestrator restart. Workers
that already hold an evicted module keep it. Only when agents of live tasks fill
the store is a put refused (``task.overloaded``, not retryable).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from wasm_engine.errors import PROTO_BAD_FIELD, TASK_OVERLOADED, WasmEngineError
from wasm_engine.manifest import Manifest, agent_digest


@dataclass(frozen=True, slots=True)
class StoredAgent:
    digest: str
    manifest: Manifest
    module: bytes
    wire_manifest: bytes  # canonical manifest JSON, sent with the module to each worker

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def reuse(self) -> bool:
        return self.manifest.reuse

    def describe(self) -> dict[str, object]:
        m = self.manifest
        return {
            "digest": self.digest,
            "name": m.name,
            "version": m.version,
            "size": len(self.module),
        }


class AgentStore:
    def __init__(self, max_bytes: int = 512 << 20, counters: Counter[str] | None = None) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.counters = counters if counters is not None else Counter()  # agents_evicted
        self._agents: OrderedDict[str, StoredAgent] = OrderedDict()  # least recently used first
        self._named: dict[str, StoredAgent] = {}

    def put(
        self,
        digest: str,
        manifest: Manifest,
        module: bytes,
        in_use: Callable[[], Collection[str]] = frozenset,
    ) -> StoredAgent:
        """Store a module (idempotent); ``in_use`` names the digests that live tasks
        need, asked only when room must be made."""
        if agent_digest(module, manifest) != digest:
            raise WasmEngineError(
                PROTO_BAD_FIELD,
                "agent.put digest does not match the module bytes and manifest",
                detail={"field": "digest"},
            )
        known = self._agents.get(digest)
        if known is not None:
            self._agents.move_to_end(digest)
            if manifest.name:
                self._named[manifest.name] = known
            return known
        if self.used + len(module) > self.max_bytes:
            self._make_room(len(module), in_use())
        agent = StoredAgent(digest, manifest, module, manifest.canonical_bytes())
        self.used += len(module)
        self._agents[digest] = agent
        if manifest.name:
            self._named[manifest.name] = agent  # the latest put of a name is the name
        return agent

    def _make_room(self, size: int, keep: Collection[str]) -> None:
        """Evict least recently used agents no live task needs until ``size`` fits."""
        victims = []
        room = self.max_bytes - self.used
        for digest, agent in self._agents.items():
            if room >= size:
                break
            if digest not in keep:
                victims.append(agent)
                room += len(agent.module)
        if room < size:
            raise WasmEngineError(
                TASK_OVERLOADED,
                f"agent store full ({self.used} of {self.max_bytes} bytes, held by live tasks)",
                retryable=False,
            )
        for agent in victims:
            del self._agents[agent.digest]
            self.used -= len(agent.module)
            self.counters["agents_evicted"] += 1
            if self._named.get(agent.name) is agent:
                del self._named[agent.name]

    def get(self, digest: str) -> StoredAgent | None:
        return self._agents.get(digest)

    def find(self, ref: str) -> StoredAgent | None:
        """By digest (``sha256:…``), else by manifest name (the latest put under it);
        a found agent becomes the most recently used."""
        agent = self._agents.get(ref) or self._named.get(ref)
        if agent is not None:
            self._agents.move_to_end(agent.digest)
        return agent

    def describe(self) -> list[dict[str, object]]:
        return [a.describe() for a in self._agents.values()]

    def __len__(self) -> int:
        return len(self._agents)
