"""The Python SDK: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both speak to the orchestrator's front socket through one DEALER. ``submit``
returns a future at once; results are matched to it by the reply's ``parent``
(the submit's header id). Any failure raises :class:`WasmEngineError` carrying
the error body (``code``, ``message``, ``retryable``, ``detail``).

The blocking client has no background thread: whoever waits on a future pumps
the socket (under a lock) and resolves every future whose reply arrives, so
many tasks in flight cost no thread hand-offs. The submit/reply bookkeeping
both clients share lives in :class:`_Book`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from . import errors as E
from . import messages as M
from . import transport
from .codec import packb
from .config import from_env
from .envelope import EnvelopeError, decode, encode
from .errors import WasmEngineError
from .protocol import make_header


@dataclass(frozen=True)
class AgentRef:
    """A module stored in the orchestrator, named by its content digest."""

    digest: str
    name: str = ""
    reuse: bool = False


@dataclass
class Result:
    task_id: str
    output: Any
    stats: dict[str, Any]
    trace: str | None = None


class TaskFuture:
    """The pending result of one task (blocking client)."""

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


@dataclass
class _Pending:
    task_id: str
    frames: list[bytes]
    agent: str | None
    resolve: Callable[[Result | None, WasmEngineError | None], None]
    retried: bool = False


@dataclass
class _Book:
    """Builds requests and matches replies; shared by both clients, no I/O."""

    name: str
    pending: dict[str, _Pending] = field(default_factory=dict)
    # digest -> (module, name, reuse), to put a module again when the orchestrator lost it
    modules: dict[str, tuple[bytes, str, bool]] = field(default_factory=dict)
    reput_at: dict[str, float] = field(default_factory=dict)  # digest -> last re-put

    def agent_frames(self, module: bytes, name: str, reuse: bool) -> tuple[str, str, list[bytes]]:
        digest = "sha256:" + hashlib.sha256(module).hexdigest()
        self.modules[digest] = (module, name, reuse)
        header = make_header("agent.put", sender=self.name)
        return digest, header.id, encode(header, M.AgentPut(digest, name, reuse).pack(), [module])

    def submit_frames(
        self,
        agent: AgentRef | str,
        data: Any,
        *,
        task_id: str | None,
        limits: dict[str, Any],
        priority: int,
        seed: int,
        deadline: float | None,
        trace: str | None,
    ) -> tuple[str, str, list[bytes], str]:
        digest = agent.digest if isinstance(agent, AgentRef) else agent
        task_id = task_id or os.urandom(12).hex()
        body = M.TaskSubmit(
            task_id=task_id,
            kind="wasm",
            agent=digest,
            input=packb(data),
            priority=priority,
            seed=seed,
            limits={k: v for k, v in limits.items() if v is not None},
        ).pack()
        deadline_ns = int(deadline * 1e9) if deadline is not None else None
        header = make_header(
            "task.submit", sender=self.name, trace=trace or task_id, deadline=deadline_ns
        )
        return task_id, header.id, encode(header, body), digest

    def on_reply(self, frames: list[bytes]) -> list[list[bytes]] | None:
        """Resolve the future a reply belongs to; returns frames to send again when
        the orchestrator lost our module (it restarted): put it, then resubmit."""
        try:
            env = decode(frames)
        except EnvelopeError:
            return None  # nothing to attribute it to; the future times out
        pending = self.pending.get(env.header.parent or "")
        if pending is None:
            return None
        type_ = env.header.type
        if type_ in ("task.ack", "task.event"):
            return None
        del self.pending[env.header.parent or ""]
        try:
            msg = M.parse(type_, env.body)
        except WasmEngineError as err:
            pending.resolve(None, err)
            return None
        if isinstance(msg, M.TaskResult):
            pending.resolve(Result(msg.task_id, msg.output, msg.stats, env.header.trace), None)
        elif isinstance(msg, M.Error):
            failure = WasmEngineError.from_body(msg.to_body())
            module = self.modules.get(pending.agent or "")
            if failure.code == E.WASM_AGENT_MISSING and module is not None and not pending.retried:
                pending.retried = True
                self.pending[env.header.parent or ""] = pending
                if time.monotonic() - self.reput_at.get(pending.agent or "", -1e9) < 1.0:
                    return [pending.frames]  # re-put already on its way, ahead of this
                self.reput_at[pending.agent or ""] = time.monotonic()
                _, _, put = self.agent_frames(*module)
                return [put, pending.frames]  # messages to send, in order
            pending.resolve(None, failure)
        else:  # status, agent.stored: the value is the parsed message
            pending.resolve(Result(pending.task_id, msg, {}, env.header.trace), None)
        return None


def _module_bytes(module: bytes | bytearray | str | Path, name: str) -> tuple[bytes, str]:
    """Module bytes from bytes or a path; a ``.wat`` text file is compiled here
    (with wasmtime, when installed), since workers take binary modules only."""
    if isinstance(module, bytes | bytearray):
        return bytes(module), name
    path = Path(module)
    if path.suffix == ".wat":
        try:
            from wasmtime import wat2wasm
        except ImportError:
            raise WasmEngineError(
                E.WASM_BAD_MODULE, "compiling .wat needs the wasmtime package"
            ) from None
        return bytes(wat2wasm(path.read_text())), name or path.stem
    return path.read_bytes(), name or path.stem


class Client:
    """Blocking client. ``with Client() as c: c.run(c.put_agent("a.wasm"), {"x": 1})``."""

    def __init__(self, front: str | None = None, *, timeout: float = 60.0) -> None:
        self.front = front or from_env().front
        self.timeout = timeout
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = transport.dealer(self._ctx, self.front)
        self._book = _Book(name=f"client-{os.getpid()}")
        self._lock = threading.RLock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close(0)
        self._ctx.term()

    # ------------------------------------------------------------------ requests
    def _request(
        self, request_id: str, task_id: str, frames: list[bytes], agent: str | None = None
    ) -> TaskFuture:
        fut = TaskFuture(self, task_id)
        with self._lock:
            self._book.pending[request_id] = _Pending(task_id, frames, agent, fut._set)
            transport.send(self._sock, frames)
        return fut

    def _burst(self, requests: list[tuple[str, str, list[bytes], str]]) -> list[TaskFuture]:
        """Register and send several submits back to back: ZeroMQ's I/O thread is
        woken once for the burst instead of once per message."""
        futures = []
        with self._lock:
            for task_id, rid, frames, digest in requests:
                fut = TaskFuture(self, task_id)
                self._book.pending[rid] = _Pending(task_id, frames, digest, fut._set)
                futures.append(fut)
            for _, _, frames, _ in requests:
                transport.send(self._sock, frames)
        return futures

    def put_agent(
        self, module: bytes | bytearray | str | Path, *, name: str = "", reuse: bool = False
    ) -> AgentRef:
        """Store a module (bytes or a ``.wasm`` path) in the orchestrator; idempotent."""
        module, name = _module_bytes(module, name)
        digest, rid, frames = self._book.agent_frames(module, name, reuse)
        self._request(rid, digest, frames).result(self.timeout)
        return AgentRef(digest, name, reuse)

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
    ) -> TaskFuture:
        """Queue one wasm task; ``deadline`` is seconds since the epoch."""
        task_id, rid, frames, digest = self._book.submit_frames(
            agent, input, task_id=task_id, priority=priority, seed=seed, deadline=deadline,
            trace=trace, limits={"fuel": fuel, "timeout": timeout, "memory": memory},
        )  # fmt: skip
        return self._request(rid, task_id, frames, digest)

    def run(self, agent: AgentRef | str, input: Any = None, **kw: Any) -> Result:
        """Submit and wait for the result."""
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
            if not sock.poll(max(0, int(timeout * 1000)), zmq.POLLIN):
                return
            while True:
                try:
                    frames = transport.recv(sock, transport.NOBLOCK)
                except zmq.Again:
                    return
                for message in self._book.on_reply(frames) or ():
                    transport.send(sock, message)


class AsyncClient:
    """asyncio client: ``await client.run(agent, input)``; one reader task per client."""

    def __init__(self, front: str | None = None, *, timeout: float = 60.0) -> None:
        self.front = front or from_env().front
        self.timeout = timeout
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(self.front)
        self._book = _Book(name=f"aclient-{os.getpid()}")
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self._sock.close(0)
        self._ctx.term()

    async def _read(self) -> None:
        while True:
            frames = await self._sock.recv_multipart()
            for message in self._book.on_reply(frames) or ():
                await self._sock.send_multipart(message)

    async def _request(
        self, rid: str, task_id: str, frames: list[bytes], agent: str | None = None
    ) -> asyncio.Future[Result]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result] = loop.create_future()

        def resolve(result: Result | None, error: WasmEngineError | None) -> None:
            if not fut.done():
                fut.set_exception(error) if error is not None else fut.set_result(result)  # type: ignore[arg-type]

        self._book.pending[rid] = _Pending(task_id, frames, agent, resolve)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        await self._sock.send_multipart(frames)
        return fut

    async def _wait(self, fut: asyncio.Future[Result], what: str) -> Result:
        try:
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise WasmEngineError(
                E.CLIENT_TIMEOUT, f"no answer for {what} in {self.timeout}s"
            ) from None

    async def put_agent(
        self, module: bytes | bytearray | str | Path, *, name: str = "", reuse: bool = False
    ) -> AgentRef:
        module, name = _module_bytes(module, name)
        digest, rid, frames = self._book.agent_frames(module, name, reuse)
        await self._wait(await self._request(rid, digest, frames), "agent.put")
        return AgentRef(digest, name, reuse)

    async def submit(
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
    ) -> asyncio.Future[Result]:
        task_id, rid, frames, digest = self._book.submit_frames(
            agent,
            input,
            task_id=task_id,
            limits={"fuel": fuel, "timeout": timeout, "memory": memory},
            priority=priority,
            seed=seed,
            deadline=deadline,
            trace=trace,
        )
        return await self._request(rid, task_id, frames, digest)

    async def run(self, agent: AgentRef | str, input: Any = None, **kw: Any) -> Result:
        return await self._wait(await self.submit(agent, input, **kw), "task")

    async def status(self) -> dict[str, Any]:
        header = make_header("status.get", sender=self._book.name)
        fut = await self._request(header.id, "status", encode(header, M.StatusGet().pack()))
        msg = (await self._wait(fut, "status.get")).output
        return msg.to_body() if isinstance(msg, M.Message) else dict(msg)
