"""The tensor model repository: one folder per model (``model.onnx`` + ``config.json``), loaded and
warmed up at start, run one request or one stacked batch at a time with per-request device policy.

Owns sessions (one per device a model is asked for), the check that a model matches its config,
the batch run (members validated one by one: a bad member fails alone, the rest run stacked in
one ``run``), outputs written through IOBinding into preallocated arrays, and per-model counters
(:class:`~inference_worker.stats.ModelStats`: runs, batch sizes, fallbacks...) for status and the
worker's heartbeats. Folders without ``config.json`` (the LLM's ``llm.json`` folder, the build
venv) are not tensor models and are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from wasm_engine.errors import (
    INFER_BAD_MODEL,
    INFER_DEVICE_UNAVAILABLE,
    INFER_MODEL_MISSING,
    WasmEngineError,
)

from .device import CPU, CPU_OK, CUDA, PREFER_GPU, REQUIRE_GPU, check_policy, open_session
from .model_config import CONFIG, ModelConfig, load_config
from .stats import ModelStats

log = logging.getLogger("inference_worker.repository")

Arrays = Mapping[str, np.ndarray[Any, Any]]
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(bool)": "bool"}  # fmt: skip


@dataclass
class Result:
    """One request's outputs, or its error; ``device`` is where the run really happened."""

    outputs: dict[str, np.ndarray[Any, Any]] | None
    error: WasmEngineError | None
    device: str


@dataclass
class TensorModel:
    config: ModelConfig
    threads: int | None = None
    sessions: dict[str, ort.InferenceSession] = field(default_factory=dict)  # device -> session
    gpu_unusable: bool = False
    served: ModelStats = field(default_factory=ModelStats)  # read by the heartbeat thread

    def open(self, policy: str) -> tuple[ort.InferenceSession, str]:
        """The session serving ``policy``, opened on first use; the device is checked from
        ``get_providers()`` (ORT falls back to CPU silently)."""
        check_policy(policy)
        if policy != CPU_OK and CUDA in self.sessions:
            return self.sessions[CUDA], CUDA
        if policy == REQUIRE_GPU and self.gpu_unusable:
            raise WasmEngineError(INFER_DEVICE_UNAVAILABLE, "require_gpu: no usable GPU here")
        if policy == PREFER_GPU and self.gpu_unusable:
            self.served.record(fallbacks=1)
            policy = CPU_OK
        if policy == CPU_OK and self.sessions:
            device = CUDA if CUDA in self.sessions else CPU
            return self.sessions[device], device
        try:
            sess, device = open_session(
                self.config.folder / "model.onnx", policy, threads=self.threads
            )
        except WasmEngineError as err:
            if err.code == INFER_DEVICE_UNAVAILABLE:
                self.gpu_unusable = True
            raise
        if policy != CPU_OK and device == CPU:
            self.gpu_unusable = True
            self.served.record(fallbacks=1)
        self._check_matches(sess)
        self.sessions.setdefault(device, sess)
        return self.sessions[device], device

    def _check_matches(self, sess: ort.InferenceSession) -> None:
        for want, got in ((self.config.inputs, sess.get_inputs()),
                          (self.config.outputs, sess.get_outputs())):  # fmt: skip
            have = {a.name: ORT_DTYPES.get(a.type, a.type) for a in got}
            for spec in want:
                if have.get(spec.name) != spec.dtype:
                    raise WasmEngineError(
                        INFER_BAD_MODEL,
                        f"{self.config.name}: config says {spec.name} {spec.dtype}, model has "
                        f"{have.get(spec.name)}",
                    )

    def warm_up(self) -> None:
        for rows in self.config.warmup_batches:
            zeros = {s.name: np.zeros((rows, *s.shape[1:]), s.dtype) for s in self.config.inputs}
            self.run_batch([zeros], self.config.device_policy)
        self.served.reset()  # the counters tell what was served

    def run(self, inputs: Arrays, policy: str | None = None) -> Result:
        return self.run_batch([inputs], policy)[0]

    def run_batch(self, requests: Sequence[Arrays], policy: str | None = None) -> list[Result]:
        """Run many requests as one stacked batch. Each is checked first; a bad one gets its own
        ``infer.bad_input`` result and the others still run. A policy no session can honour
        fails them all (``infer.device_unavailable``)."""
        sess, device = self.open(policy or self.config.device_policy)
        results: list[Result | None] = [None] * len(requests)
        good: list[tuple[int, int]] = []  # (index, rows)
        for i, req in enumerate(requests):
            try:
                good.append((i, self.config.check(req)))
            except WasmEngineError as err:
                results[i] = Result(None, err, device)
        ran = 0  # rows of the run, once it succeeded
        try:
            if good:
                total = sum(rows for _, rows in good)
                stacked = {
                    s.name: requests[good[0][0]][s.name] if len(good) == 1
                    else np.concatenate([requests[i][s.name] for i, _ in good])
                    for s in self.config.inputs
                }  # fmt: skip
                outs = self._run(sess, device, stacked, total)
                ran = total
                start = 0
                for i, rows in good:
                    results[i] = Result(
                        {k: v[start : start + rows] for k, v in outs.items()}, None, device
                    )
                    start += rows
        finally:  # one locked update per batch; a failed run fails all its members
            ok = len(good) if ran else 0
            n = len(requests)
            self.served.record(batch=ran, requests=n, failed=n - ok, device=device)
        return [r for r in results if r is not None]

    def _run(
        self, sess: ort.InferenceSession, device: str, inputs: Arrays, rows: int
    ) -> dict[str, Any]:
        io = sess.io_binding()
        for name, arr in inputs.items():
            io.bind_cpu_input(name, np.ascontiguousarray(arr))
        outs: dict[str, np.ndarray[Any, Any]] = {}
        for spec in self.config.outputs:
            if device == CPU:  # ORT writes straight into our array (later: an shm slot)
                arr = np.empty((rows, *spec.shape[1:]), spec.dtype)
                io.bind_output(spec.name, CPU, 0, arr.dtype, list(arr.shape), arr.ctypes.data)
                outs[spec.name] = arr
            else:
                io.bind_output(spec.name, device)
        sess.run_with_iobinding(io)
        if device != CPU:
            names = [s.name for s in self.config.outputs]
            outs = dict(zip(names, io.copy_outputs_to_cpu(), strict=True))
        return outs

    def status(self) -> dict[str, Any]:
        return {
            "devices": sorted(self.sessions),
            "max_batch": self.config.max_batch,
            **self.served.report(),
        }


