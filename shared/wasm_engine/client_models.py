"""The blocking client's model calls: :class:`ModelCalls`, mixed into :class:`Client`.

``submit_generate`` / ``generate`` (LLM text, streamed as it is decoded) and
``infer`` (one tensor-model call, its outputs read from shared memory). It builds
the inputs with :mod:`wasm_engine.inference` and the frames with
:class:`wasm_engine.requests.Book`; it opens and sends nothing itself: requests go
through :class:`wasm_engine.client.Client`, which owns the socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .requests import Book, OnEvent, Result

if TYPE_CHECKING:
    from .client import TaskFuture
    from .tensors import TensorPlane


class Request(Protocol):
    """:meth:`Client._request <wasm_engine.client.Client._request>`: register and send."""

    def __call__(
        self,
        request_id: str,
        task_id: str,
        frames: list[bytes],
        agent: str | None = None,
        on_event: OnEvent | None = None,
    ) -> TaskFuture: ...


class ModelCalls:
    """Model calls for the blocking client (attributes are the client's)."""

    timeout: float
    _book: Book
    _request: Request
    release_tensors: Callable[[Result], int]
    _tensor_plane: Callable[[], TensorPlane | None]

    def submit_generate(
        self,
        prompt: str | list[dict[str, str]],
        *,
        model: str = "smollm2",
        on_text: Callable[[str], None] | None = None,
        task_id: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> TaskFuture:
        """Queue LLM text generation (``params``: ``max_tokens``, ``temperature``,
        ``top_k``, ``top_p``, ``seed``, ``stop``, ``device``); ``on_text`` gets each
        piece of text as it is decoded. The result's output: see :mod:`wasm_engine.inference`."""
        task_id, rid, frames, on_event = self._book.generate_frames(
            prompt, model, task_id, timeout, on_text, params
        )
        return self._request(rid, task_id, frames, None, on_event)

    def generate(self, prompt: str | list[dict[str, str]], **kw: Any) -> dict[str, Any]:
        """Generate and wait: ``{"text", "tokens", "finish", "device", …}``."""
        out: dict[str, Any] = self.submit_generate(prompt, **kw).result(self.timeout).output
        return out

    def infer(
        self,
        model: str,
        inputs: dict[str, Any],
        *,
        device: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One tensor-model call: ``{output name: numpy array}`` (outputs the worker
        put in shared memory are read there, copied, and their slots released). With
        the client's ``shm_arena``, inputs of 64 KiB and more go by shm handle."""
        from .inference import Reader, infer_input

        plane = self._tensor_plane()
        data, slots = infer_input(inputs, device, plane)
        task_id, rid, frames = self._book.model_frames(
            "infer", model, data, task_id=None, timeout=timeout
        )
        future = self._request(rid, task_id, frames)
        try:
            result = future.result(self.timeout)
        finally:
            if plane is not None and future.done():  # answered: the worker is done reading
                for ref in slots:  # (unanswered, they stay ours until close)
                    plane.release(ref)
        reader = Reader(self._book.name)
        try:
            return reader.outputs(result.output)
        finally:
            reader.close()
            self.release_tensors(result)
