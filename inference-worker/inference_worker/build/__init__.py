"""Build-time model creation: ``wasm-engine models build NAME``.

``smollm2`` runs the heavy conversion tools (torch, transformers, onnxruntime-genai's builder) in
a separate build venv; ``mlp`` writes the small demo/bench tensor model with the onnx helper API.
Nothing here is imported at serving time. Every builder is cached: present output is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wasm_engine.errors import INFER_MODEL_MISSING, WasmEngineError

from .. import paths


def _smollm2(models: Path, force: bool) -> Path:
    from . import smollm2

    return smollm2.build(models, force=force)


def _mlp(models: Path, force: bool) -> Path:
    from ..tensor_models import build_mlp

    return build_mlp(models, force=force)


BUILDERS: dict[str, Callable[[Path, bool], Path]] = {"smollm2": _smollm2, "mlp": _mlp}


def build_model(name: str, models: Path | None = None, *, force: bool = False) -> Path:
    """Build model ``name`` into ``models`` (default: the project's repository); its folder."""
    builder = BUILDERS.get(name)
    if builder is None:
        raise WasmEngineError(
            INFER_MODEL_MISSING, f"no builder for {name!r}; known: {', '.join(sorted(BUILDERS))}"
        )
    return builder(models or paths.models_dir(), force)
