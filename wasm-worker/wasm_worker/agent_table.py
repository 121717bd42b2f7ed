"""The wasm worker's table of loaded agents, bounded.

Owns what the orchestrator sent (the module blob and canonical manifest blob it
attaches to the first dispatch of each agent digest to this worker), loading it
into the runtime once, the agent's task limits (this worker's capped by the
manifest's, computed once), the manifests (for grants), and the errors of
modules that did not load (later tasks naming them get the same one).

At most ``max_agents`` agents stay loaded; past that the least recently used
one not holding a session's instance is dropped (its compiled code and idle
instances with it; the disk cache keeps the compiled module). A task naming a
dropped agent fails with ``wasm.agent_missing``; the orchestrator then forgets
this worker has it and dispatches the task again with the module attached
(docs/protocol.md), so a long-lived worker's memory does not grow with every
agent it ever ran.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.envelope import Envelope
from wasm_engine.errors import WasmEngineError
from wasm_engine.manifest import Manifest, agent_digest, parse_manifest

from .runtime import Agent, WasmRuntime

if TYPE_CHECKING:
    from .handler import WorkerLimits

MAX_AGENTS = 256


class AgentTable:
    def __init__(
        self,
        runtime: WasmRuntime,
        limits: WorkerLimits,
        pinned: Callable[[], Collection[str]] = frozenset,
        max_agents: int = MAX_AGENTS,
    ) -> None:
        self.runtime = runtime
        self.limits = limits
        self.pinned = pinned  # digests not to drop (agents holding a session's instance)
        self.max_agents = max_agents
        # digest -> the loaded agent and its task limits; least recently used first
        self.agents: OrderedDict[str, tuple[Agent, WorkerLimits]] = OrderedDict()
        self.modules: dict[str, tuple[bytes, bytes | None]] = {}  # received, not loaded yet
        self.manifests: dict[str, Manifest] = {}
        self.refused: dict[str, WasmEngineError] = {}  # digest -> why it did not load
        self.dropped = 0
        self._loading = threading.Lock()

    def accept(self, dispatch: M.TaskDispatch, env: Envelope) -> None:
        """Keep the module blob of a first dispatch even if that task never runs
        (cancelled before it started): the orchestrator sends each module once."""
        if len(env.blobs) > 1 and dispatch.agent and dispatch.agent not in self.agents:
            manifest = env.blobs[2] if len(env.blobs) > 2 else None
            self.modules[dispatch.agent] = (env.blobs[1], manifest)

    def get(self, digest: str) -> tuple[Agent, WorkerLimits]:
        """The loaded agent (loaded now from the blob kept for it); ``wasm.agent_missing``,
        ``wasm.bad_module``… when it cannot be."""
        found = self.agents.get(digest)
        if found is not None:
            try:  # noqa: SIM105 - per task: suppress() costs a context manager each time
                self.agents.move_to_end(digest)
            except KeyError:  # dropped by another thread meanwhile
                pass
            return found
        with self._loading:  # task threads: one loads, the others wait for it
            return self._load(digest)

    def limits_for(self, manifest: Manifest) -> WorkerLimits:
        """This worker's limits capped by a manifest's: its limits become the task
        defaults and the most a task may ask for (never above this worker's)."""
        mine, asked = self.limits, manifest.limits
        fuel = min(int(asked.get("fuel", mine.max_fuel)), mine.max_fuel)
        timeout = min(float(asked.get("timeout", mine.max_timeout_s)), mine.max_timeout_s)
        memory = min(int(asked.get("memory", mine.max_memory_bytes)), mine.max_memory_bytes)
        return dataclasses.replace(
            mine,
            fuel=fuel if "fuel" in asked else min(mine.fuel, fuel),
            max_fuel=fuel,
            timeout_s=timeout if "timeout" in asked else min(mine.timeout_s, timeout),
            max_timeout_s=timeout,
            memory_bytes=memory if "memory" in asked else min(mine.memory_bytes, memory),
            max_memory_bytes=memory,
        )

    def _load(self, digest: str) -> tuple[Agent, WorkerLimits]:
        found = self.agents.get(digest)
        if found is not None:
            return found
        refused = self.refused.get(digest)
        if refused is not None:
            raise WasmEngineError(refused.code, refused.message, detail=dict(refused.detail))
        sent = self.modules.pop(digest, None)
        if sent is None:
            raise WasmEngineError(
                E.WASM_AGENT_MISSING, f"agent {digest} was never sent to this worker"
            )
        module, raw_manifest = sent
        try:
            manifest = Manifest()
            if raw_manifest is not None:
                try:
                    manifest = parse_manifest(json.loads(raw_manifest))
                except (ValueError, WasmEngineError) as exc:
                    raise WasmEngineError(E.WASM_BAD_MODULE, f"bad manifest: {exc}") from None
            agent = self.runtime.load(module, key=digest)
            # without a manifest (a bare module): the digest is the module's own
            want = (
                agent.digest
                if raw_manifest is None
                else agent_digest(module, manifest, agent.digest)
            )
            if want != digest:
                msg = f"agent digest {want} != {digest}"
                raise WasmEngineError(E.WASM_BAD_MODULE, msg)
        except WasmEngineError as err:
            if err.code in (E.WASM_BAD_MODULE, E.WASM_CAPABILITY_DENIED):
                self.refused[digest] = err
            raise
        loaded = self.agents[digest] = (agent, self.limits_for(manifest))
        self.manifests[digest] = manifest
        if len(self.agents) > self.max_agents:
            self._drop_least_used(keep=digest)
        return loaded

    def _drop_least_used(self, keep: str) -> None:
        pinned = set(self.pinned())
        for digest in list(self.agents):  # least recently used first
            if len(self.agents) <= self.max_agents:
                return
            if digest == keep or digest in pinned:
                continue
            del self.agents[digest]
            self.manifests.pop(digest, None)
            self.runtime.forget(digest)
            self.dropped += 1
