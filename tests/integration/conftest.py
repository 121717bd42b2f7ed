"""Fixtures for the integration tests: ``make_stack``, an orchestrator and one
wasm worker on threads of this process, talking over real ipc:// sockets. The
worker has its tensor plane as ``wasm-engine-wasm-worker`` builds it (an arena when
``shm_arena`` > 0), shared by its loop and handler; ``make_stack.loops`` are the
worker loops made so far (a test may look at their plane).

``smollm2_dir``: the built LLM. Built once into the project's model repository
(``models/`` or ``$WASM_ENGINE_MODELS``) by the same builder as ``wasm-engine
models build smollm2`` when missing, so ``make test`` on a fresh clone exercises
the real model; cached after that. ``llm``: an engine on it. ``rt``: a wasm runtime
per module for the C-agent tests (their helpers: ``c_agents.py``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inference_worker import paths
from inference_worker.build import smollm2
from inference_worker.llm import LLMEngine
from orchestrator.service import Orchestrator
from wasm_engine import Client
from wasm_engine.config import Settings
from wasm_engine.tensors import process
from wasm_engine.worker_loop import WorkerLoop
from wasm_worker.handler import WasmHandler
from wasm_worker.runtime import WasmRuntime


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Settings]]:
    stops: list[Callable[[], None]] = []
    loops: list[WorkerLoop] = []
    orchestrators: list[Orchestrator] = []

    def make(**changes: Any) -> Settings:
        base: dict[str, Any] = {
            "front": f"ipc://{tmp_path}/f.sock",
            "back": f"ipc://{tmp_path}/b.sock",
            "telemetry": f"ipc://{tmp_path}/t.sock",
            "home": str(tmp_path),  # the stack id in segment names: this test's own
            "heartbeat_interval": 0.2,
            "worker_name": "w-test",
        }
        settings = Settings(**{**base, **changes})
        orch = Orchestrator(settings)
        orchestrators.append(orch)
        orch_thread = threading.Thread(target=orch.run, daemon=True)
        orch_thread.start()
        runtime = WasmRuntime()
        tensors = process.plane_for(settings, settings.worker_name)
        loop = WorkerLoop(settings, WasmHandler(runtime, tensors=tensors), tensors=tensors)
        loops.append(loop)
        worker_thread = threading.Thread(target=loop.run, daemon=True)
        worker_thread.start()

        def stop() -> None:
            loop.stop()
            worker_thread.join(10)
            orch.stop()
            orch_thread.join(10)
            orch.close()
            runtime.close()
            tensors.close()

        stops.append(stop)
        with Client(settings.front, timeout=10) as client:
            deadline = time.monotonic() + 10
            while not client.status()["workers"]:
                assert time.monotonic() < deadline, "worker did not register"
                time.sleep(0.02)
        return settings

    make.loops = loops  # type: ignore[attr-defined]
    make.orchestrators = orchestrators  # type: ignore[attr-defined]
    yield make
    for stop in reversed(stops):
        stop()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return smollm2.build(paths.models_dir())


@pytest.fixture(scope="module")
def llm(smollm2_dir: Path) -> Iterator[LLMEngine]:
    engine = LLMEngine(smollm2_dir, max_batch=8, max_seq=512)
    yield engine
    assert not engine.busy, "a test left requests in the engine"


@pytest.fixture(scope="module")
def rt() -> Iterator[WasmRuntime]:
    """A wasm runtime for the C-agent tests (c_agents.py), one per test module."""
    runtime = WasmRuntime(pool_instances=16)
    yield runtime
    runtime.close()
