"""Runs one ``wasm`` task: module by digest, limits from the submit, ABI call.

Owns the worker's table of loaded agents (filled from the module blob the
orchestrator attaches to the first dispatch of each digest) and the mapping of
a submit's ``limits`` onto :class:`Limits`, capped by this worker's maximums.
The output the guest returns must be one msgpack value; it is spliced into the
result body as is, so the client decodes it without a second envelope. The
submit's ``seed`` seeds ``we.random``; ``we.emit`` values go to the loop's
``emit`` (each becomes a ``task.event``). A module that failed to load keeps
its error: later tasks naming it get the same one (its bytes were sent once).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgpack

from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.codec import packb
from wasm_engine.envelope import Envelope
from wasm_engine.errors import WasmEngineError
from wasm_engine.tasks import Emit

from .runtime import Agent, Limits, WasmRuntime

NIL = b"\xc0"


@dataclass(frozen=True)
class WorkerLimits:
    """Defaults for a task that names none, and the most any task may ask for."""

    fuel: int = 10_000_000_000
    max_fuel: int = 1_000_000_000_000
    timeout_s: float = 30.0
    max_timeout_s: float = 600.0
    memory_bytes: int = 256 << 20
    max_memory_bytes: int = 4 << 30
    max_output: int = 4 << 20


class RawResult(M.TaskResult):
    """A result whose ``output`` is already msgpack bytes, spliced into the body."""

    def pack(self) -> bytes:
        head = packb({"task_id": self.task_id, "stats": self.stats})
        # a fixmap of 2 entries + "output": <raw value> -> a map of 3 entries
        output: bytes = self.output
        return b"\x83" + head[1:] + packb("output") + output


class WasmHandler:
    kind = "wasm"
    device = "cpu"

    def __init__(self, runtime: WasmRuntime, limits: WorkerLimits | None = None) -> None:
        self.runtime = runtime
        self.limits = limits or WorkerLimits()
        self.agents: dict[str, Agent] = {}
        self.modules: dict[str, bytes] = {}  # received, not compiled yet
        self.refused: dict[str, WasmEngineError] = {}  # digest -> why it did not load

    def capabilities(self) -> list[str]:
        return ["wasm"]

    def accept(self, dispatch: M.TaskDispatch, env: Envelope) -> None:
        """Keep the module blob of a first dispatch even if that task never runs
        (cancelled before it started): the orchestrator sends each module once."""
        if len(env.blobs) > 1 and dispatch.agent and dispatch.agent not in self.agents:
            self.modules[dispatch.agent] = env.blobs[1]

    def _agent(self, digest: str) -> Agent:
        found = self.agents.get(digest)
        if found is not None:
            return found
        refused = self.refused.get(digest)
        if refused is not None:
            raise WasmEngineError(refused.code, refused.message, detail=dict(refused.detail))
        module = self.modules.pop(digest, None)
        if module is None:
            raise WasmEngineError(
                E.WASM_AGENT_MISSING, f"agent {digest} was never sent to this worker"
            )
        try:
            agent = self.runtime.load(module)
            if agent.digest != digest:
                msg = f"module digest {agent.digest} != {digest}"
                raise WasmEngineError(E.WASM_BAD_MODULE, msg)
        except WasmEngineError as err:
            if err.code in (E.WASM_BAD_MODULE, E.WASM_CAPABILITY_DENIED):
                self.refused[digest] = err
            raise
        self.agents[digest] = agent
        return agent

    def task_limits(self, submit: M.TaskSubmit, deadline_ns: int | None) -> Limits:
        mine = self.limits
        asked = submit.limits
        timeout = min(float(asked.get("timeout", mine.timeout_s)), mine.max_timeout_s)
        if deadline_ns is not None:
            timeout = min(timeout, max(0.0, (deadline_ns - time.time_ns()) / 1e9))
        return Limits(
            fuel=min(int(asked.get("fuel", mine.fuel)), mine.max_fuel),
            timeout_s=timeout,
            memory_bytes=min(int(asked.get("memory", mine.memory_bytes)), mine.max_memory_bytes),
            max_output=mine.max_output,
            seed=submit.seed,
        )

    def run(
        self,
        dispatch: M.TaskDispatch,
        env: Envelope,
        emit: Emit | None = None,
    ) -> M.TaskResult:
        if not env.blobs:
            raise WasmEngineError(E.PROTO_BAD_FIELD, "task.dispatch without the submit body blob")
        submit = M.parse("task.submit", env.blobs[0])
        if not isinstance(submit, M.TaskSubmit):
            raise WasmEngineError(E.INTERNAL, "registry mismatch for task.submit")
        agent = self._agent(dispatch.agent or "")
        limits = self.task_limits(submit, env.header.deadline)
        data = submit.input if isinstance(submit.input, bytes) else NIL
        result = agent.call(data, limits, reuse=dispatch.reuse, task_id=dispatch.task_id, emit=emit)
        output = result.output or NIL
        try:
            msgpack.unpackb(output, max_ext_len=0, strict_map_key=False)
        except Exception as exc:
            raise WasmEngineError(
                E.WASM_BAD_OUTPUT,
                f"agent output is not one msgpack value: {type(exc).__name__}",
                detail={"size": len(output)},
            ) from None
        stats = {"fuel_used": result.fuel_used, "wasm_us": result.run_ns // 1000}
        if result.events:
            stats["events"] = result.events
        if result.log_dropped:
            stats["log_dropped"] = result.log_dropped
        return RawResult(dispatch.task_id, output, stats)
