"""How a worker runs the tasks it holds: inline, on a task thread, or by callback.

The mixin :class:`TaskRunning` of :class:`~wasm_engine.worker_loop.WorkerLoop`
(which owns the socket; this module sends nothing itself):

- **inline** on the I/O thread: with ``concurrency`` 1, a task that cannot wait
  on others (the fast path, no hand-off); its events go out at once, its result
  joins the reply burst;
- on a **task thread** (:mod:`wasm_engine.task_threads`), holding one of K run
  permits: every task when K > 1, and those that may wait on children;
- by **callback**: a handler with ``start()`` (the inference worker) runs the task
  on its own engine thread and calls back once.

Answers are built by :func:`wasm_engine.answers.answer` for all three.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import messages as M
from .answers import answer
from .codec import packb
from .envelope import Envelope, encode
from .protocol import Header, make_header
from .task_threads import TaskThreads
from .tasks import Emit, TaskHandler

# Replies are held for a burst only while the next task is one that usually takes
# less than this: a reply never waits behind a task known to be slow, or new.
HOLD_US = 200.0


def event_body(task_id: str, seq: int, data: bytes) -> bytes:
    """A ``task.event`` body with ``data`` (one msgpack value) spliced in as it is."""
    head = packb({"task_id": task_id, "seq": seq})  # a fixmap of 2 -> a map of 3
    return b"\x83" + head[1:] + b"\xa4data" + data


class TaskRunning:
    """Task execution for the worker loop (attributes are the loop's)."""

    handler: TaskHandler
    threads: TaskThreads
    name: str
    completed: int
    usual_us: dict[str, float]
    _async: bool
    _out: list[list[bytes]]
    _busy: int
    _running: tuple[M.TaskDispatch, Envelope] | None
    _seq: int
    _send: Callable[[Header, bytes], None]
    _flush: Callable[[], None]

    def _start(self, dispatch: M.TaskDispatch, env: Envelope) -> bool:
        """Run the task now (inline, or on a task thread); False if no permit is free."""
        threads = self.threads
        if not self._async and threads.concurrency == 1 and not self.handler.may_block(dispatch):
            if threads.running:  # a thread may be computing: take the one permit
                if not threads.permits.acquire(blocking=False):
                    return False
                try:
                    self._inline(dispatch, env)
                finally:
                    threads.permits.release()
            else:
                self._inline(dispatch, env)
            return True
        if self._async:
            self._start_async(dispatch, env)
            return True
        return threads.start(lambda: self._threaded(dispatch, env))

    def _inline(self, dispatch: M.TaskDispatch, env: Envelope) -> None:
        if self._out and self.usual_us.get(dispatch.agent or "", HOLD_US) >= HOLD_US:
            self._flush()  # the next task is slow or unknown: answer the others first
        self._busy, self._running, self._seq = 1, (dispatch, env), 0
        try:
            type_, body = self._execute(dispatch, env, self._emit, False)
        finally:
            self._busy, self._running = 0, None
        self._reply(env, type_, body)

    def _emitter(self, dispatch: M.TaskDispatch, env: Envelope) -> Emit:
        """A task's ``emit`` callable from any thread: each call one ``task.event``."""
        seq = iter(range(1 << 62))
        header = env.header

        def emit(data: bytes) -> None:
            h = make_header("task.event", parent=header.id, trace=header.trace, sender=self.name)
            self.threads.send(encode(h, event_body(dispatch.task_id, next(seq), data), ()))

        return emit

    def _threaded(self, dispatch: M.TaskDispatch, env: Envelope) -> None:
        header = env.header
        type_, body = self._execute(dispatch, env, self._emitter(dispatch, env), True)
        h = make_header(type_, parent=header.id, trace=header.trace, sender=self.name)
        self.threads.send(encode(h, body, ()))

    def _execute(
        self, dispatch: M.TaskDispatch, env: Envelope, emit: Emit, threaded: bool
    ) -> tuple[str, bytes]:
        """Run one task: the type and body of its answer (a result or an error)."""
        t0 = time.perf_counter_ns()
        outcome: M.TaskResult | BaseException
        try:
            outcome = self.handler.run(dispatch, env, emit, self.threads if threaded else None)
        except Exception as exc:  # typed or a handler bug: the task fails, not the worker
            outcome = exc
        type_, body, leases = answer(outcome, dispatch, t0, self.name, self.handler.device)
        for lease in leases:  # ahead of the result, on the same channel
            head = make_header("shm.lease", sender=self.name)
            if threaded:
                self.threads.send(encode(head, lease, ()))
            else:
                self._send(head, lease)
        self._ran(dispatch, t0)
        return type_, body

    def _ran(self, dispatch: M.TaskDispatch, t0: int) -> None:
        self.completed += 1
        took = (time.perf_counter_ns() - t0) / 1000
        key = dispatch.agent or ""
        self.usual_us[key] = 0.8 * self.usual_us.get(key, took) + 0.2 * took

    def _start_async(self, dispatch: M.TaskDispatch, env: Envelope) -> None:
        """A handler with ``start`` runs the task elsewhere (an engine thread) and calls
        back once: no task thread, no permit; the answer goes out from any thread."""
        t0, header, threads = time.perf_counter_ns(), env.header, self.threads
        threads.begin()
        emit = self._emitter(dispatch, env)

        def done(outcome: M.TaskResult | BaseException) -> None:
            try:
                type_, body, leases = answer(outcome, dispatch, t0, self.name, self.handler.device)
                for lease in leases:
                    threads.send(encode(make_header("shm.lease", sender=self.name), lease, ()))
                h = make_header(type_, parent=header.id, trace=header.trace, sender=self.name)
                threads.send(encode(h, body, ()))
                self._ran(dispatch, t0)
            finally:
                threads.end()

        try:
            self.handler.start(dispatch, env, emit, done)  # type: ignore[attr-defined]
        except Exception as exc:  # refused at once
            done(exc)

    def _emit(self, data: bytes) -> None:
        """The running task's next ``task.event``, sent now (with what was held)."""
        if self._running is None:
            raise RuntimeError("emit outside of a running task")
        dispatch, env = self._running
        body = event_body(dispatch.task_id, self._seq, data)
        self._seq += 1
        self._reply(env, "task.event", body)
        self._flush()

    def _reply(self, env: Envelope, type_: str, body: bytes) -> None:
        header = make_header(type_, parent=env.header.id, trace=env.header.trace, sender=self.name)
        self._send(header, body)
