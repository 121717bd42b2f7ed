"""Device policy and ONNX Runtime sessions: which provider a request may use, and which it got.

Owns the three policies (``require_gpu`` / ``prefer_gpu`` / ``cpu_ok``), the thread count (from
the cgroup CPU quota, not the host's cores), opening sessions, and the check that matters: ORT
falls back to CPU silently when CUDA cannot load, so the device is read back from
``session.get_providers()`` on every session and fallbacks are counted.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import onnxruntime as ort

from wasm_engine.errors import (
    INFER_BAD_INPUT,
    INFER_BAD_MODEL,
    INFER_DEVICE_UNAVAILABLE,
    WasmEngineError,
)

log = logging.getLogger("inference_worker.device")

REQUIRE_GPU: Final = "require_gpu"
PREFER_GPU: Final = "prefer_gpu"
CPU_OK: Final = "cpu_ok"
POLICIES: Final = (REQUIRE_GPU, PREFER_GPU, CPU_OK)
CUDA: Final = "cuda"
CPU: Final = "cpu"
ENV_THREADS = "WASM_ENGINE_ORT_THREADS"
ENV_SPIN = "WASM_ENGINE_ORT_SPIN"


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise WasmEngineError(
            INFER_BAD_INPUT, f"device policy {policy!r} is not one of {', '.join(POLICIES)}"
        )
    return policy


def cgroup_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """CPUs allowed by a cgroup v2 quota (``"200000 100000"`` -> 2), None when unlimited."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def default_threads() -> int:
    """``$WASM_ENGINE_ORT_THREADS``, else the cgroup quota, else the CPUs this process may use."""
    env = os.environ.get(ENV_THREADS, "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpus()
    return max(1, min(affinity or 1, quota or affinity or 1))


def session_options(threads: int | None = None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # CUDA load failures are checked via get_providers(), not logs
    # ORT's pool threads spin between ops by default: on cores shared with other workers that
    # burns the CPU they need (measured on 2 loaded cores: LLM decode ~2x faster without it).
    spin = "1" if os.environ.get(ENV_SPIN, "").strip().lower() in {"1", "true", "yes"} else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return opts


def gpu_offered() -> bool:
    """Whether this onnxruntime build has the CUDA provider at all (not whether it loads)."""
    return "CUDAExecutionProvider" in ort.get_available_providers()


@functools.cache
def _preload_cuda() -> None:
    """Once per process: load the CUDA libraries from pip wheels, when present. Without an
    NVIDIA device the CUDA provider is bound to fail; ORT's own error lines are then noise (the
    fallback is read from get_providers() and logged once by us), so its logger is quieted."""
    if not Path("/dev/nvidiactl").exists():
        ort.set_default_logger_severity(4)
    with contextlib.suppress(Exception):
        ort.preload_dlls()


@dataclass
class DeviceStats:
    """Counters the worker reports in status and metrics."""

    sessions: dict[str, int] = field(default_factory=lambda: {CPU: 0, CUDA: 0})
    fallbacks: int = 0  # prefer_gpu sessions that ended on CPU


STATS = DeviceStats()


def open_session(
    model: Path | bytes, policy: str, *, threads: int | None = None
) -> tuple[ort.InferenceSession, str]:
    """A session honouring ``policy``; returns it with the device it really runs on.

    ``require_gpu`` on a CPU-only session raises ``infer.device_unavailable``; a model file that
    ORT cannot load raises ``infer.bad_model``.
    """
    check_policy(policy)
    want_gpu = policy in (REQUIRE_GPU, PREFER_GPU)
    providers: list[Any] = ["CPUExecutionProvider"]
    if want_gpu and gpu_offered():
        _preload_cuda()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif policy == REQUIRE_GPU:
        raise WasmEngineError(
            INFER_DEVICE_UNAVAILABLE, "require_gpu: this onnxruntime has no CUDA provider"
        )
    source = model if isinstance(model, bytes) else str(model)
    try:
        sess = ort.InferenceSession(source, session_options(threads), providers=providers)
    except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
        raise WasmEngineError(
            INFER_BAD_MODEL,
            f"onnxruntime cannot load the model: {exc}",
            detail={"model": str(model) if not isinstance(model, bytes) else "<bytes>"},
        ) from None
    device = CUDA if "CUDAExecutionProvider" in sess.get_providers() else CPU
    if want_gpu and device == CPU:
        if policy == REQUIRE_GPU:
            raise WasmEngineError(
                INFER_DEVICE_UNAVAILABLE,
                "require_gpu: CUDA provider did not load (onnxruntime fell back to CPU)",
                detail={"providers": sess.get_providers()},
            )
        STATS.fallbacks += 1
        log.warning("prefer_gpu: no usable GPU, session runs on CPU (fallback counted)")
    STATS.sessions[device] += 1
    return sess, device
