"""Request bodies and result decoding for the model kinds, ``generate`` and ``infer``:
what :class:`~wasm_engine.client.Client` and the CLI send, shared, no I/O.

``generate`` input: ``{"prompt": str | "messages": [{role, content}], "max_tokens",
"temperature", "top_k", "top_p", "seed", "stop": [str], "device"}`` (only the keys
given); its result: ``{"text", "tokens", "finish", "prompt_tokens", "device",
"model", "first_token_ms"}``; each piece of text also comes as a ``task.event``
``{"text": …}`` while it is decoded. ``infer`` input: ``{"inputs": {name: tensor
value}, "device"?}``; result ``{"outputs": {name: tensor value}, "device"}``
(tensor values: :mod:`wasm_engine.tensors.values`). ``device`` is a policy:
``require_gpu`` | ``prefer_gpu`` | ``cpu_ok``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import SHM_ARENA_FULL, WasmEngineError
from .tensors import TensorPlane, TensorRef, shm_namespace
from .tensors.values import from_value, inline, to_value

DEFAULT_LLM = "smollm2"
DEVICE_POLICIES = ("require_gpu", "prefer_gpu", "cpu_ok")


def generate_input(
    prompt: str | Sequence[Mapping[str, str]],
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: Sequence[str] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = (
        {"prompt": prompt} if isinstance(prompt, str) else {"messages": [dict(m) for m in prompt]}
    )
    for key, value in (
        ("max_tokens", max_tokens), ("temperature", temperature), ("top_k", top_k),
        ("top_p", top_p), ("seed", seed), ("stop", list(stop) if stop else None),
        ("device", device),
    ):  # fmt: skip
        if value is not None:
            body[key] = value
    return body


def infer_input(
    inputs: Mapping[str, Any], device: str | None = None, plane: TensorPlane | None = None
) -> tuple[dict[str, Any], list[TensorRef]]:
    """The ``infer`` body and the shm slots it names. Without ``plane`` every tensor goes
    inline; with a plane that has an arena (a client's), tensors of ``INLINE_THRESHOLD``
    and more go as shm handles, inline again when the arena has no room. The caller
    frees the slots (``plane.release``) once the task is answered: the worker reads
    them in place until then."""
    values: dict[str, Any] = {}
    refs: list[TensorRef] = []
    for name, raw in inputs.items():
        array = np.asarray(raw)
        try:
            values[name], ref = to_value(array, plane)
        except WasmEngineError as err:
            if err.code != SHM_ARENA_FULL:
                raise
            values[name], ref = inline(array), None
        if ref is not None:
            refs.append(ref)
    body: dict[str, Any] = {"inputs": values}
    if device is not None:
        body["device"] = device
    return body, refs


class Reader:
    """Opens tensor values of results: inline ones, and shm handles of this host (a
    plane with no arena: it only maps others' segments)."""

    def __init__(self, owner: str) -> None:
        self.plane = TensorPlane(None, owner=owner, ns=shm_namespace())

    def outputs(self, output: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Copies of the output tensors (the slots are released after this)."""
        raw = output.get("outputs") or {}
        return {str(k): np.array(from_value(v, self.plane)) for k, v in raw.items()}

    def close(self) -> None:
        self.plane.close()
