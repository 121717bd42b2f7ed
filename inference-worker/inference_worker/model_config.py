"""A tensor model's ``config.json``: I/O specs, batching limits, default device policy, warm-up;
and the check of one request's inputs against it (name, dtype, rank, shape -> ``infer.bad_input``).

Shapes list every dimension; the first is the batch dimension and must be ``-1``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wasm_engine.errors import INFER_BAD_INPUT, INFER_BAD_MODEL, WasmEngineError

from .device import POLICIES, PREFER_GPU

CONFIG = "config.json"
DTYPES = {"float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]  # shape[0] == -1: the batch dimension


@dataclass(frozen=True)
class ModelConfig:
    name: str
    folder: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch: int
    max_queue_delay_s: float
    device_policy: str
    warmup_batches: tuple[int, ...]

    def check(self, inputs: Mapping[str, Any]) -> int:
        """Validate one request's inputs; returns its batch size (rows)."""
        if not isinstance(inputs, Mapping):
            raise WasmEngineError(INFER_BAD_INPUT, f"{self.name}: inputs must be a name->array map")
        names = {s.name for s in self.inputs}
        if set(inputs) != names:
            raise WasmEngineError(
                INFER_BAD_INPUT,
                f"{self.name}: inputs {sorted(inputs)} do not match {sorted(names)}",
                detail={"expected": sorted(names)},
            )
        rows = -1
        for spec in self.inputs:
            arr = inputs[spec.name]
            if not isinstance(arr, np.ndarray):
                raise WasmEngineError(INFER_BAD_INPUT, f"{spec.name}: not an array")
            detail = {"input": spec.name, "expected": [spec.dtype, list(spec.shape)],
                      "got": [str(arr.dtype), list(arr.shape)]}  # fmt: skip
            if str(arr.dtype) != spec.dtype:
                raise WasmEngineError(INFER_BAD_INPUT, f"{spec.name}: dtype", detail=detail)
            if arr.ndim != len(spec.shape):
                raise WasmEngineError(INFER_BAD_INPUT, f"{spec.name}: rank", detail=detail)
            fixed = all(w in (-1, g) for w, g in zip(spec.shape[1:], arr.shape[1:], strict=True))
            if not fixed or arr.shape[0] < 1 or (rows != -1 and arr.shape[0] != rows):
                raise WasmEngineError(INFER_BAD_INPUT, f"{spec.name}: shape", detail=detail)
            rows = arr.shape[0]
        if rows > self.max_batch:
            raise WasmEngineError(
                INFER_BAD_INPUT, f"{self.name}: {rows} rows > max_batch {self.max_batch}"
            )
        return rows


def _specs(raw: Any, what: str) -> tuple[TensorSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{what} must be a non-empty list")
    out = []
    for item in raw:
        shape = tuple(int(d) for d in item["shape"])
        if str(item["dtype"]) not in DTYPES:
            raise ValueError(f"{what} {item['name']}: dtype {item['dtype']!r}")
        if not shape or shape[0] != -1 or any(d < 1 for d in shape[1:]):
            raise ValueError(f"{what} {item['name']}: shape must be [-1, fixed dims...]")
        out.append(TensorSpec(str(item["name"]), str(item["dtype"]), shape))
    return tuple(out)


def load_config(folder: Path) -> ModelConfig:
    path = folder / CONFIG
    try:
        doc = json.loads(path.read_text())
        policy = str(doc.get("device_policy", PREFER_GPU))
        if policy not in POLICIES:
            raise ValueError(f"device_policy {policy!r}")
        max_batch = int(doc.get("max_batch", 1))
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        return ModelConfig(
            name=str(doc.get("name", folder.name)),
            folder=folder,
            inputs=_specs(doc["inputs"], "input"),
            outputs=_specs(doc["outputs"], "output"),
            max_batch=max_batch,
            max_queue_delay_s=float(doc.get("max_queue_delay_ms", 0.0)) / 1000,
            device_policy=policy,
            warmup_batches=tuple(int(b) for b in doc.get("warmup_batches", [1])),
        )
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise WasmEngineError(INFER_BAD_MODEL, f"{path}: {exc}") from None
