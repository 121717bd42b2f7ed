"""The blocking Python SDK: :class:`Client` and the :class:`TaskFuture` it returns.

It speaks to the orchestrator's front socket through one DEALER. ``submit``
returns a future at once; results are matched to it by the reply's ``parent``
(the submit's header id). Any failure raises :class:`WasmEngineError` carrying
the error body (``code``, ``message``, ``retryable``, ``detail``).

The client has no background thread: whoever waits on a future pumps the
socket (under a lock) and resolves every future whose reply arrives, so many
tasks in flight cost no thread hand-offs. ``submit(..., on_event=f)`` calls
``f(value)`` for each value the task streams (``task.event``), in order and
before its future resolves, on the thread that pumps. The submit/reply bookkeeping it
shares with the asyncio client lives in :class:`wasm_engine.requests.Book`; the model
calls (``generate``, ``infer``) in :class:`wasm_engine.client_models.ModelCalls`.
``AgentRef``, ``Result`` and ``AsyncClient`` (:mod:`wasm_engine.aclient`) are
re-exported here, where they were first defined.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from . import errors as E
from . import messages as M
from . import transport
from .aclient import AsyncClient
from .client_models import ModelCalls
from .config import from_env
from .envelope import encode
from .errors import WasmEngineError
from .protocol import make_header
from .requests import AgentRef, Book, ManifestLike, OnEvent, Pending, Result, agent_spec

if TYPE_CHECKING:
    from .tensors import TensorPlane  # numpy: imported only when an arena is made

__all__ = ["AgentRef", "AsyncClient", "Client", "Result", "TaskFuture"]


class TaskFuture:
    """The pending result of one task (blocking client)."""

    __slots__ = ("_client", "_done", "_error", "_result", "callbacks", "task_id")

    def __init__(self, client: Client, task_id: str) -> None:
        self.task_id = task_id
        self._client = client
        self._result: Result | None = None
        self._error: WasmEngineError | None = None
        self._done = False
        self.callbacks: list[Callable[[TaskFuture], None]] = []

    def done(self) -> bool:
        return self._done

    def _set(self, result: Result | None, error: WasmEngineError | None) -> None:
        self._result, self._error, self._done = result, error, True
        for cb in self.callbacks:
            cb(self)

    def result(self, timeout: float | None = None) -> Result:
        """Wait (pumping the client's socket) and return the result or raise its error."""
        if not self._done:
            self._client.wait([self], timeout)
        if not self._done:
            raise WasmEngineError(
                E.CLIENT_TIMEOUT, f"no result for task {self.task_id} in {timeout}s"
            )
        if self._error is not None:
            raise self._error
        assert self._result is not None  # set together with _done
        return self._result


class Client(ModelCalls):
    """Blocking client. ``with Client() as c: c.run(c.put_agent("a.wasm"), {"x": 1})``."""

    def __init__(
        self, front: str | None = None, *, timeout: float = 60.0, shm_arena: int = 0
    ) -> None:
        """``shm_arena`` (bytes, 0: none): this client's own shared-memory arena, made at
        the first ``infer`` that needs it, for inputs of 64 KiB and more; only for
        workers on this host (same shm namespace), which read them in place."""
        self.front = front or from_env().front
        self.timeout = timeout
        self.shm_arena = shm_arena
        self._plane: TensorPlane | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = transport.dealer(self._ctx, self.front)
        self._poller = zmq.Poller()  # kept: Socket.poll builds a Poller per call
        self._poller.register(self._sock, zmq.POLLIN)
        self._book = Book(name=f"client-{os.getpid()}")
        self._lock = threading.RLock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tensor_plane(self) -> TensorPlane | None:
        """The client's arena (``shm_arena`` > 0), made once; its segments are named
        for the stack (``WASM_ENGINE_STACK``/``HOME``), so ``wasm-engine down`` reaps
        them if this process dies without closing."""
        if self._plane is None and self.shm_arena > 0:
            from .tensors import process

            settings = from_env().replace(shm_arena=self.shm_arena)
            self._plane = process.plane_for(settings, self._book.name)
        return self._plane

    def close(self) -> None:
        if self._plane is not None:
            self._plane.close()  # unlinks the arena: workers' open maps stay valid
        self._sock.close(0)
        self._ctx.term()

    # ------------------------------------------------------------------ requests
    def _request(
        self,
        request_id: str,
        task_id: str,
        frames: list[bytes],
        agent: str | None = None,
        on_event: OnEvent | None = None,
    ) -> TaskFuture:
        fut = TaskFuture(self, task_id)
        with self._lock:
            pending = Pending(task_id, frames, agent, fut._set, on_event=on_event)
            self._book.pending[request_id] = pending
            transport.send(self._sock, frames)
        return fut

    def _burst(self, requests: list[tuple[str, str, list[bytes], str]]) -> list[TaskFuture]:
        """Register and send several submits back to back: ZeroMQ's I/O thread is
        woken once for the burst instead of once per message."""
        futures = []
        with self._lock:
            for task_id, rid, frames, digest in requests:
                fut = TaskFuture(self, task_id)
                self._book.pending[rid] = Pending(task_id, frames, digest, fut._set)
                futures.append(fut)
            for _, _, frames, _ in requests:
                transport.send(self._sock, frames)
        return futures

    def put_agent(
        self,
        module: bytes | bytearray | str | Path,
        *,
        name: str = "",
        reuse: bool | None = None,
        manifest: ManifestLike = None,
    ) -> AgentRef:
        """Store a module (bytes or a ``.wasm`` path) in the orchestrator; idempotent."""
        module, spec = agent_spec(module, name, reuse, manifest)
        digest, rid, frames = self._book.agent_frames(module, spec)
        self._request(rid, digest, frames).result(self.timeout)
        return AgentRef(digest, spec.name, spec.reuse, spec.version)

    def submit(
        self,
        agent: AgentRef | str,
        input: Any = None,
        *,
        task_id: str | None = None,
        fuel: int | None = None,
        timeout: float | None = None,
        memory: int | None = None,
        priority: int = 0,
        seed: int = 0,
        deadline: float | None = None,
        trace: str | None = None,
        on_event: OnEvent | None = None,
        session: str | None = None,
    ) -> TaskFuture:
        """Queue one wasm task; ``deadline`` is seconds since the epoch; ``seed``
        seeds the agent's ``we.random``; ``on_event`` gets each value the agent
        emits, in order, before the result (called while this client pumps);
        ``session`` runs it in that session's instance of the agent (its memory
        kept between calls, one call at a time)."""
        task_id, rid, frames, digest = self._book.submit_frames(
            agent, input, task_id=task_id, priority=priority, seed=seed, deadline=deadline,
            trace=trace, limits={"fuel": fuel, "timeout": timeout, "memory": memory},
            session=session,
        )  # fmt: skip
        return self._request(rid, task_id, frames, digest, on_event)

    def run(self, agent: AgentRef | str, input: Any = None, **kw: Any) -> Result:
        """Submit and wait for the result (``on_event`` and the rest as in :meth:`submit`)."""
        return self.submit(agent, input, **kw).result(self.timeout)

    def run_many(
        self,
        agent: AgentRef | str,
        inputs: Iterable[Any],
        *,
        window: int = 64,
        fuel: int | None = None,
        timeout: float | None = None,
        memory: int | None = None,
        priority: int = 0,
        seed: int = 0,
    ) -> list[Result]:
        """Run one task per input with at most ``window`` in flight; results in input order."""
        futures: list[TaskFuture] = []
        active = [0]
        limits = {"fuel": fuel, "timeout": timeout, "memory": memory}

        def finished(_: TaskFuture) -> None:
            active[0] -= 1

        todo = iter(inputs)
        while True:
            batch = [
                self._book.submit_frames(agent, data, task_id=None, limits=limits,
                                         priority=priority, seed=seed, deadline=None, trace=None)
                for data in itertools.islice(todo, window - active[0])
            ]  # fmt: skip
            if not batch:
                break
            for fut in self._burst(batch):
                fut.callbacks.append(finished)
                futures.append(fut)
            active[0] += len(batch)
            while active[0] >= window:
                self._pump(self.timeout)
        return [f.result(self.timeout) for f in futures]

    def status(self) -> dict[str, Any]:
        header = make_header("status.get", sender=self._book.name)
        reply = self._request(header.id, "status", encode(header, M.StatusGet().pack())).result(
            self.timeout
        )
        msg = reply.output
        return msg.to_body() if isinstance(msg, M.Message) else dict(msg)

    def release_tensors(self, result: Result) -> int:
        """Say we are done with the tensors an agent published (``stats.tensors``: each
        leased to the task id until released, or until the lease's deadline): their
        slots go back to the worker. Call it once the handles in the output are read;
        they are stale afterwards. Returns how many were released."""
        refs = result.stats.get("tensors") or []
        with self._lock:
            for ref in refs:
                header = make_header("shm.release", sender=self._book.name)
                body = M.ShmRelease(ref, result.task_id).pack()
                transport.send(self._sock, encode(header, body))
        return len(refs)

    def cancel(self, task_id: str) -> None:
        header = make_header("task.cancel", sender=self._book.name)
        with self._lock:
            transport.send(self._sock, encode(header, M.TaskCancel(task_id).pack()))

    # ------------------------------------------------------------------ pumping
    def wait(self, futures: Iterable[TaskFuture], timeout: float | None = None) -> None:
        """Pump until every future is done or ``timeout`` seconds pass."""
        end = None if timeout is None else time.monotonic() + timeout
        for fut in futures:
            while not fut.done():
                left = 0.05 if end is None else min(0.05, end - time.monotonic())
                if left <= 0:
                    return
                self._pump(left)

    def _pump(self, timeout: float) -> None:
        with self._lock:
            sock = self._sock
            if not self._poller.poll(max(0, int(timeout * 1000))):
                return
            while True:
                try:
                    frames = transport.recv(sock, transport.NOBLOCK)
                except zmq.Again:
                    return
                for message in self._book.on_reply(frames) or ():
                    transport.send(sock, message)
