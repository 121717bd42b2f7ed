"""The asyncio Python SDK: :class:`AsyncClient`.

It speaks to the orchestrator's front socket through one DEALER, read by one
reader task per client; ``submit`` returns an :class:`asyncio.Future` at once,
resolved by the reply's ``parent`` (the submit's header id). Any failure raises
:class:`WasmEngineError`. ``submit(..., on_event=f)`` calls ``f(value)`` for
each value the task streams (``task.event``), in order, from the reader task and
before the future resolves: ``f`` must not block. ``generate`` and ``infer`` call
the models as the blocking client's do (inputs inline). The submit/reply
bookkeeping it shares with the blocking :class:`wasm_engine.client.Client` lives
in :class:`wasm_engine.requests.Book`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from . import errors as E
from . import messages as M
from .config import from_env
from .envelope import encode
from .errors import WasmEngineError
from .protocol import make_header
from .requests import AgentRef, Book, ManifestLike, OnEvent, Pending, Result, agent_spec

if TYPE_CHECKING:
    import numpy as np


class AsyncClient:
    """asyncio client: ``await client.run(agent, input)``; one reader task per client."""

    def __init__(self, front: str | None = None, *, timeout: float = 60.0) -> None:
        self.front = front or from_env().front
        self.timeout = timeout
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(self.front)
        self._book = Book(name=f"aclient-{os.getpid()}")
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
        self,
        rid: str,
        task_id: str,
        frames: list[bytes],
        agent: str | None = None,
        on_event: OnEvent | None = None,
    ) -> asyncio.Future[Result]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result] = loop.create_future()

        def resolve(result: Result | None, error: WasmEngineError | None) -> None:
            if not fut.done():
                fut.set_exception(error) if error is not None else fut.set_result(result)  # type: ignore[arg-type]

        self._book.pending[rid] = Pending(task_id, frames, agent, resolve, on_event=on_event)
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
        self,
        module: bytes | bytearray | str | Path,
        *,
        name: str = "",
        reuse: bool | None = None,
        manifest: ManifestLike = None,
    ) -> AgentRef:
        module, spec = agent_spec(module, name, reuse, manifest)
        digest, rid, frames = self._book.agent_frames(module, spec)
        await self._wait(await self._request(rid, digest, frames), "agent.put")
        return AgentRef(digest, spec.name, spec.reuse, spec.version)

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
        on_event: OnEvent | None = None,
        session: str | None = None,
    ) -> asyncio.Future[Result]:
        """Queue one wasm task (as :meth:`Client.submit`); await the future for its result."""
        task_id, rid, frames, digest = self._book.submit_frames(
            agent,
            input,
            task_id=task_id,
            limits={"fuel": fuel, "timeout": timeout, "memory": memory},
            priority=priority,
            seed=seed,
            deadline=deadline,
            trace=trace,
            session=session,
        )
        return await self._request(rid, task_id, frames, digest, on_event)

    async def run(self, agent: AgentRef | str, input: Any = None, **kw: Any) -> Result:
        return await self._wait(await self.submit(agent, input, **kw), "task")

    async def status(self) -> dict[str, Any]:
        header = make_header("status.get", sender=self._book.name)
        fut = await self._request(header.id, "status", encode(header, M.StatusGet().pack()))
        msg = (await self._wait(fut, "status.get")).output
        return msg.to_body() if isinstance(msg, M.Message) else dict(msg)

    # ------------------------------------------------------------------ models
    async def generate(
        self,
        prompt: str | list[dict[str, str]],
        *,
        model: str = "smollm2",
        on_text: Callable[[str], None] | None = None,
        task_id: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """LLM text, as :meth:`Client.generate`; ``on_text`` (must not block) gets each
        piece as it is decoded."""
        task_id, rid, frames, on_event = self._book.generate_frames(
            prompt, model, task_id, timeout, on_text, params
        )
        fut = await self._request(rid, task_id, frames, None, on_event)
        out: dict[str, Any] = (await self._wait(fut, "generate")).output
        return out

    async def infer(
        self,
        model: str,
        inputs: dict[str, Any],
        *,
        device: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """One tensor-model call, as :meth:`Client.infer` (inputs go inline)."""
        from .inference import Reader, infer_input

        body, _ = infer_input(inputs, device)
        task_id, rid, frames = self._book.model_frames(
            "infer", model, body, task_id=None, timeout=timeout
        )
        result = await self._wait(await self._request(rid, task_id, frames), "infer")
        reader = Reader(self._book.name)
        try:
            return reader.outputs(result.output)
        finally:
            reader.close()
            await self.release_tensors(result)

    async def release_tensors(self, result: Result) -> int:
        """As :meth:`Client.release_tensors`: the result's published tensors go back."""
        refs = result.stats.get("tensors") or []
        for ref in refs:
            header = make_header("shm.release", sender=self._book.name)
            await self._sock.send_multipart(
                encode(header, M.ShmRelease(ref, result.task_id).pack())
            )
        return len(refs)
