"""Runs one ``wasm`` task: module by digest, limits from the submit, ABI call.

Uses the worker's table of loaded agents (:mod:`.agent_table`: the modules the
orchestrator sent, bounded) and owns the mapping of a submit's ``limits`` onto
:class:`Limits`, capped by this worker's maximums and the agent's manifest
limits (computed once per agent, so a task pays nothing more for them).
The output the guest returns must be one msgpack value; it is spliced into the
result body as is, so the client decodes it without a second envelope. The
submit's ``seed`` seeds ``we.random``; ``we.emit`` values go to the loop's
``emit`` (each becomes a ``task.event``). A module that failed to load keeps
its error: later tasks naming it get the same one (its bytes were sent once).
The worker's :class:`~wasm_engine.tensors.TensorPlane`, when given, serves the
agents' ``we.tensor_*`` calls; the handles a task published are listed in its
result's ``stats.tensors`` (the loop leases them to the task id: docs/tensors.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgpack

from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.children import Budget, Link, TaskCalls
from wasm_engine.codec import packb
from wasm_engine.envelope import Envelope
from wasm_engine.errors import WasmEngineError
from wasm_engine.manifest import Manifest
from wasm_engine.tasks import Emit
from wasm_engine.tensors import TensorPlane

from . import capi
from .agent_table import AgentTable
from .runtime import Agent, CallResult, Limits, WasmRuntime

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
    children: int = 256  # child requests (spawn, generate…) one task may make
    tensor_bytes: int = 64 << 20  # bytes one task may publish with we.tensor_publish


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

    def __init__(
        self,
        runtime: WasmRuntime,
        limits: WorkerLimits | None = None,
        tensors: TensorPlane | None = None,
    ) -> None:
        self.runtime = runtime
        self.limits = limits or WorkerLimits()
        self.tensors = tensors  # the worker's plane (None: we.tensor_* are refused)
        # (digest, session) -> the slot holding that session's instance
        self.sessions: dict[tuple[str, str], capi.Slot] = {}
        self.table = AgentTable(runtime, self.limits, lambda: {d for d, _ in self.sessions})
        self._agent = self.table.get

    def capabilities(self) -> list[str]:
        return ["wasm"]

    def cancel(self, task_id: str) -> None:
        """A running agent call is not interrupted: its result arrives late and is dropped."""
        return None

    def may_block(self, dispatch: M.TaskDispatch) -> bool:
        """Whether the agent imports a host call that waits (loads it on first use;
        one that cannot load runs inline and fails there with its error)."""
        loaded = self.table.agents.get(dispatch.agent or "")  # (run() marks it used)
        if loaded is None:
            try:
                loaded = self._agent(dispatch.agent or "")
            except WasmEngineError:
                return False
        return loaded[0].blocking

    def _session_call(
        self,
        agent: Agent,
        dispatch: M.TaskDispatch,
        data: bytes,
        limits: Limits,
        emit: Emit | None,
        calls: TaskCalls | None,
    ) -> CallResult:
        """One call in a session's own instance (made on its first call, kept
        after; a call that traps loses it: the next call is told so with
        ``session.lost``, and the one after starts a fresh instance)."""
        key = (dispatch.agent or "", dispatch.session or "")
        slot = self.sessions.pop(key, None)
        if slot is None:
            if not dispatch.fresh:
                self.sessions[key] = capi.Slot()  # told once: the next call starts afresh
                raise WasmEngineError(
                    E.SESSION_LOST,
                    f"session {key[1]!r} has no instance on this worker (a call trapped, "
                    "or the worker restarted)",
                    detail={"session": key[1]},
                )
            slot = capi.Slot()
        try:
            result = agent.call(
                data, limits, task_id=dispatch.task_id, emit=emit, calls=calls, slot=slot,
                tensors=self.tensors,
            )  # fmt: skip
        except WasmEngineError:
            agent.give(slot, reuse=False)  # its instance was dropped with the trap
            raise
        self.sessions[key] = slot
        return result

    def end_session(self, agent: str | None, session: str | None) -> None:
        """Drop a session's instance (all of them with ``None``: the orchestrator forgot us)."""
        keys = list(self.sessions) if agent is None else [(agent, session or "")]
        for key in keys:
            slot = self.sessions.pop(key, None)
            loaded = self.table.agents.get(key[0])
            if slot is not None and loaded is not None:
                loaded[0].give(slot, reuse=False)

    def budget(self, digest: str) -> Budget:
        """What a task of this agent may ask of others: its manifest's grants and limits."""
        manifest = self.table.manifests.get(digest) or Manifest()
        grants = manifest.grants

        def granted(key: str) -> frozenset[str] | None:
            return frozenset(grants[key]) if grants.get(key) else None

        children = int(manifest.limits.get("children", self.limits.children))
        return Budget(min(children, self.limits.children), granted("agents"), granted("models"))

    def accept(self, dispatch: M.TaskDispatch, env: Envelope) -> None:
        self.table.accept(dispatch, env)

    def task_limits(
        self, submit: M.TaskSubmit, deadline_ns: int | None, mine: WorkerLimits | None = None
    ) -> Limits:
        mine = mine or self.limits
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
            tensor_bytes=mine.tensor_bytes,
        )

    def run(
        self,
        dispatch: M.TaskDispatch,
        env: Envelope,
        emit: Emit | None = None,
        link: Link | None = None,
    ) -> M.TaskResult:
        if not env.blobs:
            raise WasmEngineError(E.PROTO_BAD_FIELD, "task.dispatch without the submit body blob")
        submit = M.parse("task.submit", env.blobs[0])
        if not isinstance(submit, M.TaskSubmit):
            raise WasmEngineError(E.INTERNAL, "registry mismatch for task.submit")
        agent, caps = self._agent(dispatch.agent or "")
        limits = self.task_limits(submit, env.header.deadline, caps)
        data = submit.input if isinstance(submit.input, bytes) else NIL
        calls = None
        if link is not None:
            deadline = time.monotonic() + limits.timeout_s
            budget = self.budget(dispatch.agent or "")
            calls = TaskCalls(link, dispatch, env, submit.seed, deadline, budget)
        if dispatch.session is None:
            result = agent.call(
                data, limits, reuse=dispatch.reuse, task_id=dispatch.task_id, emit=emit,
                calls=calls, tensors=self.tensors,
            )  # fmt: skip
        else:
            result = self._session_call(agent, dispatch, data, limits, emit, calls)
        output = result.output or NIL
        try:
            msgpack.unpackb(output, max_ext_len=0, strict_map_key=False)
        except Exception as exc:
            if self.tensors is not None:  # nobody will hear of what it published
                for ref in result.tensors:
                    self.tensors.release(ref)
            raise WasmEngineError(
                E.WASM_BAD_OUTPUT,
                f"agent output is not one msgpack value: {type(exc).__name__}",
                detail={"size": len(output)},
            ) from None
        stats: dict[str, Any] = {"fuel_used": result.fuel_used, "wasm_us": result.run_ns // 1000}
        if result.events:
            stats["events"] = result.events
        if result.log_dropped:
            stats["log_dropped"] = result.log_dropped
        if result.tensors:
            stats["tensors"] = [ref.to_wire() for ref in result.tensors]
        return RawResult(dispatch.task_id, output, stats)
