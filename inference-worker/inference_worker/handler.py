"""Runs ``generate`` and ``infer`` tasks: the inference worker's :class:`TaskHandler`.

The worker loop calls :meth:`InferenceHandler.start` on its I/O thread: the
request goes to the engine thread (:mod:`inference_worker.serving`) and the
answer is sent from there when it is done, so no thread waits per task and
every request in hand can join the batch. A ``generate`` past its
``limits.timeout`` (or its deadline) leaves the batch with ``task.deadline``, and an
``infer`` still waiting for its batch then is not run (``task.deadline``); the
orchestrator's ``task.cancel`` (cancelled, deadline, client gone) does the same.
``generate`` streams each piece of decoded text as a ``task.event``
(``{"text": …}``) and returns ``{"text", "tokens", "finish", "prompt_tokens",
"device", "model", "first_token_ms"}``. ``infer``
takes ``{"inputs": {name: tensor value}, "device"?}`` (values: see
:mod:`wasm_engine.tensors.values`; shm handles are read in place) and returns
``{"outputs": {name: tensor value}, "device"}``: outputs under the inline
threshold ride in the result, larger ones go to this worker's arena and are
leased to the task (``stats.tensors``). ``stats.device`` is where it really ran.
Its ``report()`` (:class:`~wasm_engine.tasks.Reporting`) gives the heartbeats
each model's counters (:meth:`Server.report`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.children import Link
from wasm_engine.codec import packb
from wasm_engine.envelope import Envelope
from wasm_engine.errors import WasmEngineError
from wasm_engine.tasks import Emit
from wasm_engine.tensors import TensorPlane
from wasm_engine.tensors.values import from_value, to_value

from .device import CPU_OK
from .llm import GenerateParams
from .repository import Result
from .serving import Server

T = TypeVar("T")
GENERATE_ONLY = ("prompt", "messages", "model", "device")
DEFAULT_TIMEOUT_S = 300.0


class InferenceHandler:
    kind = "inference"

    def __init__(self, server: Server, tensors: TensorPlane | None = None) -> None:
        self.server = server
        self.tensors = tensors
        llm = server.llm
        self.device = llm.device if llm is not None else _repo_device(server)
        self._running: dict[str, str] = {}  # task id -> request id (for cancel)

    def capabilities(self) -> list[str]:
        return self.server.models()

    def report(self) -> dict[str, Any]:
        """Per-model counters for the heartbeat (called on the heartbeat thread)."""
        return self.server.report()

    def accept(self, dispatch: M.TaskDispatch, env: Envelope) -> None:
        return None

    def may_block(self, dispatch: M.TaskDispatch) -> bool:
        return True  # every task waits on the engine thread

    def end_session(self, agent: str | None, session: str | None) -> None:
        return None

    def cancel(self, task_id: str) -> None:
        rid = self._running.get(task_id)
        if rid is not None:
            self.server.cancel(rid)

    def start(
        self,
        dispatch: M.TaskDispatch,
        env: Envelope,
        emit: Emit,
        done: Callable[[M.TaskResult | BaseException], None],
    ) -> None:
        """Hand the task to the engine thread; ``done`` is called once, from there
        (or at once for a request refused before it reaches the engine)."""
        if not env.blobs:
            raise WasmEngineError(E.PROTO_BAD_FIELD, "task.dispatch without the submit body blob")
        submit = M.parse("task.submit", env.blobs[0])
        if not isinstance(submit, M.TaskSubmit):
            raise WasmEngineError(E.INTERNAL, "registry mismatch for task.submit")
        body = submit.input if isinstance(submit.input, dict) else None
        if body is None:
            raise WasmEngineError(E.INFER_BAD_INPUT, f"{submit.kind}: input must be a map")
        rid = f"{dispatch.task_id}#{dispatch.attempt}"
        task_id = dispatch.task_id
        self._running[task_id] = rid

        def finish(outcome: M.TaskResult | BaseException) -> None:
            self._running.pop(task_id, None)
            done(outcome)

        try:
            if submit.kind == "generate":
                gen = self._generate(rid, body, emit, _timeout(submit, env))
                gen.add_done_callback(lambda f: finish(_generated(task_id, f)))
            elif submit.kind == "infer":
                inf = self._infer(rid, submit, body, _timeout(submit, env))
                inf.add_done_callback(lambda f: finish(self._inferred(task_id, f)))
            else:
                msg = f"kind {submit.kind!r} is not served here"
                raise WasmEngineError(E.PROTO_BAD_FIELD, msg)
        except BaseException:  # refused before the engine saw it: nothing to cancel later
            self._running.pop(task_id, None)
            raise

    def run(
        self, dispatch: M.TaskDispatch, env: Envelope, emit: Emit, link: Link | None = None
    ) -> M.TaskResult:
        """:meth:`start`, waited for (the worker loop uses ``start``; this is for callers
        that want a blocking call)."""
        answered: Future[M.TaskResult | BaseException] = Future()
        self.start(dispatch, env, emit, answered.set_result)
        outcome = _wait(answered, link, DEFAULT_TIMEOUT_S, self.server, "")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _generate(
        self, rid: str, body: dict[str, Any], emit: Emit, timeout: float | None
    ) -> Future[dict[str, Any]]:
        prompt = body.get("messages", body.get("prompt"))
        if not isinstance(prompt, str | list) or not prompt:
            raise WasmEngineError(E.INFER_BAD_INPUT, "generate: 'prompt' or 'messages' is needed")
        params = GenerateParams.from_mapping(
            {k: v for k, v in body.items() if k not in GENERATE_ONLY}
        )
        policy = str(body.get("device", CPU_OK))

        def on_text(text: str) -> None:
            emit(packb({"text": text}))

        return self.server.generate(rid, prompt, params, policy, on_text, timeout)

    def _infer(
        self, rid: str, submit: M.TaskSubmit, body: dict[str, Any], timeout: float | None
    ) -> Future[Result]:
        raw = body.get("inputs")
        if not isinstance(raw, dict) or not raw:
            raise WasmEngineError(E.INFER_BAD_INPUT, "infer: 'inputs' must be a map of tensors")
        inputs = {str(k): from_value(v, self.tensors) for k, v in raw.items()}
        return self.server.infer(rid, str(submit.model), inputs, body.get("device"), timeout)

    def _inferred(self, task_id: str, future: Future[Result]) -> M.TaskResult | BaseException:
        """Outputs under the inline threshold ride in the result; larger ones go to this
        worker's arena, leased to the task (``stats.tensors``)."""
        try:
            result = future.result()
            if result.error is not None:
                return result.error
            outputs, published = {}, []
            for name, array in (result.outputs or {}).items():
                value, ref = to_value(array, self.tensors)
                outputs[name] = value
                if ref is not None:
                    published.append(value)
        except BaseException as exc:
            return exc
        stats: dict[str, Any] = {"device": result.device}
        if published:
            stats["tensors"] = published
        return M.TaskResult(task_id, {"outputs": outputs, "device": result.device}, stats)


