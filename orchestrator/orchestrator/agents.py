"""The agent module store: WASM modules by content digest, bounded in bytes.

An agent is a module plus its manifest (``wasm_engine.manifest``), addressed by
the digest of both, or by its manifest name (the latest put under that name:
how agents name each other in ``we.spawn``). Clients put it once
(``agent.put``); the scheduler attaches the module and the canonical manifest to
the first dispatch of that digest to each worker, so workers never ask for it
and a restarted worker gets it again with its first task.
"""

from __future__ import annotations

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
    def __init__(self, max_bytes: int = 512 << 20) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._agents: dict[str, StoredAgent] = {}
        self._named: dict[str, StoredAgent] = {}

    def put(self, digest: str, manifest: Manifest, module: bytes) -> StoredAgent:
        if agent_digest(module, manifest) != digest:
            raise WasmEngineError(
                PROTO_BAD_FIELD,
                "agent.put digest does not match the module bytes and manifest",
                detail={"field": "digest"},
            )
        known = self._agents.get(digest)
        if known is not None:
            return known
        if self.used + len(module) > self.max_bytes:
            raise WasmEngineError(
                TASK_OVERLOADED,
                f"agent store full ({self.used} of {self.max_bytes} bytes)",
                retryable=False,
            )
        agent = StoredAgent(digest, manifest, module, manifest.canonical_bytes())
        self.used += len(module)
        self._agents[digest] = agent
        if manifest.name:
            self._named[manifest.name] = agent  # the latest put of a name is the name
        return agent

    def get(self, digest: str) -> StoredAgent | None:
        return self._agents.get(digest)

    def find(self, ref: str) -> StoredAgent | None:
        """By digest (``sha256:…``), else by manifest name (the latest put under it)."""
        return self._agents.get(ref) or self._named.get(ref)

    def describe(self) -> list[dict[str, object]]:
        return [a.describe() for a in self._agents.values()]

    def __len__(self) -> int:
        return len(self._agents)
