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

from .tensors import TensorPlane, shm_namespace
from .tensors.values import from_value, inline

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


def infer_input(inputs: Mapping[str, Any], device: str | None = None) -> dict[str, Any]:
    """Inline tensor values (the client has no arena of its own)."""
    body: dict[str, Any] = {"inputs": {k: inline(np.asarray(v)) for k, v in inputs.items()}}
    if device is not None:
        body["device"] = device
    return body


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