def _timeout(submit: M.TaskSubmit, env: Envelope) -> float | None:
    """Seconds the task may run: its ``limits.timeout``, and what is left to its deadline."""
    asked = submit.limits.get("timeout")
    timeout = float(asked) if asked is not None else None
    if env.header.deadline is not None:
        left = max(0.0, (env.header.deadline - time.time_ns()) / 1e9)
        timeout = left if timeout is None else min(timeout, left)
    return timeout


def _generated(task_id: str, future: Future[dict[str, Any]]) -> M.TaskResult | BaseException:
    try:
        out = future.result()
    except BaseException as exc:
        return exc
    return M.TaskResult(task_id, out, {"device": out["device"]})


def _wait(future: Future[T], link: Link | None, timeout: float, server: Server, rid: str) -> T:
    """Wait for the engine thread, the run permit lent meanwhile."""
    if link is not None:
        link.lend()
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        if rid:
            server.cancel(rid)
        msg = f"no answer from the engine in {timeout:.1f}s"
        raise WasmEngineError(E.TASK_DEADLINE, msg) from None
    finally:
        if link is not None:
            link.reclaim()


def _repo_device(server: Server) -> str:
    repo = server.repo
    devices = {d for m in (repo.models.values() if repo else ()) for d in m.sessions}
    return "cuda" if "cuda" in devices else "cpu"