class ModelRepository:
    """All tensor models under one folder. ``load_all`` at start; ``get`` per request."""

    def __init__(self, root: Path, *, threads: int | None = None) -> None:
        self.root = root
        self.threads = threads
        self.models: dict[str, TensorModel] = {}
        self.broken: dict[str, WasmEngineError] = {}

    def load_all(self) -> dict[str, WasmEngineError]:
        """Load and warm up every model folder; a broken one is logged and reported, and the
        others still load. Returns the broken ones."""
        folders = (
            sorted(p.parent for p in self.root.glob(f"*/{CONFIG}")) if self.root.is_dir() else []
        )
        for folder in folders:
            try:
                self.load(folder.name)
            except WasmEngineError as err:
                log.error("model %s not loaded: %s", folder.name, err)
                self.broken[folder.name] = err
        return dict(self.broken)

    def load(self, name: str) -> TensorModel:
        folder = self.root / name
        if "/" in name or name.startswith(".") or not (folder / CONFIG).exists():
            raise WasmEngineError(INFER_MODEL_MISSING, f"no model {name!r} in {self.root}")
        model = TensorModel(load_config(folder), self.threads)
        model.open(model.config.device_policy)
        model.warm_up()
        self.models[name] = model
        self.broken.pop(name, None)
        log.info("model %s loaded on %s", name, ", ".join(model.sessions))
        return model

    def get(self, name: str) -> TensorModel:
        model = self.models.get(name)
        if model is None:
            if name in self.broken:
                raise self.broken[name]
            raise WasmEngineError(
                INFER_MODEL_MISSING, f"no model {name!r}", detail={"models": sorted(self.models)}
            )
        return model

    def status(self) -> dict[str, Any]:
        return {
            "models": {n: m.status() for n, m in self.models.items()},
            "broken": {n: e.code for n, e in self.broken.items()},
        }
