"""Task threads of a worker: run permits, the thread pool, and the way back to the I/O thread.

The worker's main thread owns the task channel (one DEALER: sockets are not
thread-safe). Tasks that may wait on others (child requests) or that should run
side by side (``concurrency`` K > 1) run on threads from here; each holds one of
K *run permits* while it runs guest code and gives it back while it waits for a
child, so K counts tasks computing, not tasks parked. A thread hands what it
sends (results, events, child submits) to the main thread through a deque and
wakes it with an eventfd the main thread polls next to its socket.

Also the worker side of :class:`wasm_engine.children.Link`: the futures of child
requests in flight, resolved by the main thread when their answer arrives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .children import ChildReply
from .envelope import encode
from .protocol import Header

log = logging.getLogger("wasm_engine.worker")


class TaskThreads:
    def __init__(self, name: str, concurrency: int, max_threads: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.name = name
        self.concurrency = concurrency
        self.permits = threading.BoundedSemaphore(concurrency)
        self._max_threads = max(concurrency, max_threads)
        self._pool: ThreadPoolExecutor | None = None
        self.outbox: deque[list[bytes]] = deque()  # frames for the main thread to send
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.running = 0  # tasks on threads now (started, not answered)
        self._children: dict[str, Future[ChildReply]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ main thread
    def start(self, job: Callable[[], None]) -> bool:
        """Run ``job`` on a thread if a permit is free now (it gives it back); else False."""
        if not self.permits.acquire(blocking=False):
            return False
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._max_threads, thread_name_prefix="task")
        with self._lock:
            self.running += 1
        self._pool.submit(self._run, job)
        return True

    def begin(self) -> None:
        """A task started elsewhere (a handler's own engine thread): counted as running."""
        with self._lock:
            self.running += 1

    def end(self) -> None:
        with self._lock:
            self.running -= 1
        self.wake()

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException:  # the job answers its task itself; this is a bug
            log.exception("task thread failed")
        finally:
            with self._lock:
                self.running -= 1
            self.permits.release()
            self.wake()

    def take_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.wake_fd)

    def resolve(self, parent: str | None, type_: str, body: bytes) -> bool:
        """An answer from the orchestrator: True if it was a child request's."""
        if parent is None:
            return False
        with self._lock:
            future = self._children.pop(parent, None)
        if future is None:
            return False
        future.set_result(ChildReply(type_, body))
        return True

    def fail_children(self, reply: ChildReply) -> None:
        """The orchestrator forgot us (restarted): every child in flight gets ``reply``."""
        with self._lock:
            waiting, self._children = self._children, {}
        for future in waiting.values():
            future.set_result(reply)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        os.close(self.wake_fd)

    # ------------------------------------------------------------------ any thread
    def wake(self) -> None:
        os.eventfd_write(self.wake_fd, 1)

    def send(self, frames: list[bytes]) -> None:
        self.outbox.append(frames)
        self.wake()

    # ------------------------------------------------------------------ Link
    def expect(self, submit_id: str) -> Future[ChildReply]:
        future: Future[ChildReply] = Future()
        with self._lock:
            self._children[submit_id] = future
        return future

    def forget(self, submit_id: str) -> None:
        with self._lock:
            self._children.pop(submit_id, None)

    def send_child(self, header: Header, body: bytes) -> None:
        self.send(encode(header, body, ()))

    def lend(self) -> None:
        self.permits.release()
        self.wake()  # the main thread may start a task with it

    def reclaim(self) -> None:
        self.permits.acquire()
