"""What a worker kind plugs into :class:`wasm_engine.worker_loop.WorkerLoop`.

:class:`TaskHandler` runs tasks; :data:`Emit` is how a running task streams:
the loop hands one to each ``run`` and sends each value as a ``task.event``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from . import messages as M
from .envelope import Envelope

if TYPE_CHECKING:
    from .children import Link

__all__ = ["Calls", "Emit", "Reporting", "TaskHandler"]

#: Sends one msgpack value (its bytes, spliced as they are) as the running task's next event.
Emit = Callable[[bytes], None]


class Calls(Protocol):
    """A running task's child requests (:class:`wasm_engine.children.TaskCalls`)."""

    def submit(self, call: str, request: Any) -> int: ...

    def wait(self, handle: int) -> bytes: ...


class TaskHandler(Protocol):
    """What a worker kind plugs into the loop."""

    kind: str  # wasm | inference
    device: str

    def capabilities(self) -> list[str]: ...

    def accept(self, dispatch: M.TaskDispatch, env: Envelope) -> None:
        """Called when a dispatch arrives, before it is queued: keep what must
        outlive the task (a module blob), or raise :class:`WasmEngineError` to
        refuse it at once."""
        ...

    def cancel(self, task_id: str) -> None:
        """Stop a running task if the kind can (an LLM request leaves its batch)."""
        ...

    def end_session(self, agent: str | None, session: str | None) -> None:
        """Drop a session's state (every session's with ``None``)."""
        ...

    def may_block(self, dispatch: M.TaskDispatch) -> bool:
        """True if the task may wait on others (child requests): it then runs on a
        task thread, so the I/O thread keeps serving while it waits."""
        ...

    def run(
        self,
        dispatch: M.TaskDispatch,
        env: Envelope,
        emit: Emit,
        link: Link | None = None,
    ) -> M.TaskResult:
        """Run one task; blob 0 of ``env`` is the submit body. ``emit`` streams a
        ``task.event`` (one msgpack value, checked by the handler) while it runs;
        ``link`` (given when :meth:`may_block` said so) carries child requests.
        Raise :class:`WasmEngineError` for a typed failure."""
        ...


@runtime_checkable
class Reporting(Protocol):
    """Optional for a :class:`TaskHandler`: counters every ``worker.heartbeat`` carries as
    ``stats`` (docs/protocol.md). A handler without ``report`` sends ``{}``.

    Called from the heartbeat thread while tasks run: it must return a copy that no other
    thread mutates afterwards (take it under the lock the writers hold), never a live dict.
    """

    def report(self) -> dict[str, Any]: ...
