"""Child requests of a running task, worker side: ``spawn``, ``send``, ``generate``, ``infer``.

An agent asks for other work through host calls; each becomes a ``task.submit``
the worker sends to the orchestrator on its task channel, with ``parent`` = the
header id of the dispatch it runs in (so the orchestrator lends that task's
credit while it waits) and the dispatch's trace. The answer (``task.result`` or
``error``, parent = the child's submit id) comes back on the same channel; the
worker's loop hands it to :meth:`Link.resolve`.

:class:`TaskCalls` is one task's view: ``submit`` returns a handle at once (a
planner fans out), ``wait`` blocks the task's thread until that child answered,
giving its run permit back meanwhile so another task can run. Child task ids
are ``<parent task id>/<n>`` and child seeds are derived from the parent's seed
and ``n``: a parent run again (another attempt) submits the same children, which
the orchestrator answers from their stored results instead of running them twice.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from . import errors as E
from . import messages as M
from .codec import packb
from .envelope import Envelope
from .errors import WasmEngineError
from .protocol import Header, make_header

__all__ = ["Budget", "ChildReply", "Link", "TaskCalls", "child_seed"]

#: request keys each kind accepts (anything else is refused: a typo should not pass silently)
_GENERATE_KEYS = ("prompt", "messages", "model", "max_tokens", "temperature", "top_k", "top_p")
_KEYS: dict[str, tuple[str, ...]] = {
    "spawn": ("agent", "input", "fuel", "timeout", "priority"),
    "send": ("agent", "session", "input", "fuel", "timeout", "priority"),
    "generate": (*_GENERATE_KEYS, "stop", "seed"),
    "infer": ("model", "inputs", "device"),
}


@dataclass(frozen=True)
class ChildReply:
    type: str  # task.result | error
    body: bytes


class Link(Protocol):
    """What the worker loop provides to a task's child requests (thread-safe)."""

    name: str

    def expect(self, submit_id: str) -> Future[ChildReply]:
        """Register a child's submit id before it is sent; its answer resolves the future."""
        ...

    def forget(self, submit_id: str) -> None: ...

    def send_child(self, header: Header, body: bytes) -> None: ...

    def lend(self) -> None:
        """The calling task waits: give its run permit to another task."""
        ...

    def reclaim(self) -> None:
        """The wait is over: take a run permit back (blocks while all are in use)."""
        ...


@dataclass
class Budget:
    """What one task may ask of others: children in all, and grants by name."""

    children: int = 64
    agents: frozenset[str] | None = None  # None: any agent; else names/digests granted
    models: frozenset[str] | None = None


