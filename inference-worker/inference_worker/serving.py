"""The inference worker's engine thread: the one thread that runs ONNX Runtime.

Task threads (one per ``generate``/``infer`` task, see ``handler.py``) hand
requests over through a queue and wait on a future; this thread owns the LLM
engine (continuous batching: requests join and leave the batch between decode
steps) and the tensor model repository with its dynamic batcher (concurrent
``infer`` requests stacked into one run up to ``max_batch`` or the model's
``max_queue_delay``). Neither engine is thread-safe; this module is the only
caller. Streamed text goes to each request's ``on_text`` as it is decoded.
:meth:`Server.report` (any thread) copies every model's counters for the
worker's heartbeats (``inference_worker.stats``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError

from .batcher import Batch, DynamicBatcher, Limits
from .device import CUDA, PREFER_GPU, REQUIRE_GPU, check_policy
from .llm import GenerateParams, LLMEngine
from .repository import ModelRepository, Result

log = logging.getLogger("inference_worker.serving")
OnText = Callable[[str], None]


@dataclass
class _Gen:
    future: Future[dict[str, Any]]
    on_text: OnText | None
    deadline: float | None = None  # time.monotonic() by which it must be done
    prompt_tokens: int = 0
    parts: list[str] = field(default_factory=list)
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None
    fallback: bool = False  # asked prefer_gpu, runs on CPU


@dataclass
class _Infer:
    inputs: Mapping[str, np.ndarray[Any, Any]]
    policy: str | None
    future: Future[Result]
    deadline: float | None = None  # time.monotonic() after which it is not run


class Server:
    """Accepts requests from any thread; runs them on its own."""

    def __init__(self, llm: LLMEngine | None, llm_name: str, repo: ModelRepository | None) -> None:
        self.llm, self.llm_name, self.repo = llm, llm_name, repo
        limits = {
            name: Limits(m.config.max_batch, m.config.max_queue_delay_s)
            for name, m in (repo.models.items() if repo else ())
        }
        self.batcher = DynamicBatcher(limits)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._gens: dict[str, _Gen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    def models(self) -> list[str]:
        names = sorted(self.repo.models) if self.repo else []
        return ([self.llm_name] if self.llm else []) + names

    def report(self) -> dict[str, Any]:
        """``{"models": {name: counters}}``, each model's copied under its lock (any thread)."""
        models: dict[str, Any] = {}
        if self.llm is not None:
            models[self.llm_name] = self.llm.served.report()
        for name, model in list(self.repo.models.items()) if self.repo else ():
            models[name] = model.served.report()
        return {"models": models}

    # ------------------------------------------------------------------ any thread
    def generate(
        self,
        rid: str,
        prompt: str | Sequence[Mapping[str, str]],
        params: GenerateParams,
        policy: str,
        on_text: OnText | None,
        timeout: float | None = None,
    ) -> Future[dict[str, Any]]:
        """Queue a generation; past ``timeout`` seconds it leaves the batch with
        ``task.deadline`` (its KV row freed)."""
        future: Future[dict[str, Any]] = Future()
        if self.llm is None:
            future.set_exception(WasmEngineError(E.INFER_MODEL_MISSING, "no LLM on this worker"))
            return future
        check_policy(policy)
        if policy == REQUIRE_GPU and self.llm.device != CUDA:
            msg = f"require_gpu: the LLM runs on {self.llm.device} here"
            future.set_exception(WasmEngineError(E.INFER_DEVICE_UNAVAILABLE, msg))
            return future
        deadline = time.monotonic() + timeout if timeout is not None else None
        gen = _Gen(future, on_text, deadline, fallback=policy == PREFER_GPU)
        self._inbox.put(("generate", (rid, prompt, params, gen)))
        return future

    def infer(
        self,
        rid: str,
        model: str,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        policy: str | None,
        timeout: float | None = None,
    ) -> Future[Result]:
        """Queue one request for the model's batcher; one still waiting ``timeout``
        seconds from now is not run: ``task.deadline`` (a run already started ends)."""
        future: Future[Result] = Future()
        if self.repo is None or model not in self.repo.models:
            future.set_exception(WasmEngineError(E.INFER_MODEL_MISSING, f"no model {model!r}"))
            return future
        rows = self.repo.models[model].config.check(inputs)  # infer.bad_input, at once
        deadline = time.monotonic() + timeout if timeout is not None else None
        self._inbox.put(("infer", (rid, model, _Infer(inputs, policy, future, deadline), rows)))
        return future

    def cancel(self, rid: str) -> None:
        self._inbox.put(("cancel", rid))

    def close(self) -> None:
        self._stop.set()
        self._inbox.put(("stop", None))
        self._thread.join(10)

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            busy = self.llm is not None and self.llm.busy
            deadline = self.batcher.next_deadline()
            wait = 0.0 if busy else None
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            try:
                item = self._inbox.get(timeout=wait) if wait != 0.0 else self._inbox.get_nowait()
                self._take(item)
                while True:  # everything that arrived: it joins this step
                    self._take(self._inbox.get_nowait())
            except queue.Empty:
                pass
            for batch in self.batcher.due():
                self._run_batch(batch)
            if self.llm is not None and self.llm.busy:
                self._step()

    def _take(self, item: tuple[str, Any]) -> None:
        what, args = item
        if what == "generate":
            rid, prompt, params, gen = args
            llm = self.llm
            assert llm is not None
            fallback = int(gen.fallback and llm.device != CUDA)
            try:
                gen.prompt_tokens = llm.add(rid, prompt, params)
            except WasmEngineError as err:
                llm.served.record(requests=1, failed=1)
                gen.future.set_exception(err)
                return
            llm.served.record(requests=1, fallbacks=fallback)
            self._gens[rid] = gen
        elif what == "infer":
            rid, model, payload, rows = args
            try:
                self.batcher.submit(model, rid, payload, rows)
            except WasmEngineError as err:
                payload.future.set_exception(err)
        elif what == "cancel":
            dropped = self._gens.pop(args, None)
            if dropped is not None and self.llm is not None and self.llm.cancel(args):
                dropped.future.set_exception(WasmEngineError(E.TASK_CANCELLED, "cancelled"))
            self.batcher.cancel(args)

    def _step(self) -> None:
        assert self.llm is not None
        try:
            events = self.llm.step()
        except Exception as exc:  # an ORT failure fails the running requests, not the worker
            log.exception("LLM step failed")
            self.llm.served.record(failed=len(self._gens))
            for rid, failed in list(self._gens.items()):
                self.llm.cancel(rid)
                failed.future.set_exception(WasmEngineError(E.INTERNAL, f"LLM step: {exc}"))
            self._gens.clear()
            return
        now = time.monotonic()
        for rid, late in list(self._gens.items()):
            if late.deadline is not None and now > late.deadline:
                del self._gens[rid]
                self.llm.cancel(rid)
                msg = f"deadline passed after {late.tokens} tokens"
                late.future.set_exception(WasmEngineError(E.TASK_DEADLINE, msg))
        for ev in events:
            gen = self._gens.get(ev.request_id)
            if gen is None:
                continue
            if gen.first_token_s is None:
                gen.first_token_s = time.perf_counter() - gen.started
            if ev.text:
                gen.parts.append(ev.text)
                if gen.on_text is not None:
                    gen.on_text(ev.text)
            gen.tokens += 1
            if ev.finished:
                del self._gens[ev.request_id]
                gen.future.set_result(
                    {
                        "text": "".join(gen.parts),
                        "tokens": gen.tokens,
                        "finish": ev.reason,
                        "prompt_tokens": gen.prompt_tokens,
                        "device": self.llm.device,
                        "model": self.llm_name,
                        "first_token_ms": round(gen.first_token_s * 1000, 2),
                    }
                )

    def _run_batch(self, batch: Batch) -> None:
        """One stacked run per device policy asked in the batch (usually one)."""
        assert self.repo is not None
        model = self.repo.models[batch.model]
        by_policy: dict[str | None, list[_Infer]] = {}
        now = time.monotonic()
        for m in batch.members:
            req: _Infer = m.item
            if req.deadline is not None and now > req.deadline:
                late = now - req.deadline
                msg = f"waited past its timeout ({late * 1000:.1f} ms over) for a batch"
                req.future.set_exception(WasmEngineError(E.TASK_DEADLINE, msg))
                continue
            by_policy.setdefault(req.policy, []).append(req)
        for policy, members in by_policy.items():
            try:
                results = model.run_batch([r.inputs for r in members], policy)
            except WasmEngineError as err:
                for r in members:
                    r.future.set_exception(err)
                continue
            except Exception as exc:  # an ORT failure fails this batch, not the worker
                log.exception("model %s: batch failed", batch.model)
                for r in members:
                    r.future.set_exception(WasmEngineError(E.INTERNAL, f"{batch.model}: {exc}"))
                continue
            for r, result in zip(members, results, strict=True):
                r.future.set_result(result)
