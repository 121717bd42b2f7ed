"""Runs ``generate`` and ``infer`` tasks: the inference worker's :class:`TaskHandler`.

Each task runs on a task thread of the worker loop (``may_block``): it hands its
request to the engine thread (:mod:`inference_worker.serving`), gives its run
permit back while it waits (so every task in hand can join the batch), and
answers when its future resolves. ``generate`` streams each piece of decoded
text as a ``task.event`` (``{"text": …}``) and returns ``{"text", "tokens",
"finish", "prompt_tokens", "device", "model", "first_token_ms"}``. ``infer``
takes ``{"inputs": {name: tensor value}, "device"?}`` (values: see
:mod:`wasm_engine.tensors.values`; shm handles are read in place) and returns
``{"outputs": {name: tensor value}, "device"}``: outputs under the inline
threshold ride in the result, larger ones go to this worker's arena and are
leased to the task (``stats.tensors``). ``stats.device`` is where it really ran.
"""

from __future__ import annotations

import time
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

    def run(
        self, dispatch: M.TaskDispatch, env: Envelope, emit: Emit, link: Link | None = None
    ) -> M.TaskResult:
        if not env.blobs:
            raise WasmEngineError(E.PROTO_BAD_FIELD, "task.dispatch without the submit body blob")
        submit = M.parse("task.submit", env.blobs[0])
        if not isinstance(submit, M.TaskSubmit):
            raise WasmEngineError(E.INTERNAL, "registry mismatch for task.submit")
        body = submit.input if isinstance(submit.input, dict) else None
        if body is None:
            raise WasmEngineError(E.INFER_BAD_INPUT, f"{submit.kind}: input must be a map")
        timeout = float(submit.limits.get("timeout", DEFAULT_TIMEOUT_S))
        if env.header.deadline is not None:
            timeout = min(timeout, max(0.0, (env.header.deadline - time.time_ns()) / 1e9))
        rid = f"{dispatch.task_id}#{dispatch.attempt}"
        self._running[dispatch.task_id] = rid
        try:
            if submit.kind == "generate":
                output = self._generate(rid, submit, body, emit, link, timeout)
            elif submit.kind == "infer":
                output, stats = self._infer(rid, submit, body, link, timeout)
                return M.TaskResult(dispatch.task_id, output, stats)
            else:
                raise WasmEngineError(E.PROTO_BAD_FIELD, f"kind {submit.kind!r} is not served here")
        finally:
            self._running.pop(dispatch.task_id, None)
        return M.TaskResult(dispatch.task_id, output, {"device": output["device"]})

    def _generate(
        self,
        rid: str,
        submit: M.TaskSubmit,
        body: dict[str, Any],
        emit: Emit,
        link: Link | None,
        timeout: float,
    ) -> dict[str, Any]:
        prompt = body.get("messages", body.get("prompt"))
        if not isinstance(prompt, str | list) or not prompt:
            raise WasmEngineError(E.INFER_BAD_INPUT, "generate: 'prompt' or 'messages' is needed")
        params = GenerateParams.from_mapping(
            {k: v for k, v in body.items() if k not in GENERATE_ONLY}
        )
        policy = str(body.get("device", CPU_OK))

        def on_text(text: str) -> None:
            emit(packb({"text": text}))

        future = self.server.generate(rid, prompt, params, policy, on_text)
        return _wait(future, link, timeout, self.server, rid)

    def _infer(
        self,
        rid: str,
        submit: M.TaskSubmit,
        body: dict[str, Any],
        link: Link | None,
        timeout: float,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        raw = body.get("inputs")
        if not isinstance(raw, dict) or not raw:
            raise WasmEngineError(E.INFER_BAD_INPUT, "infer: 'inputs' must be a map of tensors")
        inputs = {str(k): from_value(v, self.tensors) for k, v in raw.items()}
        policy = body.get("device")
        future = self.server.infer(rid, str(submit.model), inputs, policy)
        result = _wait(future, link, timeout, self.server, rid)
        if result.error is not None:
            raise result.error
        outputs, published = {}, []
        for name, array in (result.outputs or {}).items():
            value, ref = to_value(array, self.tensors)
            outputs[name] = value
            if ref is not None:
                published.append(value)
        stats: dict[str, Any] = {"device": result.device}
        if published:
            stats["tensors"] = published  # leased to the task by the loop, before the result
        return {"outputs": outputs, "device": result.device}, stats


def _wait(future: Future[T], link: Link | None, timeout: float, server: Server, rid: str) -> T:
    """Wait for the engine thread, the run permit lent meanwhile."""
    if link is not None:
        link.lend()
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
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