def child_seed(seed: int, n: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{n}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # a non-negative int64


@dataclass
class TaskCalls:
    """The child requests of one running task (see the module docstring)."""

    link: Link
    dispatch: M.TaskDispatch
    env: Envelope
    seed: int
    deadline: float  # time.monotonic() by which the task must be done
    budget: Budget = field(default_factory=Budget)
    clock: Callable[[], float] = time.monotonic
    _children: list[tuple[str, Future[ChildReply]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, call: str, request: Any) -> int:
        """Send one child request; its handle (0, 1, 2 … in this task)."""
        body = self._body(call, request)
        header = make_header(
            "task.submit",
            parent=self.env.header.id,
            trace=self.env.header.trace,
            sender=self.link.name,
            deadline=self.env.header.deadline,
        )
        with self._lock:
            handle = len(self._children)
            future = self.link.expect(header.id)
            self._children.append((header.id, future))
        self.link.send_child(header, body)
        return handle

    def wait(self, handle: int) -> bytes:
        """Block until child ``handle`` answered; its reply as one msgpack map:
        ``{"ok": true, "output": …, "fuel_used": n}`` or ``{"ok": false, "error":
        {code, message, retryable}}`` (nothing that depends on timing or placement)."""
        if not 0 <= handle < len(self._children):
            raise WasmEngineError(
                E.WASM_TRAP,
                f"we.wait: no child request {handle} in this task",
                detail={"call": "we.wait", "handle": handle, "trap": "host_bad_handle"},
            )
        submit_id, future = self._children[handle]
        if not future.done():
            left = self.deadline - self.clock()
            self.link.lend()
            try:
                reply = future.result(timeout=max(0.0, left))
            except FutureTimeout:
                self.link.forget(submit_id)
                raise WasmEngineError(
                    E.TASK_DEADLINE,
                    f"deadline passed waiting for child request {handle}",
                    detail={"call": "we.wait", "handle": handle},
                ) from None
            finally:
                self.link.reclaim()
        else:
            reply = future.result()
        return _guest_reply(reply)

    # ------------------------------------------------------------------ requests
    def _body(self, call: str, request: Any) -> bytes:
        keys = _KEYS[call]
        if not isinstance(request, dict) or not all(isinstance(k, str) for k in request):
            raise _refuse(call, "the request must be a msgpack map with string keys")
        unknown = sorted(set(request) - set(keys))
        if unknown:
            raise _refuse(call, f"unknown key(s) {unknown}: known are {list(keys)}")
        n = len(self._children)
        if n >= self.budget.children:
            raise WasmEngineError(
                E.WASM_TRAP,
                f"we.{call}: over the task's budget of {self.budget.children} child requests",
                detail={"call": f"we.{call}", "trap": "host_limit", "limit": self.budget.children},
            )
        task_id = f"{self.dispatch.task_id}/{n}"
        seed = child_seed(self.seed, n)
        if call in ("spawn", "send"):
            agent = request.get("agent")
            if not isinstance(agent, str) or not agent:
                raise _refuse(call, "'agent' must name an agent (its name or digest)")
            self._granted(call, agent, self.budget.agents, "agents")
            limits = {k: request[k] for k in ("fuel", "timeout") if k in request}
            raw = request.get("input")
            submit = M.TaskSubmit(
                task_id=task_id,
                kind="wasm",
                agent=agent,
                input=raw if isinstance(raw, bytes) else packb(raw),
                limits=limits,
                priority=int(request.get("priority", 0)),
                seed=seed,
                session=request.get("session"),
            )
        elif call == "generate":
            model = request.get("model", "smollm2")
            self._granted(call, str(model), self.budget.models, "models")
            params = {k: v for k, v in request.items() if k != "model"}
            params.setdefault("seed", seed)
            submit = M.TaskSubmit(task_id=task_id, kind="generate", model=model, input=params)
        else:
            model = request.get("model")
            if not isinstance(model, str) or not model:
                raise _refuse(call, "'model' must name a model")
            self._granted(call, model, self.budget.models, "models")
            params = {k: v for k, v in request.items() if k != "model"}
            submit = M.TaskSubmit(task_id=task_id, kind="infer", model=model, input=params)
        try:
            return submit.pack()
        except WasmEngineError as err:
            raise _refuse(call, err.message) from None

    @staticmethod
    def _granted(call: str, what: str, granted: frozenset[str] | None, grant: str) -> None:
        if granted is not None and what not in granted:
            raise WasmEngineError(
                E.WASM_CAPABILITY_DENIED,
                f"we.{call}: {what!r} is not in the manifest's grants.{grant}",
                detail={"call": f"we.{call}", "grant": grant, "asked": what},
            )


def _refuse(call: str, why: str) -> WasmEngineError:
    return WasmEngineError(
        E.WASM_TRAP, f"we.{call}: {why}", detail={"call": f"we.{call}", "trap": "host_bad_request"}
    )


def _guest_reply(reply: ChildReply) -> bytes:
    try:
        body = msgpack.unpackb(reply.body, raw=False, strict_map_key=False)
    except Exception:
        body = None
    if not isinstance(body, dict):
        unreadable = {"code": E.PROTO_BAD_MSGPACK, "message": "unreadable child reply"}
        return packb({"ok": False, "error": unreadable})
    if reply.type == "task.result":
        # only what the child computed: timings and placement would make the parent's
        # fuel and output depend on the run (the same seed must give the same bytes)
        stats = body.get("stats")
        fuel = stats.get("fuel_used") if isinstance(stats, dict) else None
        return packb({"ok": True, "output": body.get("output"), "fuel_used": fuel})
    err: dict[str, Any] = {k: body.get(k) for k in ("code", "message", "retryable")}
    return packb({"ok": False, "error": err})
