"""Fixtures for the integration tests that run real onnxruntime.

``smollm2_dir``: the built LLM. Built once into the project's model repository (``models/`` or
``$WASM_ENGINE_MODELS``) by the same builder as ``wasm-engine models build smollm2`` when missing,
so ``make test`` on a fresh clone exercises the real model; cached after that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inference_worker import paths
from inference_worker.build import smollm2
from inference_worker.llm import LLMEngine


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return smollm2.build(paths.models_dir())


@pytest.fixture(scope="module")
def llm(smollm2_dir: Path) -> Iterator[LLMEngine]:
    engine = LLMEngine(smollm2_dir, max_batch=8, max_seq=512)
    yield engine
    assert not engine.busy, "a test left requests in the engine"
