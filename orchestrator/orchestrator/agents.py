"""The agent module store: WASM modules by content digest, bounded in bytes.

Clients put a module once (``agent.put``); the scheduler attaches it to the first
dispatch of that digest to each worker, so workers never ask for it and a
restarted worker gets it again with its first task.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from wasm_engine.errors import AGENT_CONFLICT, PROTO_BAD_FIELD, TASK_OVERLOADED, WasmEngineError


@dataclass(frozen=True, slots=True)
class StoredAgent:
    digest: str
    name: str
    reuse: bool
    module: bytes


def digest_of(module: bytes) -> str:
    return "sha256:" + hashlib.sha256(module).hexdigest()


class AgentStore:
    def __init__(self, max_bytes: int = 512 << 20) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._agents: dict[str, StoredAgent] = {}

    def put(self, digest: str, name: str, reuse: bool, module: bytes) -> StoredAgent:
        if digest_of(module) != digest:
            raise WasmEngineError(
                PROTO_BAD_FIELD,
                "agent.put digest does not match the module bytes",
                detail={"field": "digest"},
            )
        known = self._agents.get(digest)
        if known is not None:
            if known.reuse != reuse:  # reuse is part of what the agent is: never flip it
                raise WasmEngineError(
                    AGENT_CONFLICT,
                    f"agent {digest} is stored with reuse={known.reuse}; "
                    "the same module with the other setting is another agent: change its bytes",
                    detail={"digest": digest, "reuse": known.reuse},
                )
            return known
        if known is None and self.used + len(module) > self.max_bytes:
            raise WasmEngineError(
                TASK_OVERLOADED,
                f"agent store full ({self.used} of {self.max_bytes} bytes)",
                retryable=False,
            )
        agent = StoredAgent(digest, name, reuse, module)
        self.used += len(module)
        self._agents[digest] = agent
        return agent

    def get(self, digest: str) -> StoredAgent | None:
        return self._agents.get(digest)

    def __len__(self) -> int:
        return len(self._agents)
