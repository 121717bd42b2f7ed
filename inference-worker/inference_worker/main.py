"""Entry point of ``wasm-engine-inference-worker``: models, engine thread, worker loop, signals.

At start it loads every model of the repository (``$WASM_ENGINE_MODELS``, else the
project's ``models/``): the LLM folder (``smollm2``, with ``llm.json``) into the
continuous-batching engine and every tensor model folder (``config.json``) into
the repository; each is warmed up before the worker says hello, so it is ready
when it registers. Its capabilities are the model names it serves; a model that
failed to load is logged and left out (tasks for it get ``infer.model_missing``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from wasm_engine import config
from wasm_engine.errors import WasmEngineError
from wasm_engine.logs import setup_logging
from wasm_engine.tensors import process
from wasm_engine.worker_loop import WorkerLoop
from wasm_engine.worker_messages import worker_name

from . import paths
from .handler import InferenceHandler
from .llm import LLMEngine
from .repository import ModelRepository
from .serving import Server

log = logging.getLogger("inference_worker")
LLM_NAME = "smollm2"


def load_models(root: Path, device: str, max_batch: int) -> Server:
    llm = None
    if (root / LLM_NAME / "llm.json").exists():
        try:
            llm = LLMEngine(root / LLM_NAME, max_batch=max_batch, max_seq=2048, device=device)
            llm.warm_up()
        except WasmEngineError as err:
            log.error("LLM %s not loaded: %s", LLM_NAME, err)
            llm = None
    else:
        log.warning("no LLM in %s (build it: wasm-engine models build %s)", root, LLM_NAME)
    repo = ModelRepository(root)
    repo.load_all()
    return Server(llm, LLM_NAME, repo)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wasm-engine-inference-worker", description=__doc__)
    config.add_arguments(parser, config.INFERENCE_WORKER_SETTINGS)
    settings = config.from_args(parser.parse_args(argv))
    setup_logging(settings.log_level, "inference-worker")
    root = Path(settings.models) if settings.models else paths.models_dir()
    server = load_models(root, settings.device, max_batch=min(settings.credits, 8))
    if not server.models():
        log.warning("serving no model: tasks will get infer.model_missing")
    name = worker_name(settings, InferenceHandler.kind)
    tensors = process.plane_for(settings, name)
    loop = WorkerLoop(settings, InferenceHandler(server, tensors), tensors=tensors)
    try:
        return loop.run_until_signalled()
    finally:
        server.close()
        tensors.close()


if __name__ == "__main__":
    raise SystemExit(main())
